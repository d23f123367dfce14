"""Validation of built-in kinds, as the API server does it on create and update.

Covers what users get wrong and what the scheduler relies on: object names and metadata (labels,
annotations, finalizers, ownerReferences), pods' containers, resources and claims, quantities,
DRA requests, and CEL selectors, which are compiled on write so a broken expression is refused at
once, naming the object and the expression. Updates are checked too: a pod's spec (node
included: binding is the only way to set it), a claim's spec and a claim's allocation cannot be
changed once set, as on a real cluster.

Built-in kinds are also checked for the structure the scheduler reads (a Node's taints and
conditions, a Pod's tolerations, node selector and status must have their API types), which the
API server gets from decoding into typed structs; and DRA objects for the API server's length and
count limits (Kubernetes 1.34, ``resource.k8s.io/v1``: 128 devices per ResourceSlice, 32 attributes
and capacities per device, string and version attributes of at most 64 bytes, qualified names of a
63-character domain and a 32-character C identifier, 32 requests per claim and selectors per
request, 8 subrequests, CEL expressions of at most 10 KiB...), which the CEL cost estimate of
:mod:`kai_core.dra.celcost` relies on. List-valued device attributes (``ints``, ``bools``, ``strings``,
``versions``: KEP-5491) are accepted as an API server of 1.36 or later with ``DRAListTypeAttributes``
on accepts them: non-empty lists, each element checked as the scalar, at most 48 values per device,
at most 64 devices in a slice that has one. (With the gate off, the default in 1.36 and 1.37, a real
API server drops the lists on create and then refuses the attribute: ``exactly one value must be
specified``.)

Every check raises :class:`kai_core.api.errors.Invalid` whose message starts with the object's kind
and name and lists each problem with its field path. Values are quoted cut to 200 characters (with
their length), so a megabyte of hostile text never lands in a message.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from fractions import Fraction

from kai_core.api.errors import Invalid, short_repr, shorten
from kai_core.api.kinds import ResourceKind
from kai_core.api.quantity import QuantityError, parse_quantity

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# semver.org 2.0.0, as the API server checks version attributes (used after the length check)
_SEMVER = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(-(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?"
    r"(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?"
)
_LABEL_NAME_KINDS = {"Namespace"}
_r = short_repr  # every value quoted in a message goes through this: at most 200 characters

# resource.k8s.io/v1 limits (Kubernetes 1.34, k8s.io/api/resource/v1/types.go)
DRIVER_NAME_MAX = 63
POOL_NAME_MAX = 253
SLICE_MAX_DEVICES = 128
#: ResourceSliceMaxDevicesWithAdvancedFeatures, for a slice using list attributes (Kubernetes 1.36+)
SLICE_MAX_DEVICES_WITH_LISTS = 64
SLICE_MAX_SHARED_COUNTERS = 32
DEVICE_MAX_ATTRIBUTES_AND_CAPACITIES = 32
DEVICE_MAX_ATTRIBUTE_VALUES = 48  # list attributes (alpha) count each element
_LIST_ATTRIBUTE_KINDS = ("ints", "bools", "strings", "versions")
DEVICE_MAX_DOMAIN = 63
DEVICE_MAX_ID = 32
DEVICE_ATTRIBUTE_MAX_VALUE = 64
DEVICE_MAX_TAINTS = 4
REQUESTS_MAX = 32  # DeviceRequestsMaxSize = AllocationResultsMaxSize
CONSTRAINTS_MAX = 32
CONFIG_MAX = 32
SELECTORS_MAX = 32
FIRST_AVAILABLE_MAX = 8
TOLERATIONS_MAX = 16
CEL_EXPRESSION_MAX = 10 * 1024
OPAQUE_PARAMETERS_MAX = 10 * 1024
RESERVED_FOR_MAX = 256
ALLOCATION_RESULTS_MAX = 32
_MAX_ANNOTATIONS_BYTES = 256 * 1024
_NATIVE_PREFIX = "kubernetes.io/"


def validate_name(kind: ResourceKind, name) -> None:
    """Raise Invalid unless ``name`` is a valid ``metadata.name`` for ``kind``."""
    if not isinstance(name, str):
        raise Invalid(f"{kind.kind}: metadata.name must be a string, got {_r(name)}")
    if kind.kind in _LABEL_NAME_KINDS:
        ok = len(name) <= 63 and _DNS_LABEL.fullmatch(name)
        rule = "a lowercase RFC 1123 label (at most 63 characters)"
    else:
        ok = len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name)
        rule = "a lowercase RFC 1123 subdomain (at most 253 characters)"
    if not ok:
        raise Invalid(f'{kind.kind} "{shorten(name)}" is invalid: metadata.name must be {rule}')


def _where(obj: dict) -> str:
    md = obj.get("metadata")
    md = md if isinstance(md, dict) else {}
    ns = md.get("namespace")
    name = md.get("name") or md.get("generateName") or "<unnamed>"
    return shorten(f"{obj.get('kind')} {ns}/{name}" if ns else f"{obj.get('kind')} {name}")


def _fail(obj: dict, problems: list[str]) -> None:
    if problems:
        raise Invalid(f"{_where(obj)} is invalid: " + "; ".join(problems))


def _qualified_name_problem(value, what: str) -> str | None:
    """Why ``value`` is not a qualified name (``[prefix/]name``, as label keys are), or None."""
    if not isinstance(value, str) or not value:
        return f"{what} {_r(value)} must be a non-empty string"
    prefix, slash, name = value.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return f"{what} {_r(value)}: the prefix must be a lowercase DNS subdomain"
    if len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        return (
            f"{what} {_r(value)}: the name part must be at most 63 characters of alphanumerics, '-', '_' "
            "or '.', starting and ending with an alphanumeric"
        )
    return None


def _label_value_problem(key: str, value) -> str | None:
    if not isinstance(value, str):
        return f"metadata.labels[{_r(key)}]: value {_r(value)} must be a string (quote it in YAML)"
    if value and (len(value) > 63 or not _QUALIFIED_NAME.fullmatch(value)):
        return (
            f"metadata.labels[{_r(key)}]: value {_r(value)} must be at most 63 characters of alphanumerics, "
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
                    problems.append(f"metadata.annotations[{_r(k)}]: value must be a string, got {_r(v)}")
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
        problems.append(f"metadata.generateName: must be a string, got {_r(gen)}")
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
            problems.append(f"{path}[{_r(k)}]: {shorten(str(exc))}")
            continue
        if q < 0:
            problems.append(f"{path}[{_r(k)}]: {_r(v)} must be greater than or equal to 0")
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
                f"{path}.requests[{_r(k)}]: {_r(res['requests'][k])} must be less than or equal to "
                f"the limit {_r(res['limits'][k])}"
            )
        if not _is_native(k):
            if req.denominator != 1:
                problems.append(f"{path}.requests[{_r(k)}]: {_r(res['requests'][k])} must be an integer")
            if lim is not None and lim != req:
                problems.append(
                    f"{path}.requests[{_r(k)}]: must be equal to the limit for the extended "
                    f"resource {_r(k)} (overcommit is not allowed)"
                )
    for k in limits:
        if not _is_native(k) and k not in requests:
            problems.append(f"{path}.requests[{_r(k)}]: required, equal to the limit")
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
            problems.append(f"{path}.name: duplicate value {_r(rc['name'])}")
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
                problems.append(f"{path}.name: duplicate value {_r(c['name'])}")
            names.add(c["name"])
            res = c.get("resources")
            problems += _resources_problems(res, f"{path}.resources")
            cclaims = res.get("claims") if isinstance(res, dict) else None
            for j, cc in enumerate(cclaims if isinstance(cclaims, list) else []):
                if not isinstance(cc, dict) or cc.get("name") not in pod_claims:
                    n = cc.get("name") if isinstance(cc, dict) else cc
                    problems.append(
                        f"{path}.resources.claims[{j}].name: {_r(n)} must be one of spec.resourceClaims' names"
                    )
    problems += _resources_problems(spec.get("resources"), "spec.resources")
    problems += _quantity_problems(spec.get("overhead"), "spec.overhead")[0]
    problems += pod_structure_problems(obj)
    _fail(obj, problems)


_POD_STRINGS = ("nodeName", "schedulerName", "priorityClassName", "serviceAccountName")


def pod_structure_problems(obj: dict) -> list[str]:
    """The fields the scheduler reads from a Pod, beyond its containers, of the wrong type:
    ``spec.nodeName``, ``schedulerName``, ``nodeSelector``, ``tolerations``, ``affinity``,
    ``priority``, ``schedulingGates`` and ``status`` (``phase``, ``conditions``)."""
    problems: list[str] = []
    spec = obj.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    for f in _POD_STRINGS:
        if spec.get(f) is not None and not isinstance(spec.get(f), str):
            problems.append(f"spec.{f}: must be a string, got {_r(spec.get(f))}")
    selector = spec.get("nodeSelector")
    if selector is not None and not (isinstance(selector, dict)
                                     and all(isinstance(v, str) for v in selector.values())):
        problems.append(f"spec.nodeSelector: must map label keys to strings, got {_r(selector)}")
    tolerations = spec.get("tolerations")
    if tolerations is not None:
        if not isinstance(tolerations, list):
            problems.append(f"spec.tolerations: must be a list of tolerations, got {_r(tolerations)}")
        else:
            problems += _toleration_problems(tolerations)
    for f, kind in (("affinity", dict), ("schedulingGates", list)):
        if spec.get(f) is not None and not isinstance(spec.get(f), kind):
            problems.append(f"spec.{f}: must be a {'mapping' if kind is dict else 'list'}, got {_r(spec.get(f))}")
    priority = spec.get("priority")
    if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
        problems.append(f"spec.priority: must be an integer, got {_r(priority)}")
    return problems + _pod_status_problems(obj)


def _pod_status_problems(obj: dict) -> list[str]:
    problems: list[str] = []
    status = obj.get("status")
    if status is not None and not isinstance(status, dict):
        problems.append(f"status: must be a mapping, got {_r(status)}")
    elif status:
        for f in ("phase", "nominatedNodeName"):
            if status.get(f) is not None and not isinstance(status.get(f), str):
                problems.append(f"status.{f}: must be a string, got {_r(status.get(f))}")
        problems += _conditions_problems(status.get("conditions"), "status.conditions")
    return problems


def validate_pod_status(obj: dict) -> None:
    """A write of ``pods/status``: as the API server's status strategy, only the status is
    validated (the spec is the stored one, checked when it was written)."""
    _fail(obj, _pod_status_problems(obj))


def _toleration_problems(tolerations: list) -> list[str]:
    problems = []
    for i, tol in enumerate(tolerations):
        path = f"spec.tolerations[{i}]"
        if not isinstance(tol, dict):
            problems.append(f"{path}: must be a mapping (key, operator, value, effect), got {_r(tol)}")
            continue
        key, op, value, effect = tol.get("key"), tol.get("operator"), tol.get("value"), tol.get("effect")
        if key:
            problem = _qualified_name_problem(key, f"{path}.key:")
            if problem:
                problems.append(problem)
        elif key is not None and not isinstance(key, str):
            problems.append(f"{path}.key: must be a string, got {_r(key)}")
        if op not in (None, "", "Exists", "Equal"):
            problems.append(f'{path}.operator: Unsupported value: {_r(op)}: supported values: "Equal", "Exists"')
        elif op == "Exists" and value:
            problems.append(f"{path}.value: Invalid value: {_r(value)}: value must be empty when `operator` is "
                            "'Exists'")
        elif op != "Exists" and not key:
            problems.append(f"{path}.operator: Invalid value: {_r(op)}: operator must be Exists when `key` is empty, "
                            "which means \"match all values and all keys\"")
        if value is not None and not isinstance(value, str):
            problems.append(f"{path}.value: must be a string, got {_r(value)}")
        if effect not in (None, "", *_NODE_TAINT_EFFECTS):
            problems.append(f"{path}.effect: Unsupported value: {_r(effect)}: supported values: "
                            + ", ".join(f'"{e}"' for e in _NODE_TAINT_EFFECTS))
        seconds = tol.get("tolerationSeconds")
        if seconds is not None and (not isinstance(seconds, int) or isinstance(seconds, bool)):
            problems.append(f"{path}.tolerationSeconds: must be an integer, got {_r(seconds)}")
    return problems


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
# Limits and formats shared by the DRA kinds (messages worded as the API server's field errors)


def _too_many(path: str, items, limit: int) -> str | None:
    """``path: Too many: N: must have at most LIMIT items`` when a list or map is over its limit."""
    if isinstance(items, (list, dict)) and len(items) > limit:
        return f"{path}: Too many: {len(items)}: must have at most {limit} items"
    return None


def _list_problem(path: str, items, limit: int) -> str | None:
    """Why an optional list field is not a list of at most ``limit`` items, or None."""
    if items is None:
        return None
    if not isinstance(items, list):
        return f"{path}: must be a list"
    return _too_many(path, items, limit)


def _too_long(value: str, limit: int) -> bool:
    """Whether a string is longer than ``limit`` bytes (UTF-8, as Go's ``len``)."""
    return len(value) > limit or (len(value) * 4 > limit and len(value.encode()) > limit)


def _long_problem(path: str, value: str, limit: int) -> str | None:
    if _too_long(value, limit):
        return f"{path}: Too long: may not be more than {limit} bytes (got {len(value.encode()):,})"
    return None


def _dns_problem(path: str, value, limit: int, regex: re.Pattern, what: str) -> str | None:
    if not isinstance(value, str) or not value:
        return f"{path}: Required value: a non-empty string, got {_r(value)}"
    problem = _dns_name_problem(value, limit, regex, what)
    return f"{path}{problem}" if problem else None


@functools.lru_cache(maxsize=4096)
def _dns_name_problem(value: str, limit: int, regex: re.Pattern, what: str) -> str | None:
    """The message after the path, or None; names (classes, drivers, request names) recur: cached."""
    if _too_long(value, limit):
        return f": Invalid value: {_r(value)}: must be no more than {limit} characters"
    if not regex.fullmatch(value):
        return f": Invalid value: {_r(value)}: must be a lowercase RFC 1123 {what}"
    return None


def _subdomain_problem(path: str, value, limit: int = 253) -> str | None:
    return _dns_problem(path, value, limit, _DNS_SUBDOMAIN, "subdomain")


def _label_problem(path: str, value) -> str | None:
    return _dns_problem(path, value, 63, _DNS_LABEL, "label")


def _pool_name_problem(path: str, value) -> str | None:
    if not isinstance(value, str) or not value:
        return f"{path}: Required value"
    if _too_long(value, POOL_NAME_MAX):
        return f"{path}: Too long: may not be more than {POOL_NAME_MAX} bytes"
    for part in value.split("/"):
        problem = _subdomain_problem(path, part)
        if problem:
            return problem
    return None


@functools.lru_cache(maxsize=4096)
def _attribute_name_problem(name) -> str | None:
    """Why a device attribute or capacity name is not a C identifier of at most 32 characters,
    optionally after a domain (a driver name: at most 63 characters) and one slash: the message
    after the field path (``": Invalid value: ..."``), or None. Names repeat on every device: cached."""
    if not isinstance(name, str) or not name:
        return f": Invalid value: {_r(name)}: a name must be a non-empty string"
    parts = name.split("/")
    if len(parts) > 2:
        return f": Invalid value: {_r(name)}: must not contain more than one slash"
    if len(parts) == 2:
        problem = _dns_problem("", parts[0], DEVICE_MAX_DOMAIN, _DNS_SUBDOMAIN, "subdomain (the domain)")
        if problem:
            return problem
    ident = parts[-1]
    if _too_long(ident, DEVICE_MAX_ID):
        return f": Too long: may not be more than {DEVICE_MAX_ID} bytes (the name after the domain)"
    if not _C_IDENTIFIER.fullmatch(ident):
        return (f": Invalid value: {_r(ident)}: a valid C identifier must start with alphabetic "
                "character or '_', followed by a string of alphanumeric characters or '_'")
    return None


def _cel_problems(expressions: list[tuple[str, object]]) -> list[str]:
    from kai_core.dra.cel import CelCompileError, compile_selector

    problems = []
    for path, expr in expressions:
        if not isinstance(expr, str) or not expr.strip():
            problems.append(f"{path}: a CEL expression is required")
            continue
        if _too_long(expr, CEL_EXPRESSION_MAX):  # not even compiled, as upstream
            problems.append(f"{path}: Too long: may not be more than {CEL_EXPRESSION_MAX} bytes "
                            f"(got {len(expr.encode()):,})")
            continue
        try:
            compile_selector(expr)
        except CelCompileError as exc:
            text = shorten(str(exc), 500)
            problems.append(
                f"{path}: {text}" if expr in text else f"{path}: {_r(expr)} does not compile: {text}"
            )
    return problems


def _selector_exprs(selectors, path: str) -> tuple[list[str], list[tuple[str, object]]]:
    if selectors is None:
        return [], []
    if not isinstance(selectors, list):
        return [f"{path}: must be a list"], []
    too_many = _too_many(path, selectors, SELECTORS_MAX)
    if too_many:
        return [too_many], []  # the size check short-circuits, as upstream (DoS protection)
    out = []
    for i, sel in enumerate(selectors):
        cel = sel.get("cel") if isinstance(sel, dict) else None
        if not isinstance(cel, dict):
            out.append((f"{path}[{i}].cel", None))
            continue
        out.append((f"{path}[{i}].cel.expression", cel.get("expression")))
    return [], out


def _opaque_config_problems(configs, path: str, limit: int) -> list[str]:
    """``config`` of a class or claim: at most ``limit`` entries, each with an opaque driver
    configuration of at most 10 KiB of JSON."""
    bad = _list_problem(path, configs, limit)
    if bad or not configs:
        return [bad] if bad else []
    problems = []
    for i, cfg in enumerate(configs):
        opaque = cfg.get("opaque") if isinstance(cfg, dict) else None
        if not isinstance(opaque, dict):
            problems.append(f"{path}[{i}].opaque: Required value")
            continue
        driver = _dns_problem(f"{path}[{i}].opaque.driver", opaque.get("driver"), DRIVER_NAME_MAX,
                              _DNS_SUBDOMAIN, "subdomain")
        if driver:
            problems.append(driver)
        params = opaque.get("parameters")
        if not isinstance(params, dict):
            problems.append(f"{path}[{i}].opaque.parameters: Invalid value: must be a valid JSON object")
        else:
            size = len(json.dumps(params, separators=(",", ":")))
            if size > OPAQUE_PARAMETERS_MAX:
                problems.append(f"{path}[{i}].opaque.parameters: Too long: may not be more than "
                                f"{OPAQUE_PARAMETERS_MAX} bytes (got {size:,})")
    return problems


# ---------------------------------------------------------------------------------------------
# resource.k8s.io


def validate_device_class(obj: dict) -> None:
    spec = obj.get("spec")
    if spec is not None and not isinstance(spec, dict):
        _fail(obj, ["spec: must be a mapping"])
        return
    spec = spec or {}
    problems, exprs = _selector_exprs(spec.get("selectors"), "spec.selectors")
    problems += _opaque_config_problems(spec.get("config"), "spec.config", CONFIG_MAX)
    _fail(obj, problems + _cel_problems(exprs))


def _exact_problems(sub, spath: str, exprs: list) -> list[str]:
    if not isinstance(sub, dict) or not sub.get("deviceClassName"):
        return [f"{spath}.deviceClassName: required"]
    problems = []
    cls = _subdomain_problem(f"{spath}.deviceClassName", sub.get("deviceClassName"))
    if cls:
        problems.append(cls)
    mode = sub.get("allocationMode", "ExactCount")
    if mode not in ("ExactCount", "All"):
        problems.append(f"{spath}.allocationMode: unsupported value {_r(mode)}: ExactCount or All")
    count = sub.get("count")
    if (
        mode == "ExactCount"
        and count is not None
        and (not isinstance(count, int) or isinstance(count, bool) or count < 1)
    ):
        problems.append(f"{spath}.count: must be a positive integer, got {_r(count)}")
    if mode == "All" and count is not None:
        problems.append(f"{spath}.count: must not be set when allocationMode is All")
    tolerations = _list_problem(f"{spath}.tolerations", sub.get("tolerations"), TOLERATIONS_MAX)
    if tolerations:
        problems.append(tolerations)
    elif sub.get("tolerations"):
        problems += _device_toleration_problems(sub["tolerations"], f"{spath}.tolerations")
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
    too_many = _too_many(f"{path}.devices.requests", requests, REQUESTS_MAX)
    if too_many:
        problems.append(too_many)
        requests = []
    for i, req in enumerate(requests or []):
        rpath = f"{path}.devices.requests[{i}]"
        if not isinstance(req, dict) or not req.get("name"):
            problems.append(f"{rpath}.name: required")
            continue
        name_problem = _label_problem(f"{rpath}.name", req["name"])
        if name_problem:
            problems.append(name_problem)
            continue
        if req["name"] in names:
            problems.append(f"{rpath}.name: duplicate value {_r(req['name'])}")
        names.add(req["name"])
        exactly, first = req.get("exactly"), req.get("firstAvailable")
        if (exactly is None) == (first is None):
            problems.append(f"{rpath}: exactly one of exactly or firstAvailable is required")
            continue
        if exactly is not None:
            problems += _exact_problems(exactly, f"{rpath}.exactly", exprs)
        elif not isinstance(first, list) or not first:
            problems.append(f"{rpath}.firstAvailable: must be a non-empty list")
        elif _too_many(f"{rpath}.firstAvailable", first, FIRST_AVAILABLE_MAX):
            problems.append(_too_many(f"{rpath}.firstAvailable", first, FIRST_AVAILABLE_MAX))
        else:
            for j, sub in enumerate(first):
                sub_name = sub.get("name") if isinstance(sub, dict) else None
                name_problem = _label_problem(f"{rpath}.firstAvailable[{j}].name", sub_name)
                if name_problem:
                    problems.append(name_problem)
                problems += _exact_problems(sub, f"{rpath}.firstAvailable[{j}]", exprs)
    constraints = devices.get("constraints")
    too_many = _too_many(f"{path}.devices.constraints", constraints, CONSTRAINTS_MAX)
    if too_many:
        problems.append(too_many)
        constraints = []
    for i, cons in enumerate(constraints if isinstance(constraints, list) else []):
        reqs = cons.get("requests") if isinstance(cons, dict) else None
        for r in reqs if isinstance(reqs, list) else []:
            if not isinstance(r, str) or r.split("/")[0] not in names:
                problems.append(
                    f"{path}.devices.constraints[{i}].requests: {_r(r)} is not a request of this claim"
                )
        if isinstance(cons, dict) and not cons.get("matchAttribute") and not cons.get("distinctAttribute"):
            problems.append(f'{path}.devices.constraints[{i}]: Required value: exactly one of "matchAttribute" or '
                            '"distinctAttribute" is required')
    problems += _opaque_config_problems(devices.get("config"), f"{path}.devices.config", CONFIG_MAX)
    configs = devices.get("config")
    refs = request_names(spec)
    for i, cfg in enumerate(configs if isinstance(configs, list) else []):
        reqs = cfg.get("requests") if isinstance(cfg, dict) else None
        for r in reqs if isinstance(reqs, list) else []:
            if r not in refs:
                problems.append(f"{path}.devices.config[{i}].requests: Invalid value: {_r(r)}: must be the name of "
                                "a request in the claim or the name of a request and a subrequest separated by '/'")
    return problems + _cel_problems(exprs)


def request_names(spec) -> set[str]:
    """The names a claim's config, constraints and allocation results may refer to: each request's
    name, and ``request/subrequest`` for each of its firstAvailable entries."""
    devices = spec.get("devices") if isinstance(spec, dict) else None
    requests = devices.get("requests") if isinstance(devices, dict) else None
    names: set[str] = set()
    for req in requests if isinstance(requests, list) else []:
        if not isinstance(req, dict) or not isinstance(req.get("name"), str):
            continue
        names.add(req["name"])
        first = req.get("firstAvailable")
        for sub in first if isinstance(first, list) else []:
            if isinstance(sub, dict) and isinstance(sub.get("name"), str):
                names.add(f"{req['name']}/{sub['name']}")
    return names


_DEVICE_TAINT_EFFECTS = ("NoSchedule", "NoExecute", "None")


def _device_toleration_problems(tolerations: list, path: str) -> list[str]:
    """A device request's tolerations, as the API server checks them (operator Equal by default)."""
    problems = []
    for i, tol in enumerate(tolerations):
        tpath = f"{path}[{i}]"
        if not isinstance(tol, dict):
            problems.append(f"{tpath}: must be a mapping (key, operator, value, effect), got {_r(tol)}")
            continue
        key, op, value, effect = tol.get("key"), tol.get("operator") or "Equal", tol.get("value"), tol.get("effect")
        if key:
            problem = _qualified_name_problem(key, f"{tpath}.key:")
            if problem:
                problems.append(problem)
        if op == "Exists":
            if value:
                problems.append(f"{tpath}.value: Invalid value: {_r(value)}: must be empty for operator `Exists`")
        elif op == "Equal":
            if value is not None and not isinstance(value, str):
                problems.append(f"{tpath}.value: must be a string, got {_r(value)}")
            elif value and (len(value) > 63 or not _QUALIFIED_NAME.fullmatch(value)):
                problems.append(f"{tpath}.value: Invalid value: {_r(value)}: a label value of at most 63 characters "
                                "of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric")
        else:
            problems.append(f'{tpath}.operator: Unsupported value: {_r(op)}: supported values: "Equal", "Exists"')
        if effect not in (None, "", *_DEVICE_TAINT_EFFECTS):
            problems.append(f"{tpath}.effect: Unsupported value: {_r(effect)}: supported values: "
                            + ", ".join(f'"{e}"' for e in _DEVICE_TAINT_EFFECTS))
    return problems


def validate_resource_claim(obj: dict) -> None:
    problems = _claim_spec_problems(obj.get("spec"), "spec")
    problems += _claim_status_field_problems(obj)
    _fail(obj, problems)


def validate_resource_claim_status(obj: dict) -> None:
    """A write of the status subresource: as the API server's status strategy, only the status is
    validated (the spec is the stored one, checked when it was written, and immutable)."""
    _fail(obj, _claim_status_field_problems(obj))


def _claim_status_field_problems(obj: dict) -> list[str]:
    status = obj.get("status")
    if status is None:
        return []
    if not isinstance(status, dict):
        return ["status: must be a mapping"]
    return _claim_status_problems(status, request_names(obj.get("spec")))


def _result_problems(res, path: str, names: set[str]) -> list[str]:
    """One allocation result: it names a request of the claim, a driver, a pool and a device."""
    if not isinstance(res, dict):
        return [f"{path}: must be a mapping"]
    problems = []
    if res.get("request") not in names:
        problems.append(f"{path}.request: Invalid value: {_r(res.get('request'))}: must be the name of a request in "
                        "the claim or the name of a request and a subrequest separated by '/'")
    for problem in (_dns_problem(f"{path}.driver", res.get("driver"), DRIVER_NAME_MAX, _DNS_SUBDOMAIN, "subdomain"),
                    _pool_name_problem(f"{path}.pool", res.get("pool")),
                    _label_problem(f"{path}.device", res.get("device"))):
        if problem:
            problems.append(problem)
    return problems


_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")


def node_selector_problems(selector, path: str) -> list[str]:
    """A NodeSelector as the API server validates it: at least one term; label requirements with a
    known operator and the values it takes; field requirements on metadata.name only, In or NotIn
    one value."""
    if not isinstance(selector, dict):
        return [f"{path}: must be a mapping"]
    terms = selector.get("nodeSelectorTerms")
    if not isinstance(terms, list) or not terms:
        return [f"{path}.nodeSelectorTerms: Required value: must have at least one node selector term"]
    problems = []
    for i, term in enumerate(terms):
        tpath = f"{path}.nodeSelectorTerms[{i}]"
        if not isinstance(term, dict):
            problems.append(f"{tpath}: must be a mapping")
            continue
        for kind in ("matchExpressions", "matchFields"):
            reqs = term.get(kind)
            for j, req in enumerate(reqs if isinstance(reqs, list) else []):
                rpath = f"{tpath}.{kind}[{j}]"
                if not isinstance(req, dict):
                    problems.append(f"{rpath}: must be a mapping")
                    continue
                op, values, key = req.get("operator"), req.get("values") or [], req.get("key")
                if kind == "matchFields":
                    if op not in ("In", "NotIn"):
                        problems.append(f"{rpath}.operator: Invalid value: {_r(op)}: not a valid selector operator")
                    elif len(values) != 1:
                        problems.append(f"{rpath}.values: Required value: must be only one value when `operator` is "
                                        "'In' or 'NotIn' for node field selector")
                    if key != "metadata.name":
                        problems.append(f"{rpath}.key: Invalid value: {_r(key)}: not a valid field selector key")
                    continue
                if op not in _SELECTOR_OPERATORS:
                    problems.append(f"{rpath}.operator: Invalid value: {_r(op)}: not a valid selector operator")
                elif op in ("In", "NotIn") and not values:
                    problems.append(f"{rpath}.values: Required value: must be specified when `operator` is 'In' or "
                                    "'NotIn'")
                elif op in ("Exists", "DoesNotExist") and values:
                    problems.append(f"{rpath}.values: Forbidden: may not be specified when `operator` is 'Exists' "
                                    "or 'DoesNotExist'")
                elif op in ("Gt", "Lt") and len(values) != 1:
                    problems.append(f"{rpath}.values: Required value: must be specified single value when "
                                    "`operator` is 'Lt' or 'Gt'")
                problem = _qualified_name_problem(key, f"{rpath}.key:")
                if problem:
                    problems.append(problem)
    return problems


def _claim_status_problems(status: dict, names: set[str]) -> list[str]:
    problems = []
    allocation = status.get("allocation")
    if allocation is not None:
        if not isinstance(allocation, dict):
            problems.append("status.allocation: must be a mapping")
        else:
            devices = allocation.get("devices")
            results = devices.get("results") if isinstance(devices, dict) else None
            if results is not None and not isinstance(results, list):
                problems.append("status.allocation.devices.results: must be a list")
            elif _too_many("status.allocation.devices.results", results, ALLOCATION_RESULTS_MAX):
                problems.append(_too_many("status.allocation.devices.results", results, ALLOCATION_RESULTS_MAX))
            else:
                for i, res in enumerate(results or []):
                    problems += _result_problems(res, f"status.allocation.devices.results[{i}]", names)
            if allocation.get("nodeSelector") is not None:
                problems += node_selector_problems(allocation["nodeSelector"], "status.allocation.nodeSelector")
    reserved = status.get("reservedFor")
    if reserved is not None:
        if not isinstance(reserved, list):
            return [*problems, "status.reservedFor: must be a list"]
        if len(reserved) > RESERVED_FOR_MAX:
            return [*problems, f"status.reservedFor: must have at most {RESERVED_FOR_MAX} entries"]
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
            uid = r.get("uid")
            if not isinstance(uid, (str, type(None))):
                problems.append(f"status.reservedFor[{i}].uid: must be a string, got {_r(uid)}")
                continue
            if uid in uids:
                problems.append(f"status.reservedFor[{i}].uid: duplicate value {_r(uid)}")
            uids.add(uid)
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


def _attribute_problems(path: str, value) -> tuple[list[str], int]:
    """Problems of one device attribute (exactly one typed value; strings and versions of at most
    64 bytes, versions semver), and how many values it holds (list elements count one each)."""
    if not isinstance(value, dict) or len(value) != 1:
        return [f"{path}: Invalid value: exactly one value must be specified (int, bool, string or version)"], 1
    ((key, inner),) = value.items()
    if key in _LIST_ATTRIBUTE_KINDS:
        if not isinstance(inner, list):
            return [f"{path}.{key}: Invalid value: {_r(inner)}: must be a list"], 1
        if not inner:
            return [f"{path}.{key}: Invalid value: []: must not be empty if specified"], 1
        problems: list[str] = []
        for j, item in enumerate(inner):
            problems += _attribute_problems(f"{path}.{key}[{j}]", {key[:-1]: item})[0]
        return problems, len(inner)
    if key == "int":
        ok = isinstance(inner, int) and not isinstance(inner, bool) and -(2**63) <= inner < 2**63
        return ([] if ok else [f"{path}.int: Invalid value: {_r(inner)}: must be a 64-bit integer"]), 1
    if key == "bool":
        return ([] if isinstance(inner, bool) else [f"{path}.bool: Invalid value: {_r(inner)}: must be a boolean"]), 1
    if key in ("string", "version"):
        if not isinstance(inner, str):
            return [f"{path}.{key}: Invalid value: {_r(inner)}: must be a string"], 1
        long = _long_problem(f"{path}.{key}", inner, DEVICE_ATTRIBUTE_MAX_VALUE)
        if long:
            return [long], 1
        if key == "version" and not _SEMVER.fullmatch(inner):
            return [f"{path}.version: Invalid value: {_r(inner)}: must be a string compatible with semver.org "
                    "spec 2.0.0"], 1
        return [], 1
    return [f"{path}: Invalid value: {_r(key)}: exactly one of int, bool, string or version must be specified"], 1


@functools.lru_cache(maxsize=4096)
def _version_ok(value: str) -> bool:
    return not _too_long(value, DEVICE_ATTRIBUTE_MAX_VALUE) and _SEMVER.fullmatch(value) is not None


def _plain_attribute(value) -> bool:
    """Whether an attribute is one well-formed scalar (the common case, checked without building
    any message)."""
    if type(value) is not dict or len(value) != 1:
        return False
    for key, inner in value.items():
        kind = type(inner)
        if key == "string":
            return kind is str and (len(inner) * 4 <= DEVICE_ATTRIBUTE_MAX_VALUE
                                    or not _too_long(inner, DEVICE_ATTRIBUTE_MAX_VALUE))
        if key == "int":
            return kind is int and -(2**63) <= inner < 2**63
        if key == "bool":
            return kind is bool
        if key == "version":
            return kind is str and _version_ok(inner)
    return False


def _device_problems(dev: dict, dpath: str) -> list[str]:
    problems: list[str] = []
    name = _label_problem(f"{dpath}.name", dev["name"])
    if name:
        problems.append(name)
    attributes, capacity = dev.get("attributes"), dev.get("capacity")
    if attributes is not None and not isinstance(attributes, dict):
        problems.append(f"{dpath}.attributes: must be a mapping")
        attributes = {}
    if capacity is not None and not isinstance(capacity, dict):
        problems.append(f"{dpath}.capacity: must be a mapping")
        capacity = {}
    attributes, capacity = attributes or {}, capacity or {}
    entries = len(attributes) + len(capacity)
    if entries > DEVICE_MAX_ATTRIBUTES_AND_CAPACITIES:
        # the count alone: a device far over the limit is not checked entry by entry
        return [*problems, f"{dpath}: Invalid value: {entries}: the total number of attributes and capacities "
                           f"must not exceed {DEVICE_MAX_ATTRIBUTES_AND_CAPACITIES}"]
    values = 0
    for key, value in attributes.items():
        problem = _attribute_name_problem(key)
        if problem:
            problems.append(f"{dpath}.attributes[{_r(key, 80)}]{problem}")
        if _plain_attribute(value):
            values += 1
            continue
        more, count = _attribute_problems(f"{dpath}.attributes[{_r(key, 80)}]", value)
        problems += more
        values += count
    if values > DEVICE_MAX_ATTRIBUTE_VALUES:
        problems.append(f"{dpath}: Invalid value: {values}: the total number of attribute values must not exceed "
                        f"{DEVICE_MAX_ATTRIBUTE_VALUES}")
    for key, cap in capacity.items():
        problem = _attribute_name_problem(key)
        if problem:
            problems.append(f"{dpath}.capacity[{_r(key, 80)}]{problem}")
        value = cap.get("value") if isinstance(cap, dict) else None
        try:
            _parse(value)
        except QuantityError as exc:
            problems.append(f"{dpath}.capacity[{_r(key, 80)}].value: {shorten(str(exc))}")
    taints = _list_problem(f"{dpath}.taints", dev.get("taints"), DEVICE_MAX_TAINTS)
    if taints:
        problems.append(taints)
    elif dev.get("taints"):
        problems += _taint_problems(dev["taints"], f"{dpath}.taints", ("NoSchedule", "NoExecute", "None"))
    return problems


def validate_resource_slice(obj: dict) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        _fail(obj, ["spec: required"])
        return
    problems = []
    if not spec.get("driver"):
        problems.append("spec.driver: required")
    else:
        driver = _dns_problem("spec.driver", spec["driver"], DRIVER_NAME_MAX, _DNS_SUBDOMAIN, "subdomain")
        if driver:
            problems.append(driver)
    pool = spec.get("pool")
    if not isinstance(pool, dict) or not pool.get("name"):
        problems.append("spec.pool.name: required")
    else:
        pool_name = _pool_name_problem("spec.pool.name", pool["name"])
        if pool_name:
            problems.append(pool_name)
        for f, least in (("resourceSliceCount", 1), ("generation", 0)):
            v = pool.get(f)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < least):
                problems.append(f"spec.pool.{f}: Invalid value: {_r(v)}: must be an integer of at least {least}")
    scopes = [k for k in ("nodeName", "nodeSelector", "allNodes", "perDeviceNodeSelection") if spec.get(k)]
    if len(scopes) != 1:
        problems.append(
            "spec: exactly one of nodeName, nodeSelector, allNodes, perDeviceNodeSelection is required"
        )
    if spec.get("nodeName"):
        node = _subdomain_problem("spec.nodeName", spec["nodeName"])
        if node:
            problems.append(node)
    counters = spec.get("sharedCounters")
    if isinstance(counters, list):
        total = sum(len(c.get("counters") or {}) for c in counters if isinstance(c, dict)
                    and isinstance(c.get("counters") or {}, dict))
        if total > SLICE_MAX_SHARED_COUNTERS:
            problems.append(f"spec.sharedCounters: Invalid value: {total}: the total number of shared counters "
                            f"must not exceed {SLICE_MAX_SHARED_COUNTERS}")
        else:
            for i, c in enumerate(counters):
                problems += _counter_names_problems(c, f"spec.sharedCounters[{i}]", "name")
    devices = spec.get("devices")
    if devices is not None and not isinstance(devices, list):
        problems.append("spec.devices: must be a list")
        devices = []
    limit = SLICE_MAX_DEVICES
    if isinstance(devices, list) and len(devices) > SLICE_MAX_DEVICES_WITH_LISTS and _has_list_attributes(devices):
        limit = SLICE_MAX_DEVICES_WITH_LISTS
    too_many = _too_many("spec.devices", devices, limit)
    if too_many:  # short-circuits (DoS protection), as upstream
        _fail(obj, [*problems, too_many])
        return
    seen: set[str] = set()
    for i, dev in enumerate(devices or []):
        dpath = f"spec.devices[{i}]"
        if not isinstance(dev, dict) or not dev.get("name"):
            problems.append(f"{dpath}.name: required")
            continue
        if not isinstance(dev["name"], str):
            problems.append(f"{dpath}.name: must be a string, got {_r(dev['name'])}")
            continue
        if dev["name"] in seen:
            problems.append(f"{dpath}.name: duplicate value {_r(dev['name'])}")
        seen.add(dev["name"])
        problems += _device_problems(dev, dpath)
        consumes = dev.get("consumesCounters")
        for j, c in enumerate(consumes if isinstance(consumes, list) else []):
            problems += _counter_names_problems(c, f"{dpath}.consumesCounters[{j}]", "counterSet")
    _fail(obj, problems)


def _has_list_attributes(devices: list) -> bool:
    """Whether a device of the slice has a list-valued attribute (which lowers the device limit)."""
    for dev in devices[:SLICE_MAX_DEVICES + 1]:  # past that the slice is refused anyway
        attributes = dev.get("attributes") if isinstance(dev, dict) else None
        if isinstance(attributes, dict) and any(
            isinstance(value, dict) and any(key in value for key in _LIST_ATTRIBUTE_KINDS)
            for value in attributes.values()
        ):
            return True
    return False


def _counter_names_problems(counter_set, path: str, name_field: str) -> list[str]:
    """A counter set's name (``name`` in sharedCounters, ``counterSet`` in consumesCounters) and
    its counters' names are DNS labels, as the API server requires."""
    if not isinstance(counter_set, dict):
        return []
    problems = [p for p in [_label_problem(f"{path}.{name_field}", counter_set.get(name_field))] if p]
    names = counter_set.get("counters")
    for key in names if isinstance(names, dict) else {}:
        problem = _label_problem(f"{path}.counters", key)
        if problem:
            problems.append(problem)
    return problems


# ---------------------------------------------------------------------------------------------
# Nodes: the structure the scheduler reads (the API server's typed decoding guarantees it)

_NODE_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _taint_problems(taints: list, path: str, effects: tuple[str, ...]) -> list[str]:
    """Each taint a mapping with a qualified-name ``key``, a label-value ``value`` and a known
    ``effect``; unique by key and effect (for Node taints, as upstream)."""
    problems: list[str] = []
    seen: set = set()
    for i, taint in enumerate(taints):
        tpath = f"{path}[{i}]"
        if not isinstance(taint, dict):
            problems.append(f"{tpath}: must be a mapping (key, value, effect), got {_r(taint)}")
            continue
        key = _qualified_name_problem(taint.get("key"), f"{tpath}.key:")
        if key:
            problems.append(key)
        value = taint.get("value")
        if value is not None and (not isinstance(value, str) or (
                value and (len(value) > 63 or not _QUALIFIED_NAME.fullmatch(value)))):
            problems.append(f"{tpath}.value: Invalid value: {_r(value)}: must be a valid label value")
        effect = taint.get("effect")
        if effect not in effects:
            problems.append(f"{tpath}.effect: Unsupported value: {_r(effect)}: supported values: "
                            + ", ".join(f'"{e}"' for e in effects))
        ident = (taint.get("key"), effect)
        if not key and effect in effects:
            if ident in seen:
                problems.append(f"{tpath}: Duplicate value: taints must be unique by key and effect pair")
            seen.add(ident)
    return problems


def _conditions_problems(conditions, path: str) -> list[str]:
    """``conditions`` a list of mappings whose ``type`` and ``status`` are strings."""
    if conditions is None:
        return []
    if not isinstance(conditions, list):
        return [f"{path}: must be a list of conditions, got {_r(conditions)}"]
    problems = []
    for i, cond in enumerate(conditions):
        if not isinstance(cond, dict):
            problems.append(f"{path}[{i}]: must be a mapping (type, status, ...), got {_r(cond)}")
            continue
        for f in ("type", "status"):
            if not isinstance(cond.get(f), str) or not cond.get(f):
                problems.append(f"{path}[{i}].{f}: Required value: a string, got {_r(cond.get(f))}")
        for f in ("reason", "message", "lastTransitionTime", "lastProbeTime", "lastHeartbeatTime"):
            if cond.get(f) is not None and not isinstance(cond.get(f), str):
                problems.append(f"{path}[{i}].{f}: must be a string, got {_r(cond.get(f))}")
    return problems


def node_problems(obj: dict) -> list[str]:
    """What makes a Node unusable for scheduling: its spec (taints, unschedulable) and status
    (conditions, capacity, allocatable) of the wrong types. Shared with the scheduler's snapshot,
    which refuses such a node (naming it) rather than failing a plugin for every pod."""
    problems: list[str] = []
    spec = obj.get("spec")
    if spec is not None and not isinstance(spec, dict):
        problems.append(f"spec: must be a mapping, got {_r(spec)}")
    elif spec:
        taints = spec.get("taints")
        if taints is not None:
            if not isinstance(taints, list):
                problems.append(f"spec.taints: must be a list of taints, got {_r(taints)}")
            else:
                problems += _taint_problems(taints, "spec.taints", _NODE_TAINT_EFFECTS)
        if spec.get("unschedulable") is not None and not isinstance(spec.get("unschedulable"), bool):
            problems.append(f"spec.unschedulable: must be a boolean, got {_r(spec.get('unschedulable'))}")
    status = obj.get("status")
    if status is not None and not isinstance(status, dict):
        problems.append(f"status: must be a mapping, got {_r(status)}")
    elif status:
        problems += _conditions_problems(status.get("conditions"), "status.conditions")
        for f in ("capacity", "allocatable"):
            problems += _quantity_problems(status.get(f), f"status.{f}")[0]
    return problems


def validate_node(obj: dict) -> None:
    _fail(obj, node_problems(obj))


def validate_event(obj: dict) -> None:
    """The API server's check of a core/v1 Event, create and update (its legacy validation): the
    Event lives in its involvedObject's namespace; one about a cluster-scoped object (no namespace)
    lives in ``default`` (or ``kube-system``, for an Event with an ``eventTime``)."""
    md = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    ns = md.get("namespace") or ""
    involved = obj.get("involvedObject") if isinstance(obj.get("involvedObject"), dict) else {}
    inv_ns = involved.get("namespace") or ""
    allowed = ("", "default", "kube-system") if obj.get("eventTime") else ("", "default")
    if (inv_ns and inv_ns != ns) or (not inv_ns and ns not in allowed):
        _fail(obj, [f"involvedObject.namespace: Invalid value: {_r(inv_ns)}: does not match event.namespace"])


def validate_lease(obj: dict) -> None:
    """The API server's check of a Lease's spec: a positive ``leaseDurationSeconds``, and
    ``leaseTransitions`` not negative."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    problems = []
    duration, transitions = spec.get("leaseDurationSeconds"), spec.get("leaseTransitions")
    if duration is not None and (not isinstance(duration, int) or isinstance(duration, bool) or duration <= 0):
        problems.append(f"spec.leaseDurationSeconds: Invalid value: {_r(duration)}: must be greater than 0")
    if transitions is not None and (not isinstance(transitions, int) or isinstance(transitions, bool)
                                    or transitions < 0):
        problems.append(f"spec.leaseTransitions: Invalid value: {_r(transitions)}: must be greater than or equal to 0")
    _fail(obj, problems)


VALIDATORS: dict[tuple[str, str], Callable[[dict], None]] = {
    ("", "Pod"): validate_pod,
    ("", "Node"): validate_node,
    ("", "Event"): validate_event,
    ("coordination.k8s.io", "Lease"): validate_lease,
    ("resource.k8s.io", "DeviceClass"): validate_device_class,
    ("resource.k8s.io", "ResourceClaim"): validate_resource_claim,
    ("resource.k8s.io", "ResourceClaimTemplate"): validate_resource_claim_template,
    ("resource.k8s.io", "ResourceSlice"): validate_resource_slice,
}

#: validators of a write of the status subresource, where it checks less than a whole write
STATUS_VALIDATORS: dict[tuple[str, str], Callable[[dict], None]] = {
    ("", "Pod"): validate_pod_status,
    ("resource.k8s.io", "ResourceClaim"): validate_resource_claim_status,
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
