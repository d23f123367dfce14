"""Queue limits at placement, as KAI's capacity policy checks them
(``pkg/scheduler/plugins/proportion/capacity_policy/max_allowed_check.go``): a workload may not take a
queue, or any of its ancestors, above its limit.

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

from kai_core.api.resources import RES_SLICES
from kai_core.framework.fairshare import UNLIMITED
from kai_core.framework.gang import POD_GROUP_ANNOTATION
from kai_core.framework.queue_usage import amounts_of, queue_usage
from kai_core.framework.queues import RESOURCES, QueueTree

__all__ = ["QueueLedger", "has_limits"]

#: how KAI names each resource in its OverLimit message, and the unit it is shown in
_SHOWN = {"gpu": ("GPUs", "GPUs", 1.0), "cpu": ("CPU cores", "cores", 1000.0), "memory": ("memory", "GB", 1e9)}


def has_limits(tree: QueueTree) -> bool:
    """Whether any queue of the tree limits anything (KAI's chart defaults do not)."""
    return any(q.terms(r).limit != UNLIMITED for q in tree.queues.values() for r in RESOURCES)


def _group_of(pod: Mapping) -> tuple[str, str] | None:
    md = pod.get("metadata") or {}
    name = (md.get("annotations") or {}).get(POD_GROUP_ANNOTATION)
    return (md.get("namespace", ""), name) if name else None


class QueueLedger:
    """Allocated amounts of every queue during one cycle: bound and in-flight pods when the cycle
    starts, then the cycle's own decisions, read from the snapshot's log of placed pods."""

    def __init__(self, snapshot, tree: QueueTree, queue_of: Callable[[Mapping], str]) -> None:
        self.tree = tree
        self.queue_of = queue_of
        candidates = [(p, queue_of(p)) for p in snapshot.group_candidates()]
        usage = queue_usage(tree, candidates, snapshot.claims, snapshot.objects(RES_SLICES).values(),
                            bound=lambda p: snapshot.node_of(p) is not None)
        self.allocated = {q: dict(u.allocated) for q, u in usage.items()}
        self._read = len(snapshot.pod_changes)
        self._groups: dict[tuple[str, str], list[Mapping]] = {}
        for pod, _ in candidates:
            group = _group_of(pod)
            if group is not None:
                self._groups.setdefault(group, []).append(pod)

    def _catch_up(self, snapshot) -> None:
        changes: Sequence = snapshot.pod_changes
        for sign, pod, _node in changes[self._read:]:
            queue = self.queue_of(pod)
            if queue not in self.tree.queues:
                continue
            amounts = amounts_of(snapshot.requests_of(pod))
            for up in self.tree.ancestry(queue):
                for r in RESOURCES:
                    self.allocated[up][r] += sign * amounts[r]
        self._read = len(changes)

    def _workload(self, pod: Mapping, snapshot) -> dict[str, float]:
        """The pod with the waiting pods of its PodGroup placed alongside it: a gang's members are
        placed together, so the pod counts with the members before it (by name), and with at least
        as many as the gang still lacks of its ``minMember``."""
        group = _group_of(pod)
        spec = (snapshot.pod_groups.get(group) or {}).get("spec") if group else None
        minimum = spec.get("minMember") if isinstance(spec, Mapping) else None
        if not isinstance(minimum, int) or isinstance(minimum, bool):
            minimum = 0
        members = self._groups.get(group, []) if group else []
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

    def over_limit(self, pod: Mapping, queue: str, snapshot) -> str | None:
        """KAI's OverLimit message when placing the pod's workload takes a queue above a limit."""
        self._catch_up(snapshot)
        wanted = self._workload(pod, snapshot)
        for name in self.tree.ancestry(queue):
            q = self.tree.queues[name]
            for r in RESOURCES:
                limit, asked = q.terms(r).limit, wanted[r]
                if limit == UNLIMITED or asked == 0 or self.allocated[name][r] + asked <= limit:
                    continue
                what, unit, scale = _SHOWN[r]
                return (f"OverLimit: {q.display_name or name} quota has reached the allowable limit of {what}. "
                        f"Limit is {limit / scale:g} {unit}, currently {self.allocated[name][r] / scale:g} {unit} "
                        f"allocated and workload requested {asked / scale:g} {unit}")
        return None
