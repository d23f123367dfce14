"""kai_core.dra.verify: an AllocationResult is checked against its claim the way the allocator
would have made it (the binder's check before it writes a BindRequest's allocations). The oracle
test (test_allocator_oracle.py) shows every allocation the allocator makes passes and tampered ones
do not; these name the checks one by one."""

from __future__ import annotations

import copy

import pytest

from kai_core.dra.allocator import DeviceId, DraInventory, allocate
from kai_core.dra.inventory import ParsedSlices
from kai_core.dra.testing import (
    GPU,
    claim,
    device_class,
    gpu_slice,
    mig_counter_slice,
    mig_devices,
    node,
    opaque,
    request,
    resource_slice,
    sub_request,
)
from kai_core.dra.verify import AllocationRefused, same_allocation, verify_allocations

CLASS = device_class(GPU, f"device.driver == '{GPU}'", config=[opaque(GPU, sharing="none")])


def inventory(*slices: dict) -> DraInventory:
    return DraInventory(list(slices) or [gpu_slice("n1", 4), gpu_slice("n2", 4)], [CLASS])


def allocated(c: dict, inv: DraInventory, node_name: str = "n1", in_use=frozenset()) -> dict:
    [alloc] = allocate([c], node(node_name), inv, set(in_use))
    return alloc


def refused(c: dict, alloc: dict, inv: DraInventory, node_name: str = "n1", **kw) -> str:
    with pytest.raises(AllocationRefused) as err:
        verify_allocations([c], [alloc], node(node_name), inv, **kw)
    return err.value.reason


def test_the_allocators_result_passes():
    inv = inventory()
    c = claim("c", request("gpu", GPU, 2))
    verify_allocations([c], [allocated(c, inv)], node("n1"), inv)


def test_a_claim_with_an_allocation_is_checked_by_its_spec():
    inv = inventory()
    c = claim("c", request("gpu", GPU, 1))
    alloc = allocated(c, inv)
    c["status"] = {"allocation": alloc}  # the status is the caller's to compare (same_allocation)
    verify_allocations([c], [alloc], node("n1"), inv)
    assert same_allocation(alloc, copy.deepcopy(alloc))


def test_a_request_the_claim_does_not_have():
    inv = inventory()
    c = claim("c", request("gpu", GPU, 1))
    alloc = allocated(c, inv)
    alloc["devices"]["results"][0]["request"] = "other"
    assert "is for request 'other', which the claim does not have (it has gpu)" in refused(c, alloc, inv)


def test_a_request_left_without_devices():
    inv = inventory()
    c = claim("c", request("a", GPU, 1), request("b", GPU, 1))
    alloc = allocated(c, inv)
    alloc["devices"]["results"] = alloc["devices"]["results"][:1]
    alloc["devices"]["config"][0]["requests"] = ["a"]
    assert "request b has no device in the allocation" in refused(c, alloc, inv)


def test_two_sub_requests_of_one_request():
    inv = inventory()
    c = claim("c", {"name": "gpu", "firstAvailable": [sub_request("big", GPU, 1), sub_request("small", GPU, 1)]})
    alloc = allocated(c, inv)
    extra = dict(alloc["devices"]["results"][0], request="gpu/small", device="gpu-3")
    alloc["devices"]["results"].append(extra)
    assert "has results of two of its firstAvailable sub-requests (gpu/big and gpu/small)" in refused(c, alloc, inv)


def test_a_device_of_another_node():
    inv = inventory()
    c = claim("c", request("gpu", GPU, 1))
    alloc = allocated(c, inv, "n2")
    assert f"device {GPU}/n2/gpu-0 of claim default/c is not available on node n1: it is on node n2" in refused(
        c, alloc, inv)


def test_a_selector_selecting_by_node_label():
    rack = {"nodeSelectorTerms": [{"matchExpressions": [{"key": "rack", "operator": "In", "values": ["r1"]}]}]}
    inv = DraInventory([resource_slice("fabric", GPU, "fabric", [{"name": "link-0"}], node_selector=rack)], [CLASS])
    c = claim("c", request("gpu", GPU, 1))
    in_rack, elsewhere = node("n1", rack="r1"), node("n2", rack="r2")
    [alloc] = allocate([c], in_rack, inv, set())
    assert alloc["nodeSelector"] == rack
    verify_allocations([c], [alloc], in_rack, inv)
    with pytest.raises(AllocationRefused, match="its ResourceSlice's nodeSelector does not select that node"):
        verify_allocations([c], [alloc], elsewhere, inv)


def test_a_request_selector_that_fails():
    inv = inventory()
    c = claim("c", request("gpu", GPU, 1, "device.attributes['gpu.nvidia.com'].productName == 'H100'"))
    alloc = {"devices": {"results": [{"request": "gpu", "driver": GPU, "pool": "n1", "device": "gpu-0"}],
                         "config": [{"source": "FromClass", "requests": ["gpu"], **opaque(GPU, sharing="none")}]},
             "nodeSelector": allocated(claim("x", request("gpu", GPU, 1)), inv)["nodeSelector"]}
    reason = refused(c, alloc, inv)
    assert f"device {GPU}/n1/gpu-0 of claim default/c does not match CEL selector #0 of request" in reason
    assert "productName == 'H100'" in reason


def test_a_taint_the_request_does_not_tolerate():
    devices = [dict(gpu_slice("n1", 1)["spec"]["devices"][0],
                    taints=[{"key": "broken", "value": "x", "effect": "NoSchedule"}])]
    inv = DraInventory([gpu_slice("n1", devices=devices)], [CLASS])
    tolerant = claim("c", request("gpu", GPU, 1, tolerations=[{"key": "broken", "operator": "Exists"}]))
    alloc = allocated(tolerant, inv)
    verify_allocations([tolerant], [alloc], node("n1"), inv)
    plain = claim("c", request("gpu", GPU, 1))
    alloc.pop("devices")
    alloc["devices"] = {"results": [{"request": "gpu", "driver": GPU, "pool": "n1", "device": "gpu-0"}],
                        "config": [{"source": "FromClass", "requests": ["gpu"], **opaque(GPU, sharing="none")}]}
    assert "has the taint broken:NoSchedule, which request gpu does not tolerate" in refused(plain, alloc, inv)


def test_tolerations_added_to_a_result():
    inv = inventory()
    c = claim("c", request("gpu", GPU, 1))
    alloc = allocated(c, inv)
    alloc["devices"]["results"][0]["tolerations"] = [{"operator": "Exists"}]
    assert "has tolerations other than request gpu's" in refused(c, alloc, inv)


def test_admin_access_needs_the_namespace_label():
    inv = inventory()
    c = claim("c", request("gpu", GPU, 1, adminAccess=True), namespace="ops")
    ops = {"ops": {"metadata": {"name": "ops", "labels": {"resource.kubernetes.io/admin-access": "true"}}}}
    [alloc] = allocate([c], node("n1"), inv, set(), namespaces=ops)
    verify_allocations([c], [alloc], node("n1"), inv, namespaces=ops)
    assert "adminAccess is only allowed in namespaces labelled" in refused(
        c, alloc, inv, namespaces={"ops": {"metadata": {"name": "ops"}}})


def test_an_all_request_missing_a_device():
    inv = inventory()
    c = claim("c", request("gpu", GPU, None, allocationMode="All"))
    alloc = allocated(c, inv)
    assert len(alloc["devices"]["results"]) == 4
    alloc["devices"]["results"].pop()
    assert f"request gpu asks for all 4 matching devices of node n1, the allocation leaves out {GPU}/n1/gpu-3" in \
        refused(c, alloc, inv)


def test_distinct_attribute():
    inv = inventory(gpu_slice("n1", 8))
    c = claim("c", request("gpu", GPU, 2),
              constraints=[{"distinctAttribute": "resource.kubernetes.io/pcieRoot"}])
    alloc = allocated(c, inv)
    verify_allocations([c], [alloc], node("n1"), inv)
    for i, result in enumerate(alloc["devices"]["results"]):
        result["device"] = f"gpu-{i}"  # both under PCIe root 0
    assert f"devices {GPU}/n1/gpu-0 and {GPU}/n1/gpu-1 have the same value 'pci0000:0'" in refused(c, alloc, inv)


def test_configs_are_the_class_and_claim_ones_only():
    inv = inventory()
    c = claim("c", request("gpu", GPU, 1), config=[{"requests": ["gpu"], **opaque(GPU, mps=True)}])
    alloc = allocated(c, inv)
    verify_allocations([c], [alloc], node("n1"), inv)
    dropped = copy.deepcopy(alloc)
    dropped["devices"]["config"] = [e for e in dropped["devices"]["config"] if e["source"] != "FromClaim"]
    assert "the allocation leaves out a config of the claim" in refused(c, dropped, inv)
    injected = copy.deepcopy(alloc)
    injected["devices"]["config"][0]["opaque"]["parameters"] = {"sharing": "everyone"}
    assert "is neither a config of the claim nor of a DeviceClass it uses" in refused(c, injected, inv)


def test_the_node_selector_must_be_the_devices():
    inv = inventory()
    c = claim("c", request("gpu", GPU, 1))
    alloc = allocated(c, inv)
    other = copy.deepcopy(alloc)
    other["nodeSelector"]["nodeSelectorTerms"][0]["matchExpressions"] = [{"key": "x", "operator": "DoesNotExist"}]
    assert "the allocation's nodeSelector is not the one of its devices" in refused(c, other, inv)
    other["nodeSelector"]["nodeSelectorTerms"][0]["matchFields"][0]["values"] = ["n2"]
    assert "the allocation's nodeSelector does not admit node n1" in refused(c, other, inv)
    del other["nodeSelector"]
    assert "the allocation's nodeSelector is not the one of its devices" in refused(c, other, inv)


def test_shared_counters_in_use_are_counted():
    slices = [mig_counter_slice("n1", gpus=1), gpu_slice("n1", devices=mig_devices(0, [("7g.80gb", 0)]),
                                                          slice_count=2)]
    inv = DraInventory(slices, [CLASS])
    c = claim("c", request("mig", GPU, 1, "device.attributes['gpu.nvidia.com'].type == 'mig'"))
    alloc = allocated(c, inv)
    verify_allocations([c], [alloc], node("n1"), inv)
    full_gpu = DeviceId(GPU, "n1", "gpu-0")  # allocated to another claim: the counters are gone
    with pytest.raises(AllocationRefused, match="devices in use take") as err:
        verify_allocations([c], [alloc], node("n1"), inv, in_use={full_gpu})
    assert err.value.conflict


def test_an_older_pool_generation_does_not_count():
    old = gpu_slice("n1", 4, name="n1-old")
    new = gpu_slice("n1", 2, name="n1-new", generation=2)
    inv = DraInventory([old, new], [CLASS])
    c = claim("c", request("gpu", GPU, 1))
    alloc = allocated(c, inventory())
    alloc["devices"]["results"][0]["device"] = "gpu-3"
    assert f"device {GPU}/n1/gpu-3 of claim default/c does not exist in pool {GPU}/n1 (generation 2)" in refused(
        c, alloc, inv)


def test_an_inventory_with_its_own_parsed_slices_leaves_the_shared_cache_alone():
    from kai_core.dra import inventory as inventory_module

    slices = [gpu_slice("n1", 2), gpu_slice("n2", 2)]
    for s in slices:
        s["metadata"]["resourceVersion"] = "7"
    DraInventory(slices, [CLASS])  # a scheduling cycle's
    shared = dict(inventory_module._SLICE_CACHE)
    parsed = ParsedSlices()
    small = DraInventory(slices[:1], [CLASS], parsed=parsed)
    assert inventory_module._SLICE_CACHE == shared
    assert small.device(DeviceId(GPU, "n1", "gpu-1")) is not None
    assert small.device(DeviceId(GPU, "n2", "gpu-1")) is None
    assert len(parsed) == 1
    parsed.forget(slices[0]["metadata"]["name"])
    assert not parsed
