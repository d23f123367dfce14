"""List-valued device attributes (DRAListTypeAttributes) end to end: the scheduler picks devices whose
lists share an element, the binder checks the allocation by the same gates and writes the claim."""

from __future__ import annotations

from kai_binder.binder import Binder
from kai_core.api.features import FeatureGates
from kai_core.scheduler.cycle import SchedulerConfig

NUMA_SLICE = """
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: n1-fpga-numa}
spec:
  driver: fpga.example.com
  nodeName: n1
  pool: {name: n1-numa, generation: 1, resourceSliceCount: 1}
  devices:
  - {name: fpga-0, attributes: {numa: {ints: [0, 1]}}}
  - {name: fpga-1, attributes: {numa: {int: 2}}}
  - {name: fpga-2, attributes: {numa: {int: 1}}}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: same-numa, namespace: default}
spec:
  spec:
    devices:
      requests: [{name: fpga, exactly: {deviceClassName: fpga.example.com, count: 2}}]
      constraints: [{matchAttribute: fpga.example.com/numa}]
"""
ON = FeatureGates.parse("DynamicResourceAllocation=true,DRAListTypeAttributes=true")


def _rig(rig, scheduler_gates: FeatureGates, binder_gates: FeatureGates):
    r = rig(nodes=("n1",), devices=0, extra=NUMA_SLICE)
    r.config = SchedulerConfig(features=scheduler_gates)
    r.new_scheduler()
    r.binder = Binder(r.faulty, r.pm, binder_gates, clock=r.clock.now, sleep=r.clock.sleep, **r.binder_options)
    pod = rig.pod("p")
    pod["spec"]["resourceClaims"] = [{"name": "dev", "resourceClaimTemplateName": "same-numa"}]
    pod["spec"]["containers"][0]["resources"]["claims"] = [{"name": "dev"}]
    r.add(pod)
    return r


def test_the_pod_binds_with_devices_sharing_a_numa_node(rig):
    r = _rig(rig, ON, ON)
    r.settle()
    assert r.node_of("p") == "n1"
    [claim] = r.claims_of("p")
    devices = sorted(res["device"] for res in claim["status"]["allocation"]["devices"]["results"])
    assert devices == ["fpga-0", "fpga-2"]


def test_a_binder_with_the_gate_off_refuses_the_allocation(rig):
    r = _rig(rig, ON, FeatureGates.parse("DynamicResourceAllocation=true"))
    r.schedule()
    r.bind()
    assert r.node_of("p") is None
    br = r.the_br("p")
    assert br["status"]["phase"] == "Failed"
    assert "constraint #0 (matchAttribute fpga.example.com/numa over all requests): device " \
           "fpga.example.com/n1-numa/fpga-0 has ints [0, 1]" in str(br["status"])
