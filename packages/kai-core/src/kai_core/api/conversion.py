"""Conversions between ``resource.k8s.io`` versions, in both directions, in one place.

``v1beta2`` has ``v1``'s shape. ``v1beta1`` puts a request's device fields on the request itself
(``v1`` wraps them in ``exactly``), wraps a slice's device fields in ``basic``, and has non-pointer
``nodeName``/``allNodes`` (empty means unset). The embedded API server stores ``v1`` only and
converts older objects on input (:data:`TO_V1`); the Kubernetes client talks to a 1.32/1.33 server
at the version it serves, converting ``v1`` down on writes (:data:`FROM_V1`) and up on reads.
Converters take a private copy and may change it in place; each returns the converted object.
"""

from __future__ import annotations

from collections.abc import Callable

Converter = Callable[[dict], dict]

# resource.k8s.io v1beta1 / v1beta2 -> v1. v1beta2 already has the v1 shape. v1beta1 puts a
# request's device fields on the request itself (v1 wraps them in ``exactly``), wraps a slice's
# device fields in ``basic``, and has non-pointer ``nodeName``/``allNodes`` (empty means unset).
# The store keeps v1 only; converters get a private copy and may change it in place.

_EXACTLY_FIELDS = (
    "deviceClassName",
    "selectors",
    "allocationMode",
    "count",
    "adminAccess",
    "tolerations",
    "capacity",
)


def _same_shape(obj: dict) -> dict:
    return obj




def _request_from_v1beta1(req):
    if not isinstance(req, dict) or "exactly" in req:
        return req
    out = {k: v for k, v in req.items() if k not in _EXACTLY_FIELDS}
    if req.get("firstAvailable"):
        return out  # the device fields are on the subrequests, in the same shape as v1
    out["exactly"] = {k: req[k] for k in _EXACTLY_FIELDS if k in req}
    return out


def _claim_spec_from_v1beta1(spec) -> None:
    devices = spec.get("devices") if isinstance(spec, dict) else None
    if isinstance(devices, dict) and isinstance(devices.get("requests"), list):
        devices["requests"] = [_request_from_v1beta1(r) for r in devices["requests"]]


def _claim_from_v1beta1(obj: dict) -> dict:
    _claim_spec_from_v1beta1(obj.get("spec"))
    return obj


def _claim_template_from_v1beta1(obj: dict) -> dict:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        _claim_spec_from_v1beta1(spec.get("spec"))
    return obj


def _slice_from_v1beta1(obj: dict) -> dict:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return obj
    if spec.get("nodeName") == "":
        del spec["nodeName"]
    if spec.get("allNodes") is False:
        del spec["allNodes"]
    devices = spec.get("devices")
    if isinstance(devices, list):
        flat = []
        for dev in devices:
            if isinstance(dev, dict) and isinstance(dev.get("basic"), dict):
                dev = {**{k: v for k, v in dev.items() if k != "basic"}, **dev["basic"]}
                if dev.get("nodeName") == "":
                    del dev["nodeName"]
                if dev.get("allNodes") is False:
                    del dev["allNodes"]
            flat.append(dev)
        spec["devices"] = flat
    return obj








def _request_to_v1beta1(req):
    if not isinstance(req, dict) or not isinstance(req.get("exactly"), dict):
        return req
    out = {k: v for k, v in req.items() if k != "exactly"}
    out.update(req["exactly"])
    return out


def _claim_spec_to_v1beta1(spec) -> None:
    devices = spec.get("devices") if isinstance(spec, dict) else None
    if isinstance(devices, dict) and isinstance(devices.get("requests"), list):
        devices["requests"] = [_request_to_v1beta1(r) for r in devices["requests"]]


def _claim_to_v1beta1(obj: dict) -> dict:
    _claim_spec_to_v1beta1(obj.get("spec"))
    return obj


def _claim_template_to_v1beta1(obj: dict) -> dict:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        _claim_spec_to_v1beta1(spec.get("spec"))
    return obj


def _slice_to_v1beta1(obj: dict) -> dict:
    spec = obj.get("spec")
    devices = spec.get("devices") if isinstance(spec, dict) else None
    if isinstance(devices, list):
        spec["devices"] = [
            {"name": d.get("name"), "basic": {k: v for k, v in d.items() if k != "name"}}
            if isinstance(d, dict) and "basic" not in d else d
            for d in devices
        ]
    return obj


#: v1 -> served version, per version and kind
FROM_V1: dict[str, dict[str, Callable[[dict], dict]]] = {
    "v1beta1": {"DeviceClass": _same_shape, "ResourceClaim": _claim_to_v1beta1,
                "ResourceClaimTemplate": _claim_template_to_v1beta1, "ResourceSlice": _slice_to_v1beta1},
    "v1beta2": {"DeviceClass": _same_shape, "ResourceClaim": _same_shape,
                "ResourceClaimTemplate": _same_shape, "ResourceSlice": _same_shape},
}




#: served version -> converter into v1, per version and kind
TO_V1: dict[str, dict[str, Converter]] = {
    "v1beta1": {"DeviceClass": _same_shape, "ResourceClaim": _claim_from_v1beta1,
                "ResourceClaimTemplate": _claim_template_from_v1beta1, "ResourceSlice": _slice_from_v1beta1},
    "v1beta2": {"DeviceClass": _same_shape, "ResourceClaim": _same_shape,
                "ResourceClaimTemplate": _same_shape, "ResourceSlice": _same_shape},
}


def to_v1(kind: str) -> dict[str, Converter]:
    """Older version -> converter into ``v1``, for the DRA kind ``kind`` (``ResourceClaim``...)."""
    return {version: by_kind[kind] for version, by_kind in TO_V1.items()}
