"""The DRA GPUs a pending pod would hold (kai_core.framework.pending_gpus): its claims given to the
allocator on the first node where they fit with every device free, counted as allocated devices are."""

from __future__ import annotations

import pytest

from kai_core.api.features import FeatureGates
from kai_core.dra.testing import GPU, claim, device_class, gpu_slice, request, sub_request
from kai_core.framework.pending_gpus import pending_dra_gpus
from kai_core.scheduler.cycle import SchedulerConfig

DRA = SchedulerConfig(features=FeatureGates.parse("DynamicResourceAllocation=true"))


def pod_with(*claim_names: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default", "uid": "u-p"},
            "spec": {"schedulerName": "kai-scheduler", "containers": [{"name": "c", "image": "busybox:1"}],
                     "resourceClaims": [{"name": n, "resourceClaimName": n} for n in claim_names]}}


def snapshot_of(world, *objs, config=DRA):
    w = world(world.node("a-small", cpu="16"), gpu_slice("a-small", count=2),
              world.node("b-big", cpu="16"), gpu_slice("b-big", count=4),
              device_class("gpu.nvidia.com", f'device.driver == "{GPU}"'), *objs, config=config)
    w.cycle()
    return w.scheduler.last_snapshot


@pytest.mark.parametrize("req,gpus", [
    (request("g", "gpu.nvidia.com"), 1.0),
    (request("g", "gpu.nvidia.com", 2), 2.0),
    (request("g", "gpu.nvidia.com", 3), 3.0),  # fits only the 4-GPU node
    (request("g", "gpu.nvidia.com", allocationMode="All"), 2.0),  # every GPU of the first node it fits
    ({"name": "g", "firstAvailable": [sub_request("eight", "gpu.nvidia.com", 8),
                                      sub_request("two", "gpu.nvidia.com", 2)]}, 2.0),
    (request("g", "gpu.nvidia.com", 9), 0.0),  # fits no node
])
def test_a_pending_pod_counts_the_devices_it_would_be_allocated(world, req, gpus):
    snap = snapshot_of(world, claim("c", req))
    assert pending_dra_gpus(pod_with("c"), snap) == gpus


def test_an_allocated_claim_is_not_counted_again_and_nothing_counts_without_dra(world):
    held = claim("held", request("g", "gpu.nvidia.com"))
    held["status"] = {"allocation": {"devices": {"results": [
        {"request": "g", "driver": GPU, "pool": "a-small", "device": "gpu-0"}]}}}
    snap = snapshot_of(world, held, claim("fresh", request("g", "gpu.nvidia.com", 2)))
    assert pending_dra_gpus(pod_with("held", "fresh"), snap) == 2.0
    assert pending_dra_gpus(pod_with("held"), snap) == 0.0
    off = snapshot_of(world, claim("fresh", request("g", "gpu.nvidia.com", 2)), config=SchedulerConfig())
    assert pending_dra_gpus(pod_with("fresh"), off) == 0.0


def test_a_plugin_says_what_a_device_is_worth(world):
    snap = snapshot_of(world, claim("c", request("g", "gpu.nvidia.com", 2)))
    assert pending_dra_gpus(pod_with("c"), snap, worth=lambda driver, device, pool: 0.5) == 1.0
