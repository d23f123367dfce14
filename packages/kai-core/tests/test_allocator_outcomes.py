"""Claims of one shape (pods from one ResourceClaimTemplate) share the allocator's work on a node
within a cycle; what each claim gets must still be exactly what it would get alone: its own name in
reasons, its own request names and configs in results, and devices in use respected."""

from __future__ import annotations

import pytest

from kai_core.dra.allocator import DeviceId, DraInventory, Unallocatable, allocate
from kai_core.dra.testing import GPU, claim, device_class, gpu_slice, node, opaque, request

SELECTOR = f"device.capacity['{GPU}'].memory.compareTo(quantity('40Gi')) >= 0"


def inventory(gpus: int = 2) -> DraInventory:
    return DraInventory([gpu_slice("n1", count=gpus)], [device_class("gpu", f"device.driver == '{GPU}'")])


def gpu_claim(name: str, **kw) -> dict:
    return claim(name, request("gpu", "gpu", 1, SELECTOR), **kw)


def test_a_claim_of_the_same_shape_gets_its_own_reason():
    inv = inventory(1)
    busy = {DeviceId(GPU, "n1", "gpu-0")}
    with pytest.raises(Unallocatable) as first:
        allocate([gpu_claim("a")], node("n1"), inv, busy)
    with pytest.raises(Unallocatable) as second:
        allocate([gpu_claim("b")], node("n1"), inv, busy)
    assert "claim default/a request gpu" in first.value.reason
    assert second.value.reason == first.value.reason.replace("default/a", "default/b")


def test_a_claim_of_the_same_shape_gets_its_own_configs_and_the_devices_still_free():
    inv = inventory(2)
    in_use: set = set()
    a = allocate([gpu_claim("a", config=[opaque(GPU, sharing="a")])], node("n1"), inv, in_use)[0]
    b = allocate([gpu_claim("b", config=[opaque(GPU, sharing="b")])], node("n1"), inv, in_use)[0]
    assert a["devices"]["results"] == b["devices"]["results"]  # same devices free: same choice
    assert a["devices"]["config"][0]["opaque"]["parameters"] == {"sharing": "a"}
    assert b["devices"]["config"][0]["opaque"]["parameters"] == {"sharing": "b"}
    in_use.add(DeviceId(GPU, "n1", a["devices"]["results"][0]["device"]))
    c = allocate([gpu_claim("c")], node("n1"), inv, in_use)[0]
    assert c["devices"]["results"][0]["device"] != a["devices"]["results"][0]["device"]
    in_use.add(DeviceId(GPU, "n1", c["devices"]["results"][0]["device"]))
    with pytest.raises(Unallocatable, match="claim default/d request gpu: needs 1 device"):
        allocate([gpu_claim("d")], node("n1"), inv, in_use)


def test_results_are_not_shared_between_claims():
    inv = inventory(2)
    a = allocate([gpu_claim("a")], node("n1"), inv, set())[0]
    a["devices"]["results"][0]["device"] = "changed"
    b = allocate([gpu_claim("b")], node("n1"), inv, set())[0]
    assert b["devices"]["results"][0]["device"] == "gpu-0"
