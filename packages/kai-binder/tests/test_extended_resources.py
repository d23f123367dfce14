"""Extended resources backed by DRA (KEP-5004) through the binder: a BindRequest written as KAI's
scheduler writes one (``spec.extendedResourceClaimAllocation``; name = pod name, as KAI names them)
for a pod asking for ``example.com/fpga: 1`` that a DeviceClass serves. The binder creates the
pod's special claim, allocates and reserves it, sets the pod's ``status.extendedResourceClaimStatus``
and binds the pod, as kube-scheduler 1.34+ and KAI's binder do; a failed attempt deletes the claim."""

from __future__ import annotations

import pytest

from kai_binder.binder import Binder
from kai_binder.claims import FINALIZER
from kai_binder.extended import EXTENDED_CLAIM_ANNOTATION
from kai_binder.testing import CountingStore, Crash, invariant_violations
from kai_core.api.features import FeatureGates
from kai_core.api.resources import RES_CLAIMS, RES_PODS

RESOURCE = "example.com/fpga"
EXT_CLASS = f"""
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {{name: fpga-ext}}
spec:
  extendedResourceName: {RESOURCE}
  selectors: [{{cel: {{expression: "device.driver == 'fpga.example.com'"}}}}]
"""
REQUEST = "container-0-request-0"


def ext_pod(name: str, count: int = 1, resource: str = RESOURCE) -> dict:
    container = {"name": "c", "image": "busybox:1",
                 "resources": {"requests": {"cpu": "1", resource: str(count)}, "limits": {resource: str(count)}}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"schedulerName": "kai-scheduler", "containers": [container]}}


def kai_bind_request(pod: dict, node: str = "n1", devices=("fpga-0",), count: int | None = None,
                     class_name: str = "fpga-ext", resource: str = RESOURCE) -> dict:
    """A BindRequest as KAI's scheduler (pkg/scheduler/cache createBindRequest) writes it."""
    md = pod["metadata"]
    allocation = {
        "devices": {"results": [{"request": REQUEST, "driver": "fpga.example.com", "pool": node, "device": d}
                                for d in devices]},
        "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": [node]}]}]},
    }
    return {
        "apiVersion": "scheduling.run.ai/v1alpha2", "kind": "BindRequest",
        "metadata": {"name": md["name"], "namespace": "default", "labels": {"selected-node": node},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": md["name"], "uid": md["uid"]}]},
        "spec": {
            "podName": md["name"], "selectedNode": node, "receivedResourceType": "Regular",
            "receivedGPU": {"count": 0, "portion": "0.00"},
            "extendedResourceClaimAllocation": {
                "allocation": allocation,
                "deviceRequests": [{"name": REQUEST, "exactly": {
                    "deviceClassName": class_name, "allocationMode": "ExactCount",
                    "count": len(devices) if count is None else count}}],
                "containerMappings": [{"containerName": "c", "resourceName": resource, "requestName": REQUEST}],
            },
        },
    }


@pytest.fixture
def ext_rig(rig):
    def make(*pods: dict, **kw):
        r = rig(extra=EXT_CLASS, **kw)
        created = [r.store.create(p) for p in pods]
        return r, created
    return make


def special_claims(r) -> list[dict]:
    return [c for c in r.store.list(RES_CLAIMS, "default")[0]
            if (c["metadata"].get("annotations") or {}).get(EXTENDED_CLAIM_ANNOTATION) == "true"]


def test_the_special_claim_is_created_allocated_reserved_and_recorded_in_the_pod(ext_rig):
    r, [pod] = ext_rig(ext_pod("p"))
    br = r.store.create(kai_bind_request(pod))
    assert r.bind().succeeded == 1
    [claim] = special_claims(r)
    md = claim["metadata"]
    assert md["name"].startswith("p-extended-resources-")
    assert md["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": pod["metadata"]["uid"],
                                      "controller": True, "blockOwnerDeletion": True}]
    assert FINALIZER in md["finalizers"]
    ext = br["spec"]["extendedResourceClaimAllocation"]
    assert claim["spec"]["devices"]["requests"] == ext["deviceRequests"]
    assert claim["status"]["allocation"] == ext["allocation"]
    assert claim["status"]["reservedFor"] == [{"resource": "pods", "name": "p", "uid": pod["metadata"]["uid"]}]
    got = r.get_pod("p")
    assert got["spec"]["nodeName"] == "n1"
    assert got["status"]["extendedResourceClaimStatus"] == {"resourceClaimName": md["name"],
                                                            "requestMappings": ext["containerMappings"]}
    assert r.the_br("p")["status"] == {"phase": "Succeeded"}
    assert invariant_violations(r.store) == []


def test_a_failed_binding_deletes_the_special_claim_and_a_new_request_binds(ext_rig):
    r, [pod] = ext_rig(ext_pod("p"))
    r.faulty.refuse_binds = True
    r.store.create(kai_bind_request(pod))
    result = r.bind()
    assert result.failed == 1 and "refused by the test" in result.reasons[0]
    assert special_claims(r) == []  # released (its finalizer gone) and deleted
    # the pod's status still names it, as the API server keeps the field: the next attempt replaces it
    assert r.get_pod("p")["status"]["extendedResourceClaimStatus"]["resourceClaimName"].startswith(
        "p-extended-resources-")
    assert invariant_violations(r.store) == []
    # KAI's scheduler deletes the Failed request and decides again (the next device this time)
    r.store.delete("bindrequests.scheduling.run.ai", "p", "default")
    r.faulty.refuse_binds = False
    r.store.create(kai_bind_request(pod, devices=("fpga-1",)))
    assert r.bind().succeeded == 1
    [claim] = special_claims(r)
    assert claim["status"]["allocation"]["devices"]["results"][0]["device"] == "fpga-1"
    assert r.get_pod("p")["status"]["extendedResourceClaimStatus"]["resourceClaimName"] == claim["metadata"]["name"]
    assert invariant_violations(r.store) == []


def test_a_binder_killed_after_any_write_finishes_with_one_claim(ext_rig):
    r, [pod] = ext_rig(ext_pod("p"))
    r.store.create(kai_bind_request(pod))
    seed = r.store.all_objects()
    writes = 0
    while True:
        writes += 1
        r2, _ = ext_rig(seed=seed)
        r2.faulty.crash_after = writes
        try:
            r2.bind()
        except Crash:
            r2.faulty.crash_after = None
            r2.new_binder()
            for _ in range(10):
                r2.bind()
                due = r2.binder.next_due()
                if due is None:
                    break
                r2.clock.advance_to(due)
            assert r2.node_of("p") == "n1", writes
            assert len(special_claims(r2)) == 1, writes
            assert invariant_violations(r2.store) == [], writes
            continue
        break
    assert writes > 4  # claim create, claim status, pod status, binding, BindRequest status


@pytest.mark.parametrize("change, problem", [
    (lambda br: br["spec"]["extendedResourceClaimAllocation"]["containerMappings"][0].update(containerName="x"),
     "container 'x', example.com/fpga: the pod has no such container"),
    (lambda br: br["spec"]["extendedResourceClaimAllocation"]["deviceRequests"][0]["exactly"].update(count=2),
     "device request 'container-0-request-0' asks for 2 (ExactCount), the container for 1"),
    (lambda br: br["spec"]["extendedResourceClaimAllocation"]["deviceRequests"][0]["exactly"].update(
        deviceClassName="fpga.example.com"),
     "DeviceClass 'fpga.example.com' does not serve example.com/fpga"),
    (lambda br: br["spec"]["extendedResourceClaimAllocation"]["containerMappings"][0].update(requestName="other"),
     "no device request 'other' (with 'exactly') in deviceRequests"),
])
def test_a_request_that_does_not_match_the_pod_is_refused_before_any_write(ext_rig, change, problem):
    r, [pod] = ext_rig(ext_pod("p"))
    br = kai_bind_request(pod)
    change(br)
    r.store.create(br)
    result = r.bind()
    assert result.failed == 1
    assert result.reasons[0].startswith("verification failed: spec.extendedResourceClaimAllocation")
    assert problem in result.reasons[0]
    assert special_claims(r) == [] and not r.node_of("p")
    assert [w for w in r.faulty.log if w[0] != "update_status"] == []


def test_the_implicit_resource_name_of_a_class_is_served_too(ext_rig):
    resource = "deviceclass.resource.kubernetes.io/fpga-ext"
    r, [pod] = ext_rig(ext_pod("p", resource=resource))
    r.store.create(kai_bind_request(pod, resource=resource))
    assert r.bind().succeeded == 1


def test_a_device_held_by_another_claim_or_request_is_refused(ext_rig):
    r, [a, b, c] = ext_rig(ext_pod("a"), ext_pod("b"), ext_pod("c"))
    r.store.create(kai_bind_request(a))
    assert r.bind().succeeded == 1
    r.store.create(kai_bind_request(b))  # the device a's claim holds
    result = r.bind()
    assert result.failed == 1
    assert "device fpga.example.com/n1/fpga-0" in result.reasons[0] and "already allocated" in result.reasons[0]
    # two live requests naming one device: the first carried out takes it, the second is refused
    r.store.create(kai_bind_request(c, devices=("fpga-1",)))
    other = kai_bind_request(b, devices=("fpga-1",))
    other["metadata"]["name"] = "b-again"
    r.store.delete("bindrequests.scheduling.run.ai", "b", "default")
    r.store.create(other)
    result = r.bind()
    assert (result.succeeded, result.failed) == (1, 1)
    assert "fpga.example.com/n1/fpga-1" in result.reasons[0]
    assert len(special_claims(r)) == 2
    assert invariant_violations(r.store) == []


def test_with_dra_off_the_request_fails_naming_the_field(ext_rig):
    r, [pod] = ext_rig(ext_pod("p"))
    r.binder = Binder(r.faulty, r.pm, FeatureGates(), qps=0, clock=r.clock.now)
    r.store.create(kai_bind_request(pod))
    result = r.bind()
    assert result.failed == 1
    assert "spec.extendedResourceClaimAllocation: extended resources backed by DRA need the " \
           "DynamicResourceAllocation feature gate" in result.reasons[0]
    assert special_claims(r) == []


def test_the_api_calls_of_an_extended_resource_pod(ext_rig):
    """Besides a plain pod's (the pod read, the binding, the request's status): the namespace's
    claims listed, the claim created, read and allocated, the pod's status set: 5 more."""
    r, [pod] = ext_rig(ext_pod("p"))
    counting = CountingStore(r.faulty.inner)
    r.faulty.inner = counting
    r.store.create(kai_bind_request(pod))
    assert r.bind().succeeded == 1
    assert counting.calls == [
        ("get", RES_PODS, ""), ("list", RES_CLAIMS, ""), ("create", "ResourceClaim", ""),
        ("get", RES_CLAIMS, ""), ("update", "ResourceClaim", "status"), ("patch", RES_PODS, "status"),
        ("create", "Pod", "binding"), ("update", "BindRequest", "status")]
