"""The queue tree the scheduler works with, read from KAI's Queue objects (``scheduling.run.ai/v2``).

What a Queue means follows KAI's scheduler (``pkg/scheduler/api/queue_info``, ``cache/cluster_info/
queue.go``, the proportion plugin), not only its documentation:

* an unset priority is 100; an unset quota, over-quota weight or limit is 0 (KAI's docs once called
  the unset quota "-1"; its code reads 0). Quota -1 is the whole of the parent's share, limit -1 is
  no limit;
* quotas and limits are in GPU devices, CPU millicores and memory megabytes; memory is turned into
  bytes here (any negative memory amount becomes -1, as KAI clamps it);
* a queue whose parent does not exist is left out together with its whole subtree. A queue on a
  parent cycle never reaches the top either, and is left out the same way (KAI keeps it but never
  gives it a share);
* only leaf queues hold workloads. A pod names its queue with its PodGroup's ``spec.queue`` or the
  label ``kai.scheduler/queue``; one that names none goes to ``default-queue``.

KAI's Helm chart creates ``default-queue`` under ``default-parent-queue`` (quota 0, over-quota
weight 1, limit -1 for every resource). kai has no chart-installed queues on the embedded cluster, so
when those two queues are missing they are assumed here with the chart's terms: a cluster without
any Queue puts every workload in one queue that may use the whole cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kai_core.framework.fairshare import UNLIMITED, Claimant, divide_tree
from kai_core.framework.gang import POD_GROUP_ANNOTATION

__all__ = [
    "DEFAULT_PARENT_QUEUE",
    "DEFAULT_PRIORITY",
    "DEFAULT_QUEUE",
    "QUEUE_LABEL",
    "RESOURCES",
    "Queue",
    "QueueError",
    "QueueTree",
    "ResourceTerms",
    "build_tree",
    "fair_shares",
    "pod_queue",
    "pod_group_in",
    "pod_queue_in",
    "preemptible",
    "preemptible_in_group",
    "high_priority",
    "queue_of_group",
    "tree_from_objects",
    "why_not_schedulable",
    "queue_from_object",
]

QUEUE_LABEL = "kai.scheduler/queue"
DEFAULT_QUEUE = "default-queue"
DEFAULT_PARENT_QUEUE = "default-parent-queue"
DEFAULT_PRIORITY = 100
#: the resources queues divide, in KAI's order
RESOURCES = ("gpu", "cpu", "memory")
_BYTES_PER_MB = 1_000_000


class QueueError(ValueError):
    """A Queue object that cannot be read (a field of the wrong type)."""


@dataclass(frozen=True)
class ResourceTerms:
    """Quota (deserved), over-quota weight and limit of one resource, in the scheduler's units."""

    quota: float = 0.0
    over_quota_weight: float = 0.0
    limit: float = 0.0


@dataclass(frozen=True)
class Queue:
    name: str
    parent: str = ""
    priority: int = DEFAULT_PRIORITY
    #: ``gpu`` in devices, ``cpu`` in millicores, ``memory`` in bytes
    resources: Mapping[str, ResourceTerms] = field(default_factory=dict)
    display_name: str = ""
    created: str = ""
    preempt_min_runtime: str | None = None
    reclaim_min_runtime: str | None = None

    def terms(self, resource: str) -> ResourceTerms:
        return self.resources.get(resource, ResourceTerms())


def _number(value: object, where: str, name: str) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QueueError(f"queue {name}: {where} must be a number, not {value!r}")
    return float(value)


def queue_from_object(obj: Mapping) -> Queue:
    """The scheduler's view of a Queue object; :class:`QueueError` names a field of the wrong type."""
    md = obj.get("metadata") or {}
    name = md.get("name") or ""
    spec = obj.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise QueueError(f"queue {name}: spec must be an object")
    priority = spec.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise QueueError(f"queue {name}: spec.priority must be an integer, not {priority!r}")
    resources = {}
    for resource in RESOURCES:
        raw = (spec.get("resources") or {}).get(resource) or {}
        where = f"spec.resources.{resource}"
        quota, weight, limit = (_number(raw.get(k), f"{where}.{k}", name)
                                for k in ("quota", "overQuotaWeight", "limit"))
        if resource == "memory":
            quota, limit = (max(UNLIMITED, v * _BYTES_PER_MB) for v in (quota, limit))
        resources[resource] = ResourceTerms(quota, weight, limit)
    return Queue(name=name, parent=spec.get("parentQueue") or "",
                 priority=DEFAULT_PRIORITY if priority is None else priority, resources=resources,
                 display_name=spec.get("displayName") or "", created=md.get("creationTimestamp") or "",
                 preempt_min_runtime=spec.get("preemptMinRuntime"), reclaim_min_runtime=spec.get("reclaimMinRuntime"))


def _chart_default(name: str, parent: str) -> Queue:
    terms = ResourceTerms(quota=0.0, over_quota_weight=1.0, limit=UNLIMITED)
    return Queue(name=name, parent=parent, resources=dict.fromkeys(RESOURCES, terms))


@dataclass(frozen=True)
class QueueTree:
    """Queues by name that reach the top, and each one's children (``""`` is the root)."""

    queues: Mapping[str, Queue]
    children: Mapping[str, tuple[str, ...]]
    #: queues left out, with the reason (a missing parent, or a parent cycle)
    left_out: Mapping[str, str] = field(default_factory=dict)
    #: the chart's default queues assumed because no Queue object of that name exists
    assumed: frozenset[str] = frozenset()

    @property
    def from_objects(self) -> bool:
        """Whether any queue of the tree comes from a Queue object (not only assumed defaults)."""
        return len(self.queues) > len(self.assumed & set(self.queues))

    def is_leaf(self, name: str) -> bool:
        return name in self.queues and not self.children.get(name)

    def ancestry(self, name: str) -> list[str]:
        """``name`` and its ancestors up to its top-level queue."""
        chain = []
        while name:
            chain.append(name)
            name = self.queues[name].parent
        return chain


def build_tree(queues: Iterable[Queue]) -> QueueTree:
    """The tree of ``queues``, with KAI's chart defaults when ``default-queue`` is missing."""
    by_name = {q.name: q for q in queues}
    assumed = set()
    if DEFAULT_QUEUE not in by_name:
        by_name[DEFAULT_QUEUE] = _chart_default(DEFAULT_QUEUE, DEFAULT_PARENT_QUEUE)
        assumed.add(DEFAULT_QUEUE)
        if DEFAULT_PARENT_QUEUE not in by_name:
            by_name[DEFAULT_PARENT_QUEUE] = _chart_default(DEFAULT_PARENT_QUEUE, "")
            assumed.add(DEFAULT_PARENT_QUEUE)
    children: dict[str, list[str]] = {}
    for q in by_name.values():
        children.setdefault(q.parent, []).append(q.name)
    reached: dict[str, Queue] = {}
    level = [""]
    while level:
        nxt = []
        for parent in level:
            for name in sorted(children.get(parent, ())):
                reached[name] = by_name[name]
                nxt.append(name)
        level = nxt
    left_out = {}
    for name, q in by_name.items():
        if name not in reached:
            left_out[name] = (f"its parent queue {q.parent} does not exist" if q.parent not in by_name
                              else f"its parent queue {q.parent} is not in the tree (missing or a cycle above it)")
    kept_children = {p: tuple(sorted(c for c in cs if c in reached)) for p, cs in children.items()
                     if p == "" or p in reached}
    return QueueTree(queues=reached, children={p: c for p, c in kept_children.items() if c}, left_out=left_out,
                     assumed=frozenset(assumed))


def fair_shares(tree: QueueTree, total: Mapping[str, float],
                requested: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """``{queue: {resource: fair share}}`` for every queue of ``tree``.

    ``total`` is what the cluster has of each resource; ``requested[queue][resource]`` is what the
    workloads of that queue ask for, running and pending (queues not named ask for nothing). A
    queue's request counts for its ancestors too, as in KAI.
    """
    subtree: dict[str, dict[str, float]] = {name: dict.fromkeys(RESOURCES, 0.0) for name in tree.queues}
    for name, amounts in requested.items():
        if name not in tree.queues:
            continue
        for up in tree.ancestry(name):
            for resource in RESOURCES:
                subtree[up][resource] += amounts.get(resource, 0.0)
    terms = {
        resource: {
            name: Claimant(name=name, deserved=q.terms(resource).quota, limit=q.terms(resource).limit,
                           weight=q.terms(resource).over_quota_weight, request=subtree[name][resource],
                           priority=q.priority, created=q.created)
            for name, q in tree.queues.items()
        }
        for resource in RESOURCES
    }
    return divide_tree({r: total.get(r, 0.0) for r in RESOURCES}, tree.children, terms)


def pod_queue(pod: Mapping, pod_group: Mapping | None) -> str:
    """The queue a pod's workload is in: its PodGroup's ``spec.queue``, else its label
    ``kai.scheduler/queue``, else ``default-queue`` (what KAI's pod-grouper writes into the group)."""
    return queue_of_group(pod_group, ((pod.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL))


def queue_of_group(pod_group: Mapping | None, label: object) -> str:
    """:func:`pod_queue` from the pod's PodGroup (or None) and its ``kai.scheduler/queue`` label's value."""
    spec = (pod_group or {}).get("spec")
    if isinstance(spec, Mapping) and isinstance(spec.get("queue"), str) and spec["queue"]:
        return spec["queue"]
    return label if isinstance(label, str) and label else DEFAULT_QUEUE


def pod_group_in(pod: Mapping, pod_groups: Mapping[tuple[str, str], Mapping]) -> Mapping | None:
    """The pod's PodGroup (annotation ``pod-group-name``, same namespace) in ``pod_groups``, or None."""
    md = pod.get("metadata") or {}
    group = (md.get("annotations") or {}).get(POD_GROUP_ANNOTATION)
    return pod_groups.get((md.get("namespace", ""), group)) if group else None


def pod_queue_in(pod: Mapping, pod_groups: Mapping[tuple[str, str], Mapping]) -> str:
    """:func:`pod_queue` with the pod's PodGroup looked up in ``pod_groups``."""
    return pod_queue(pod, pod_group_in(pod, pod_groups))


#: below this priority a workload is preemptible unless its PodGroup says otherwise (KAI's threshold)
NON_PREEMPTIBLE_PRIORITY = 100


def preemptible(pod: Mapping, pod_group: Mapping | None) -> bool:
    """Whether the pod's workload may be preempted or reclaimed: its PodGroup's ``spec.preemptibility``
    (``preemptible`` / ``non-preemptible``), else a priority below 100 (the pod's ``spec.priority``,
    which the API server fills from its PriorityClass)."""
    return preemptible_in_group(pod_group, high_priority((pod.get("spec") or {}).get("priority")))


def high_priority(priority: object) -> bool:
    """Whether a pod's ``spec.priority`` is at or above KAI's non-preemptible threshold."""
    return isinstance(priority, int) and not isinstance(priority, bool) and priority >= NON_PREEMPTIBLE_PRIORITY


def preemptible_in_group(pod_group: Mapping | None, high: bool) -> bool:
    """:func:`preemptible` from the pod's PodGroup (or None) and :func:`high_priority` of the pod."""
    spec = (pod_group or {}).get("spec")
    said = spec.get("preemptibility") if isinstance(spec, Mapping) else None
    if said in ("preemptible", "non-preemptible"):
        return said == "preemptible"
    return not high


def tree_from_objects(objs: Iterable[Mapping]) -> QueueTree:
    """:func:`build_tree` of Queue objects; one that cannot be read is left out (the CRD's schema
    refuses it; a store that does not validate must not stop the scheduler)."""
    queues = []
    for obj in objs:
        try:
            queues.append(queue_from_object(obj))
        except QueueError:
            continue
    return build_tree(queues)


def why_not_schedulable(tree: QueueTree, queue: str) -> str | None:
    """Why workloads of ``queue`` cannot be scheduled (KAI skips them), or None when they can."""
    if queue in tree.left_out:
        return f"queue '{queue}' is left out of scheduling: {tree.left_out[queue]}"
    if queue not in tree.queues:
        return f"Queue '{queue}' does not exist"
    if not tree.is_leaf(queue):
        children = ", ".join(tree.children[queue])
        return f"queue '{queue}' is not a leaf queue (its children: {children}); only leaf queues hold workloads"
    return None
