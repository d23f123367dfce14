"""What allocated DRA devices are worth in GPUs, for queue usage: a device of a driver whose name
contains "gpu" is one GPU, a MIG device the fraction of its parent GPU's memory it has (or of its
profile's compute slices), and a device plugin may say otherwise (hook ``kai_device_gpu_worth``,
passed in as ``worth``). Running pods' claims (:mod:`kai_core.framework.queue_usage`) and the
allocations pending pods would get (:mod:`kai_core.framework.pending_gpus`) are valued alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from kai_core.api.quantity import QuantityError, parse_quantity

__all__ = ["DeviceIndex", "WorthFn", "gpu_worth", "results_gpus"]

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


#: ``(driver, device or None, the pool's devices) -> GPUs or None`` (None: kai's rule decides)
WorthFn = Callable[[str, Mapping | None, list], float | None]


def results_gpus(allocation: Mapping | None, index: DeviceIndex, worth: WorthFn | None = None) -> float:
    """GPUs of the devices of one claim allocation (``status.allocation``, or one the allocator
    returned): each result valued by ``worth``, else :func:`gpu_worth`; admin access takes no device."""
    total = 0.0
    for r in ((allocation or {}).get("devices") or {}).get("results") or []:
        if r.get("adminAccess"):
            continue
        driver, pool = r.get("driver", ""), r.get("pool", "")
        device = index.devices.get((driver, pool, r.get("device", "")))
        said = worth(driver, device, index.pools.get((driver, pool), [])) if worth else None
        total += gpu_worth(driver, device, index) if said is None else said
    return total
