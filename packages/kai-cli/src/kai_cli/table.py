"""kubectl-like tables for ``kai-cli get``."""

from __future__ import annotations

import datetime as _dt


def _age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    try:
        t = _dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC)
    except ValueError:
        return "<unknown>"
    s = int((_dt.datetime.now(_dt.UTC) - t).total_seconds())
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s // n}{unit}"
    return f"{max(s, 0)}s"


def _pod_status(o: dict) -> str:
    """The phase, except that a pod given a node that no kubelet has reported on yet (no container
    statuses: always so in the embedded cluster) is ``Bound``, not ``Pending``: the phase is the
    kubelet's to set, and the scheduler's part is done."""
    status = o.get("status") or {}
    phase = status.get("phase", "")
    if phase in ("", "Pending") and (o.get("spec") or {}).get("nodeName") and not status.get("containerStatuses"):
        return "Bound"
    return phase


def _pod_scheduled(o: dict) -> str:
    """The PodScheduled condition: ``True``, or its reason (``Unschedulable``) when False."""
    for c in (o.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled":
            return "True" if c.get("status") == "True" else c.get("reason") or c.get("status", "")
    return "<none>"


def _node_status(o: dict) -> str:
    for c in (o.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            status = "Ready" if c.get("status") == "True" else "NotReady"
            return status + (",SchedulingDisabled" if (o.get("spec") or {}).get("unschedulable") else "")
    return "Unknown"


def _claim_state(o: dict) -> str:
    st = o.get("status") or {}
    if st.get("allocation"):
        return "allocated,reserved" if st.get("reservedFor") else "allocated"
    return "pending"


def _gpu_terms(key: str):
    return lambda o: str((((o.get("spec") or {}).get("resources") or {}).get("gpu") or {}).get(key, 0))


def _gpu_usage(key: str):
    return lambda o: str(((o.get("status") or {}).get(key) or {}).get("nvidia.com/gpu", "0"))


# kind -> [(header, getter, wide_only)]
COLUMNS = {
    "Pod": [("STATUS", _pod_status, False), ("NODE", lambda o: o["spec"].get("nodeName") or "<none>", False),
            ("SCHEDULED", _pod_scheduled, True)],
    "Node": [("STATUS", _node_status, False),
             ("GPU", lambda o: str(((o.get("status") or {}).get("allocatable") or {}).get("nvidia.com/gpu", "")),
              True)],
    "BindRequest": [("POD", lambda o: o["spec"].get("podName", ""), False),
                    ("NODE", lambda o: o["spec"].get("selectedNode", ""), False),
                    ("PHASE", lambda o: (o.get("status") or {}).get("phase", ""), False),
                    ("REASON", lambda o: (o.get("status") or {}).get("reason", ""), True)],
    "ResourceClaim": [("STATE", _claim_state, False)],
    "Queue": [("PARENT", lambda o: (o.get("spec") or {}).get("parentQueue") or "<none>", False),
              ("PRIORITY", lambda o: str((o.get("spec") or {}).get("priority", 100)), True),
              ("GPU-QUOTA", _gpu_terms("quota"), False), ("GPU-LIMIT", _gpu_terms("limit"), False),
              ("GPU-ALLOCATED", _gpu_usage("allocated"), False), ("GPU-REQUESTED", _gpu_usage("requested"), False)],
    "PriorityClass": [("VALUE", lambda o: str(o.get("value", 0)), False),
                      ("GLOBAL-DEFAULT", lambda o: str(o.get("globalDefault") is True).lower(), False),
                      ("PREEMPTIONPOLICY", lambda o: o.get("preemptionPolicy", ""), True)],
    "ResourceSlice": [("NODE", lambda o: o["spec"].get("nodeName", ""), False),
                      ("DRIVER", lambda o: o["spec"].get("driver", ""), False),
                      ("POOL", lambda o: (o["spec"].get("pool") or {}).get("name", ""), False)],
    "ComputeDomain": [("STATUS", lambda o: (o.get("status") or {}).get("status", ""), False),
                      ("NODES", lambda o: ",".join(n.get("name", "") for n in (o.get("status") or {}).get("nodes")
                                                  or []), True)],
}


#: kind -> [(header, wide_only)] of columns computed from the cluster, not read from the object
COMPUTED = {"Queue": [("GPU-FAIR-SHARE", False), ("CPU-FAIR-SHARE", True), ("MEMORY-FAIR-SHARE", True)],
            "Pod": [("BINDREQUEST", True), ("BINDREQUEST-NODE", True)]}


def _key(o: dict) -> str:
    md = o["metadata"]
    return f"{md['namespace']}/{md['name']}" if md.get("namespace") else md["name"]


def binding_columns(bind_requests: list[dict]) -> dict[str, dict[str, str]]:
    """``{namespace/pod: {column: value}}`` from the pod's newest BindRequest: its phase and the
    node it names, so a pod still waiting for its binder shows where it goes."""
    newest: dict[str, dict] = {}
    def created(br: dict) -> tuple[str, str]:
        return br["metadata"].get("creationTimestamp") or "", br["metadata"]["name"]

    for br in sorted(bind_requests, key=created):
        newest[f"{br['metadata'].get('namespace', '')}/{(br.get('spec') or {}).get('podName', '')}"] = br
    return {pod: {"BINDREQUEST": (br.get("status") or {}).get("phase") or "Pending",
                  "BINDREQUEST-NODE": (br.get("spec") or {}).get("selectedNode") or "<none>"}
            for pod, br in newest.items()}


def render(kind, items: list[dict], wide: bool = False, all_namespaces: bool = False,
           computed: dict[str, dict[str, str]] | None = None) -> str:
    """A kubectl-like table; ``computed`` gives the :data:`COMPUTED` columns by object name."""
    cols = [c for c in COLUMNS.get(kind.kind, []) if wide or not c[2]]
    for header, wide_only in COMPUTED.get(kind.kind, []) if computed is not None else []:
        if wide or not wide_only:
            cols.append((header, lambda o, h=header: computed.get(_key(o), {}).get(h, "<none>"), wide_only))
    header = (["NAMESPACE"] if all_namespaces else []) + ["NAME"] + [c[0] for c in cols] + ["AGE"]
    rows = [header]
    for o in items:
        md = o["metadata"]
        row = ([md.get("namespace", "")] if all_namespaces else []) + [md["name"]]
        row += [str(c[1](o)) for c in cols]
        row.append(_age(md.get("creationTimestamp")))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("   ".join(r[i].ljust(widths[i]) for i in range(len(r))).rstrip() for r in rows)
