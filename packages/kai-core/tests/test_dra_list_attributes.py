"""List-valued device attributes (KEP-5491, gate ``DRAListTypeAttributes``, alpha and off by default
in Kubernetes 1.36 and 1.37): how ``matchAttribute`` and ``distinctAttribute`` compare them with the
gate on and off, ``includes()`` in CEL selectors, the binder's check, the embedded API server's
acceptance of such slices, and a scheduling cycle on the embedded cluster.

The first table is upstream's own: the ``list-attributes-*`` cases of
``k8s.io/dynamic-resource-allocation/structured/internal/allocatortesting/allocator_testing.go``,
same devices, same requests, same expected devices (``None``: the claim does not fit).
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kai_core.api.errors import Invalid
from kai_core.api.features import KNOWN_GATES, DraFeatures, FeatureGates
from kai_core.api.resources import RES_SLICES
from kai_core.apiserver.store import EmbeddedStore
from kai_core.dra.allocator import DeviceId, Unallocatable, allocate
from kai_core.dra.cel import CelEvalError, compile_selector, device_env
from kai_core.dra.inventory import DraInventory
from kai_core.dra.testing import claim, device_class, node, request, resource_slice, result_names
from kai_core.dra.verify import AllocationRefused, verify_allocations
from kai_core.scheduler.cycle import SchedulerConfig

DRIVER = "driver-a"
CLASS = device_class("class-a", f'device.driver == "{DRIVER}"')
STRING, INT, BOOL, VERSION = (f"{DRIVER}/{name}" for name in ("stringAttribute", "numa", "boolAttribute",
                                                                "driverVersion"))
LISTS = DraFeatures(list_type_attributes=True)
NO_LISTS = DraFeatures()  # the 1.37 defaults: consumable capacity (distinctAttribute) on, lists off


def _slice(*attributes: dict) -> dict:
    devices = [{"name": f"device-{i}", "attributes": attrs} for i, attrs in enumerate(attributes, 1)]
    return resource_slice("slice-1", DRIVER, "pool-1", devices, node_name="node-1")


def _inventory(*attributes: dict, features: DraFeatures = LISTS) -> DraInventory:
    return DraInventory([_slice(*attributes)], [CLASS], features=features)


def _claim(kind: str, attribute: str, *counts: int) -> dict:
    requests = [request(f"req-{i}", "class-a", count) for i, count in enumerate(counts)]
    return claim("claim-0", *requests, constraints=[{kind: attribute}])


def _allocated(claim_obj: dict, inv: DraInventory) -> list[str] | None:
    try:
        [allocation] = allocate([claim_obj], node("node-1"), inv, set())
    except Unallocatable:
        return None
    return sorted(device for _, device in result_names(allocation))


def s(value: str) -> dict:
    return {"string": value}


def ss(*values: str) -> dict:
    return {"strings": list(values)}


ROOT = "resource.kubernetes.io/pcieRoot"
# The CPU-next-to-GPUs shape KEP-5491 was made for: a CPU device lists the PCIe roots it is close to,
# each GPU names its one root.
NODE_SLICE = resource_slice("n1-devices", DRIVER, "n1", [
    {"name": "cpu-0", "attributes": {"kind": s("cpu"), ROOT: ss("pci0", "pci1")}},
    {"name": "gpu-0", "attributes": {"kind": s("gpu"), ROOT: s("pci2")}},
    {"name": "gpu-1", "attributes": {"kind": s("gpu"), ROOT: s("pci1")}},
], node_name="n1")
CPU_CLASS = device_class("cpu", f"device.attributes['{DRIVER}'].kind == 'cpu'")
GPU_CLASS = device_class("gpu", f"device.attributes['{DRIVER}'].kind == 'gpu'")
PAIR = claim("pair", request("cpu", "cpu"), request("gpu", "gpu"), constraints=[{"matchAttribute": ROOT}])


# name -> (features, constraint kind, attribute, request counts, each device's attribute, expected)
UPSTREAM = {
    "match-constaint-scalar-string-values": (
        LISTS, "matchAttribute", STRING, (2,), [s("value1"), s("value1")], ["device-1", "device-2"]),
    "match-constaint-list-of-string-values-with-common-elements": (
        LISTS, "matchAttribute", STRING, (2,),
        [ss("value1", "value2", "value3"), ss("value2", "value3", "value4")], ["device-1", "device-2"]),
    "match-constaint-list-of-string-values-with-partially-common-elements": (
        LISTS, "matchAttribute", STRING, (3,),
        [ss("value1", "value2"), ss("value2", "value3"), ss("value3", "value1")], None),
    # upstream names both requests req-0, which kai refuses on its own; distinct names keep the point
    "match-constaint-list-of-string-values-without-common-elements": (
        LISTS, "matchAttribute", STRING, (1, 1), [ss("value1", "value2"), ss("value3", "value4")], None),
    "match-constaint-mixed-scalar-and-list-of-string-values-with-common-elements": (
        LISTS, "matchAttribute", STRING, (2,), [s("value1"), ss("value1", "value2")], ["device-1", "device-2"]),
    "match-constaint-mixed-scalar-and-list-of-string-values-with-partially-common-elements": (
        LISTS, "matchAttribute", STRING, (3,), [s("value1"), ss("value1", "value2"), ss("value2", "value3")],
        None),
    "match-constaint-mixed-scalar-and-list-of-string-values-without-common-elements": (
        LISTS, "matchAttribute", STRING, (2,), [s("value1"), ss("value2", "value3")], None),
    "match-constaint-list-of-int-values-with-common-elements": (
        LISTS, "matchAttribute", INT, (2,), [{"ints": [0, 1, 2]}, {"ints": [1, 2, 3]}], ["device-1", "device-2"]),
    "match-constaint-list-of-bool-values-with-common-elements": (
        LISTS, "matchAttribute", BOOL, (2,), [{"bools": [True, False]}, {"bools": [True]}],
        ["device-1", "device-2"]),
    "match-constaint-list-of-version-values-with-common-elements": (
        LISTS, "matchAttribute", VERSION, (2,),
        [{"versions": ["1.0.0", "1.1.0", "2.0.0"]}, {"versions": ["1.1.0", "2.0.0", "2.1.0"]}],
        ["device-1", "device-2"]),
    # upstream fails with "unsupported attribute value" (a CEL error); kai leaves such devices out
    "match-constaint-with-empty-or-unknown-type": (
        LISTS, "matchAttribute", STRING, (2,), [{}, {"strings": []}], None),
    "disabled-match-constraint-with-lists": (
        NO_LISTS, "matchAttribute", STRING, (2,),
        [ss("value1", "value2", "value3"), ss("value2", "value3", "value4")], None),
    "distinct-constraint-scalar-string-values-all-distinct": (
        LISTS, "distinctAttribute", STRING, (2,), [s("value1"), s("value2")], ["device-1", "device-2"]),
    "distinct-constraint-scalar-string-values-not-distinct": (
        LISTS, "distinctAttribute", STRING, (2,), [s("value1"), s("value1")], None),
    "distinct-constraint-list-of-string-values-all-distinct": (
        LISTS, "distinctAttribute", STRING, (2,), [ss("value1", "value2"), ss("value2", "value3"),
                                                  ss("value3", "value4")], ["device-1", "device-3"]),
    "distinct-constraint-list-of-string-values-with-common-elements": (
        LISTS, "distinctAttribute", STRING, (2,),
        [ss("value1", "value2", "value3"), ss("value2", "value4", "value5")], None),
    "distinct-constraint-mixed-scalar-and-list-all-distinct": (
        LISTS, "distinctAttribute", STRING, (2,), [s("value1"), ss("value1", "value2"), ss("value2", "value3")],
        ["device-1", "device-3"]),
    "distinct-constraint-mixed-scalar-and-list-with-common-elements": (
        LISTS, "distinctAttribute", STRING, (2,), [s("value1"), ss("value1", "value2")], None),
    "distinct-constraint-list-of-int-values-all-distinct": (
        LISTS, "distinctAttribute", INT, (2,), [{"ints": [0, 1]}, {"ints": [1, 2]}, {"ints": [2, 3]}],
        ["device-1", "device-3"]),
    "distinct-constraint-list-of-bool-values-all-distinct": (
        LISTS, "distinctAttribute", BOOL, (2,), [{"bools": [True]}, {"bools": [True, False]}, {"bools": [False]}],
        ["device-1", "device-3"]),
    "distinct-constraint-list-of-version-values-all-distinct": (
        LISTS, "distinctAttribute", VERSION, (2,),
        [{"versions": ["1.0.0", "1.1.0"]}, {"versions": ["1.1.0", "2.0.0"]}, {"versions": ["2.0.0", "2.1.0"]}],
        ["device-1", "device-3"]),
    # upstream fails with "unsupported attribute value"; kai leaves such devices out
    "distinct-constaint-with-empty-or-unknown-type": (
        LISTS, "distinctAttribute", VERSION, (2,), [{"versions": []}, {"versions": None}], None),
    "disabled-distinct-constraint-with-lists": (
        NO_LISTS, "distinctAttribute", STRING, (2,),
        [ss("value1", "value2", "value3"), ss("value2", "value3", "value4")], None),
}


@pytest.mark.parametrize("case", sorted(UPSTREAM))
def test_upstream_list_attribute_cases(case: str) -> None:
    features, kind, attribute, counts, attributes, expected = UPSTREAM[case]
    named = [{attribute.split("/")[1]: a} if a else {} for a in attributes]
    inv = _inventory(*named, features=features)
    assert _allocated(_claim(kind, attribute, *counts), inv) == expected


# -- beyond upstream's table -------------------------------------------------------------------------


def test_match_takes_back_what_an_undone_pick_narrowed() -> None:
    """Picking device-1 then device-2 narrows the shared elements to {x}; no third device has x, so the
    search undoes device-2 and must compare device-3 with {x, y} again (not the stale {x})."""
    inv = _inventory({"numa": {"strings": ["x", "y"]}}, {"numa": ss("x")}, {"numa": ss("y")}, {"numa": s("y")})
    assert _allocated(_claim("matchAttribute", f"{DRIVER}/numa", 3), inv) == ["device-1", "device-3", "device-4"]


def test_a_scalar_only_equals_elements_of_its_own_kind() -> None:
    inv = _inventory({"x": {"int": 1}}, {"x": {"bools": [True]}}, {"x": {"strings": ["1"]}}, {"x": {"ints": [2, 1]}})
    assert _allocated(_claim("matchAttribute", f"{DRIVER}/x", 2), inv) == ["device-1", "device-4"]


def test_match_across_requests_of_a_claim() -> None:
    on, off = (DraInventory([NODE_SLICE], [CPU_CLASS, GPU_CLASS], features=f) for f in (LISTS, NO_LISTS))
    [allocation] = allocate([PAIR], node("n1"), on, set())
    assert result_names(allocation) == [("cpu", "cpu-0"), ("gpu", "gpu-1")]
    with pytest.raises(Unallocatable, match="constraint #0 \\(matchAttribute resource.kubernetes.io/pcieRoot"):
        allocate([PAIR], node("n1"), off, set())


def test_with_the_gate_off_a_list_value_only_stands_alone() -> None:
    """Upstream's stable and incubating allocators take any value for the first device of a set and
    then compare scalars only."""
    alone = _inventory({"numa": {"ints": [0, 1]}}, features=NO_LISTS)
    assert _allocated(_claim("matchAttribute", INT, 1), alone) == ["device-1"]
    after_scalar = _inventory({"numa": {"int": 0}}, {"numa": {"ints": [0, 1]}}, features=NO_LISTS)
    assert _allocated(_claim("matchAttribute", INT, 2), after_scalar) is None
    assert _allocated(_claim("matchAttribute", INT, 2), _inventory({"numa": {"int": 0}}, {"numa": {"ints": [0, 1]}})) \
        == ["device-1", "device-2"]


def test_with_the_gate_off_distinct_takes_a_list_value_only_first() -> None:
    shared_element = [{"numa": {"ints": [0, 1]}}, {"numa": {"int": 0}}]
    # off: the list device comes first, the scalar is compared with no scalar: both taken
    assert _allocated(_claim("distinctAttribute", INT, 2), _inventory(*shared_element, features=NO_LISTS)) == [
        "device-1", "device-2"]
    # on: they share 0
    assert _allocated(_claim("distinctAttribute", INT, 2), _inventory(*shared_element)) is None
    # off: a second list device is never taken, even a disjoint one
    disjoint = [{"numa": {"ints": [0, 1]}}, {"numa": {"ints": [2, 3]}}]
    assert _allocated(_claim("distinctAttribute", INT, 2), _inventory(*disjoint, features=NO_LISTS)) is None
    assert _allocated(_claim("distinctAttribute", INT, 2), _inventory(*disjoint)) == ["device-1", "device-2"]


def test_claims_of_one_shape_replay_the_list_outcome_per_gate() -> None:
    """The outcome memo keeps working with list values: a second claim of the same shape gets other
    devices that share an element."""
    inv = _inventory(*({"stringAttribute": v} for v in (ss("a", "b"), ss("b", "c"), ss("c", "d"), ss("d", "a"))))
    def named(name: str) -> dict:
        return claim(name, request("req-0", "class-a", 2), constraints=[{"matchAttribute": STRING}])

    first = allocate([named("one")], node("node-1"), inv, set())[0]
    used = {(DRIVER, "pool-1", d) for _, d in result_names(first)}
    second = allocate([named("two")], node("node-1"), inv, {DeviceId(*u) for u in used})[0]
    picked = [d for _, d in result_names(first)], [d for _, d in result_names(second)]
    assert picked == (["device-1", "device-2"], ["device-3", "device-4"])


# -- the binder's check ----------------------------------------------------------------------------


def test_verify_accepts_what_the_allocator_made_and_follows_the_gate() -> None:
    attributes = [ss("value1", "value2"), ss("value2", "value3")]
    claims = [_claim("matchAttribute", STRING, 2)]
    named = [{"stringAttribute": a} for a in attributes]
    [allocation] = allocate(claims, node("node-1"), _inventory(*named), set())
    verify_allocations(claims, [allocation], node("node-1"), _inventory(*named))
    with pytest.raises(AllocationRefused, match="device driver-a/pool-1/device-1 has strings \\['value1', "
                                                "'value2'\\], device driver-a/pool-1/device-2 has strings"):
        verify_allocations(claims, [allocation], node("node-1"), _inventory(*named, features=NO_LISTS))


def test_verify_refuses_list_devices_that_share_an_element_under_distinct() -> None:
    named = [{"stringAttribute": a} for a in (ss("a", "b"), s("a"))]
    claims = [_claim("distinctAttribute", STRING, 2)]
    # with the gate off the list device comes first and the scalar is compared with no scalar
    [allocation] = allocate(claims, node("node-1"), _inventory(*named, features=NO_LISTS), set())
    verify_allocations(claims, [allocation], node("node-1"), _inventory(*named, features=NO_LISTS))
    with pytest.raises(AllocationRefused, match="devices driver-a/pool-1/device-1 and driver-a/pool-1/device-2 "
                                                "have the same value 'a'"):
        verify_allocations(claims, [allocation], node("node-1"), _inventory(*named))
    # the same two devices the other way round: with the gate off the list may not come second
    swapped = {**allocation, "devices": {"results": allocation["devices"]["results"][::-1]}}
    with pytest.raises(AllocationRefused, match="device driver-a/pool-1/device-1 has strings \\['a', 'b'\\], which "
                                                "only the first device may have with DRAListTypeAttributes off"):
        verify_allocations(claims, [swapped], node("node-1"), _inventory(*named, features=NO_LISTS))


# -- CEL: lists and includes() -----------------------------------------------------------------------

ATTR = "device.attributes['dra.example.com'].name"


def _matches(expression: str, value: dict) -> bool:
    return compile_selector(expression).matches(device_env("dra.example.com", {"name": value}, None))


@pytest.mark.parametrize(("expression", "value", "expected"), [
    # upstream's compile_test.go "includes-function-*" cases
    (f"{ATTR}.includes('fish')", {"strings": ["fish", "bird"]}, True),
    (f"{ATTR}.includes('cat')", {"strings": ["fish", "bird"]}, False),
    (f"{ATTR}.includes('fish')", {"string": "fish"}, True),
    (f"{ATTR}.includes('bird')", {"string": "fish"}, False),
    (f"{ATTR}.includes(true)", {"bools": [True, False]}, True),
    (f"{ATTR}.includes(false)", {"bools": [True, True]}, False),
    (f"{ATTR}.includes(true)", {"bool": True}, True),
    (f"{ATTR}.includes(1)", {"ints": [1, 2]}, True),
    (f"{ATTR}.includes(3)", {"ints": [1, 2]}, False),
    (f"{ATTR}.includes(1)", {"int": 1}, True),
    (f"{ATTR}.includes(semver('1.0.0'))", {"versions": ["1.0.0", "2.0.0"]}, True),
    (f"{ATTR}.includes(semver('3.0.0'))", {"versions": ["1.0.0", "2.0.0"]}, False),
    (f"{ATTR}.includes(semver('1.0.0'))", {"version": "1.0.0"}, True),
    (f"{ATTR}.includes('value-48')", {"strings": [f"value-{i}" for i in range(48)]}, False),
    (f"{ATTR}.size() == 2", {"versions": ["1.0.0", "2.0.0"]}, True),
    (f"{ATTR}.exists(x, x > 0)", {"ints": [1, 2]}, True),
    (f"{ATTR}.all(x, x.isGreaterThan(semver('0.0.1')))", {"versions": ["1.0.0", "2.0.0"]}, True),
    (f"1 in {ATTR}", {"ints": [1, 2, 3]}, True),
    # CEL equality: a bool is not the int 1, an int equals the same double
    (f"{ATTR}.includes(1)", {"bool": True}, False),
    (f"{ATTR}.includes(2.0)", {"ints": [1, 2]}, True),
])
def test_includes_and_list_attributes_in_selectors(expression: str, value: dict, expected: bool) -> None:
    assert _matches(expression, value) is expected


def test_includes_refuses_to_walk_a_list_longer_than_the_api_allows() -> None:
    with pytest.raises(CelEvalError, match="'includes' function cannot be applied to lists longer than 48 values"):
        _matches(f"{ATTR}.includes('value-49')", {"strings": [f"value-{i}" for i in range(49)]})


# -- the gate ------------------------------------------------------------------------------------------


def test_the_gate_is_upstreams_alpha_default_off() -> None:
    assert KNOWN_GATES["DRAListTypeAttributes"][0] is False
    assert FeatureGates().dra_features.list_type_attributes is False
    assert FeatureGates.parse("DRAListTypeAttributes=true").dra_features == LISTS


# -- the embedded API server -------------------------------------------------------------------------


def _big_slice(count: int, attributes: dict) -> dict:
    devices = [{"name": f"d-{i}", "attributes": attributes} for i in range(count)]
    return resource_slice("big", DRIVER, "pool-big", devices, node_name="node-1")


def test_the_api_server_takes_list_attributes_as_a_1_36_server_with_the_gate_on() -> None:
    store = EmbeddedStore()
    store.create(_slice({"a": ss("a", "b")}, {"a": {"ints": [1]}}, {"a": {"versions": ["1.0.0"]}},
                        {"a": {"bools": [True, False]}}))
    store.create(_big_slice(128, {"a": s("a")}))  # no list: 128 devices
    store.create({**_big_slice(64, {"a": ss("a")}), "metadata": {"name": "big-64"}})
    with pytest.raises(Invalid, match="spec.devices: Too many: 65: must have at most 64 items"):
        store.create({**_big_slice(65, {"a": ss("a")}), "metadata": {"name": "big-65"}})
    with pytest.raises(Invalid, match=r"attributes\['a'\].strings: Invalid value: \[\]: must not be empty if "
                                      "specified"):
        store.create({**_slice({"a": {"strings": []}}), "metadata": {"name": "empty"}})
    with pytest.raises(Invalid, match="the total number of attribute values must not exceed 48"):
        store.create({**_slice({"a": {"ints": list(range(30))}, "b": {"ints": list(range(19))}}),
                      "metadata": {"name": "many"}})
    with pytest.raises(Invalid, match=r"versions\[1\].version: Invalid value: '1.0': must be a string compatible"):
        store.create({**_slice({"a": {"versions": ["1.0.0", "1.0"]}}), "metadata": {"name": "semver"}})
    assert len(store.list(RES_SLICES)[0]) == 3


# -- a scheduling cycle on the embedded cluster --------------------------------------------------------

def _pair_world(world, gates: str):
    config = SchedulerConfig(features=FeatureGates.parse(f"DynamicResourceAllocation=true{gates}"))
    w = world(CPU_CLASS, GPU_CLASS, world.node("n1"), NODE_SLICE, PAIR, config=config)
    w.add(w.pod("p", resourceClaims=[{"name": "devices", "resourceClaimName": "pair"}]))
    w.explain()
    w.cycle()
    return w


def test_a_cycle_places_the_pod_on_devices_sharing_a_pcie_root(world) -> None:
    w = _pair_world(world, ",DRAListTypeAttributes=true")
    assert w.placed() == {"p": "n1"}
    [br] = w.bind_requests()
    allocation = br["spec"]["resourceClaimAllocations"][0]["allocation"]
    assert result_names(allocation) == [("cpu", "cpu-0"), ("gpu", "gpu-1")]


def test_with_the_gate_off_the_pod_waits_naming_the_constraint(world) -> None:
    w = _pair_world(world, "")
    assert w.placed() == {}
    assert w.message("p") == "0/1 nodes are available: 1 cannot allocate all claims."  # kube-scheduler's words
    assert ("claim default/pair: constraint #0 (matchAttribute resource.kubernetes.io/pcieRoot over all requests) "
            "cannot be satisfied by the free devices") in w.detailed("p")  # kai-cli explain's detail


# -- against an oracle -------------------------------------------------------------------------------

_VALUE = st.one_of(
    st.none(),
    st.integers(0, 3).map(lambda n: {"int": n}),
    st.sets(st.integers(0, 3), min_size=1, max_size=3).map(lambda s_: {"ints": sorted(s_)}),
)


def _elements_of(value: dict) -> set[int]:
    return {value["int"]} if "int" in value else set(value["ints"])


def _fits(values: list[dict], distinct: bool, lists: bool) -> bool:
    """The rule, from KEP-5491 and upstream's allocators, for one set of devices (all holding the
    attribute): with the gate on, elements common to all (match) or pairwise disjoint (distinct);
    with it off, equal scalars (a list stands alone) or distinct scalars (at most one list)."""
    if lists:
        sets = [_elements_of(v) for v in values]
        if distinct:
            return all(a.isdisjoint(b) for a, b in itertools.combinations(sets, 2))
        return bool(set.intersection(*sets))
    scalars = [v["int"] for v in values if "int" in v]
    if distinct:
        return len(set(scalars)) == len(scalars) and len(values) - len(scalars) <= 1
    return len(values) == 1 or (len(scalars) == len(values) and len(set(scalars)) == 1)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(_VALUE, min_size=1, max_size=5), counts=st.lists(st.integers(1, 3), min_size=1, max_size=2),
       distinct=st.booleans(), lists=st.booleans())
def test_allocations_agree_with_the_rule(values: list, counts: list, distinct: bool, lists: bool) -> None:
    named = [{"numa": v} if v else {} for v in values]
    features = LISTS if lists else NO_LISTS
    claims = [_claim("distinctAttribute" if distinct else "matchAttribute", INT, *counts)]
    holders = [i for i, v in enumerate(values) if v]
    need = sum(counts)
    solvable = any(_fits([values[i] for i in pick], distinct, lists) for pick in itertools.combinations(holders, need))
    try:
        [allocation] = allocate(claims, node("node-1"), _inventory(*named, features=features), set())
    except Unallocatable as refusal:
        if not (distinct and not lists):  # gate off, distinct: upstream's answer depends on its walk
            assert not solvable, refusal.reason
        return
    picked = [values[int(d.split("-")[1]) - 1] for _, d in result_names(allocation)]
    assert len(picked) == need and all(picked) and _fits(picked, distinct, lists)
    verify_allocations(claims, [allocation], node("node-1"), _inventory(*named, features=features))


def test_includes_costs_what_in_costs() -> None:
    """One comparison per element of the attribute's list, as ``in`` (upstream charges 48 per call)."""
    from kai_core.dra.cel import _eval_env
    from kai_core.dra.celcost import estimate_cost

    def cost(expression: str) -> int:
        return estimate_cost(_eval_env().compile(expression).serialize()).cost

    assert cost(f"{ATTR}.includes('fish')") == cost(f"'fish' in {ATTR}") >= 48
