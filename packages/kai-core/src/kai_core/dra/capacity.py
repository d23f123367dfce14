"""Consumable capacity (KEP-5075, the ``DRAConsumableCapacity`` feature): how much of a device's
capacity a request consumes, as upstream's structured allocator works it out.

A device publishes ``capacity: {name: {value, requestPolicy}}``; a request may ask for
``capacity.requests: {name: quantity}``. For every capacity of the device:

* not requested: the policy's ``default``, else the whole value (the request takes it all);
* requested, no policy: the amount asked for;
* requested, ``validRange``: at least ``min``, rounded up to ``min + k * step``;
* requested, ``validValues`` (ascending): the first valid value at least the amount asked for.

The result must not violate the policy (above ``max``, off a step, not a valid value; the default
always passes), and what all allocations of the device consume must stay within its value. A
request naming a capacity the device does not have does not fit it. Names are compared fully
qualified: an unqualified name belongs to the device's driver.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from kai_core.api.quantity import QuantityError, parse_quantity
from kai_core.dra.inventory import Device, DeviceId

__all__ = ["CapacityError", "consumption", "parse_requests", "shared_consumption", "status_names"]


class CapacityError(ValueError):
    """A capacity request or a device's capacity that cannot be read."""


@dataclass(frozen=True, slots=True)
class _Capacity:
    status_name: str  # as the device publishes it: what results name
    value: Fraction
    default: Fraction | None
    valid_values: tuple[Fraction, ...]
    range_min: Fraction | None
    range_max: Fraction | None
    step: Fraction | None


def _qualified(name: str, driver: str) -> str:
    return name if "/" in name else f"{driver}/{name}"


def _quantity(value: object, what: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise CapacityError(f"{what} must be a quantity, got {value!r}")
    try:
        return Fraction(parse_quantity(value))
    except QuantityError as err:
        raise CapacityError(f"{what}: {err}") from None


def _optional(value: object, what: str) -> Fraction | None:
    return None if value is None else _quantity(value, what)


def parse_requests(requests: object, label: str) -> dict[str, Fraction]:
    """``capacity.requests`` of a request, names as written; raises CapacityError naming ``label``."""
    if not isinstance(requests, dict):
        raise CapacityError(f"{label}: capacity.requests must be a map of capacity name to quantity")
    return {str(name): _quantity(value, f"{label}: capacity.requests[{name}]") for name, value in requests.items()}


def _capacities(device: Device) -> dict[str, _Capacity]:
    """The device's capacities by fully qualified name (an explicit driver-domain entry wins over an
    unqualified one of the same name), parsed once per device."""
    if device.capacities is not None:
        return device.capacities
    driver = device.id.driver
    out: dict[str, _Capacity] = {}
    published = device.obj.get("capacity") or {}
    for explicit in (True, False):
        for name, entry in published.items() if isinstance(published, dict) else ():
            if (name.startswith(f"{driver}/")) != explicit:
                continue
            key = _qualified(name, driver)
            if key in out or not isinstance(entry, dict):
                continue
            policy = entry.get("requestPolicy") or {}
            where = f"device {device.id} capacity {name}"
            valid_range = policy.get("validRange") or {}
            out[key] = _Capacity(
                name, _quantity(entry.get("value"), where), _optional(policy.get("default"), where),
                tuple(_quantity(v, where) for v in policy.get("validValues") or ()),
                _optional(valid_range.get("min"), where), _optional(valid_range.get("max"), where),
                _optional(valid_range.get("step"), where))
    device.capacities = out
    return out


def _resolve(name: str, driver: str, capacities: Mapping[str, _Capacity]) -> str | None:
    key = _qualified(name, driver)
    return key if key in capacities else None


def _consumed(requested: Fraction | None, cap: _Capacity) -> Fraction:
    if requested is None:
        return cap.default if cap.default is not None else cap.value
    if cap.range_min is not None:
        if requested < cap.range_min:
            return cap.range_min
        if cap.step is None or cap.step <= 0:
            return requested
        steps = -((cap.range_min - requested) // cap.step)  # ceiling
        return cap.range_min + steps * cap.step
    for valid in cap.valid_values:
        if requested <= valid:
            return valid
    return requested


def _violates(amount: Fraction, cap: _Capacity) -> bool:
    if cap.default is not None and amount == cap.default:
        return False
    if cap.range_min is not None:
        if cap.range_max is not None and amount > cap.range_max:
            return True
        return cap.step is not None and cap.step > 0 and (amount - cap.range_min) % cap.step != 0
    return bool(cap.valid_values) and amount not in cap.valid_values


def consumption(requests: Mapping[str, Fraction] | None, device: Device,
                used: Mapping[str, Fraction] | None = None) -> dict[str, Fraction] | None:
    """What the request consumes of each of the device's capacities (fully qualified names), or None
    when it does not fit: a requested capacity the device lacks, a policy violated, or more than the
    value left after ``used`` (what other allocations of the device consume). Raises CapacityError
    when the device's capacity cannot be read."""
    capacities = _capacities(device)
    driver = device.id.driver
    resolved: dict[str, Fraction] = {}
    for name, amount in (requests or {}).items():
        key = _resolve(name, driver, capacities)
        if key is None or key in resolved:
            return None
        resolved[key] = amount
    out: dict[str, Fraction] = {}
    for key, cap in capacities.items():
        amount = _consumed(resolved.get(key), cap)
        if amount < 0 or _violates(amount, cap):
            return None
        if (used.get(key, 0) if used else 0) + amount > cap.value:
            return None
        out[key] = amount
    return out


def status_names(device: Device) -> dict[str, str]:
    """Fully qualified capacity name -> the name as the device publishes it (what results use)."""
    return {key: cap.status_name for key, cap in _capacities(device).items()}


def shared_consumption(allocations: Iterable[object]) -> dict[DeviceId, dict[str, Fraction]]:
    """What the shared results (with ``shareID``) of ``allocations`` consume, per device, by fully
    qualified capacity name. Malformed entries are left out: the scheduler must not stop on them."""
    out: dict[DeviceId, dict[str, Fraction]] = {}
    for allocation in allocations:
        results = ((allocation or {}).get("devices") or {}).get("results") if isinstance(allocation, dict) else None
        for result in results if isinstance(results, list) else ():
            if not isinstance(result, dict) or not result.get("shareID"):
                continue
            driver, pool, name = result.get("driver"), result.get("pool"), result.get("device")
            consumed = result.get("consumedCapacity")
            if not (isinstance(driver, str) and isinstance(pool, str) and isinstance(name, str)
                    and isinstance(consumed, dict)):
                continue
            totals = out.setdefault(DeviceId(driver, pool, name), {})
            for capacity, value in consumed.items():
                try:
                    amount = _quantity(value, "consumedCapacity")
                except CapacityError:
                    continue
                key = _qualified(str(capacity), driver)
                totals[key] = totals.get(key, 0) + amount
    return out
