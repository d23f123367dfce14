"""Structured DRA allocation: pick devices for a pod's ResourceClaims on one candidate node.

This follows the upstream structured allocator (``k8s.io/dynamic-resource-allocation/structured``,
"stable" feature level plus ``distinctAttribute``) for ``resource.k8s.io/v1`` claims:

* requests with ``exactly`` (``ExactCount`` with ``count``, default 1, or ``All``: every matching
  device of the node, at least one) or ``firstAvailable`` (sub-requests tried in order; results name
  ``request/subrequest``), selected by the DeviceClass's CEL selectors and then the request's own;
* ``adminAccess`` (only in namespaces labelled ``resource.kubernetes.io/admin-access=true``): may take
  devices in use, and is not counted as using them;
* device taints (``NoSchedule``/``NoExecute``) against the request's ``tolerations``;
* ``constraints``: ``matchAttribute`` and ``distinctAttribute`` over the requests they name (all when
  none are named; a name may be ``request`` or ``request/subrequest``); list-valued attributes as
  :mod:`kai_core.dra.constraint_values` compares them (with ``DRAListTypeAttributes`` on, upstream's
  "experimental" allocator: the devices' sets share an element, or are pairwise disjoint);
* partitionable devices: ``consumesCounters`` against the pool's ``sharedCounters``, minus what
  allocated devices of the pool consume on any node;
* consumable capacity: ``capacity.requests`` against each device's capacity and its
  ``requestPolicy`` (:mod:`kai_core.dra.capacity`); a device with ``allowMultipleAllocations`` is
  shared by claims while what they consume fits, its results get a fresh ``shareID`` and the
  ``consumedCapacity``, and it does not count as in use (``consumed`` gives what others use of it);
* at most 32 devices per claim; devices in use (``in_use``, already allocated claims passed in, or
  picked for another claim of the same call) are never handed out twice, admin access aside;
* results in request order, ``FromClass`` configs then the claim's own (``FromClaim``, copied with
  their ``requests`` list), and the ``nodeSelector`` where the allocation is usable. Class configs
  take the form of the allocator variant kube-scheduler would run with the same gates: with
  ``DRAConsumableCapacity`` or ``DRADeviceBindingConditions`` on (the 1.37 defaults) its incubating
  one writes each class's configs once, naming the requests using the class; with both off (the 1.34
  defaults) its stable one writes them once per request, without ``requests`` (so applying to every
  request: Go leaves the empty list out of the JSON).

Feature gates (``inventory.features``, from ``--feature-gates``, kube-scheduler's names): with
``DRAPrioritizedList``, ``DRAAdminAccess`` or ``DRAConsumableCapacity`` off, a claim using the feature
is refused with upstream's message; with ``DRADeviceTaints`` off taints are ignored; with
``DRAPartitionableDevices`` off the inventory leaves devices consuming counters out of node views; with
``DRAListTypeAttributes`` off (its default) a list-valued attribute matches no other device, as in
upstream's stable and incubating allocators.
Each is decided once per claim or per (request, node), never per device of a plain claim.

Search. Alternatives are chosen first, request by request in order (so the first sub-requests that
can work are used, whatever devices an earlier request would have tried first), then devices are
placed depth-first over request -> device picks (combinations, not permutations) with undo, like
upstream's walk, made bounded and less exponential:

* each request is first checked alone (enough free, tolerated devices?) and all of them together by
  bipartite matching (distinct devices for every slot), so plain "not enough devices" answers never
  search (upstream is exponential there, k/k#131730);
* a ``matchAttribute`` value, once fixed, must leave enough devices with that value; a
  ``distinctAttribute`` must leave enough distinct values;
* after a device fails, devices interchangeable with it in this call (same candidate lists, same
  constraint attributes and counter consumption) are skipped;
* every device check counts against a budget; past it the claims are refused with a reason instead of
  stalling the scheduler;
* claims of one shape (same requests and constraints: pods from one ResourceClaimTemplate) share the
  work: for one inventory (one cycle), the outcome on a node is kept per set of the node's devices in
  use and replayed for the next claim of that shape, with that claim's name, request names and
  configs; so a cycle searches once per (shape, node, change on the node), not once per (pod, node).

Removing. A caller may take devices out of the pod's reach (``excluded``, from the
``kai_filter_devices`` hook), each with a reason: they are never picked, and a request left short
says how many were removed and why.

Choosing. Among the devices that fit, a caller-supplied score per device (the ``kai_rank_devices``
hook) wins; otherwise the default is *pack*: prefer devices whose counter sets are already partly
consumed and pools that are already partly used, and small partitions over big ones, so whole GPUs and
whole counter sets stay free for claims that need them.

Reasons name the claim (``namespace/name``), the request, the DeviceClass and, for CEL problems, the
expression; they leave the node's name out so that nodes failing alike share one message.

Deliberate differences from upstream, all on the safe side or better at choosing: a CEL runtime error on
any free device of the node aborts the request's allocation (upstream only fails if its first-fit walk
reaches that device); a claim config is reported once however many requests it names (upstream repeats
it, k/k#139730; the API accepts both, and a repeated entry gives a driver nothing more) and keeps its
``requests`` list as written, as upstream does; an ``All`` sub-request that a constraint rejects makes
the allocator try the next sub-request instead of failing the node; admin-access picks consume no shared
counters (they do not use the device); with ``firstAvailable``, the sub-requests kept are the first
workable ones in request order (upstream keeps whatever its first-fit device walk reaches first, which
may be a later sub-request of a later request); a shared device serves at most one request of one
allocate() call (upstream may give one device to several requests of a pod's claims, sharing its
capacity; kai then refuses the node, or picks other devices); with list attributes, backtracking gives a
``matchAttribute`` set back the elements it shared before the pick undone (upstream's experimental
allocator keeps the narrowed intersection, k/k#140300); a ``distinctAttribute`` set compares every pair
of its devices (upstream's allocators keep the value of the last device picked per request only, so the
third device of a request is not compared with its first).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from kai_core.api.features import DraFeatures
from kai_core.api.nodeaffinity import NodeSelectorError, match_node_selector, node_selector_for_node
from kai_core.api.quantity import format_quantity
from kai_core.dra.capacity import CapacityError, consumption, parse_requests, status_names
from kai_core.dra.cel import CelCompileError, CelEvalError, compile_selector
from kai_core.dra.constraint_values import distinct_allows, distinct_keys, distinct_room, match_next
from kai_core.dra.inventory import Device, DeviceId, DraInventory, NodeView, Pool

__all__ = [
    "ADMIN_ACCESS_LABEL",
    "MAX_DEVICES_PER_CLAIM",
    "MAX_DEVICE_CHECKS",
    "Device",
    "DeviceId",
    "DraInventory",
    "RequestDevices",
    "Unallocatable",
    "allocate",
    "allocation_usable_on",
    "candidate_devices",
    "class_drivers",
    "devices_of",
    "request_candidates",
]

# resourceapi.AllocationResultsMaxSize: the most devices one claim's allocation may hold.
MAX_DEVICES_PER_CLAIM = 32
# How many device checks one allocate() call may make before giving up (a few milliseconds of work).
MAX_DEVICE_CHECKS = 20_000
#: The namespace label that allows ``adminAccess`` requests.
ADMIN_ACCESS_LABEL = "resource.kubernetes.io/admin-access"

_EXACT_FIELDS = frozenset(
    {"deviceClassName", "selectors", "allocationMode", "count", "adminAccess", "tolerations", "capacity"}
)
_SUB_FIELDS = _EXACT_FIELDS - {"adminAccess"} | {"name"}
_REQUEST_FIELDS = frozenset({"name", "exactly", "firstAvailable"})
_DEVICES_FIELDS = frozenset({"requests", "constraints", "config"})
_TOLERATION_OPERATORS = frozenset({"Exists", "Equal"})


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
    :class:`~kai_core.api.nodeaffinity.NodeSelectorError`.
    """
    return match_node_selector((allocation or {}).get("nodeSelector"), node)


def devices_of(allocation: dict, *, exclusive_only: bool = False) -> list[DeviceId]:
    """The devices named in ``allocation.devices.results``, in order.

    With ``exclusive_only``, results with ``adminAccess: true`` are left out: upstream does not count
    admin-access results as using the device, so they must not go into the ``in_use`` set; nor do
    shared results (``shareID``): their device's capacity is what they use.
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
        if not (exclusive_only and (result.get("adminAccess") or result.get("shareID"))):
            ids.append(DeviceId(*fields))
    return ids


# ------------------------------------------------------------------------------------------------
# Claim preparation (once per claim object and inventory)


@dataclass(slots=True, eq=False)
class _Alt:
    """One way to satisfy a request: its ``exactly`` body, or one ``firstAvailable`` sub-request."""

    request: _Request
    name: str  # the result name: "req" or "req/sub"
    class_name: str
    device_class: dict
    selectors: list[tuple[str, str, object]]  # (owner, expression, compiled)
    has_request_selectors: bool
    all_mode: bool
    count: int
    admin: bool
    tolerations: list[dict]
    capacity: dict[str, Fraction] | None  # capacity.requests (DRAConsumableCapacity)
    signature: tuple
    # Alternatives with equal keys see the same free devices on a node (their options are shared).
    options_key: tuple

    def label(self) -> str:
        return f"claim {self.request.claim.ref} request {self.name}"


@dataclass(slots=True, eq=False)
class _Request:
    claim: _Claim
    name: str
    alts: list[_Alt] = field(default_factory=list)
    first_available: bool = False

    def label(self) -> str:
        return f"claim {self.claim.ref} request {self.name}"


@dataclass(slots=True, eq=False)
class _Constraint:
    index: int
    distinct: bool
    attribute: str
    requests: frozenset[str] | None

    def applies(self, alt: _Alt) -> bool:
        names = self.requests
        return names is None or alt.request.name in names or alt.name in names

    def describe(self) -> str:
        kind = "distinctAttribute" if self.distinct else "matchAttribute"
        scope = f"requests {', '.join(sorted(self.requests))}" if self.requests else "all requests"
        return f"constraint #{self.index} ({kind} {self.attribute} over {scope})"


@dataclass(slots=True, eq=False)
class _Claim:
    obj: dict
    ref: str
    namespace: str
    requests: list[_Request]
    constraints: list[_Constraint]
    configs: list[dict]
    existing: dict | None
    error: str | None = None
    # Whether "All" requests or large counts may take the claim past 32 devices on some node.
    may_exceed_limit: bool = False
    # What the device search depends on (requests and constraints, not names or configs): claims
    # from one template share it. None when the outcome must not be reused (admin access).
    shape: tuple | None = None


def _claim_ref(claim: dict) -> tuple[str, str]:
    metadata = claim.get("metadata") or {}
    name = metadata.get("name") or "<unnamed>"
    namespace = metadata.get("namespace") or ""
    return (f"{namespace}/{name}" if namespace else name), namespace


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _cel_detail(expression: str, error: object) -> str:
    text = str(error)
    return text if expression in text else f"{text} (expression: {expression!r})"


def _prepared(claim: object, inventory: DraInventory) -> _Claim:
    """The claim parsed against the inventory's classes, cached by object identity for the cycle."""
    hit = inventory.claim_cache.get(id(claim))
    if hit is not None and hit[0] is claim:
        prepared = hit[1]
    else:
        try:
            prepared = _prepare_claim(claim, inventory)
        except Unallocatable as err:
            ref = _claim_ref(claim)[0] if isinstance(claim, dict) else "?"
            prepared = _Claim(claim if isinstance(claim, dict) else {}, ref, "", [], [], [], None, err.reason)
        if isinstance(claim, dict):
            inventory.claim_cache[id(claim)] = (claim, prepared)  # holds the claim, so its id stays unique
    assert isinstance(prepared, _Claim)
    if prepared.error is not None:
        raise Unallocatable(prepared.error)
    return prepared


def _prepare_claim(claim: object, inventory: DraInventory) -> _Claim:
    if not isinstance(claim, dict):
        raise Unallocatable(f"a ResourceClaim must be an object, got {type(claim).__name__}")
    ref, namespace = _claim_ref(claim)
    prepared = _Claim(claim, ref, namespace, [], [], [], None)
    status, spec = claim.get("status") or {}, claim.get("spec") or {}
    if not isinstance(status, dict) or not isinstance(spec, dict):
        raise Unallocatable(f"claim {ref}: {'status' if not isinstance(status, dict) else 'spec'} must be an object")
    allocation = status.get("allocation")
    if allocation:
        if not isinstance(allocation, dict):
            raise Unallocatable(f"claim {ref}: status.allocation must be an object")
        prepared.existing = allocation
        return prepared
    devices = spec.get("devices") or {}
    if not isinstance(devices, dict):
        raise Unallocatable(f"claim {ref}: spec.devices must be an object")
    for key in devices:
        if key not in _DEVICES_FIELDS:
            raise Unallocatable(f"claim {ref}: spec.devices.{key} is not supported")
    requests = devices.get("requests") or []
    if not isinstance(requests, list):
        raise Unallocatable(f"claim {ref}: spec.devices.requests must be a list")
    for position, request in enumerate(requests):
        prepared.requests.append(_prepare_request(prepared, position, request, inventory))
    names = [r.name for r in prepared.requests]
    if len(set(names)) != len(names):
        raise Unallocatable(f"claim {ref}: request names must be unique, got {names}")
    configs = devices.get("config") or []
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise Unallocatable(f"claim {ref}: spec.devices.config must be a list of objects")
    for index, config in enumerate(configs):
        wanted = config.get("requests") or []
        if not isinstance(wanted, list) or not all(isinstance(name, str) for name in wanted):
            raise Unallocatable(f"claim {ref}: spec.devices.config[{index}].requests must be a list of names")
    prepared.configs = configs
    prepared.constraints = _prepare_constraints(ref, devices.get("constraints"), inventory.features)
    least = sum(min(alt.count if not alt.all_mode else 1 for alt in r.alts) for r in prepared.requests)
    prepared.may_exceed_limit = (
        any(a.all_mode for r in prepared.requests for a in r.alts)
        or sum(max(a.count for a in r.alts) for r in prepared.requests) > MAX_DEVICES_PER_CLAIM
    )
    if least > MAX_DEVICES_PER_CLAIM:
        raise Unallocatable(
            f"claim {ref}: asks for at least {least} devices, more than the {MAX_DEVICES_PER_CLAIM} "
            "one claim can hold"
        )
    if not any(alt.admin for r in prepared.requests for alt in r.alts):
        prepared.shape = (
            tuple((r.name, r.first_available, tuple((a.name, a.options_key, a.count) for a in r.alts))
                  for r in prepared.requests),
            tuple((c.index, c.distinct, c.attribute, c.requests) for c in prepared.constraints),
        )
    return prepared


def _prepare_constraints(ref: str, constraints: object, features: DraFeatures) -> list[_Constraint]:
    if not constraints:
        return []
    if not isinstance(constraints, list):
        raise Unallocatable(f"claim {ref}: spec.devices.constraints must be a list")
    out: list[_Constraint] = []
    for index, constraint in enumerate(constraints):
        where = f"claim {ref}: constraint #{index}"
        if not isinstance(constraint, dict):
            raise Unallocatable(f"{where} must be an object")
        kinds = [k for k in ("matchAttribute", "distinctAttribute") if constraint.get(k)]
        unknown = set(constraint) - {"requests", "matchAttribute", "distinctAttribute"}
        if unknown or len(kinds) != 1:
            what = f"unknown field(s) {sorted(unknown)}" if unknown else "it must set exactly one of them"
            raise Unallocatable(f"{where}: only matchAttribute or distinctAttribute is supported ({what})")
        if kinds[0] == "distinctAttribute" and not features.consumable_capacity:
            # distinctAttribute came with consumable capacity; upstream's stable allocator knows
            # only matchAttribute
            raise Unallocatable(f"claim {ref}, constraint #{index}: empty constraint (unsupported constraint type?)")
        attribute = constraint[kinds[0]]
        if not isinstance(attribute, str) or "/" not in attribute.strip("/"):
            raise Unallocatable(
                f"{where}: {kinds[0]} must be a fully qualified attribute name (domain/id), got {attribute!r}"
            )
        names = constraint.get("requests") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise Unallocatable(f"{where}: requests must be a list of request names")
        out.append(_Constraint(index, kinds[0] == "distinctAttribute", attribute, frozenset(names) or None))
    return out


def _prepare_request(claim: _Claim, position: int, request: object, inventory: DraInventory) -> _Request:
    ref = claim.ref
    if not isinstance(request, dict) or not isinstance(request.get("name"), str) or not request["name"]:
        raise Unallocatable(f"claim {ref}: request #{position} has no name")
    name = request["name"]
    label = f"claim {ref} request {name}"
    if "deviceClassName" in request:
        raise Unallocatable(
            f"{label}: has deviceClassName outside 'exactly', the resource.k8s.io/v1beta1 shape; "
            "it must be converted to resource.k8s.io/v1 first"
        )
    for key in request:
        if key not in _REQUEST_FIELDS:
            raise Unallocatable(f"{label}: {key} is not supported")
    prepared = _Request(claim, name)
    exactly, subs = request.get("exactly"), request.get("firstAvailable")
    if bool(exactly) == bool(subs):
        raise Unallocatable(f"{label}: must set exactly one of 'exactly' and 'firstAvailable'")
    if exactly:
        if not isinstance(exactly, dict):
            raise Unallocatable(f"{label}: exactly must be an object")
        prepared.alts.append(_prepare_alt(prepared, name, exactly, _EXACT_FIELDS, "exactly.", inventory))
        return prepared
    if not isinstance(subs, list) or not all(isinstance(s, dict) for s in subs):
        raise Unallocatable(f"{label}: firstAvailable must be a list of sub-requests")
    if not inventory.features.prioritized_list:
        raise Unallocatable(
            f"claim {ref}, request {name}: has subrequests, but the DRAPrioritizedList feature is disabled"
        )
    prepared.first_available = True
    seen: set[str] = set()
    for index, sub in enumerate(subs):
        sub_name = sub.get("name")
        if not isinstance(sub_name, str) or not sub_name or sub_name in seen:
            raise Unallocatable(f"{label}: firstAvailable[{index}] needs a name unique within the request")
        seen.add(sub_name)
        if "adminAccess" in sub:
            raise Unallocatable(
                f"{label}/{sub_name}: adminAccess is not allowed in a firstAvailable sub-request"
            )
        prepared.alts.append(_prepare_alt(prepared, f"{name}/{sub_name}", sub, _SUB_FIELDS, "", inventory))
    return prepared


def _prepare_alt(
    request: _Request, name: str, body: dict, allowed: frozenset[str], prefix: str, inventory: DraInventory
) -> _Alt:
    label = f"claim {request.claim.ref} request {name}"
    for key in body:
        if key not in allowed:
            raise Unallocatable(f"{label}: {prefix}{key} is not supported")
    capacity = None
    if body.get("capacity"):
        if not inventory.features.consumable_capacity:
            raise Unallocatable(
                f"claim {request.claim.ref}, request {name}: has capacity requests, but the "
                "DRAConsumableCapacity feature is disabled"
            )
        wanted = body["capacity"].get("requests") if isinstance(body["capacity"], dict) else None
        try:
            capacity = parse_requests(wanted, label) if wanted else None
        except CapacityError as err:
            raise Unallocatable(str(err)) from None
    mode = body.get("allocationMode") or "ExactCount"
    if mode not in ("ExactCount", "All"):
        raise Unallocatable(f"{label}: unknown allocationMode {mode!r} (expected ExactCount or All)")
    count = body.get("count", 1)
    if mode == "All":
        count = 0
    elif not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise Unallocatable(f"{label}: count must be a positive integer, got {count!r}")
    admin = body.get("adminAccess", False)
    if not isinstance(admin, bool):
        raise Unallocatable(f"{label}: adminAccess must be true or false, got {admin!r}")
    if admin and not inventory.features.admin_access:
        raise Unallocatable(
            f"claim {request.claim.ref}, request {name}: admin access is requested, but the feature is disabled"
        )
    tolerations = _prepare_tolerations(label, body.get("tolerations"))
    class_name = body.get("deviceClassName")
    if not isinstance(class_name, str) or not class_name:
        raise Unallocatable(f"{label}: {prefix}deviceClassName is missing")
    device_class = inventory.device_class(class_name)
    if device_class is None:
        raise Unallocatable(
            f"{label}: DeviceClass {class_name} does not exist (create it, or fix deviceClassName)"
        )
    class_spec = device_class.get("spec") or {}
    if not isinstance(class_spec, dict):
        raise Unallocatable(f"{label}: spec of DeviceClass {class_name} must be an object")
    class_configs = class_spec.get("config") or []
    if not isinstance(class_configs, list) or not all(isinstance(c, dict) for c in class_configs):
        raise Unallocatable(f"{label}: spec.config of DeviceClass {class_name} must be a list of objects")
    selectors = _compile_selectors(class_spec.get("selectors"), label, f"DeviceClass {class_name}")
    own = _compile_selectors(body.get("selectors"), label, f"request (DeviceClass {class_name})")
    signature = (class_name, tuple(e for _, e, _ in selectors), tuple(e for _, e, _ in own))
    return _Alt(
        request=request,
        name=name,
        class_name=class_name,
        device_class=device_class,
        selectors=selectors + own,
        has_request_selectors=bool(own),
        all_mode=mode == "All",
        count=count,
        admin=admin,
        tolerations=tolerations,
        capacity=capacity,
        signature=signature,
        options_key=(signature, admin, mode, repr(tolerations), repr(capacity)),
    )


def _prepare_tolerations(label: str, tolerations: object) -> list[dict]:
    if not tolerations:
        return []
    if not isinstance(tolerations, list) or not all(isinstance(t, dict) for t in tolerations):
        raise Unallocatable(f"{label}: tolerations must be a list of objects")
    for index, toleration in enumerate(tolerations):
        operator = toleration.get("operator") or "Equal"
        if operator not in _TOLERATION_OPERATORS:
            raise Unallocatable(
                f"{label}: tolerations[{index}].operator must be Exists or Equal, got {operator!r}"
            )
        if operator == "Exists" and toleration.get("value"):
            raise Unallocatable(f"{label}: tolerations[{index}] with operator Exists must not set a value")
        if operator == "Equal" and not toleration.get("key"):
            raise Unallocatable(f"{label}: tolerations[{index}] with operator Equal needs a key")
    return tolerations


def _compile_selectors(selectors: object, label: str, owner: str) -> list[tuple[str, str, object]]:
    if not selectors:
        return []
    if not isinstance(selectors, list):
        raise Unallocatable(f"{label}: selectors of {owner} must be a list")
    compiled: list[tuple[str, str, object]] = []
    for index, selector in enumerate(selectors):
        cel = selector.get("cel") if isinstance(selector, dict) else None
        expression = cel.get("expression") if isinstance(cel, dict) else None
        if not isinstance(expression, str):
            raise Unallocatable(
                f"{label}: selector #{index} of {owner} has no CEL expression "
                "(only CEL selectors are supported)"
            )
        try:
            compiled.append((f"CEL selector #{index} of {owner}", expression, compile_selector(expression)))
        except CelCompileError as err:
            raise Unallocatable(
                f"{label}: CEL selector #{index} of {owner} does not compile: {_cel_detail(expression, err)}"
            ) from None
    return compiled


def _tolerates(tolerations: list[dict], taint: dict) -> bool:
    """Whether one of the request's tolerations tolerates the device taint (as core/v1 tolerations)."""
    for toleration in tolerations:
        effect = toleration.get("effect")
        if effect and effect != taint.get("effect"):
            continue
        key = toleration.get("key")
        if (toleration.get("operator") or "Equal") == "Exists":
            if not key or key == taint.get("key"):
                return True
        elif key == taint.get("key") and (toleration.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _taint_text(taint: dict) -> str:
    value = taint.get("value")
    return f"{taint.get('key')}{'=' + value if value else ''}:{taint.get('effect')}"


# ------------------------------------------------------------------------------------------------
# Device matching: CEL results are cached on each device by expression, and the matching devices of
# a node per request signature in the inventory.


@dataclass(slots=True)
class _CelFailure:
    where: str
    expression: str
    error: str


@dataclass(slots=True)
class _Matching:
    devices: list[Device]
    failures: list[tuple[Device, _CelFailure]]
    simple: bool  # one pool and no counters: the default order needs no sorting
    tainted: bool  # some device has a taint the request's tolerations must be checked against
    shared: bool  # some device allows multiple allocations


def _match(alt: _Alt, device: Device) -> object:
    """True, False, or a :class:`_CelFailure` when a selector could not be evaluated on the device."""
    return _match_selectors(alt.selectors, device)


def _match_selectors(selectors: list[tuple[str, str, object]], device: Device) -> object:
    cache = device.cel
    for owner, expression, selector in selectors:
        result = cache.get(expression)
        if result is None:
            try:
                result = selector.matches(device.env)  # type: ignore[attr-defined]
            except CelEvalError as err:
                result = str(err)
            cache[expression] = result
        if result is False:
            return False
        if result is not True:
            return _CelFailure(owner, expression, str(result))
    return True


def _matching(alt: _Alt, view: NodeView, node_name: str, inventory: DraInventory) -> _Matching:
    key = (alt.signature, node_name)
    hit = inventory.match_cache.get(key)
    if hit is None:
        devices: list[Device] = []
        failures: list[tuple[Device, _CelFailure]] = []
        selectors = alt.selectors
        for device in view.devices:
            result = _match_selectors(selectors, device)
            if result is True:
                devices.append(device)
            elif result is not False:
                assert isinstance(result, _CelFailure)
                failures.append((device, result))
        pools = {(d.id.driver, d.id.pool) for d in devices}
        simple = len(pools) <= 1 and not any(d.consumes or d.binding for d in devices)
        # With DRADeviceTaints off taints are ignored, as upstream does.
        tainted = inventory.features.device_taints and any(d.taints for d in devices)
        shared = any(d.multi for d in devices)
        hit = inventory.match_cache[key] = _Matching(devices, failures, simple, tainted, shared)
    assert isinstance(hit, _Matching)
    return hit


# ------------------------------------------------------------------------------------------------
# One allocate() call


class _BudgetExhausted(Exception):
    pass


@dataclass(slots=True, eq=False)
class _Options:
    """What one alternative can use on this node, and why the rest cannot."""

    candidates: list[Device]
    matching: int = 0
    busy: int = 0
    tainted: int = 0
    taint_example: str = ""
    removed: int = 0
    removed_example: str = ""  # the first removed device's reason
    short: int = 0  # without the capacity the request needs (left)
    failure: str | None = None  # a CEL error on a usable device: allocation must stop if reached
    unusable: str | None = None  # why an All request cannot be served at all

    def feasible(self, alt: _Alt) -> bool:
        if self.failure is not None:
            return True  # reaching it raises the CEL error
        if alt.all_mode:
            return self.unusable is None and bool(self.candidates)
        return len(self.candidates) >= alt.count


class _Call:
    """The state of one allocate() call: candidates, the search, and the result."""

    def __init__(
        self,
        claims: list[_Claim],
        node: dict,
        inventory: DraInventory,
        in_use: set[DeviceId],
        extra_busy: set[DeviceId],
        scores: Mapping[DeviceId, float] | None,
        budget: int,
        excluded: Mapping[DeviceId, str] | None = None,
        consumed: Callable[[], Mapping[DeviceId, Mapping[str, Fraction]]] | None = None,
    ) -> None:
        self.claims = claims
        self.consumed = consumed
        self.share = inventory.features.consumable_capacity
        self.lists = inventory.features.list_type_attributes
        self.shared_used: Mapping[DeviceId, Mapping[str, Fraction]] | None = None
        self.node = node
        self.node_name = ((node or {}).get("metadata") or {}).get("name", "")
        self.inventory = inventory
        self.in_use = in_use
        self.extra_busy = extra_busy
        self.scores = scores
        self.excluded = excluded or None
        self.budget = budget
        self.limit = budget
        self.view = inventory.view(node)
        self.options: dict[_Alt, _Options] = {}
        self.shared_options: dict[tuple, _Options] = {}
        self.requests: list[_Request] = [r for c in claims for r in c.requests]
        self.has_alternatives = any(r.first_available for r in self.requests)
        self.claim_index = {id(c): i for i, c in enumerate(claims)}
        self.picks: list[tuple[_Alt, Device]] = []
        self.baseline: dict[tuple[str, str], dict[str, dict[str, object]]] = {}
        self.constraint_rejects: dict[tuple[int, int], int] = {}
        self.counter_rejects = 0

    def start_search(self) -> None:
        """Set up the search state. Most calls on a filling cluster end before any search (no
        free device), so a call pays for it only when it searches."""
        self.chosen: list[_Alt | None] = [None] * len(self.requests)
        self.taken: dict[Device, int] = {}
        self.claim_taken: list[set[Device]] = [set() for _ in self.claims]
        self.claim_count = [0] * len(self.claims)
        # (claim, constraint) -> what the set shares after each of its picks (the first pick's value,
        # then, with list attributes, the elements all picks so far have in common)
        self.match_state: dict[tuple[int, int], list] = {}
        # (claim, constraint) -> the values (with lists: the elements) the set's picks took
        self.distinct_state: dict[tuple[int, int], dict] = {}
        self.consumed: dict[tuple[str, str, str], dict[str, object]] = {}
        self.eq_keys: dict[Device, tuple] | None = None

    # -- devices in use ----------------------------------------------------------------------

    def busy(self, device_id: DeviceId) -> bool:
        return device_id in self.in_use or device_id in self.extra_busy

    # -- candidates --------------------------------------------------------------------------

    def options_for(self, alt: _Alt) -> _Options:
        options = self.options.get(alt)
        if options is not None:
            return options
        options = self.shared_options.get(alt.options_key)
        if options is not None:
            self.options[alt] = options
            return options
        found = _matching(alt, self.view, self.node_name, self.inventory)
        admin = alt.admin
        in_use, extra, excluded = self.in_use, self.extra_busy, self.excluded
        if not (admin or extra or found.tainted or excluded or found.shared or alt.capacity):
            # the usual case: only devices in use drop out
            candidates = [device for device in found.devices if device.id not in in_use]
            options = _Options(candidates, matching=len(found.devices), busy=len(found.devices) - len(candidates))
        else:
            candidates = []
            options = _Options(candidates, matching=len(found.devices))
            for device in found.devices:
                if excluded and device.id in excluded:  # a plugin's verdict holds for admin access too
                    options.removed += 1
                    options.removed_example = options.removed_example or excluded[device.id]
                    continue
                if found.shared and device.multi and not self.share:
                    if device.id in self.shared_use():  # DRAConsumableCapacity off: shared means taken
                        options.busy += 1
                        continue
                elif (found.shared or alt.capacity) and not self.fits(alt, device):
                    options.short += 1
                    continue
                if not admin and (device.id in in_use or (extra and device.id in extra)):
                    options.busy += 1
                    continue
                if found.tainted and device.taints:
                    blocking = [t for t in device.taints if not _tolerates(alt.tolerations, t)]
                    if blocking:
                        options.tainted += 1
                        options.taint_example = options.taint_example or _taint_text(blocking[0])
                        continue
                candidates.append(device)
        for device, failure in found.failures:
            if (admin or not self.busy(device.id)) and not (excluded and device.id in excluded):
                options.failure = (
                    f"{failure.where} failed on device {device.id}: "
                    f"{_cel_detail(failure.expression, failure.error)}; "
                    "allocation stops here, as upstream's does"
                )
                break
        if alt.all_mode:
            if self.view.unusable_pools:
                options.unusable = (
                    f"asks for all devices of DeviceClass {alt.class_name}, but pool(s) "
                    f"{', '.join(self.view.unusable_pools)} reaching the node are incomplete or invalid, so "
                    "'all' is not known"
                )
            elif options.busy or options.tainted or options.removed or options.short:
                options.unusable = (
                    f"asks for all {options.matching} devices of DeviceClass {alt.class_name}"
                    f"{self._why_not(options)}"
                )
        if len(candidates) > 1 and (self.scores is not None or not found.simple):
            self.rank(candidates)
        self.options[alt] = self.shared_options[alt.options_key] = options
        return options

    @staticmethod
    def _why_not(options: _Options) -> str:
        parts = []
        if options.busy:
            parts.append(f"{options.busy} in use")
        if options.tainted:
            parts.append(f"{options.tainted} tainted {options.taint_example} without a toleration")
        if options.removed:
            parts.append(f"{options.removed} removed by {options.removed_example}")
        if options.short:
            parts.append(f"{options.short} without the capacity asked for left")
        return ", but " + " and ".join(parts) if parts else ""

    def shared_use(self) -> Mapping[DeviceId, Mapping[str, Fraction]]:
        """What shared results of other allocations consume, per device (asked for once per call)."""
        if self.shared_used is None:
            self.shared_used = self.consumed() if self.consumed is not None else {}
        return self.shared_used

    def fits(self, alt: _Alt, device: Device) -> bool:
        """Whether the request's capacity fits the device: for a shared device (allowMultipleAllocations)
        in what other allocations left of it; for any other, in its whole capacity."""
        used = None
        if self.share and device.multi:
            used = self.shared_use().get(device.id)
        elif not alt.capacity:
            return True
        try:
            return consumption(alt.capacity, device, used) is not None
        except CapacityError as err:
            raise Unallocatable(f"{alt.label()}: {err}") from None

    def rank(self, candidates: list[Device]) -> None:
        """Order candidates: caller scores first (higher first), then the default pack order."""
        used_pools: dict[tuple[str, str], bool] = {}
        scores = self.scores

        def pool_used(device: Device) -> bool:
            key = (device.id.driver, device.id.pool)
            used = used_pools.get(key)
            if used is None:
                used = used_pools[key] = any(
                    self.busy(d.id) for d in self.view.devices if (d.id.driver, d.id.pool) == key
                )
            return used

        def key(device: Device) -> tuple:
            fresh_sets, share = 0, 0.0
            if device.consumes:
                pool = self.inventory.pool_of(device)
                base = self.pool_baseline(pool)
                for set_name, counters in device.consumes:
                    used = base.get(set_name) or {}
                    if not any(used.values()):
                        fresh_sets += 1
                    total = pool.counter_sets.get(set_name) or {}
                    for counter, amount in counters.items():
                        capacity = total.get(counter) or 0
                        if capacity:
                            share += float(amount) / float(capacity)
            score = -float(scores.get(device.id, 0.0)) if scores else 0.0
            # devices that make the binder wait for their conditions last, as upstream orders them
            waits = 1 if device.binding is not None and device.binding.conditions else 0
            return (score, waits, fresh_sets, 0 if pool_used(device) else 1, share, device.order)

        candidates.sort(key=key)

    # -- counters ----------------------------------------------------------------------------

    def pool_baseline(self, pool: Pool) -> dict[str, dict[str, object]]:
        """Counters consumed by devices of the pool that are allocated already (on any node)."""
        base = self.baseline.get(pool.key)
        if base is None:
            base = {}
            for device in pool.counter_devices:
                if self.busy(device.id):
                    for set_name, counters in device.consumes:
                        used = base.setdefault(set_name, {})
                        for counter, amount in counters.items():
                            used[counter] = used.get(counter, 0) + amount
            self.baseline[pool.key] = base
        return base

    def take_counters(self, device: Device) -> bool:
        pool = self.inventory.pool_of(device)
        base = self.pool_baseline(pool)
        for set_name, counters in device.consumes:
            total = pool.counter_sets[set_name]
            key = (pool.driver, pool.name, set_name)
            now = self.consumed.get(key) or {}
            before = base.get(set_name) or {}
            for counter, amount in counters.items():
                if before.get(counter, 0) + now.get(counter, 0) + amount > total[counter]:
                    return False
        for set_name, counters in device.consumes:
            now = self.consumed.setdefault((pool.driver, pool.name, set_name), {})
            for counter, amount in counters.items():
                now[counter] = now.get(counter, 0) + amount
        return True

    def release_counters(self, device: Device) -> None:
        for set_name, counters in device.consumes:
            now = self.consumed[(device.id.driver, device.id.pool, set_name)]
            for counter, amount in counters.items():
                now[counter] -= amount

    # -- adding and removing one pick --------------------------------------------------------

    def add(self, alt: _Alt, ci: int, device: Device) -> tuple[bool, list[tuple[_Constraint, object]]]:
        """Try to pick ``device`` for ``alt``; returns (ok, constraints whose value it fixed)."""
        if alt.admin:
            if device in self.claim_taken[ci]:
                return False, []
        elif device in self.taken:
            return False, []
        counted = False
        if device.consumes and not alt.admin:
            if not self.take_counters(device):
                self.counter_rejects += 1
                return False, []
            counted = True
        fixed: list[tuple[_Constraint, object]] = []
        constraints = alt.request.claim.constraints
        for position, constraint in enumerate(constraints):
            if not constraint.applies(alt):
                continue
            value = device.attributes.get(constraint.attribute)
            state_key = (ci, constraint.index)
            ok = value is not None
            if ok and constraint.distinct:
                seen = self.distinct_state.setdefault(state_key, {})
                keys = distinct_keys(value, self.lists, device.id)
                ok = distinct_allows(seen, value, keys, self.lists)
                if ok:
                    seen.update(dict.fromkeys(keys, 1))
            elif ok:
                shared = self.match_state.setdefault(state_key, [])
                if not shared:
                    shared.append(value)
                    fixed.append((constraint, value))
                else:
                    now = shared[-1]
                    if type(now) is tuple and type(value) is tuple:  # two scalars: the common case
                        ok = now == value
                    else:
                        now = match_next(now, value, self.lists)
                        ok = now is not None
                    if ok:
                        shared.append(now)
            if not ok:
                self._reject(ci, constraint)
                for earlier in constraints[:position]:
                    if earlier.applies(alt):
                        self._undo_constraint(ci, earlier, device)
                if counted:
                    self.release_counters(device)
                return False, []
        self.taken[device] = self.taken.get(device, 0) + 1
        self.claim_taken[ci].add(device)
        self.claim_count[ci] += 1
        self.picks.append((alt, device))
        return True, fixed

    def _undo_constraint(self, ci: int, constraint: _Constraint, device: Device) -> None:
        if constraint.distinct:
            seen = self.distinct_state[(ci, constraint.index)]
            for key in distinct_keys(device.attributes[constraint.attribute], self.lists, device.id):
                del seen[key]
        else:
            # what the set shared before this pick comes back (no stale intersection, k/k#140300)
            self.match_state[(ci, constraint.index)].pop()

    def remove(self, alt: _Alt, ci: int, device: Device) -> None:
        self.picks.pop()
        self.claim_count[ci] -= 1
        self.claim_taken[ci].discard(device)
        left = self.taken[device] - 1
        if left:
            self.taken[device] = left
        else:
            del self.taken[device]
        for constraint in alt.request.claim.constraints:
            if constraint.applies(alt):
                self._undo_constraint(ci, constraint, device)
        if device.consumes and not alt.admin:
            self.release_counters(device)

    # -- search ------------------------------------------------------------------------------

    def tick(self) -> None:
        self.budget -= 1
        if self.budget < 0:
            raise _BudgetExhausted

    def solve(self) -> bool:
        """Find picks for every request; True when found (the picks are in ``self.picks``).

        Alternatives are chosen first, request by request in order, and devices are placed for a
        whole choice: so the first sub-requests that can work are the ones used, whatever devices an
        earlier request happened to try first.
        """
        self.start_search()
        return self.choose(0)

    def choose(self, ri: int) -> bool:
        if ri == len(self.requests):
            return self.vector_feasible() and self.place(0)
        for alt in self.requests[ri].alts:
            options = self.options_for(alt)
            if options.failure is not None:
                raise Unallocatable(f"{alt.label()}: {options.failure}")
            if not options.feasible(alt):
                continue
            self.chosen[ri] = alt
            if self.choose(ri + 1):
                return True
        return False

    def vector_feasible(self) -> bool:
        """Necessary conditions for the chosen alternatives: at most 32 devices per claim, and
        distinct devices for every slot (bipartite matching)."""
        sizes = [0] * len(self.claims)
        groups: list[tuple[list[Device], int]] = []
        for alt in self.chosen:
            assert alt is not None
            candidates = self.options[alt].candidates
            size = len(candidates) if alt.all_mode else alt.count
            ci = self.claim_index[id(alt.request.claim)]
            sizes[ci] += size
            if not alt.admin:
                groups.append((candidates, size))
        if max(sizes) > MAX_DEVICES_PER_CLAIM:
            return False
        if len(self.requests) < 2 or not self.has_alternatives:
            return True  # without alternatives, _check_matching has done exactly this already
        return _assign(groups, self) is None

    def place(self, ri: int) -> bool:
        if ri == len(self.chosen):
            return True
        alt = self.chosen[ri]
        assert alt is not None
        ci = self.claim_index[id(alt.request.claim)]
        candidates = self.options[alt].candidates
        if alt.all_mode:
            return self.take_all(ri, alt, ci, candidates)
        return self.pick(ri, alt, ci, candidates, 0, 0)

    def take_all(self, ri: int, alt: _Alt, ci: int, devices: list[Device]) -> bool:
        done = 0
        for device in devices:
            self.tick()
            if not self.add(alt, ci, device)[0]:
                break
            done += 1
        else:
            if self.place(ri + 1):
                return True
        for device in reversed(devices[:done]):
            self.remove(alt, ci, device)
        return False

    def pick(self, ri: int, alt: _Alt, ci: int, candidates: list[Device], k: int, start: int) -> bool:
        if k == alt.count:
            return self.place(ri + 1)
        need = alt.count - k
        failed: set[tuple] | None = None
        for j in range(start, len(candidates) - need + 1):
            self.tick()
            device = candidates[j]
            if failed is not None and self.eq_key(device) in failed:
                continue
            ok, fixed = self.add(alt, ci, device)
            if not ok:
                continue
            if self.lookahead(ri, alt, ci, candidates, j, need - 1, fixed) and self.pick(
                ri, alt, ci, candidates, k + 1, j + 1
            ):
                return True
            self.remove(alt, ci, device)
            if failed is None:
                failed = set()
            failed.add(self.eq_key(device))
        return False

    def lookahead(
        self, ri: int, alt: _Alt, ci: int, candidates: list[Device], j: int, left: int, fixed: list
    ) -> bool:
        """Necessary conditions after a pick: enough devices remain for what the constraints demand,
        counting the picks still to come for this request and for the later requests they cover."""
        claim = alt.request.claim
        for constraint in claim.constraints:
            if not constraint.applies(alt):
                continue
            if not constraint.distinct:
                value = next((v for c, v in fixed if c is constraint), None)
                if value is None:
                    continue
            later = [
                a
                for a in self.chosen[ri + 1 :]
                if a is not None and a.request.claim is claim and constraint.applies(a)
            ]
            if left == 0 and not later:
                continue
            attr = constraint.attribute
            mine = self.claim_taken[ci]
            usable: dict[Device, None] = {}
            need = left
            for scoped, devices in [(alt, candidates[j + 1 :])] + [
                (other, self.options[other].candidates) for other in later
            ]:
                if scoped is not alt:
                    need += len(devices) if scoped.all_mode else scoped.count
                # Picks of one claim never share a device; admin picks may share with other claims.
                usable.update(
                    dict.fromkeys(d for d in devices if d not in (mine if scoped.admin else self.taken))
                )
            if constraint.distinct:
                seen = self.distinct_state.get((ci, constraint.index)) or {}
                values = {d.attributes.get(attr) for d in usable}
                values.discard(None)
                enough = distinct_room(values, seen, self.lists) >= need
            else:
                enough = sum(1 for d in usable if self._matches(value, d, attr)) >= need
                enough = enough and all(self._can_meet(other, constraint, value) for other in later)
            if not enough:
                self._reject(ci, constraint)
                return False
        return True

    def _reject(self, ci: int, constraint: _Constraint) -> None:
        key = (ci, constraint.index)
        self.constraint_rejects[key] = self.constraint_rejects.get(key, 0) + 1

    def _matches(self, value: object, device: Device, attr: str) -> bool:
        """Whether ``device`` could join a matchAttribute set whose first pick holds ``value``."""
        other = device.attributes.get(attr)
        if other is None:
            return False
        if type(value) is tuple and type(other) is tuple:
            return value == other
        return match_next(value, other, self.lists) is not None

    def _can_meet(self, alt: _Alt, constraint: _Constraint, value: object) -> bool:
        if not constraint.applies(alt):
            return True
        options = self.options_for(alt)
        if options.failure is not None:
            return True
        attr = constraint.attribute
        usable = sum(
            1
            for d in options.candidates
            if self._matches(value, d, attr)
            and d
            not in (self.claim_taken[self.claim_index[id(alt.request.claim)]] if alt.admin else self.taken)
        )
        return usable >= (len(options.candidates) if alt.all_mode else alt.count) and usable > 0

    def eq_key(self, device: Device) -> tuple:
        """Devices with equal keys are interchangeable for the rest of this call's search."""
        keys = self.eq_keys
        if keys is None:
            for request in self.requests:
                for alt in request.alts:
                    self.options_for(alt)
            membership: dict[Device, int] = {}
            for bit, options in enumerate(self.options.values()):
                for d in options.candidates:
                    membership[d] = membership.get(d, 0) | (1 << bit)
            attributes = sorted({c.attribute for claim in self.claims for c in claim.constraints})
            keys = self.eq_keys = {}
            for d, bits in membership.items():
                keys[d] = (
                    bits,
                    tuple(d.attributes.get(a) for a in attributes),
                    tuple((s, tuple(sorted(c.items()))) for s, c in d.consumes),
                    (d.id.driver, d.id.pool) if d.consumes else None,
                    self.busy(d.id),
                )
        key = keys.get(device)
        return key if key is not None else (id(device),)


# ------------------------------------------------------------------------------------------------
# Feasibility checks before the search


def _explain(alt: _Alt, options: _Options, call: _Call) -> str:
    what = f"DeviceClass {alt.class_name}" + (
        " matching the request's selectors" if alt.has_request_selectors else ""
    )
    if options.unusable is not None:
        return options.unusable
    if options.matching == 0:
        if not call.view.devices:
            return "no ResourceSlice offers devices to the node"
        return f"no device of {what} (the node has {_plural(len(call.view.devices), 'device')})"
    details = [f"{options.matching} match", f"{options.busy} in use"]
    if options.tainted:
        details.append(f"{options.tainted} tainted {options.taint_example} without a toleration")
    if options.removed:
        details.append(f"{options.removed} removed by {options.removed_example}")
    if options.short:
        details.append(f"{options.short} without the capacity asked for left")
    free = len(options.candidates)
    return f"needs {_plural(alt.count, 'device')} of {what}, {free} free ({', '.join(details)})"


def _notes_suffix(notes: list[str]) -> str:
    return "; note: " + "; ".join(notes) if notes else ""


def _check_requests(call: _Call) -> None:
    """Refuse when some request cannot be met even alone, naming what is missing."""
    notes = call.view.notes
    for request in call.requests:
        first = request.alts[0]
        options = call.options_for(first)
        if options.failure is not None:
            raise Unallocatable(f"{first.label()}: {options.failure}")
        if options.feasible(first) or any(call.options_for(alt).feasible(alt) for alt in request.alts[1:]):
            continue
        if not request.first_available:
            raise Unallocatable(f"{first.label()}: {_explain(first, options, call)}" + _notes_suffix(notes))
        parts = "; ".join(f"{alt.name}: {_explain(alt, call.options_for(alt), call)}" for alt in request.alts)
        raise Unallocatable(
            f"{request.label()}: no firstAvailable sub-request fits ({parts})" + _notes_suffix(notes)
        )


def _check_matching(call: _Call) -> None:
    """Fail early when no assignment of distinct devices to the requests' device slots exists.

    A relaxation of the real problem, so a necessary condition: each request needs at least the
    smallest count of its feasible alternatives, from the union of their candidates; admin-access
    requests share devices and are left out. Constraints and counters only remove solutions.
    """
    if len(call.requests) < 2:
        return  # one request: the per-request check said everything
    groups: list[tuple[_Request, list[Device], int]] = []
    for request in call.requests:
        if request.alts[0].admin:
            continue  # admin access shares devices with everyone
        alts = [a for a in request.alts if call.options_for(a).feasible(a)]
        if not alts:
            continue
        union: dict[Device, None] = {}
        for alt in alts:
            union.update(dict.fromkeys(call.options_for(alt).candidates))
        count = min(len(call.options_for(a).candidates) if a.all_mode else a.count for a in alts)
        groups.append((request, list(union), count))
    if len(groups) < 2:
        return
    failed = _assign([(candidates, count) for _, candidates, count in groups], call)
    if failed is None:
        return
    request, candidates, count = groups[failed]
    mine = set(candidates)
    rivals = [
        other.label()
        for other, theirs, _ in groups[:failed]
        if other is not request and any(d in mine for d in theirs)
    ]
    competing = ", ".join(dict.fromkeys(rivals)) if rivals else "earlier requests"
    raise Unallocatable(
        f"{request.label()}: needs {_plural(count, 'device')} of DeviceClass {request.alts[0].class_name}; "
        f"{len(candidates)} free match, but {competing} allocated together with it need some of the same "
        "devices "
        "and there are not enough for all" + _notes_suffix(call.view.notes)
    )


def _assign(groups: list[tuple[list[Device], int]], call: _Call) -> int | None:
    """Give every group ``count`` distinct devices of its candidates (bipartite b-matching by
    augmenting paths); the index of the first group that cannot be served, or None."""
    owner: dict[Device, int] = {}
    for index, (_, count) in enumerate(groups):
        for _ in range(count):
            if not _augment(index, groups, owner, set(), set(), call):
                return index
    return None


def _augment(
    group: int,
    groups: list[tuple[list[Device], int]],
    owner: dict[Device, int],
    seen_devices: set[Device],
    seen_groups: set[int],
    call: _Call,
) -> bool:
    """One more device for ``group``: a free candidate, or one whose holder can move to another."""
    seen_groups.add(group)
    candidates = groups[group][0]
    for device in candidates:  # a free device first: the cheap, common case
        call.tick()
        if device not in owner:
            owner[device] = group
            return True
    for device in candidates:
        call.tick()
        if device in seen_devices:
            continue
        seen_devices.add(device)
        holder = owner[device]
        if (
            holder != group
            and holder not in seen_groups
            and _augment(holder, groups, owner, seen_devices, seen_groups, call)
        ):
            owner[device] = group
            return True
    return False


def _search_failure(call: _Call, label: str) -> str:
    reasons = []
    for (ci, index), _count in sorted(call.constraint_rejects.items()):
        claim = call.claims[ci]
        constraint = next(c for c in claim.constraints if c.index == index)
        owner = f" of claim {claim.ref}" if len(call.claims) > 1 else ""
        reasons.append(f"{constraint.describe()}{owner} cannot be satisfied by the free devices")
    if call.counter_rejects:
        reasons.append(
            "not enough shared counters left on the partitionable devices (their counter sets are used up by "
            "allocated devices or by the other picks)"
        )
    if not reasons:
        reasons.append("no combination of the free devices satisfies all requests")
    return f"{label}: " + "; ".join(reasons) + _notes_suffix(call.view.notes)


# ------------------------------------------------------------------------------------------------
# Results


def _clone(value: object) -> object:
    if isinstance(value, dict):
        return {key: _clone(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clone(item) for item in value]
    return value


def _build_config(claim: _Claim, chosen: list[_Alt], per_request: bool = False) -> list[dict]:
    """Class configs once per class, naming the requests that use it (upstream's incubating
    allocator); with ``per_request``, once per request and without ``requests``, so applying to
    every request (upstream's stable allocator). Then the claim's configs that apply to a chosen
    request, with their ``requests`` list as written."""
    configs: list[dict] = []
    by_class: dict[str, list[dict]] = {}
    for alt in chosen if per_request else ():
        for config in (alt.device_class.get("spec") or {}).get("config") or []:
            entry = {"source": "FromClass"}
            entry.update((k, _clone(v)) for k, v in config.items() if k != "requests")
            configs.append(entry)
    for alt in chosen if not per_request else ():
        entries = by_class.get(alt.class_name)
        if entries is not None:
            for entry in entries:
                entry["requests"].append(alt.name)
            continue
        entries = []
        for config in (alt.device_class.get("spec") or {}).get("config") or []:
            entry = {"source": "FromClass", "requests": [alt.name]}
            entry.update((k, _clone(v)) for k, v in config.items() if k != "requests")
            entries.append(entry)
            configs.append(entry)
        by_class[alt.class_name] = entries
    names = {alt.request.name for alt in chosen} | {alt.name for alt in chosen}
    for config in claim.configs:
        wanted = config.get("requests") or []
        if wanted and names.isdisjoint(wanted):
            continue  # names only requests, or sub-requests, that were not allocated
        entry: dict = {"source": "FromClaim"}
        if wanted:
            entry["requests"] = list(wanted)
        entry.update((k, _clone(v)) for k, v in config.items() if k != "requests")
        configs.append(entry)
    return configs


def _stable_variant(features: DraFeatures) -> bool:
    """Whether kube-scheduler would run its "stable" allocator: none of the features only its
    incubating one has (consumable capacity, binding conditions) is on. The two write class configs
    differently, and kai writes what the one upstream would run writes."""
    return not (features.consumable_capacity or features.binding_conditions)


def _requirement_key(requirement: dict) -> tuple:
    return (requirement.get("key"), requirement.get("operator"), frozenset(requirement.get("values") or ()))


def _build_node_selector(picks: list[Device], pin: str | None = None) -> dict | None:
    """Where the allocation is usable, as upstream's createNodeSelector decides it.

    ``pin`` (the node allocated for, when a device ``bindsToNode``) or one node-local device pins the
    allocation to its node; otherwise the requirements of all device selectors (one term each) are
    ANDed into one term; ``allNodes`` devices add nothing.
    """
    if pin is not None:
        return node_selector_for_node(pin)
    for device in picks:
        if device.node_name is not None:
            return node_selector_for_node(device.node_name)
    merged: dict[str, list[dict]] = {"matchExpressions": [], "matchFields": []}
    seen: dict[str, set[tuple]] = {"matchExpressions": set(), "matchFields": set()}
    for device in picks:
        if device.node_selector is None:
            continue
        term = device.node_selector["nodeSelectorTerms"][0]
        for kind in ("matchFields", "matchExpressions"):
            for requirement in term.get(kind) or []:
                key = _requirement_key(requirement)
                if key not in seen[kind]:
                    seen[kind].add(key)
                    merged[kind].append(_clone(requirement))
    term = {kind: requirements for kind, requirements in merged.items() if requirements}
    return {"nodeSelectorTerms": [term]} if term else None


def _build_result(claim: _Claim, picks: list[tuple[_Alt, Device]], features: DraFeatures, node_name: str) -> dict:
    results = []
    chosen: dict[_Alt, None] = {}
    pin = False  # a device bindsToNode: the allocation is usable on this node only
    for alt, device in picks:
        chosen[alt] = None
        result = {
            "request": alt.name,
            "driver": device.id.driver,
            "pool": device.id.pool,
            "device": device.id.device,
        }
        if alt.admin:
            result["adminAccess"] = True
        if alt.tolerations:
            result["tolerations"] = _clone(alt.tolerations)
        if device.multi and features.consumable_capacity:
            used = consumption(alt.capacity, device) or {}
            names = status_names(device)
            result["shareID"] = str(uuid.uuid4())
            result["consumedCapacity"] = {names[key]: format_quantity(value) for key, value in used.items()}
        binding = device.binding
        if binding is not None and features.binding_conditions:
            if binding.conditions:
                result["bindingConditions"] = list(binding.conditions)
            if binding.failure_conditions:
                result["bindingFailureConditions"] = list(binding.failure_conditions)
            pin = pin or binding.binds_to_node
        results.append(result)
    devices: dict = {"results": results}
    configs = _build_config(claim, list(chosen), _stable_variant(features))
    if configs:
        devices["config"] = configs
    allocation: dict = {"devices": devices}
    selector = _build_node_selector([device for _, device in picks], node_name if pin else None)
    if selector is not None:
        allocation["nodeSelector"] = selector
    return allocation


# ------------------------------------------------------------------------------------------------
# Entry points


def _claims_label(claims: list[_Claim]) -> str:
    refs = ", ".join(claim.ref for claim in claims)
    return f"claim {refs}" if len(claims) == 1 else f"claims {refs}"


def _check_admin_access(claim: _Claim, namespaces: Mapping[str, dict] | None) -> None:
    admin = [alt for request in claim.requests for alt in request.alts if alt.admin]
    if not admin:
        return
    if namespaces is None:
        raise Unallocatable(
            f"{admin[0].label()}: adminAccess needs the namespace label {ADMIN_ACCESS_LABEL}=true, and the "
            "namespaces were not given to the allocator"
        )
    namespace = namespaces.get(claim.namespace) or {}
    labels = (namespace.get("metadata") or {}).get("labels") or {}
    if labels.get(ADMIN_ACCESS_LABEL) != "true":
        raise Unallocatable(
            f"{admin[0].label()}: adminAccess is only allowed in namespaces labelled "
            f"{ADMIN_ACCESS_LABEL}=true, "
            f"and namespace {claim.namespace or '<none>'} is not"
        )


def allocate(
    claims: list[dict],
    node: dict,
    inventory: DraInventory,
    in_use: set[DeviceId],
    *,
    max_device_checks: int = MAX_DEVICE_CHECKS,
    namespaces: Mapping[str, dict] | None = None,
    device_scores: Mapping[DeviceId, float] | None = None,
    excluded: Mapping[DeviceId, str] | None = None,
    consumed: Callable[[], Mapping[DeviceId, Mapping[str, Fraction]]] | None = None,
) -> list[dict]:
    """Allocate every (unallocated) claim in ``claims`` together on ``node``.

    Devices in ``in_use`` and devices picked for an earlier claim in the same call are not used
    (admin-access requests excepted). Returns one AllocationResult dict (resource.k8s.io/v1 shape:
    ``{"devices": {"results": [...], "config": [...]}, "nodeSelector": {...}}``) per claim, in order.
    Raises :class:`Unallocatable` with the reason when they do not fit on this node.

    A claim that already has ``status.allocation`` is returned as it is (a copy) when that allocation
    is usable on ``node``, and refused otherwise; its devices are kept away from the other claims.

    ``max_device_checks`` bounds the work of one call. ``namespaces`` (name -> Namespace object) lets
    ``adminAccess`` requests through in namespaces labelled ``resource.kubernetes.io/admin-access=true``;
    without it they are refused. ``device_scores`` (from the ``kai_rank_devices`` hook) makes devices
    with higher scores preferred; unscored devices count as 0, and ties use the default pack order.
    ``excluded`` (from the ``kai_filter_devices`` hook) maps devices that must not be picked to why
    (e.g. ``"plugin 'rdma': link down"``); a request left short names the first such reason.
    ``consumed`` gives, when called (only for nodes with shared devices), what the shared results of
    other allocations consume per device (:func:`kai_core.dra.capacity.shared_consumption`).
    """
    node_name = ((node or {}).get("metadata") or {}).get("name", "")
    prepared = [_prepared(claim, inventory) for claim in claims]
    extra: set[DeviceId] = set()
    for claim in prepared:
        if claim.existing is None:
            _check_admin_access(claim, namespaces)
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
            extra.update(devices_of(claim.existing, exclusive_only=True))
        except ValueError as err:
            raise Unallocatable(f"claim {claim.ref}: its status.allocation is malformed: {err}") from None

    fresh = [claim for claim in prepared if claim.existing is None]
    memo_key = None
    if len(prepared) == 1 and fresh and device_scores is None and not excluded:
        memo_key = _outcome_key(fresh[0], node, inventory, in_use, max_device_checks)
        if memo_key is not None:
            outcome = inventory.outcome_cache.get(memo_key)
            if outcome is not None:
                return [_replay(outcome, fresh[0], inventory.features, node_name)]
    call = _Call(fresh, node, inventory, in_use, extra, device_scores, max_device_checks, excluded, consumed)
    if call.requests:
        try:
            try:
                _check_requests(call)
                _check_at_most_32(call)
                _check_matching(call)
                found = call.solve()
            except _BudgetExhausted:
                raise Unallocatable(
                    f"{_claims_label(fresh)}: the search for devices was too large and was stopped after "
                    f"{max_device_checks} device checks; fewer or simpler requests would help"
                ) from None
            if not found:
                raise Unallocatable(_search_failure(call, _claims_label(fresh)))
        except Unallocatable as err:
            if memo_key is not None:
                inventory.outcome_cache[memo_key] = _Outcome(fresh[0].ref, err.reason, None)
            raise
        if memo_key is not None:
            inventory.outcome_cache[memo_key] = _Outcome(fresh[0].ref, None, [
                (_position(fresh[0], alt), device) for alt, device in call.picks])

    by_claim: list[list[tuple[_Alt, Device]]] = [[] for _ in fresh]
    for alt, device in call.picks:
        by_claim[call.claim_index[id(alt.request.claim)]].append((alt, device))
    allocations: list[dict] = []
    results = iter(by_claim)
    for claim in prepared:
        if claim.existing is not None:
            allocations.append(_clone(claim.existing))  # type: ignore[arg-type]
        else:
            allocations.append(_build_result(claim, next(results), inventory.features, node_name))
    return allocations


@dataclass(slots=True)
class _Outcome:
    """What allocating one claim of a given shape on a node gave: the reason it failed (naming
    ``ref``, the claim it was computed for) or the devices picked, by (request, alternative)."""

    ref: str
    reason: str | None
    picks: list[tuple[tuple[int, int], Device]] | None


def _outcome_key(claim: _Claim, node: dict, inventory: DraInventory, in_use: set[DeviceId],
                 budget: int) -> tuple | None:
    """The key under which the outcome of allocating ``claim`` on ``node`` is kept for the cycle:
    the claim's shape, the node, and which of the node's devices are in use. Pods created from one
    template have claims of one shape, and most nodes do not change between two of them, so the
    search runs once per node and shape instead of once per (pod, node).

    None when the outcome depends on more than that: an admin-access request (the namespace), or
    devices consuming shared counters (usage on other nodes of the pool)."""
    if claim.shape is None:
        return None
    name = ((node or {}).get("metadata") or {}).get("name", "")
    ids = inventory.outcome_nodes.get(name, False)
    if ids is False:
        devices = inventory.view(node).devices
        ids = inventory.outcome_nodes[name] = (
            None if any(d.consumes or d.multi for d in devices) else tuple(d.id for d in devices))
    if ids is None:
        return None
    return (claim.shape, name, budget, tuple(map(in_use.__contains__, ids)))


def _position(claim: _Claim, alt: _Alt) -> tuple[int, int]:
    request = alt.request
    return claim.requests.index(request), request.alts.index(alt)


def _replay(outcome: _Outcome, claim: _Claim, features: DraFeatures, node_name: str) -> dict:
    """The kept outcome for another claim of the same shape: its reason naming this claim, or an
    allocation of the same devices built from this claim (its own request names and configs)."""
    if outcome.picks is None:
        assert outcome.reason is not None
        reason = outcome.reason if outcome.ref == claim.ref else outcome.reason.replace(outcome.ref, claim.ref)
        raise Unallocatable(reason)
    picks = [(claim.requests[ri].alts[ai], device) for (ri, ai), device in outcome.picks]
    return _build_result(claim, picks, features, node_name)


def _check_at_most_32(call: _Call) -> None:
    for claim in call.claims:
        if not claim.may_exceed_limit:
            continue
        least = 0
        for request in claim.requests:
            sizes = [
                len(call.options_for(a).candidates) if a.all_mode else a.count
                for a in request.alts
                if call.options_for(a).feasible(a)
            ]
            least += min(sizes) if sizes else 0
        if least > MAX_DEVICES_PER_CLAIM:
            raise Unallocatable(
                f"claim {claim.ref}: needs at least {least} devices on the node, more than the "
                f"{MAX_DEVICES_PER_CLAIM} one claim can hold"
            )


def candidate_devices(claims: list[dict], nodes: list[dict], inventory: DraInventory) -> list[Device]:
    """Every device that some request of ``claims`` could use on one of ``nodes`` (selectors only;
    use and taints are not looked at), in inventory order without repeats.

    This is the list handed to the ``kai_rank_devices`` hook once per pod. Claims that cannot be
    prepared (missing class, bad selector) contribute nothing: :func:`allocate` reports them.
    """
    alts: list[_Alt] = []
    for claim in claims:
        try:
            prepared = _prepared(claim, inventory)
        except Unallocatable:
            continue
        alts.extend(alt for request in prepared.requests for alt in request.alts)
    seen: dict[Device, None] = {}
    for node in nodes:
        view = inventory.view(node)
        name = ((node or {}).get("metadata") or {}).get("name", "")
        for alt in alts:
            seen.update(dict.fromkeys(_matching(alt, view, name, inventory).devices))
    return list(seen)


@dataclass(slots=True, eq=False)
class RequestDevices:
    """One request (or ``firstAvailable`` sub-request) of a claim, with the devices its selectors
    match on the candidate nodes: what the ``kai_filter_devices`` hook is handed."""

    #: the ResourceClaim object
    claim: dict
    #: the name results carry: ``request`` or ``request/subrequest``
    request: str
    #: the DeviceClass it names
    device_class: str
    devices: list[Device]


def request_candidates(claims: list[dict], nodes: list[dict], inventory: DraInventory) -> list[RequestDevices]:
    """For every request (and ``firstAvailable`` sub-request) of ``claims``, the devices its
    selectors match on ``nodes`` (use and taints are not looked at), each device once, in node
    order. Claims that cannot be prepared contribute nothing: :func:`allocate` reports them."""
    out: list[RequestDevices] = []
    views = [(inventory.view(node), ((node or {}).get("metadata") or {}).get("name", "")) for node in nodes]
    for claim in claims:
        try:
            prepared = _prepared(claim, inventory)
        except Unallocatable:
            continue
        for request in prepared.requests:
            for alt in request.alts:
                seen: dict[Device, None] = {}
                for view, name in views:
                    seen.update(dict.fromkeys(_matching(alt, view, name, inventory).devices))
                out.append(RequestDevices(claim, alt.name, alt.class_name, list(seen)))
    return out


def class_drivers(class_name: str, inventory: DraInventory) -> frozenset[str]:
    """The drivers of the devices (anywhere in the inventory) that DeviceClass ``class_name``'s
    selectors select; empty for a missing class or one whose selectors do not compile. Kept for the
    inventory's lifetime (one cycle)."""
    key = ("class-drivers", class_name)
    hit = inventory.match_cache.get(key)
    if hit is not None:
        assert isinstance(hit, frozenset)
        return hit
    device_class = inventory.device_class(class_name)
    spec = (device_class or {}).get("spec") if isinstance(device_class, dict) else None
    drivers: set[str] = set()
    if isinstance(spec, dict):
        try:
            selectors = _compile_selectors(spec.get("selectors"), f"DeviceClass {class_name}",
                                           f"DeviceClass {class_name}")
        except Unallocatable:
            selectors = None
        if selectors is not None:
            for pool in inventory.pools.values():
                if pool.problem is not None or pool.key[0] in drivers:
                    continue
                if any(_match_selectors(selectors, device) is True
                       for info in pool.slices for device in info.devices):
                    drivers.add(pool.key[0])
    found = inventory.match_cache[key] = frozenset(drivers)
    return found

