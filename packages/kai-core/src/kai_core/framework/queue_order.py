"""The order in which a cycle tries pending pods when there are queues: the queue furthest below its
fair share first, as KAI's allocate action takes jobs from its queue order
(``pkg/scheduler/plugins/proportion/queue_order``), then the pod order within the queue (priority,
then age).

Each cycle, the fair share of every queue is computed from the cluster's capacity
(:func:`cluster_total`) and what the queues' pods ask for. Then pods are taken one at a time, down the
tree: among the top-level queues with pending pods, the one that goes first by KAI's comparison, each
with its subtree's best pod; then among its children the same way, down to a leaf queue, whose next pod
is taken. KAI's comparison, first difference wins:

1. a queue not above its fair share (above means: in every resource);
2. a queue that stays within its quota with the pod ("starved");
3. the higher queue priority;
4. a queue that would not use a resource of which it may have nothing;
5. the smaller dominant share with the pod: the largest ``allocated / allocatable`` over GPU, CPU and
   memory, allocatable being ``min(limit, max(quota, fair share))``;
6. the same without the pod; then the older queue, then the name.

Taking a pod adds its request to its queue's allocation and its ancestors' (as though it were placed),
so queues take turns; only the keys along that chain change (one heap per parent queue). Unlike KAI,
the order is fixed before any pod is placed: a pod that does not fit still counts for its queue in this
cycle's order. KAI's rule "smaller allocatable share in every resource" before the age is left out.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from kai_core.api.resources import RES_QUEUES, RES_SLICES, is_active_pod, node_allocatable, pod_requests
from kai_core.framework.fairshare import UNLIMITED
from kai_core.framework.queue_usage import (
    GPU_RESOURCE,
    DeviceIndex,
    QueueUsage,
    WorthFn,
    gpu_worth,
    indexed_pods,
    snapshot_usage,
)
from kai_core.framework.queues import RESOURCES, Queue, QueueTree, fair_shares, pod_queue_in, tree_from_objects

__all__ = ["QueueFigures", "cluster_total", "order_by_queues", "order_pending", "queue_standing", "snapshot_standing"]

@dataclass(frozen=True)
class QueueFigures:
    """One queue at the start of a cycle, for metrics: fair share and allocation by resource (GPUs,
    millicores, bytes) and the pods of its own waiting to be tried."""

    fair_share: Mapping[str, float]
    allocated: Mapping[str, float]
    pending: int


#: KAI's penalty on a resource used by a queue that may have none of it
_NO_SHARE_PENALTY = 1000.0


def cluster_total(snapshot) -> dict[str, float]:
    """What the queues divide: allocatable of Ready nodes, less what pods of other schedulers hold
    there, plus the whole GPUs published by DRA drivers whose name contains "gpu" (KAI counts every
    device of such a driver; MIG devices are left out here, as they are parts of GPUs counted)."""
    total = dict.fromkeys(RESOURCES, 0.0)
    ready = set()
    for node in snapshot.nodes:
        if node.ready is not True or node.problem:
            continue
        ready.add(node.name)
        _add(total, node_allocatable(node.obj), 1)
    pods = indexed_pods(snapshot)
    if pods is not None:  # the cache's sums by node: all active bound pods', and this scheduler's
        mine = pods.scheduler_requested.get(snapshot.scheduler_name, {})
        for name in sorted(ready):
            held = pods.requested.get(name)
            if held:
                ours = mine.get(name, {})
                _add(total, {r: v - ours.get(r, 0) for r, v in held.items()}, -1)
    else:
        for pod in snapshot.pods.values():
            spec = pod.get("spec") or {}
            theirs = spec.get("schedulerName") != snapshot.scheduler_name
            if theirs and spec.get("nodeName") in ready and is_active_pod(pod):
                _add(total, pod_requests(pod), -1)
    slices = list(snapshot.objects(RES_SLICES).values())
    index = DeviceIndex(slices)
    for s in slices:
        spec = s.get("spec") or {}
        if spec.get("nodeName") and spec["nodeName"] not in ready:
            continue
        driver = spec.get("driver", "")
        for d in spec.get("devices") or []:
            if gpu_worth(driver, d, index) == 1.0:
                total["gpu"] += 1
    return total


def _add(total: dict[str, float], milli: Mapping[str, int], sign: int) -> None:
    total["cpu"] += sign * milli.get("cpu", 0)
    total["memory"] += sign * milli.get("memory", 0) / 1000
    total["gpu"] += sign * milli.get(GPU_RESOURCE, 0) / 1000


def _allocatable(queue: Queue, resource: str, fair_share: float, total: float) -> float:
    terms = queue.terms(resource)
    if terms.quota == UNLIMITED:
        share = terms.limit
    else:
        share = max(terms.quota, fair_share)
        if terms.limit != UNLIMITED:
            share = min(terms.limit, share)
    return total if share == UNLIMITED else share


class _Standing:
    """One queue's fair share and allocation during the ordering, by resource in :data:`RESOURCES`'
    order (lists: the key is computed once per pod taken and queue up its chain)."""

    __slots__ = ("allocated", "fair", "cap", "quota", "order", "age")

    def __init__(self, queue: Queue, fair_share: Mapping[str, float], allocated: Mapping[str, float],
                 total: Mapping[str, float]) -> None:
        self.allocated = [allocated[r] for r in RESOURCES]
        self.fair = [fair_share.get(r, 0.0) for r in RESOURCES]
        self.cap = [_allocatable(queue, r, fair_share.get(r, 0.0), total[r]) for r in RESOURCES]
        self.quota = [queue.terms(r).quota for r in RESOURCES]
        self.order = -queue.priority
        self.age = (queue.created, queue.name)

    def key(self, job: Sequence[float]) -> tuple:
        """KAI's comparison of this queue taking ``job`` (GPUs, millicores, bytes), smallest first."""
        a0, a1, a2 = self.allocated
        j0, j1, j2 = job
        f0, f1, f2 = self.fair
        q0, q1, q2 = self.quota
        c0, c1, c2 = self.cap
        u0, u1, u2 = a0 + j0, a1 + j1, a2 + j2
        over = a0 > f0 and a1 > f1 and a2 > f2
        starved = ((q0 == UNLIMITED or u0 <= q0) and (q1 == UNLIMITED or u1 <= q1)
                   and (q2 == UNLIMITED or u2 <= q2))
        no_share = (c0 == 0 and u0 > 0) or (c1 == 0 and u1 > 0) or (c2 == 0 and u2 > 0)
        return (over, not starved, self.order, no_share, _dominant(u0, u1, u2, c0, c1, c2),
                _dominant(a0, a1, a2, c0, c1, c2), *self.age)


def _dominant(u0: float, u1: float, u2: float, c0: float, c1: float, c2: float) -> float:
    """The largest share of the queue's allocatable used, over the three resources (KAI's penalty
    for a resource of which it may have nothing)."""
    return max(0.0, u0 * _NO_SHARE_PENALTY if c0 == 0 else u0 / c0, u1 * _NO_SHARE_PENALTY if c1 == 0 else u1 / c1,
               u2 * _NO_SHARE_PENALTY if c2 == 0 else u2 / c2)


def queue_standing(snapshot, tree: QueueTree, worth: WorthFn | None = None
                   ) -> tuple[dict[str, float], dict[str, QueueUsage], dict[str, dict[str, float]]]:
    """The cluster's total, every queue's usage (this scheduler's pods; bound or in flight counts as
    allocated) and every queue's fair share, for this snapshot."""
    usage = snapshot_usage(snapshot, tree, worth).usage
    total = cluster_total(snapshot)
    shares = fair_shares(tree, total, {q: usage[q].requested for q in tree.queues if tree.is_leaf(q)})
    return total, usage, shares


def order_by_queues(pods: Sequence[dict], snapshot, tree: QueueTree, queue_of: Callable[[dict], str],
                    worth: WorthFn | None = None, figures: dict[str, QueueFigures] | None = None) -> list[dict]:
    """``pods`` (pending, in their pod order) reordered by their queues' standing; pods whose queue
    cannot hold workloads keep their place at the end. With a single leaf queue nothing changes.
    ``figures``, when given, receives every queue's :class:`QueueFigures`."""
    if sum(1 for name in tree.queues if tree.is_leaf(name)) <= 1 and figures is None:
        return list(pods)
    total, usage, shares = queue_standing(snapshot, tree, worth)
    queues = [queue_of(pod) for pod in pods]
    if figures is not None:
        counts: dict[str, int] = {}
        for queue in queues:
            counts[queue] = counts.get(queue, 0) + 1
        for name in tree.queues:
            figures[name] = QueueFigures(shares.get(name, {}), usage[name].allocated, counts.get(name, 0))
        if sum(1 for name in tree.queues if tree.is_leaf(name)) <= 1:
            return list(pods)
    standing = {name: _Standing(q, shares.get(name, {}), usage[name].allocated, total)
                for name, q in tree.queues.items()}
    waiting: dict[str, list[dict]] = {}
    rest = []
    for pod, queue in zip(pods, queues, strict=True):
        if tree.is_leaf(queue):
            waiting.setdefault(queue, []).append(pod)
        else:
            rest.append(pod)
    for line in waiting.values():
        line.reverse()  # pop() from the end takes them in pod order

    amounts: dict[int, tuple[float, float, float]] = {}
    start = snapshot_usage(snapshot, tree, worth)  # the one queue_standing used

    def amounts_for(pod: dict) -> tuple[float, float, float]:
        found = amounts.get(id(pod))
        if found is None:
            found = amounts[id(pod)] = start.job(snapshot, pod)
        return found

    # one heap per parent ("" is the root) of its children that still have pending pods, keyed by the
    # child's standing with its subtree's best pod; taking a pod changes only the keys along its
    # queue's chain, which are pushed again (stale entries are skipped by their version)
    heaps: dict[str, list] = {}
    version: dict[str, int] = dict.fromkeys(tree.queues, 0)
    best: dict[str, str] = {}  # queue -> the leaf whose next pod is its subtree's best
    leaves = {name for name in tree.queues if tree.is_leaf(name)}
    parent_of = {name: q.parent for name, q in tree.queues.items()}
    chains: dict[str, list[str]] = {}

    def top(parent: str) -> tuple | None:
        heap = heaps.get(parent)
        while heap and version.get(heap[0][1]) != heap[0][2]:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def refresh(name: str) -> None:
        """Push ``name``'s current key into its parent's heap, or drop it when nothing waits under it."""
        version[name] += 1
        if name in leaves:
            leaf = name if waiting.get(name) else None
        else:
            entry = top(name)
            leaf = best.get(entry[1]) if entry else None
        if leaf is None:
            best.pop(name, None)
            return
        best[name] = leaf
        key = standing[name].key(amounts_for(waiting[leaf][-1]))
        heapq.heappush(heaps.setdefault(parent_of[name], []), (key, name, version[name]))

    # children before parents: a parent's key needs its best child's
    for name in sorted(tree.queues, key=lambda q: -len(tree.ancestry(q))):
        refresh(name)
    out = []
    while (entry := top("")) is not None:
        leaf = best[entry[1]]
        pod = waiting[leaf].pop()
        out.append(pod)
        j0, j1, j2 = amounts_for(pod)
        chain = chains.get(leaf)
        if chain is None:
            chain = chains[leaf] = tree.ancestry(leaf)
        for q in chain:
            held = standing[q].allocated
            held[0] += j0
            held[1] += j1
            held[2] += j2
        for q in chain:
            refresh(q)
    return out + rest


def order_pending(pods: Sequence[dict], snapshot, worth: WorthFn | None = None
                  ) -> tuple[list[dict], dict[str, QueueFigures] | None]:
    """:func:`order_by_queues` with the snapshot's Queues, and every queue's figures when any Queue
    object exists (None otherwise); ``pods`` unchanged when Queues are not watched. ``worth``: the
    plugins' say on what allocated DRA devices are worth."""
    if not snapshot.watches(RES_QUEUES):
        return list(pods), None
    tree = tree_from_objects(snapshot.objects(RES_QUEUES).values())
    figures: dict[str, QueueFigures] | None = {} if tree.from_objects else None
    return order_by_queues(pods, snapshot, tree, _queue_in(snapshot), worth, figures), figures


def _queue_in(snapshot) -> Callable[[dict], str]:
    return lambda pod: pod_queue_in(pod, snapshot.pod_groups)


def snapshot_standing(snapshot, worth: WorthFn | None = None
                      ) -> tuple[QueueTree, dict[str, QueueUsage], dict[str, dict[str, float]]]:
    """The snapshot's queue tree, usage and fair shares (what ``kai-cli get queues`` shows)."""
    tree = tree_from_objects(snapshot.objects(RES_QUEUES).values())
    _total, usage, shares = queue_standing(snapshot, tree, worth)
    return tree, usage, shares
