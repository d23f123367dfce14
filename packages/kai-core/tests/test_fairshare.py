"""Fair share (kai_core.framework.fairshare, kai_core.framework.queues.fair_shares): KAI's worked
examples (../shared/reference/kai-queues-and-fairness.md, section 2, E1-E6, and KAI's own
resource_division tests) and properties that hold for any tree of queues."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kai_core.framework.fairshare import UNLIMITED, Claimant, divide_level
from kai_core.framework.queues import Queue, ResourceTerms, build_tree, fair_shares, queue_from_object


def claimant(name: str, deserved: float = 0, weight: float = 1, request: float = 0, limit: float = UNLIMITED,
             priority: int = 100, created: str = "") -> Claimant:
    return Claimant(name=name, deserved=deserved, weight=weight, request=request, limit=limit, priority=priority,
                    created=created)


def shares(total: float, *claimants: Claimant) -> tuple[list[float], float]:
    left = divide_level(total, claimants)
    return [c.fair_share for c in claimants], left


def gpu_queue(name: str, quota: float = 0, weight: float = 0, limit: float = UNLIMITED, parent: str = "",
              priority: int = 100, created: str = "") -> Queue:
    return Queue(name=name, parent=parent, priority=priority, created=created,
                 resources={"gpu": ResourceTerms(quota, weight, limit)})


# -- KAI's worked examples ---------------------------------------------------------------------------


def test_e1_simulator_readme_70_30():
    assert shares(100, claimant("q1", 10, 3, 100), claimant("q2", 10, 1, 100)) == ([70, 30], 0)


def test_e1_simulator_cpu_and_memory_defaults_unlimited_quota_gives_each_the_whole_level():
    """Quota -1 is the whole amount of the level for every queue: the shares add up to more than there is."""
    cpu = shares(16000, claimant("q1", UNLIMITED, 1, 100000), claimant("q2", UNLIMITED, 1, 100000))
    memory = shares(32e6, claimant("q1", UNLIMITED, 1, 100000), claimant("q2", UNLIMITED, 1, 100000))
    assert cpu == ([16000, 16000], 0) and memory == ([100000, 100000], 32e6 - 200000)


def test_e2_deep_dive_priority_first_then_weight():
    vision, llm, data = claimant("vision", 2, 2, 10, priority=2), claimant("llm", 2, 1, 10, priority=2), \
        claimant("data", 3, 1, 10, priority=1)
    assert shares(10, vision, llm, data) == ([4, 3, 3], 0)


@pytest.mark.parametrize(("total", "first", "second", "expected", "left"), [
    (15, {}, {}, [6, 6], 3),
    (8, {"weight": 1}, {"weight": 3}, [3, 5], 0),
    (12, {"limit": 5}, {}, [5, 6], 1),
    (11, {"weight": 1, "request": 10}, {"weight": 4, "request": 10}, [3, 8], 0),  # fractions .4/.6
    (11, {"request": 10, "created": "2024-01-01T00:00:00Z"}, {"request": 10, "created": "2024-06-01T00:00:00Z"},
     [6, 5], 0),  # equal fractions: the older queue gets the unit
    (6, {"priority": 1, "weight": 100}, {"priority": 2, "weight": 1}, [2, 4], 0),
    (4, {"priority": 1}, {"priority": 2}, [2, 2], 0),
])
def test_e3_resource_division_two_queues_quota_2_weight_2_request_6(total, first, second, expected, left):
    a = claimant("q1", **{"deserved": 2, "weight": 2, "request": 6, **first})
    b = claimant("q2", **{"deserved": 2, "weight": 2, "request": 6, **second})
    assert shares(total, a, b) == (expected, left)


def test_e4_issue_143_priority_bucket_satisfied_then_weights():
    a, b, c = claimant("a", 1, 1, 1, priority=2), claimant("b", 1, 2, 3, priority=1), claimant("c", 0, 1, 2, priority=1)
    assert shares(5, a, b, c) == ([1, 3, 1], 0)


def test_e5_weight_zero_gets_nothing_over_quota_whatever_its_priority():
    assert shares(10, claimant("h", 0, 0, 5, priority=200), claimant("l", 0, 1, 10, priority=100)) == ([0, 10], 0)


def test_e6_two_levels_children_divide_their_parents_share():
    tree = build_tree([
        gpu_queue("p1", quota=4, weight=1), gpu_queue("p2", weight=1),
        gpu_queue("c1", quota=2, weight=1, parent="p1", created="2024-01-01T00:00:00Z"),
        gpu_queue("c2", weight=1, parent="p1", created="2024-02-01T00:00:00Z"),
        gpu_queue("c3", weight=1, parent="p2"),
    ])
    fs = fair_shares(tree, {"gpu": 10}, {"c1": {"gpu": 6}, "c2": {"gpu": 6}, "c3": {"gpu": 4}})
    assert {q: fs[q]["gpu"] for q in ("p1", "p2", "c1", "c2", "c3")} == {"p1": 7, "p2": 3, "c1": 5, "c2": 2, "c3": 3}


@pytest.mark.parametrize(("total", "change", "expected", "left"), [
    (2, {}, 5, 0),
    (3, {}, 5, 1),
    (2, {"limit": 4}, 4, 1),
    (2, {"weight": 0}, 3, 2),
    (2, {"request": 4.5}, 4.5, 0.5),
    (0.5, {}, 3.5, 0),  # a fraction left over is still given
    (0, {}, 3, 0),
])
def test_kai_single_queue_over_quota_cases(total, change, expected, left):
    """KAI's "single queue over quota" tests: quota 3 already given, request 5, weight 1."""
    q = claimant("q", **{"deserved": 3, "weight": 1, "request": 5, **change})
    assert shares(3 + total, q) == ([expected], left)


def test_fractional_requests_can_end_above_the_request_in_the_leftover_step_as_in_kai():
    """KAI gives each leftover fraction a whole unit without looking at the request again."""
    a, b, c = (claimant(n, request=r, created=n) for n, r in (("a", 2.5), ("b", 10), ("c", 10)))
    given, left = shares(6.9, a, b, c)
    assert given == pytest.approx([2.9, 2, 2]) and left == 0  # a asked for 2.5


def test_memory_quotas_are_megabytes_and_negative_amounts_mean_unlimited():
    q = queue_from_object({"metadata": {"name": "q"}, "spec": {"resources": {
        "memory": {"quota": 1000, "overQuotaWeight": 1, "limit": -5}, "gpu": {"quota": -5}}}})
    assert q.terms("memory") == ResourceTerms(1e9, 1, UNLIMITED)
    assert q.terms("gpu") == ResourceTerms(-5, 0, 0) and q.terms("cpu") == ResourceTerms() and q.priority == 100


# -- properties --------------------------------------------------------------------------------------

QUEUES = st.lists(
    st.fixed_dictionaries({
        "deserved": st.integers(0, 6),
        "weight": st.integers(1, 5),
        "request": st.integers(0, 30),
        "limit": st.one_of(st.just(UNLIMITED), st.integers(0, 30)),
        "priority": st.sampled_from([50, 100, 200]),
    }),
    min_size=1, max_size=6,
)


def _claimants(specs: list[dict]) -> list[Claimant]:
    return [claimant(f"q{i}", created=f"2024-01-{i + 1:02d}", **s) for i, s in enumerate(specs)]


@settings(max_examples=300, deadline=None)
@given(QUEUES, st.integers(0, 60))
def test_no_queue_gets_more_than_it_may_use(specs, total):
    claimants = _claimants(specs)
    divide_level(total, claimants)
    for c in claimants:
        assert 0 <= c.fair_share <= c.request
        assert c.limit == UNLIMITED or c.fair_share <= c.limit


@settings(max_examples=300, deadline=None)
@given(QUEUES, st.integers(0, 60))
def test_shares_sum_to_the_capacity_when_demand_exceeds_it(specs, total):
    claimants = _claimants(specs)
    if sum(c.requestable for c in claimants) < total or sum(min(c.deserved, c.requestable) for c in claimants) > total:
        return
    left = divide_level(total, claimants)
    assert left == 0
    assert sum(c.fair_share for c in claimants) == pytest.approx(total)


@settings(max_examples=300, deadline=None)
@given(QUEUES, st.integers(0, 60), st.data())
def test_a_larger_weight_never_lowers_a_queues_share(specs, total, data):
    index = data.draw(st.integers(0, len(specs) - 1))
    before = _claimants(specs)
    divide_level(total, before)
    heavier = [dict(s) for s in specs]
    heavier[index]["weight"] += data.draw(st.integers(1, 10))
    after = _claimants(heavier)
    divide_level(total, after)
    assert after[index].fair_share >= before[index].fair_share


TREES = st.lists(st.tuples(st.integers(0, 4), st.integers(1, 4), st.integers(0, 20)), min_size=2, max_size=8)


@settings(max_examples=200, deadline=None)
@given(TREES, st.integers(1, 40))
def test_in_a_tree_children_divide_their_parents_share(leaves, total):
    """Two top queues, leaves alternating between them: each parent's share is divided among its
    children exactly when they ask for more than it."""
    queues = [gpu_queue("a", weight=1), gpu_queue("b", weight=2)]
    requested = {}
    for i, (quota, weight, request) in enumerate(leaves):
        queues.append(gpu_queue(f"l{i}", quota=quota, weight=weight, parent="ab"[i % 2]))
        requested[f"l{i}"] = {"gpu": float(request)}
    tree = build_tree(queues)
    fs = fair_shares(tree, {"gpu": total}, requested)
    demand = sum(r["gpu"] for r in requested.values())
    assert fs["a"]["gpu"] + fs["b"]["gpu"] == pytest.approx(min(total, demand))
    for parent in "ab":
        kids = tree.children.get(parent, ())
        kid_demand = sum(requested[k]["gpu"] for k in kids)
        kid_quota = sum(min(tree.queues[k].terms("gpu").quota, requested[k]["gpu"]) for k in kids)
        if kid_quota <= fs[parent]["gpu"]:
            assert sum(fs[k]["gpu"] for k in kids) == pytest.approx(min(fs[parent]["gpu"], kid_demand))
