"""The DRA GPUs of a pending pod: what the allocation it would get holds.

A running pod's GPUs are the devices its claims were allocated (:func:`queue_usage.dra_gpus`). A
pending pod has no allocation yet, so its queue's ``requested`` amount, the queue limits and the
reclaim checks need one it *would* get: its claims that are not allocated yet are given to kai's own
allocator, on the first node (by name) where they fit with every device free, and the devices of that
allocation are counted as a running pod's are (a whole GPU each, a MIG device as the fraction of its
parent GPU, or what a device plugin says through ``kai_device_gpu_worth``). So ``All`` counts the
devices of a node that match, ``firstAvailable`` the sub-request the allocator picks, an ``exactly``
request its count. A claim another pod already holds is not counted again (it is allocated), and a
pod whose claims fit no node counts 0.

One allocator run per distinct set of claim specs and cycle: pods made from the same template share
it (the answer is cached on the snapshot).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping

from kai_core.api.resources import RES_SLICES
from kai_core.dra.allocator import Unallocatable, allocate
from kai_core.dra.claims import pod_claims
from kai_core.framework.queue_usage import DeviceIndex, WorthFn, gpu_worth

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pending_dra_gpus(pod: Mapping, snapshot, worth: WorthFn | None = None) -> float:
    """GPUs the allocation ``pod`` would get holds (see the module docstring); 0 without DRA."""
    if not (pod.get("spec") or {}).get("resourceClaims") or not snapshot.features.dra:
        return 0.0
    claims, problem = pod_claims(pod, snapshot)
    if problem is not None:
        return 0.0
    to_allocate = [pc.claim for pc in claims if pc.allocation is None]
    if not to_allocate:
        return 0.0
    cache = _CACHE.get(snapshot)
    if cache is None:
        cache = _CACHE[snapshot] = {"index": DeviceIndex(snapshot.objects(RES_SLICES).values())}
    key = json.dumps([c.get("spec") for c in to_allocate], sort_keys=True, default=str)
    found = cache.get(key)
    if found is None:
        found = cache[key] = _estimate(to_allocate, snapshot, cache["index"], worth)
    return found


def _estimate(claims: list[dict], snapshot, index: DeviceIndex, worth: WorthFn | None) -> float:
    inventory = snapshot.dra
    for node in snapshot.nodes:
        if node.problem or not inventory.devices_for_node(node.obj):
            continue
        try:
            allocations = allocate(claims, node.obj, inventory, set(), namespaces=snapshot.namespaces)
        except Unallocatable:
            continue
        total = 0.0
        for allocation in allocations:
            for r in ((allocation or {}).get("devices") or {}).get("results") or []:
                if r.get("adminAccess"):
                    continue  # admin access takes no device
                driver, pool = r.get("driver", ""), r.get("pool", "")
                device = index.devices.get((driver, pool, r.get("device", "")))
                said = worth(driver, device, index.pools.get((driver, pool), [])) if worth else None
                total += gpu_worth(driver, device, index) if said is None else said
        return total
    return 0.0
