"""The devices DRA drivers publish, indexed for allocation: ResourceSlices grouped into pools.

:class:`DraInventory` is built once per scheduling cycle from every ``ResourceSlice`` and
``DeviceClass`` (``resource.k8s.io/v1`` JSON dicts). It applies the pool rules of the upstream
structured allocator once, up front, so that asking "which devices can node N use?" is a dictionary
lookup during filtering:

* slices are grouped by ``(spec.driver, spec.pool.name)``; only slices at the pool's highest
  ``spec.pool.generation`` count (older ones are leftovers of an update in progress);
* a pool is complete when the slices at that generation, counted over all nodes, number
  ``spec.pool.resourceSliceCount``; incomplete pools are skipped entirely, and so are pools where a
  device name appears twice;
* a slice reaches a node through ``spec.nodeName`` (node-local), ``spec.nodeSelector`` or
  ``spec.allNodes``.

Features the allocator does not support yet are never half-applied: a slice using
``perDeviceNodeSelection`` or ``sharedCounters`` and a device with ``consumesCounters``, binding
conditions or ``allowMultipleAllocations`` is skipped, and so is a device with a ``NoSchedule`` or
``NoExecute`` taint (claims cannot carry tolerations yet, so nothing could use it). Every skip is
recorded: :attr:`DraInventory.problems` lists them all, :meth:`DraInventory.notes_for_node` the ones
that concern one node, so an "unallocatable" reason can say why devices the user expected are missing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from kai_core.dra.cel import DeviceEnv, device_env
from kai_core.nodeaffinity import NodeSelectorError, match_node_selector

__all__ = ["Device", "DeviceId", "DraInventory"]


@dataclass(frozen=True, slots=True)
class DeviceId:
    """A device's identity across the cluster, as in ``AllocationResult.devices.results[]``."""

    driver: str
    pool: str
    device: str

    def __str__(self) -> str:
        return f"{self.driver}/{self.pool}/{self.device}"


@dataclass(slots=True, eq=False)
class Device:
    """One allocatable device of a complete pool.

    ``obj`` is the device as published in the slice; ``env`` its CEL environment, built once;
    ``node_local`` is true when its slice names a node (``spec.nodeName``), and ``node_selector`` is
    the slice's ``spec.nodeSelector`` (``None`` for node-local and ``allNodes`` slices). ``index`` is
    unique within the inventory and keys the allocator's caches.
    """

    id: DeviceId
    obj: dict
    env: DeviceEnv
    node_local: bool
    node_selector: dict | None
    slice_name: str
    node_name: str | None
    index: int


@dataclass(slots=True)
class _Slice:
    name: str
    driver: str
    pool: str
    node_name: str | None = None
    node_selector: dict | None = None
    all_nodes: bool = False
    devices: list[Device] = field(default_factory=list)
    # Why this slice contributes no devices at all (pool incomplete...), or None.
    problem: str | None = None
    # Devices skipped one by one: reason -> how many.
    skipped: Counter = field(default_factory=Counter)
    order: int = 0


@dataclass(slots=True)
class _NodeView:
    devices: list[Device]
    notes: list[str]


# Device taint effects that keep a device from being allocated without a toleration.
_BLOCKING_TAINT_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
# A node with no labels and no name: used once per selector to surface malformed requirements early.
_PROBE_NODE: dict = {"metadata": {"name": "", "labels": {}}}


class DraInventory:
    """Built once per scheduling cycle from all ResourceSlices and DeviceClasses; precomputes per-device
    DeviceEnv and which devices reach which node, so allocate() on a node is cheap.

    Bad input never raises: a malformed slice or device is skipped and described in :attr:`problems`.
    """

    def __init__(self, slices: list[dict], classes: list[dict]) -> None:
        self.problems: list[str] = []
        self._classes: dict[str, dict] = {}
        for cls in classes:
            name = ((cls or {}).get("metadata") or {}).get("name")
            if isinstance(name, str) and name:
                self._classes[name] = cls
        self._by_node_name: dict[str, list[_Slice]] = {}
        self._all_nodes: list[_Slice] = []
        self._by_selector: list[_Slice] = []
        self._views: dict[str, _NodeView] = {}
        self._device_count = 0
        # Selector results per (class, request selectors) and device index; owned by the allocator,
        # kept here because devices and classes do not change within a cycle.
        self.match_cache: dict[tuple, dict[int, object]] = {}
        self._build(slices)

    # -- public -------------------------------------------------------------------------------

    def device_class(self, name: str) -> dict | None:
        """The DeviceClass called ``name``, or ``None`` when there is none."""
        return self._classes.get(name)

    def devices_for_node(self, node: dict) -> list[Device]:
        """Every usable device that ``node`` can reach, ordered by (driver, pool, slice name, position)."""
        return self._view(node).devices

    def notes_for_node(self, node: dict) -> list[str]:
        """Why devices that would reach ``node`` were left out (incomplete pools, unsupported features)."""
        return self._view(node).notes

    @property
    def device_count(self) -> int:
        """How many usable devices the inventory holds over all nodes."""
        return self._device_count

    # -- building -----------------------------------------------------------------------------

    def _build(self, slices: list[dict]) -> None:
        pools: dict[tuple[str, str], list[tuple[dict, dict, int, int]]] = {}
        for obj in slices:
            parsed = self._parse_slice_header(obj)
            if parsed is None:
                continue
            spec, driver, pool, generation, count = parsed
            pools.setdefault((driver, pool), []).append((obj, spec, generation, count))

        built: list[_Slice] = []
        for (driver, pool), members in pools.items():
            newest = max(generation for _, _, generation, _ in members)
            current = [(obj, spec, count) for obj, spec, generation, count in members if generation == newest]
            pool_problem = self._pool_problem(driver, pool, newest, current)
            for obj, spec, _ in current:
                info = self._build_slice(obj, spec, driver, pool, pool_problem)
                if info is not None:
                    built.append(info)

        built.sort(key=lambda s: (s.driver, s.pool, s.name))
        for order, info in enumerate(built):
            info.order = order
            for device in info.devices:
                device.index = self._device_count
                self._device_count += 1
            if info.node_name is not None:
                self._by_node_name.setdefault(info.node_name, []).append(info)
            elif info.all_nodes:
                self._all_nodes.append(info)
            else:
                self._by_selector.append(info)

    def _parse_slice_header(self, obj: dict) -> tuple[dict, str, str, int, int] | None:
        name = _slice_name(obj)
        spec = obj.get("spec") if isinstance(obj, dict) else None
        if not isinstance(spec, dict):
            self.problems.append(f"ResourceSlice {name} has no spec; it is ignored")
            return None
        driver = spec.get("driver")
        pool = spec.get("pool")
        if not isinstance(driver, str) or not driver:
            self.problems.append(f"ResourceSlice {name} has no spec.driver; it is ignored")
            return None
        if not isinstance(pool, dict) or not isinstance(pool.get("name"), str) or not pool.get("name"):
            self.problems.append(f"ResourceSlice {name} has no spec.pool.name; it is ignored")
            return None
        generation = pool.get("generation", 0)
        count = pool.get("resourceSliceCount")
        if not _is_int(generation) or not _is_int(count) or count < 1:
            self.problems.append(
                f"ResourceSlice {name}: spec.pool.generation and spec.pool.resourceSliceCount must be "
                f"integers (resourceSliceCount at least 1), got {generation!r} and {count!r}; it is ignored"
            )
            return None
        return spec, driver, pool["name"], generation, count

    def _pool_problem(self, driver: str, pool: str, generation: int, current: list) -> str | None:
        counts = {count for _, _, count in current}
        if len(counts) != 1 or len(current) != next(iter(counts)):
            expected = "/".join(str(c) for c in sorted(counts))
            return (
                f"pool {driver}/{pool} is incomplete ({len(current)} of {expected} ResourceSlices at "
                f"generation {generation} are published), so its devices are not used until the driver "
                "has published all of them"
            )
        seen: set[str] = set()
        for _, spec, _ in current:
            for device in spec.get("devices") or []:
                name = device.get("name") if isinstance(device, dict) else None
                if isinstance(name, str):
                    if name in seen:
                        return (
                            f"pool {driver}/{pool} is invalid (device name {name} appears more than "
                            "once), so its devices are not used"
                        )
                    seen.add(name)
        return None

    def _build_slice(
        self, obj: dict, spec: dict, driver: str, pool: str, pool_problem: str | None
    ) -> _Slice | None:
        name = _slice_name(obj)
        info = _Slice(name=name, driver=driver, pool=pool, problem=pool_problem)
        node_name = spec.get("nodeName")
        selector = spec.get("nodeSelector")
        if spec.get("perDeviceNodeSelection") is True:
            self._note(
                info,
                f"ResourceSlice {name} uses perDeviceNodeSelection, which is not supported "
                "yet; its devices are skipped",
            )
            return None
        if spec.get("sharedCounters"):
            # A slice holds devices or shared counters; devices consuming counters are skipped below.
            self.problems.append(
                f"ResourceSlice {name} publishes sharedCounters, which are not supported "
                "yet; devices that consume them are skipped"
            )
            if not spec.get("devices"):
                return None
        if isinstance(node_name, str) and node_name:
            info.node_name = node_name
        elif spec.get("allNodes") is True:
            info.all_nodes = True
        elif isinstance(selector, dict):
            problem = _selector_problem(selector)
            if problem is not None:
                self._note(
                    info,
                    f"ResourceSlice {name} has an invalid spec.nodeSelector ({problem}); "
                    "its devices are skipped",
                )
                return None
            info.node_selector = selector
        else:
            self._note(
                info,
                f"ResourceSlice {name} sets none of nodeName, nodeSelector and allNodes; "
                "its devices are skipped",
            )
            return None
        if info.problem is not None:
            if info.problem not in self.problems:
                self.problems.append(info.problem)
            return info  # kept for its reach, so notes_for_node can explain the missing devices
        devices = spec.get("devices") or []
        if not isinstance(devices, list):
            self._note(info, f"ResourceSlice {name}: spec.devices is not a list; it is ignored")
            return None
        for position, device in enumerate(devices):
            self._add_device(info, device, position)
        for reason, count in info.skipped.items():
            self.problems.append(f"ResourceSlice {name}: {count} device(s) skipped: {reason}")
        return info

    def _add_device(self, info: _Slice, device: object, position: int) -> None:
        if not isinstance(device, dict) or not isinstance(device.get("name"), str) or not device.get("name"):
            info.skipped[f"device #{position} has no name"] += 1
            return
        reason = _unsupported_device_reason(device)
        if reason is not None:
            info.skipped[reason] += 1
            return
        try:
            env = device_env(info.driver, device.get("attributes"), device.get("capacity"))
        except (ValueError, TypeError, AttributeError) as err:  # bad driver data must not stop the cycle
            info.skipped[f"attributes or capacity could not be read ({err})"] += 1
            return
        info.devices.append(
            Device(
                id=DeviceId(info.driver, info.pool, device["name"]),
                obj=device,
                env=env,
                node_local=info.node_name is not None,
                node_selector=info.node_selector,
                slice_name=info.name,
                node_name=info.node_name,
                index=-1,
            )
        )

    def _note(self, info: _Slice, message: str) -> None:
        self.problems.append(message)
        info.problem = message

    # -- per node -----------------------------------------------------------------------------

    def _view(self, node: dict) -> _NodeView:
        name = ((node or {}).get("metadata") or {}).get("name", "")
        view = self._views.get(name)
        if view is not None:
            return view
        reaching = list(self._by_node_name.get(name, ()))
        reaching.extend(self._all_nodes)
        for info in self._by_selector:
            try:
                if match_node_selector(info.node_selector, node):
                    reaching.append(info)
            except NodeSelectorError:  # validated at build time; be safe anyway
                continue
        reaching.sort(key=lambda s: s.order)
        devices: list[Device] = []
        notes: list[str] = []
        for info in reaching:
            devices.extend(info.devices)
            if info.problem is not None and info.problem not in notes:
                notes.append(info.problem)
            for reason, count in info.skipped.items():
                notes.append(f"{count} device(s) of pool {info.driver}/{info.pool} skipped: {reason}")
        view = _NodeView(devices, notes)
        self._views[name] = view
        return view


def _slice_name(obj: object) -> str:
    if isinstance(obj, dict):
        name = (obj.get("metadata") or {}).get("name")
        if isinstance(name, str) and name:
            return name
    return "<unnamed>"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _selector_problem(selector: dict) -> str | None:
    terms = selector.get("nodeSelectorTerms")
    if not isinstance(terms, list) or len(terms) != 1:
        count = len(terms) if isinstance(terms, list) else 0
        return f"it must have exactly one term, has {count}"
    try:
        match_node_selector(selector, _PROBE_NODE)
    except NodeSelectorError as err:
        return str(err)
    return None


def _unsupported_device_reason(device: dict) -> str | None:
    if device.get("consumesCounters"):
        return "consumesCounters is not supported yet"
    if device.get("bindingConditions") or device.get("bindingFailureConditions") or device.get("bindsToNode"):
        return "binding conditions are not supported yet"
    if device.get("allowMultipleAllocations"):
        return "allowMultipleAllocations is not supported yet"
    if device.get("nodeName") or device.get("nodeSelector") or device.get("allNodes"):
        return "per-device node selection is not supported yet"
    for taint in device.get("taints") or []:
        if isinstance(taint, dict) and taint.get("effect") in _BLOCKING_TAINT_EFFECTS:
            return "tainted NoSchedule/NoExecute (claims cannot tolerate device taints yet)"
    return None
