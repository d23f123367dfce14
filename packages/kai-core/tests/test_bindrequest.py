"""BindRequests exactly in KAI's shape, and valid against KAI's own CRD."""

from __future__ import annotations

import re

import pytest

from kai_core.api.bindrequest import BindRequestError, build_bind_request
from kai_core.api.features import FeatureGates
from kai_core.apiserver.schema import CrdValidator
from kai_core.scheduler.cycle import SchedulerConfig

GPU = "nvidia.com/gpu"


@pytest.fixture(scope="module")
def kai_crd(upstream_dir) -> CrdValidator:
    path = upstream_dir / "kai-scheduler.bindrequests.crd.yaml"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return CrdValidator(path)


def test_a_bind_request_in_kai_shape(world):
    w = world(world.node("gpu-node-1", extra={GPU: "8"}), world.pod("trainer", limits={GPU: "2"}))
    w.cycle()
    [br] = w.bind_requests()
    pod = w.get_pod("trainer")
    md = br["metadata"]
    assert (br["apiVersion"], br["kind"]) == ("scheduling.run.ai/v1alpha2", "BindRequest")
    assert re.fullmatch(r"trainer-[a-z0-9]{10}", md["name"])
    assert md["namespace"] == "default"
    assert md["labels"] == {"selected-node": "gpu-node-1", "pod-name": "trainer"}
    assert md["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "trainer", "uid": pod["metadata"]["uid"]}]
    assert br["spec"] == {
        "podName": "trainer",
        "selectedNode": "gpu-node-1",
        "receivedResourceType": "Regular",
        "receivedGPU": {"count": 2, "portion": "1.00"},
    }
    assert "status" not in br or not br["status"].get("phase")


def test_a_pod_without_gpus_receives_none():
    pod = {"metadata": {"name": "web", "namespace": "apps", "uid": "u-1"}, "spec": {"containers": []}}
    br = build_bind_request(pod, "n1")
    assert br["spec"]["receivedGPU"] == {"count": 0, "portion": "0.00"}
    assert br["metadata"]["namespace"] == "apps"
    assert "backoffLimit" not in br["spec"] and "resourceClaimAllocations" not in br["spec"]


def test_claim_allocations_are_keyed_by_the_pods_claim_name_and_backoff_limit_is_optional():
    pod = {"metadata": {"name": "p", "uid": "u"}, "spec": {}}
    alloc = {"devices": {"results": [{"request": "r", "driver": "d.example.com", "pool": "n1", "device": "x"}]}}
    br = build_bind_request(pod, "n1", [("gpu", alloc)], backoff_limit=4)
    assert br["spec"]["resourceClaimAllocations"] == [{"name": "gpu", "allocation": alloc}]
    assert br["spec"]["backoffLimit"] == 4


def test_long_names_stay_within_limits():
    pod = {"metadata": {"name": "p" * 253, "uid": "u"}, "spec": {}}
    br = build_bind_request(pod, "n" * 100)
    assert len(br["metadata"]["name"]) == 253
    assert br["metadata"]["labels"] == {}  # neither value is a valid label value
    assert br["spec"]["podName"] == "p" * 253


def test_a_pod_without_uid_is_refused_with_a_clear_error():
    with pytest.raises(BindRequestError, match="pod default/p: a BindRequest needs the pod's name and uid"):
        build_bind_request({"metadata": {"name": "p"}}, "n1")


def test_every_bind_request_written_validates_against_kais_crd(world, kai_crd):
    w = world(
        world.node("n1", extra={GPU: "4"}),
        world.node("n2"),
        world.pod("plain"),
        world.pod("gpu", limits={GPU: "1"}),
        {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": "nic.example.com"},
         "spec": {"selectors": [{"cel": {"expression": "device.driver == 'nic.example.com'"}}]}},
        {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": "n2-nic"},
         "spec": {"driver": "nic.example.com", "nodeName": "n2",
                  "pool": {"name": "n2", "generation": 1, "resourceSliceCount": 1},
                  "devices": [{"name": "nic-0", "attributes": {"speed": {"int": 100}}}]}},
        {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
         "metadata": {"name": "fast-nic", "namespace": "default"},
         "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "nic.example.com"}}]}}},
        world.pod("with-claim", resourceClaims=[{"name": "net", "resourceClaimName": "fast-nic"}]),
        config=SchedulerConfig(features=FeatureGates.parse("DynamicResourceAllocation=true"), backoff_limit=2),
    )
    assert w.cycle().scheduled == 3
    brs = w.bind_requests()
    assert len(brs) == 3
    for br in brs:
        assert kai_crd.errors(br) == [], br["metadata"]["name"]
    broken = dict(brs[0], spec={**brs[0]["spec"], "receivedGPU": {"count": "two"}})
    assert kai_crd.errors(broken)  # the check has teeth
    [claimed] = [br for br in brs if br["spec"]["podName"] == "with-claim"]
    assert claimed["spec"]["selectedNode"] == "n2"
    assert [e["name"] for e in claimed["spec"]["resourceClaimAllocations"]] == ["net"]
