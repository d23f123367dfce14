"""Validation of built-in kinds, as the API server does it on create and update.

Covers what users get wrong and what the scheduler relies on: object names and metadata (labels,
annotations, finalizers, ownerReferences), pods' containers, resources and claims, quantities,
DRA requests, and CEL selectors, which are compiled on write so a broken expression is refused at
once, naming the object and the expression. Updates are checked too: a pod's spec (node
included: binding is the only way to set it), a claim's spec and a claim's allocation cannot be
changed once set, as on a real cluster.

Every check raises :class:`kai_core.api.errors.Invalid` whose message starts with the object's kind
and name and lists each problem with its field path.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from fractions import Fraction

from kai_core.api.errors import Invalid
from kai_core.api.kinds import ResourceKind
from kai_core.api.quantity import QuantityError, parse_quantity

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_NAME_KINDS = {"Namespace"}
_MAX_ANNOTATIONS_BYTES = 256 * 1024
_NATIVE_PREFIX = "kubernetes.io/"


def validate_name(kind: ResourceKind, name) -> None:
    """Raise Invalid unless ``name`` is a valid ``metadata.name`` for ``kind``."""
    if not isinstance(name, str):
        raise Invalid(f"{kind.kind}: metadata.name must be a string, got {name!r}")
    if kind.kind in _LABEL_NAME_KINDS:
        ok = len(name) <= 63 and _DNS_LABEL.fullmatch(name)
        rule = "a lowercase RFC 1123 label (at most 63 characters)"
    else:
        ok = len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name)
        rule = "a lowercase RFC 1123 subdomain (at most 253 characters)"
    if not ok:
        raise Invalid(f'{kind.kind} "{name}" is invalid: metadata.name must be {rule}')


def _where(obj: dict) -> str:
    md = obj.get("metadata")
    md = md if isinstance(md, dict) else {}
    ns = md.get("namespace")
    name = md.get("name") or md.get("generateName") or "<unnamed>"
    return f"{obj.get('kind')} {ns}/{name}" if ns else f"{obj.get('kind')} {name}"


def _fail(obj: dict, problems: list[str]) -> None:
    if problems:
        raise Invalid(f"{_where(obj)} is invalid: " + "; ".join(problems))


def _qualified_name_problem(value, what: str) -> str | None:
    """Why ``value`` is not a qualified name (``[prefix/]name``, as label keys are), or None."""
    if not isinstance(value, str) or not value:
        return f"{what} {value!r} must be a non-empty string"
    prefix, slash, name = value.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return f"{what} {value!r}: the prefix must be a lowercase DNS subdomain"
    if len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        return (
            f"{what} {value!r}: the name part must be at most 63 characters of alphanumerics, '-', '_' "
            "or '.', starting and ending with an alphanumeric"
        )
    return None


def _label_value_problem(key: str, value) -> str | None:
    if not isinstance(value, str):
        return f"metadata.labels[{key!r}]: value {value!r} must be a string (quote it in YAML)"
    if value and (len(value) > 63 or not _QUALIFIED_NAME.fullmatch(value)):
        return (
            f"metadata.labels[{key!r}]: value {value!r} must be at most 63 characters of alphanumerics, "
            "'-', '_' or '.', starting and ending with an alphanumeric"
        )
    return None


def metadata_problems(kind: ResourceKind, obj: dict) -> list[str]:
    """Problems with an object's labels, annotations, finalizers, ownerReferences and generateName."""
    md = obj.get("metadata")
    if not isinstance(md, dict):
        return ["metadata: must be a mapping"]
    problems: list[str] = []
    labels = md.get("labels")
    if labels is not None:
        if not isinstance(labels, dict):
            problems.append("metadata.labels: must be a mapping of strings to strings")
        else:
            for k, v in labels.items():
                p = _qualified_name_problem(k, "metadata.labels: key") or _label_value_problem(k, v)
                if p:
                    problems.append(p)
    annotations = md.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict):
            problems.append("metadata.annotations: must be a mapping of strings to strings")
        else:
            size = 0
            for k, v in annotations.items():
                p = _qualified_name_problem(k, "metadata.annotations: key")
                if p:
                    problems.append(p)
                elif not isinstance(v, str):
                    problems.append(f"metadata.annotations[{k!r}]: value must be a string, got {v!r}")
                else:
                    size += len(k) + len(v.encode())
            if size > _MAX_ANNOTATIONS_BYTES:
                problems.append(
                    f"metadata.annotations: may not be larger than {_MAX_ANNOTATIONS_BYTES} bytes"
                )
    finalizers = md.get("finalizers")
    if finalizers is not None:
        if not isinstance(finalizers, list):
            problems.append("metadata.finalizers: must be a list of strings")
        else:
            for i, f in enumerate(finalizers):
                p = _qualified_name_problem(f, f"metadata.finalizers[{i}]:")
                if p:
                    problems.append(p)
    owners = md.get("ownerReferences")
    if owners is not None:
        if not isinstance(owners, list):
            problems.append("metadata.ownerReferences: must be a list")
        else:
            controllers = 0
            for i, o in enumerate(owners):
                if not isinstance(o, dict):
                    problems.append(f"metadata.ownerReferences[{i}]: must be a mapping")
                    continue
                for f in ("apiVersion", "kind", "name", "uid"):
                    if not isinstance(o.get(f), str) or not o.get(f):
                        problems.append(f"metadata.ownerReferences[{i}].{f}: required")
                controllers += o.get("controller") is True
            if controllers > 1:
                problems.append(
                    "metadata.ownerReferences: only one reference can have controller set to true"
                )
    gen = md.get("generateName")
    if gen is not None and not isinstance(gen, str):
        problems.append(f"metadata.generateName: must be a string, got {gen!r}")
    return problems


def validate_metadata(kind: ResourceKind, obj: dict) -> None:
    """Raise Invalid for bad labels, annotations, finalizers or ownerReferences (every kind)."""
    _fail(obj, metadata_problems(kind, obj))


# ---------------------------------------------------------------------------------------------
# Pods


def _is_native(resource: str) -> bool:
    return "/" not in resource or _NATIVE_PREFIX in resource


def _quantity_problems(m, path: str) -> tuple[list[str], dict]:
    """Parse a map of quantities; returns (problems, parsed values of the good ones)."""
    if m is None:
        return [], {}
    if not isinstance(m, dict):
        return [f"{path}: must be a mapping of resource names to quantities"], {}
    problems, parsed = [], {}
    for k, v in m.items():
        try:
            q = _parse(v)
        except QuantityError as exc:
            problems.append(f"{path}[{k!r}]: {exc}")
            continue
        if q < 0:
            problems.append(f"{path}[{k!r}]: {v!r} must be greater than or equal to 0")
            continue
        parsed[k] = q
    return problems, parsed


@functools.lru_cache(maxsize=4096)
def _parse_hashable(_type: type, value) -> Fraction:
    return parse_quantity(value)


def _parse(value) -> Fraction:
    """parse_quantity, cached for the strings and numbers that recur on every write."""
    if isinstance(value, (str, int, float)):
        return _parse_hashable(type(value), value)
    return parse_quantity(value)


def _resources_problems(res, path: str) -> list[str]:
    if res is None:
        return []
    if not isinstance(res, dict):
        return [f"{path}: must be a mapping"]
    problems, requests = _quantity_problems(res.get("requests"), f"{path}.requests")
    more, limits = _quantity_problems(res.get("limits"), f"{path}.limits")
    problems += more
    for k, req in requests.items():
        lim = limits.get(k)
        if lim is not None and req > lim:
            problems.append(
                f"{path}.requests[{k!r}]: {res['requests'][k]!r} must be less than or equal to "
                f"the limit {res['limits'][k]!r}"
            )
        if not _is_native(k):
            if req.denominator != 1:
                problems.append(f"{path}.requests[{k!r}]: {res['requests'][k]!r} must be an integer")
            if lim is not None and lim != req:
                problems.append(
                    f"{path}.requests[{k!r}]: must be equal to the limit for the extended "
                    f"resource {k!r} (overcommit is not allowed)"
                )
    for k in limits:
        if not _is_native(k) and k not in requests:
            problems.append(f"{path}.requests[{k!r}]: required, equal to the limit")
    return problems


def validate_pod(obj: dict) -> None:
    problems: list[str] = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        _fail(obj, ["spec: required"])
        return
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        problems.append("spec.containers: at least one container is required")
    if spec.get("initContainers") is not None and not isinstance(spec.get("initContainers"), list):
        problems.append("spec.initContainers: must be a list")
    pod_claims: set[str] = set()
    claims = spec.get("resourceClaims")
    if claims is not None and not isinstance(claims, list):
        problems.append("spec.resourceClaims: must be a list")
        claims = []
    for i, rc in enumerate(claims or []):
        path = f"spec.resourceClaims[{i}]"
        if not isinstance(rc, dict) or not rc.get("name"):
            problems.append(f"{path}.name: required")
            continue
        if rc["name"] in pod_claims:
            problems.append(f"{path}.name: duplicate value {rc['name']!r}")
        pod_claims.add(rc["name"])
        if bool(rc.get("resourceClaimName")) == bool(rc.get("resourceClaimTemplateName")):
            problems.append(
                f"{path}: exactly one of resourceClaimName or resourceClaimTemplateName is required"
            )
    names: set[str] = set()
    for key in ("initContainers", "containers"):
        group = spec.get(key)
        for i, c in enumerate(group if isinstance(group, list) else []):
            path = f"spec.{key}[{i}]"
            if not isinstance(c, dict) or not c.get("name"):
                problems.append(f"{path}.name: required")
                continue
            if c["name"] in names:
                problems.append(f"{path}.name: duplicate value {c['name']!r}")
            names.add(c["name"])
            res = c.get("resources")
            problems += _resources_problems(res, f"{path}.resources")
            cclaims = res.get("claims") if isinstance(res, dict) else None
            for j, cc in enumerate(cclaims if isinstance(cclaims, list) else []):
                if not isinstance(cc, dict) or cc.get("name") not in pod_claims:
                    n = cc.get("name") if isinstance(cc, dict) else cc
                    problems.append(
                        f"{path}.resources.claims[{j}].name: {n!r} must be one of spec.resourceClaims' names"
                    )
    problems += _resources_problems(spec.get("resources"), "spec.resources")
    problems += _quantity_problems(spec.get("overhead"), "spec.overhead")[0]
    _fail(obj, problems)


# Fields of a pod's spec that an update may change (the rest is fixed once the pod exists).
_POD_MUTABLE = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates")


def _pod_spec_fixed_part(spec) -> object:
    if not isinstance(spec, dict):
        return spec
    out = {k: v for k, v in spec.items() if k not in _POD_MUTABLE}
    for key in ("initContainers", "containers"):
        if isinstance(out.get(key), list):
            out[key] = [
                {k: v for k, v in c.items() if k != "image"} if isinstance(c, dict) else c for c in out[key]
            ]
    return out


def validate_pod_update(old: dict, new: dict) -> None:
    old_spec, new_spec = old.get("spec"), new.get("spec")
    if _pod_spec_fixed_part(old_spec) == _pod_spec_fixed_part(new_spec):
        return
    problems = []
    old_node = old_spec.get("nodeName") if isinstance(old_spec, dict) else None
    new_node = new_spec.get("nodeName") if isinstance(new_spec, dict) else None
    if old_node != new_node:
        problems.append("spec.nodeName: may not be changed by an update; a pod is assigned with pods/binding")
    problems.append(
        "spec: Forbidden: pod updates may not change fields other than spec.containers[*].image, "
        "spec.initContainers[*].image, spec.activeDeadlineSeconds, spec.tolerations, "
        "spec.terminationGracePeriodSeconds or spec.schedulingGates"
    )
    _fail(new, problems)


# ---------------------------------------------------------------------------------------------
# resource.k8s.io


def _cel_problems(expressions: list[tuple[str, object]]) -> list[str]:
    from kai_core.dra.cel import CelCompileError, compile_selector

    problems = []
    for path, expr in expressions:
        if not isinstance(expr, str) or not expr.strip():
            problems.append(f"{path}: a CEL expression is required")
            continue
        try:
            compile_selector(expr)
        except CelCompileError as exc:
            text = str(exc)
            problems.append(
                f"{path}: {text}" if expr in text else f"{path}: {expr!r} does not compile: {text}"
            )
    return problems


def _selector_exprs(selectors, path: str) -> tuple[list[str], list[tuple[str, object]]]:
    if selectors is None:
        return [], []
    if not isinstance(selectors, list):
        return [f"{path}: must be a list"], []
    out = []
    for i, sel in enumerate(selectors):
        cel = sel.get("cel") if isinstance(sel, dict) else None
        if not isinstance(cel, dict):
            out.append((f"{path}[{i}].cel", None))
            continue
        out.append((f"{path}[{i}].cel.expression", cel.get("expression")))
    return [], out


def validate_device_class(obj: dict) -> None:
    spec = obj.get("spec")
    if spec is not None and not isinstance(spec, dict):
        _fail(obj, ["spec: must be a mapping"])
        return
    problems, exprs = _selector_exprs((spec or {}).get("selectors"), "spec.selectors")
    _fail(obj, problems + _cel_problems(exprs))


def _exact_problems(sub, spath: str, exprs: list) -> list[str]:
    if not isinstance(sub, dict) or not sub.get("deviceClassName"):
        return [f"{spath}.deviceClassName: required"]
    problems = []
    mode = sub.get("allocationMode", "ExactCount")
    if mode not in ("ExactCount", "All"):
        problems.append(f"{spath}.allocationMode: unsupported value {mode!r}: ExactCount or All")
    count = sub.get("count")
    if (
        mode == "ExactCount"
        and count is not None
        and (not isinstance(count, int) or isinstance(count, bool) or count < 1)
    ):
        problems.append(f"{spath}.count: must be a positive integer, got {count!r}")
    if mode == "All" and count is not None:
        problems.append(f"{spath}.count: must not be set when allocationMode is All")
    more, found = _selector_exprs(sub.get("selectors"), f"{spath}.selectors")
    exprs += found
    return problems + more


def _claim_spec_problems(spec, path: str) -> list[str]:
    if not isinstance(spec, dict):
        return [f"{path}: required"]
    devices = spec.get("devices")
    if devices is None:
        return []
    if not isinstance(devices, dict):
        return [f"{path}.devices: must be a mapping"]
    problems: list[str] = []
    exprs: list[tuple[str, object]] = []
    names: set[str] = set()
    requests = devices.get("requests")
    if requests is not None and not isinstance(requests, list):
        problems.append(f"{path}.devices.requests: must be a list")
        requests = []
    for i, req in enumerate(requests or []):
        rpath = f"{path}.devices.requests[{i}]"
        if not isinstance(req, dict) or not req.get("name"):
            problems.append(f"{rpath}.name: required")
            continue
        if req["name"] in names:
            problems.append(f"{rpath}.name: duplicate value {req['name']!r}")
        names.add(req["name"])
        exactly, first = req.get("exactly"), req.get("firstAvailable")
        if (exactly is None) == (first is None):
            problems.append(f"{rpath}: exactly one of exactly or firstAvailable is required")
            continue
        if exactly is not None:
            problems += _exact_problems(exactly, f"{rpath}.exactly", exprs)
        elif not isinstance(first, list) or not first:
            problems.append(f"{rpath}.firstAvailable: must be a non-empty list")
        else:
            for j, sub in enumerate(first):
                problems += _exact_problems(sub, f"{rpath}.firstAvailable[{j}]", exprs)
    constraints = devices.get("constraints")
    for i, cons in enumerate(constraints if isinstance(constraints, list) else []):
        reqs = cons.get("requests") if isinstance(cons, dict) else None
        for r in reqs if isinstance(reqs, list) else []:
            if not isinstance(r, str) or r.split("/")[0] not in names:
                problems.append(
                    f"{path}.devices.constraints[{i}].requests: {r!r} is not a request of this claim"
                )
    return problems + _cel_problems(exprs)


def validate_resource_claim(obj: dict) -> None:
    problems = _claim_spec_problems(obj.get("spec"), "spec")
    status = obj.get("status")
    if status is not None:
        if not isinstance(status, dict):
            problems.append("status: must be a mapping")
        else:
            problems += _claim_status_problems(status)
    _fail(obj, problems)


def _claim_status_problems(status: dict) -> list[str]:
    problems = []
    reserved = status.get("reservedFor")
    if reserved is not None:
        if not isinstance(reserved, list):
            return ["status.reservedFor: must be a list"]
        if reserved and not status.get("allocation"):
            problems.append("status.reservedFor: may not be specified when the claim is not allocated")
        uids: set[str] = set()
        for i, r in enumerate(reserved):
            if not isinstance(r, dict):
                problems.append(f"status.reservedFor[{i}]: must be a mapping")
                continue
            for f in ("resource", "name", "uid"):
                if not r.get(f):
                    problems.append(f"status.reservedFor[{i}].{f}: required")
            if r.get("uid") in uids:
                problems.append(f"status.reservedFor[{i}].uid: duplicate value {r.get('uid')!r}")
            uids.add(r.get("uid"))
        if len(reserved) > 256:
            problems.append("status.reservedFor: must have at most 256 entries")
    return problems


def validate_resource_claim_update(old: dict, new: dict) -> None:
    problems = []
    if old.get("spec") != new.get("spec"):
        problems.append("spec: field is immutable")
    old_alloc = (old.get("status") or {}).get("allocation")
    new_alloc = (new.get("status") or {}).get("allocation") if isinstance(new.get("status"), dict) else None
    if old_alloc and new_alloc and old_alloc != new_alloc:
        problems.append("status.allocation: field is immutable once set (deallocate it first)")
    if not old_alloc and new_alloc and (new.get("metadata") or {}).get("deletionTimestamp"):
        problems.append("status.allocation: a claim being deleted cannot be allocated")
    _fail(new, problems)


def validate_resource_claim_template(obj: dict) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        _fail(obj, ["spec: required"])
        return
    _fail(obj, _claim_spec_problems(spec.get("spec"), "spec.spec"))


def validate_resource_claim_template_update(old: dict, new: dict) -> None:
    if old.get("spec") != new.get("spec"):
        _fail(new, ["spec: field is immutable"])


def validate_resource_slice(obj: dict) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        _fail(obj, ["spec: required"])
        return
    problems = []
    if not spec.get("driver"):
        problems.append("spec.driver: required")
    pool = spec.get("pool")
    if not isinstance(pool, dict) or not pool.get("name"):
        problems.append("spec.pool.name: required")
    scopes = [k for k in ("nodeName", "nodeSelector", "allNodes", "perDeviceNodeSelection") if spec.get(k)]
    if len(scopes) != 1:
        problems.append(
            "spec: exactly one of nodeName, nodeSelector, allNodes, perDeviceNodeSelection is required"
        )
    devices = spec.get("devices")
    if devices is not None and not isinstance(devices, list):
        problems.append("spec.devices: must be a list")
        devices = []
    seen: set[str] = set()
    for i, dev in enumerate(devices or []):
        dpath = f"spec.devices[{i}]"
        if not isinstance(dev, dict) or not dev.get("name"):
            problems.append(f"{dpath}.name: required")
            continue
        if dev["name"] in seen:
            problems.append(f"{dpath}.name: duplicate value {dev['name']!r}")
        seen.add(dev["name"])
        capacity = dev.get("capacity")
        if capacity is not None and not isinstance(capacity, dict):
            problems.append(f"{dpath}.capacity: must be a mapping")
            continue
        for name, cap in (capacity or {}).items():
            value = cap.get("value") if isinstance(cap, dict) else None
            try:
                _parse(value)
            except QuantityError as exc:
                problems.append(f"{dpath}.capacity[{name!r}].value: {exc}")
    _fail(obj, problems)


def validate_node(obj: dict) -> None:
    status = obj.get("status")
    if status is None:
        return
    if not isinstance(status, dict):
        _fail(obj, ["status: must be a mapping"])
        return
    problems = []
    for f in ("capacity", "allocatable"):
        problems += _quantity_problems(status.get(f), f"status.{f}")[0]
    _fail(obj, problems)


VALIDATORS: dict[tuple[str, str], Callable[[dict], None]] = {
    ("", "Pod"): validate_pod,
    ("", "Node"): validate_node,
    ("resource.k8s.io", "DeviceClass"): validate_device_class,
    ("resource.k8s.io", "ResourceClaim"): validate_resource_claim,
    ("resource.k8s.io", "ResourceClaimTemplate"): validate_resource_claim_template,
    ("resource.k8s.io", "ResourceSlice"): validate_resource_slice,
}

UPDATE_VALIDATORS: dict[tuple[str, str], Callable[[dict, dict], None]] = {
    ("", "Pod"): validate_pod_update,
    ("resource.k8s.io", "ResourceClaim"): validate_resource_claim_update,
    ("resource.k8s.io", "ResourceClaimTemplate"): validate_resource_claim_template_update,
}


# ---------------------------------------------------------------------------------------------
# CRD transition rules


def immutable_paths(schema: Mapping) -> list[tuple[tuple[str, ...], str]]:
    """Fields a CRD schema makes immutable with the CEL transition rule ``self == oldSelf``.

    Returns ``(path, message)`` pairs, paths through ``properties`` from the object's root. Other
    ``x-kubernetes-validations`` rules are not evaluated (see :mod:`kai_core.apiserver.schema`).
    """
    out: list[tuple[tuple[str, ...], str]] = []

    def walk(node, path: tuple[str, ...]) -> None:
        if not isinstance(node, Mapping):
            return
        for rule in node.get("x-kubernetes-validations") or []:
            if isinstance(rule, Mapping) and re.sub(r"\s+", "", str(rule.get("rule", ""))) == "self==oldSelf":
                out.append((path, str(rule.get("message") or "field is immutable")))
        for name, sub in (node.get("properties") or {}).items():
            walk(sub, (*path, name))

    walk(schema, ())
    return out


def _at(obj, path: tuple[str, ...]):
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


_MISSING = object()


def transition_rule_validator(
    paths: list[tuple[tuple[str, ...], str]],
) -> Callable[[dict, dict], None] | None:
    """An update validator enforcing :func:`immutable_paths` (a rule applies when both old and new have
    the field, as on the API server); None when there is nothing to enforce."""
    if not paths:
        return None

    def check(old: dict, new: dict) -> None:
        problems = []
        for path, message in paths:
            before, after = _at(old, path), _at(new, path)
            if before is not _MISSING and after is not _MISSING and before != after:
                problems.append(f"{'.'.join(path) or '<root>'}: Invalid value: {message}")
        _fail(new, problems)

    return check
