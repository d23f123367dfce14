"""Our CRDs (``deploy/crds``) are a superset of KAI-Scheduler's (``../shared/upstream/kai-scheduler.*.crd.yaml``,
KAI at commit d5bc503a; every test here skips when ../shared is absent): the same kinds, every
version KAI serves, every property path of KAI's schemas, and no constraint beyond KAI's except the
few listed in :data:`NARROWED`, each one a value KAI's own components never write. So installing ours
on a cluster running KAI prunes nothing KAI writes and refuses nothing it writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "crds"
GROUP = "scheduling.run.ai"
#: what a schema node may carry besides its children, and is not a constraint
NOT_CONSTRAINTS = {"description", "properties", "items", "additionalProperties", "default"}
#: path -> the constraints ours adds there, and why KAI's components never write what they refuse
#: (read in KAI's code: pkg/scheduler/cache/cache.go createBindRequest, the binder's UpdateStatus)
NARROWED: dict[tuple[str, str], dict[str, Any]] = {
    # the scheduler always sets both names, the pod's and the node's
    ("bindrequests", "<root>"): {"required": ["spec"]},
    ("bindrequests", "spec"): {"required": ["podName", "selectedNode"]},
    ("bindrequests", "spec.podName"): {"minLength": 1},
    ("bindrequests", "spec.selectedNode"): {"minLength": 1},
    # pod_info.ResourceReceivedType has exactly these four values
    ("bindrequests", "spec.receivedResourceType"): {"enum": ["", "Regular", "Fraction", "MigInstance"]},
    # a device count, and fmt.Sprintf("%.2f") of a portion in [0, 1]
    ("bindrequests", "spec.receivedGPU.count"): {"minimum": 0},
    ("bindrequests", "spec.receivedGPU.portion"): {"pattern": r"^[0-9]+(\.[0-9]+)?$"},
    # built from a map keyed by the pod's claim name: one entry per claim, each named
    ("bindrequests", "spec.resourceClaimAllocations"): {"x-kubernetes-list-type": "map",
                                                        "x-kubernetes-list-map-keys": ["name"]},
    ("bindrequests", "spec.resourceClaimAllocations[]"): {"required": ["name"]},
    ("bindrequests", "spec.resourceClaimAllocations[].name"): {"minLength": 1},
    # counts, and the binder's phases
    ("bindrequests", "spec.backoffLimit"): {"minimum": 0},
    ("bindrequests", "status.failedAttempts"): {"minimum": 0},
    ("bindrequests", "status.phase"): {"enum": ["", "Pending", "Succeeded", "Failed"]},
}
#: in both AllocationResults (a claim's and the extended-resource claim's): the values the
#: resource.k8s.io API itself allows, which the allocator copies
for _alloc in ("spec.resourceClaimAllocations[].allocation", "spec.extendedResourceClaimAllocation.allocation"):
    NARROWED[("bindrequests", f"{_alloc}.devices.results[].tolerations[].operator")] = {"enum": ["Equal", "Exists"]}
    NARROWED[("bindrequests", f"{_alloc}.devices.config[].source")] = {"enum": ["FromClass", "FromClaim"]}
    for _m in ("matchExpressions", "matchFields"):
        NARROWED[("bindrequests", f"{_alloc}.nodeSelector.nodeSelectorTerms[].{_m}[].operator")] = {
            "enum": ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _kais(upstream_dir: Path) -> dict[str, Path]:
    """KAI's CRD files of our group, by plural."""
    out = {}
    for path in sorted(upstream_dir.glob("kai-scheduler.*.crd.yaml")):
        crd = _load(path)
        if crd["spec"]["group"] == GROUP:
            out[crd["spec"]["names"]["plural"]] = path
    return out


def _ours() -> dict[str, Path]:
    return {_load(p)["spec"]["names"]["plural"]: p for p in sorted(DEPLOY.glob(f"{GROUP}_*.yaml"))}


def schema_paths(schema: dict, prefix: str = "") -> dict[str, dict]:
    """Every node of an openAPIV3Schema by path (``a.b``, ``a[]`` for items, ``a{}`` for map values)."""
    out = {prefix or "<root>": schema}
    for name, sub in (schema.get("properties") or {}).items():
        out.update(schema_paths(sub, f"{prefix}.{name}" if prefix else name))
    if isinstance(schema.get("items"), dict):
        out.update(schema_paths(schema["items"], f"{prefix}[]"))
    if isinstance(schema.get("additionalProperties"), dict):
        out.update(schema_paths(schema["additionalProperties"], f"{prefix}{{}}"))
    return out


def _constraints(node: dict) -> dict[str, Any]:
    out = {k: v for k, v in node.items() if k not in NOT_CONSTRAINTS}
    if "required" in out:
        out["required"] = sorted(out["required"])
    return out


def _served(crd: dict) -> dict[str, dict]:
    return {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}


def test_we_define_exactly_kais_kinds(upstream_dir: Path) -> None:
    kais = _kais(upstream_dir)
    assert kais, f"no KAI CRD of {GROUP} under {upstream_dir}"
    assert sorted(_ours()) == sorted(kais), f"deploy/crds must define KAI's {GROUP} kinds"


@pytest.mark.parametrize("plural", sorted(_ours()))
def test_every_version_and_property_of_kais_is_ours(plural: str, upstream_dir: Path) -> None:
    kais = _kais(upstream_dir)
    assert plural in kais, f"KAI has no {plural}.{GROUP} CRD"
    theirs, ours = _load(kais[plural]), _load(_ours()[plural])
    assert ours["spec"]["scope"] == theirs["spec"]["scope"]
    assert ours["spec"]["names"]["kind"] == theirs["spec"]["names"]["kind"]
    missing_versions = sorted(set(_served(theirs)) - set(_served(ours)))
    assert not missing_versions, f"{plural}: versions KAI serves and we do not: {missing_versions}"
    for name, version in _served(theirs).items():
        mine = _served(ours)[name]
        assert mine.get("storage") == version.get("storage"), f"{plural} {name}: storage"
        assert bool(mine.get("subresources", {}).get("status")) == bool(
            version.get("subresources", {}).get("status")), f"{plural} {name}: the status subresource"
        a = schema_paths(version["schema"]["openAPIV3Schema"])
        b = schema_paths(mine["schema"]["openAPIV3Schema"])
        missing = [p for p in a if p not in b]
        assert not missing, f"{plural} {name}: properties of KAI's schema missing from ours: {missing}"


@pytest.mark.parametrize("plural", sorted(_ours()))
def test_ours_constrains_nothing_kai_writes(plural: str, upstream_dir: Path) -> None:
    """Where a path is in both schemas, ours has KAI's type, format and constraints, plus only the
    narrowings of :data:`NARROWED`."""
    kais = _kais(upstream_dir)
    theirs, ours = _load(kais[plural]), _load(_ours()[plural])
    problems = []
    for name, version in _served(theirs).items():
        a = schema_paths(version["schema"]["openAPIV3Schema"])
        b = schema_paths(_served(ours)[name]["schema"]["openAPIV3Schema"])
        for path in a.keys() & b.keys():
            want = {**_constraints(a[path]), **NARROWED.get((plural, path), {})}
            got = _constraints(b[path])
            if got != want:
                problems.append(f"{path}: KAI {_constraints(a[path])}, ours {got}")
            if a[path].get("default") != b[path].get("default"):
                problems.append(f"{path}: default {a[path].get('default')!r} in KAI's, "
                                f"{b[path].get('default')!r} in ours")
    assert not problems, f"{plural}: ours differs from KAI's beyond NARROWED:\n" + "\n".join(problems)


def test_the_walk_finds_a_property_that_is_missing(upstream_dir: Path) -> None:
    """The walk itself: drop one deep property from a copy of ours and it is reported by path."""
    kais = _kais(upstream_dir)
    ours = _load(_ours()["bindrequests"])
    schema = ours["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    ext = schema["properties"]["spec"]["properties"]["extendedResourceClaimAllocation"]
    del ext["properties"]["containerMappings"]["items"]["properties"]["resourceName"]
    theirs = _load(kais["bindrequests"])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    missing = [p for p in schema_paths(theirs) if p not in schema_paths(schema)]
    assert missing == ["spec.extendedResourceClaimAllocation.containerMappings[].resourceName"]


def kai_written_bind_request() -> dict:
    """A BindRequest with every field KAI's scheduler writes (createBindRequest) and the status its
    binder writes after a failure (UpdateStatus)."""
    allocation = {
        "devices": {"results": [{"request": "container-0-request-0", "driver": "gpu.nvidia.com",
                                 "pool": "node-1", "device": "gpu-0"}]},
        "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}]},
    }
    return {
        "apiVersion": f"{GROUP}/v1alpha2", "kind": "BindRequest",
        "metadata": {"name": "p", "namespace": "default",
                     "labels": {"selected-node": "node-1", "kai.scheduler/node-pool": "pool-a"},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u1"}]},
        "spec": {
            "podName": "p", "selectedNode": "node-1", "receivedResourceType": "Fraction",
            "receivedGPU": {"count": 1, "portion": "0.50"}, "selectedGPUGroups": ["g1"],
            "resourceClaimAllocations": [{"name": "gpu", "allocation": allocation}],
            "extendedResourceClaimAllocation": {
                "allocation": allocation,
                "deviceRequests": [{"name": "container-0-request-0", "exactly": {
                    "deviceClassName": "gpu.nvidia.com", "allocationMode": "ExactCount", "count": 1}}],
                "containerMappings": [{"containerName": "c", "resourceName": "nvidia.com/gpu",
                                       "requestName": "container-0-request-0"}],
            },
            "predictedNUMAZones": [{"zone": "0", "amount": {"nvidia.com/gpu": "1", "cpu": "4"}}],
            "backoffLimit": 3,
        },
        "status": {"phase": "Failed", "reason": "failed to bind", "failedAttempts": 1},
    }


def test_a_bind_request_with_every_field_kai_writes_is_valid_under_ours_and_kais(upstream_dir: Path) -> None:
    from kai_core.apiserver.schema import CrdValidator, load_crd

    br = kai_written_bind_request()
    for path in (_kais(upstream_dir)["bindrequests"], _ours()["bindrequests"]):
        validator = CrdValidator(load_crd(path))
        assert validator.errors(validator.apply_defaults(br)) == [], path
    ours = CrdValidator(load_crd(_ours()["bindrequests"]))
    br["spec"]["extendedResourceClaimAllocation"]["containerMappings"][0].pop("requestName")
    assert ours.errors(br) == ["spec.extendedResourceClaimAllocation.containerMappings[0].requestName: "
                               "required field is missing"]
