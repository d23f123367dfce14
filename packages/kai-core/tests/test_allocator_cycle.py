"""The allocator inside a scheduling cycle: reasons grouped per kind of node, and admin access
decided by the namespace's label."""

from __future__ import annotations

from kai_core.api.features import FeatureGates
from kai_core.api.resources import RES_NAMESPACES
from kai_core.dra.testing import GPU, claim, device_class, gpu_device, gpu_slice, request
from kai_core.scheduler.cycle import SchedulerConfig

DRA_ON = SchedulerConfig(features=FeatureGates.parse("DynamicResourceAllocation=true"))
EX = "gpu.example.com"
GPU_CLASS = device_class(EX, f"device.driver == '{GPU}' && device.attributes['{GPU}'].type == 'gpu'")


def gpu_pod(world, name: str, claim_name: str) -> dict:
    pod = world.pod(name, resourceClaims=[{"name": "gpus", "resourceClaimName": claim_name}])
    pod["spec"]["containers"][0]["resources"]["claims"] = [{"name": "gpus"}]
    return pod


def test_reasons_are_grouped_by_what_failed(world) -> None:
    xid = [{"key": "gpu.nvidia.com/xid", "value": "79", "effect": "NoSchedule"}]
    objects = [
        GPU_CLASS,
        *(world.node(f"small-{i}") for i in range(3)),
        *(gpu_slice(f"small-{i}", count=1) for i in range(3)),
        world.node("sick"),
        gpu_slice("sick", devices=[gpu_device(0, taints=xid), gpu_device(1, taints=xid)]),
        world.node("plain"),
        claim("pair", request("gpu", EX, 2)),
    ]
    w = world(*objects, config=DRA_ON)
    w.add(gpu_pod(world, "p", "pair"))
    w.explain()
    w.cycle()
    # the pod's message counts kube-scheduler's words; kai-cli explain says each node's why
    assert w.message("p") == "0/5 nodes are available: 5 cannot allocate all claims."
    assert w.detailed("p") == (
        "0/5 nodes are available: "
        "1 cannot allocate all claims: claim default/pair request gpu: needs 2 devices of DeviceClass "
        "gpu.example.com, 0 free (2 match, 0 in use, 2 tainted gpu.nvidia.com/xid=79:NoSchedule without a "
        "toleration), "
        "1 cannot allocate all claims: claim default/pair request gpu: no ResourceSlice offers devices to "
        "the node, "
        "3 cannot allocate all claims: claim default/pair request gpu: needs 2 devices of DeviceClass "
        "gpu.example.com, 1 free (1 match, 0 in use)."
    )


def test_admin_access_follows_the_namespace_label(world) -> None:
    monitor = claim("monitor", request("gpu", EX, 1, adminAccess=True))
    w = world(GPU_CLASS, world.node("n1"), gpu_slice("n1", count=1), monitor, config=DRA_ON)
    w.add(gpu_pod(world, "p", "monitor"))
    w.explain()
    w.cycle()
    assert w.message("p") == "0/1 nodes are available: 1 cannot allocate all claims."
    assert w.detailed("p") == (
        "0/1 nodes are available: 1 cannot allocate all claims: claim default/monitor request gpu: "
        "adminAccess is "
        "only allowed in namespaces labelled resource.kubernetes.io/admin-access=true, and namespace default "
        "is not."
    )
    namespace = w.store.get(RES_NAMESPACES, "default")
    namespace["metadata"].setdefault("labels", {})["resource.kubernetes.io/admin-access"] = "true"
    w.store.update(namespace)
    w.cycle()
    [br] = w.bind_requests()
    [entry] = br["spec"]["resourceClaimAllocations"]
    assert entry["allocation"]["devices"]["results"][0]["adminAccess"] is True
