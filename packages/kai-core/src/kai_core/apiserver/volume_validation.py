"""The API server's checks of PersistentVolumes, PersistentVolumeClaims and StorageClasses, as far
as the scheduler and the binder rely on them: access modes, the storage a claim requests and a
volume offers, a volume's source and node affinity, a class's provisioner, binding mode and
allowed topologies, and what may change on an update (a claim's spec is fixed once created except
its requests and, while unbound, ``volumeName``; a class's provisioner, parameters, reclaim policy
and binding mode are fixed).

Messages follow the API server's wording, each problem with its field path; mount options, reclaim
policies and the sources' own fields are not checked.
"""

from __future__ import annotations

from kai_core.api.quantity import QuantityError, parse_quantity
from kai_core.apiserver.validation import _fail, _r, node_selector_problems

ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")
VOLUME_MODES = ("Filesystem", "Block")
BINDING_MODES = ("Immediate", "WaitForFirstConsumer")
#: PersistentVolume spec fields that are not a volume source
_PV_NON_SOURCE = {"accessModes", "capacity", "claimRef", "persistentVolumeReclaimPolicy", "storageClassName",
                  "mountOptions", "volumeMode", "nodeAffinity", "volumeAttributesClassName"}


def _spec(obj: dict) -> dict:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _access_mode_problems(spec: dict, required: str) -> list[str]:
    modes = spec.get("accessModes")
    if not isinstance(modes, list) or not modes:
        return [f"spec.accessModes: Required value: {required}"]
    problems = [f"spec.accessModes: Unsupported value: {_r(m)}: supported values: "
                + ", ".join(f'"{a}"' for a in ACCESS_MODES) for m in modes if m not in ACCESS_MODES]
    if "ReadWriteOncePod" in modes and len(modes) > 1:
        problems.append("spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes")
    return problems


def _storage_problems(amounts, path: str) -> list[str]:
    amount = amounts.get("storage") if isinstance(amounts, dict) else None
    if amount is None:
        return [f"{path}: Required value"]
    try:
        if parse_quantity(amount) <= 0:
            return [f"{path}: Invalid value: {_r(amount)}: must be greater than zero"]
    except QuantityError:
        return [f"{path}: Invalid value: {_r(amount)}: quantities must match the regular expression "
                "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"]
    return []


def _volume_mode_problems(spec: dict) -> list[str]:
    mode = spec.get("volumeMode")
    if mode is None or mode in VOLUME_MODES:
        return []
    return [f"spec.volumeMode: Unsupported value: {_r(mode)}: supported values: \"Block\", \"Filesystem\""]


def validate_persistent_volume(obj: dict) -> None:
    spec = _spec(obj)
    problems = _access_mode_problems(spec, "must specify at least 1 access mode")
    problems += _storage_problems(spec.get("capacity"), "spec.capacity[storage]")
    problems += _volume_mode_problems(spec)
    sources = [k for k in spec if k not in _PV_NON_SOURCE]
    if not sources:
        problems.append("spec: Required value: must specify a volume type")
    elif len(sources) > 1:
        problems.append(f"spec.{sources[1]}: Forbidden: may not specify more than 1 volume type")
    affinity = spec.get("nodeAffinity")
    if affinity is not None:
        required = affinity.get("required") if isinstance(affinity, dict) else None
        if required is None:
            problems.append("spec.nodeAffinity.required: Required value: must specify required node constraints")
        else:
            problems += node_selector_problems(required, "spec.nodeAffinity.required")
    _fail(obj, problems)


def validate_persistent_volume_claim(obj: dict) -> None:
    spec = _spec(obj)
    problems = _access_mode_problems(spec, "at least 1 access mode is required")
    resources = spec.get("resources")
    problems += _storage_problems(resources.get("requests") if isinstance(resources, dict) else None,
                                  "spec.resources[storage]")
    problems += _volume_mode_problems(spec)
    _fail(obj, problems)


def validate_persistent_volume_claim_update(old: dict, new: dict) -> None:
    """A claim's spec is immutable but for its storage request, its attributes class and binding
    it (``volumeName`` set while it was empty)."""
    old_spec, new_spec = dict(_spec(old)), dict(_spec(new))
    for spec in (old_spec, new_spec):
        spec.pop("resources", None)
        spec.pop("volumeAttributesClassName", None)
    if not old_spec.get("volumeName"):
        old_spec.pop("volumeName", None)
        new_spec.pop("volumeName", None)
    if old_spec != new_spec:
        _fail(new, ["spec: Forbidden: spec is immutable after creation except resources.requests and "
                    "volumeAttributesClassName for bound claims"])


def validate_storage_class(obj: dict) -> None:
    problems = []
    if not obj.get("provisioner"):
        problems.append("provisioner: Required value")
    mode = obj.get("volumeBindingMode")
    if mode is not None and mode not in BINDING_MODES:
        problems.append(f"volumeBindingMode: Unsupported value: {_r(mode)}: supported values: "
                        "\"Immediate\", \"WaitForFirstConsumer\"")
    terms = obj.get("allowedTopologies")
    for i, term in enumerate(terms if isinstance(terms, list) else []):
        exprs = term.get("matchLabelExpressions") if isinstance(term, dict) else None
        if not isinstance(exprs, list) or not exprs:
            problems.append(f"allowedTopologies[{i}].matchLabelExpressions: Required value: "
                            "must have at least one label requirement")
            continue
        for j, expr in enumerate(exprs):
            where = f"allowedTopologies[{i}].matchLabelExpressions[{j}]"
            if not isinstance(expr, dict) or not expr.get("key"):
                problems.append(f"{where}.key: Required value")
            elif not isinstance(expr.get("values"), list) or not expr["values"]:
                problems.append(f"{where}.values: Required value: must specify as least one value")
    _fail(obj, problems)


def validate_storage_class_update(old: dict, new: dict) -> None:
    problems = [f"{field}: Forbidden: updates to {field} are forbidden."
                for field in ("parameters", "provisioner", "reclaimPolicy", "volumeBindingMode")
                if old.get(field) != new.get(field)]
    _fail(new, problems)


VOLUME_VALIDATORS = {
    ("", "PersistentVolume"): validate_persistent_volume,
    ("", "PersistentVolumeClaim"): validate_persistent_volume_claim,
    ("storage.k8s.io", "StorageClass"): validate_storage_class,
}
VOLUME_UPDATE_VALIDATORS = {
    ("", "PersistentVolumeClaim"): validate_persistent_volume_claim_update,
    ("storage.k8s.io", "StorageClass"): validate_storage_class_update,
}
