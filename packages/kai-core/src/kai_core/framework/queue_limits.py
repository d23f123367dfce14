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

GPUs here are ``nvidia.com/gpu``: a pending pod's DRA GPUs are not known before its claims are
allocated, and are not checked against limits yet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from kai_core.api.claims import claim_name_for
from kai_core.api.resources import RES_SLICES
from kai_core.framework.fairshare import UNLIMITED
from kai_core.framework.gang import POD_GROUP_ANNOTATION
from kai_core.framework.queue_usage import DeviceIndex, amounts_of, dra_gpus, snapshot_usage
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
        self._index = DeviceIndex(snapshot.objects(RES_SLICES).values())
        self._counted: set = set(start.counted)
        #: DRA GPUs counted for pods this cycle placed, by pod (taken back if the placement is undone)
        self._dra: dict[int, tuple[float, set]] = {}
        self.allocated = {q: dict(u.allocated) for q, u in usage.items()}
        self.firm = {q: dict(u.allocated_non_preemptible) for q, u in usage.items()}
        self._read = len(snapshot.pod_changes)

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
        members = self._members(group) if group else []
        placed = sum(1 for m in members if snapshot.node_of(m) is not None)
        waiting = sorted((m for m in members if snapshot.node_of(m) is None and m is not pod),
                         key=lambda m: m["metadata"].get("name", ""))
        mine = pod["metadata"].get("name", "")
        before = [m for m in waiting if m["metadata"].get("name", "") < mine]
        after = [m for m in waiting if m["metadata"].get("name", "") >= mine]
        together = [pod, *before, *after[:max(0, minimum - placed - 1 - len(before))]]
        wanted = dict.fromkeys(RESOURCES, 0.0)
        for member in together:
            for r, v in amounts_of(snapshot.requests_of(member)).items():
                wanted[r] += v
        return wanted

    def _breach(self, queue: str, wanted: Mapping[str, float], held: Mapping[str, Mapping[str, float]],
                bound: Callable[[Queue, str], float]) -> tuple[Queue, str, float, float] | None:
        """The first queue up the chain, and resource, where ``held + wanted`` exceeds ``bound``."""
        for name in self.tree.ancestry(queue):
            q = self.tree.queues[name]
            for r in RESOURCES:
                cap, asked = bound(q, r), wanted[r]
                if cap != UNLIMITED and asked != 0 and held[name][r] + asked > cap:
                    return q, r, cap, held[name][r]
        return None

    def over_capacity(self, pod: Mapping, queue: str, snapshot) -> str | None:
        """Why placing the pod's workload would break a queue's terms, in KAI's words, or None: a
        limit (``OverLimit``), then, for a non-preemptible workload, a quota
        (``NonPreemptibleOverQuota``: what non-preemptible workloads hold stays within the quota)."""
        self._catch_up(snapshot)
        wanted = self._workload(pod, snapshot)
        found = self._breach(queue, wanted, self.allocated, lambda q, r: q.terms(r).limit)
        if found is not None:
            q, r, limit, held = found
            what, unit, scale = _SHOWN[r]
            return (f"OverLimit: {q.display_name or q.name} quota has reached the allowable limit of {what}. "
                    f"Limit is {limit / scale:g} {unit}, currently {held / scale:g} {unit} "
                    f"allocated and workload requested {wanted[r] / scale:g} {unit}")
        if self.preemptible(pod):
            return None
        found = self._breach(queue, wanted, self.firm, lambda q, r: q.terms(r).quota)
        if found is None:
            return None
        q, r, quota, held = found
        _, unit, scale = _SHOWN[r]
        return (f"NonPreemptibleOverQuota: Non-preemptible workload is over quota. Workload requested "
                f"{wanted[r] / scale:g} {unit}, but {q.display_name or q.name} quota is {quota / scale:g} {unit}, "
                f"while {held / scale:g} {unit} are already allocated for non-preemptible "
                "pods. Use a preemptible workload to go over quota.")
