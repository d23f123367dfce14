"""The devices DRA drivers publish, indexed for allocation: ResourceSlices grouped into pools.

:class:`DraInventory` is built once per scheduling cycle from every ``ResourceSlice`` and
``DeviceClass`` (``resource.k8s.io/v1`` JSON dicts; the store converts ``v1beta1``/``v1beta2`` objects
on input). It applies the pool rules of the upstream structured allocator once, up front, so that
asking "which devices can node N use?" is a dictionary lookup during filtering:

* slices are grouped by ``(spec.driver, spec.pool.name)``; only slices at the pool's highest
  ``spec.pool.generation`` count (older ones are leftovers of an update in progress);
* a pool is complete when the slices at that generation, counted over all nodes (slices that only
  publish ``sharedCounters`` included), number ``spec.pool.resourceSliceCount``. Incomplete pools are
  not allocated from, and neither are invalid ones (a device name twice, a counter set name twice, a
  device consuming a counter set or counter the pool does not define). Both are reported for the
  nodes they reach, and an ``allocationMode: All`` request on such a node is refused;
* a slice reaches a node through ``spec.nodeName`` (node-local), ``spec.nodeSelector`` (one term) or
  ``spec.allNodes``; with ``spec.perDeviceNodeSelection`` each device says it itself;
* ``sharedCounters`` are kept per pool and ``consumesCounters`` per device, over every slice of the
  pool, so counters consumed by devices allocated on other nodes count too.

With ``DRAPartitionableDevices`` off (``features``) node views leave out
devices consuming counters and ``perDeviceNodeSelection`` slices; with ``DRADeviceBindingConditions``
off, devices with binding conditions. Tainted
devices are kept: the allocator checks the requests' tolerations. Every problem is recorded:
:attr:`DraInventory.problems` lists them all, :meth:`DraInventory.notes_for_node` the ones that
concern one node.

Parsed slices are shared between inventories while the slice object stays the same (same name, uid
and ``resourceVersion``): a new cycle does not convert every device again, and the CEL results cached
on a :class:`Device` (per expression) live exactly as long as the slice version they were computed on.
An inventory of a few pools (``DraInventory(..., parsed=ParsedSlices())``, what the binder's checks
build) reads that shared cache without replacing it, and keeps what it parses in its own.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from typing import NamedTuple

from kai_core.api.features import DraFeatures
from kai_core.api.nodeaffinity import NodeSelectorError, match_node_selector
from kai_core.api.quantity import QuantityError, parse_quantity
from kai_core.dra.cel import DeviceEnv, device_env
from kai_core.dra.constraint_values import LIST_KINDS, ListValue

__all__ = ["Binding", "Device", "DeviceId", "DraInventory", "ParsedSlices", "Pool"]

# Device taint effects that keep a device from being allocated without a toleration.
BLOCKING_TAINT_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
# A node with no labels and no name: used once per selector to surface malformed requirements early.
_PROBE_NODE: dict = {"metadata": {"name": "", "labels": {}}}
_ATTRIBUTE_KINDS = ("int", "bool", "string", "version")


class DeviceId(NamedTuple):
    """A device's identity across the cluster, as in ``AllocationResult.devices.results[]``.

    A tuple, so it hashes fast: the scheduler keeps thousands of them in its in-use set.
    """

    driver: str
    pool: str
    device: str

    def __str__(self) -> str:
        return f"{self.driver}/{self.pool}/{self.device}"


Number = int | Fraction


class Binding(NamedTuple):
    """A device's ``bindingConditions``, ``bindingFailureConditions`` and ``bindsToNode``: the
    binder waits for the conditions on the claim before it binds the pod (DRADeviceBindingConditions)."""

    conditions: tuple[str, ...]
    failure_conditions: tuple[str, ...]
    binds_to_node: bool


class Device:
    """One published device, with what allocation needs precomputed.

    ``obj`` is the device as published; ``env`` its CEL variable; ``node_name``/``node_selector``/
    ``all_nodes`` where it is usable (the slice's, or the device's own with ``perDeviceNodeSelection``);
    ``taints`` its NoSchedule/NoExecute taints; ``consumes`` its counter consumption as
    ``((counter set, {counter: value}), ...)``; ``attributes`` its attribute values by fully qualified
    name (``(kind, value)``, or a :class:`~kai_core.dra.constraint_values.ListValue`, for constraints);
    ``cel`` the cached selector results by expression;
    ``binding`` its binding conditions and ``bindsToNode`` (:class:`Binding`), or None.
    """

    __slots__ = (
        "all_nodes",
        "attributes",
        "binding",
        "capacities",
        "cel",
        "consumes",
        "env",
        "id",
        "multi",
        "node_name",
        "node_selector",
        "obj",
        "order",
        "slice_name",
        "taints",
    )

    def __init__(
        self,
        id: DeviceId,  # noqa: A002 - the API's name for it
        obj: dict,
        env: DeviceEnv,
        slice_name: str,
        node_name: str | None,
        node_selector: dict | None,
        all_nodes: bool,
        taints: tuple[dict, ...],
        consumes: tuple[tuple[str, dict[str, Number]], ...],
        attributes: dict[str, tuple[str, object] | ListValue],
        order: tuple,
        binding: Binding | None = None,
    ) -> None:
        self.id = id
        self.obj = obj
        self.env = env
        self.slice_name = slice_name
        self.node_name = node_name
        self.node_selector = node_selector
        self.all_nodes = all_nodes
        self.taints = taints
        self.consumes = consumes
        self.attributes = attributes
        self.order = order
        self.binding = binding
        #: ``allowMultipleAllocations``: with DRAConsumableCapacity on, claims share the device and
        #: each consumes some of its capacity
        self.multi = obj.get("allowMultipleAllocations") is True
        #: the parsed ``capacity`` map, filled on first use by the allocator (capacity requests)
        self.capacities: dict | None = None
        self.cel: dict[str, object] = {}

    @property
    def node_local(self) -> bool:
        """Whether the device is usable on one named node only."""
        return self.node_name is not None

    def __repr__(self) -> str:
        return f"Device({self.id})"


@dataclass(slots=True)
class _Slice:
    """One parsed ResourceSlice (shared between inventories while its resourceVersion stays)."""

    name: str
    driver: str
    pool: str
    generation: int
    count: int
    node_name: str | None = None
    node_selector: dict | None = None
    all_nodes: bool = False
    per_device: bool = False
    counter_sets: list[tuple[str, dict[str, Number]]] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    device_names: list[str] = field(default_factory=list)
    # Why this slice contributes nothing (no node selection...), or None.
    problem: str | None = None
    # Devices skipped one by one: reason -> how many.
    skipped: Counter = field(default_factory=Counter)


@dataclass(slots=True)
class Pool:
    """A pool at its newest generation: usable when ``problem`` is None.

    ``counter_sets`` maps a counter set name to its counters; ``counter_devices`` lists every device
    of the pool (on any node) that consumes counters, so consumption by allocated devices is counted.
    """

    driver: str
    name: str
    generation: int
    slices: list[_Slice]
    problem: str | None = None
    counter_sets: dict[str, dict[str, Number]] = field(default_factory=dict)
    counter_devices: list[Device] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.driver, self.name)


@dataclass(slots=True)
class NodeView:
    """What one node can use: ``devices`` of usable pools in a stable order, ``notes`` explaining
    left-out devices, and ``unusable_pools`` (incomplete or invalid pools reaching the node)."""

    devices: list[Device]
    notes: list[str]
    unusable_pools: list[str]


# Parsed slices by (name, uid, resourceVersion), replaced by each inventory build.
_SLICE_CACHE: dict[tuple[str, str, str], _Slice] = {}


class ParsedSlices(dict):
    """Parsed ResourceSlices kept by one user of :class:`DraInventory` (its ``parsed`` argument)
    across many small inventories, by (name, uid, resourceVersion); :meth:`forget` drops a slice
    that changed or went."""

    def forget(self, name: str) -> None:
        """Drop every parsed version of the slice called ``name``."""
        for key in [k for k in self if k[0] == name]:
            del self[key]


class DraInventory:
    """Built once per scheduling cycle from all ResourceSlices and DeviceClasses; precomputes per-device
    CEL environments and which devices reach which node, so allocate() on a node is cheap.

    Bad input never raises: a malformed slice or device is skipped and described in :attr:`problems`.
    """

    def __init__(self, slices: list[dict], classes: list[dict], *, parsed: ParsedSlices | None = None,
                 features: DraFeatures | None = None) -> None:
        """``parsed``: parsed slices the caller keeps, for inventories of a few pools at a time (the
        binder's checks): slices are taken from it or from the cycle's shared cache, new ones are
        parsed into it, and the shared cache is left as it is. Without it the shared cache becomes
        this inventory's slices. ``features``: the DRA feature gates allocation follows (default:
        kai's defaults); with ``DRAPartitionableDevices`` off, node views leave out devices that
        consume counters and slices with ``perDeviceNodeSelection``, as upstream's allocator does."""
        self.features = features if features is not None else DraFeatures()
        self.problems: list[str] = []
        self._parsed = parsed
        self._by_id: dict[DeviceId, Device] | None = None
        self._classes: dict[str, dict] = {}
        for cls in classes:
            name = ((cls or {}).get("metadata") or {}).get("name") if isinstance(cls, dict) else None
            if isinstance(name, str) and name:
                self._classes[name] = cls
        self.pools: dict[tuple[str, str], Pool] = {}
        self._by_node_name: dict[str, list[_Slice]] = {}
        self._all_nodes: list[_Slice] = []
        self._by_selector: list[_Slice] = []
        self._per_device: list[_Slice] = []
        self._views: dict[str, NodeView] = {}
        self._device_count = 0
        #: Allocator caches that live as long as the inventory (one cycle): matching devices per
        #: (request signature, node), prepared claims by object identity, outcomes (below).
        self.match_cache: dict[tuple, object] = {}
        self.claim_cache: dict[int, tuple[dict, object]] = {}
        #: allocation outcomes per (claim shape, node, devices of the node in use), and per node the
        #: ids of its devices, or None where outcomes may not be kept (see ``kai_core.dra.allocator``)
        self.outcome_cache: dict[tuple, object] = {}
        self.outcome_nodes: dict[str, tuple | None] = {}
        self._build(slices)

    # -- public -------------------------------------------------------------------------------

    def device_class(self, name: str) -> dict | None:
        """The DeviceClass called ``name``, or ``None`` when there is none."""
        return self._classes.get(name)

    def devices_for_node(self, node: dict) -> list[Device]:
        """Every usable device that ``node`` can reach, ordered by (driver, pool, slice name, position)."""
        return self.view(node).devices

    def notes_for_node(self, node: dict) -> list[str]:
        """Why devices that would reach ``node`` were left out (incomplete pools, unsupported features)."""
        return self.view(node).notes

    def device(self, device_id: DeviceId) -> Device | None:
        """The usable device with this id (in a complete, valid pool at its newest generation), or
        None when there is no such device."""
        if self._by_id is None:
            self._by_id = {d.id: d for pool in self.pools.values() if pool.problem is None
                           for info in pool.slices for d in info.devices}
        return self._by_id.get(device_id)

    def pool_of(self, device: Device) -> Pool:
        """The pool a device belongs to."""
        return self.pools[(device.id.driver, device.id.pool)]

    def pool_is_node_local(self, driver: str, pool: str) -> bool:
        """Whether every slice of the pool is published for one node (``spec.nodeName``), so taking
        one of its devices changes nothing for any other node. False for unknown pools."""
        found = self.pools.get((driver, pool))
        return found is not None and all(s.node_name is not None and not s.per_device for s in found.slices)

    @property
    def device_count(self) -> int:
        """How many usable devices the inventory holds over all nodes."""
        return self._device_count

    def view(self, node: dict) -> NodeView:
        """Everything about ``node`` at once (cached per node name for the inventory's lifetime)."""
        name = ((node or {}).get("metadata") or {}).get("name", "")
        view = self._views.get(name)
        if view is None:
            view = self._views[name] = self._build_view(node, name)
        return view

    # -- building -----------------------------------------------------------------------------

    def _build(self, slices: list[dict]) -> None:
        global _SLICE_CACHE
        own = self._parsed
        cache: dict[tuple[str, str, str], _Slice] = {} if own is None else own
        grouped: dict[tuple[str, str], list[_Slice]] = {}
        for obj in slices:
            parsed = self._parse_cached(obj, cache)
            if parsed is not None:
                grouped.setdefault((parsed.driver, parsed.pool), []).append(parsed)
        if own is None:
            _SLICE_CACHE = cache  # keep only what this cycle still uses

        for (driver, name), members in sorted(grouped.items()):
            newest = max(s.generation for s in members)
            current = sorted((s for s in members if s.generation == newest), key=lambda s: s.name)
            pool = Pool(driver, name, newest, current)
            pool.problem = self._pool_problem(pool)
            self.pools[pool.key] = pool
            for info in current:
                if pool.problem is None:
                    self._device_count += len(info.devices)
                    pool.counter_devices.extend(d for d in info.devices if d.consumes)
                    for reason, count in info.skipped.items():
                        self.problems.append(
                            f"ResourceSlice {info.name}: {count} device(s) skipped: {reason}"
                        )
                if info.counter_sets:
                    continue  # counter sets belong to the pool, whatever node they name
                if info.node_name is not None:
                    self._by_node_name.setdefault(info.node_name, []).append(info)
                elif info.all_nodes:
                    self._all_nodes.append(info)
                elif info.node_selector is not None:
                    self._by_selector.append(info)
                elif info.per_device:
                    self._per_device.append(info)

    def _parse_cached(self, obj: object, cache: dict) -> _Slice | None:
        key = _cache_key(obj)
        if key is not None:
            parsed = _SLICE_CACHE.get(key) or cache.get(key)
            if parsed is None:
                parsed = self._parse_slice(obj)  # type: ignore[arg-type]
            if parsed is not None:
                cache[key] = parsed
        else:
            parsed = self._parse_slice(obj)
        if parsed is not None and parsed.problem is not None:
            self.problems.append(parsed.problem)
        return parsed

    def _parse_slice(self, obj: object) -> _Slice | None:
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
        info = _Slice(name=name, driver=driver, pool=pool["name"], generation=generation, count=count)
        counter_sets = spec.get("sharedCounters") or []
        if counter_sets:
            if not self._parse_counter_sets(info, counter_sets):
                return info
            if spec.get("devices"):
                info.problem = (
                    f"ResourceSlice {name} publishes both devices and sharedCounters (a slice holds one or "
                    "the other); its devices are skipped"
                )
            return info
        node_name = spec.get("nodeName")
        selector = spec.get("nodeSelector")
        if isinstance(node_name, str) and node_name:
            info.node_name = node_name
        elif spec.get("allNodes") is True:
            info.all_nodes = True
        elif isinstance(selector, dict):
            problem = _selector_problem(selector)
            if problem is not None:
                info.problem = (
                    f"ResourceSlice {name} has an invalid spec.nodeSelector ({problem}); "
                    "its devices are skipped"
                )
                return info
            info.node_selector = selector
        elif spec.get("perDeviceNodeSelection") is True:
            info.per_device = True
        else:
            info.problem = (
                f"ResourceSlice {name} sets none of nodeName, nodeSelector, allNodes and "
                "perDeviceNodeSelection; "
                "its devices are skipped"
            )
            return info
        devices = spec.get("devices") or []
        if not isinstance(devices, list):
            info.problem = f"ResourceSlice {name}: spec.devices is not a list; it is ignored"
            return info
        for position, device in enumerate(devices):
            self._add_device(info, device, position)
        return info

    @staticmethod
    def _parse_counter_sets(info: _Slice, counter_sets: object) -> bool:
        if not isinstance(counter_sets, list):
            info.problem = f"ResourceSlice {info.name}: spec.sharedCounters must be a list; it is ignored"
            return False
        for index, entry in enumerate(counter_sets):
            set_name = entry.get("name") if isinstance(entry, dict) else None
            counters = entry.get("counters") if isinstance(entry, dict) else None
            if not isinstance(set_name, str) or not set_name or not isinstance(counters, dict):
                info.problem = (
                    f"ResourceSlice {info.name}: sharedCounters[{index}] needs a name and counters; "
                    "the slice is ignored"
                )
                return False
            try:
                values = {str(c): _counter_value(v) for c, v in counters.items()}
            except ValueError as err:
                info.problem = (
                    f"ResourceSlice {info.name}: counter set {set_name}: {err}; the slice is ignored"
                )
                return False
            info.counter_sets.append((set_name, values))
        return True

    def _add_device(self, info: _Slice, device: object, position: int) -> None:
        name = device.get("name") if isinstance(device, dict) else None
        if not isinstance(name, str) or not name:
            info.skipped[f"device #{position} has no name"] += 1
            return
        info.device_names.append(name)
        assert isinstance(device, dict)
        reason = _unsupported_device_reason(device)
        if reason is not None:
            info.skipped[reason] += 1
            return
        node_name, node_selector, all_nodes = info.node_name, info.node_selector, info.all_nodes
        if info.per_device:
            own_name, own_selector = device.get("nodeName"), device.get("nodeSelector")
            if isinstance(own_name, str) and own_name:
                node_name = own_name
            elif device.get("allNodes") is True:
                all_nodes = True
            elif isinstance(own_selector, dict) and _selector_problem(own_selector) is None:
                node_selector = own_selector
            else:
                info.skipped["perDeviceNodeSelection without a valid nodeName, nodeSelector or allNodes"] += 1
                return
        try:
            env = device_env(info.driver, device.get("attributes"), device.get("capacity"))
            consumes = _consumption(device.get("consumesCounters"))
            attributes = _qualified_attributes(info.driver, device.get("attributes"))
        except (ValueError, TypeError, AttributeError) as err:  # bad driver data must not stop the cycle
            info.skipped[f"attributes, capacity or counters could not be read ({err})"] += 1
            return
        binding = _binding(device)
        if binding is False:
            info.skipped["bindingConditions and bindingFailureConditions must be lists of condition types"] += 1
            return
        taints = tuple(
            t
            for t in device.get("taints") or []
            if isinstance(t, dict) and t.get("effect") in BLOCKING_TAINT_EFFECTS
        )
        info.devices.append(
            Device(
                id=DeviceId(info.driver, info.pool, name),
                obj=device,
                env=env,
                slice_name=info.name,
                node_name=node_name,
                node_selector=node_selector,
                all_nodes=all_nodes,
                taints=taints,
                consumes=consumes,
                attributes=attributes,
                order=(info.driver, info.pool, info.name, position),
                binding=binding,  # type: ignore[arg-type]
            )
        )

    @staticmethod
    def _pool_problem(pool: Pool) -> str | None:
        counts = {s.count for s in pool.slices}
        label = f"{pool.driver}/{pool.name}"
        if len(counts) != 1 or len(pool.slices) != next(iter(counts)):
            expected = "/".join(str(c) for c in sorted(counts))
            return (
                f"pool {label} is incomplete ({len(pool.slices)} of {expected} ResourceSlices at "
                f"generation {pool.generation} are published), so its devices are not used until the driver "
                "has published all of them"
            )
        problem = _pool_definition_problem(pool)
        if problem is None:
            return None
        return f"pool {label} is invalid ({problem}), so its devices are not used"

    # -- per node -----------------------------------------------------------------------------

    def _build_view(self, node: dict, name: str) -> NodeView:
        reaching: list[_Slice] = list(self._by_node_name.get(name, ()))
        reaching.extend(self._all_nodes)
        for info in self._by_selector:
            if _matches(info.node_selector, node):
                reaching.append(info)
        per_device: list[Device] = []
        per_device_slices: list[_Slice] = []
        partitionable = self.features.partitionable_devices
        for info in self._per_device if partitionable else ():
            hits = [d for d in info.devices if _device_reaches(d, node, name)]
            if hits:
                per_device.extend(hits)
                per_device_slices.append(info)
        devices: list[Device] = []
        notes: list[str] = []
        unusable: list[str] = []
        for info in reaching + per_device_slices:
            pool = self.pools[(info.driver, info.pool)]
            if pool.problem is not None:
                if pool.problem not in notes:
                    notes.append(pool.problem)
                    unusable.append(f"{pool.driver}/{pool.name}")
                continue
            if not info.per_device:
                devices.extend(info.devices)
            for reason, count in info.skipped.items():
                notes.append(f"{count} device(s) of pool {info.driver}/{info.pool} skipped: {reason}")
        devices.extend(d for d in per_device if self.pools[(d.id.driver, d.id.pool)].problem is None)
        if not partitionable:
            self._leave_out_partitionable(devices, notes, node, name)
        if not self.features.binding_conditions:
            kept = [d for d in devices if d.binding is None or not d.binding.conditions]
            if len(kept) != len(devices):
                notes.append(f"{len(devices) - len(kept)} device(s) with binding conditions are not used: the "
                             "DRADeviceBindingConditions feature gate is off")
                devices = kept
        devices.sort(key=_device_order)
        return NodeView(devices, notes, unusable)

    def _leave_out_partitionable(self, devices: list[Device], notes: list[str], node: dict, name: str) -> None:
        """With DRAPartitionableDevices off: drop devices consuming counters, and say so, with the
        perDeviceNodeSelection slices that would have reached the node."""
        kept = [d for d in devices if not d.consumes]
        if len(kept) != len(devices):
            notes.append(f"{len(devices) - len(kept)} device(s) consuming shared counters are not used: "
                         "the DRAPartitionableDevices feature gate is off")
            devices[:] = kept
        per_device = sum(1 for info in self._per_device for d in info.devices if _device_reaches(d, node, name))
        if per_device:
            notes.append(f"{per_device} device(s) of slices with perDeviceNodeSelection are not used: "
                         "the DRAPartitionableDevices feature gate is off")


def _pool_definition_problem(pool: Pool) -> str | None:
    """What makes a complete pool unusable (and records its counter sets on the way), or None."""
    seen: set[str] = set()
    for info in pool.slices:
        for name in info.device_names:
            if name in seen:
                return f"device name {name} appears more than once"
            seen.add(name)
        for set_name, counters in info.counter_sets:
            if set_name in pool.counter_sets:
                return f"counter set {set_name} is defined twice"
            pool.counter_sets[set_name] = counters
    for info in pool.slices:
        for device in info.devices:
            for set_name, counters in device.consumes:
                defined = pool.counter_sets.get(set_name)
                if defined is None:
                    return (
                        f"device {device.id.device} consumes counter set {set_name}, "
                        "which the pool does not define"
                    )
                for counter in counters:
                    if counter not in defined:
                        return (
                            f"device {device.id.device} consumes counter {counter} "
                            f"of counter set {set_name}, which does not define it"
                        )
    return None


def _device_order(device: Device) -> tuple:
    return device.order


def _matches(selector: dict | None, node: dict) -> bool:
    try:
        return match_node_selector(selector, node)
    except NodeSelectorError:  # validated at parse time; be safe anyway
        return False


def _device_reaches(device: Device, node: dict, name: str) -> bool:
    if device.node_name is not None:
        return device.node_name == name
    if device.all_nodes:
        return True
    return device.node_selector is not None and _matches(device.node_selector, node)


def _cache_key(obj: object) -> tuple[str, str, str] | None:
    if not isinstance(obj, dict):
        return None
    metadata = obj.get("metadata") or {}
    version = metadata.get("resourceVersion")
    if not isinstance(version, str) or not version:
        return None
    return (str(metadata.get("name", "")), str(metadata.get("uid", "")), version)


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
    multi = device.get("allowMultipleAllocations")
    if multi is not None and not isinstance(multi, bool):
        return "allowMultipleAllocations must be true or false"
    return None


def _binding(device: dict) -> Binding | None | bool:
    """The device's binding fields; None without any, False when malformed."""
    conditions, failures = device.get("bindingConditions") or [], device.get("bindingFailureConditions") or []
    binds = device.get("bindsToNode") is True
    if not (conditions or failures or binds):
        return None
    if not all(isinstance(x, list) and all(isinstance(c, str) and c for c in x) for x in (conditions, failures)):
        return False
    return Binding(tuple(conditions), tuple(failures), binds)


def _counter_value(counter: object) -> Number:
    raw = counter.get("value") if isinstance(counter, dict) else None
    if raw is None:
        raise ValueError(f"a counter must be {{'value': <quantity>}}, got {counter!r}")
    try:
        value = parse_quantity(raw)
    except QuantityError as err:
        raise ValueError(str(err)) from None
    return int(value) if value.denominator == 1 else value


def _consumption(entries: object) -> tuple[tuple[str, dict[str, Number]], ...]:
    if not entries:
        return ()
    if not isinstance(entries, list):
        raise ValueError("consumesCounters must be a list")
    out = []
    for entry in entries:
        set_name = entry.get("counterSet") if isinstance(entry, dict) else None
        counters = entry.get("counters") if isinstance(entry, dict) else None
        if not isinstance(set_name, str) or not isinstance(counters, dict):
            raise ValueError(f"consumesCounters entry needs counterSet and counters, got {entry!r}")
        out.append((set_name, {str(c): _counter_value(v) for c, v in counters.items()}))
    return tuple(out)


def _qualified_attributes(driver: str, attributes: object) -> dict[str, tuple[str, object] | ListValue]:
    """Attribute values by fully qualified name; bare names belong to the driver's domain. List
    values (``strings: [...]``) are kept whatever the gates: the allocator decides what they match.
    Called after :func:`~kai_core.dra.cel.device_env` has checked the values' types."""
    out: dict[str, tuple[str, object] | ListValue] = {}
    if not isinstance(attributes, dict):
        return out
    bare: dict[str, tuple[str, object] | ListValue] = {}
    for name, value in attributes.items():
        if not isinstance(value, dict) or len(value) != 1:
            continue
        ((kind, inner),) = value.items()
        parsed: tuple[str, object] | ListValue
        if kind in _ATTRIBUTE_KINDS:
            parsed = (kind, inner)
        elif kind in LIST_KINDS and isinstance(inner, list) and inner:  # the API refuses empty lists
            parsed = ListValue(kind, tuple(inner))
        else:
            continue
        if "/" in name:
            out[name] = parsed
        else:
            bare[f"{driver}/{name}"] = parsed
    # A fully qualified spelling wins over the bare one, as upstream looks it up first.
    return {**bare, **out}
