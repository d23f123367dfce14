"""The structured DRA allocator: which devices a pod's claims get on a node, and why not when they don't fit.

Slices, classes and claims are built by the small factories below in the resource.k8s.io/v1 shape,
GPU slices shaped like NVIDIA's gpu-kubelet-plugin publishes them and compute-domain slices like its
compute-domain-kubelet-plugin. The NVIDIA DeviceClasses come from ../shared/upstream when present.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kai_core.dra import testing as kit
from kai_core.dra.allocator import (
    MAX_DEVICES_PER_CLAIM,
    DeviceId,
    DraInventory,
    Unallocatable,
    allocate,
    allocation_usable_on,
    devices_of,
)
from kai_core.dra.testing import (
    CD,
    GPU,
    cd_slice,
    device_class,
    gpu_device,
    gpu_slice,
    node,
    opaque,
    resource_slice,
)

EXAMPLE = "gpu.example.com"  # a class of our own, so most tests do not depend on the upstream files


# ------------------------------------------------------------------------------------ factories


def request(
    name: str = "gpu", class_name: str = EXAMPLE, count: int | None = None, *selectors: str, **exactly: object
) -> dict:
    return kit.request(name, class_name, count, *selectors, **exactly)


def claim(
    name: str = "gpu-claim",
    *requests: dict,
    namespace: str = "default",
    config: list | None = None,
    **devices: object,
) -> dict:
    made = kit.claim(name, *(requests or [request()]), namespace=namespace, config=config)
    made["spec"]["devices"].update(devices)
    return made


def example_class(**kwargs: object) -> dict:
    return device_class(
        EXAMPLE, f"device.driver == '{GPU}' && device.attributes['{GPU}'].type == 'gpu'", **kwargs
    )


def names(allocation: dict) -> list[str]:
    return [r["device"] for r in allocation["devices"]["results"]]


def reason_of(
    claims: list[dict],
    inventory: DraInventory,
    target: dict | None = None,
    in_use: set[DeviceId] | None = None,
    **kwargs: object,
) -> str:
    with pytest.raises(Unallocatable) as info:
        allocate(claims, target or node(), inventory, in_use or set(), **kwargs)
    assert str(info.value) == info.value.reason
    return info.value.reason


@pytest.fixture
def inventory() -> DraInventory:
    """Node n1 with 8 GPUs, node n2 with 2, both with compute-domain devices."""
    return DraInventory(
        [gpu_slice("n1"), gpu_slice("n2", count=2), cd_slice("n1"), cd_slice("n2")], [example_class()]
    )


@pytest.fixture
def nvidia_classes(upstream_dir: Path) -> list[dict]:
    """NVIDIA's DeviceClasses as its Helm chart installs them (``upstream_dir``: root conftest)."""
    path = upstream_dir / "nvidia.deviceclasses.yaml"
    if not path.exists():
        pytest.skip(f"upstream NVIDIA DeviceClasses not found at {path}")
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def gpu_id(index: int, pool: str = "n1") -> DeviceId:
    return DeviceId(GPU, pool, f"gpu-{index}")


# ------------------------------------------------------------------------------------ counts


@pytest.mark.parametrize(
    ("count", "in_use", "expected"),
    [
        pytest.param(None, set(), ["gpu-0"], id="default-count-is-one"),
        pytest.param(3, set(), ["gpu-0", "gpu-1", "gpu-2"], id="three"),
        pytest.param(8, set(), [f"gpu-{i}" for i in range(8)], id="all-eight"),
        pytest.param(1, {gpu_id(0), gpu_id(1)}, ["gpu-2"], id="skips-in-use"),
        pytest.param(
            2, {gpu_id(1), gpu_id(2, pool="n2")}, ["gpu-0", "gpu-2"], id="in-use-on-other-node-ignored"
        ),
        pytest.param(6, {gpu_id(0), gpu_id(7)}, [f"gpu-{i}" for i in range(1, 7)], id="exactly-what-is-free"),
    ],
)
def test_exact_count(inventory: DraInventory, count: int | None, in_use: set, expected: list[str]) -> None:
    [allocation] = allocate([claim("c", request("gpu", EXAMPLE, count))], node("n1"), inventory, in_use)
    assert names(allocation) == expected
    assert all(
        r == {"request": "gpu", "driver": GPU, "pool": "n1", "device": d}
        for r, d in zip(allocation["devices"]["results"], expected, strict=True)
    )


@pytest.mark.parametrize(
    ("count", "in_use", "message"),
    [
        pytest.param(
            9,
            set(),
            "needs 9 devices of DeviceClass gpu.example.com, 8 free (8 match, 0 in use)",
            id="more-than-the-node-has",
        ),
        pytest.param(
            7,
            {gpu_id(0), gpu_id(5)},
            "needs 7 devices of DeviceClass gpu.example.com, 6 free (8 match, 2 in use)",
            id="in-use",
        ),
        pytest.param(
            1,
            {gpu_id(i) for i in range(8)},
            "needs 1 device of DeviceClass gpu.example.com, 0 free (8 match, 8 in use)",
            id="all-in-use",
        ),
    ],
)
def test_not_enough_devices_says_how_many(
    inventory: DraInventory, count: int, in_use: set, message: str
) -> None:
    reason = reason_of([claim("gpu-claim", request("gpu", EXAMPLE, count))], inventory, in_use=in_use)
    assert reason == f"claim default/gpu-claim request gpu: {message}"


def test_request_selectors_narrow_the_class() -> None:
    devices = [gpu_device(0, product="NVIDIA H100"), gpu_device(1), gpu_device(2, product="NVIDIA H100")]
    inv = DraInventory([gpu_slice(devices=devices)], [example_class()])
    h100 = f"device.attributes['{GPU}'].productName.startsWith('NVIDIA H100')"
    [allocation] = allocate([claim("c", request("gpu", EXAMPLE, 2, h100))], node(), inv, set())
    assert names(allocation) == ["gpu-0", "gpu-2"]
    reason = reason_of([claim("c", request("gpu", EXAMPLE, 3, h100))], inv)
    assert "needs 3 devices of DeviceClass gpu.example.com matching the request's selectors, 2 free" in reason


def test_nothing_matches_and_empty_node(inventory: DraInventory) -> None:
    never = "device.driver == 'nothing.example.com'"
    reason = reason_of([claim("c", request("gpu", EXAMPLE, 1, never))], inventory)
    assert reason == (
        "claim default/c request gpu: no device of DeviceClass gpu.example.com matching the request's "
        "selectors (the node has 10 devices)"
    )
    reason = reason_of([claim("c")], inventory, target=node("n9"))
    assert reason == "claim default/c request gpu: no ResourceSlice offers devices to the node"


def test_at_most_32_devices_per_claim() -> None:
    inv = DraInventory([gpu_slice(count=40)], [example_class()])
    [allocation] = allocate(
        [claim("c", request("a", EXAMPLE, 30), request("b", EXAMPLE, 2))], node(), inv, set()
    )
    assert len(allocation["devices"]["results"]) == MAX_DEVICES_PER_CLAIM
    reason = reason_of([claim("c", request("a", EXAMPLE, 30), request("b", EXAMPLE, 3))], inv)
    assert reason == "claim default/c: asks for at least 33 devices, more than the 32 one claim can hold"


@pytest.mark.parametrize("count", [0, -1, "2", True])
def test_bad_count_is_refused(inventory: DraInventory, count: object) -> None:
    reason = reason_of([claim("c", request("gpu", EXAMPLE, count=count))], inventory)  # type: ignore[arg-type]
    assert reason == f"claim default/c request gpu: count must be a positive integer, got {count!r}"


# ------------------------------------------------------------------------------------ several claims


def test_claims_in_one_call_get_distinct_devices(inventory: DraInventory) -> None:
    claims = [
        claim("a", request("gpu", EXAMPLE, 1)),
        claim("b", request("gpu", EXAMPLE, 2)),
        claim("c", request("ch", "cd-channel")),
    ]
    inv = DraInventory(
        [gpu_slice("n1"), cd_slice("n1")],
        [example_class(), device_class("cd-channel", f"device.driver == '{CD}'")],
    )
    a, b, c = allocate(claims, node(), inv, {gpu_id(1)})
    assert names(a) == ["gpu-0"]
    assert names(b) == ["gpu-2", "gpu-3"]
    assert names(c) == ["channel-0"]


def test_requests_of_one_claim_get_distinct_devices(inventory: DraInventory) -> None:
    [allocation] = allocate(
        [claim("c", request("x", EXAMPLE, 2), request("y", EXAMPLE, 1))], node(), inventory, set()
    )
    assert [(r["request"], r["device"]) for r in allocation["devices"]["results"]] == [
        ("x", "gpu-0"),
        ("x", "gpu-1"),
        ("y", "gpu-2"),
    ]


def test_claims_that_fit_alone_but_not_together_name_each_other(inventory: DraInventory) -> None:
    claims = [claim("trainer", request("gpu", EXAMPLE, 5)), claim("sidecar", request("gpu", EXAMPLE, 4))]
    reason = reason_of(claims, inventory)
    assert reason == (
        "claim default/sidecar request gpu: needs 4 devices of DeviceClass gpu.example.com; "
        "8 free match, but claim default/trainer request gpu allocated together with it "
        "need some of the same devices and there are not enough for all"
    )
    # Each alone fits.
    assert allocate(claims[:1], node(), inventory, set()) and allocate(claims[1:], node(), inventory, set())


def test_search_backtracks_when_the_first_pick_blocks_a_later_request(inventory: DraInventory) -> None:
    first_two = f"device.attributes['{GPU}'].uuid in ['GPU-00000000', 'GPU-00000001']"
    only_zero = f"device.attributes['{GPU}'].uuid == 'GPU-00000000'"
    [allocation] = allocate(
        [claim("c", request("any", EXAMPLE, 1, first_two), request("zero", EXAMPLE, 1, only_zero))],
        node(),
        inventory,
        set(),
    )
    assert [(r["request"], r["device"]) for r in allocation["devices"]["results"]] == [
        ("any", "gpu-1"),
        ("zero", "gpu-0"),
    ]


def test_infeasible_combination_is_found_without_exhaustive_search() -> None:
    # 12 single-device requests over 11 devices: plain backtracking would try ~11! orders.
    inv = DraInventory([gpu_slice(count=11)], [example_class()])
    claims = [claim(f"c{i}", request("gpu", EXAMPLE, 1)) for i in range(12)]
    reason = reason_of(claims, inv, max_device_checks=10_000)
    assert reason.startswith(
        "claim default/c11 request gpu: needs 1 device of DeviceClass gpu.example.com; 11 free"
    )


def test_work_bound_stops_the_search() -> None:
    inv = DraInventory([gpu_slice(count=8)], [example_class()])
    reason = reason_of(
        [claim("a", request("gpu", EXAMPLE, 4)), claim("b", request("gpu", EXAMPLE, 4))],
        inv,
        max_device_checks=5,
    )
    assert reason == (
        "claims default/a, default/b: the search for devices was too large and was "
        "stopped after 5 device checks; fewer or simpler requests would help"
    )
    reason = reason_of([claim("a", request("gpu", EXAMPLE, 4))], inv, max_device_checks=3)
    assert reason.startswith("claim default/a: the search for devices was too large")
    # The default bound is far above what ordinary claims need.
    assert allocate([claim("a", request("gpu", EXAMPLE, 8))], node(), inv, set())


# ------------------------------------------------------------------------------------ results


def test_config_from_class_then_claim_in_upstream_shape() -> None:
    gpu_cfg = opaque(GPU, sharing="TimeSlicing")
    classes = [
        example_class(config=[gpu_cfg, opaque(GPU, second=True)]),
        device_class(
            "nic.example.com", "device.driver == 'nic.example.com'", config=[opaque("nic.example.com")]
        ),
    ]
    nics = resource_slice(
        "n1-nic", "nic.example.com", "n1", [{"name": "eth0"}, {"name": "eth1"}], node_name="n1"
    )
    inv = DraInventory([gpu_slice(), nics], classes)
    the_claim = claim(
        "c",
        request("gpu-a", EXAMPLE),
        request("nic", "nic.example.com"),
        request("gpu-b", EXAMPLE),
        config=[
            {"requests": ["gpu-b"], **opaque(GPU, mps=True)},
            opaque(GPU, everything=True),
            {"requests": ["nic", "gpu-a", "gpu-b"], **opaque("nic.example.com", mtu=9000)},
            {"requests": ["unknown"], **opaque(GPU, ignored=True)},
        ],
    )
    [allocation] = allocate([the_claim], node(), inv, set())
    assert allocation["devices"]["config"] == [
        {"source": "FromClass", "requests": ["gpu-a", "gpu-b"], **gpu_cfg},
        {"source": "FromClass", "requests": ["gpu-a", "gpu-b"], **opaque(GPU, second=True)},
        {"source": "FromClass", "requests": ["nic"], **opaque("nic.example.com")},
        {"source": "FromClaim", "requests": ["gpu-b"], **opaque(GPU, mps=True)},
        {"source": "FromClaim", **opaque(GPU, everything=True)},
        # Names every request: the list is kept as written, as the API server copies it.
        {"source": "FromClaim", "requests": ["nic", "gpu-a", "gpu-b"], **opaque("nic.example.com", mtu=9000)},
    ]
    assert [(r["request"], r["device"]) for r in allocation["devices"]["results"]] == [
        ("gpu-a", "gpu-0"),
        ("nic", "eth0"),
        ("gpu-b", "gpu-1"),
    ]


def test_config_of_a_single_request_claim_and_no_config(inventory: DraInventory) -> None:
    inv = DraInventory([gpu_slice()], [example_class(config=[opaque(GPU, a=1)])])
    [allocation] = allocate(
        [claim("c", config=[{"requests": ["gpu"], **opaque(GPU, b=2)}])], node(), inv, set()
    )
    assert allocation["devices"]["config"] == [
        {"source": "FromClass", "requests": ["gpu"], **opaque(GPU, a=1)},
        {"source": "FromClaim", "requests": ["gpu"], **opaque(GPU, b=2)},
    ]
    [allocation] = allocate([claim("c")], node(), inventory, set())
    assert "config" not in allocation["devices"]


def test_result_is_independent_of_the_inputs(inventory: DraInventory) -> None:
    cfg = opaque(GPU, nested={"x": [1]})
    inv = DraInventory([gpu_slice()], [example_class(config=[cfg])])
    [allocation] = allocate([claim("c")], node(), inv, set())
    allocation["devices"]["config"][0]["opaque"]["parameters"]["nested"]["x"].append(2)
    assert cfg["opaque"]["parameters"]["nested"] == {"x": [1]}


def selector_on(key: str, *values: str) -> dict:
    return {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": key, "operator": "In", "values": list(values)}]}]
    }


@pytest.mark.parametrize(
    ("slices", "requests", "expected"),
    [
        pytest.param(
            [gpu_slice()],
            [request("gpu", EXAMPLE)],
            {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
                ]
            },
            id="node-local",
        ),
        pytest.param(
            [resource_slice("net", GPU, "fabric", [gpu_device(0)], all_nodes=True)],
            [request("gpu", EXAMPLE)],
            None,
            id="all-nodes-omits-selector",
        ),
        pytest.param(
            [resource_slice("rack", GPU, "rack-a", [gpu_device(0)], node_selector=selector_on("rack", "a"))],
            [request("gpu", EXAMPLE)],
            selector_on("rack", "a"),
            id="slice-selector",
        ),
        pytest.param(
            [resource_slice("net", GPU, "fabric", [gpu_device(0)], all_nodes=True), gpu_slice(count=1)],
            [
                request("a", EXAMPLE, 1, f"device.attributes['{GPU}'].uuid == 'GPU-00000000'"),
                request("b", EXAMPLE),
            ],
            {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
                ]
            },
            id="node-local-wins-over-all-nodes",
        ),
        pytest.param(
            [
                resource_slice(
                    "rack", GPU, "rack-a", [gpu_device(0)], node_selector=selector_on("rack", "a")
                ),
                resource_slice(
                    "zone", GPU, "zone-1", [gpu_device(1)], node_selector=selector_on("zone", "1")
                ),
                resource_slice(
                    "rack2", GPU, "rack-a2", [gpu_device(2)], node_selector=selector_on("rack", "a")
                ),
            ],
            [request("gpu", EXAMPLE, 3)],
            {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "rack", "operator": "In", "values": ["a"]},
                            {"key": "zone", "operator": "In", "values": ["1"]},
                        ]
                    }
                ]
            },
            id="selectors-are-anded-and-deduplicated",
        ),
    ],
)
def test_node_selector_of_the_allocation(
    slices: list[dict], requests: list[dict], expected: dict | None
) -> None:
    target = node("n1", rack="a", zone="1")
    [allocation] = allocate([claim("c", *requests)], target, DraInventory(slices, [example_class()]), set())
    assert allocation.get("nodeSelector") == expected
    assert ("nodeSelector" in allocation) is (expected is not None)
    assert allocation_usable_on(allocation, target)


def test_slice_selector_decides_which_nodes_see_the_devices() -> None:
    inv = DraInventory(
        [resource_slice("rack", GPU, "rack-a", [gpu_device(0)], node_selector=selector_on("rack", "a"))],
        [example_class()],
    )
    assert allocate([claim("c")], node("n1", rack="a"), inv, set())
    assert "no ResourceSlice offers devices" in reason_of([claim("c")], inv, target=node("n2", rack="b"))


def test_allocation_usable_on_and_devices_of(inventory: DraInventory) -> None:
    [allocation] = allocate([claim("c", request("gpu", EXAMPLE, 2))], node("n1"), inventory, set())
    assert allocation_usable_on(allocation, node("n1"))
    assert not allocation_usable_on(allocation, node("n2"))
    assert allocation_usable_on({"devices": {"results": []}}, node("n2"))
    assert devices_of(allocation) == [gpu_id(0), gpu_id(1)]
    admin = {
        "devices": {
            "results": [
                {"request": "r", "driver": GPU, "pool": "n1", "device": "gpu-0", "adminAccess": True},
                {"request": "r", "driver": GPU, "pool": "n1", "device": "gpu-1"},
            ]
        }
    }
    assert devices_of(admin) == [gpu_id(0), gpu_id(1)]
    assert devices_of(admin, exclusive_only=True) == [gpu_id(1)]
    assert devices_of({}) == []


def test_already_allocated_claim_is_kept_and_its_devices_stay_taken(inventory: DraInventory) -> None:
    [existing] = allocate([claim("shared")], node("n1"), inventory, set())
    shared = claim("shared")
    shared["status"] = {"allocation": existing}
    result = allocate([shared, claim("new")], node("n1"), inventory, set())
    assert result[0] == existing and result[0] is not existing
    assert names(result[1]) == ["gpu-1"]  # gpu-0 belongs to the shared claim even if in_use forgot it
    reason = reason_of([shared], inventory, target=node("n2"))
    assert reason == (
        "claim default/shared: is already allocated to devices that node n2 cannot use "
        "(its allocation's nodeSelector does not admit the node)"
    )


def test_callers_in_use_set_is_not_modified(inventory: DraInventory) -> None:
    [existing] = allocate([claim("shared")], node("n1"), inventory, set())
    shared = claim("shared")
    shared["status"] = {"allocation": existing}
    in_use = {gpu_id(5)}
    allocate([shared, claim("new")], node("n1"), inventory, in_use)
    assert in_use == {gpu_id(5)}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(
            lambda c: c.update(status={"allocation": {"devices": {"results": [{"driver": GPU}]}}}),
            "claim default/c: its status.allocation is malformed: devices.results[0] must name a driver, "
            "a pool and a device",
            id="allocation-result",
        ),
        pytest.param(
            lambda c: c["spec"]["devices"].update(config=["opaque"]),
            "claim default/c: spec.devices.config must be a list of objects",
            id="claim-config",
        ),
        pytest.param(
            lambda c: c["spec"]["devices"].update(config=[{"requests": "gpu"}]),
            "claim default/c: spec.devices.config[0].requests must be a list of names",
            id="claim-config-requests",
        ),
        pytest.param(
            lambda c: c["spec"]["devices"].update(requests={"name": "gpu"}),
            "claim default/c: spec.devices.requests must be a list",
            id="requests",
        ),
    ],
)
def test_malformed_claims_get_a_clear_reason(inventory: DraInventory, mutate, message: str) -> None:
    bad = claim("c")
    mutate(bad)
    assert reason_of([bad], inventory).startswith(message)


def test_malformed_class_config_gets_a_clear_reason() -> None:
    inv = DraInventory([gpu_slice()], [example_class(config="gpu")])  # type: ignore[arg-type]
    assert reason_of([claim("c")], inv) == (
        "claim default/c request gpu: spec.config of DeviceClass gpu.example.com must be a list of objects"
    )


def test_claim_without_requests_gets_an_empty_allocation(inventory: DraInventory) -> None:
    empty = claim("c")
    empty["spec"] = {}
    assert allocate([empty], node(), inventory, set()) == [{"devices": {"results": []}}]
    assert allocate([], node(), inventory, set()) == []


# ------------------------------------------------------------------------------------ refusals


def test_missing_device_class_names_class_and_claim(inventory: DraInventory) -> None:
    reason = reason_of([claim("c", request("gpu", "gpu.nvidia.com"))], inventory)
    assert reason == (
        "claim default/c request gpu: DeviceClass gpu.nvidia.com does not exist "
        "(create it, or fix deviceClassName)"
    )


@pytest.mark.parametrize(
    ("the_claim", "message"),
    [
        pytest.param(
            claim("x", request("gpu", EXAMPLE, allocationMode="Some")),
            "claim default/x request gpu: unknown allocationMode 'Some' (expected ExactCount or All)",
            id="unknown-mode",
        ),
        pytest.param(
            claim("x", request("gpu", EXAMPLE, capacity={"requests": {"memory": "lots"}})),
            "claim default/x request gpu: capacity.requests[memory]: invalid quantity 'lots': expected a number "
            "with an optional suffix (n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent like e3)",
            id="capacity",
        ),
        pytest.param(
            claim("x", request("gpu", EXAMPLE, shareable=True)),
            "claim default/x request gpu: exactly.shareable is not supported",
            id="unknown-exactly",
        ),
        pytest.param(
            claim("x", {**request("gpu"), "priority": 1}),
            "claim default/x request gpu: priority is not supported",
            id="unknown-request-field",
        ),
        pytest.param(
            claim("x", scoring={"mode": "best"}),
            "claim default/x: spec.devices.scoring is not supported",
            id="unknown-devices-field",
        ),
        pytest.param(
            claim("x", {"name": "gpu", "deviceClassName": EXAMPLE}),
            "claim default/x request gpu: has deviceClassName outside 'exactly', the resource.k8s.io/v1beta1 "
            "shape; it must be converted to resource.k8s.io/v1 first",
            id="v1beta1-shape",
        ),
        pytest.param(
            claim("x", {"name": "gpu"}),
            "claim default/x request gpu: must set exactly one of 'exactly' and 'firstAvailable'",
            id="no-exactly",
        ),
        pytest.param(
            claim("x", {"exactly": {"deviceClassName": EXAMPLE}}),
            "claim default/x: request #0 has no name",
            id="no-name",
        ),
        pytest.param(
            claim("x", request("gpu", "")),
            "claim default/x request gpu: exactly.deviceClassName is missing",
            id="no-class",
        ),
        pytest.param(
            claim("x", request("gpu", EXAMPLE, selectors=[{"expression": "true"}])),
            "claim default/x request gpu: selector #0 of request (DeviceClass gpu.example.com) has no "
            "CEL expression (only CEL selectors are supported)",
            id="non-cel-selector",
        ),
    ],
)
def test_unsupported_or_malformed_claims_are_refused(
    inventory: DraInventory, the_claim: dict, message: str
) -> None:
    assert reason_of([claim("fine"), the_claim], inventory) == message


@pytest.mark.parametrize(
    "exactly",
    [{"adminAccess": False}, {"tolerations": []}, {"capacity": {}}, {"allocationMode": "ExactCount"}],
)
def test_unset_or_default_optional_fields_are_accepted(inventory: DraInventory, exactly: dict) -> None:
    [allocation] = allocate([claim("c", request("gpu", EXAMPLE, None, **exactly))], node(), inventory, set())
    assert names(allocation) == ["gpu-0"]


# ------------------------------------------------------------------------------------ CEL


def test_cel_compile_error_in_class_names_claim_request_class_and_expression() -> None:
    inv = DraInventory([gpu_slice()], [device_class("broken.example.com", "device.driver ==")])
    reason = reason_of([claim("c", request("gpu", "broken.example.com"))], inv)
    assert reason.startswith(
        "claim default/c request gpu: CEL selector #0 of DeviceClass broken.example.com does not compile: "
        "CEL expression 'device.driver ==': "
    )


def test_cel_compile_error_in_request_selector(inventory: DraInventory) -> None:
    expression = f"device.capacity['{GPU}'].memory > 5"
    reason = reason_of([claim("c", request("gpu", EXAMPLE, 1, "true", expression))], inventory)
    assert reason.startswith(
        "claim default/c request gpu: CEL selector #1 of request (DeviceClass gpu.example.com) "
        "does not compile: "
    )
    assert repr(expression) in reason


def test_cel_runtime_error_aborts_allocation(inventory: DraInventory) -> None:
    expression = f"device.attributes['{GPU}'].numaNode == 0"
    reason = reason_of([claim("c", request("gpu", EXAMPLE, 1, expression))], inventory)
    assert reason.startswith(
        "claim default/c request gpu: CEL selector #0 of request (DeviceClass gpu.example.com) "
        f"failed on device {GPU}/n1/gpu-0: CEL expression {expression!r}: no such key 'numaNode'"
    )
    # Guarded, the same question is just "no match".
    guarded = f"has(device.attributes['{GPU}'].numaNode) && device.attributes['{GPU}'].numaNode == 0"
    assert "no device of DeviceClass gpu.example.com matching the request's selectors" in reason_of(
        [claim("c", request("gpu", EXAMPLE, 1, guarded))], inventory
    )


def test_cel_runtime_error_on_an_in_use_device_is_not_reached() -> None:
    devices = [
        gpu_device(0),
        {**gpu_device(1), "attributes": {**gpu_device(1)["attributes"], "numaNode": {"int": 0}}},
    ]
    inv = DraInventory([gpu_slice(devices=devices)], [example_class()])
    expression = f"device.attributes['{GPU}'].numaNode == 0"
    [allocation] = allocate([claim("c", request("gpu", EXAMPLE, 1, expression))], node(), inv, {gpu_id(0)})
    assert names(allocation) == ["gpu-1"]


# ------------------------------------------------------------------------------------ pools


def test_only_the_newest_pool_generation_is_used() -> None:
    old = gpu_slice(count=4, generation=1, name="old")
    new = gpu_slice(devices=[gpu_device(6), gpu_device(7)], generation=2, name="new")
    inv = DraInventory([old, new], [example_class()])
    assert [d.id.device for d in inv.devices_for_node(node())] == ["gpu-6", "gpu-7"]
    [allocation] = allocate([claim("c", request("gpu", EXAMPLE, 2))], node(), inv, set())
    assert names(allocation) == ["gpu-6", "gpu-7"]


def test_incomplete_pool_is_skipped_and_explained() -> None:
    half = gpu_slice(count=4, slice_count=2, name="first-half")
    inv = DraInventory([half], [example_class()])
    assert inv.devices_for_node(node()) == []
    reason = reason_of([claim("c")], inv)
    assert reason == (
        "claim default/c request gpu: no ResourceSlice offers devices to the node; "
        "note: pool gpu.nvidia.com/n1 is incomplete "
        "(1 of 2 ResourceSlices at generation 1 are published), so its devices are not used until "
        "the driver has published all of them"
    )


def test_pool_completeness_counts_slices_for_all_nodes() -> None:
    # One pool spread over two racks: each node sees one slice, but the pool is complete.
    rack_a = resource_slice(
        "pool-a", GPU, "fabric", [gpu_device(0)], node_selector=selector_on("rack", "a"), slice_count=2
    )
    rack_b = resource_slice(
        "pool-b", GPU, "fabric", [gpu_device(1)], node_selector=selector_on("rack", "b"), slice_count=2
    )
    inv = DraInventory([rack_a, rack_b], [example_class()])
    [allocation] = allocate([claim("c")], node("n1", rack="b"), inv, set())
    assert names(allocation) == ["gpu-1"]
    # Without the other rack's slice the pool is incomplete, even for rack b.
    inv = DraInventory([rack_b], [example_class()])
    assert "is incomplete (1 of 2" in reason_of([claim("c")], inv, target=node("n1", rack="b"))


def test_newer_incomplete_generation_hides_the_older_complete_one() -> None:
    old = gpu_slice(count=2, generation=1, name="old")
    new = gpu_slice(count=2, generation=2, slice_count=2, name="new-1")
    inv = DraInventory([old, new], [example_class()])
    assert inv.devices_for_node(node()) == []


def test_duplicate_device_names_make_the_pool_invalid() -> None:
    inv = DraInventory(
        [gpu_slice(count=2, slice_count=2, name="a"), gpu_slice(count=1, slice_count=2, name="b")],
        [example_class()],
    )
    assert "pool gpu.nvidia.com/n1 is invalid (device name gpu-0 appears more than once)" in reason_of(
        [claim("c")], inv
    )


def test_device_order_does_not_depend_on_slice_order() -> None:
    slices = [
        gpu_slice("n1"),
        cd_slice("n1"),
        resource_slice("net", GPU, "fabric", [gpu_device(9)], all_nodes=True),
    ]
    forward = DraInventory(slices, [example_class()])
    backward = DraInventory(list(reversed(slices)), [example_class()])
    ids = [d.id for d in forward.devices_for_node(node())]
    assert ids == [d.id for d in backward.devices_for_node(node())]
    assert ids[0] == DeviceId(CD, "n1", "channel-0")


@pytest.mark.parametrize(
    ("device_extra", "skipped"),
    [
        pytest.param(
            {"allowMultipleAllocations": "yes"},
            "allowMultipleAllocations must be true or false",
            id="multiple",
        ),
    ],
)
def test_devices_with_unsupported_features_are_skipped(device_extra: dict, skipped: str) -> None:
    devices = [{**gpu_device(0), **device_extra}, gpu_device(1)]
    inv = DraInventory([gpu_slice(devices=devices)], [example_class()])
    [allocation] = allocate([claim("c")], node(), inv, set())
    assert names(allocation) == ["gpu-1"]
    reason = reason_of([claim("c", request("gpu", EXAMPLE, 2))], inv)
    assert f"note: 1 device(s) of pool gpu.nvidia.com/n1 skipped: {skipped}" in reason


def test_taint_with_effect_none_does_not_block() -> None:
    devices = [{**gpu_device(0), "taints": [{"key": "maintenance", "effect": "None"}]}]
    inv = DraInventory([gpu_slice(devices=devices)], [example_class()])
    assert names(allocate([claim("c")], node(), inv, set())[0]) == ["gpu-0"]


def test_slices_with_bad_data_are_recorded_not_raised() -> None:
    slices = [
        resource_slice("per-device", GPU, "p", [gpu_device(0)], perDeviceNodeSelection=True),
        resource_slice("nowhere", GPU, "w", [gpu_device(0)]),
        resource_slice(
            "bad-selector",
            GPU,
            "s",
            [gpu_device(0)],
            node_selector={"nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Is"}]}]},
        ),
        resource_slice("bad-version", GPU, "v", [gpu_device(0, driver_version="550")], node_name="n1"),
        resource_slice("bad-counters", GPU, "c", None, node_name="n1", sharedCounters=[{"name": "x"}]),
        {"metadata": {"name": "no-spec"}},
        {
            "metadata": {"name": "bad-pool"},
            "spec": {"driver": GPU, "pool": {"name": "x", "resourceSliceCount": "1"}},
        },
        gpu_slice("n1", count=1),
    ]
    inv = DraInventory(slices, [example_class()])
    assert [d.id.device for d in inv.devices_for_node(node())] == ["gpu-0"]
    problems = "\n".join(inv.problems)
    for expected in [
        "ResourceSlice per-device: 1 device(s) skipped: perDeviceNodeSelection without a valid nodeName",
        "ResourceSlice nowhere sets none of nodeName, nodeSelector, allNodes and perDeviceNodeSelection",
        "ResourceSlice bad-selector has an invalid spec.nodeSelector",
        "ResourceSlice bad-version: 1 device(s) skipped: attributes, capacity or counters could not be read",
        "ResourceSlice bad-counters: sharedCounters[0] needs a name and counters",
        "ResourceSlice no-spec has no spec",
        "ResourceSlice bad-pool: spec.pool.generation and spec.pool.resourceSliceCount must be integers",
    ]:
        assert expected in problems


# ------------------------------------------------------------------------------------ NVIDIA-shaped


def test_nvidia_gpu_class_with_quantity_and_semver_selectors(nvidia_classes: list[dict]) -> None:
    devices = [
        gpu_device(0, memory="40Gi"),
        gpu_device(1, driver_version="535.104.5"),
        gpu_device(2),
        {
            **gpu_device(3),
            "name": "gpu-3-mig-1g10gb-19-0",
            "attributes": {**gpu_device(3)["attributes"], "type": {"string": "mig"}},
        },
    ]
    inv = DraInventory([gpu_slice(devices=devices), cd_slice()], nvidia_classes)
    big_new = [
        f"device.capacity['{GPU}'].memory.compareTo(quantity('80Gi')) >= 0",
        f"device.attributes['{GPU}'].driverVersion.compareTo(semver('550.0.0')) >= 0",
        f"device.attributes['{GPU}'].productName.lowerAscii().matches('a100')",
    ]
    [allocation] = allocate([claim("c", request("gpu", GPU, 1, *big_new))], node(), inv, set())
    assert names(allocation) == ["gpu-2"]
    [allocation] = allocate([claim("c", request("gpu", GPU, 3))], node(), inv, set())
    assert names(allocation) == ["gpu-0", "gpu-1", "gpu-2"]  # the MIG device is not of class gpu.nvidia.com
    [allocation] = allocate([claim("c", request("mig", "mig.nvidia.com"))], node(), inv, set())
    assert names(allocation) == ["gpu-3-mig-1g10gb-19-0"]


def test_nvidia_compute_domain_channel_and_daemon(nvidia_classes: list[dict]) -> None:
    inv = DraInventory([gpu_slice("n1"), cd_slice("n1"), cd_slice("n2")], nvidia_classes)
    channel_config = opaque(
        CD,
        apiVersion="resource.nvidia.com/v1beta1",
        kind="ComputeDomainChannelConfig",
        domainID="3a1f0e62-0000-4000-8000-000000000001",
    )
    workload = claim(
        "pod-0-channel-x7k2p",
        request("channel", "compute-domain-default-channel.nvidia.com"),
        config=[{"requests": ["channel"], **channel_config}],
    )
    daemon = claim(
        "daemon-claim", request("daemon", "compute-domain-daemon.nvidia.com"), namespace="nvidia-dra"
    )
    gpus = claim("pod-0-gpus", request("gpu", GPU, 2))
    channel, daemon_alloc, gpu_alloc = allocate([workload, daemon, gpus], node("n1"), inv, set())
    assert channel == {
        "devices": {
            "results": [{"request": "channel", "driver": CD, "pool": "n1", "device": "channel-0"}],
            "config": [{"source": "FromClaim", "requests": ["channel"], **channel_config}],
        },
        "nodeSelector": {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
            ]
        },
    }
    assert names(daemon_alloc) == ["daemon-0"]
    assert names(gpu_alloc) == ["gpu-0", "gpu-1"]
    # One channel per node: a second workload claim on n1 does not fit, on n2 it does.
    second = claim("pod-1-channel-q9z8w", request("channel", "compute-domain-default-channel.nvidia.com"))
    taken = set(devices_of(channel))
    reason = reason_of([second], inv, in_use=taken)
    assert reason == (
        "claim default/pod-1-channel-q9z8w request channel: needs 1 device of DeviceClass "
        "compute-domain-default-channel.nvidia.com, 0 free (1 match, 1 in use)"
    )
    assert names(allocate([second], node("n2"), inv, taken)[0]) == ["channel-0"]


def test_many_nodes_share_one_inventory(nvidia_classes: list[dict]) -> None:
    inv = DraInventory(
        [gpu_slice(f"node-{i}") for i in range(50)] + [cd_slice(f"node-{i}") for i in range(50)],
        nvidia_classes,
    )
    assert inv.device_count == 50 * 10
    for i in (0, 17, 49):
        [allocation] = allocate([claim("c", request("gpu", GPU, 8))], node(f"node-{i}"), inv, set())
        assert {r["pool"] for r in allocation["devices"]["results"]} == {f"node-{i}"}


# ------------------------------------------------------------------------------------ property


def _fits_by_brute_force(wanted: list[tuple[list[int], int]], free: set[int]) -> bool:
    """Whether requests (allowed devices, count) can get distinct free devices, trying every assignment."""
    if not wanted:
        return True
    (allowed, count), rest = wanted[0], wanted[1:]
    options = sorted(set(allowed) & free)
    return any(
        _fits_by_brute_force(rest, free - set(chosen)) for chosen in itertools.combinations(options, count)
    )


@settings(max_examples=150, deadline=None, database=None)
@given(
    wanted=st.lists(
        st.tuples(st.lists(st.integers(0, 5), min_size=1, max_size=6, unique=True), st.integers(1, 3)),
        min_size=1,
        max_size=5,
    ),
    busy=st.sets(st.integers(0, 5), max_size=3),
    split=st.integers(1, 5),
)
def test_allocates_exactly_when_an_assignment_exists(wanted, busy, split) -> None:
    inv = DraInventory([gpu_slice(count=6)], [example_class()])
    requests = [
        request(
            f"r{i}",
            EXAMPLE,
            count,
            f"device.attributes['{GPU}'].uuid in {[f'GPU-0000000{d}' for d in allowed]}",
        )
        for i, (allowed, count) in enumerate(wanted)
    ]
    # The requests spread over two claims, allocated together.
    claims = [claim("first", *requests[:split])] + (
        [claim("second", *requests[split:])] if requests[split:] else []
    )
    possible = _fits_by_brute_force(wanted, set(range(6)) - busy)
    try:
        allocations = allocate(claims, node(), inv, {gpu_id(d) for d in busy})
    except Unallocatable:
        assert not possible
        return
    assert possible
    picked = [
        (r["request"], int(r["device"].removeprefix("gpu-")))
        for a in allocations
        for r in a["devices"]["results"]
    ]
    assert len({device for _, device in picked}) == len(picked)  # never the same device twice
    assert not {device for _, device in picked} & busy
    for name, device in picked:
        allowed, _ = wanted[int(name[1:])]
        assert device in allowed
    assert [name for name, _ in picked] == [
        f"r{i}" for i, (_, count) in enumerate(wanted) for _ in range(count)
    ]
