"""The kai_rank_devices hook, called once per pod, steers which device the allocator picks."""

from __future__ import annotations

from kai_core.api.features import FeatureGates
from kai_core.apiserver.manifests import parse_documents
from kai_core.cluster import EmbeddedCluster
from kai_core.framework.hookspecs import hookimpl
from kai_core.plugins import build_plugin_manager
from kai_core.scheduler.cycle import Scheduler, SchedulerConfig

CLUSTER = """
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {allocatable: {cpu: "8", memory: 16Gi, pods: "10"}, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: fpga.example.com}
spec: {selectors: [{cel: {expression: "device.driver == 'fpga.example.com'"}}]}
---
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: n1-fpga}
spec:
  driver: fpga.example.com
  nodeName: n1
  pool: {name: n1, generation: 1, resourceSliceCount: 1}
  devices: [{name: fpga-0}, {name: fpga-1}, {name: fpga-2}]
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: c}
spec: {devices: {requests: [{name: fpga, exactly: {deviceClassName: fpga.example.com}}]}}
---
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  schedulerName: kai-scheduler
  containers: [{name: c, image: busybox:1, resources: {claims: [{name: fpga}]}}]
  resourceClaims: [{name: fpga, resourceClaimName: c}]
"""


class PreferLast:
    calls = 0

    @hookimpl
    def kai_rank_devices(self, pod, claims, devices, snapshot):
        PreferLast.calls += 1
        return {d.id: (10.0 if d.id.device == "fpga-2" else 0.0) for d in devices}


class Broken:
    @hookimpl
    def kai_rank_devices(self, devices):
        raise RuntimeError("ranking exploded")


def picked_device(*plugins) -> tuple[str | None, dict]:
    pm = build_plugin_manager(load_external=False)
    for i, plugin in enumerate(plugins):
        pm.register(plugin, name=f"test-{i}")
    cluster = EmbeddedCluster(pm)
    for m in parse_documents(CLUSTER, "test"):
        cluster.store.restore(m.obj)
    Scheduler(cluster.store, pm, SchedulerConfig(features=FeatureGates.parse("DynamicResourceAllocation=true"))
              ).run_cycle()
    brs = cluster.store.list("bindrequests.scheduling.run.ai")[0]
    pod = cluster.store.get("pods", "p", "default")
    if not brs:
        return None, pod
    alloc = brs[0]["spec"]["resourceClaimAllocations"][0]["allocation"]
    return alloc["devices"]["results"][0]["device"], pod


def test_default_order_without_a_ranking_plugin():
    assert picked_device()[0] == "fpga-0"


def test_ranking_plugin_changes_the_device_and_is_called_once_per_pod():
    PreferLast.calls = 0
    assert picked_device(PreferLast())[0] == "fpga-2"
    assert PreferLast.calls == 1


def test_failing_ranking_plugin_is_named_in_the_pod_reason():
    device, pod = picked_device(Broken())
    assert device is None
    [cond] = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert "test-0" in cond["message"] and "kai_rank_devices" in cond["message"]
