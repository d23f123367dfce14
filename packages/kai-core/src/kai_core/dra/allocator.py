"""Structured DRA allocation: pick devices for a pod's ResourceClaims on one candidate node.

This follows the upstream structured allocator (``k8s.io/dynamic-resource-allocation/structured``)
for the subset of the ``resource.k8s.io/v1`` API it supports so far:

* requests with ``exactly`` in ``ExactCount`` mode (``count``, default 1), selected by the
  DeviceClass's CEL selectors and then the request's own (all must be true);
* at most 32 devices per claim; devices already in use, or picked for an earlier claim of the same
  call, are never handed out again;
* results in request order, ``FromClass`` configs then ``FromClaim`` configs, and the
  ``nodeSelector`` saying where the allocation is usable.

Anything else a claim may ask for (``firstAvailable``, ``constraints``, ``allocationMode: All``,
``adminAccess``, ``tolerations``, ``capacity`` requests, unknown fields) is refused with
:class:`Unallocatable` naming the field: silently ignoring it would hand out devices the user did not
ask for. Slices and devices using unsupported features are skipped by :class:`DraInventory`.

The search is a depth-first walk over claim -> request -> device slot that picks a device, recurses
and undoes the pick when the rest cannot be satisfied, so constraints and shared counters can later
hook into :meth:`_Search._accept` / :meth:`_Search._release`. Two things keep it fast and bounded:
a bipartite-matching check (necessary for any solution, constraints or not) rejects infeasible nodes
in polynomial time, where a plain backtracking search is exponential (k/k#131730); and every device
check counts against a budget, so a pathological claim yields ``Unallocatable`` instead of hanging
the scheduler.

Deliberate differences from upstream, all on the safe side: incomplete pools are never used (upstream
uses them for ``ExactCount``); a CEL runtime error on any free device of the node aborts allocation
(upstream only fails if its first-fit walk reaches that device); a claim config naming several
requests is reported once (upstream repeats it, k/k#139730).
"""

from __future__ import annotations

from dataclasses import dataclass

from kai_core.dra.cel import CelCompileError, CelEvalError, compile_selector
from kai_core.dra.inventory import Device, DeviceId, DraInventory
from kai_core.nodeaffinity import (
    NodeSelectorError,
    match_node_selector,
    node_selector_for_node,
)

__all__ = [
    "MAX_DEVICES_PER_CLAIM",
    "MAX_DEVICE_CHECKS",
    "Device",
    "DeviceId",
    "DraInventory",
    "Unallocatable",
    "allocate",
    "allocation_usable_on",
    "devices_of",
]

# resourceapi.AllocationResultsMaxSize: the most devices one claim's allocation may hold.
MAX_DEVICES_PER_CLAIM = 32
# How many device checks one allocate() call may make before giving up (roughly 50 ms of work).
MAX_DEVICE_CHECKS = 100_000

_EXACT_FIELDS = frozenset(
    {"deviceClassName", "selectors", "allocationMode", "count", "adminAccess", "tolerations", "capacity"}
)
_REQUEST_FIELDS = frozenset({"name", "exactly", "firstAvailable"})
_DEVICES_FIELDS = frozenset({"requests", "constraints", "config"})


class Unallocatable(Exception):
    """The claims cannot be allocated on this node; ``reason`` says why, for a person to act on.

    The reason names the claim (``namespace/name``) and request, the DeviceClass and, for CEL
    problems, the expression and the error.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------------------------------------
# Public helpers


def allocation_usable_on(allocation: dict, node: dict) -> bool:
    """Whether an ``AllocationResult`` can be used on ``node``: its ``nodeSelector`` admits the node.

    An allocation without ``nodeSelector`` is usable everywhere. A malformed selector raises
    :class:`~kai_core.nodeaffinity.NodeSelectorError`.
    """
    return match_node_selector((allocation or {}).get("nodeSelector"), node)


def devices_of(allocation: dict, *, exclusive_only: bool = False) -> list[DeviceId]:
    """The devices named in ``allocation.devices.results``, in order.

    With ``exclusive_only``, results with ``adminAccess: true`` are left out: upstream does not count
    admin-access results as using the device, so they must not go into the ``in_use`` set.
    Raises ``ValueError`` naming the entry when a result lacks its driver, pool or device.
    """
    results = ((allocation or {}).get("devices") or {}).get("results") or []
    ids: list[DeviceId] = []
    for index, result in enumerate(results):
        fields = [
            result.get(key) if isinstance(result, dict) else None for key in ("driver", "pool", "device")
        ]
        if not all(isinstance(value, str) and value for value in fields):
            raise ValueError(
                f"devices.results[{index}] must name a driver, a pool and a device, got {result!r}"
            )
        if not (exclusive_only and result.get("adminAccess")):
            ids.append(DeviceId(*fields))
    return ids


# ------------------------------------------------------------------------------------------------
# Claim preparation


@dataclass(slots=True, eq=False)
class _Request:
    claim: _Claim
    name: str
    class_name: str
    device_class: dict
    class_selectors: list[tuple[str, object]]
    request_selectors: list[tuple[str, object]]
    count: int
    cache_key: tuple
    candidates: list[Device]

    def label(self) -> str:
        return f"claim {self.claim.ref} request {self.name}"


@dataclass(slots=True, eq=False)
class _Claim:
    obj: dict
    ref: str
    requests: list[_Request]
    existing: dict | None


@dataclass(slots=True)
class _CelFailure:
    where: str
    expression: str
    error: str


def _claim_ref(claim: dict) -> str:
    metadata = claim.get("metadata") or {}
    name = metadata.get("name") or "<unnamed>"
    namespace = metadata.get("namespace")
    return f"{namespace}/{name}" if namespace else name


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _cel_detail(expression: str, error: object) -> str:
    text = str(error)
    return text if expression in text else f"{text} (expression: {expression!r})"


def _prepare_claim(claim: dict, inventory: DraInventory) -> _Claim:
    if not isinstance(claim, dict):
        raise Unallocatable(f"a ResourceClaim must be an object, got {type(claim).__name__}")
    ref = _claim_ref(claim)
    prepared = _Claim(obj=claim, ref=ref, requests=[], existing=None)
    allocation = (claim.get("status") or {}).get("allocation")
    if allocation:
        prepared.existing = allocation
        return prepared
    devices = (claim.get("spec") or {}).get("devices") or {}
    if not isinstance(devices, dict):
        raise Unallocatable(f"claim {ref}: spec.devices must be an object")
    for key in devices:
        if key not in _DEVICES_FIELDS:
            raise Unallocatable(f"claim {ref}: spec.devices.{key} is not supported yet")
    if devices.get("constraints"):
        raise Unallocatable(f"claim {ref}: constraints are not supported yet")
    requests = devices.get("requests") or []
    if not isinstance(requests, list):
        raise Unallocatable(f"claim {ref}: spec.devices.requests must be a list")
    configs = devices.get("config") or []
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise Unallocatable(f"claim {ref}: spec.devices.config must be a list of objects")
    for index, config in enumerate(configs):
        wanted = config.get("requests") or []
        if not isinstance(wanted, list) or not all(isinstance(name, str) for name in wanted):
            raise Unallocatable(f"claim {ref}: spec.devices.config[{index}].requests must be a list of names")
    total = 0
    for position, request in enumerate(requests):
        prepared_request = _prepare_request(prepared, position, request, inventory)
        prepared.requests.append(prepared_request)
        total += prepared_request.count
    if total > MAX_DEVICES_PER_CLAIM:
        raise Unallocatable(
            f"claim {ref}: asks for {total} devices in total, more than the {MAX_DEVICES_PER_CLAIM} "
            "one claim can hold"
        )
    return prepared


def _prepare_request(claim: _Claim, position: int, request: object, inventory: DraInventory) -> _Request:
    ref = claim.ref
    if not isinstance(request, dict) or not isinstance(request.get("name"), str) or not request["name"]:
        raise Unallocatable(f"claim {ref}: request #{position} has no name")
    label = f"claim {ref} request {request['name']}"
    if "deviceClassName" in request:
        raise Unallocatable(
            f"{label}: has deviceClassName outside 'exactly', the resource.k8s.io/v1beta1 shape; "
            "it must be converted to resource.k8s.io/v1 first"
        )
    for key in request:
        if key not in _REQUEST_FIELDS:
            raise Unallocatable(f"{label}: {key} is not supported yet")
    if request.get("firstAvailable"):
        raise Unallocatable(f"{label}: firstAvailable is not supported yet")
    exactly = request.get("exactly")
    if not isinstance(exactly, dict):
        raise Unallocatable(f"{label}: has no 'exactly' device request")
    for key in exactly:
        if key not in _EXACT_FIELDS:
            raise Unallocatable(f"{label}: exactly.{key} is not supported yet")
    mode = exactly.get("allocationMode") or "ExactCount"
    if mode == "All":
        raise Unallocatable(f"{label}: allocationMode All is not supported yet")
    if mode != "ExactCount":
        raise Unallocatable(f"{label}: unknown allocationMode {mode!r} (expected ExactCount or All)")
    if exactly.get("adminAccess"):
        raise Unallocatable(f"{label}: adminAccess is not supported yet")
    if exactly.get("tolerations"):
        raise Unallocatable(f"{label}: tolerations are not supported yet")
    if exactly.get("capacity"):
        raise Unallocatable(f"{label}: capacity requests are not supported yet")
    count = exactly.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise Unallocatable(f"{label}: count must be a positive integer, got {count!r}")
    class_name = exactly.get("deviceClassName")
    if not isinstance(class_name, str) or not class_name:
        raise Unallocatable(f"{label}: exactly.deviceClassName is missing")
    device_class = inventory.device_class(class_name)
    if device_class is None:
        raise Unallocatable(
            f"{label}: DeviceClass {class_name} does not exist (create it, or fix deviceClassName)"
        )
    class_spec = device_class.get("spec") or {}
    class_configs = class_spec.get("config") or []
    if not isinstance(class_configs, list) or not all(isinstance(c, dict) for c in class_configs):
        raise Unallocatable(f"{label}: spec.config of DeviceClass {class_name} must be a list of objects")
    class_selectors = _compile_selectors(class_spec.get("selectors"), label, f"DeviceClass {class_name}")
    request_selectors = _compile_selectors(
        exactly.get("selectors"), label, f"request (DeviceClass {class_name})"
    )
    cache_key = (
        class_name,
        tuple(expr for expr, _ in class_selectors),
        tuple(expr for expr, _ in request_selectors),
    )
    return _Request(
        claim=claim,
        name=request["name"],
        class_name=class_name,
        device_class=device_class,
        class_selectors=class_selectors,
        request_selectors=request_selectors,
        count=count,
        cache_key=cache_key,
        candidates=[],
    )


def _compile_selectors(selectors: object, label: str, owner: str) -> list[tuple[str, object]]:
    if not selectors:
        return []
    if not isinstance(selectors, list):
        raise Unallocatable(f"{label}: selectors of {owner} must be a list")
    compiled: list[tuple[str, object]] = []
    for index, selector in enumerate(selectors):
        cel = selector.get("cel") if isinstance(selector, dict) else None
        expression = cel.get("expression") if isinstance(cel, dict) else None
        if not isinstance(expression, str):
            raise Unallocatable(
                f"{label}: selector #{index} of {owner} has no CEL expression "
                "(only CEL selectors are supported)"
            )
        try:
            compiled.append((expression, compile_selector(expression)))
        except CelCompileError as err:
            raise Unallocatable(
                f"{label}: CEL selector #{index} of {owner} does not compile: {_cel_detail(expression, err)}"
            ) from None
    return compiled


# ------------------------------------------------------------------------------------------------
# Device matching (cached in the inventory: devices and classes do not change within a cycle)


def _match(request: _Request, device: Device, cache: dict[int, object]) -> object:
    """True, False, or a :class:`_CelFailure` when a selector could not be evaluated on the device."""
    hit = cache.get(device.index)
    if hit is not None:
        return hit
    result: object = True
    for owner, selectors in (
        (f"DeviceClass {request.class_name}", request.class_selectors),
        (f"request (DeviceClass {request.class_name})", request.request_selectors),
    ):
        for index, (expression, selector) in enumerate(selectors):
            try:
                matched = selector.matches(device.env)
            except CelEvalError as err:
                result = _CelFailure(f"CEL selector #{index} of {owner}", expression, str(err))
                break
            if not matched:
                result = False
                break
        if result is not True:
            break
    cache[device.index] = result
    return result


def _find_candidates(
    request: _Request,
    devices: list[Device],
    in_use: set[DeviceId],
    inventory: DraInventory,
    node_name: str,
    notes: list[str],
) -> None:
    cache = inventory.match_cache.setdefault(request.cache_key, {})
    matching = busy = 0
    candidates: list[Device] = []
    for device in devices:
        result = _match(request, device, cache)
        if result is True:
            matching += 1
            if device.id in in_use:
                busy += 1
            else:
                candidates.append(device)
        elif result is not False and device.id not in in_use:
            raise Unallocatable(
                f"{request.label()}: {result.where} failed on device {device.id} of node {node_name}: "
                f"{_cel_detail(result.expression, result.error)}; allocation was aborted as upstream does "
                "(guard attribute lookups with has() or .?name.orValue())"
            )
    request.candidates = candidates
    if len(candidates) >= request.count:
        return
    what = f"class {request.class_name}"
    if request.request_selectors:
        what += " matching the request's selectors"
    if not devices:
        detail = "no ResourceSlice offers devices on this node"
    elif matching == 0:
        detail = f"none of the node's {_plural(len(devices), 'device')} match"
    else:
        detail = f"{matching} match, {busy} in use"
    raise Unallocatable(
        f"{request.label()}: needs {_plural(request.count, 'device')} of {what}, "
        f"{len(candidates)} free on node {node_name} ({detail})" + _notes_suffix(notes)
    )


def _claims_label(claims: list[_Claim]) -> str:
    refs = ", ".join(claim.ref for claim in claims)
    return f"claim {refs}" if len(claims) == 1 else f"claims {refs}"


def _notes_suffix(notes: list[str]) -> str:
    return "; note: " + "; ".join(notes) if notes else ""


# ------------------------------------------------------------------------------------------------
# Search


class _Budget:
    """Counts device checks; raises Unallocatable once the limit is passed."""

    __slots__ = ("claims", "left", "limit", "node_name")

    def __init__(self, limit: int, claims: list[_Claim], node_name: str) -> None:
        self.left = limit
        self.limit = limit
        self.claims = claims
        self.node_name = node_name

    def exhausted(self) -> Unallocatable:
        return Unallocatable(
            f"{_claims_label(self.claims)}: the search for devices on node {self.node_name} was too large "
            f"and was stopped after {self.limit} device checks; fewer or simpler requests would help"
        )


def _check_feasible(slots: list[_Request], budget: _Budget, node_name: str, notes: list[str]) -> None:
    """Fail early when no assignment of distinct devices to the slots exists.

    Slots are added one by one to a maximum bipartite matching (augmenting paths); the first slot
    that cannot be added shows a request that cannot be satisfied together with the earlier ones.
    Constraints and counters only remove solutions, so this stays a valid check when they arrive.
    """
    owner: dict[int, int] = {}  # device index -> slot index
    for slot_index, request in enumerate(slots):
        if not _augment(slot_index, slots, owner, budget):
            mine = {device.index for device in request.candidates}
            rivals = [
                other.label()
                for other in dict.fromkeys(slots[:slot_index])
                if other is not request and any(device.index in mine for device in other.candidates)
            ]
            rivals = [label for label in dict.fromkeys(rivals) if label != request.label()]
            competing = ", ".join(rivals) if rivals else "earlier requests"
            raise Unallocatable(
                f"{request.label()}: needs {_plural(request.count, 'device')} of class {request.class_name}; "
                f"{len(request.candidates)} free on node {node_name} match, but {competing} allocated "
                "together with it need some of the same devices and there are not enough for all"
                + _notes_suffix(notes)
            )


def _augment(start: int, slots: list[_Request], owner: dict[int, int], budget: _Budget) -> bool:
    # Iterative depth-first search for an augmenting path (no recursion limit to worry about).
    visited: set[int] = set()
    stack: list[list[int]] = [[start, 0]]  # [slot index, next candidate position]
    path: list[int] = []  # device taken at each stack level
    while stack:
        frame = stack[-1]
        candidates = slots[frame[0]].candidates
        descended = False
        while frame[1] < len(candidates):
            device = candidates[frame[1]].index
            frame[1] += 1
            budget.left -= 1
            if budget.left < 0:
                raise budget.exhausted()
            if device in visited:
                continue
            visited.add(device)
            path.append(device)
            holder = owner.get(device)
            if holder is None:
                for (slot_index, _), taken in zip(stack, path, strict=True):
                    owner[taken] = slot_index
                return True
            stack.append([holder, 0])
            descended = True
            break
        if not descended:
            stack.pop()
            if path:
                path.pop()
    return False


class _Search:
    """Depth-first search over device slots (claim -> request -> k-th device) with undo.

    Slots of one request take devices in increasing candidate order (combinations, not
    permutations): the devices of one request are interchangeable, so this loses no solution.
    """

    def __init__(self, slots: list[_Request], budget: _Budget) -> None:
        self.slots = slots
        self.budget = budget
        self.taken: set[int] = set()

    def _accept(self, slot: _Request, device: Device) -> bool:
        """Whether ``device`` may be added for ``slot`` now; records it if so (constraints hook here)."""
        if device.index in self.taken:
            return False
        self.taken.add(device.index)
        return True

    def _release(self, slot: _Request, device: Device) -> None:
        """Undo :meth:`_accept` for a device that was picked."""
        self.taken.discard(device.index)

    def run(self) -> list[Device] | None:
        slots = self.slots
        count = len(slots)
        position = [-1] * count
        picked: list[Device | None] = [None] * count
        budget = self.budget
        i = 0
        while 0 <= i < count:
            slot = slots[i]
            previous = picked[i]
            if previous is not None:
                self._release(slot, previous)
                picked[i] = None
                start = position[i] + 1
            elif i > 0 and slots[i - 1] is slot:
                start = position[i - 1] + 1
            else:
                start = 0
            candidates = slot.candidates
            for j in range(start, len(candidates)):
                budget.left -= 1
                if budget.left < 0:
                    raise budget.exhausted()
                device = candidates[j]
                if self._accept(slot, device):
                    picked[i] = device
                    position[i] = j
                    break
            if picked[i] is not None:
                i += 1
            else:
                position[i] = -1
                i -= 1
        if i < 0:
            return None
        return picked  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------
# Results


def _clone(value: object) -> object:
    if isinstance(value, dict):
        return {key: _clone(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clone(item) for item in value]
    return value


def _build_config(claim: _Claim) -> list[dict]:
    configs: list[dict] = []
    by_class: dict[str, list[dict]] = {}
    for request in claim.requests:
        entries = by_class.get(request.class_name)
        if entries is not None:
            for entry in entries:
                entry["requests"].append(request.name)
            continue
        entries = []
        for config in (request.device_class.get("spec") or {}).get("config") or []:
            entry = {"source": "FromClass", "requests": [request.name]}
            entry.update((k, _clone(v)) for k, v in config.items() if k != "requests")
            entries.append(entry)
            configs.append(entry)
        by_class[request.class_name] = entries
    names = [request.name for request in claim.requests]
    known = set(names)
    for config in ((claim.obj.get("spec") or {}).get("devices") or {}).get("config") or []:
        wanted = config.get("requests") or []
        if wanted and known.isdisjoint(wanted):
            continue  # names only requests this claim does not have (upstream drops it as well)
        entry: dict = {"source": "FromClaim"}
        if wanted:
            entry["requests"] = list(wanted)
        entry.update((k, _clone(v)) for k, v in config.items() if k != "requests")
        configs.append(entry)
    # Since Kubernetes 1.37 a config that applies to every request of the claim carries no list
    # (empty means all, k/k#139731 and #139814).
    for entry in configs:
        if "requests" in entry and known.issubset(entry["requests"]):
            del entry["requests"]
    return configs


def _requirement_key(requirement: dict) -> tuple:
    return (requirement.get("key"), requirement.get("operator"), frozenset(requirement.get("values") or ()))


def _build_node_selector(picks: list[Device]) -> dict | None:
    """Where the allocation is usable, as upstream's createNodeSelector decides it.

    One node-local device pins the allocation to its node; otherwise the requirements of all slice
    selectors (one term each) are ANDed into one term; ``allNodes`` devices add nothing.
    """
    for device in picks:
        if device.node_local:
            return node_selector_for_node(device.node_name or "")
    merged: dict[str, list[dict]] = {"matchExpressions": [], "matchFields": []}
    seen: dict[str, set[tuple]] = {"matchExpressions": set(), "matchFields": set()}
    for device in picks:
        if device.node_selector is None:
            continue
        term = device.node_selector["nodeSelectorTerms"][0]
        for kind in ("matchExpressions", "matchFields"):
            for requirement in term.get(kind) or []:
                key = _requirement_key(requirement)
                if key not in seen[kind]:
                    seen[kind].add(key)
                    merged[kind].append(_clone(requirement))
    term = {kind: requirements for kind, requirements in merged.items() if requirements}
    return {"nodeSelectorTerms": [term]} if term else None


def _build_result(claim: _Claim, picks: list[Device], requests: list[_Request]) -> dict:
    results = [
        {
            "request": request.name,
            "driver": device.id.driver,
            "pool": device.id.pool,
            "device": device.id.device,
        }
        for request, device in zip(requests, picks, strict=True)
    ]
    devices: dict = {"results": results}
    configs = _build_config(claim)
    if configs:
        devices["config"] = configs
    allocation: dict = {"devices": devices}
    selector = _build_node_selector(picks)
    if selector is not None:
        allocation["nodeSelector"] = selector
    return allocation


# ------------------------------------------------------------------------------------------------
# Entry point


def allocate(
    claims: list[dict],
    node: dict,
    inventory: DraInventory,
    in_use: set[DeviceId],
    *,
    max_device_checks: int = MAX_DEVICE_CHECKS,
) -> list[dict]:
    """Allocate every (unallocated) claim in `claims` together on `node`.

    Devices in `in_use` and devices picked for an earlier claim in the same call are not used.
    Returns one AllocationResult dict (resource.k8s.io/v1 shape: ``{"devices": {"results": [...],
    "config": [...]}, "nodeSelector": {...}}``) per claim, in order. Raises Unallocatable with the
    reason when they do not fit on this node.

    A claim that already has ``status.allocation`` is returned as it is (a copy) when that allocation
    is usable on ``node``, and refused otherwise; its devices are kept away from the other claims.
    ``max_device_checks`` bounds the work of one call.
    """
    node_name = ((node or {}).get("metadata") or {}).get("name", "")
    prepared = [_prepare_claim(claim, inventory) for claim in claims]
    blocked = in_use
    for claim in prepared:
        if claim.existing is None:
            continue
        try:
            usable = allocation_usable_on(claim.existing, node)
        except NodeSelectorError as err:
            raise Unallocatable(
                f"claim {claim.ref}: its allocation has an invalid nodeSelector: {err}"
            ) from None
        if not usable:
            raise Unallocatable(
                f"claim {claim.ref}: is already allocated to devices that node {node_name} cannot use "
                "(its allocation's nodeSelector does not admit the node)"
            )
        try:
            taken = devices_of(claim.existing, exclusive_only=True)
        except ValueError as err:
            raise Unallocatable(f"claim {claim.ref}: its status.allocation is malformed: {err}") from None
        blocked = blocked | set(taken)  # a new set: the caller's in_use stays untouched

    slots: list[_Request] = []
    for claim in prepared:
        for request in claim.requests:
            slots.extend([request] * request.count)
    if slots:
        devices = inventory.devices_for_node(node)
        notes = inventory.notes_for_node(node)
        for claim in prepared:
            for request in claim.requests:
                _find_candidates(request, devices, blocked, inventory, node_name, notes)
        budget = _Budget(max_device_checks, [c for c in prepared if c.existing is None], node_name)
        if len(slots) > 1:
            _check_feasible(slots, budget, node_name, notes)
        picks = _Search(slots, budget).run()
        if picks is None:
            raise Unallocatable(
                f"{_claims_label(budget.claims)}: no combination of the free devices on node {node_name} "
                "satisfies all requests" + _notes_suffix(notes)
            )
    else:
        picks = []

    allocations: list[dict] = []
    offset = 0
    for claim in prepared:
        if claim.existing is not None:
            allocations.append(_clone(claim.existing))  # type: ignore[arg-type]
            continue
        size = sum(request.count for request in claim.requests)
        allocations.append(_build_result(claim, picks[offset : offset + size], slots[offset : offset + size]))
        offset += size
    return allocations
