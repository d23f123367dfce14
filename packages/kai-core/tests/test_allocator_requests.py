"""The allocator's request kinds and pool rules, table by table: API versions, pools and node
selection, ``All``, ``firstAvailable``, ``adminAccess``, taints and tolerations, the 32-device limit."""

from __future__ import annotations

import pytest

from kai_core.apiserver.store import EmbeddedStore
from kai_core.dra.allocator import (
    ADMIN_ACCESS_LABEL,
    DeviceId,
    DraInventory,
    Unallocatable,
    allocate,
    allocation_usable_on,
    devices_of,
)
from kai_core.dra.testing import (
    GPU,
    claim,
    device_class,
    gpu_device,
    gpu_slice,
    node,
    opaque,
    request,
    resource_slice,
    result_names,
    sub_request,
)

EX = "gpu.example.com"
GPU_CLASS = device_class(EX, f"device.driver == '{GPU}' && device.attributes['{GPU}'].type == 'gpu'")
H100 = f"device.attributes['{GPU}'].productName == 'NVIDIA H100'"
LABELLED = {"default": {"metadata": {"name": "default", "labels": {ADMIN_ACCESS_LABEL: "true"}}}}
UNLABELLED = {"default": {"metadata": {"name": "default", "labels": {}}}}


def gid(index: int, pool: str = "n1") -> DeviceId:
    return DeviceId(GPU, pool, f"gpu-{index}")


def refuse(claims: list[dict], inventory: DraInventory, target: dict | None = None, **kwargs) -> str:
    in_use = kwargs.pop("in_use", set())
    with pytest.raises(Unallocatable) as info:
        allocate(claims, target or node(), inventory, in_use, **kwargs)
    return info.value.reason


def devices(allocation: dict) -> list[str]:
    return [r["device"] for r in allocation["devices"]["results"]]


@pytest.fixture
def eight() -> DraInventory:
    return DraInventory([gpu_slice("n1"), gpu_slice("n2", count=2)], [GPU_CLASS])


# ------------------------------------------------------------------------------------ API versions


def _through_store(*objects: dict) -> list[dict]:
    """Objects as the scheduler reads them back from the store, which converts beta versions."""
    store = EmbeddedStore()
    return [store.create(obj) for obj in objects]


def test_v1beta1_slices_classes_and_claims_are_converted_on_input_and_allocated() -> None:
    beta_slice = {
        "apiVersion": "resource.k8s.io/v1beta1",
        "kind": "ResourceSlice",
        "metadata": {"name": "n1-gpus"},
        "spec": {
            "driver": GPU,
            "pool": {"name": "n1", "generation": 1, "resourceSliceCount": 1},
            "nodeName": "n1",
            "devices": [
                {"name": d["name"], "basic": {k: v for k, v in d.items() if k != "name"}}
                for d in [gpu_device(0), gpu_device(1, product="NVIDIA H100")]
            ],
        },
    }
    beta_class = {**GPU_CLASS, "apiVersion": "resource.k8s.io/v1beta1"}
    beta_claim = {
        "apiVersion": "resource.k8s.io/v1beta1",
        "kind": "ResourceClaim",
        "metadata": {"name": "c", "namespace": "default"},
        "spec": {
            "devices": {
                "requests": [
                    {"name": "h100", "deviceClassName": EX, "selectors": [{"cel": {"expression": H100}}]},
                    {"name": "any", "firstAvailable": [{"name": "one", "deviceClassName": EX, "count": 1}]},
                ]
            }
        },
    }
    slice_v1, class_v1, claim_v1 = _through_store(beta_slice, beta_class, beta_claim)
    assert claim_v1["apiVersion"] == "resource.k8s.io/v1"
    [allocation] = allocate([claim_v1], node(), DraInventory([slice_v1], [class_v1]), set())
    assert result_names(allocation) == [("h100", "gpu-1"), ("any/one", "gpu-0")]


def test_v1beta2_objects_have_the_v1_shape() -> None:
    made = gpu_slice(count=1)
    made["apiVersion"] = "resource.k8s.io/v1beta2"
    the_claim = {**claim("c", request("gpu", EX)), "apiVersion": "resource.k8s.io/v1beta2"}
    slice_v1, claim_v1 = _through_store(made, the_claim)
    [allocation] = allocate([claim_v1], node(), DraInventory([slice_v1], [GPU_CLASS]), set())
    assert devices(allocation) == ["gpu-0"]


def test_an_unconverted_v1beta1_claim_gets_a_clear_reason(eight: DraInventory) -> None:
    flat = claim("c", {"name": "gpu", "deviceClassName": EX})
    assert refuse([flat], eight) == (
        "claim default/c request gpu: has deviceClassName outside 'exactly', the resource.k8s.io/v1beta1 "
        "shape; it must be converted to resource.k8s.io/v1 first"
    )


# ------------------------------------------------------------------------------------ pools


def selector_on(key: str, *values: str) -> dict:
    return {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": key, "operator": "In", "values": list(values)}]}]
    }


@pytest.mark.parametrize(
    ("slices", "target", "expected"),
    [
        pytest.param([gpu_slice("n1", count=2)], node("n1"), ["gpu-0", "gpu-1"], id="nodeName"),
        pytest.param([gpu_slice("n1", count=2)], node("n2"), [], id="nodeName-other-node"),
        pytest.param(
            [resource_slice("r", GPU, "rack", [gpu_device(3)], node_selector=selector_on("rack", "a"))],
            node("n2", rack="a"),
            ["gpu-3"],
            id="nodeSelector",
        ),
        pytest.param(
            [resource_slice("r", GPU, "rack", [gpu_device(3)], node_selector=selector_on("rack", "a"))],
            node("n2", rack="b"),
            [],
            id="nodeSelector-miss",
        ),
        pytest.param(
            [resource_slice("f", GPU, "fabric", [gpu_device(4)], all_nodes=True)],
            node("n7"),
            ["gpu-4"],
            id="allNodes",
        ),
        pytest.param(
            [
                resource_slice(
                    "pd",
                    GPU,
                    "mixed",
                    [
                        gpu_device(0, nodeName="n1"),
                        gpu_device(1, nodeName="n2"),
                        gpu_device(2, nodeSelector=selector_on("rack", "a")),
                        gpu_device(3, allNodes=True),
                    ],
                    perDeviceNodeSelection=True,
                )
            ],
            node("n1", rack="a"),
            ["gpu-0", "gpu-2", "gpu-3"],
            id="perDeviceNodeSelection",
        ),
        pytest.param(
            [
                gpu_slice("n1", count=2, generation=1, name="old"),
                gpu_slice("n1", count=1, generation=2, name="new"),
            ],
            node("n1"),
            ["gpu-0"],
            id="newest-generation-only",
        ),
        pytest.param(
            [
                gpu_slice("n1", count=2, generation=3, name="a"),
                gpu_slice("n2", count=2, generation=2, name="b"),
            ],
            node("n1"),
            ["gpu-0", "gpu-1"],
            id="generations-are-per-pool",
        ),
        pytest.param([gpu_slice("n1", count=2, slice_count=2)], node("n1"), [], id="incomplete-pool"),
    ],
)
def test_which_devices_a_node_can_use(slices: list[dict], target: dict, expected: list[str]) -> None:
    inventory = DraInventory(slices, [GPU_CLASS])
    assert [d.id.device for d in inventory.devices_for_node(target)] == expected


def test_per_device_node_selection_builds_the_result_node_selector() -> None:
    slices = [
        resource_slice(
            "pd",
            GPU,
            "mixed",
            [gpu_device(2, nodeSelector=selector_on("rack", "a")), gpu_device(3, allNodes=True)],
            perDeviceNodeSelection=True,
        )
    ]
    inventory = DraInventory(slices, [GPU_CLASS])
    target = node("n1", rack="a")
    [allocation] = allocate([claim("c", request("gpu", EX, 2))], target, inventory, set())
    assert allocation["nodeSelector"] == selector_on("rack", "a")
    assert allocation_usable_on(allocation, target)
    assert not allocation_usable_on(allocation, node("n9", rack="b"))
    [allocation] = allocate(
        [claim("c", request("gpu", EX, 1, f"device.attributes['{GPU}'].uuid == 'GPU-00000003'"))],
        node("n9"),
        inventory,
        set(),
    )
    assert "nodeSelector" not in allocation  # an allNodes device is usable everywhere


def test_all_request_on_a_node_reached_by_an_incomplete_pool_is_refused() -> None:
    slices = [
        gpu_slice("n1", count=2),
        resource_slice("half", "nic.example.com", "nics", [], node_name="n1", slice_count=2),
    ]
    inventory = DraInventory(slices, [GPU_CLASS])
    # ExactCount simply does not use the incomplete pool...
    assert devices(allocate([claim("c", request("gpu", EX, 2))], node(), inventory, set())[0]) == [
        "gpu-0",
        "gpu-1",
    ]
    # ...but "all" is not known while a pool reaching the node is incomplete.
    reason = refuse([claim("c", request("gpu", EX, allocationMode="All"))], inventory)
    assert reason.startswith(
        "claim default/c request gpu: asks for all devices of DeviceClass gpu.example.com, but pool(s) "
        "nic.example.com/nics reaching the node are incomplete or invalid, so 'all' is not known"
    )
    assert "note: pool nic.example.com/nics is incomplete (1 of 2 ResourceSlices" in reason


def test_counter_slices_count_towards_pool_completeness() -> None:
    devices_slice = gpu_slice("n1", count=1, slice_count=2)
    counters = resource_slice(
        "cs",
        GPU,
        "n1",
        None,
        node_name="n1",
        slice_count=2,
        sharedCounters=[{"name": "set", "counters": {"mem": {"value": "1"}}}],
    )
    assert DraInventory([devices_slice], [GPU_CLASS]).devices_for_node(node()) == []
    assert [
        d.id.device for d in DraInventory([devices_slice, counters], [GPU_CLASS]).devices_for_node(node())
    ] == ["gpu-0"]


# ------------------------------------------------------------------------------------ All


@pytest.mark.parametrize(
    ("selectors", "in_use", "taint", "outcome"),
    [
        pytest.param((), set(), None, [f"gpu-{i}" for i in range(8)], id="every-matching-device"),
        pytest.param(
            (H100,),
            set(),
            None,
            "no device of DeviceClass gpu.example.com matching the request's "
            "selectors (the node has 8 devices)",
            id="none-matches",
        ),
        pytest.param(
            (),
            {gid(3)},
            None,
            "asks for all 8 devices of DeviceClass gpu.example.com, but 1 in use",
            id="one-in-use",
        ),
        pytest.param(
            (),
            set(),
            "NoExecute",
            "asks for all 8 devices of DeviceClass gpu.example.com, but 1 tainted "
            "gpu.nvidia.com/xid=79:NoExecute without a toleration",
            id="one-tainted",
        ),
        pytest.param(
            (), {gid(0, "n2")}, None, [f"gpu-{i}" for i in range(8)], id="other-nodes-do-not-matter"
        ),
    ],
)
def test_allocation_mode_all(selectors: tuple, in_use: set, taint: str | None, outcome) -> None:
    made = [gpu_device(i) for i in range(8)]
    if taint:
        made[5]["taints"] = [{"key": "gpu.nvidia.com/xid", "value": "79", "effect": taint}]
    inventory = DraInventory([gpu_slice(devices=made), gpu_slice("n2", count=1)], [GPU_CLASS])
    the_claim = claim("c", request("gpu", EX, None, *selectors, allocationMode="All"))
    if isinstance(outcome, list):
        [allocation] = allocate([the_claim], node(), inventory, in_use)
        assert devices(allocation) == outcome
    else:
        assert refuse([the_claim], inventory, in_use=in_use) == f"claim default/c request gpu: {outcome}"


def test_all_with_more_than_32_devices_is_refused() -> None:
    inventory = DraInventory([gpu_slice(count=40)], [GPU_CLASS])
    assert refuse([claim("c", request("gpu", EX, allocationMode="All"))], inventory) == (
        "claim default/c: needs at least 40 devices on the node, more than the 32 one claim can hold"
    )


def test_all_shares_nothing_with_other_requests() -> None:
    inventory = DraInventory([gpu_slice(count=2)], [GPU_CLASS])
    reason = refuse([claim("c", request("all", EX, allocationMode="All"), request("one", EX))], inventory)
    assert "need some of the same devices and there are not enough for all" in reason


# ------------------------------------------------------------------------------------ firstAvailable


def prioritized(*subs: dict, name: str = "gpu") -> dict:
    return {"name": name, "firstAvailable": list(subs)}


@pytest.mark.parametrize(
    ("in_use", "expected"),
    [
        pytest.param(set(), [("gpu/h100", "gpu-1")], id="first-fits"),
        pytest.param(
            {gid(1)}, [("gpu/two-a100", "gpu-0"), ("gpu/two-a100", "gpu-2")], id="second-when-first-taken"
        ),
        pytest.param({gid(1), gid(0), gid(2)}, [("gpu/any", "gpu-3")], id="third"),
    ],
)
def test_first_available_keeps_the_first_sub_request_that_fits(in_use: set, expected: list) -> None:
    made = [
        gpu_device(0),
        gpu_device(1, product="NVIDIA H100"),
        gpu_device(2),
        gpu_device(3, product="NVIDIA L4"),
    ]
    inventory = DraInventory([gpu_slice(devices=made)], [GPU_CLASS])
    a100 = f"device.attributes['{GPU}'].productName.startsWith('NVIDIA A100')"
    the_claim = claim(
        "c",
        prioritized(
            sub_request("h100", EX, 1, H100), sub_request("two-a100", EX, 2, a100), sub_request("any", EX, 1)
        ),
    )
    [allocation] = allocate([the_claim], node(), inventory, in_use)
    assert result_names(allocation) == expected


def test_first_available_prefers_earlier_requests_first_choices_over_device_order() -> None:
    # Request "one" could take gpu-0, which would leave "all-a100" (the first choice of the second
    # request) short; the allocator keeps both first choices by giving "one" the L4.
    made = [gpu_device(0), gpu_device(1), gpu_device(2, product="NVIDIA L4")]
    inventory = DraInventory([gpu_slice(devices=made)], [GPU_CLASS])
    a100 = f"device.attributes['{GPU}'].productName.startsWith('NVIDIA A100')"
    the_claim = claim(
        "c",
        request("one", EX, 1),
        prioritized(
            sub_request("all-a100", EX, None, a100, allocationMode="All"),
            sub_request("any", EX, 1),
            name="more",
        ),
    )
    [allocation] = allocate([the_claim], node(), inventory, set())
    assert result_names(allocation) == [
        ("one", "gpu-2"),
        ("more/all-a100", "gpu-0"),
        ("more/all-a100", "gpu-1"),
    ]


def test_first_available_configs_and_results_name_the_sub_request() -> None:
    classes = [
        GPU_CLASS,
        device_class("l4.example.com", H100.replace("H100", "L4"), config=[opaque(GPU, l4=True)]),
    ]
    inventory = DraInventory([gpu_slice(devices=[gpu_device(0, product="NVIDIA L4")])], classes)
    the_claim = claim(
        "c",
        prioritized(sub_request("h100", EX, 1, H100), sub_request("l4", "l4.example.com", 1)),
        config=[
            {"requests": ["gpu/h100"], **opaque(GPU, big=True)},
            {"requests": ["gpu/l4"], **opaque(GPU, small=True)},
            {"requests": ["gpu"], **opaque(GPU, any=True)},
        ],
    )
    [allocation] = allocate([the_claim], node(), inventory, set())
    assert allocation["devices"] == {
        "results": [{"request": "gpu/l4", "driver": GPU, "pool": "n1", "device": "gpu-0"}],
        "config": [
            {"source": "FromClass", "requests": ["gpu/l4"], **opaque(GPU, l4=True)},
            {"source": "FromClaim", "requests": ["gpu/l4"], **opaque(GPU, small=True)},
            {"source": "FromClaim", "requests": ["gpu"], **opaque(GPU, any=True)},
        ],
    }


def test_no_sub_request_fits_says_why_for_each(eight: DraInventory) -> None:
    reason = refuse(
        [claim("c", prioritized(sub_request("h100", EX, 1, H100), sub_request("many", EX, 9)))], eight
    )
    assert reason == (
        "claim default/c request gpu: no firstAvailable sub-request fits (gpu/h100: no device of DeviceClass "
        "gpu.example.com matching the request's selectors (the node has 8 devices); gpu/many: needs 9 "
        "devices of "
        "DeviceClass gpu.example.com, 8 free (8 match, 0 in use))"
    )


@pytest.mark.parametrize(
    ("the_request", "message"),
    [
        pytest.param(
            prioritized(sub_request("a", EX, adminAccess=True)),
            "claim default/c request gpu/a: adminAccess is not allowed in a firstAvailable sub-request",
            id="admin-in-sub-request",
        ),
        pytest.param(
            prioritized(sub_request("a", EX), sub_request("a", EX)),
            "claim default/c request gpu: firstAvailable[1] needs a name unique within the request",
            id="duplicate-sub-request",
        ),
        pytest.param(
            {"name": "gpu", "exactly": {"deviceClassName": EX}, "firstAvailable": [sub_request("a", EX)]},
            "claim default/c request gpu: must set exactly one of 'exactly' and 'firstAvailable'",
            id="both",
        ),
    ],
)
def test_malformed_first_available(eight: DraInventory, the_request: dict, message: str) -> None:
    assert refuse([claim("c", the_request)], eight) == message


def test_first_available_skips_a_sub_request_that_would_pass_32_devices() -> None:
    inventory = DraInventory([gpu_slice(count=40)], [GPU_CLASS])
    the_claim = claim(
        "c", request("base", EX, 30), prioritized(sub_request("four", EX, 4), sub_request("two", EX, 2))
    )
    [allocation] = allocate([the_claim], node(), inventory, set())
    assert len(allocation["devices"]["results"]) == 32
    assert allocation["devices"]["results"][-1]["request"] == "gpu/two"


# ------------------------------------------------------------------------------------ adminAccess


def admin_claim(count: int = 8, name: str = "monitor") -> dict:
    return claim(name, request("gpu", EX, count, adminAccess=True))


def test_admin_access_uses_devices_in_use_and_says_so(eight: DraInventory) -> None:
    in_use = {gid(i) for i in range(8)}
    [allocation] = allocate([admin_claim()], node(), eight, in_use, namespaces=LABELLED)
    assert devices(allocation) == [f"gpu-{i}" for i in range(8)]
    assert all(r["adminAccess"] is True for r in allocation["devices"]["results"])
    # Not counted as using them: an admin allocation adds nothing to the in-use set.
    assert devices_of(allocation, exclusive_only=True) == []


@pytest.mark.parametrize(
    ("namespaces", "message"),
    [
        pytest.param(
            UNLABELLED,
            "adminAccess is only allowed in namespaces labelled "
            "resource.kubernetes.io/admin-access=true, and namespace default is not",
            id="not-labelled",
        ),
        pytest.param(
            {"default": {"metadata": {"labels": {ADMIN_ACCESS_LABEL: "yes"}}}},
            "adminAccess is only allowed in namespaces labelled "
            "resource.kubernetes.io/admin-access=true, and namespace default is not",
            id="wrong-value",
        ),
        pytest.param(
            {},
            "adminAccess is only allowed in namespaces labelled "
            "resource.kubernetes.io/admin-access=true, and namespace default is not",
            id="unknown-namespace",
        ),
        pytest.param(
            None,
            "adminAccess needs the namespace label resource.kubernetes.io/admin-access=true, and the "
            "namespaces were not given to the allocator",
            id="no-namespaces",
        ),
    ],
)
def test_admin_access_needs_the_namespace_label(eight: DraInventory, namespaces, message: str) -> None:
    assert (
        refuse([admin_claim(1)], eight, namespaces=namespaces)
        == f"claim default/monitor request gpu: {message}"
    )


def test_admin_access_never_takes_one_device_twice_in_a_claim(eight: DraInventory) -> None:
    assert "needs 9 devices" in refuse([admin_claim(9)], eight, namespaces=LABELLED)


def test_admin_pick_of_an_earlier_claim_blocks_later_claims_of_the_call(eight: DraInventory) -> None:
    # Upstream marks admin picks as taken within one Allocate call; an exclusive claim after it must
    # look elsewhere, while an admin claim after an exclusive one may share.
    monitor, worker = admin_claim(1), claim("worker", request("gpu", EX, 1))
    first, second = allocate([monitor, worker], node(), eight, set(), namespaces=LABELLED)
    assert devices(first) == ["gpu-0"] and devices(second) == ["gpu-1"]
    first, second = allocate([worker, monitor], node(), eight, set(), namespaces=LABELLED)
    assert devices(first) == devices(second) == ["gpu-0"]


# ------------------------------------------------------------------------------------ taints


def tainted(effect: str, key: str = "gpu.nvidia.com/xid", value: str = "79") -> DraInventory:
    made = [gpu_device(0, taints=[{"key": key, "value": value, "effect": effect}]), gpu_device(1)]
    return DraInventory([gpu_slice(devices=made)], [GPU_CLASS])


@pytest.mark.parametrize(
    ("effect", "tolerations", "usable"),
    [
        pytest.param("NoSchedule", [], False, id="NoSchedule-blocks"),
        pytest.param("NoExecute", [], False, id="NoExecute-blocks"),
        pytest.param("None", [], True, id="None-does-not-block"),
        pytest.param(
            "NoSchedule", [{"key": "gpu.nvidia.com/xid", "operator": "Exists"}], True, id="exists-key"
        ),
        pytest.param("NoSchedule", [{"operator": "Exists"}], True, id="exists-everything"),
        pytest.param(
            "NoSchedule", [{"key": "gpu.nvidia.com/xid", "value": "79"}], True, id="equal-default-operator"
        ),
        pytest.param(
            "NoSchedule",
            [{"key": "gpu.nvidia.com/xid", "operator": "Equal", "value": "48"}],
            False,
            id="equal-other-value",
        ),
        pytest.param(
            "NoSchedule",
            [{"key": "gpu.nvidia.com/xid", "operator": "Exists", "effect": "NoExecute"}],
            False,
            id="other-effect",
        ),
        pytest.param(
            "NoExecute",
            [{"key": "gpu.nvidia.com/xid", "operator": "Exists", "effect": "NoExecute"}],
            True,
            id="same-effect",
        ),
        pytest.param("NoSchedule", [{"key": "other", "operator": "Exists"}], False, id="other-key"),
    ],
)
def test_device_taints_and_request_tolerations(effect: str, tolerations: list, usable: bool) -> None:
    the_claim = claim("c", request("gpu", EX, 2, tolerations=tolerations))
    if usable:
        [allocation] = allocate([the_claim], node(), tainted(effect), set())
        assert devices(allocation) == ["gpu-0", "gpu-1"]
        if tolerations:  # the result carries a copy of the request's tolerations
            assert all(r["tolerations"] == tolerations for r in allocation["devices"]["results"])
    else:
        assert refuse([the_claim], tainted(effect)) == (
            "claim default/c request gpu: needs 2 devices of DeviceClass gpu.example.com, 1 free (2 match, 0 "
            "in use, "
            f"1 tainted gpu.nvidia.com/xid=79:{effect} without a toleration)"
        )


def test_bad_toleration_is_refused(eight: DraInventory) -> None:
    reason = refuse(
        [claim("c", request("gpu", EX, tolerations=[{"key": "k", "operator": "Matches"}]))], eight
    )
    assert (
        reason
        == "claim default/c request gpu: tolerations[0].operator must be Exists or Equal, got 'Matches'"
    )


# ------------------------------------------------------------------------------------ 32 devices


def test_at_most_32_devices_per_claim_but_more_over_several_claims() -> None:
    inventory = DraInventory([gpu_slice(count=40)], [GPU_CLASS])
    assert refuse([claim("c", request("a", EX, 20), request("b", EX, 13))], inventory) == (
        "claim default/c: asks for at least 33 devices, more than the 32 one claim can hold"
    )
    first, second = allocate(
        [claim("a", request("gpu", EX, 20)), claim("b", request("gpu", EX, 20))], node(), inventory, set()
    )
    assert len(set(devices(first)) | set(devices(second))) == 40
