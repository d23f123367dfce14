"""What each queue's workloads hold and ask for: GPUs, CPU and memory, as KAI's PodGroup and queue
controllers sum them into ``status.allocated`` and ``status.requested`` of a Queue.

- A pod asks for its effective requests (containers, init containers, overhead) while it is active
  (not finished); it holds them once it is bound to a node. A queue's amounts include its children's.
- GPUs are the extended resource ``nvidia.com/gpu`` plus GPUs allocated through DRA claims. Unlike
  KAI (which guesses from the request: a device class whose name contains "gpu", ``All`` as 1,
  ``firstAvailable`` as 0), the devices actually allocated are counted: a bound pod's claims'
  ``status.allocation`` results. A claim shared by several pods counts once, for the first of its
  pods (by namespace and name). A device counts by :func:`gpu_worth`: a device of a driver whose
  name contains "gpu" is one GPU, a MIG device the fraction of its parent GPU's memory it has.
  A pending pod's DRA GPUs are those of the allocation it would get
  (:class:`~kai_core.framework.pending_gpus.PendingDevices`): they count in ``requested``, a
  claim shared by pending pods once, a claim already allocated not again.

A device plugin may say what its devices are worth (hook ``kai_device_gpu_worth``, passed in as
``worth``); :func:`gpu_worth` is the rule for devices no plugin answers for
(:mod:`kai_core.framework.device_worth`).

A scheduler's cycle does not walk every pod for this: its cache keeps the pods' requests summed by
what decides their queue and standing (:class:`UsageIndex`, updated one pod event at a time), and a
cycle reads those sums (one per PodGroup, or per queue label), the pods in flight and the pods with
claims (:func:`snapshot_usage`). Both ways give the same figures: requests are summed in
milli-units, exactly, and the DRA GPUs pod by pod in the same order (bound pods first, then pending
ones). Pods without claims cost nothing more for that.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from kai_core.api.claims import claim_name_for
from kai_core.api.resources import RES_PODS, RES_SLICES, is_active_pod, pod_requests
from kai_core.framework.device_worth import DeviceIndex, WorthFn, gpu_worth, results_gpus
from kai_core.framework.gang import POD_GROUP_ANNOTATION
from kai_core.framework.pending_gpus import PendingDevices
from kai_core.framework.queues import (
    QUEUE_LABEL,
    RESOURCES,
    QueueTree,
    high_priority,
    pod_group_in,
    pod_queue,
    pod_queue_in,
    preemptible,
    preemptible_in_group,
    queue_of_group,
)

__all__ = ["GPU_RESOURCE", "AllocationFn", "DeviceIndex", "QueueUsage", "UsageIndex", "WorthFn", "amounts_of",
           "dra_gpus", "gpu_worth", "indexed_pods", "pod_amounts", "queue_usage", "SnapshotUsage", "snapshot_usage"]

GPU_RESOURCE = "nvidia.com/gpu"


class QueueUsage:
    """``allocated`` (and the part of it held by non-preemptible workloads) and ``requested`` of one
    queue: ``gpu`` in devices, ``cpu`` in millicores, ``memory`` in bytes."""

    def __init__(self) -> None:
        self.allocated = dict.fromkeys(RESOURCES, 0.0)
        self.allocated_non_preemptible = dict.fromkeys(RESOURCES, 0.0)
        self.requested = dict.fromkeys(RESOURCES, 0.0)

    def add(self, amounts: Mapping[str, float], allocated: bool, non_preemptible: bool = False) -> None:
        for r in RESOURCES:
            self.requested[r] += amounts.get(r, 0.0)
            if allocated:
                self.allocated[r] += amounts.get(r, 0.0)
                if non_preemptible:
                    self.allocated_non_preemptible[r] += amounts.get(r, 0.0)


def pod_amounts(pod: Mapping) -> dict[str, float]:
    """What a pod asks for, DRA claims aside: ``gpu`` (nvidia.com/gpu), ``cpu`` (millicores), ``memory`` (bytes)."""
    return amounts_of(pod_requests(pod))


def amounts_of(requests: Mapping[str, int]) -> dict[str, float]:
    """:func:`pod_amounts` from a pod's requests in milli-units (``pod_requests``, or a snapshot's cached copy)."""
    return {"gpu": requests.get(GPU_RESOURCE, 0) / 1000, "cpu": float(requests.get("cpu", 0)),
            "memory": requests.get("memory", 0) / 1000}


#: a claim's allocation (``status.allocation``, or one decided but not written yet) by (namespace, name)
AllocationFn = Callable[[tuple[str, str]], Mapping | None]


def _stored_allocation(claims: Mapping[tuple[str, str], Mapping]) -> AllocationFn:
    return lambda key: ((claims.get(key) or {}).get("status") or {}).get("allocation")


def dra_gpus(pod: Mapping, allocation_of: AllocationFn, index: DeviceIndex, worth: WorthFn | None = None,
             counted: set | None = None) -> float:
    """GPUs of the devices allocated to the pod's claims; a claim in ``counted`` is skipped (and
    added), so a claim shared by several pods counts once."""
    total = 0.0
    ns = pod["metadata"].get("namespace", "")
    for entry in (pod.get("spec") or {}).get("resourceClaims") or []:
        name = claim_name_for(pod, entry.get("name"))
        if not name or (counted is not None and (ns, name) in counted):
            continue
        allocation = allocation_of((ns, name))
        if not allocation:
            continue
        if counted is not None:
            counted.add((ns, name))
        total += results_gpus(allocation, index, worth)
    return total


def queue_usage(tree: QueueTree, pods: Iterable[tuple[Mapping, str]], claims: Mapping[tuple[str, str], Mapping],
                slices: Iterable[Mapping], bound: Callable[[Mapping], bool] | None = None,
                non_preemptible: Callable[[Mapping], bool] | None = None,
                worth: WorthFn | None = None, allocation_of: AllocationFn | None = None,
                counted: set | None = None, pending: PendingDevices | None = None,
                pending_gpus: dict | None = None) -> dict[str, QueueUsage]:
    """Usage of every queue of ``tree`` from ``(pod, its queue)`` pairs; pods of queues outside the
    tree are not counted (KAI does not schedule them). ``bound`` says whether a pod holds its
    resources (default: it has a node); the scheduler also counts pods whose binding is in flight.
    ``non_preemptible`` says which pods' allocations count as non-preemptible (default: none);
    ``worth`` is the plugins' say on DRA devices (``KaiPluginManager.device_gpu_worth``);
    ``allocation_of`` finds a claim's allocation (default: its ``status.allocation`` in ``claims``; the
    scheduler also knows allocations in flight); ``counted`` receives the claims counted (a caller
    that counts more pods later passes it on to :func:`dra_gpus`). With ``pending``, the pending
    pods' DRA GPUs are in ``requested`` too, each pod's figure put in ``pending_gpus`` (by
    namespace and name) when given."""
    sums = _Sums(tree)
    held_with_claims = []
    waiting_with_claims = []
    for pod, queue in pods:
        if queue not in tree.queues or not is_active_pod(pod):
            continue
        holds = bound(pod) if bound else bool((pod.get("spec") or {}).get("nodeName"))
        firm = bool(holds and non_preemptible and non_preemptible(pod))
        sums.add(queue, _milli_amounts(pod_requests(pod)), holds, firm)
        if (pod.get("spec") or {}).get("resourceClaims"):
            if holds:
                held_with_claims.append((pod, queue, firm))
            elif pending is not None:
                waiting_with_claims.append((pod, queue))
    return sums.finish(held_with_claims, allocation_of or _stored_allocation(claims), DeviceIndex(slices), worth,
                       set() if counted is None else counted, waiting_with_claims, pending, pending_gpus)


def _milli_amounts(requests: Mapping[str, int]) -> tuple[int, int, int]:
    """GPUs, CPU and memory of a pod's requests, in milli-units (:data:`RESOURCES`' order)."""
    return requests.get(GPU_RESOURCE, 0), requests.get("cpu", 0), requests.get("memory", 0)


class _Sums:
    """Leaf queues' requested, allocated and non-preemptible allocated amounts, summed exactly in
    milli-units, then added up the tree and turned into :class:`QueueUsage` (GPUs, millicores, bytes)."""

    def __init__(self, tree: QueueTree) -> None:
        self.tree = tree
        #: queue -> [requested, allocated, non-preemptible allocated], each [gpu, cpu, memory]
        self.own: dict[str, list[list[int]]] = {}

    def add(self, queue: str, milli: tuple[int, int, int], allocated: bool, firm: bool, sign: int = 1) -> None:
        rows = self.own.get(queue)
        if rows is None:
            rows = self.own[queue] = [[0, 0, 0], [0, 0, 0], [0, 0, 0]]
        for row in (rows[0], rows[1], rows[2]) if firm else (rows[0], rows[1]) if allocated else (rows[0],):
            row[0] += sign * milli[0]
            row[1] += sign * milli[1]
            row[2] += sign * milli[2]

    def finish(self, held_with_claims: list[tuple[Mapping, str, bool]], allocation_of: AllocationFn,
               index: DeviceIndex, worth: WorthFn | None, counted: set,
               waiting_with_claims: list[tuple[Mapping, str]] = (), pending: PendingDevices | None = None,
               pending_gpus: dict | None = None) -> dict[str, QueueUsage]:
        """Every queue's usage; the DRA GPUs of ``held_with_claims`` (pods holding their resources,
        with their queues and whether they are non-preemptible) are counted pod by pod, in the
        order of their namespace and name, a claim once; then, with ``pending``, those of the
        allocations ``waiting_with_claims`` (pending pods and their queues) would get, in
        ``requested`` only, the same way (each pod's figure into ``pending_gpus``)."""
        totals: dict[str, list[list[int]]] = {}
        for queue, rows in self.own.items():
            for up in self.tree.ancestry(queue):
                acc = totals.get(up)
                if acc is None:
                    acc = totals[up] = [[0, 0, 0], [0, 0, 0], [0, 0, 0]]
                for mine, theirs in zip(acc, rows, strict=True):
                    for i in range(3):
                        mine[i] += theirs[i]
        usage = {name: QueueUsage() for name in self.tree.queues}
        for name, (requested, allocated, firm) in totals.items():
            u = usage[name]
            for target, row in ((u.requested, requested), (u.allocated, allocated),
                                (u.allocated_non_preemptible, firm)):
                target["gpu"] = row[0] / 1000
                target["cpu"] = float(row[1])
                target["memory"] = row[2] / 1000
        held_with_claims.sort(key=lambda e: (e[0]["metadata"].get("namespace", ""), e[0]["metadata"].get("name", "")))
        for pod, queue, firm in held_with_claims:
            gpus = dra_gpus(pod, allocation_of, index, worth, counted)
            if not gpus:
                continue
            for up in self.tree.ancestry(queue):
                u = usage[up]
                u.requested["gpu"] += gpus
                u.allocated["gpu"] += gpus
                if firm:
                    u.allocated_non_preemptible["gpu"] += gpus
        if pending is None or not waiting_with_claims:
            return usage
        waiting_with_claims = sorted(waiting_with_claims, key=lambda e: (e[0]["metadata"].get("namespace", ""),
                                                                         e[0]["metadata"].get("name", "")))
        # claims not allocated yet: kept apart from ``counted`` (the claims of allocations counted),
        # as a cycle that allocates one counts it as allocated then
        shared: set = set()
        for pod, queue in waiting_with_claims:
            gpus = pending.gpus(pod, shared)
            if pending_gpus is not None:
                md = pod["metadata"]
                pending_gpus[(md.get("namespace", ""), md.get("name", ""))] = gpus
            if gpus:
                for up in self.tree.ancestry(queue):
                    usage[up].requested["gpu"] += gpus
        return usage


_Key = tuple[str, str]
#: what decides a counted pod's queue and standing: (schedulerName, namespace, PodGroup name or None,
#: queue label or None, priority >= 100, bound to a node)
_Bucket = tuple[str, str, "str | None", "str | None", bool, bool]


class UsageIndex:
    """Pods' requests summed by what decides their queue and standing, kept as pod events arrive
    (the scheduler's cache feeds it): the active pods not being deleted, by scheduler name,
    namespace, PodGroup annotation, queue label, priority at or above KAI's non-preemptible
    threshold, and bound or not; besides, such pods by PodGroup, and those with claims."""

    def __init__(self) -> None:
        #: bucket -> [pods, gpu, cpu, memory] (milli-units)
        self.buckets: dict[_Bucket, list[int]] = {}
        #: (namespace, PodGroup name) -> its counted pods by key
        self.groups: dict[_Key, dict[_Key, dict]] = {}
        #: counted pods with resource claims, by key
        self.with_claims: dict[_Key, dict] = {}
        self._entries: dict[_Key, tuple[_Bucket, tuple[int, int, int]]] = {}

    @staticmethod
    def counts(pod: Mapping) -> bool:
        """Whether the pod is counted: a scheduler's, active and not being deleted."""
        spec = pod.get("spec")
        return (isinstance(spec, dict) and isinstance(spec.get("schedulerName"), str) and is_active_pod(pod)
                and not pod["metadata"].get("deletionTimestamp"))

    def put(self, key: _Key, pod: dict, requests: Mapping[str, int]) -> None:
        """The pod (counted: see :meth:`counts`) with its requests was added or changed."""
        self.remove(key)
        md = pod["metadata"]
        spec = pod["spec"]
        group = (md.get("annotations") or {}).get(POD_GROUP_ANNOTATION)
        group = group if isinstance(group, str) and group else None
        label = (md.get("labels") or {}).get(QUEUE_LABEL)
        label = label if isinstance(label, str) and label else None
        bucket = (spec["schedulerName"], md.get("namespace", ""), group, label, high_priority(spec.get("priority")),
                  bool(spec.get("nodeName")))
        milli = _milli_amounts(requests)
        sums = self.buckets.get(bucket)
        if sums is None:
            sums = self.buckets[bucket] = [0, 0, 0, 0]
        sums[0] += 1
        sums[1] += milli[0]
        sums[2] += milli[1]
        sums[3] += milli[2]
        self._entries[key] = (bucket, milli)
        if group is not None:
            self.groups.setdefault((bucket[1], group), {})[key] = pod
        if spec.get("resourceClaims"):
            self.with_claims[key] = pod

    def remove(self, key: _Key) -> None:
        """The pod is gone, or no longer counted."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        bucket, milli = entry
        sums = self.buckets[bucket]
        sums[0] -= 1
        if sums[0]:
            sums[1] -= milli[0]
            sums[2] -= milli[1]
            sums[3] -= milli[2]
        else:
            del self.buckets[bucket]
        if bucket[2] is not None:
            members = self.groups[(bucket[1], bucket[2])]
            del members[key]
            if not members:
                del self.groups[(bucket[1], bucket[2])]
        self.with_claims.pop(key, None)

    def milli(self, key: _Key) -> tuple[int, int, int] | None:
        """A counted pod's requests in milli-units (GPUs, CPU, memory), or None."""
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None


@dataclass(frozen=True)
class SnapshotUsage:
    """Every queue's usage at the start of a cycle (bound and in-flight pods of this scheduler count
    as allocated, non-preemptible ones also as such), the DRA claims already counted, and this
    scheduler's counted pods of each PodGroup (:meth:`members`)."""

    usage: dict[str, QueueUsage]
    counted: frozenset
    #: (namespace, PodGroup name) -> this scheduler's pods of it (active, not being deleted)
    groups: Callable[[_Key], list[Mapping]]
    #: a pod's requests as the index holds them (GPUs, CPU, memory in milli-units), or None
    indexed: Callable[[_Key], tuple[int, int, int] | None] = lambda _key: None
    #: the DRA GPUs of the allocation each pending pod with claims would get, by (namespace, name)
    pending: Mapping[_Key, float] = field(default_factory=dict)

    def members(self, group: _Key) -> list[Mapping]:
        return self.groups(group)

    def job(self, snapshot, pod: Mapping) -> tuple[float, float, float]:
        """What the pod asks for, as :func:`amounts_of` gives it, plus its pending DRA GPUs (see
        :attr:`pending`): GPUs, millicores, bytes (read from the index when it holds this very pod)."""
        md = pod["metadata"]
        key = (md.get("namespace", ""), md.get("name", ""))
        milli = self.indexed(key) if snapshot.pods.get(key) is pod else None
        dra = self.pending.get(key, 0.0) if self.pending else 0.0
        if milli is None:
            job = amounts_of(snapshot.requests_of(pod))
            return job["gpu"] + dra, job["cpu"], job["memory"]
        return milli[0] / 1000 + dra, float(milli[1]), milli[2] / 1000


_by_snapshot: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def snapshot_usage(snapshot, tree: QueueTree, worth: WorthFn | None = None) -> SnapshotUsage:
    """:class:`SnapshotUsage` of a cycle's snapshot, computed once per snapshot (the queue order and
    the capacity checks share it; the first caller's ``worth`` counts): from the cache's
    :class:`UsageIndex` when the snapshot's pods are the cache's, else pod by pod."""
    found = _by_snapshot.get(snapshot)
    if found is None:
        pods = indexed_pods(snapshot)
        found = _by_snapshot[snapshot] = (_indexed_usage(snapshot, tree, worth, pods.usage) if pods is not None
                                          else _walked_usage(snapshot, tree, worth))
    return found


def indexed_pods(snapshot):
    """The cache's :class:`~kai_core.framework.cache.PodIndex` (with its :class:`UsageIndex`), when it
    describes exactly the snapshot's pods; None when the cache has moved on since the snapshot was
    built (the caller then walks the pods). Checked once per snapshot."""
    found = _pods_by_snapshot.get(snapshot, False)
    if found is False:
        cache = getattr(snapshot, "_cache", None)
        found = getattr(cache, "pod_index", None)
        if getattr(found, "usage", None) is None or getattr(snapshot, "_index", None) is not found \
                or snapshot.pods != cache.objects.get(RES_PODS, {}):
            found = None
        _pods_by_snapshot[snapshot] = found
    return found


_pods_by_snapshot: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _walked_usage(snapshot, tree: QueueTree, worth: WorthFn | None) -> SnapshotUsage:
    groups = snapshot.pod_groups
    candidates = [(p, pod_queue_in(p, groups)) for p in snapshot.group_candidates()]
    counted: set = set()
    pending: dict[_Key, float] = {}
    usage = queue_usage(tree, candidates, snapshot.claims, snapshot.objects(RES_SLICES).values(),
                        bound=lambda p: snapshot.node_of(p) is not None,
                        non_preemptible=lambda p: not preemptible(p, pod_group_in(p, groups)),
                        worth=worth, allocation_of=snapshot.allocation_of, counted=counted,
                        pending=PendingDevices.of_snapshot(snapshot, worth), pending_gpus=pending)
    members: dict[_Key, list[Mapping]] = {}
    for pod, _ in candidates:
        md = pod["metadata"]
        group = (md.get("annotations") or {}).get(POD_GROUP_ANNOTATION)
        if group:
            members.setdefault((md.get("namespace", ""), group), []).append(pod)
    return SnapshotUsage(usage, frozenset(counted), lambda key: members.get(key, []), pending=pending)


def _indexed_usage(snapshot, tree: QueueTree, worth: WorthFn | None, index: UsageIndex) -> SnapshotUsage:
    mine = snapshot.scheduler_name
    groups = snapshot.pod_groups
    sums = _Sums(tree)
    for (scheduler, namespace, group, label, firm_priority, bound), (_, gpu, cpu, memory) in index.buckets.items():
        if scheduler != mine:
            continue
        pod_group = groups.get((namespace, group)) if group is not None else None
        queue = queue_of_group(pod_group, label)
        if queue not in tree.queues:
            continue
        firm = bound and not preemptible_in_group(pod_group, firm_priority)
        sums.add(queue, (gpu, cpu, memory), bound, firm)
    # pods whose binding is in flight hold their resources too
    for key in snapshot.in_flight:
        pod = snapshot.pods.get(key)
        milli = index.milli(key)
        if pod is None or milli is None or pod["spec"]["schedulerName"] != mine or snapshot.node_of(pod) is None:
            continue
        pod_group = pod_group_in(pod, groups)
        queue = pod_queue(pod, pod_group)
        if queue in tree.queues:
            sums.add(queue, milli, True, not preemptible(pod, pod_group))
            sums.add(queue, milli, False, False, sign=-1)  # counted once: requested already has it
    held_with_claims = []
    waiting_with_claims = []
    for pod in index.with_claims.values():
        if pod["spec"]["schedulerName"] != mine:
            continue
        pod_group = pod_group_in(pod, groups)
        queue = pod_queue(pod, pod_group)
        if queue not in tree.queues:
            continue
        if snapshot.node_of(pod) is None:
            waiting_with_claims.append((pod, queue))
        else:
            held_with_claims.append((pod, queue, not preemptible(pod, pod_group)))
    counted: set = set()
    pending: dict[_Key, float] = {}
    usage = sums.finish(held_with_claims, snapshot.allocation_of, DeviceIndex(snapshot.objects(RES_SLICES).values()),
                        worth, counted, waiting_with_claims,
                        PendingDevices.of_snapshot(snapshot, worth) if waiting_with_claims else None, pending)

    def members(key: _Key) -> list[Mapping]:
        return [p for p in (index.groups.get(key) or {}).values() if p["spec"]["schedulerName"] == mine]

    return SnapshotUsage(usage, frozenset(counted), members, index.milli, pending)
