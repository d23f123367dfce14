"""Validation of built-in kinds, as the API server does it on create and update.

Covers what users get wrong and what the scheduler relies on: object names, pods' containers and
resource claims, DRA requests, and CEL selectors, which are compiled on write so a broken
expression is refused at once, naming the object and the expression.
"""

from __future__ import annotations

import re

from kai_core.errors import Invalid
from kai_core.kinds import ResourceKind

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_NAME_KINDS = {"Namespace"}


def validate_name(kind: ResourceKind, name) -> None:
    if not isinstance(name, str):
        raise Invalid(f"{kind.kind}: metadata.name must be a string")
    if kind.kind in _LABEL_NAME_KINDS:
        ok = len(name) <= 63 and _DNS_LABEL.fullmatch(name)
        rule = "a lowercase RFC 1123 label (at most 63 characters)"
    else:
        ok = len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name)
        rule = "a lowercase RFC 1123 subdomain (at most 253 characters)"
    if not ok:
        raise Invalid(f'{kind.kind} "{name}" is invalid: metadata.name must be {rule}')


def _where(obj: dict) -> str:
    md = obj.get("metadata") or {}
    ns = md.get("namespace")
    name = md.get("name", "")
    return f"{obj.get('kind')} {ns}/{name}" if ns else f"{obj.get('kind')} {name}"


def _fail(obj: dict, problems: list[str]) -> None:
    if problems:
        raise Invalid(f"{_where(obj)} is invalid: " + "; ".join(problems))


def validate_pod(obj: dict) -> None:
    problems: list[str] = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        _fail(obj, ["spec: required"])
        return
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        problems.append("spec.containers: at least one container is required")
        containers = []
    pod_claims = set()
    for i, rc in enumerate(spec.get("resourceClaims") or []):
        path = f"spec.resourceClaims[{i}]"
        if not isinstance(rc, dict) or not rc.get("name"):
            problems.append(f"{path}.name: required")
            continue
        if rc["name"] in pod_claims:
            problems.append(f"{path}.name: duplicate value {rc['name']!r}")
        pod_claims.add(rc["name"])
        if bool(rc.get("resourceClaimName")) == bool(rc.get("resourceClaimTemplateName")):
            problems.append(f"{path}: exactly one of resourceClaimName or resourceClaimTemplateName is required")
    for key in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(key) or []):
            path = f"spec.{key}[{i}]"
            if not isinstance(c, dict) or not c.get("name"):
                problems.append(f"{path}.name: required")
                continue
            for j, cc in enumerate(((c.get("resources") or {}).get("claims")) or []):
                if not isinstance(cc, dict) or cc.get("name") not in pod_claims:
                    n = cc.get("name") if isinstance(cc, dict) else cc
                    problems.append(
                        f"{path}.resources.claims[{j}].name: {n!r} must be one of spec.resourceClaims' names"
                    )
    _fail(obj, problems)


def _cel_problems(expressions: list[tuple[str, str]]) -> list[str]:
    from kai_core.dra.cel import CelCompileError, compile_selector

    problems = []
    for path, expr in expressions:
        if not isinstance(expr, str) or not expr.strip():
            problems.append(f"{path}: a CEL expression is required")
            continue
        try:
            compile_selector(expr)
        except CelCompileError as exc:
            problems.append(f"{path}: {exc}")
    return problems


def _selector_exprs(selectors, path: str) -> list[tuple[str, str]]:
    out = []
    for i, sel in enumerate(selectors or []):
        cel = sel.get("cel") if isinstance(sel, dict) else None
        if not isinstance(cel, dict):
            out.append((f"{path}[{i}].cel", None))
            continue
        out.append((f"{path}[{i}].cel.expression", cel.get("expression")))
    return out


def validate_device_class(obj: dict) -> None:
    spec = obj.get("spec") or {}
    _fail(obj, _cel_problems(_selector_exprs(spec.get("selectors"), "spec.selectors")))


def _claim_spec_problems(spec, path: str) -> list[str]:
    if not isinstance(spec, dict):
        return [f"{path}: required"]
    problems: list[str] = []
    exprs: list[tuple[str, str]] = []
    devices = spec.get("devices") or {}
    names = set()
    for i, req in enumerate(devices.get("requests") or []):
        rpath = f"{path}.devices.requests[{i}]"
        if not isinstance(req, dict) or not req.get("name"):
            problems.append(f"{rpath}.name: required")
            continue
        if req["name"] in names:
            problems.append(f"{rpath}.name: duplicate value {req['name']!r}")
        names.add(req["name"])
        exactly, first = req.get("exactly"), req.get("firstAvailable")
        if bool(exactly) == bool(first):
            problems.append(f"{rpath}: exactly one of exactly or firstAvailable is required")
            continue
        subs = [(f"{rpath}.exactly", exactly)] if exactly else [
            (f"{rpath}.firstAvailable[{j}]", s) for j, s in enumerate(first)
        ]
        for spath, sub in subs:
            if not isinstance(sub, dict) or not sub.get("deviceClassName"):
                problems.append(f"{spath}.deviceClassName: required")
                continue
            mode = sub.get("allocationMode", "ExactCount")
            if mode not in ("ExactCount", "All"):
                problems.append(f"{spath}.allocationMode: unsupported value {mode!r}: ExactCount or All")
            count = sub.get("count")
            if mode == "ExactCount" and count is not None and (not isinstance(count, int) or count < 1):
                problems.append(f"{spath}.count: must be a positive integer")
            exprs += _selector_exprs(sub.get("selectors"), f"{spath}.selectors")
    for i, cons in enumerate(devices.get("constraints") or []):
        for r in (cons or {}).get("requests") or []:
            if r.split("/")[0] not in names:
                problems.append(f"{path}.devices.constraints[{i}].requests: {r!r} is not a request of this claim")
    return problems + _cel_problems(exprs)


def validate_resource_claim(obj: dict) -> None:
    _fail(obj, _claim_spec_problems(obj.get("spec"), "spec"))


def validate_resource_claim_template(obj: dict) -> None:
    _fail(obj, _claim_spec_problems((obj.get("spec") or {}).get("spec"), "spec.spec"))


def validate_resource_slice(obj: dict) -> None:
    spec = obj.get("spec") or {}
    problems = []
    if not spec.get("driver"):
        problems.append("spec.driver: required")
    pool = spec.get("pool") or {}
    if not pool.get("name"):
        problems.append("spec.pool.name: required")
    scopes = [k for k in ("nodeName", "nodeSelector", "allNodes", "perDeviceNodeSelection") if spec.get(k)]
    if len(scopes) != 1:
        problems.append("spec: exactly one of nodeName, nodeSelector, allNodes, perDeviceNodeSelection is required")
    _fail(obj, problems)


VALIDATORS = {
    ("", "Pod"): validate_pod,
    ("resource.k8s.io", "DeviceClass"): validate_device_class,
    ("resource.k8s.io", "ResourceClaim"): validate_resource_claim,
    ("resource.k8s.io", "ResourceClaimTemplate"): validate_resource_claim_template,
    ("resource.k8s.io", "ResourceSlice"): validate_resource_slice,
}
