"""API defaulting, as the API server applies it on every write.

Only what a scheduler or a user reading objects back would notice: pod scheduling fields, phase
and QoS class, container requests defaulted from limits, namespaces' phase, quantities returned
as the API server returns them (canonical strings: ``0.5`` -> ``"500m"``, ``1024Mi`` -> ``"1Gi"``),
and the DRA request defaults (``allocationMode: ExactCount``, ``count: 1``).

Defaulting never refuses anything: a value it cannot make sense of (a quantity that does not
parse, a list where a mapping belongs) is left as it is for validation to report with the
object's name.
"""

from __future__ import annotations

import functools

from kai_core.api.kinds import ResourceKind
from kai_core.api.quantity import QuantityError, format_quantity, parse_quantity

_QTY_FIELDS = ("requests", "limits")
_BINARY_SUFFIXES = ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_QOS_RESOURCES = ("cpu", "memory")


def normalize_quantity(value):
    """A quantity as the API server returns it: a canonical string.

    Numbers become strings (``2`` -> ``"2"``, ``0.5`` -> ``"500m"``); strings are canonicalised,
    keeping binary suffixes binary (``"1024Mi"`` -> ``"1Gi"``, ``"1000m"`` -> ``"1"``). Anything that
    is not a quantity is returned unchanged.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return value
    return _canonical(type(value), value)


@functools.lru_cache(maxsize=4096)
def _canonical(_type: type, value):
    # every write re-defaults its object, and the same few quantities recur: parse each once
    try:
        amount = parse_quantity(value)
    except QuantityError:
        return value
    binary = isinstance(value, str) and value.endswith(_BINARY_SUFFIXES)
    return format_quantity(amount, binary=binary)


@functools.lru_cache(maxsize=4096)
def _amount(_type: type, value):
    return parse_quantity(value)


def _normalize_map(m) -> None:
    if isinstance(m, dict):
        for k, v in list(m.items()):
            m[k] = normalize_quantity(v)


def _normalize_resources(res) -> None:
    """Canonical requests/limits, and requests defaulted from limits where a request is missing."""
    if not isinstance(res, dict):
        return
    for f in _QTY_FIELDS:
        _normalize_map(res.get(f))
    limits = res.get("limits")
    if isinstance(limits, dict) and limits:
        requests = res.get("requests")
        if requests is None:
            requests = res["requests"] = {}
        if isinstance(requests, dict):
            for k, v in limits.items():
                requests.setdefault(k, v)


def _same(a, b) -> bool:
    try:
        return _amount(type(a), a) == _amount(type(b), b)
    except (QuantityError, TypeError):  # TypeError: an unhashable value, which is no quantity
        return a == b


def qos_class(spec: dict) -> str:
    """The pod's QoS class as the API server computes it: Guaranteed, Burstable or BestEffort.

    Pod-level ``spec.resources``, when present, decide alone; otherwise every container and init
    container counts. Only cpu and memory matter.
    """
    pod_level = spec.get("resources")
    if isinstance(pod_level, dict) and (pod_level.get("requests") or pod_level.get("limits")):
        groups = [pod_level]
    else:
        groups = [
            c.get("resources") or {}
            for key in ("initContainers", "containers")
            for c in spec.get(key) or []
            if isinstance(c, dict)
        ]
    any_set = False
    guaranteed = True
    for res in groups:
        if not isinstance(res, dict):
            continue
        requests = {k: v for k, v in (res.get("requests") or {}).items() if k in _QOS_RESOURCES}
        limits = {k: v for k, v in (res.get("limits") or {}).items() if k in _QOS_RESOURCES}
        if requests or limits:
            any_set = True
        if set(limits) != set(_QOS_RESOURCES):
            guaranteed = False
        elif any(not _same(requests.get(k, limits[k]), limits[k]) for k in _QOS_RESOURCES):
            guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _pod(obj: dict) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("securityContext", {})  # spec.priority is the Priority admission plugin's (priority.py)
    _normalize_map(spec.get("overhead"))
    _normalize_resources(spec.get("resources"))
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            if not isinstance(c, dict):
                continue
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            image = str(c.get("image", ""))
            tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
            c.setdefault(
                "imagePullPolicy", "IfNotPresent" if tagged and not image.endswith(":latest") else "Always"
            )
            _normalize_resources(c.get("resources"))
    status = obj.get("status")
    if status is None:
        status = obj["status"] = {}
    if isinstance(status, dict):
        status.setdefault("phase", "Pending")
        status.setdefault("qosClass", qos_class(spec))


def _namespace(obj: dict) -> None:
    spec = obj.get("spec")
    if spec is None:
        spec = obj["spec"] = {}
    if isinstance(spec, dict):
        spec.setdefault("finalizers", ["kubernetes"])
    status = obj.get("status")
    if status is None:
        status = obj["status"] = {}
    if isinstance(status, dict):
        status.setdefault("phase", "Active")


def _node(obj: dict) -> None:
    status = obj.get("status")
    if isinstance(status, dict):
        _normalize_map(status.get("capacity"))
        _normalize_map(status.get("allocatable"))


def _counters(sets) -> None:
    for cs in sets if isinstance(sets, list) else []:
        counters = cs.get("counters") if isinstance(cs, dict) else None
        for c in counters.values() if isinstance(counters, dict) else []:
            if isinstance(c, dict) and "value" in c:
                c["value"] = normalize_quantity(c["value"])


def _resource_slice(obj: dict) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    _counters(spec.get("sharedCounters"))
    for dev in spec.get("devices") if isinstance(spec.get("devices"), list) else []:
        if not isinstance(dev, dict):
            continue
        capacity = dev.get("capacity")
        for cap in capacity.values() if isinstance(capacity, dict) else []:
            if isinstance(cap, dict) and "value" in cap:
                cap["value"] = normalize_quantity(cap["value"])
        _counters(dev.get("consumesCounters"))


def _exact_request(r: dict) -> None:
    if r.get("count") == 0 and type(r.get("count")) is int:
        del r["count"]  # 0 is Go's unset int64: defaulted like a missing count
    r.setdefault("allocationMode", "ExactCount")
    if r["allocationMode"] == "ExactCount":
        r.setdefault("count", 1)
    capacity = r.get("capacity")
    if isinstance(capacity, dict):
        _normalize_map(capacity.get("requests"))


def _device_request(req: dict) -> None:
    exactly = req.get("exactly")
    if isinstance(exactly, dict):
        _exact_request(exactly)
    for sub in req.get("firstAvailable") if isinstance(req.get("firstAvailable"), list) else []:
        if isinstance(sub, dict):
            _exact_request(sub)


def _claim_spec(spec) -> None:
    if not isinstance(spec, dict):
        return
    devices = spec.get("devices")
    if isinstance(devices, dict) and isinstance(devices.get("requests"), list):
        for req in devices["requests"]:
            if isinstance(req, dict):
                _device_request(req)


def apply(kind: ResourceKind, obj: dict, restore: bool = False) -> dict:
    """Fill in what the API server would; returns ``obj`` (changed in place).

    ``restore`` is accepted for symmetry with :func:`prepare_for_create`; defaults are the same for
    objects loaded from manifests and for objects created through the API.
    """
    if kind.group == "":
        if kind.kind == "Pod":
            _pod(obj)
        elif kind.kind == "Node":
            _node(obj)
        elif kind.kind == "Namespace":
            _namespace(obj)
    elif kind.group == "resource.k8s.io":
        if kind.kind == "ResourceClaim":
            _claim_spec(obj.get("spec"))
        elif kind.kind == "ResourceClaimTemplate":
            spec = obj.get("spec")
            _claim_spec(spec.get("spec") if isinstance(spec, dict) else None)
        elif kind.kind == "ResourceSlice":
            _resource_slice(obj)
    return obj


def prepare_for_create(kind: ResourceKind, obj: dict, is_custom: bool) -> dict:
    """What the API server resets when an object is created through the API (not restored).

    A status is the business of controllers: a pod starts ``Pending`` whatever status it was sent
    with, a namespace ``Active``, a ResourceClaim and a custom resource with a status subresource
    without one. Nodes keep the status they are created with, as on a real cluster. Returns ``obj``.
    """
    if kind.group == "" and kind.kind in ("Pod", "Namespace"):
        obj.pop("status", None)  # defaulting fills in the initial phase (and the pod's QoS class)
    elif kind.has_status and (
        is_custom or (kind.group == "resource.k8s.io" and kind.kind == "ResourceClaim")
    ):
        obj.pop("status", None)
    return obj
