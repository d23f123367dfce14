"""The allocator's constraints, shared counters, choice of devices, search bound, CEL caching and
reasons, table by table."""

from __future__ import annotations

import pytest

from kai_core.dra import inventory as inventory_module
from kai_core.dra.allocator import (
    DeviceId,
    DraInventory,
    Unallocatable,
    allocate,
    candidate_devices,
)
from kai_core.dra.testing import (
    GPU,
    claim,
    device_class,
    gpu_device,
    gpu_slice,
    mig_counter_slice,
    mig_devices,
    node,
    request,
    resource_slice,
    result_names,
)
from kai_core.framework.hookspecs import hookimpl
from kai_core.framework.status import Status
from kai_core.plugins import build_plugin_manager

EX = "gpu.example.com"
GPU_CLASS = device_class(EX, f"device.driver == '{GPU}' && device.attributes['{GPU}'].type == 'gpu'")
MIG_CLASS = device_class("mig.example.com", f"device.attributes['{GPU}'].type == 'mig'")
ANY_CLASS = device_class("any.example.com", f"device.driver == '{GPU}'")
ROOT = "resource.kubernetes.io/pcieRoot"


def refuse(claims: list[dict], inventory: DraInventory, in_use: set | None = None, **kwargs) -> str:
    with pytest.raises(Unallocatable) as info:
        allocate(claims, node(), inventory, in_use or set(), **kwargs)
    return info.value.reason


def gid(index: int | str, pool: str = "n1") -> DeviceId:
    return DeviceId(GPU, pool, index if isinstance(index, str) else f"gpu-{index}")


@pytest.fixture
def eight() -> DraInventory:
    """gpu-0..3 on PCIe root pci0000:0, gpu-4..7 on pci0000:1."""
    return DraInventory([gpu_slice("n1")], [GPU_CLASS])


# ------------------------------------------------------------------------------------ constraints


def pair(*constraints: dict, count_a: int = 1, count_b: int = 1) -> dict:
    return claim("c", request("a", EX, count_a), request("b", EX, count_b), constraints=list(constraints))


@pytest.mark.parametrize(
    ("the_claim", "in_use", "expected"),
    [
        pytest.param(
            pair({"matchAttribute": ROOT}), set(), [("a", "gpu-0"), ("b", "gpu-1")], id="match-pair"
        ),
        pytest.param(
            pair({"matchAttribute": ROOT}),
            {gid(0), gid(1), gid(2)},
            [("a", "gpu-4"), ("b", "gpu-5")],
            id="match-pair-moves-to-a-root-with-two-free",
        ),
        pytest.param(
            pair({"matchAttribute": ROOT}, count_a=2, count_b=2),
            {gid(0)},
            [("a", "gpu-4"), ("a", "gpu-5"), ("b", "gpu-6"), ("b", "gpu-7")],
            id="match-four",
        ),
        pytest.param(
            pair({"distinctAttribute": ROOT}), set(), [("a", "gpu-0"), ("b", "gpu-4")], id="distinct-pair"
        ),
        pytest.param(
            pair({"matchAttribute": ROOT, "requests": ["b"]}, count_b=2),
            {gid(1), gid(2), gid(3)},
            [("a", "gpu-0"), ("b", "gpu-4"), ("b", "gpu-5")],
            id="only-named-requests",
        ),
        pytest.param(
            pair({"matchAttribute": f"{GPU}/productName"}),
            set(),
            [("a", "gpu-0"), ("b", "gpu-1")],
            id="bare-attribute-under-the-driver-domain",
        ),
        pytest.param(
            pair({"matchAttribute": ROOT}, {"distinctAttribute": "resource.kubernetes.io/pciBusID"}),
            set(),
            [("a", "gpu-0"), ("b", "gpu-1")],
            id="match-and-distinct",
        ),
    ],
)
def test_constraints_pick_devices_that_satisfy_them(
    eight: DraInventory, the_claim: dict, in_use: set, expected: list
) -> None:
    [allocation] = allocate([the_claim], node(), eight, in_use)
    assert result_names(allocation) == expected


@pytest.mark.parametrize(
    ("the_claim", "in_use", "message"),
    [
        pytest.param(
            pair({"matchAttribute": ROOT}, count_a=3, count_b=2),
            set(),
            "constraint #0 (matchAttribute resource.kubernetes.io/pcieRoot over all requests) cannot be "
            "satisfied "
            "by the free devices",
            id="match-needs-five-on-one-root",
        ),
        pytest.param(
            pair({"matchAttribute": ROOT}),
            {gid(i) for i in (0, 1, 2, 4, 5, 6)},
            "constraint #0 (matchAttribute resource.kubernetes.io/pcieRoot over all requests) cannot be "
            "satisfied "
            "by the free devices",
            id="match-one-free-per-root",
        ),
        pytest.param(
            pair({"distinctAttribute": ROOT}, count_a=2, count_b=1),
            set(),
            "constraint #0 (distinctAttribute resource.kubernetes.io/pcieRoot over all requests) cannot be "
            "satisfied "
            "by the free devices",
            id="distinct-three-of-two-roots",
        ),
        pytest.param(
            pair({"matchAttribute": "example.com/missing"}),
            set(),
            "constraint #0 (matchAttribute example.com/missing over all requests) cannot be satisfied by the "
            "free "
            "devices",
            id="attribute-nobody-has",
        ),
    ],
)
def test_unsatisfiable_constraint_is_named(
    eight: DraInventory, the_claim: dict, in_use: set, message: str
) -> None:
    assert refuse([the_claim], eight, in_use) == f"claim default/c: {message}"


def test_match_attribute_compares_kind_and_value() -> None:
    made = [gpu_device(0), gpu_device(1)]
    made[0]["attributes"]["slot"] = {"int": 1}
    made[1]["attributes"]["slot"] = {"string": "1"}
    inventory = DraInventory([gpu_slice(devices=made)], [GPU_CLASS])
    assert "cannot be satisfied" in refuse([pair({"matchAttribute": f"{GPU}/slot"})], inventory)


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        pytest.param(
            {"matchAttribute": "pcieRoot"},
            "matchAttribute must be a fully qualified attribute name (domain/id), got 'pcieRoot'",
            id="unqualified",
        ),
        pytest.param(
            {"matchAttribute": ROOT, "distinctAttribute": ROOT},
            "only matchAttribute or distinctAttribute is supported (it must set exactly one of them)",
            id="both",
        ),
        pytest.param(
            {"requests": ["a"]},
            "only matchAttribute or distinctAttribute is supported (it must set exactly one of them)",
            id="neither",
        ),
        pytest.param(
            {"matchAttribute": ROOT, "sameNode": True},
            "only matchAttribute or distinctAttribute is supported (unknown field(s) ['sameNode'])",
            id="unknown-kind",
        ),
    ],
)
def test_malformed_constraints_are_refused(eight: DraInventory, constraint: dict, message: str) -> None:
    assert refuse([pair(constraint)], eight) == f"claim default/c: constraint #0: {message}"


def test_constraints_are_per_claim(eight: DraInventory) -> None:
    first = claim("first", request("a", EX, 1), constraints=[{"matchAttribute": ROOT}])
    second = claim("second", request("a", EX, 4), constraints=[{"matchAttribute": ROOT}])
    one, four = allocate([first, second], node(), eight, set())
    assert [d for _, d in result_names(one)] == ["gpu-0"]
    assert [d for _, d in result_names(four)] == ["gpu-4", "gpu-5", "gpu-6", "gpu-7"]


# ------------------------------------------------------------------------------------ shared counters


@pytest.fixture
def migs() -> DraInventory:
    """Two A100s in DynamicMIG layout: each the full GPU or MIG slices of its own counter set."""
    made = mig_devices(
        0, [("1g.10gb", s) for s in range(7)] + [("3g.40gb", 0), ("3g.40gb", 4)]
    ) + mig_devices(1, [("1g.10gb", s) for s in range(7)] + [("3g.40gb", 0), ("3g.40gb", 4)])
    slices = [gpu_slice("n1", devices=made, slice_count=2), mig_counter_slice("n1", gpus=2)]
    return DraInventory(slices, [GPU_CLASS, MIG_CLASS, ANY_CLASS])


@pytest.mark.parametrize(
    ("in_use", "requests", "expected"),
    [
        pytest.param(set(), [request("gpu", EX, 2)], ["gpu-0", "gpu-1"], id="two-full-gpus"),
        pytest.param(
            {gid("gpu-0-mig-1g10gb-3")}, [request("gpu", EX, 1)], ["gpu-1"], id="a-mig-in-use-takes-the-gpu"
        ),
        pytest.param(
            {gid("gpu-0-mig-1g10gb-3")},
            [request("mig", "mig.example.com", 1, f"device.attributes['{GPU}'].profile == '3g.40gb'")],
            ["gpu-0-mig-3g40gb-4"],
            id="overlapping-placement-is-out",
        ),
        pytest.param(
            set(),
            [request("gpu", EX, 1), request("mig", "mig.example.com", 2)],
            ["gpu-0", "gpu-1-mig-1g10gb-0", "gpu-1-mig-1g10gb-1"],
            id="full-gpu-and-migs-of-the-other",
        ),
    ],
)
def test_shared_counters(migs: DraInventory, in_use: set, requests: list, expected: list[str]) -> None:
    [allocation] = allocate([claim("c", *requests)], node(), migs, in_use)
    assert [d for _, d in result_names(allocation)] == expected


def test_counters_left_are_the_limit(migs: DraInventory) -> None:
    # Seven 1g slices per GPU, 14 in all: a 15th does not fit, and a full GPU next to one MIG does not either.
    [allocation] = allocate(
        [
            claim(
                "c", request("mig", "mig.example.com", 14, f"device.attributes['{GPU}'].profile == '1g.10gb'")
            )
        ],
        node(),
        migs,
        set(),
    )
    assert len(allocation["devices"]["results"]) == 14
    one_g = f"device.attributes['{GPU}'].profile == '1g.10gb'"
    assert "needs 15 devices" in refuse([claim("c", request("mig", "mig.example.com", 15, one_g))], migs)
    assert "not enough shared counters left" in refuse(
        [claim("c", request("mig", "mig.example.com"))], migs, {gid(0), gid(1)}
    )
    reason = refuse([claim("c", request("gpu", EX, 2), request("mig", "mig.example.com", 1))], migs)
    assert reason == (
        "claim default/c: not enough shared counters left on the partitionable devices (their counter sets "
        "are "
        "used up by allocated devices or by the other picks)"
    )


def test_counters_consumed_on_other_nodes_count() -> None:
    # One pool whose counter set is shared by devices published for two nodes (a fabric-attached GPU).
    counters = resource_slice(
        "fabric-counters",
        GPU,
        "fabric",
        None,
        all_nodes=True,
        slice_count=3,
        sharedCounters=[{"name": "links", "counters": {"lanes": {"value": "2"}}}],
    )
    consume = [{"counterSet": "links", "counters": {"lanes": {"value": "1"}}}]
    on_n1 = resource_slice(
        "fabric-n1", GPU, "fabric", [gpu_device(0, consumesCounters=consume)], node_name="n1", slice_count=3
    )
    on_n2 = resource_slice(
        "fabric-n2",
        GPU,
        "fabric",
        [gpu_device(1, consumesCounters=consume), gpu_device(2, consumesCounters=consume)],
        node_name="n2",
        slice_count=3,
    )
    inventory = DraInventory([counters, on_n1, on_n2], [GPU_CLASS])
    assert allocate([claim("c", request("gpu", EX))], node(), inventory, {gid(1, "fabric")})
    reason = refuse([claim("c", request("gpu", EX))], inventory, {gid(1, "fabric"), gid(2, "fabric")})
    assert "not enough shared counters left" in reason


@pytest.mark.parametrize(
    ("counter_sets", "consumes", "problem"),
    [
        pytest.param(
            [{"name": "a", "counters": {"x": {"value": "1"}}}],
            [{"counterSet": "b", "counters": {}}],
            "device gpu-0 consumes counter set b, which the pool does not define",
            id="unknown-set",
        ),
        pytest.param(
            [{"name": "a", "counters": {"x": {"value": "1"}}}],
            [{"counterSet": "a", "counters": {"y": {"value": "1"}}}],
            "device gpu-0 consumes counter y of counter set a, which does not define it",
            id="unknown-counter",
        ),
        pytest.param(
            [{"name": "a", "counters": {}}, {"name": "a", "counters": {}}],
            [],
            "counter set a is defined twice",
            id="duplicate-set",
        ),
    ],
)
def test_invalid_counters_make_the_pool_invalid(counter_sets: list, consumes: list, problem: str) -> None:
    slices = [
        gpu_slice(devices=[gpu_device(0, consumesCounters=consumes)], slice_count=2),
        resource_slice("cs", GPU, "n1", None, node_name="n1", slice_count=2, sharedCounters=counter_sets),
    ]
    inventory = DraInventory(slices, [GPU_CLASS])
    reason = refuse([claim("c", request("gpu", EX))], inventory)
    assert reason == (
        "claim default/c request gpu: no ResourceSlice offers devices to the node; note: pool "
        "gpu.nvidia.com/n1 "
        f"is invalid ({problem}), so its devices are not used"
    )


def test_admin_access_picks_consume_no_counters(migs: DraInventory) -> None:
    labelled = {"default": {"metadata": {"labels": {"resource.kubernetes.io/admin-access": "true"}}}}
    in_use = {gid(0), gid(1)}  # both full GPUs in use: no counters left at all
    monitor = claim("c", request("gpu", EX, 2, adminAccess=True))
    [allocation] = allocate([monitor], node(), migs, in_use, namespaces=labelled)
    assert [d for _, d in result_names(allocation)] == ["gpu-0", "gpu-1"]


# ------------------------------------------------------------------------------------ choosing


def test_default_pack_prefers_partly_used_counter_sets(migs: DraInventory) -> None:
    one_g = f"device.attributes['{GPU}'].profile == '1g.10gb'"
    # GPU 1 already has a MIG in use: the next 1g slice goes there, GPU 0 stays whole.
    [allocation] = allocate(
        [claim("c", request("mig", "mig.example.com", 1, one_g))], node(), migs, {gid("gpu-1-mig-1g10gb-0")}
    )
    assert result_names(allocation) == [("mig", "gpu-1-mig-1g10gb-1")]
    # A class matching full GPUs and MIGs alike takes a small MIG rather than a whole GPU.
    [allocation] = allocate([claim("c", request("any", "any.example.com", 1))], node(), migs, set())
    assert result_names(allocation) == [("any", "gpu-0-mig-1g10gb-0")]


def test_default_pack_prefers_partly_used_pools() -> None:
    slices = [
        resource_slice("a", GPU, "fabric-a", [gpu_device(0), gpu_device(1)], all_nodes=True),
        resource_slice("b", GPU, "fabric-b", [gpu_device(2), gpu_device(3)], all_nodes=True),
    ]
    inventory = DraInventory(slices, [GPU_CLASS])
    [allocation] = allocate([claim("c", request("gpu", EX))], node(), inventory, {gid(3, "fabric-b")})
    assert allocation["devices"]["results"][0]["pool"] == "fabric-b"


def test_caller_scores_come_first_and_never_make_a_device_fit(eight: DraInventory) -> None:
    scores = {gid(6): 10.0, gid(2): 5.0, gid(7): 99.0}
    [allocation] = allocate(
        [claim("c", request("gpu", EX, 2))], node(), eight, {gid(7)}, device_scores=scores
    )
    assert [d for _, d in result_names(allocation)] == ["gpu-6", "gpu-2"]


class PreferHighIndex:
    calls: list[int] = []

    @hookimpl
    def kai_rank_devices(self, pod, claims, devices):
        self.calls.append(len(devices))
        return {d.id: int(d.id.device.rsplit("-", 1)[1]) for d in devices}


def test_rank_devices_hook_is_called_once_per_pod_with_the_candidates() -> None:
    inventory = DraInventory([gpu_slice("n1"), gpu_slice("n2", count=2)], [GPU_CLASS])
    pm = build_plugin_manager(load_external=False)
    one = [claim("c", request("gpu", EX))]
    assert pm.rank_devices({}, one, lambda: candidate_devices(one, [node("n1")], inventory), None) is None
    plugin = PreferHighIndex()
    pm.register(plugin, name="prefer-high")
    claims = [claim("c", request("gpu", EX))]
    scores = pm.rank_devices({"metadata": {"name": "p"}}, claims,
                             lambda: candidate_devices(claims, [node("n1"), node("n2")], inventory), None)
    assert plugin.calls == [10]  # one call, all candidates of both nodes
    assert [d.id for d in candidate_devices(claims, [node("n2")], inventory)] == [gid(0, "n2"), gid(1, "n2")]
    [allocation] = allocate(claims, node("n1"), inventory, set(), device_scores=scores)
    assert result_names(allocation) == [("gpu", "gpu-7")]


def test_a_failing_rank_plugin_gives_a_reason() -> None:
    class Broken:
        @hookimpl
        def kai_rank_devices(self, devices):
            raise RuntimeError("boom")

    pm = build_plugin_manager(load_external=False)
    pm.register(Broken(), name="broken")
    inventory = DraInventory([gpu_slice("n1")], [GPU_CLASS])
    claims = [claim("c", request("gpu", EX))]
    status = pm.rank_devices({}, claims, lambda: candidate_devices(claims, [node("n1")], inventory), None)
    assert isinstance(status, Status) and not status.ok
    assert status.message == "plugin 'broken' failed in kai_rank_devices: RuntimeError: boom"


# ------------------------------------------------------------------------------------ search bound


def test_pathological_claim_is_refused_within_the_bound() -> None:
    # 24 GPUs with distinct uuids; 12 requests of 2, each allowed a different overlapping window, and
    # a matchAttribute on an attribute that no two windows share: exponential for first-fit search.
    made = [gpu_device(i) for i in range(30)]
    for i, device in enumerate(made):
        device["attributes"]["window"] = {"int": i % 5}
    inventory = DraInventory([gpu_slice(devices=made)], [GPU_CLASS])
    requests = [
        request(
            f"r{k}",
            EX,
            2,
            f"device.attributes['{GPU}'].uuid in {[f'GPU-0000000{i}' for i in range(k, k + 13)]}",
        )
        for k in range(12)
    ]
    the_claim = claim("c", *requests, constraints=[{"distinctAttribute": f"{GPU}/window"}])
    reason = refuse([the_claim], inventory, max_device_checks=5_000)
    assert reason.startswith("claim default/c: ")
    assert (
        "cannot be satisfied" in reason or "was too large and was stopped after 5000 device checks" in reason
    )


def test_a_subset_sum_over_counters_hits_the_bound_not_a_hang() -> None:
    # 30 partitions of one counter set, each a different size: no 10 of them fit in 100 units, and
    # nothing short of trying the subsets proves it. The bound stops the search with a reason.
    counters = resource_slice(
        "cs",
        GPU,
        "n1",
        None,
        node_name="n1",
        slice_count=2,
        sharedCounters=[{"name": "set", "counters": {"units": {"value": "100"}}}],
    )
    made = [
        gpu_device(i, consumesCounters=[{"counterSet": "set", "counters": {"units": {"value": str(10 + i)}}}])
        for i in range(30)
    ]
    inventory = DraInventory([gpu_slice(devices=made, slice_count=2), counters], [GPU_CLASS])
    reason = refuse([claim("c", request("gpu", EX, 10))], inventory)
    assert reason == (
        "claim default/c: the search for devices was too large and was stopped after 20000 device checks; "
        "fewer or simpler requests would help"
    )
    [allocation] = allocate([claim("c", request("gpu", EX, 6))], node(), inventory, set())
    assert len(allocation["devices"]["results"]) == 6


def test_many_identical_devices_do_not_explode_the_search() -> None:
    # 32 devices in 4 groups of 8 by PCIe root: 3 requests of 4 that must share a root while a fourth
    # request takes 6 of any root; plain backtracking would enumerate millions of combinations.
    made = [gpu_device(i) for i in range(32)]
    for i, device in enumerate(made):
        device["attributes"][ROOT] = {"string": f"root-{i // 8}"}
    inventory = DraInventory([gpu_slice(devices=made)], [GPU_CLASS])
    the_claim = claim(
        "c",
        request("a", EX, 4),
        request("b", EX, 4),
        request("c", EX, 4),
        request("d", EX, 6),
        constraints=[{"matchAttribute": ROOT, "requests": ["a", "b", "c"]}],
    )
    reason = refuse([the_claim], inventory, max_device_checks=2_000)
    assert "constraint #0 (matchAttribute resource.kubernetes.io/pcieRoot over requests a, b, c)" in reason


# ------------------------------------------------------------------------------------ CEL


@pytest.mark.parametrize(
    ("where", "expression", "message"),
    [
        pytest.param(
            "class",
            f"device.attributes['{GPU}'].numa == 0",
            "claim default/c request gpu: CEL selector #0 of DeviceClass broken.example.com failed on device "
            f"gpu.nvidia.com/n1/gpu-0: CEL expression \"device.attributes['{GPU}'].numa == 0\": no such key "
            "'numa'",
            id="runtime-error-in-class",
        ),
        pytest.param(
            "request",
            f"device.attributes['{GPU}'].numa == 0",
            "claim default/c request gpu: CEL selector #0 of request (DeviceClass broken.example.com) failed "
            "on "
            f"device gpu.nvidia.com/n1/gpu-0: CEL expression \"device.attributes['{GPU}'].numa == 0\": no "
            "such key "
            "'numa'",
            id="runtime-error-in-request",
        ),
        pytest.param(
            "class",
            "device.driver ==",
            "claim default/c request gpu: CEL selector #0 of DeviceClass broken.example.com does not "
            "compile: "
            "CEL expression 'device.driver ==': ",
            id="compile-error",
        ),
        pytest.param(
            "request",
            "'aaaa'" + ".replace('a', 'aaaa')" * 12 + " == ''",
            "claim default/c request gpu: CEL selector #0 of request (DeviceClass broken.example.com) does "
            "not "
            "compile: CEL expression",
            id="cost-bound",
        ),
    ],
)
def test_cel_problems_name_claim_request_class_and_expression(
    where: str, expression: str, message: str
) -> None:
    if where == "class":
        classes = [device_class("broken.example.com", expression)]
        the_request = request("gpu", "broken.example.com")
    else:
        classes = [device_class("broken.example.com", "true")]
        the_request = request("gpu", "broken.example.com", 1, expression)
    reason = refuse([claim("c", the_request)], DraInventory([gpu_slice()], classes))
    assert reason.startswith(message)
    if "cost" in where or "replace" in expression:
        assert "estimated cost" in reason and "exceeds the limit of 1000000" in reason


def test_cel_results_are_cached_per_expression_and_device_until_the_slice_changes() -> None:
    published = gpu_slice(count=2)
    published["metadata"].update(uid="u1", resourceVersion="10")
    first = DraInventory([published], [GPU_CLASS])
    allocate([claim("c", request("gpu", EX))], node(), first, set())
    device = first.devices_for_node(node())[0]
    expression = GPU_CLASS["spec"]["selectors"][0]["cel"]["expression"]
    assert device.cel == {expression: True}
    # Next cycle, same slice object: same parsed device, the result is reused.
    second = DraInventory([published], [GPU_CLASS])
    assert second.devices_for_node(node())[0] is device
    # The driver republished the slice: new resourceVersion, new device, nothing cached.
    changed = {**published, "metadata": {**published["metadata"], "resourceVersion": "11"}}
    third = DraInventory([changed], [GPU_CLASS])
    fresh = third.devices_for_node(node())[0]
    assert fresh is not device and fresh.cel == {}
    assert list(inventory_module._SLICE_CACHE) == [("n1-gpu.nvidia.com", "u1", "11")]


def test_a_prepared_claim_is_reused_for_every_node() -> None:
    inventory = DraInventory([gpu_slice("n1"), gpu_slice("n2")], [GPU_CLASS])
    the_claim = claim("c", request("gpu", EX))
    allocate([the_claim], node("n1"), inventory, set())
    cached = inventory.claim_cache[id(the_claim)]
    allocate([the_claim], node("n2"), inventory, set())
    assert inventory.claim_cache[id(the_claim)] is cached


def test_admin_picks_under_a_constraint_may_share_devices_of_other_claims() -> None:
    # Found by the oracle: c1's admin request may reuse a device c0 took (or one in use) and must
    # still find two on the PCIe root that c1's first request fixed.
    made = [gpu_device(i) for i in range(6)]
    for i, root in enumerate(["r0", "r1", "r0", "r0", "r0", "r0"]):
        made[i]["attributes"][ROOT] = {"string": root}
    made[4]["taints"] = [{"key": "k1", "value": "x", "effect": "NoSchedule"}]
    inventory = DraInventory([gpu_slice(devices=made)], [GPU_CLASS])
    labelled = {"default": {"metadata": {"labels": {"resource.kubernetes.io/admin-access": "true"}}}}
    c0 = claim("c0", request("a", EX), request("b", EX))
    c1 = claim(
        "c1",
        request("a", EX),
        request("watch", EX, 2, adminAccess=True),
        constraints=[{"matchAttribute": ROOT}],
    )
    first, second = allocate([c0, c1], node(), inventory, {gid(0), gid(1), gid(4)}, namespaces=labelled)
    assert [d for _, d in result_names(first)] == ["gpu-2", "gpu-3"]
    picked = [d for _, d in result_names(second)]
    assert picked[0] == "gpu-5" and len(set(picked)) == 3
    assert {made[int(d.rsplit("-", 1)[1])]["attributes"][ROOT]["string"] for d in picked} == {"r0"}
