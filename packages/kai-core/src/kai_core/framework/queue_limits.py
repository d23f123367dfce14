"""Queue limits and non-preemptible quotas at placement, as KAI's capacity policy checks them
(``pkg/scheduler/plugins/proportion/capacity_policy``): a workload may not take a queue, or any of its
ancestors, above its limit; a non-preemptible one may not take what non-preemptible workloads hold
above the quota (quota -1: no bound; quota 0: no non-preemptible workload asking for that resource).

For every queue from the workload's own up to the top, and every resource the workload asks for:
``allocated + requested > limit`` refuses it (``OverLimit``), unless the limit is -1. An unset limit
is 0, so a queue that does not set a limit for a resource takes no workload asking for any of it
(KAI's documentation: "no additional resources"). The workload is the pod with the other pods of its
PodGroup placed alongside it (KAI checks a gang's ``minMember`` pods together, then each further
pod on top of those); what the cycle has already placed counts as allocated.

GPUs here are ``nvidia.com/gpu`` and DRA GPUs: those of a pending pod's claims are the GPUs of the
allocation it would get (:mod:`kai_core.framework.pending_gpus`, worked out once per cycle with the
queues' usage), those of the pods placed this cycle the devices they were allocated.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence

from kai_core.api.claims import claim_name_for
from kai_core.api.resources import RES_SLICES
from kai_core.framework.fairshare import UNLIMITED
from kai_core.framework.gang import POD_GROUP_ANNOTATION
from kai_core.framework.queue_usage import GPU_RESOURCE, DeviceIndex, amounts_of, dra_gpus, snapshot_usage
from kai_core.framework.queues import RESOURCES, Queue, QueueTree

__all__ = ["QueueLedger"]

#: how KAI names each resource in its OverLimit message, and the unit it is shown in
_SHOWN = {"gpu": ("GPUs", "GPUs", 1.0), "cpu": ("CPU cores", "cores", 1000.0), "memory": ("memory", "GB", 1e9)}


def _group_of(pod: Mapping) -> tuple[str, str] | None:
    md = pod.get("metadata") or {}
    name = (md.get("annotations") or {}).get(POD_GROUP_ANNOTATION)
    return (md.get("namespace", ""), name) if name else None


class QueueLedger:
    """Allocated amounts of every queue during one cycle: bound and in-flight pods when the cycle
    starts, then the cycle's own decisions, read from the snapshot's log of placed pods."""

    def __init__(self, snapshot, tree: QueueTree, queue_of: Callable[[Mapping], str],
                 preemptible: Callable[[Mapping], bool]) -> None:
        self.tree = tree
        self.queue_of = queue_of
        self.preemptible = preemptible
        start = snapshot_usage(snapshot, tree)  # shared with the queue order of the same cycle
        usage = start.usage
        self._members = start.members
        #: pending pods' DRA GPUs, by (namespace, name)
        self._pending = start.pending
        self._index = DeviceIndex(snapshot.objects(RES_SLICES).values())
        self._counted: set = set(start.counted)
        #: DRA GPUs counted for pods this cycle placed, by pod (taken back if the placement is undone)
        self._dra: dict[int, tuple[float, set]] = {}
        self.allocated = {q: dict(u.allocated) for q, u in usage.items()}
        self.firm = {q: dict(u.allocated_non_preemptible) for q, u in usage.items()}
        self._read = len(snapshot.pod_changes)
        #: queue -> [(queue or ancestor, Queue, {"limit"|"quota": {resource: bound}})], up the chain
        self._chains: dict[str, list[tuple[str, Queue, dict[str, dict[str, float]]]]] = {}
        #: PodGroup -> (snapshot generation, its view: see _group_view)
        self._views: dict[tuple[str, str], tuple[int, tuple]] = {}

    def _catch_up(self, snapshot) -> None:
        changes: Sequence = snapshot.pod_changes
        for sign, pod, _node in changes[self._read:]:
            queue = self.queue_of(pod)
            if queue not in self.tree.queues:
                continue
            amounts = amounts_of(snapshot.requests_of(pod))
            amounts["gpu"] += self._dra_change(pod, sign, snapshot)
            firm = not self.preemptible(pod)
            for up in self.tree.ancestry(queue):
                for r in RESOURCES:
                    self.allocated[up][r] += sign * amounts[r]
                    if firm:
                        self.firm[up][r] += sign * amounts[r]
        self._read = len(changes)

    def _dra_change(self, pod: Mapping, sign: int, snapshot) -> float:
        """The DRA GPUs a placement of this cycle adds (the devices allocated to the pod's claims,
        by kai's rule: no plugin is asked here), or takes back when it is undone."""
        if sign > 0:
            ns = pod["metadata"].get("namespace", "")
            entries = (pod.get("spec") or {}).get("resourceClaims") or []
            mine = {(ns, claim_name_for(pod, e.get("name"))) for e in entries}
            fresh = mine - self._counted
            gpus = dra_gpus(pod, snapshot.allocation_of, self._index, counted=self._counted)
            self._dra[id(pod)] = (gpus, fresh & self._counted)
            return gpus
        gpus, claims = self._dra.pop(id(pod), (0.0, set()))
        self._counted -= claims
        return gpus

    def _workload(self, pod: Mapping, snapshot) -> dict[str, float]:
        """The pod with the waiting pods of its PodGroup placed alongside it: a gang's members are
        placed together, so the pod counts with the members before it (by name), and with at least
        as many as the gang still lacks of its ``minMember``."""
        group = _group_of(pod)
        spec = (snapshot.pod_groups.get(group) or {}).get("spec") if group else None
        minimum = spec.get("minMember") if isinstance(spec, Mapping) else None
        if not isinstance(minimum, int) or isinstance(minimum, bool):
            minimum = 0
        placed, waiting, sums = self._group_view(group, snapshot)
        # the pod's place among the waiting members by name: those before it, then enough after it
        # for the gang's minimum (sums[i] is what the first i waiting members ask for)
        mine = pod["metadata"].get("name", "")
        at = bisect_left(waiting, mine, key=lambda m: m["metadata"].get("name", ""))
        if at < len(waiting) and waiting[at] is pod:  # the pod, those before it and ``more`` after it
            more = min(len(waiting) - at - 1, max(0, minimum - placed - 1 - at))
            total = sums[at + 1 + more]
        else:  # not among the waiting members (already placed, or not one of the group's pods)
            more = min(len(waiting) - at, max(0, minimum - placed - 1 - at))
            total = [own + ahead for own, ahead in zip(self._asked(pod, snapshot), sums[at + more], strict=True)]
        # DRA GPUs (fractions of a GPU for MIG devices) are summed apart from the exact milli-units
        return {"gpu": total[0] / 1000 + total[3], "cpu": float(total[1]), "memory": total[2] / 1000}

    def _group_view(self, group: tuple[str, str] | None, snapshot) -> tuple[int, list[Mapping], list[list]]:
        """The group's members placed (bound, in flight or placed this cycle), those waiting sorted by
        name, and the running sums of what the waiting ones ask for (:meth:`_asked`); worked out
        once per group and snapshot generation (the members of a gang are checked one after another
        with nothing placed in between)."""
        if group is None:
            return 0, [], [[0, 0, 0, 0.0]]
        cached = self._views.get(group)
        if cached is not None and cached[0] == snapshot.generation:
            return cached[1]
        placed, waiting = 0, []
        for m in self._members(group):
            if snapshot.node_of(m) is not None:
                placed += 1
            else:
                waiting.append(m)
        waiting.sort(key=lambda m: m["metadata"].get("name", ""))
        sums = [[0, 0, 0, 0.0]]
        for m in waiting:
            asked = self._asked(m, snapshot)
            last = sums[-1]
            sums.append([last[0] + asked[0], last[1] + asked[1], last[2] + asked[2], last[3] + asked[3]])
        view = (placed, waiting, sums)
        self._views[group] = (snapshot.generation, view)
        return view

    def _asked(self, pod: Mapping, snapshot) -> tuple[int, int, int, float]:
        """What a pod asks for: GPUs, CPU and memory of its requests in milli-units, and the DRA
        GPUs of the allocation it would get, as worked out when the cycle started."""
        requests = snapshot.requests_of(pod)
        md = pod["metadata"]
        dra = self._pending.get((md.get("namespace", ""), md.get("name", "")), 0.0) if self._pending else 0.0
        return requests.get(GPU_RESOURCE, 0), requests.get("cpu", 0), requests.get("memory", 0), dra

    def _breach(self, queue: str, wanted: Mapping[str, float], held: Mapping[str, Mapping[str, float]],
                bound: str) -> tuple[Queue, str, float, float] | None:
        """The first queue up the chain, and resource, where ``held + wanted`` exceeds the queue's
        ``bound`` ("limit" or "quota")."""
        chain = self._chains.get(queue)
        if chain is None:
            chain = self._chains[queue] = [
                (name, self.tree.queues[name], {"limit": {r: self.tree.queues[name].terms(r).limit for r in RESOURCES},
                                                "quota": {r: self.tree.queues[name].terms(r).quota for r in RESOURCES}})
                for name in self.tree.ancestry(queue)]
        for name, q, bounds in chain:
            caps = bounds[bound]
            for r in RESOURCES:
                cap, asked = caps[r], wanted[r]
                if cap != UNLIMITED and asked != 0 and held[name][r] + asked > cap:
                    return q, r, cap, held[name][r]
        return None

    def over_capacity(self, pod: Mapping, queue: str, snapshot) -> str | None:
        """Why placing the pod's workload would break a queue's terms, in KAI's words, or None: a
        limit (``OverLimit``), then, for a non-preemptible workload, a quota
        (``NonPreemptibleOverQuota``: what non-preemptible workloads hold stays within the quota)."""
        self._catch_up(snapshot)
        wanted = self._workload(pod, snapshot)
        found = self._breach(queue, wanted, self.allocated, "limit")
        if found is not None:
            q, r, limit, held = found
            what, unit, scale = _SHOWN[r]
            return (f"OverLimit: {q.display_name or q.name} quota has reached the allowable limit of {what}. "
                    f"Limit is {limit / scale:g} {unit}, currently {held / scale:g} {unit} "
                    f"allocated and workload requested {wanted[r] / scale:g} {unit}")
        if self.preemptible(pod):
            return None
        found = self._breach(queue, wanted, self.firm, "quota")
        if found is None:
            return None
        q, r, quota, held = found
        _, unit, scale = _SHOWN[r]
        return (f"NonPreemptibleOverQuota: Non-preemptible workload is over quota. Workload requested "
                f"{wanted[r] / scale:g} {unit}, but {q.display_name or q.name} quota is {quota / scale:g} {unit}, "
                f"while {held / scale:g} {unit} are already allocated for non-preemptible "
                "pods. Use a preemptible workload to go over quota.")
