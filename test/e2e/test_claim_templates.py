"""Pods' claims made from ResourceClaimTemplates by the real resourceclaim controller, then
allocated by kai (scheduler and binder as processes under the chart's RBAC): a plain GPU pod."""

from __future__ import annotations

import re

PRODUCT = "device.attributes['gpu.nvidia.com'].productName == 'NVIDIA GB200'"


def test_gpu_pod_with_a_claim_template(kube, kai, nodes, namespace, nvidia):
    """Two GPUs of NVIDIA's ``gpu.nvidia.com`` class, picked by a CEL selector, through a claim
    template: the controller's claim is allocated on the pod's node (two distinct GPUs of that
    node's pool, as the BindRequest says), reserved for the pod, and the pod is bound."""
    names = nodes.add_gb200(2)
    kai.start("scheduler")
    kai.start("binder")
    kube.create({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
        "metadata": {"name": "two-gpus", "namespace": namespace},
        "spec": {"spec": {"devices": {"requests": [{"name": "gpus", "exactly": {
            "deviceClassName": "gpu.nvidia.com", "count": 2, "selectors": [{"cel": {"expression": PRODUCT}}]}}]}}},
    })
    kube.create({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "trainer", "namespace": namespace},
        "spec": {
            "schedulerName": "kai-scheduler",
            "containers": [{"name": "ctr", "image": "ubuntu:22.04", "command": ["nvidia-smi", "-L"],
                            "resources": {"claims": [{"name": "gpus"}]}}],
            "resourceClaims": [{"name": "gpus", "resourceClaimTemplateName": "two-gpus"}],
        },
    })

    pod, br = kai.wait_bound(namespace, "trainer")
    node = pod["spec"]["nodeName"]
    assert node in names
    assert br["spec"]["receivedResourceType"] == "Regular"
    assert br["spec"]["receivedGPU"] == {"count": 0, "portion": "0.00"}  # no nvidia.com/gpu limit
    [claim] = kai.assert_carried_out(pod, br)
    allocation = claim["status"]["allocation"]
    results = allocation["devices"]["results"]
    assert [(r["request"], r["driver"], r["pool"]) for r in results] == [("gpus", "gpu.nvidia.com", node)] * 2
    assert len({r["device"] for r in results}) == 2 and all(r["device"].startswith("gpu-") for r in results)
    assert allocation["nodeSelector"] == {"nodeSelectorTerms": [{"matchFields": [
        {"key": "metadata.name", "operator": "In", "values": [node]}]}]}
    kai.assert_clean_stop()


def test_a_claim_no_node_can_satisfy_leaves_the_pod_pending_with_the_reason(kube, kai, nodes, namespace, nvidia):
    """Five GPUs where nodes have four: the scheduler's PodScheduled=False condition and its
    FailedScheduling Event are accepted by the real API server under the chart's RBAC, and no
    BindRequest is written."""
    nodes.add_gb200(1)
    kai.start("scheduler")
    kube.create({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
        "metadata": {"name": "five-gpus", "namespace": namespace},
        "spec": {"spec": {"devices": {"requests": [{"name": "gpus", "exactly": {
            "deviceClassName": "gpu.nvidia.com", "count": 5}}]}}},
    })
    kube.create({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "too-big", "namespace": namespace},
        "spec": {"schedulerName": "kai-scheduler",
                 "containers": [{"name": "ctr", "image": "ubuntu:22.04", "resources": {"claims": [{"name": "gpus"}]}}],
                 "resourceClaims": [{"name": "gpus", "resourceClaimTemplateName": "five-gpus"}]},
    })

    def reported():
        pod = kube.get("v1", "Pod", "too-big", namespace)
        conds = [c for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] == "PodScheduled"]
        events = [e for e in kube.list("v1", "Event", namespace) if e["involvedObject"]["name"] == "too-big"]
        return (conds, events) if conds and events else None

    [cond], events = kai.wait_for(reported, "the pod to be reported unschedulable")
    assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")
    # kube-scheduler's words, counted (other tests' nodes may be there too); kai-cli explain tells
    # why each node was not enough
    assert re.fullmatch(r"0/\d+ nodes are available: (.*, )?[1-9]\d* cannot allocate all claims(, .*)?\.",
                        cond["message"]), cond["message"]
    assert [(e["type"], e["reason"]) for e in events] == [("Warning", "FailedScheduling")]
    assert kube.list("scheduling.run.ai/v1alpha2", "BindRequest", namespace) == []
    assert kube.get("v1", "Pod", "too-big", namespace)["spec"].get("nodeName") is None
    kai.assert_clean_stop()
