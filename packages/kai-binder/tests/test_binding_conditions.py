"""Devices with binding conditions (DRADeviceBindingConditions): the scheduler allocates them with
their conditions and pins the claim to the node (``bindsToNode``); the binder writes the claim, then
waits, without holding a worker or using an attempt, until the device's controller reports the
conditions on the claim; a failure condition or the timeout fails the attempt and releases the claim.

The embedded cluster runs no device controller: where it would attach the device and report the
condition, the test writes the claim's ``status.devices`` by hand."""

from __future__ import annotations

from kai_binder.binding_conditions import BINDING_TIMEOUT_SECONDS
from kai_binder.dra import PLUGIN_NAME
from kai_core.api.resources import RES_CLAIMS

FABRIC = """
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: fabric}
spec:
  driver: fpga.example.com
  allNodes: true
  pool: {name: fabric, generation: 1, resourceSliceCount: 1}
  devices:
  - name: fpga-0
    bindsToNode: true
    bindingConditions: [example.com/Attached]
    bindingFailureConditions: [example.com/AttachFailed]
"""
DEVICE = ("fpga.example.com", "fabric", "fpga-0")


def fabric_rig(rig):
    r = rig(nodes=("n1",), devices=0, extra=FABRIC, pods=[rig.pod("p", claims=1)])
    r.pm.get_plugin(PLUGIN_NAME).binding.clock = r.clock.now
    r.schedule()
    return r


def report(r, kind: str, reason: str = "Done") -> None:
    """What the device's controller writes: the condition on the claim's device entry."""
    [claim] = r.claims_of("p")
    claim["status"]["devices"] = [{
        "driver": DEVICE[0], "pool": DEVICE[1], "device": DEVICE[2],
        "conditions": [{"type": kind, "status": "True", "reason": reason, "message": f"{kind} by the test",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}]
    r.store.update_status(claim)


def test_the_allocation_carries_the_conditions_and_is_pinned_to_the_node(rig):
    r = fabric_rig(rig)
    [entry] = r.the_br("p")["spec"]["resourceClaimAllocations"]
    [result] = entry["allocation"]["devices"]["results"]
    assert result["bindingConditions"] == ["example.com/Attached"]
    assert result["bindingFailureConditions"] == ["example.com/AttachFailed"]
    assert entry["allocation"]["nodeSelector"]["nodeSelectorTerms"][0]["matchFields"][0]["values"] == ["n1"]


def test_the_pod_is_bound_only_once_the_binding_conditions_are_true(rig):
    r = fabric_rig(rig)
    result = r.bind()
    assert result.deferred == 1 and r.node_of("p") is None
    [claim] = r.claims_of("p")
    assert claim["status"]["allocation"]["devices"]["results"][0]["device"] == "fpga-0"  # written, then waits
    assert (r.the_br("p").get("status") or {}).get("failedAttempts", 0) == 0
    r.clock.advance(30)
    r.bind()
    assert r.node_of("p") is None  # still waiting
    report(r, "example.com/Attached")
    r.clock.advance(30)
    r.bind()
    assert r.node_of("p") == "n1"


def test_a_binding_failure_condition_fails_the_attempt_and_releases_the_claim(rig):
    r = fabric_rig(rig)
    r.bind()
    report(r, "example.com/AttachFailed", reason="NoPath")
    r.clock.advance(30)
    r.bind()
    br = r.the_br("p")
    assert br["status"]["phase"] == "Failed"
    assert ("binding device fpga.example.com/fabric/fpga-0 failed: condition example.com/AttachFailed is True "
            "(NoPath: example.com/AttachFailed by the test)") in br["status"]["reason"]
    assert r.node_of("p") is None
    [claim] = r.claims_of("p")
    assert not (claim.get("status") or {}).get("allocation")


def test_conditions_never_met_fail_the_attempt_after_the_timeout(rig):
    r = fabric_rig(rig)
    r.bind()
    r.clock.advance(BINDING_TIMEOUT_SECONDS + 1)
    r.bind()
    br = r.the_br("p")
    assert br["status"]["phase"] == "Failed"
    assert "device fpga.example.com/fabric/fpga-0 (example.com/Attached): binding conditions not met 600s" in (
        br["status"]["reason"])
    assert not (r.store.get(RES_CLAIMS, r.claims_of("p")[0]["metadata"]["name"], "default").get("status") or {}).get(
        "allocation")
