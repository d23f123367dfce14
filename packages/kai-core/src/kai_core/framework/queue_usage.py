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
  A pending pod's DRA GPUs are not in ``requested`` yet (its allocation is not known before it is
  placed).

A device plugin may say what its devices are worth (hook ``kai_device_gpu_worth``, passed in as
``worth``); :func:`gpu_worth` is the rule for devices no plugin answers for.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from kai_core.api.claims import claim_name_for
from kai_core.api.quantity import QuantityError, parse_quantity
from kai_core.api.resources import RES_SLICES, is_active_pod, pod_requests
from kai_core.framework.queues import RESOURCES, QueueTree, pod_group_in, pod_queue_in, preemptible

__all__ = ["GPU_RESOURCE", "AllocationFn", "DeviceIndex", "QueueUsage", "WorthFn", "amounts_of", "dra_gpus",
           "gpu_worth", "pod_amounts", "queue_usage", "SnapshotUsage", "snapshot_usage"]

GPU_RESOURCE = "nvidia.com/gpu"
#: compute slices of a MIG-capable GPU (A100, H100, B200), for a MIG device whose parent is not published
_MIG_SLICES = 7
_PROFILE = re.compile(r"^(\d+)g\.")


class DeviceIndex:
    """The devices of ResourceSlices by (driver, pool, name), and full GPUs by uuid."""

    def __init__(self, slices: Iterable[Mapping]) -> None:
        self.devices: dict[tuple[str, str, str], Mapping] = {}
        self.by_uuid: dict[str, Mapping] = {}
        self.pools: dict[tuple[str, str], list[Mapping]] = {}
        for s in slices:
            spec = s.get("spec") or {}
            driver, pool = spec.get("driver", ""), (spec.get("pool") or {}).get("name", "")
            for d in spec.get("devices") or []:
                self.devices[(driver, pool, d.get("name", ""))] = d
                self.pools.setdefault((driver, pool), []).append(d)
                uuid = _attribute(d, "uuid")
                if uuid and _attribute(d, "type") != "mig":
                    self.by_uuid[uuid] = d


def _attribute(device: Mapping, name: str):
    value = (device.get("attributes") or {}).get(name) or {}
    return next(iter(value.values()), None) if isinstance(value, Mapping) else None


def _memory(device: Mapping) -> float | None:
    raw = ((device.get("capacity") or {}).get("memory") or {}).get("value")
    try:
        return float(parse_quantity(raw)) if raw is not None else None
    except QuantityError:
        return None


def gpu_worth(driver: str, device: Mapping | None, index: DeviceIndex) -> float:
    """How many GPUs one allocated device is: 0 unless its driver's name contains "gpu"; a MIG
    device is its memory over its parent GPU's (or its profile's compute slices over 7 when the
    parent is not published); any other device of such a driver is one GPU."""
    if "gpu" not in driver:
        return 0.0
    if device is None or _attribute(device, "type") != "mig":
        return 1.0
    parent = index.by_uuid.get(_attribute(device, "parentUUID") or "")
    mine, whole = _memory(device), _memory(parent) if parent else None
    if mine and whole:
        return min(1.0, mine / whole)
    match = _PROFILE.match(str(_attribute(device, "profile") or ""))
    return int(match.group(1)) / _MIG_SLICES if match else 1.0


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


#: ``(driver, device or None, the pool's devices) -> GPUs or None`` (None: kai's rule decides)
WorthFn = Callable[[str, Mapping | None, list], float | None]


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
        for r in (allocation.get("devices") or {}).get("results") or []:
            driver, pool = r.get("driver", ""), r.get("pool", "")
            device = index.devices.get((driver, pool, r.get("device", "")))
            said = worth(driver, device, index.pools.get((driver, pool), [])) if worth else None
            total += gpu_worth(driver, device, index) if said is None else said
    return total


def queue_usage(tree: QueueTree, pods: Iterable[tuple[Mapping, str]], claims: Mapping[tuple[str, str], Mapping],
                slices: Iterable[Mapping], bound: Callable[[Mapping], bool] | None = None,
                non_preemptible: Callable[[Mapping], bool] | None = None,
                worth: WorthFn | None = None, allocation_of: AllocationFn | None = None,
                counted: set | None = None) -> dict[str, QueueUsage]:
    """Usage of every queue of ``tree`` from ``(pod, its queue)`` pairs; pods of queues outside the
    tree are not counted (KAI does not schedule them). ``bound`` says whether a pod holds its
    resources (default: it has a node); the scheduler also counts pods whose binding is in flight.
    ``non_preemptible`` says which pods' allocations count as non-preemptible (default: none);
    ``worth`` is the plugins' say on DRA devices (``KaiPluginManager.device_gpu_worth``);
    ``allocation_of`` finds a claim's allocation (default: its ``status.allocation`` in ``claims``; the
    scheduler also knows allocations in flight); ``counted`` receives the claims counted (a caller
    that counts more pods later passes it on to :func:`dra_gpus`)."""
    index = DeviceIndex(slices)
    usage = {name: QueueUsage() for name in tree.queues}
    counted = set() if counted is None else counted
    ordered = sorted(pods, key=lambda e: (e[0]["metadata"].get("namespace", ""), e[0]["metadata"].get("name", "")))
    for pod, queue in ordered:
        if queue not in tree.queues or not is_active_pod(pod):
            continue
        amounts = pod_amounts(pod)
        holds = bound(pod) if bound else bool((pod.get("spec") or {}).get("nodeName"))
        if holds:
            amounts["gpu"] += dra_gpus(pod, allocation_of or _stored_allocation(claims), index, worth, counted)
        firm = bool(holds and non_preemptible and non_preemptible(pod))
        for up in tree.ancestry(queue):
            usage[up].add(amounts, holds, firm)
    return usage


@dataclass(frozen=True)
class SnapshotUsage:
    """This scheduler's pods with their queues, and every queue's usage, at the start of a cycle:
    bound and in-flight pods count as allocated, non-preemptible ones also as such; ``counted``
    are the DRA claims already counted."""

    candidates: list[tuple[Mapping, str]]
    usage: dict[str, QueueUsage]
    counted: frozenset


_by_snapshot: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def snapshot_usage(snapshot, tree: QueueTree, worth: WorthFn | None = None) -> SnapshotUsage:
    """:class:`SnapshotUsage` of a cycle's snapshot, computed once per snapshot (the queue order and
    the capacity checks share it; the first caller's ``worth`` counts)."""
    found = _by_snapshot.get(snapshot)
    if found is None:
        groups = snapshot.pod_groups
        candidates = [(p, pod_queue_in(p, groups)) for p in snapshot.group_candidates()]
        counted: set = set()
        usage = queue_usage(tree, candidates, snapshot.claims, snapshot.objects(RES_SLICES).values(),
                            bound=lambda p: snapshot.node_of(p) is not None,
                            non_preemptible=lambda p: not preemptible(p, pod_group_in(p, groups)),
                            worth=worth, allocation_of=snapshot.allocation_of, counted=counted)
        found = _by_snapshot[snapshot] = SnapshotUsage(candidates, usage, frozenset(counted))
    return found
