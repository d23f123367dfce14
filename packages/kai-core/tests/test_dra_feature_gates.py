"""The DRA feature gates: kube-scheduler's names and defaults, and upstream's behaviour with each off."""

from __future__ import annotations

import pytest

from kai_core.api.features import KNOWN_GATES, DraFeatures, FeatureGateError, FeatureGates
from kai_core.dra.allocator import ADMIN_ACCESS_LABEL, Unallocatable, allocate, devices_of
from kai_core.dra.capacity import shared_consumption
from kai_core.dra.inventory import DraInventory
from kai_core.dra.testing import (
    GPU,
    claim,
    device_class,
    gpu_device,
    gpu_slice,
    mig_counter_slice,
    mig_devices,
    node,
    opaque,
    request,
    resource_slice,
    result_names,
    sub_request,
)
from kai_core.dra.verify import AllocationRefused, verify_allocations
from kai_core.scheduler.cycle import SchedulerConfig

EX = "gpu.example.com"
GPU_CLASS = device_class(EX, f"device.driver == '{GPU}' && device.attributes['{GPU}'].type == 'gpu'")
ANY_CLASS = device_class("any", f"device.driver == '{GPU}'")
XID = [{"key": "gpu.nvidia.com/xid", "value": "79", "effect": "NoSchedule"}]
ADMIN_NS = {"default": {"metadata": {"name": "default", "labels": {ADMIN_ACCESS_LABEL: "true"}}}}
OFF = {
    "DRAPrioritizedList": DraFeatures(prioritized_list=False),
    "DRAAdminAccess": DraFeatures(admin_access=False),
    "DRADeviceTaints": DraFeatures(device_taints=False),
    "DRAPartitionableDevices": DraFeatures(partitionable_devices=False),
    "DRAConsumableCapacity": DraFeatures(consumable_capacity=False),
}


def inventory(*slices: dict, features: DraFeatures | None = None, classes=(GPU_CLASS,)) -> DraInventory:
    return DraInventory(list(slices), list(classes), features=features)


def devices(allocation: dict) -> list[str]:
    return [device for _, device in result_names(allocation)]


def refusal(claims: list[dict], inv: DraInventory, **kwargs) -> str:
    with pytest.raises(Unallocatable) as err:
        allocate(claims, node(), inv, set(), **kwargs)
    return err.value.reason


# -- the gates themselves ------------------------------------------------------------------------


def test_the_dra_gates_have_upstreams_names_and_its_1_37_defaults() -> None:
    gates = FeatureGates()
    for name in ("DRAPrioritizedList", "DRAAdminAccess", "DRADeviceTaints", "DRAPartitionableDevices",
                 "DRAConsumableCapacity", "DRADeviceBindingConditions"):
        assert name in KNOWN_GATES
        assert gates[name] is True, name  # all on by default in Kubernetes 1.37
    assert gates.dra_features == DraFeatures()
    assert not gates.dra  # DynamicResourceAllocation stays kai's opt-in


def test_feature_gates_flag_turns_dra_gates_off_as_kube_scheduler_takes_them() -> None:
    gates = FeatureGates.parse("DynamicResourceAllocation=true, DRADeviceTaints=false,DRAPrioritizedList=False")
    assert gates.dra
    assert gates.dra_features == DraFeatures(device_taints=False, prioritized_list=False)
    assert "DRADeviceTaints=false" in str(gates)
    with pytest.raises(FeatureGateError, match="unrecognized feature gate 'DRAPrioritisedList'"):
        FeatureGates.parse("DRAPrioritisedList=false")


@pytest.mark.parametrize("gate", sorted(OFF))
def test_each_gate_maps_to_its_own_allocator_switch(gate: str) -> None:
    assert FeatureGates.parse(f"{gate}=false").dra_features == OFF[gate]


# -- DRAPrioritizedList ----------------------------------------------------------------------------


def _first_available_claim() -> dict:
    return claim("c", {"name": "gpu", "firstAvailable": [sub_request("big", EX, 2), sub_request("one", EX)]})


def test_prioritized_list_on_allocates_the_first_sub_request_that_fits() -> None:
    [allocation] = allocate([_first_available_claim()], node(), inventory(gpu_slice(count=1)), set())
    assert result_names(allocation) == [("gpu/one", "gpu-0")]


def test_prioritized_list_off_refuses_first_available_with_upstreams_message() -> None:
    inv = inventory(gpu_slice(count=4), features=OFF["DRAPrioritizedList"])
    assert refusal([_first_available_claim()], inv) == (
        "claim default/c, request gpu: has subrequests, but the DRAPrioritizedList feature is disabled")
    # a claim without sub-requests is not affected
    assert devices(allocate([claim("d", request("gpu", EX))], node(), inv, set())[0]) == ["gpu-0"]


def test_prioritized_list_off_makes_the_pod_unschedulable_in_a_cycle(world) -> None:
    config = SchedulerConfig(features=FeatureGates.parse("DynamicResourceAllocation=true,DRAPrioritizedList=false"))
    w = world(GPU_CLASS, world.node("n1"), gpu_slice("n1", count=2), _first_available_claim(), config=config)
    pod = w.pod("p", resourceClaims=[{"name": "gpus", "resourceClaimName": "c"}])
    w.add(pod)
    w.cycle()
    # kube-scheduler's DynamicResources PreFilter: its words, for every node
    assert w.message("p") == ("0/1 nodes are available: resource claim default/c, request gpu: has subrequests, "
                              "but the DRAPrioritizedList feature is disabled.")
    assert w.bind_requests() == []


# -- DRAAdminAccess --------------------------------------------------------------------------------


def test_admin_access_on_may_take_a_device_in_use() -> None:
    inv = inventory(gpu_slice(count=1))
    in_use = {inv.devices_for_node(node())[0].id}
    [allocation] = allocate([claim("c", request("gpu", EX, adminAccess=True))], node(), inv, in_use,
                            namespaces=ADMIN_NS)
    assert allocation["devices"]["results"][0]["adminAccess"] is True


def test_admin_access_off_refuses_the_request_with_upstreams_message() -> None:
    inv = inventory(gpu_slice(count=1), features=OFF["DRAAdminAccess"])
    assert refusal([claim("c", request("gpu", EX, adminAccess=True))], inv, namespaces=ADMIN_NS) == (
        "claim default/c, request gpu: admin access is requested, but the feature is disabled")
    # adminAccess: false asks for no admin access
    assert devices(allocate([claim("d", request("gpu", EX, adminAccess=False))], node(), inv, set())[0]) == [
        "gpu-0"]


# -- DRADeviceTaints -------------------------------------------------------------------------------


def _tainted() -> dict:
    return gpu_slice(devices=[gpu_device(0, taints=XID), gpu_device(1)])


def test_device_taints_on_keep_untolerated_tainted_devices_out() -> None:
    inv = inventory(_tainted())
    assert devices(allocate([claim("c", request("gpu", EX))], node(), inv, set())[0]) == ["gpu-1"]
    reason = refusal([claim("c", request("gpu", EX, 2))], inv)
    assert "1 tainted gpu.nvidia.com/xid=79:NoSchedule without a toleration" in reason


def test_device_taints_off_ignores_taints_in_the_allocator_and_the_check_of_results() -> None:
    inv = inventory(_tainted(), features=OFF["DRADeviceTaints"])
    claims = [claim("c", request("gpu", EX, 2))]
    [allocation] = allocate(claims, node(), inv, set())
    assert devices(allocation) == ["gpu-0", "gpu-1"]
    verify_allocations(claims, [allocation], node(), inv)  # the binder's check agrees
    with pytest.raises(AllocationRefused, match="does not tolerate"):
        verify_allocations(claims, [allocation], node(), inventory(_tainted()))


# -- DRAPartitionableDevices -----------------------------------------------------------------------


def _mig_node() -> list[dict]:
    made = mig_devices(0, [("1g.10gb", 0)], full_gpu=False) + [gpu_device(1)]
    return [gpu_slice("n1", devices=made, slice_count=2), mig_counter_slice("n1", gpus=1)]


def test_partitionable_devices_on_allocates_devices_consuming_counters() -> None:
    inv = inventory(*_mig_node(), classes=[ANY_CLASS])
    assert sorted(devices(allocate([claim("c", request("d", "any", 2))], node(), inv, set())[0])) == [
        "gpu-0-mig-1g10gb-0", "gpu-1"]


def test_partitionable_devices_off_leaves_out_devices_consuming_counters_and_says_why() -> None:
    inv = inventory(*_mig_node(), classes=[ANY_CLASS], features=OFF["DRAPartitionableDevices"])
    assert [d.id.device for d in inv.devices_for_node(node())] == ["gpu-1"]
    assert devices(allocate([claim("c", request("d", "any"))], node(), inv, set())[0]) == ["gpu-1"]
    reason = refusal([claim("c", request("d", "any", 2))], inv)
    assert ("1 device(s) consuming shared counters are not used: the DRAPartitionableDevices feature gate is "
            "off") in reason


def test_partitionable_devices_off_ignores_per_device_node_selection_slices() -> None:
    per_device = resource_slice("pd", GPU, "pd", [gpu_device(0, nodeName="n1")], perDeviceNodeSelection=True)
    on = inventory(per_device)
    assert devices(allocate([claim("c", request("gpu", EX))], node(), on, set())[0]) == ["gpu-0"]
    off = inventory(per_device, features=OFF["DRAPartitionableDevices"])
    assert off.devices_for_node(node()) == []
    assert "1 device(s) of slices with perDeviceNodeSelection are not used" in refusal(
        [claim("c", request("gpu", EX))], off)


# -- DRAConsumableCapacity -------------------------------------------------------------------------


def test_consumable_capacity_off_refuses_capacity_requests_with_upstreams_message() -> None:
    body = {"requests": {"memory": "10Gi"}}
    inv = inventory(gpu_slice(count=1), features=OFF["DRAConsumableCapacity"])
    assert refusal([claim("c", request("gpu", EX, capacity=body))], inv) == (
        "claim default/c, request gpu: has capacity requests, but the DRAConsumableCapacity feature is disabled")
    # on: an exclusive device with the capacity asked for is allocated whole, nothing shared
    [allocation] = allocate([claim("c", request("gpu", EX, capacity=body))], node(), inventory(gpu_slice(count=1)),
                            set())
    assert "shareID" not in allocation["devices"]["results"][0]


# -- the form of class configs follows the allocator variant upstream would run ---------------------

STABLE = DraFeatures(consumable_capacity=False, binding_conditions=False)  # Kubernetes 1.34's defaults


def _configured() -> tuple[dict, dict]:
    klass = device_class(EX, f"device.driver == '{GPU}'", config=[opaque(GPU, sharing="TimeSlicing")])
    two = claim("c", request("a", EX), request("b", EX), config=[{"requests": ["b"], **opaque(GPU, mps=True)}])
    return klass, two


def test_class_config_names_the_requests_it_covers_when_upstream_runs_its_incubating_allocator() -> None:
    klass, two = _configured()
    [allocation] = allocate([two], node(), inventory(gpu_slice(count=2), classes=[klass]), set())
    assert allocation["devices"]["config"] == [
        {"source": "FromClass", "requests": ["a", "b"], **opaque(GPU, sharing="TimeSlicing")},
        {"source": "FromClaim", "requests": ["b"], **opaque(GPU, mps=True)},
    ]


def test_class_config_has_no_requests_once_per_request_when_upstream_runs_its_stable_allocator() -> None:
    klass, two = _configured()
    inv = inventory(gpu_slice(count=2), classes=[klass], features=STABLE)
    [allocation] = allocate([two], node(), inv, set())
    assert allocation["devices"]["config"] == [
        {"source": "FromClass", **opaque(GPU, sharing="TimeSlicing")},
        {"source": "FromClass", **opaque(GPU, sharing="TimeSlicing")},
        {"source": "FromClaim", "requests": ["b"], **opaque(GPU, mps=True)},
    ]
    verify_allocations([two], [allocation], node(), inv)  # the binder's check takes this form too
    # a claim of the same shape replayed from the cycle's memo gets the same form
    [again] = allocate([claim("d", request("a", EX), request("b", EX))], node(), inv, set())
    assert [c["source"] for c in again["devices"]["config"]] == ["FromClass", "FromClass"]
    assert all("requests" not in c for c in again["devices"]["config"])


# -- DRADeviceBindingConditions ------------------------------------------------------------------------

ATTACH = {"bindingConditions": ["example.com/Attached"], "bindingFailureConditions": ["example.com/AttachFailed"]}


def _fabric(binds_to_node: bool = True) -> dict:
    """Two fabric-attached GPUs usable on every node, which a controller attaches after allocation."""
    extra = {**ATTACH, "bindsToNode": True} if binds_to_node else ATTACH
    return resource_slice("fabric", GPU, "fabric", [gpu_device(0, **extra), gpu_device(1, **extra)], all_nodes=True)


def test_binding_conditions_on_copy_the_conditions_into_results_and_pin_the_node() -> None:
    inv = inventory(_fabric())
    [allocation] = allocate([claim("c", request("gpu", EX))], node("n7"), inv, set())
    [result] = allocation["devices"]["results"]
    assert result["bindingConditions"] == ["example.com/Attached"]
    assert result["bindingFailureConditions"] == ["example.com/AttachFailed"]
    assert allocation["nodeSelector"] == {"nodeSelectorTerms": [{"matchFields": [
        {"key": "metadata.name", "operator": "In", "values": ["n7"]}]}]}
    verify_allocations([claim("c", request("gpu", EX))], [allocation], node("n7"), inv)
    without = dict(allocation, devices={"results": [{k: v for k, v in result.items() if k != "bindingConditions"}]})
    with pytest.raises(AllocationRefused, match="bindingConditions"):
        verify_allocations([claim("c", request("gpu", EX))], [without], node("n7"), inv)


def test_binding_conditions_without_binds_to_node_keep_the_devices_selector() -> None:
    [allocation] = allocate([claim("c", request("gpu", EX))], node("n7"), inventory(_fabric(False)), set())
    assert "nodeSelector" not in allocation  # allNodes devices: usable everywhere
    assert allocation["devices"]["results"][0]["bindingConditions"] == ["example.com/Attached"]


def test_devices_without_binding_conditions_are_preferred() -> None:
    local = gpu_slice("n1", count=1)
    [allocation] = allocate([claim("c", request("gpu", EX))], node(), inventory(_fabric(), local), set())
    assert result_names(allocation) == [("gpu", "gpu-0")]
    assert allocation["devices"]["results"][0]["pool"] == "n1"


@pytest.mark.parametrize("gates", ["DRADeviceBindingConditions=false", "DRAResourceClaimDeviceStatus=false"])
def test_binding_conditions_off_leave_such_devices_out(gates: str) -> None:
    features = FeatureGates.parse(gates).dra_features
    assert not features.binding_conditions
    inv = inventory(_fabric(), features=features)
    assert inv.devices_for_node(node()) == []
    assert "2 device(s) with binding conditions are not used: the DRADeviceBindingConditions feature gate is off" in (
        refusal([claim("c", request("gpu", EX))], inv))


def test_binds_to_node_alone_is_ignored_with_binding_conditions_off() -> None:
    devices = [gpu_device(0, bindsToNode=True)]
    inv = inventory(resource_slice("s", GPU, "p", devices, all_nodes=True), features=STABLE)
    [allocation] = allocate([claim("c", request("gpu", EX))], node(), inv, set())
    assert "nodeSelector" not in allocation and "bindingConditions" not in allocation["devices"]["results"][0]


def test_distinct_attribute_needs_consumable_capacity_as_upstream() -> None:
    pair = claim("c", request("gpu", EX, 2), constraints=[{"distinctAttribute": f"{GPU}/uuid"}])
    assert len(allocate([pair], node(), inventory(gpu_slice(count=2)), set())[0]["devices"]["results"]) == 2
    off = inventory(gpu_slice(count=2), features=OFF["DRAConsumableCapacity"])
    assert refusal([pair], off) == "claim default/c, constraint #0: empty constraint (unsupported constraint type?)"


# -- DRAConsumableCapacity: devices that allow multiple allocations ------------------------------------

def _shared_nic(policy: dict | None = None, value: str = "100G") -> dict:
    """One NIC that claims share by bandwidth (allowMultipleAllocations)."""
    capacity = {"bandwidth": {"value": value, **({"requestPolicy": policy} if policy else {})}}
    device = {"name": "nic-0", "allowMultipleAllocations": True, "capacity": capacity,
              "attributes": {"type": {"string": "nic"}}}
    return resource_slice("nics", "nic.example.com", "n1", [device], node_name="n1")


NIC_CLASS = device_class("nic", "device.driver == 'nic.example.com'")


def _nic_claim(name: str, bandwidth: str | None) -> dict:
    extra = {"capacity": {"requests": {"bandwidth": bandwidth}}} if bandwidth else {}
    return claim(name, request("nic", "nic", **extra))


def test_a_shared_device_is_allocated_to_several_claims_within_its_capacity() -> None:
    inv = inventory(_shared_nic(), classes=[NIC_CLASS])
    taken: list[dict] = []
    for name in ("a", "b"):
        [allocation] = allocate([_nic_claim(name, "40G")], node(), inv, set(),
                                consumed=lambda: shared_consumption(taken))
        [result] = allocation["devices"]["results"]
        assert result["device"] == "nic-0" and result["consumedCapacity"] == {"bandwidth": "40G"}
        assert len(result["shareID"]) == 36  # a UUID
        verify_allocations([_nic_claim(name, "40G")], [allocation], node(), inv)
        taken.append(allocation)
    assert taken[0]["devices"]["results"][0]["shareID"] != taken[1]["devices"]["results"][0]["shareID"]
    reason = refusal([_nic_claim("c", "40G")], inv, consumed=lambda: shared_consumption(taken))
    assert "1 without the capacity asked for left" in reason  # 80G of 100G used
    # a claim asking for nothing takes the whole capacity, which is no longer there
    assert "without the capacity asked for left" in refusal([_nic_claim("d", None)], inv,
                                                            consumed=lambda: shared_consumption(taken))


def test_requests_are_rounded_up_by_the_devices_policy() -> None:
    step = _shared_nic({"default": "10G", "validRange": {"min": "10G", "max": "50G", "step": "10G"}})
    inv = inventory(step, classes=[NIC_CLASS])
    consumed = {name: allocate([_nic_claim("c", name)], node(), inv, set())[0]["devices"]["results"][0][
        "consumedCapacity"]["bandwidth"] for name in ("1G", "25G")}
    assert consumed == {"1G": "10G", "25G": "30G"}
    assert allocate([_nic_claim("d", None)], node(), inv, set())[0]["devices"]["results"][0][
        "consumedCapacity"] == {"bandwidth": "10G"}  # the default
    assert "without the capacity asked for left" in refusal([_nic_claim("e", "60G")], inv)  # above max
    values = inventory(_shared_nic({"validValues": ["8G", "16G"]}), classes=[NIC_CLASS])
    assert allocate([_nic_claim("f", "9G")], node(), values, set())[0]["devices"]["results"][0][
        "consumedCapacity"] == {"bandwidth": "16G"}


def test_with_consumable_capacity_off_a_shared_device_is_an_ordinary_exclusive_one() -> None:
    inv = inventory(_shared_nic(), classes=[NIC_CLASS], features=OFF["DRAConsumableCapacity"])
    [allocation] = allocate([_nic_claim("a", None)], node(), inv, set())
    [result] = allocation["devices"]["results"]
    assert "shareID" not in result and "consumedCapacity" not in result
    in_use = set(devices_of(allocation, exclusive_only=True))  # exclusive: it counts as in use
    with pytest.raises(Unallocatable, match="1 in use"):
        allocate([_nic_claim("b", None)], node(), inv, in_use)


def test_pods_share_a_device_by_capacity_within_one_cycle(world) -> None:
    config = SchedulerConfig(features=FeatureGates.parse("DynamicResourceAllocation=true"))
    w = world(NIC_CLASS, world.node("n1"), _shared_nic(), *(_nic_claim(n, "40G") for n in ("a", "b", "c")),
              config=config)
    for name in ("a", "b", "c"):
        w.add(w.pod(f"p-{name}", resourceClaims=[{"name": "nic", "resourceClaimName": name}]))
    w.explain()
    w.cycle()
    assert sorted(w.placed()) == ["p-a", "p-b"]
    assert w.message("p-c") == "0/1 nodes are available: 1 cannot allocate all claims."
    assert "claim default/c request nic: needs 1 device of DeviceClass nic, 0 free (1 match, 0 in use, 1 without " \
           "the capacity asked for left)" in w.detailed("p-c")
    allocations = [br["spec"]["resourceClaimAllocations"][0]["allocation"] for br in w.bind_requests()]
    assert [a["devices"]["results"][0]["consumedCapacity"] for a in allocations] == [{"bandwidth": "40G"}] * 2


def test_with_consumable_capacity_off_a_device_others_share_counts_as_in_use() -> None:
    shared = allocate([_nic_claim("a", "40G")], node(), inventory(_shared_nic(), classes=[NIC_CLASS]), set())
    off = inventory(_shared_nic(), classes=[NIC_CLASS], features=OFF["DRAConsumableCapacity"])
    assert "0 free (1 match, 1 in use)" in refusal([_nic_claim("b", None)], off,
                                                   consumed=lambda: shared_consumption(shared))
