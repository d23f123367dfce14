"""A device that allows multiple allocations (DRAConsumableCapacity): the binder writes each pod's
claim with its share (``shareID``, ``consumedCapacity``) and does not count the device as taken by
the other claims that share it."""

from __future__ import annotations

from kai_core.scheduler.explain import DecisionRecorder

SHARED = """
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: n1-fpga-shared}
spec:
  driver: fpga.example.com
  nodeName: n1
  pool: {name: n1-shared, generation: 1, resourceSliceCount: 1}
  devices:
  - name: fpga-big
    allowMultipleAllocations: true
    capacity: {slots: {value: "4"}}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: two-slots, namespace: default}
spec:
  spec:
    devices:
      requests: [{name: fpga, exactly: {deviceClassName: fpga.example.com, capacity: {requests: {slots: "2"}}}}]
"""


def slot_pod(rig, name: str) -> dict:
    pod = rig.pod(name)
    pod["spec"]["resourceClaims"] = [{"name": "dev", "resourceClaimTemplateName": "two-slots"}]
    pod["spec"]["containers"][0]["resources"]["claims"] = [{"name": "dev"}]
    return pod


def test_two_pods_share_the_device_and_a_third_waits(rig):
    r = rig(nodes=("n1",), devices=0, extra=SHARED)
    r.add(*(slot_pod(rig, n) for n in ("a", "b", "c")))
    r.scheduler.recorder = recorder = DecisionRecorder(["default/c"])
    r.settle()
    assert sorted(n for n in ("a", "b", "c") if r.node_of(n) == "n1") == ["a", "b"]
    assert r.node_of("c") is None
    shares = []
    for name in ("a", "b"):
        [claim] = r.claims_of(name)
        [result] = claim["status"]["allocation"]["devices"]["results"]
        assert (result["device"], result["consumedCapacity"]) == ("fpga-big", {"slots": "2"})
        shares.append(result["shareID"])
    assert len(set(shares)) == 2
    assert (r.condition("c", "PodScheduled") or {}).get("message") == (
        "0/1 nodes are available: 1 cannot allocate all claims.")  # kube-scheduler's words
    [verdict] = recorder.last["default/c"].verdicts  # what kai-cli explain says of n1
    assert "without the capacity asked for left" in verdict.reason
