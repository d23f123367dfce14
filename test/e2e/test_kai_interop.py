"""kai's binder carrying out BindRequests as KAI-Scheduler's scheduler writes them, on the real
control plane and under the chart's RBAC: the test plays KAI's scheduler (the request is named after
the pod and carries ``extendedResourceClaimAllocation``, KEP-5004), kai's binder runs as a process
with its ServiceAccount's token. The real API server validates the special claim, its allocation,
the pod's ``status.extendedResourceClaimStatus`` and the Binding's annotations."""

from __future__ import annotations

import pytest

DRIVER = "fpga.example.com"
REQUEST = "container-0-request-0"


@pytest.fixture
def fpga_class(kube, namespace):
    """A DeviceClass serving the extended resource ``example.com/<namespace>`` (deleted afterwards)."""
    resource = f"example.com/{namespace}"
    cls = kube.create({"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
                       "metadata": {"name": f"{namespace}-fpga"},
                       "spec": {"extendedResourceName": resource,
                                "selectors": [{"cel": {"expression": f"device.driver == '{DRIVER}'"}}]}})
    assert cls["spec"].get("extendedResourceName") == resource, "the API server dropped extendedResourceName"
    yield cls
    kube.delete("resource.k8s.io/v1", "DeviceClass", cls["metadata"]["name"])


def fpga_node(nodes, name: str) -> None:
    slice_ = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": f"{name}-fpga"},
              "spec": {"driver": DRIVER, "nodeName": name,
                       "pool": {"name": name, "generation": 1, "resourceSliceCount": 1},
                       "devices": [{"name": "fpga-0"}, {"name": "fpga-1"}]}}
    nodes.add(name, capacity={"cpu": "8", "memory": "16Gi", "pods": "110"}, slices=[slice_])


def fpga_pod(name: str, resource: str, gated: bool = False) -> dict:
    container = {"name": "c", "image": "busybox:1",
                 "resources": {"requests": {"cpu": "1", resource: "1"}, "limits": {resource: "1"}}}
    spec: dict = {"schedulerName": "kai-scheduler", "containers": [container]}
    if gated:
        spec["schedulingGates"] = [{"name": "example.com/hold"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def kai_bind_request(pod: dict, node: str, cls: dict, device: str = "fpga-0") -> dict:
    """As KAI's scheduler writes it (pkg/scheduler/cache createBindRequest): named after the pod."""
    md = pod["metadata"]
    return {
        "apiVersion": "scheduling.run.ai/v1alpha2", "kind": "BindRequest",
        "metadata": {"name": md["name"], "labels": {"selected-node": node},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": md["name"], "uid": md["uid"]}]},
        "spec": {
            "podName": md["name"], "selectedNode": node, "receivedResourceType": "Regular",
            "receivedGPU": {"count": 0, "portion": "0.00"},
            "extendedResourceClaimAllocation": {
                "allocation": {
                    "devices": {"results": [{"request": REQUEST, "driver": DRIVER, "pool": node, "device": device}]},
                    "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                        {"key": "metadata.name", "operator": "In", "values": [node]}]}]},
                },
                "deviceRequests": [{"name": REQUEST, "exactly": {
                    "deviceClassName": cls["metadata"]["name"], "allocationMode": "ExactCount", "count": 1}}],
                "containerMappings": [{"containerName": "c", "resourceName": cls["spec"]["extendedResourceName"],
                                       "requestName": REQUEST}],
            },
        },
    }


def special_claims(kube, namespace: str) -> list[dict]:
    return [c for c in kube.list("resource.k8s.io/v1", "ResourceClaim", namespace)
            if (c["metadata"].get("annotations") or {}).get("resource.kubernetes.io/extended-resource-claim") == "true"]


def test_kais_request_for_an_extended_resource_is_carried_out(kube, kai, nodes, namespace, fpga_class):
    node = f"{namespace}-n1"
    fpga_node(nodes, node)
    kai.start("binder")
    pod = kube.create(fpga_pod("p", fpga_class["spec"]["extendedResourceName"]), namespace)
    br = kube.create(kai_bind_request(pod, node, fpga_class), namespace)

    pod, done = kai.wait_bound(namespace, "p")
    assert done["metadata"]["uid"] == br["metadata"]["uid"]
    assert pod["spec"]["nodeName"] == node
    assert pod["metadata"]["annotations"]["received-resource-type"] == "Regular"
    ext = br["spec"]["extendedResourceClaimAllocation"]
    status = pod["status"]["extendedResourceClaimStatus"]
    assert status["requestMappings"] == ext["containerMappings"]
    [claim] = special_claims(kube, namespace)
    assert claim["metadata"]["name"] == status["resourceClaimName"]
    assert claim["metadata"]["name"].startswith("p-extended-resources-")
    [owner] = claim["metadata"]["ownerReferences"]
    assert (owner["uid"], owner["controller"]) == (pod["metadata"]["uid"], True)
    assert claim["spec"]["devices"]["requests"][0]["exactly"]["deviceClassName"] == fpga_class["metadata"]["name"]
    assert claim["status"]["allocation"]["devices"]["results"] == ext["allocation"]["devices"]["results"]
    assert claim["status"]["reservedFor"] == [{"resource": "pods", "name": "p", "uid": pod["metadata"]["uid"]}]
    assert "resource.kubernetes.io/delete-protection" in claim["metadata"]["finalizers"]
    kai.assert_clean_stop()


def test_a_refused_binding_deletes_the_special_claim_and_the_next_request_binds(kube, kai, nodes, namespace,
                                                                                  fpga_class):
    """The API server refuses to bind a pod with scheduling gates (kai's binder does not look at
    them): the attempt ends Failed, and the claim it made is released and deleted. The pod's
    status keeps naming it (the API server keeps that field when a write clears it); the next
    request's claim replaces it."""
    node = f"{namespace}-n1"
    fpga_node(nodes, node)
    kai.start("binder")
    pod = kube.create(fpga_pod("p", fpga_class["spec"]["extendedResourceName"], gated=True), namespace)
    kube.create(kai_bind_request(pod, node, fpga_class), namespace)

    def failed():
        br = kube.get("scheduling.run.ai/v1alpha2", "BindRequest", "p", namespace)
        return br if (br.get("status") or {}).get("phase") == "Failed" else None

    br = kai.wait_for(failed, "the BindRequest to fail")
    assert "schedulingGates" in br["status"]["reason"]
    kai.wait_for(lambda: not special_claims(kube, namespace), "the special claim to be deleted")
    pod = kube.get("v1", "Pod", "p", namespace)
    assert not pod["spec"].get("nodeName")
    gone = pod["status"]["extendedResourceClaimStatus"]["resourceClaimName"]  # kept by the API server
    # KAI's scheduler deletes the Failed request and, the gate lifted, decides again
    kube.delete("scheduling.run.ai/v1alpha2", "BindRequest", "p", namespace)
    pod["spec"]["schedulingGates"] = []
    kube.call("PUT", kube.path("v1", "Pod", "p", namespace), pod)
    kube.create(kai_bind_request(pod, node, fpga_class, device="fpga-1"), namespace)
    pod, _ = kai.wait_bound(namespace, "p")
    [claim] = special_claims(kube, namespace)
    assert claim["metadata"]["name"] != gone
    assert pod["status"]["extendedResourceClaimStatus"]["resourceClaimName"] == claim["metadata"]["name"]
    assert claim["status"]["allocation"]["devices"]["results"][0]["device"] == "fpga-1"
    codes = kai.stop()
    assert set(codes.values()) == {0}, codes
    kai.assert_no_forbidden()
    # the only write the API server refused is the binding of the gated pod
    assert [w for w in kai.rejected_writes() if "pods/binding" not in w] == []


def test_kai_scheduler_reschedules_after_each_failure_kais_binder_reports(kube, kai, nodes, namespace):
    """kai's scheduler with KAI's binder's failures, played by the test as KAI's binder writes them
    (``phase: Failed`` and a reason, no ``backoffLimit`` to count against): each failed request is
    deleted and the pod scheduled again, through the pod's growing backoff (1, 2, 4 s); once a
    binder carries the last one out, the pod is bound."""
    node = f"{namespace}-n1"
    nodes.add(node, capacity={"cpu": "8", "memory": "16Gi", "pods": "110"})
    kai.start("scheduler")
    container = {"name": "c", "image": "busybox:1", "resources": {"requests": {"cpu": "1"}}}
    kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                 "spec": {"schedulerName": "kai-scheduler", "containers": [container]}}, namespace)
    failed: set[str] = set()

    def new_request():
        found = [b for b in kube.list("scheduling.run.ai/v1alpha2", "BindRequest", namespace)
                 if b["spec"]["podName"] == "p" and b["metadata"]["uid"] not in failed]
        return found[0] if found else None

    for attempt in range(4):
        br = kai.wait_for(new_request, f"BindRequest {attempt + 1} of pod p", timeout=30)
        assert "backoffLimit" not in br["spec"]
        failed.add(br["metadata"]["uid"])
        br["status"] = {"phase": "Failed", "reason": f"failed to bind pod: attempt {attempt + 1} refused"}
        kube.call("PUT", kube.path("scheduling.run.ai/v1alpha2", "BindRequest", br["metadata"]["name"], namespace,
                                   "status"), br)
    kai.wait_for(new_request, "BindRequest 5 of pod p", timeout=30)
    kai.start("binder")
    pod, br = kai.wait_bound(namespace, "p")
    assert pod["spec"]["nodeName"] == node and br["metadata"]["uid"] not in failed
    kai.assert_clean_stop()
