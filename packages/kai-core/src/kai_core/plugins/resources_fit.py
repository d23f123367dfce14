"""Filter: the pod's requests (cpu, memory, extended resources such as GPUs, one pod slot) fit in
what the node has left, counting bound pods and pods whose BindRequest is in flight (see
:class:`kai_core.framework.snapshot.Snapshot`). Like kube-scheduler's NodeResourcesFit, a node gets one
reason per resource that does not fit (``Too many pods``, ``Insufficient cpu``, ...)."""

from __future__ import annotations

from kai_core.framework.hookspecs import hookimpl

REASON_TOO_MANY_PODS = "Too many pods"
_FIRST = {"cpu": 0, "memory": 1, "ephemeral-storage": 2}


def _order(item: tuple[str, int]) -> tuple[int, str]:
    return (_FIRST.get(item[0], 3), item[0])


@hookimpl(tryfirst=True)
def kai_filter_nodes(pod, nodes, snapshot):
    wanted = [(name, amount, f"Insufficient {name}")
              for name, amount in sorted(snapshot.requests_of(pod).items(), key=_order)]
    out: dict[str, str | list[str]] = {}
    for n in nodes:
        alloc = n.allocatable
        used = n.requested
        reasons: list[str] = []
        max_pods = alloc.get("pods")
        if max_pods is not None and n.pod_count >= max_pods // 1000:
            reasons.append(REASON_TOO_MANY_PODS)
        for name, amount, reason in wanted:
            if amount > alloc.get(name, 0) - used.get(name, 0):
                reasons.append(reason)
        if reasons:
            out[n.name] = reasons[0] if len(reasons) == 1 else reasons
    return out
