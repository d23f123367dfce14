"""Our ComputeDomain CRD against NVIDIA's (resource.nvidia.com/v1beta1).

Ours must accept what NVIDIA's CRD accepts and refuse what it refuses, with two deliberate
exceptions listed in the CRD's header (spec required; the claim template name must be a valid
object name). NVIDIA's CRD and demo specs are read from ../shared/upstream/ (relative to the project
root); those tests skip when the folder is absent.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kai_core.apiserver.schema import CrdValidator, SchemaError, builtin_crd_paths, crd_path, load_crd

PROJECT = Path(__file__).resolve().parents[3]
UPSTREAM = PROJECT.parent / "shared" / "upstream"
NVIDIA_CRD = UPSTREAM / "nvidia.computedomains.crd.yaml"
DEMO_FILES = (
    "nvidia.demo.channel-injection.yaml",
    "nvidia.demo.channel-injection-all.yaml",
    "nvidia.demo.nvbandwidth-test-job-1.yaml",
)


@pytest.fixture(scope="module")
def ours() -> CrdValidator:
    return CrdValidator(load_crd(crd_path("computedomains.resource.nvidia.com", package="kai_dra_nvidia")))


@pytest.fixture(scope="module")
def nvidia() -> CrdValidator:
    if not NVIDIA_CRD.is_file():
        pytest.skip(f"NVIDIA's ComputeDomain CRD not found at {NVIDIA_CRD} (../shared/upstream absent)")
    return CrdValidator(load_crd(NVIDIA_CRD))


def demo_compute_domains() -> list[dict[str, Any]]:
    if not UPSTREAM.is_dir():
        pytest.skip(f"upstream demo specs not found in {UPSTREAM}")
    found = []
    for name in DEMO_FILES:
        for doc in yaml.safe_load_all((UPSTREAM / name).read_text(encoding="utf-8")):
            if isinstance(doc, dict) and doc.get("kind") == "ComputeDomain":
                found.append(doc)
    assert len(found) == len(DEMO_FILES)
    return found


def compute_domain(spec: Any = None, status: Any = None, **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "resource.nvidia.com/v1beta1",
        "kind": "ComputeDomain",
        "metadata": {"name": "cd", "namespace": "default"},
        **extra,
    }
    obj["spec"] = {"channel": {"resourceClaimTemplate": {"name": "imex-channel-0"}}} if spec is None else spec
    if status is not None:
        obj["status"] = status
    return obj


def channel(name: Any = "imex-channel-0", **more: Any) -> dict[str, Any]:
    return {"resourceClaimTemplate": {"name": name}, **more}


def test_names_and_shape(ours: CrdValidator) -> None:
    assert (ours.group, ours.version, ours.kind, ours.plural, ours.singular) == (
        "resource.nvidia.com",
        "v1beta1",
        "ComputeDomain",
        "computedomains",
        "computedomain",
    )
    assert ours.namespaced and ours.has_status
    assert ours.versions == ["v1beta1"]
    paths = builtin_crd_paths("kai_dra_nvidia")
    assert [p.name for p in paths] == ["resource.nvidia.com_computedomains.yaml"]


def test_same_resource_as_nvidias(ours: CrdValidator, nvidia: CrdValidator) -> None:
    assert (ours.name, ours.api_version, ours.kind, ours.plural, ours.namespaced, ours.has_status) == (
        nvidia.name,
        nvidia.api_version,
        nvidia.kind,
        nvidia.plural,
        nvidia.namespaced,
        nvidia.has_status,
    )


def test_spec_is_declared_immutable_for_real_clusters(ours: CrdValidator) -> None:
    # CrdValidator does not evaluate CEL; the rule is there for an API server (and documents intent).
    rules = ours.schema["properties"]["spec"]["x-kubernetes-validations"]
    assert [r["rule"] for r in rules] == ["self == oldSelf"]


def test_demo_compute_domains_are_accepted_by_both(ours: CrdValidator, nvidia: CrdValidator) -> None:
    for doc in demo_compute_domains():
        assert ours.errors(doc) == [], doc["metadata"]["name"]
        assert nvidia.errors(doc) == [], doc["metadata"]["name"]
        defaulted = ours.apply_defaults(doc)
        assert defaulted == nvidia.apply_defaults(doc)
        assert defaulted["spec"]["channel"]["allocationMode"] == doc["spec"]["channel"].get(
            "allocationMode", "Single"
        )
        ours.validate(defaulted)


ACCEPTED = {
    "numNodes-0": compute_domain({"numNodes": 0, "channel": channel()}),
    "numNodes-absent": compute_domain({"channel": channel()}),
    "numNodes-large": compute_domain({"numNodes": 72, "channel": channel("tpl.with.dots")}),
    "mode-all": compute_domain({"channel": channel(allocationMode="All")}),
    "mode-single": compute_domain({"numNodes": 2, "channel": channel(allocationMode="Single")}),
    "status-notready": compute_domain(status={"status": "NotReady"}),
    "status-nodes": compute_domain(
        status={
            "status": "Ready",
            "nodes": [
                {"name": "n1", "ipAddress": "10.0.0.1", "cliqueID": "uuid.1", "index": 0, "status": "Ready"},
                {"name": "n2", "ipAddress": "10.0.0.2", "cliqueID": "uuid.1"},
                {"name": "n3", "ipAddress": "10.0.0.3", "cliqueID": "", "index": -1, "status": "NotReady"},
            ],
        }
    ),
    "status-empty-nodes": compute_domain(status={"status": "Ready", "nodes": []}),
    "metadata-anything": compute_domain(
        metadata={"name": "cd", "labels": {"a": "b"}, "uid": "83479f70-e292-43d6-aa67-dd4ba8adab8f"}
    ),
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted_by_both(name: str, ours: CrdValidator, nvidia: CrdValidator) -> None:
    obj = ACCEPTED[name]
    assert ours.errors(obj) == []
    assert nvidia.errors(obj) == []
    assert ours.apply_defaults(obj) == nvidia.apply_defaults(obj)
    assert ours.errors(ours.apply_defaults(obj)) == []


def test_defaults(ours: CrdValidator) -> None:
    out = ours.apply_defaults(
        compute_domain(
            {"channel": channel()}, status={"nodes": [{"name": "n1", "ipAddress": "a", "cliqueID": "c"}]}
        )
    )
    assert out["spec"] == {
        "numNodes": 0,
        "channel": {"resourceClaimTemplate": {"name": "imex-channel-0"}, "allocationMode": "Single"},
    }
    assert out["status"] == {
        "status": "NotReady",
        "nodes": [{"name": "n1", "ipAddress": "a", "cliqueID": "c", "status": "NotReady"}],
    }
    # status as the controller first writes it: empty, then defaulted to NotReady, which validates
    assert ours.apply_defaults(compute_domain(status={}))["status"] == {"status": "NotReady"}


def _node(**fields: Any) -> dict[str, Any]:
    return {"name": "n1", "ipAddress": "10.0.0.1", "cliqueID": "c", **fields}


REFUSED = {
    "negative numNodes": (
        compute_domain({"numNodes": -1, "channel": channel()}),
        "spec.numNodes: -1 is less than",
    ),
    "numNodes as string": (
        compute_domain({"numNodes": "2", "channel": channel()}),
        "spec.numNodes: '2' is not of",
    ),
    "numNodes as float": (
        compute_domain({"numNodes": 1.5, "channel": channel()}),
        "spec.numNodes: 1.5 is not of",
    ),
    "bad allocationMode": (
        compute_domain({"channel": channel(allocationMode="Many")}),
        "spec.channel.allocationMode: 'Many' is not one of",
    ),
    "allocationMode wrong case": (
        compute_domain({"channel": channel(allocationMode="single")}),
        "spec.channel.allocationMode: 'single' is not one of",
    ),
    "missing template name": (
        compute_domain({"channel": {"resourceClaimTemplate": {}}}),
        "spec.channel.resourceClaimTemplate.name: required field is missing",
    ),
    "template name not a string": (
        compute_domain({"channel": channel(7)}),
        "spec.channel.resourceClaimTemplate.name: 7 is not of type 'string'",
    ),
    "missing resourceClaimTemplate": (
        compute_domain({"channel": {"allocationMode": "All"}}),
        "spec.channel.resourceClaimTemplate: required field is missing",
    ),
    "missing channel": (compute_domain({"numNodes": 1}), "spec.channel: required field is missing"),
    "unknown spec field": (
        compute_domain({"channel": channel(), "numnodes": 2}),
        "spec.numnodes: unknown field",
    ),
    "unknown channel field": (
        compute_domain({"channel": channel(mode="All")}),
        "spec.channel.mode: unknown field",
    ),
    "unknown template field": (
        compute_domain({"channel": {"resourceClaimTemplate": {"name": "a", "ns": "b"}}}),
        "spec.channel.resourceClaimTemplate.ns: unknown field",
    ),
    "spec not an object": (compute_domain("numNodes: 1"), "spec: 'numNodes: 1' is not of type 'object'"),
    "bad status": (compute_domain(status={"status": "Unknown"}), "status.status: 'Unknown' is not one of"),
    "status without status": (
        compute_domain(status={"nodes": []}),
        "status.status: required field is missing",
    ),
    "node without ipAddress": (
        compute_domain(status={"status": "Ready", "nodes": [{"name": "n1", "cliqueID": "c"}]}),
        "status.nodes[0].ipAddress: required field is missing",
    ),
    "node with bad status": (
        compute_domain(status={"status": "Ready", "nodes": [_node(status="Up")]}),
        "status.nodes[0].status: 'Up' is not one of",
    ),
    "node with string index": (
        compute_domain(status={"status": "Ready", "nodes": [_node(index="0")]}),
        "status.nodes[0].index: '0' is not of type 'integer'",
    ),
    "duplicate node names": (
        compute_domain(status={"status": "Ready", "nodes": [_node(), _node(cliqueID="d")]}),
        "status.nodes[1]: duplicate entry (name='n1')",
    ),
    "unknown root field": (compute_domain(extra=1), "extra: unknown field"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_by_both(name: str, ours: CrdValidator, nvidia: CrdValidator) -> None:
    obj, problem = REFUSED[name]
    errors = ours.errors(obj)
    assert len(errors) == 1 and errors[0].startswith(problem), errors
    assert nvidia.errors(obj), "NVIDIA's CRD accepts this, so ours must too"
    with pytest.raises(
        SchemaError, match=problem.split(":")[0].replace("[", r"\[").replace("]", r"\]")
    ) as info:
        ours.validate(obj)
    assert info.value.ref == "ComputeDomain default/cd"


DELIBERATELY_STRICTER = {
    "no spec at all": (
        {k: v for k, v in compute_domain().items() if k != "spec"},
        "spec: required field is missing",
    ),
    "empty template name": (
        compute_domain({"channel": channel("")}),
        "spec.channel.resourceClaimTemplate.name: '' does not match",
    ),
    "template name with capitals": (
        compute_domain({"channel": channel("Imex_Channel")}),
        "spec.channel.resourceClaimTemplate.name: 'Imex_Channel' does not match",
    ),
    "template name too long": (
        compute_domain({"channel": channel("a" * 254)}),
        "spec.channel.resourceClaimTemplate.name: 'aaaa",
    ),
}


@pytest.mark.parametrize("name", sorted(DELIBERATELY_STRICTER))
def test_deliberately_stricter_than_nvidias(name: str, ours: CrdValidator, nvidia: CrdValidator) -> None:
    """NVIDIA's CRD accepts these but the controller could not create the claim template: ours refuses."""
    obj, problem = DELIBERATELY_STRICTER[name]
    assert nvidia.errors(obj) == []
    errors = ours.errors(obj)
    assert len(errors) == 1 and errors[0].startswith(problem), errors


def test_fast_path_and_full_validation_agree_on_every_sample(
    ours: CrdValidator, nvidia: CrdValidator
) -> None:
    samples = [
        *ACCEPTED.values(),
        *(o for o, _ in REFUSED.values()),
        *(o for o, _ in DELIBERATELY_STRICTER.values()),
    ]
    for v in (ours, nvidia):
        assert v._fast is not None
        for obj in samples:
            assert v._fast(copy.deepcopy(obj)) == (next(iter(v._validator.iter_errors(obj)), None) is None), (
                obj
            )
