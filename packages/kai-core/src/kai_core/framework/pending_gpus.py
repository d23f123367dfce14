"""The DRA GPUs of a pending pod: what the allocation it would get holds.

A running pod's GPUs are the devices its claims were allocated (:func:`queue_usage.dra_gpus`). A
pending pod has no allocation yet, so its queue's ``requested`` amount, the queue limits and the
reclaim checks need one it *would* get: its claims that are not allocated yet are given to kai's own
allocator, on the first node (by name) where they fit with every device free, and the devices of that
allocation are counted as a running pod's are (a whole GPU each, a MIG device as the fraction of its
parent GPU, or what a device plugin says through ``kai_device_gpu_worth``). So ``All`` counts the
devices of a node that match, ``firstAvailable`` the sub-request the allocator picks, an ``exactly``
request its count. A claim another pod already holds is not counted again (it is allocated), a claim
shared by several pending pods counts once (for the first of them, by namespace and name, when the
caller passes ``counted``), and a pod whose claims fit no node, or are not there yet, counts 0.

One allocator run per distinct set of claim specs and view of the cluster: pods made from the same
template share it (a cycle's :class:`PendingDevices` lives as long as its snapshot).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Iterable, Mapping
from functools import cache

from kai_core.api.claims import claim_name_for
from kai_core.api.resources import RES_DEVICE_CLASSES, RES_NAMESPACES, RES_NODES, RES_SLICES
from kai_core.dra.allocator import Unallocatable, allocate
from kai_core.dra.claims import pod_claims
from kai_core.dra.inventory import DraInventory
from kai_core.framework.device_worth import DeviceIndex, WorthFn, results_gpus

__all__ = ["PendingDevices", "pending_dra_gpus"]

_Key = tuple[str, str]

#: snapshot -> {whether a worth hook is given: its PendingDevices}
_by_snapshot: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class PendingDevices:
    """Pending pods' DRA GPUs over one view of the cluster: a cycle's snapshot (:meth:`of_snapshot`)
    or the objects a controller listed (:meth:`of_objects`). Nodes, the DRA inventory and the device
    index are read on first use only, so a view whose pods have no claims costs nothing."""

    def __init__(self, claims: Mapping[_Key, Mapping], allocation_of: Callable[[_Key], Mapping | None],
                 nodes: Callable[[], list[dict]], inventory: Callable[[], DraInventory],
                 namespaces: Callable[[], Mapping[str, dict]], slices: Callable[[], Iterable[Mapping]],
                 worth: WorthFn | None = None) -> None:
        """``claims`` by (namespace, name); ``allocation_of`` a claim's allocation (stored or assumed);
        ``nodes`` the Node objects devices may be allocated on, in the order they are tried."""
        self.claims = claims
        self.allocation_of = allocation_of
        self.worth = worth
        self._nodes, self._inventory, self._namespaces, self._slices = nodes, inventory, namespaces, slices
        self._ready: tuple[list[dict], DraInventory, Mapping[str, dict], DeviceIndex] | None = None
        #: claim specs (JSON) -> GPUs of the allocation they would get
        self._by_specs: dict[str, float] = {}

    @classmethod
    def of_snapshot(cls, snapshot, worth: WorthFn | None = None) -> PendingDevices | None:
        """The snapshot's (one per snapshot, and per whether ``worth`` is given), or None when the
        scheduler does not allocate devices (DRA off: a pod with claims is never placed)."""
        if not snapshot.features.dra:
            return None
        mine = _by_snapshot.get(snapshot)
        if mine is None:
            mine = _by_snapshot[snapshot] = {}
        found = mine.get(worth is not None)
        if found is None:
            # through a proxy: what the cache keeps for a snapshot must not keep the snapshot alive
            view = weakref.proxy(snapshot)
            found = mine[worth is not None] = cls(
                snapshot.claims, lambda key: view.allocation_of(key),
                lambda: [n.obj for n in view.nodes if not n.problem], lambda: view.dra,
                lambda: view.namespaces, lambda: view.objects(RES_SLICES).values(), worth)
        return found

    @classmethod
    def of_objects(cls, claims: Mapping[_Key, Mapping], listed: Callable[[str], Iterable[dict]],
                   worth: WorthFn | None = None) -> PendingDevices:
        """From claims by (namespace, name) and ``listed(kind)``, the objects of a kind (Nodes,
        ResourceSlices, DeviceClasses and Namespaces are asked for on first use, once)."""
        def stored(key: _Key) -> Mapping | None:
            return ((claims.get(key) or {}).get("status") or {}).get("allocation")

        once = cache(lambda kind: list(listed(kind)))

        def usable_nodes() -> list[dict]:
            # a Node whose fields are of the wrong type is not one the scheduler places on
            return sorted((n for n in once(RES_NODES) if isinstance(n.get("spec") or {}, dict)
                           and isinstance(n.get("status") or {}, dict)
                           and isinstance(n["metadata"].get("labels") or {}, dict)),
                          key=lambda n: n["metadata"].get("name", ""))

        return cls(claims, stored, usable_nodes, lambda: DraInventory(once(RES_SLICES), once(RES_DEVICE_CLASSES)),
                   lambda: {n["metadata"]["name"]: n for n in once(RES_NAMESPACES)}, lambda: once(RES_SLICES), worth)

    def gpus(self, pod: Mapping, counted: set | None = None) -> float:
        """GPUs of the allocation the pod's unallocated claims would get; a claim in ``counted`` is
        skipped, and the claims counted are added to it (a shared claim counts once)."""
        entries = (pod.get("spec") or {}).get("resourceClaims") or []
        ns = pod["metadata"].get("namespace", "")
        keys, to_allocate = [], []
        for entry in entries:
            name = claim_name_for(pod, entry.get("name"))
            claim = self.claims.get((ns, name)) if name else None
            if claim is None or claim["metadata"].get("deletionTimestamp"):
                return 0.0  # the pod cannot be placed before its claim is there
            key = (ns, name)
            if self.allocation_of(key) or (counted is not None and key in counted) or key in keys:
                continue
            keys.append(key)
            to_allocate.append(claim)
        if counted is not None:
            counted.update(keys)
        return self.claims_gpus(to_allocate)

    def claims_gpus(self, claims: list[Mapping]) -> float:
        """GPUs of the allocation ``claims`` (not allocated) would get together on the first node
        where they fit with every device free; 0 when they fit none."""
        if not claims:
            return 0.0
        key = json.dumps([c.get("spec") for c in claims], sort_keys=True, default=str)
        found = self._by_specs.get(key)
        if found is None:
            found = self._by_specs[key] = self._estimate(claims)
        return found

    def _estimate(self, claims: list[Mapping]) -> float:
        if self._ready is None:
            self._ready = (self._nodes(), self._inventory(), self._namespaces(), DeviceIndex(self._slices()))
        nodes, inventory, namespaces, index = self._ready
        for node in nodes:
            if not inventory.devices_for_node(node):
                continue
            try:
                allocations = allocate(list(claims), node, inventory, set(), namespaces=namespaces)
            except Unallocatable:
                continue
            return sum(results_gpus(allocation, index, self.worth) for allocation in allocations)
        return 0.0


def pending_dra_gpus(pod: Mapping, snapshot, worth: WorthFn | None = None) -> float:
    """GPUs the allocation ``pod`` would get holds (see the module docstring); 0 without DRA, and
    when its claims cannot be resolved yet."""
    if not (pod.get("spec") or {}).get("resourceClaims"):
        return 0.0
    devices = PendingDevices.of_snapshot(snapshot, worth)
    if devices is None:
        return 0.0
    claims, problem = pod_claims(pod, snapshot)
    if problem is not None:
        return 0.0
    return devices.claims_gpus([pc.claim for pc in claims if pc.allocation is None])
