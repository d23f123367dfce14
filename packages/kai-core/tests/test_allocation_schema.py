"""What the allocator produces is what a real API server stores: each AllocationResult shape (node-local
and selector-based node selectors, ``All``, ``firstAvailable``, admin access with tolerations, class and
claim configs, partitionable devices) written into a claim's status passes the upstream
``resource.k8s.io/v1`` schema with ``kubernetes-validate --strict``, and so do the inputs it was
computed from."""

from __future__ import annotations

import copy

import pytest

from kai_core.dra.allocator import DraInventory, allocate
from kai_core.dra.testing import (
    GPU,
    claim,
    device_class,
    gpu_device,
    gpu_slice,
    mig_counter_slice,
    mig_devices,
    node,
    opaque,
    request,
    resource_slice,
    sub_request,
)

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is missing")

K8S_VERSION = "1.34.0"  # the first release serving resource.k8s.io/v1
EX = "gpu.example.com"
GPU_CLASS = device_class(
    EX,
    f"device.driver == '{GPU}' && device.attributes['{GPU}'].type == 'gpu'",
    config=[opaque(GPU, sharing={"strategy": "TimeSlicing"})],
)
MIG_CLASS = device_class("mig.example.com", f"device.attributes['{GPU}'].type == 'mig'")
ADMIN_NS = {"ops": {"metadata": {"name": "ops", "labels": {"resource.kubernetes.io/admin-access": "true"}}}}
XID = {"key": "gpu.nvidia.com/xid", "value": "79", "effect": "NoSchedule"}


def _valid(obj: dict) -> None:
    shipped = {kubernetes_validate.utils.major_minor(v) for v in kubernetes_validate.utils.all_versions()}
    if K8S_VERSION.rpartition(".")[0] not in shipped:
        pytest.skip(f"kubernetes-validate {kubernetes_validate.__version__} has no {K8S_VERSION} schemas")
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc.message} at {list(exc.absolute_path)}")


def _selector_slice(name: str, devices: list[dict]) -> dict:
    term = {"matchExpressions": [{"key": "rack", "operator": "In", "values": ["r1"]}]}
    return resource_slice(name, GPU, name, devices, node_selector={"nodeSelectorTerms": [term]})


CASES = [
    pytest.param(
        [gpu_slice("n1", count=4)],
        claim(
            "pair",
            request("a", EX),
            request("b", EX),
            config=[{"requests": ["b"], **opaque(GPU, note="b only")}, opaque(GPU, note="all")],
            constraints=[{"matchAttribute": "resource.kubernetes.io/pcieRoot"}],
        ),
        "matchFields",
        id="node-local-with-configs-and-constraint",
    ),
    pytest.param(
        [_selector_slice("rack-r1", [gpu_device(0), gpu_device(1)])],
        claim("everything", request("all", EX, allocationMode="All")),
        "matchExpressions",
        id="all-mode-on-a-selector-slice",
    ),
    pytest.param(
        [resource_slice("everywhere", GPU, "shared", [gpu_device(0)], all_nodes=True)],
        claim("anywhere", request("gpu", EX)),
        None,
        id="all-nodes-slice-has-no-node-selector",
    ),
    pytest.param(
        [gpu_slice("n1", count=2)],
        claim(
            "fallback",
            {"name": "gpu", "firstAvailable": [
                sub_request("big", EX, 4), sub_request("small", EX, 1, tolerations=[
                    {"key": XID["key"], "operator": "Exists", "effect": "NoSchedule"}])]},
        ),
        "matchFields",
        id="first-available-with-tolerations",
    ),
    pytest.param(
        [gpu_slice("n1", devices=[gpu_device(0, taints=[XID])])],
        claim("monitor", request("gpu", EX, 1, adminAccess=True, tolerations=[
            {"key": XID["key"], "operator": "Equal", "value": "79", "effect": "NoSchedule"}]), namespace="ops"),
        "matchFields",
        id="admin-access-on-a-tainted-device",
    ),
    pytest.param(
        [gpu_slice("n1", devices=mig_devices(0, [("1g.10gb", s) for s in range(7)]), slice_count=2),
         mig_counter_slice("n1", gpus=1)],
        claim("migs", request("mig", "mig.example.com", 3)),
        "matchFields",
        id="partitionable-devices",
    ),
]


@pytest.mark.parametrize(("slices", "the_claim", "selector_kind"), CASES)
def test_allocation_results_pass_the_upstream_schema(slices: list[dict], the_claim: dict,
                                                     selector_kind: str | None) -> None:
    for obj in [*slices, GPU_CLASS, MIG_CLASS, the_claim]:
        _valid(obj)
    inventory = DraInventory(slices, [GPU_CLASS, MIG_CLASS])
    [allocation] = allocate([the_claim], node("n1", rack="r1"), inventory, set(), namespaces=ADMIN_NS)
    stored = copy.deepcopy(the_claim)
    stored["metadata"].update(uid="0b5e7a1c-0000-4000-8000-000000000001", resourceVersion="7",
                              finalizers=["resource.kubernetes.io/delete-protection"])
    stored["status"] = {
        "allocation": allocation,
        "reservedFor": [{"resource": "pods", "name": "p", "uid": "0b5e7a1c-0000-4000-8000-000000000002"}],
    }
    _valid(stored)
    terms = (allocation.get("nodeSelector") or {}).get("nodeSelectorTerms")
    if selector_kind is None:
        assert terms is None
    else:
        assert [list(term) for term in terms] == [[selector_kind]]
