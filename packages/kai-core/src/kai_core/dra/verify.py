"""Checking AllocationResults against the claims they are for: what the binder does before it
writes a decision it was handed (a BindRequest's ``resourceClaimAllocations``).

:func:`verify_allocations` re-runs, for given results, the rules :func:`kai_core.dra.allocator.allocate`
follows when it picks devices, so that only a result the allocator could have produced on that
node passes:

* every result names a request of the claim (``request`` or ``request/subrequest``, one
  ``firstAvailable`` sub-request per request), every request has results, as many as it asks for
  (``ExactCount``), or every matching device of the node (``All``);
* every device exists in a complete, valid pool at its newest generation (an older generation's
  slices do not count, as upstream), reaches the node (``nodeName``, ``nodeSelector``, ``allNodes``,
  or the device's own with ``perDeviceNodeSelection``), matches the DeviceClass's and the request's
  CEL selectors, and its ``NoSchedule``/``NoExecute`` taints are tolerated by the request;
* ``adminAccess`` and ``tolerations`` of each result are the request's; admin access only in a
  namespace labelled ``resource.kubernetes.io/admin-access=true``;
* no device twice (in a claim, or in two claims of the call, admin access aside); the claims'
  ``matchAttribute``/``distinctAttribute`` constraints hold; shared counters are not overdrawn
  (with the devices in ``in_use`` counted, on any node);
* ``devices.config`` holds the DeviceClasses' configs and the claim's own, nothing else; the
  ``nodeSelector`` is the one the allocator writes for these devices (it admits the node).

Whether a device is free (not held by another claim) is for the caller, who knows what is in use
(the binder keeps an index); :func:`same_allocation` compares a claim's existing allocation with a
requested one. A refusal raises :class:`AllocationRefused`, whose reason names the claim, the
request, the device and the check; ``conflict`` is True when it depends on what others use (the
counters), so that trying again later may succeed.
"""

from __future__ import annotations

import json
from collections.abc import Container, Mapping

from kai_core.api.features import DraFeatures
from kai_core.api.nodeaffinity import NodeSelectorError, match_node_selector
from kai_core.api.quantity import QuantityError, parse_quantity
from kai_core.dra.allocator import (
    MAX_DEVICES_PER_CLAIM,
    Unallocatable,
    _Alt,
    _build_config,
    _build_node_selector,
    _CelFailure,
    _check_admin_access,
    _Claim,
    _claim_ref,
    _match,
    _prepare_claim,
    _tolerates,
)
from kai_core.dra.capacity import CapacityError, consumption, status_names
from kai_core.dra.constraint_values import describe, distinct_allows, distinct_keys, match_next
from kai_core.dra.inventory import Device, DeviceId, DraInventory

__all__ = ["AllocationRefused", "same_allocation", "verify_allocations"]

#: how many entries a cache of prepared claim specs holds before those of this module are dropped
_PREPARED_KEPT = 1024


class AllocationRefused(Exception):
    """An allocation the claim does not allow on the node; ``reason`` says which check failed.

    ``conflict`` is True when the refusal depends on devices others use (shared counters used up),
    not on the allocation alone: the same allocation may pass later.
    """

    def __init__(self, reason: str, *, conflict: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.conflict = conflict


def verify_allocations(
    claims: list[dict],
    allocations: list[dict],
    node: dict,
    inventory: DraInventory,
    *,
    in_use: Container[DeviceId] = frozenset(),
    namespaces: Mapping[str, dict] | None = None,
    prepared: dict | None = None,
) -> None:
    """Check that each of ``allocations`` is a result the allocator could give ``claims[i]`` (by its
    spec; its status is not looked at) on ``node``, together; raise :class:`AllocationRefused`.

    ``inventory`` must hold the pools reaching the node (and those the results name); ``in_use``
    the devices other claims hold, for the shared counters; ``namespaces`` (name -> Namespace) lets
    ``adminAccess`` requests through where the namespace allows them. ``prepared`` keeps parsed
    claim specs across calls (claims of one template share one): the caller's, to empty whenever a
    DeviceClass changes; by default they are kept with the inventory.
    """
    node_name = ((node or {}).get("metadata") or {}).get("name", "")
    taken: dict[DeviceId, str] = {}
    picks: list[tuple[_Alt, Device]] = []
    for claim, allocation in zip(claims, allocations, strict=True):
        ref, claim_picks = _verify_claim(claim, allocation, node, node_name, inventory, namespaces, prepared)
        for alt, device in claim_picks:
            if alt.admin:
                continue
            other = taken.get(device.id)
            if other is not None:
                raise AllocationRefused(
                    f"device {device.id} is in the allocations of both claim {other} and claim {ref}")
            taken[device.id] = ref
        picks += claim_picks
    _check_counters([d for alt, d in picks if not alt.admin and d.consumes], inventory, in_use)


def same_allocation(a: object, b: object) -> bool:
    """Whether two AllocationResults are the same: the same results (in any order), the same
    configs and the same node selector."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return False
    da, db = a.get("devices") or {}, b.get("devices") or {}
    if not isinstance(da, dict) or not isinstance(db, dict):
        return False
    return (
        _canon_list(da.get("results")) == _canon_list(db.get("results"))
        and _canon_list(da.get("config")) == _canon_list(db.get("config"))
        and _canon(a.get("nodeSelector")) == _canon(b.get("nodeSelector"))
    )


# ------------------------------------------------------------------------------------------------


def _canon(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _canon_list(value: object) -> list[str]:
    return sorted(_canon(v) for v in value) if isinstance(value, list) else [_canon(value)]


class _Prepared:
    """A claim spec prepared against one inventory, with what checking results against it needs."""

    __slots__ = ("admin", "alts", "claim", "configs")

    def __init__(self, claim: _Claim) -> None:
        self.claim = claim
        self.alts = {alt.name: alt for request in claim.requests for alt in request.alts}
        self.admin = any(alt.admin for alt in self.alts.values())
        #: expected ``devices.config`` per choice of alternatives
        self.configs: dict[tuple[int, ...], list[dict]] = {}

    def config_for(self, chosen: list[_Alt]) -> list[dict]:
        key = tuple(id(a) for a in chosen)
        found = self.configs.get(key)
        if found is None:
            found = self.configs[key] = _build_config(self.claim, chosen)
        return found


def _prepare(claim: dict, inventory: DraInventory, namespaces: Mapping[str, dict] | None,
             cache: dict | None) -> tuple[str, _Prepared]:
    """The claim's spec prepared as the allocator prepares it (its status left out: an allocation
    already there is the caller's to compare), and admin access checked. Claims of one namespace
    and spec share the work; a refusal is worked out again for the claim itself, to name it."""
    metadata = claim.get("metadata") or {}
    ref = _claim_ref(claim)[0]
    if cache is None:  # kept with the inventory (its classes), next to the allocator's entries (ints)
        cache = inventory.claim_cache
    key = ("verify", str(metadata.get("namespace") or ""), repr(claim.get("spec")))
    hit = cache.get(key)  # type: ignore[call-overload]
    prepared: _Prepared | None = hit[1] if hit is not None else None
    try:
        if prepared is None:
            prepared = _Prepared(_prepare_claim({"metadata": metadata, "spec": claim.get("spec") or {}}, inventory))
            if len(cache) >= _PREPARED_KEPT:
                for stale in [k for k in cache if isinstance(k, tuple) and k[:1] == ("verify",)]:
                    del cache[stale]  # type: ignore[arg-type]
            cache[key] = (claim, prepared)  # type: ignore[index]
        if prepared.admin:
            _check_admin_access(prepared.claim, namespaces)
    except Unallocatable as err:
        if prepared is None or prepared.claim.ref == ref:
            raise AllocationRefused(err.reason) from None
        try:  # the reason names the claim it was prepared for: prepare this one for its own
            _check_admin_access(_prepare_claim({"metadata": metadata, "spec": claim.get("spec") or {}}, inventory),
                                namespaces)
        except Unallocatable as own:
            raise AllocationRefused(own.reason) from None
        raise AllocationRefused(err.reason) from None
    return ref, prepared


def _verify_claim(claim: object, allocation: object, node: dict, node_name: str, inventory: DraInventory,
                  namespaces: Mapping[str, dict] | None, cache: dict | None) -> tuple[str, list[tuple[_Alt, Device]]]:
    if not isinstance(claim, dict):
        raise AllocationRefused(f"a ResourceClaim must be an object, got {type(claim).__name__}")
    ref, prepared = _prepare(claim, inventory, namespaces, cache)
    if not isinstance(allocation, dict):
        raise AllocationRefused(f"claim {ref}: the allocation must be an AllocationResult object")
    devices = allocation.get("devices") or {}
    results = devices.get("results") if isinstance(devices, dict) else None
    if not isinstance(results, list):
        raise AllocationRefused(f"claim {ref}: allocation.devices.results must be a list of results")
    if len(results) > MAX_DEVICES_PER_CLAIM:
        raise AllocationRefused(f"claim {ref}: the allocation has {len(results)} devices, more than the "
                                f"{MAX_DEVICES_PER_CLAIM} one claim can hold")
    alts = prepared.alts
    chosen: dict[int, _Alt] = {}
    got: dict[int, list[Device]] = {}
    picks: list[tuple[_Alt, Device]] = []
    seen: set[DeviceId] = set()
    for index, result in enumerate(results):
        if not isinstance(result, dict):
            raise AllocationRefused(f"claim {ref}: allocation.devices.results must be a list of results")
        name = result.get("request")
        alt = alts.get(name) if isinstance(name, str) else None
        if alt is None:
            raise AllocationRefused(f"claim {ref}: allocation result #{index} is for request {name!r}, which the "
                                    f"claim does not have (it has {', '.join(sorted(alts)) or 'none'})")
        first = chosen.setdefault(id(alt.request), alt)
        if first is not alt:
            raise AllocationRefused(f"claim {ref}: request {alt.request.name} has results of two of its "
                                    f"firstAvailable sub-requests ({first.name} and {alt.name})")
        driver, pool, device_name = result.get("driver"), result.get("pool"), result.get("device")
        if not (isinstance(driver, str) and isinstance(pool, str) and isinstance(device_name, str)
                and driver and pool and device_name):
            raise AllocationRefused(f"claim {ref}: allocation result #{index} must name a driver, a pool and a "
                                    "device")
        device_id = DeviceId(driver, pool, device_name)
        if device_id in seen:
            raise AllocationRefused(f"claim {ref}: device {device_id} is in the allocation twice")
        seen.add(device_id)
        if len(result) > 4:  # more than request, driver, pool and device: look at the rest
            _check_result_fields(ref, index, result, alt, device_id)
        elif alt.admin or alt.tolerations:
            _check_result_fields(ref, index, result, alt, device_id)
        device = inventory.device(device_id)
        if device is None:
            raise AllocationRefused(_missing(device_id, ref, inventory))
        if not _reaches(device, node, node_name):
            raise AllocationRefused(f"device {device_id} of claim {ref} is not available on node {node_name}: "
                                    f"{_where_usable(device)}")
        _check_device(alt, device, ref, inventory.features.device_taints)
        _check_gated(alt, device, result, ref, inventory.features)
        mine = got.get(id(alt))
        if mine is None:
            got[id(alt)] = [device]
        else:
            mine.append(device)
        picks.append((alt, device))
    claim_spec = prepared.claim
    for request in claim_spec.requests:
        alt = chosen.get(id(request))
        if alt is None:
            raise AllocationRefused(f"claim {ref}: request {request.name} has no device in the allocation")
        mine = got[id(alt)]
        if alt.all_mode:
            _check_all(alt, mine, node, node_name, inventory, ref)
        elif len(mine) != alt.count:
            raise AllocationRefused(f"claim {ref}: request {alt.name} asks for {alt.count} device(s), the "
                                    f"allocation gives it {len(mine)}")
    if claim_spec.constraints:
        _check_constraints(ref, claim_spec, picks, inventory.features.list_type_attributes)
    _check_config(ref, prepared, list(chosen.values()), devices.get("config"))
    binds = inventory.features.binding_conditions and any(d.binding and d.binding.binds_to_node for _, d in picks)
    _check_node_selector(ref, allocation.get("nodeSelector"), [d for _, d in picks], node, node_name,
                         node_name if binds else None)
    return ref, picks


def _check_gated(alt: _Alt, device: Device, result: dict, ref: str, features: DraFeatures) -> None:
    """The device is one the gates let the allocator use, and the result carries its binding
    conditions and, for a shared device, a ``shareID`` and the capacity it consumes, as the
    allocator writes them. (Whether the shared device has that capacity left is not checked.)"""
    where = f"device {device.id} of claim {ref}"
    shared = device.multi and features.consumable_capacity
    if shared != bool(result.get("shareID")) or (not shared and result.get("consumedCapacity")):
        raise AllocationRefused(f"{where}: " + ("the device allows multiple allocations, so its result needs a "
                                                "shareID" if shared else "the result sets shareID or "
                                                "consumedCapacity, but the device is not shared"))
    if shared:
        try:
            used = consumption(alt.capacity, device)
        except CapacityError as err:
            raise AllocationRefused(f"{where}: {err}") from None
        names = status_names(device)
        want = {names[key]: value for key, value in (used or {}).items()}
        got = result.get("consumedCapacity")
        try:
            same = isinstance(got, dict) and {k: parse_quantity(v) for k, v in got.items()} == want
        except (QuantityError, TypeError):
            same = False
        if used is None or not same:
            raise AllocationRefused(f"{where}: consumedCapacity is not what request {alt.name} consumes of the "
                                    "device")
    if device.consumes and not features.partitionable_devices:
        raise AllocationRefused(f"{where} consumes shared counters, and the DRAPartitionableDevices feature "
                                "gate is off")
    binding = device.binding
    conditions = binding.conditions if binding is not None and features.binding_conditions else ()
    failures = binding.failure_conditions if binding is not None and features.binding_conditions else ()
    if binding is not None and binding.conditions and not features.binding_conditions:
        raise AllocationRefused(f"{where} has binding conditions, and the DRADeviceBindingConditions feature "
                                "gate is off")
    if (result.get("bindingConditions") or []) != list(conditions) or (
            result.get("bindingFailureConditions") or []) != list(failures):
        raise AllocationRefused(f"{where}: the result's bindingConditions and bindingFailureConditions must be "
                                "the device's")


def _check_result_fields(ref: str, index: int, result: dict, alt: _Alt, device_id: DeviceId) -> None:
    """A result's fields besides its device: ``adminAccess`` and ``tolerations`` as the request's,
    none of the features this allocator does not allocate."""
    where = f"claim {ref}: allocation result #{index} (device {device_id})"
    admin = result.get("adminAccess", False)
    if admin is None:
        admin = False
    if admin is not alt.admin:
        raise AllocationRefused(f"{where} has adminAccess {admin!r}, request {alt.name} "
                                f"{'asks' if alt.admin else 'does not ask'} for admin access")
    if (result.get("tolerations") or []) != alt.tolerations:
        raise AllocationRefused(f"{where} has tolerations other than request {alt.name}'s")


def _missing(device_id: DeviceId, ref: str, inventory: DraInventory) -> str:
    what = f"device {device_id} of claim {ref}"
    pool = inventory.pools.get((device_id.driver, device_id.pool))
    if pool is None:
        return f"{what} does not exist: no current ResourceSlice publishes pool {device_id.driver}/{device_id.pool}"
    if pool.problem is not None:
        return f"{what} cannot be used: {pool.problem}"
    if any(device_id.device in info.device_names for info in pool.slices):
        return f"{what} is published but cannot be allocated (see the ResourceSlice's problems)"
    return (f"{what} does not exist in pool {device_id.driver}/{device_id.pool} "
            f"(generation {pool.generation})")


def _reaches(device: Device, node: dict, node_name: str) -> bool:
    if device.node_name is not None:
        return device.node_name == node_name
    if device.all_nodes:
        return True
    try:
        return device.node_selector is not None and match_node_selector(device.node_selector, node)
    except NodeSelectorError:
        return False


def _where_usable(device: Device) -> str:
    if device.node_name is not None:
        return f"it is on node {device.node_name}"
    return "its ResourceSlice's nodeSelector does not select that node"


def _selector_outcome(alt: _Alt, device: Device) -> tuple[str, str, object] | None:
    """The first of the alternative's selectors (class first) the device does not pass, with its
    result (False, or the text of an evaluation error); None when it passes them all. Evaluated and
    cached on the device by the allocator's own matching."""
    result = _match(alt, device)
    if result is True:
        return None
    if isinstance(result, _CelFailure):
        return result.where, result.expression, result.error
    return next((owner, expression, False) for owner, expression, _ in alt.selectors
                if device.cel.get(expression) is False)


def _check_device(alt: _Alt, device: Device, ref: str, taints: bool) -> None:
    """The device matches the alternative's selectors and, with ``taints`` (DRADeviceTaints on), its
    taints are tolerated."""
    failed = _selector_outcome(alt, device)
    if failed is not None:
        owner, expression, result = failed
        if result is False:
            raise AllocationRefused(f"device {device.id} of claim {ref} does not match {owner} of request "
                                    f"{alt.name}: {expression}")
        raise AllocationRefused(f"device {device.id} of claim {ref}: {owner} of request {alt.name} "
                                f"cannot be evaluated on it: {result}")
    for taint in device.taints if taints else ():
        if not _tolerates(alt.tolerations, taint):
            raise AllocationRefused(f"device {device.id} of claim {ref} has the taint {taint.get('key')}:"
                                    f"{taint.get('effect')}, which request {alt.name} does not tolerate")


def _check_all(alt: _Alt, mine: list[Device], node: dict, node_name: str, inventory: DraInventory,
               ref: str) -> None:
    """An ``All`` request holds every device of the node that matches it."""
    view = inventory._build_view(node, node_name)  # not cached: node labels may have changed
    if view.unusable_pools:
        raise AllocationRefused(f"claim {ref}: request {alt.name} asks for all matching devices, but pool(s) "
                                f"{', '.join(view.unusable_pools)} reaching node {node_name} are incomplete or "
                                "invalid")
    wanted = {d.id for d in view.devices if _selector_outcome(alt, d) is None}
    have = {d.id for d in mine}
    missing = sorted(wanted - have)
    if missing:
        raise AllocationRefused(f"claim {ref}: request {alt.name} asks for all {len(wanted)} matching devices "
                                f"of node {node_name}, the allocation leaves out {missing[0]}"
                                + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))


def _check_constraints(ref: str, claim: _Claim, picks: list[tuple[_Alt, Device]], lists: bool) -> None:
    """The picks satisfy the claim's constraints as the allocator compares attributes
    (:mod:`kai_core.dra.constraint_values`; ``lists``: DRAListTypeAttributes)."""
    for constraint in claim.constraints:
        first: tuple[DeviceId, object] | None = None
        shared: object = None
        taken: dict[object, DeviceId] = {}
        for alt, device in picks:
            if not constraint.applies(alt):
                continue
            value = device.attributes.get(constraint.attribute)
            what = f"claim {ref}: {constraint.describe()}"
            if value is None:
                raise AllocationRefused(f"{what}: device {device.id} has no attribute {constraint.attribute}")
            if constraint.distinct:
                keys = distinct_keys(value, lists, device.id)
                if not distinct_allows(taken, value, keys, lists):
                    other = next((taken[k] for k in keys if k in taken), None)
                    if other is None:  # a list value after the first device, with the gate off
                        raise AllocationRefused(f"{what}: device {device.id} has {describe(value)}, which only "
                                                "the first device may have with DRAListTypeAttributes off")
                    raise AllocationRefused(f"{what}: devices {other} and {device.id} have the same "
                                            f"value {_shown(value)}")
                taken.update(dict.fromkeys(keys, device.id))
            elif first is None:
                first, shared = (device.id, value), value
            else:
                shared = match_next(shared, value, lists)
                if shared is None:
                    raise AllocationRefused(f"{what}: device {first[0]} has {describe(first[1])}, "
                                            f"device {device.id} has {describe(value)}")


def _shown(value: object) -> str:
    return repr(value[1]) if type(value) is tuple else describe(value)


def _config_body(entry: dict) -> str:
    return _canon({k: v for k, v in entry.items() if k != "requests"})


def _check_config(ref: str, prepared: _Prepared, chosen: list[_Alt], actual: object) -> None:
    """``devices.config`` is made of the chosen classes' configs and the claim's own (each at least
    once, naming only chosen requests), as :func:`kai_core.dra.allocator.allocate` writes them."""
    expected = prepared.config_for(chosen)
    if actual is None:
        actual = []
    if actual == expected:
        return
    if not isinstance(actual, list) or not all(isinstance(c, dict) for c in actual):
        raise AllocationRefused(f"claim {ref}: allocation.devices.config must be a list of objects")
    allowed: dict[str, set[str] | None] = {}
    for entry in expected:
        body, names = _config_body(entry), entry.get("requests")
        if names is None or allowed.get(body, set()) is None:
            allowed[body] = None  # any of the chosen requests
        else:
            allowed.setdefault(body, set()).update(names)  # type: ignore[union-attr]
    chosen_names = {alt.name for alt in chosen} | {alt.request.name for alt in chosen}
    present: set[str] = set()
    for index, entry in enumerate(actual):
        body = _config_body(entry)
        if body not in allowed:
            raise AllocationRefused(f"claim {ref}: allocation config #{index} ({entry.get('source')}) is "
                                    "neither a config of the claim nor of a DeviceClass it uses")
        names = entry.get("requests") or []
        scope = allowed[body]
        if not isinstance(names, list) or not set(names) <= (scope if scope is not None else chosen_names):
            raise AllocationRefused(f"claim {ref}: allocation config #{index} ({entry.get('source')}) "
                                    f"names requests {names!r} it does not apply to")
        present.add(body)
    for entry in expected:
        if _config_body(entry) not in present:
            what = "of the claim" if entry.get("source") == "FromClaim" else "of a DeviceClass"
            raise AllocationRefused(f"claim {ref}: the allocation leaves out a config {what} "
                                    f"(for requests {', '.join(entry.get('requests') or []) or 'all'})")


def _selector_terms(selector: object) -> list[frozenset] | None:
    if selector is None:
        return None
    if not isinstance(selector, dict):
        raise ValueError("must be an object")
    terms = selector.get("nodeSelectorTerms")
    if not isinstance(terms, list):
        raise ValueError("nodeSelectorTerms must be a list")
    out = []
    for term in terms:
        if not isinstance(term, dict):
            raise ValueError("a node selector term must be an object")
        items = set()
        for kind in ("matchExpressions", "matchFields"):
            for req in term.get(kind) or []:
                if not isinstance(req, dict):
                    raise ValueError(f"{kind} entries must be objects")
                values = req.get("values") or []
                items.add((kind, req.get("key"), req.get("operator"), frozenset(map(str, values))))
        out.append(frozenset(items))
    return out


def _check_node_selector(ref: str, actual: object, devices: list[Device], node: dict, node_name: str,
                         pin: str | None = None) -> None:
    """The allocation's nodeSelector is what the allocator writes for these devices: the node of a
    node-local device (or of the allocation, ``pin``, when a device ``bindsToNode``), the devices'
    slice selectors ANDed, or none for ``allNodes`` devices."""
    expected = _build_node_selector(devices, pin)
    if actual == expected:
        return  # the devices' own selector admits the node: each device reaches it
    try:
        same = _selector_terms(actual) == _selector_terms(expected)
        admits = actual is None or match_node_selector(actual, node)
    except (ValueError, NodeSelectorError) as err:
        raise AllocationRefused(f"claim {ref}: the allocation's nodeSelector is invalid: {err}") from None
    if not admits:
        raise AllocationRefused(f"claim {ref}: the allocation's nodeSelector does not admit node {node_name}")
    if not same:
        want = "none (the devices are usable on every node)" if expected is None else _canon(expected)
        raise AllocationRefused(f"claim {ref}: the allocation's nodeSelector is not the one of its devices "
                                f"(expected {want})")


def _check_counters(picks: list[Device], inventory: DraInventory, in_use: Container[DeviceId]) -> None:
    """The picks' counter consumption fits in what their pools' counter sets have left, with the
    consumption of the devices in use (on any node) counted."""
    if not picks:
        return
    pick_ids = {d.id for d in picks}
    pools = {(d.id.driver, d.id.pool) for d in picks}
    for key in sorted(pools):
        pool = inventory.pools[key]
        used: dict[tuple[str, str], object] = {}
        for device in pool.counter_devices:
            if device.id in in_use and device.id not in pick_ids:
                for set_name, counters in device.consumes:
                    for counter, amount in counters.items():
                        used[(set_name, counter)] = used.get((set_name, counter), 0) + amount
        wanted: dict[tuple[str, str], object] = {}
        for device in picks:
            if (device.id.driver, device.id.pool) != key:
                continue
            for set_name, counters in device.consumes:
                for counter, amount in counters.items():
                    wanted[(set_name, counter)] = wanted.get((set_name, counter), 0) + amount
        for (set_name, counter), amount in sorted(wanted.items()):
            total = (pool.counter_sets.get(set_name) or {}).get(counter, 0)
            if amount > total:
                raise AllocationRefused(f"the allocated devices of pool {key[0]}/{key[1]} consume {amount} of "
                                        f"counter {counter} of counter set {set_name}, which has {total}")
            if amount + used.get((set_name, counter), 0) > total:
                raise AllocationRefused(
                    f"the allocated devices of pool {key[0]}/{key[1]} need {amount} of counter {counter} of "
                    f"counter set {set_name}, but devices in use take {used[(set_name, counter)]} of its "
                    f"{total}", conflict=True)
