"""API defaulting, as the API server applies it on every write.

Only what a scheduler or a user reading objects back would notice: pod scheduling fields and
phase, container requests defaulted from limits, quantities returned as strings, and the DRA
request defaults (``allocationMode: ExactCount``, ``count: 1``).
"""

from __future__ import annotations

from kai_core.kinds import ResourceKind
from kai_core.quantity import QuantityError, format_quantity, parse_quantity

_QTY_FIELDS = ("requests", "limits")


def normalize_quantity(value):
    """A quantity as the API server returns it: always a string, numbers in canonical form."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    try:
        return format_quantity(parse_quantity(value))
    except QuantityError:
        return str(value)


def _normalize_map(m):
    if isinstance(m, dict):
        for k, v in list(m.items()):
            m[k] = normalize_quantity(v)


def _pod(obj: dict, restore: bool) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("securityContext", {})
    spec.setdefault("priority", 0)
    _normalize_map(spec.get("overhead"))
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            if not isinstance(c, dict):
                continue
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            image = str(c.get("image", ""))
            tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
            c.setdefault("imagePullPolicy", "IfNotPresent" if tagged and not image.endswith(":latest") else "Always")
            res = c.get("resources")
            if isinstance(res, dict):
                for f in _QTY_FIELDS:
                    _normalize_map(res.get(f))
                limits = res.get("limits") or {}
                if limits:
                    requests = res.setdefault("requests", {})
                    for k, v in limits.items():
                        requests.setdefault(k, v)
    status = obj.setdefault("status", {})
    if isinstance(status, dict):
        status.setdefault("phase", "Pending")


def _node(obj: dict) -> None:
    status = obj.get("status")
    if isinstance(status, dict):
        _normalize_map(status.get("capacity"))
        _normalize_map(status.get("allocatable"))


def _device_request(req: dict) -> None:
    exactly = req.get("exactly")
    for r in [exactly] if isinstance(exactly, dict) else []:
        r.setdefault("allocationMode", "ExactCount")
        if r["allocationMode"] == "ExactCount":
            r.setdefault("count", 1)
    for sub in req.get("firstAvailable") or []:
        if isinstance(sub, dict):
            sub.setdefault("allocationMode", "ExactCount")
            if sub["allocationMode"] == "ExactCount":
                sub.setdefault("count", 1)


def _claim_spec(spec) -> None:
    if not isinstance(spec, dict):
        return
    devices = spec.get("devices")
    if isinstance(devices, dict):
        for req in devices.get("requests") or []:
            if isinstance(req, dict):
                _device_request(req)


def apply(kind: ResourceKind, obj: dict, restore: bool) -> dict:
    """Fill in what the API server would; returns ``obj`` (changed in place)."""
    if kind.group == "":
        if kind.kind == "Pod":
            _pod(obj, restore)
        elif kind.kind == "Node":
            _node(obj)
    elif kind.group == "resource.k8s.io":
        if kind.kind == "ResourceClaim":
            _claim_spec(obj.get("spec"))
        elif kind.kind == "ResourceClaimTemplate":
            _claim_spec((obj.get("spec") or {}).get("spec"))
    return obj
