"""What the binder's checks (:mod:`kai_binder.verify`) read, kept current from the store's event log.

:class:`BinderIndex` follows :meth:`~kai_core.api.store.Store.events_since` as the scheduler's
:class:`~kai_core.framework.cache.Cache` does (a relist with
:meth:`~kai_core.api.store.Store.list_refs` when the log was compacted), for the kinds it needs:
BindRequests and Nodes always, ResourceClaims, ResourceSlices and DeviceClasses with DRA on. Each
event updates the maps it touches, so a check costs lookups, never a pass over the cluster:

- **devices in use by allocated claims**: device -> claims whose ``status.allocation`` names it
  (admin-access results aside: they do not use the device);
- **devices in flight**: device -> the live BindRequests (not being deleted, neither ``Succeeded``
  nor ``Failed``) whose ``resourceClaimAllocations`` name it, with the pod's claim name; and those
  BindRequests per pod;
- **slices by pool**: the slices of each ``(driver, pool)`` with a version bumped by every change,
  which pools have slices for which node (``spec.nodeName``) and which pools reach beyond one node;
  :meth:`BinderIndex.inventory` builds a :class:`~kai_core.dra.inventory.DraInventory` of the pools
  reaching a node (cached per set of pool versions, parsed slices kept across builds);
- DeviceClasses, Nodes, and the claims themselves by namespace and name.

An object is only replaced by a newer version (numeric ``resourceVersion``), so a claim read back
with :meth:`BinderIndex.observe_claim` is not undone by an older event that arrives later.

Not thread-safe by itself: callers hold :attr:`BinderIndex.lock` around :meth:`sync` and queries.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from kai_binder.extended import EXTENDED_ENTRY
from kai_core.api.bindrequest import failed_for_good
from kai_core.api.errors import Gone
from kai_core.api.features import DraFeatures
from kai_core.api.resources import (
    RES_BIND_REQUESTS,
    RES_CLAIMS,
    RES_DEVICE_CLASSES,
    RES_NODES,
    RES_SLICES,
)
from kai_core.dra.allocator import devices_of
from kai_core.dra.inventory import DeviceId, DraInventory, ParsedSlices

_Key = tuple[str, str]
PoolKey = tuple[str, str]

#: how many inventories (one per set of pools reaching a node, at their versions) are kept
INVENTORY_CACHE_SIZE = 1024


def _rv(obj: dict) -> int | None:
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return int(rv) if isinstance(rv, str) and rv.isdigit() else None


def _older(new: dict, cur: dict | None) -> bool:
    """Whether ``new`` is not newer than ``cur`` (the same or an older resourceVersion)."""
    if cur is None:
        return False
    a, b = new["metadata"].get("resourceVersion"), cur["metadata"].get("resourceVersion")
    if a == b:
        return True
    # inline, not _rv(): called for every event the index applies
    if isinstance(a, str) and isinstance(b, str) and a.isdigit() and b.isdigit():
        return int(a) <= int(b)
    return False


def _newer(a: dict, b: dict) -> bool:
    """Whether ``a`` is a later version than ``b`` (False when unknown)."""
    ra, rb = _rv(a), _rv(b)
    return ra is not None and rb is not None and ra > rb


def _put(bucket: dict, key, obj: dict, deleted: bool) -> bool:
    """Store (or, ``deleted``, drop) an object unless ``bucket`` holds a newer version of it;
    whether anything changed."""
    cur = bucket.get(key)
    if deleted:
        if cur is None or _newer(cur, obj):
            return False
        del bucket[key]
        return True
    if _older(obj, cur):
        return False
    bucket[key] = obj
    return True


def is_actionable(br: dict) -> bool:
    """Whether the binder still has work on a BindRequest: not being deleted, not ``Succeeded``,
    and not ``Failed`` with no retries left (KAI's rule)."""
    if br["metadata"].get("deletionTimestamp"):
        return False
    status = br.get("status")
    if isinstance(status, dict) and status.get("phase") == "Succeeded":
        return False
    return not failed_for_good(br)


def holds_devices(br: dict) -> bool:
    """Whether a BindRequest holds the devices it names: not being deleted, and neither
    ``Succeeded`` (its claims hold them then) nor ``Failed`` (rolled back; tried again only after
    passing the checks again)."""
    if br["metadata"].get("deletionTimestamp"):
        return False
    status = br.get("status")
    return (status.get("phase") if isinstance(status, dict) else None) not in ("Succeeded", "Failed")


def br_devices(br: dict) -> list[tuple[DeviceId, str]]:
    """``(device, the pod's claim name)`` of every exclusive device a BindRequest's
    ``resourceClaimAllocations`` name, and its ``extendedResourceClaimAllocation`` (under the name
    :data:`kai_binder.extended.EXTENDED_ENTRY`); malformed entries name none."""
    spec = br.get("spec")
    entries = spec.get("resourceClaimAllocations") if isinstance(spec, dict) else None
    ext = spec.get("extendedResourceClaimAllocation") if isinstance(spec, dict) else None
    if isinstance(ext, dict) and ext.get("allocation"):
        entries = [*(entries if isinstance(entries, list) else []),
                   {"name": EXTENDED_ENTRY, "allocation": ext["allocation"]}]
    out: list[tuple[DeviceId, str]] = []
    if not isinstance(entries, list):
        return out
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        try:
            out += [(d, entry["name"]) for d in devices_of(entry.get("allocation"), exclusive_only=True)]
        except (ValueError, AttributeError, TypeError):
            continue
    return out


def claim_devices(claim: dict) -> tuple[DeviceId, ...]:
    """The devices a claim's allocation uses (admin access aside); () for none or a malformed one."""
    status = claim.get("status")
    allocation = status.get("allocation") if isinstance(status, dict) else None
    if not allocation:
        return ()
    try:
        return tuple(devices_of(allocation, exclusive_only=True))
    except (ValueError, AttributeError, TypeError):
        return ()


def index_resources(dra: bool) -> list[str]:
    """The kinds a :class:`BinderIndex` follows: BindRequests and Nodes, and the DRA kinds."""
    return [RES_BIND_REQUESTS, RES_NODES] + ([RES_CLAIMS, RES_SLICES, RES_DEVICE_CLASSES] if dra else [])


class BinderIndex:
    """See the module docstring. ``store`` offers ``list_refs`` and ``events_since``; ``dra``
    adds the DRA kinds."""

    def __init__(self, store, dra: bool, dra_features: DraFeatures | None = None) -> None:
        self.store = store
        self.dra = dra
        self.dra_features = dra_features  # the DRA gates the allocation checks follow
        self.resources = index_resources(dra)
        self._wanted = set(self.resources)
        self.lock = threading.RLock()
        self._rv = -1
        self._clear()

    def _clear(self) -> None:
        self.nodes: dict[str, dict] = {}
        self.classes: dict[str, dict] = {}
        self.claims: dict[_Key, dict] = {}
        #: claim -> the devices its allocation uses; device -> the claims using it
        self.claim_devs: dict[_Key, tuple[DeviceId, ...]] = {}
        self.dev_claims: dict[DeviceId, set[_Key]] = {}
        self.brs: dict[_Key, dict] = {}
        #: the BindRequests the binder still has work on (:func:`is_actionable`): what a dispatch
        #: looks through, instead of every request ever written
        self.actionable: dict[_Key, dict] = {}
        #: live BindRequest -> (device, pod claim name); device -> {BindRequest: pod claim name}
        self.br_devs: dict[_Key, list[tuple[DeviceId, str]]] = {}
        self.dev_brs: dict[DeviceId, dict[_Key, str]] = {}
        #: pod (namespace, name) -> its live BindRequests
        self.pod_brs: dict[_Key, set[_Key]] = {}
        self._br_pod: dict[_Key, _Key] = {}
        #: slice name -> (pool, spec.nodeName or None, object)
        self.slices: dict[str, tuple[PoolKey, str | None, dict]] = {}
        self.pools: dict[PoolKey, dict[str, dict]] = {}
        self.pool_version: dict[PoolKey, int] = {}
        self.node_pools: dict[str, dict[PoolKey, int]] = {}
        self.shared_pools: dict[PoolKey, int] = {}
        self.classes_version = 0
        self._version = 0
        #: claim specs prepared for the checks (kai_core.dra.verify), while the classes stay
        self.prepared: dict = {}
        self.parsed = ParsedSlices()
        self._inventories: OrderedDict[tuple, DraInventory] = OrderedDict()
        #: node -> (slice and class versions, pools, inventory) of its last inventory
        self._by_node: dict[str, tuple[tuple[int, int], frozenset, DraInventory]] = {}

    # -- following the store -------------------------------------------------------------------

    def sync(self) -> bool:
        """Apply every change since the last sync (a relist the first time, or when the store's log
        no longer reaches back that far); whether anything changed."""
        if self._rv < 0:
            self._relist()
            return True
        try:
            events, rv = self.store.events_since(self._rv, self._wanted)
        except Gone:
            self._relist()
            return True
        for ev in events:
            self._apply(ev.type, ev.resource, ev.object)
        self._rv = rv
        return bool(events)

    def _relist(self) -> None:
        self._clear()
        positions = []
        for resource in self.resources:
            items, position = self.store.list_refs(resource)
            positions.append(int(position))
            for obj in items:
                self._apply("ADDED", resource, obj)
        # replaying from the oldest list is harmless: older versions are ignored
        self._rv = min(positions, default=0)

    def _apply(self, typ: str, resource: str, obj: dict) -> None:
        md = obj.get("metadata") or {}
        name = md.get("name")
        if not isinstance(name, str):
            return
        key = (md.get("namespace") or "", name)
        deleted = typ == "DELETED"
        if resource == RES_CLAIMS:
            self._put_claim(key, obj, deleted)
        elif resource == RES_BIND_REQUESTS:
            self._put_br(key, obj, deleted)
        elif resource == RES_SLICES:
            self._put_slice(name, obj, deleted)
        elif resource == RES_NODES:
            _put(self.nodes, name, obj, deleted)
        elif resource == RES_DEVICE_CLASSES and _put(self.classes, name, obj, deleted):
            self.classes_version += 1
            self.prepared.clear()

    # -- claims ----------------------------------------------------------------------------------

    def observe(self, resource: str, obj: dict) -> None:
        """An object as just written or read by the binder, applied like a watch event (ignored
        when the index holds a newer version)."""
        if resource in self._wanted:
            self._apply("MODIFIED", resource, obj)

    def observe_claim(self, key: _Key, obj: dict | None) -> None:
        """A claim as just read from the API (None: not found), when it is newer than what the
        index holds: what the binder wrote is then known before its watch event comes."""
        if obj is None:
            cur = self.claims.get(key)
            if cur is not None:
                self._put_claim(key, cur, deleted=True)
        else:
            self._put_claim(key, obj, deleted=False)

    def _put_claim(self, key: _Key, obj: dict, deleted: bool) -> None:
        if _put(self.claims, key, obj, deleted):
            self._set_claim_devices(key, () if deleted else claim_devices(obj))

    def _set_claim_devices(self, key: _Key, devices: tuple[DeviceId, ...]) -> None:
        old = self.claim_devs.get(key, ())
        if old == devices:
            return
        for d in old:
            holders = self.dev_claims.get(d)
            if holders is not None:
                holders.discard(key)
                if not holders:
                    del self.dev_claims[d]
        for d in devices:
            self.dev_claims.setdefault(d, set()).add(key)
        if devices:
            self.claim_devs[key] = devices
        else:
            self.claim_devs.pop(key, None)

    # -- BindRequests ----------------------------------------------------------------------------

    def _put_br(self, key: _Key, obj: dict, deleted: bool) -> None:
        if _put(self.brs, key, obj, deleted):
            self._set_br_holds(key, obj if not deleted and holds_devices(obj) else None)
            if not deleted and is_actionable(obj):
                self.actionable[key] = obj
            else:
                self.actionable.pop(key, None)

    def _set_br_holds(self, key: _Key, br: dict | None) -> None:
        old = self.br_devs.pop(key, None)
        if old is not None:
            for d, _claim in old:
                holders = self.dev_brs.get(d)
                if holders is not None:
                    holders.pop(key, None)
                    if not holders:
                        del self.dev_brs[d]
        pod = self._br_pod.pop(key, None)
        if pod is not None:
            brs = self.pod_brs[pod]
            brs.discard(key)
            if not brs:
                del self.pod_brs[pod]
        if br is None:
            return
        pod = self._br_pod[key] = _pod_of(br, key)
        self.pod_brs.setdefault(pod, set()).add(key)
        devices = br_devices(br)
        if devices:
            self.br_devs[key] = devices
            for d, claim in devices:
                self.dev_brs.setdefault(d, {})[key] = claim

    # -- slices ----------------------------------------------------------------------------------

    def _put_slice(self, name: str, obj: dict, deleted: bool) -> None:
        cur = self.slices.get(name)
        if deleted:
            if cur is None or _newer(cur[2], obj):
                return
        elif _older(obj, cur[2] if cur else None):
            return
        self.parsed.forget(name)
        if cur is not None:
            pool, node, _old = cur
            del self.slices[name]
            members = self.pools.get(pool)
            if members is not None:
                members.pop(name, None)
                if not members:
                    del self.pools[pool]
            self._count(pool, node, -1)
            self._bump(pool)
        if deleted:
            return
        spec = obj.get("spec")
        spec = spec if isinstance(spec, dict) else {}
        pool_spec = spec.get("pool")
        driver = spec.get("driver")
        pool_name = pool_spec.get("name") if isinstance(pool_spec, dict) else None
        if not isinstance(driver, str) or not isinstance(pool_name, str):
            return  # not usable; DraInventory would skip it too
        pool = (driver, pool_name)
        node = spec.get("nodeName") if isinstance(spec.get("nodeName"), str) and spec.get("nodeName") else None
        self.slices[name] = (pool, node, obj)
        self.pools.setdefault(pool, {})[name] = obj
        self._count(pool, node, 1)
        self._bump(pool)

    def _count(self, pool: PoolKey, node: str | None, delta: int) -> None:
        counts = self.node_pools.setdefault(node, {}) if node is not None else self.shared_pools
        n = counts.get(pool, 0) + delta
        if n > 0:
            counts[pool] = n
        else:
            counts.pop(pool, None)
            if node is not None and not counts:
                del self.node_pools[node]

    def _bump(self, pool: PoolKey) -> None:
        self._version += 1
        self.pool_version[pool] = self._version

    def inventory(self, node_name: str, extra_pools: set[PoolKey] = frozenset()) -> DraInventory:
        """A DraInventory of the pools with slices for ``node_name``, the pools reaching beyond one
        node, and ``extra_pools``; every DeviceClass."""
        stamp = (self._version, self.classes_version)
        last = self._by_node.get(node_name)
        if last is not None and last[0] == stamp and extra_pools <= last[1]:
            return last[2]  # nothing changed in any pool or class since
        keys = set(self.node_pools.get(node_name, ())) | set(self.shared_pools) | set(extra_pools)
        known = sorted(k for k in keys if k in self.pools)
        cache_key = (tuple((k, self.pool_version[k]) for k in known), self.classes_version)
        inventory = self._inventories.get(cache_key)
        if inventory is not None:
            self._inventories.move_to_end(cache_key)
        else:
            slices = [obj for k in known for obj in self.pools[k].values()]
            inventory = DraInventory(slices, list(self.classes.values()), parsed=self.parsed,
                                     features=self.dra_features)
            self._inventories[cache_key] = inventory
            if len(self._inventories) > INVENTORY_CACHE_SIZE:
                self._inventories.popitem(last=False)
        if len(self._by_node) > INVENTORY_CACHE_SIZE * 4:
            self._by_node.clear()
        self._by_node[node_name] = (stamp, frozenset(keys), inventory)
        return inventory


def _pod_of(br: dict, key: _Key) -> _Key:
    spec = br.get("spec")
    pod = spec.get("podName") if isinstance(spec, dict) else None
    return (key[0], pod if isinstance(pod, str) else "")
