"""Test tools for anything that drives the binder: fault injection, crashes, a settle loop, and
the consistency invariants every run must end in.

- :class:`FaultyStore` wraps a store and, by the ordinal of each write, refuses it (409, 500),
  loses it (a timeout before the server saw it), applies it and then reports a timeout, or applies
  it and then "kills the process" by raising :class:`Crash`. It logs every write that took effect.
- :class:`CountingStore` records every API call made through it, and the patches sent.
- :func:`settle` runs controllers, scheduler and binder in rounds until nothing is written and
  nothing is due, moving a :class:`~kai_binder.clock.ManualClock` over backoff waits.
- :func:`invariant_violations` lists what is inconsistent in a store: claims allocated for
  nobody (or reserved for pods that are not bound or binding to a node their allocation allows),
  a device in two claims, a bound pod whose claims (its extended-resource claim too) are not
  reserved for it, an unbound pod
  holding a reservation, a free claim kept by a finalizer for a live pod, a node over capacity.
"""

from __future__ import annotations

from collections.abc import Iterable

from kai_binder.binder import is_actionable
from kai_binder.claims import FINALIZER, FINALIZER_OWNER_ANNOTATION
from kai_core.api.claims import claim_name_for
from kai_core.api.errors import ApiError, Conflict
from kai_core.api.nodeaffinity import match_node_selector
from kai_core.api.resources import (
    RES_BIND_REQUESTS,
    RES_CLAIMS,
    RES_NODES,
    RES_PODS,
    is_active_pod,
    node_allocatable,
    pod_requests,
)
from kai_core.dra.allocator import devices_of

#: what :class:`FaultyStore` can do to one write
FAULTS = ("conflict", "error", "lost", "timeout", "crash")


class Crash(BaseException):
    """The process died. Not an ``Exception``: nothing that isolates errors catches it, exactly as
    nothing runs in a process that was killed."""


class FaultyStore:
    """A store whose writes fail on purpose; every other call passes through unchanged.

    ``faults`` maps the ordinal of a write (1 = the first write through this wrapper) to one of
    :data:`FAULTS`: ``conflict`` (409, not applied), ``error`` (500, not applied), ``lost`` (a
    504 timeout, not applied), ``timeout`` (applied, then a 504), ``crash`` (applied, then
    :class:`Crash`). ``crash_after`` crashes after that write took effect. With
    ``refuse_binds`` every pods/binding is refused with a 409 (not counted as a write) until it is
    set back to False.
    ``log`` records each write that took effect as ``(verb, kind or resource, namespace, name)``.
    """

    WRITES = ("create", "update", "update_status", "patch", "delete", "bind")

    def __init__(self, store, faults: dict[int, str] | None = None, crash_after: int | None = None,
                 refuse_binds: bool = False) -> None:
        for n, kind in (faults or {}).items():
            if kind not in FAULTS:
                raise ValueError(
                    f"FaultyStore: write {n}: unknown fault {kind!r} (one of {', '.join(FAULTS)})")
        self.inner = store
        self.faults = dict(faults or {})
        self.crash_after = crash_after
        self.refuse_binds = refuse_binds
        self.writes = 0
        self.log: list[tuple[str, str, str, str]] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def _write(self, what: tuple[str, str, str, str], call, *args):
        self.writes += 1
        n = self.writes
        fault = self.faults.get(n)
        label = f"write {n} ({' '.join(what)})"
        if fault == "conflict":
            raise Conflict(f"injected conflict on {label}")
        if fault == "error":
            raise ApiError(f"injected server error on {label}", code=500)
        if fault == "lost":
            raise ApiError(f"injected timeout on {label} (not applied)", code=504, reason="Timeout")
        result = call(*args)
        self.log.append(what)
        if fault == "timeout":
            raise ApiError(f"injected timeout on {label} (applied)", code=504, reason="Timeout")
        if fault == "crash" or n == self.crash_after:
            raise Crash(f"crashed after {label}")
        return result

    @staticmethod
    def _what(verb: str, obj: dict) -> tuple[str, str, str, str]:
        md = obj.get("metadata") or {}
        name = md.get("name") or md.get("generateName") or ""
        return (verb, str(obj.get("kind")), md.get("namespace") or "", name)

    def create(self, obj):
        return self._write(self._what("create", obj), self.inner.create, obj)

    def update(self, obj):
        return self._write(self._what("update", obj), self.inner.update, obj)

    def update_status(self, obj):
        return self._write(self._what("update_status", obj), self.inner.update_status, obj)

    def patch(self, resource, name, namespace, patch, subresource=None, *, strategic=False):
        return self._write(("patch", resource, namespace or "", name),
                           lambda: self.inner.patch(resource, name, namespace, patch, subresource,
                                                    strategic=strategic))

    def delete(self, resource, name, namespace=None, *, uid=None):
        return self._write(("delete", resource, namespace or "", name),
                           lambda: self.inner.delete(resource, name, namespace, uid=uid))

    def bind(self, namespace, pod_name, node_name, pod_uid=None, *, annotations=None):
        if self.refuse_binds:  # not counted: such a bind never reaches the server's state
            raise Conflict(f'pods/binding "{pod_name}" refused by the test')
        return self._write(("bind", "Pod", namespace or "", pod_name),
                           lambda: self.inner.bind(namespace, pod_name, node_name, pod_uid, annotations=annotations))


class CountingStore:
    """Records every API call the binder makes (``(verb, resource or kind, subresource)``) and the
    patches it sends, then passes the call on."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str, str]] = []
        self.patches: list[tuple[dict, bool]] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def get(self, resource, name, namespace=None, *, fresh=False):
        self.calls.append(("get", resource, "fresh" if fresh else ""))
        return self.inner.get(resource, name, namespace, fresh=fresh)

    def list(self, resource, *args, **kw):
        self.calls.append(("list", resource, ""))
        return self.inner.list(resource, *args, **kw)

    def create(self, obj):
        self.calls.append(("create", obj["kind"], ""))
        return self.inner.create(obj)

    def update(self, obj):
        self.calls.append(("update", obj["kind"], ""))
        return self.inner.update(obj)

    def update_status(self, obj):
        self.calls.append(("update", obj["kind"], "status"))
        return self.inner.update_status(obj)

    def patch(self, resource, name, namespace, patch, subresource=None, *, strategic=False):
        self.calls.append(("patch", resource, subresource or ""))
        self.patches.append((patch, strategic))
        return self.inner.patch(resource, name, namespace, patch, subresource, strategic=strategic)

    def bind(self, namespace, pod_name, node_name, pod_uid=None, *, annotations=None):
        self.calls.append(("create", "Pod", "binding"))
        return self.inner.bind(namespace, pod_name, node_name, pod_uid, annotations=annotations)


def settle(cluster, scheduler, binder, clock, max_rounds: int = 300) -> int:
    """Rounds of controllers, scheduler and binder until a round writes nothing and neither the
    scheduler nor the binder has anything due; backoff waits are skipped by moving ``clock``.
    Returns the rounds run; raises AssertionError when it does not settle within ``max_rounds``.

    This is the loop an embedded ``--until-idle`` runner needs: it never sleeps and always ends.
    """
    store = cluster.store
    for rounds in range(1, max_rounds + 1):
        before = store.resource_version
        cluster.reconcile_controllers()
        scheduler.run_cycle()
        binder.run_once()
        if store.resource_version != before:
            continue
        due = [t for t in (scheduler.next_due(), binder.next_due()) if t is not None]
        if not due:
            return rounds
        clock.advance_to(min(due))
    raise AssertionError(f"the cluster did not settle within {max_rounds} rounds")


def _pod_done(pod: dict) -> bool:
    return not is_active_pod(pod) or (bool(pod["metadata"].get("deletionTimestamp"))
                                      and not (pod.get("spec") or {}).get("nodeName"))


def invariant_violations(store, scheduler_names: Iterable[str] | None = None) -> list[str]:
    """Everything inconsistent in ``store`` (empty when all is well); see the module docstring.

    ``scheduler_names`` limits the pod checks to pods of those schedulers (all pods by default).
    """
    names = set(scheduler_names) if scheduler_names is not None else None
    pods = store.list(RES_PODS)[0]
    nodes = {n["metadata"]["name"]: n for n in store.list(RES_NODES)[0]}
    claims = store.list(RES_CLAIMS)[0] if RES_CLAIMS in store.kinds else []
    by_uid = {p["metadata"]["uid"]: p for p in pods}
    binding: dict[str, str] = {}  # pod uid -> node of its live BindRequest
    for br in store.list(RES_BIND_REQUESTS)[0]:
        if is_actionable(br):
            owner = next((o.get("uid") for o in br["metadata"].get("ownerReferences") or []
                          if o.get("kind") == "Pod"), None)
            if owner:
                binding[owner] = (br.get("spec") or {}).get("selectedNode", "")
    problems: list[str] = []

    def place(uid: str) -> str | None:
        """The node a live pod is bound or binding to."""
        pod = by_uid.get(uid)
        if pod is None or _pod_done(pod):
            return None
        return (pod.get("spec") or {}).get("nodeName") or binding.get(uid)

    used: dict[tuple, str] = {}
    reserved_by: dict[str, set[str]] = {}
    for claim in claims:
        md = claim["metadata"]
        cname = f'{md.get("namespace", "")}/{md["name"]}'
        status = claim.get("status") or {}
        alloc = status.get("allocation")
        consumers = status.get("reservedFor") or []
        good = []
        for r in consumers:
            reserved_by.setdefault(r.get("uid"), set()).add(cname)
            node = place(r.get("uid"))
            if node is None:
                problems.append(f"claim {cname}: reserved for {r.get('name')}, which is not bound or binding")
            elif alloc and node in nodes and not match_node_selector(alloc.get("nodeSelector"), nodes[node]):
                problems.append(f"claim {cname}: reserved for {r.get('name')} on node {node}, "
                                "which its allocation's nodeSelector does not allow")
            else:
                good.append(r)
        if alloc and not good:
            problems.append(f"claim {cname}: allocated, but for no live pod bound or binding")
        if good and not alloc:
            problems.append(f"claim {cname}: reserved but not allocated")
        if alloc:
            for dev in devices_of(alloc, exclusive_only=True):
                if dev in used:
                    problems.append(f"device {dev} is in two claims: {used[dev]} and {cname}")
                used[dev] = cname
        owner = (md.get("annotations") or {}).get(FINALIZER_OWNER_ANNOTATION)
        if not alloc and not consumers and FINALIZER in (md.get("finalizers") or []) and owner in by_uid \
                and not _pod_done(by_uid[owner]) and owner not in binding:
            problems.append(f"claim {cname}: free, but still protected by a finalizer for pod "
                            f"{by_uid[owner]['metadata']['name']}")
    load: dict[str, dict[str, int]] = {}
    for pod in pods:
        if names is not None and (pod.get("spec") or {}).get("schedulerName") not in names:
            continue
        md = pod["metadata"]
        pname = f'{md.get("namespace", "")}/{md["name"]}'
        node = (pod.get("spec") or {}).get("nodeName")
        if node and is_active_pod(pod):
            total = load.setdefault(node, {})
            for k, v in pod_requests(pod).items():
                total[k] = total.get(k, 0) + v
            for rc in (pod.get("spec") or {}).get("resourceClaims") or []:
                cn = claim_name_for(pod, rc.get("name"))
                key = f'{md.get("namespace", "")}/{cn}'
                if cn is None or key not in reserved_by.get(md["uid"], set()):
                    problems.append(f"pod {pname}: bound to {node}, but its claim {rc.get('name')} "
                                    "is not reserved for it")
            special = ((pod.get("status") or {}).get("extendedResourceClaimStatus") or {}).get("resourceClaimName")
            if special and f'{md.get("namespace", "")}/{special}' not in reserved_by.get(md["uid"], set()):
                problems.append(f"pod {pname}: bound to {node}, but its extended-resource claim {special} "
                                "is not reserved for it")
        elif not node and md["uid"] not in binding and reserved_by.get(md["uid"]) and not _pod_done(pod):
            problems.append(f"pod {pname}: not bound, yet holds {sorted(reserved_by[md['uid']])}")
    for node, total in load.items():
        if node not in nodes:
            continue
        alloc = node_allocatable(nodes[node])
        for k, v in total.items():
            if k in alloc and v > alloc[k]:
                problems.append(f"node {node}: {k} over capacity ({v} > {alloc[k]})")
    return problems
