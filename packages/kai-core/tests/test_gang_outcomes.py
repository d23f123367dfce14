"""Like gangs in one cycle (:mod:`kai_core.scheduler.gangs`): members share the shape memos across
gangs (KAI's ``pod-group-name`` is not part of a pod's shape), and a gang that did not fit is
remembered with the snapshot's state, so the next gang of the same shapes and need is told the same
without being decided again, as long as nothing was placed or evicted in between. What a user sees
is the same as deciding every gang: each gang's message names its own pod."""

from __future__ import annotations

from kai_core.api.features import FeatureGates
from kai_core.api.resources import RES_PODS
from kai_core.dra.claims import ClaimAllocation
from kai_core.framework.hookspecs import hookimpl
from kai_core.framework.snapshot import Snapshot
from kai_core.framework.statement import Statement
from kai_core.plugins import build_plugin_manager
from kai_core.scheduler.equivalence import pod_shape

CREATED = "2024-01-01T00:00:00Z"  # one creation time for all pods: the order is priority, then name


def pod_group(name: str, min_member: int) -> dict:
    return {"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
            "metadata": {"name": name, "namespace": "default"}, "spec": {"minMember": min_member}}


def member(world, name: str, group: str, cpu: str = "1", **kw) -> dict:
    return world.pod(name, cpu, meta={"labels": {"app": "train"}, "annotations": {"pod-group-name": group},
                                      "creationTimestamp": CREATED}, **kw)


def gang(world, group: str, size: int, prefix: str | None = None) -> list[dict]:
    return [member(world, f"{prefix or group}-{i}", group) for i in range(size)]


class FilterLog:
    """Asked before the built-in filters: records the pods whose nodes are filtered, and how many
    nodes each call was about."""

    def __init__(self) -> None:
        self.pods: list[str] = []
        self.asked: list[tuple[str, int]] = []

    @hookimpl(tryfirst=True)
    def kai_filter_nodes(self, pod, nodes):
        self.pods.append(pod["metadata"]["name"])
        self.asked.append((pod["metadata"]["name"], len(nodes)))


def logged_world(world, *objs):
    log = FilterLog()
    pm = build_plugin_manager(load_external=False)
    pm.register(log, name="log")
    return world(*objs, pm=pm), log


def full_cluster(world) -> list[dict]:
    """Two nodes with 2 cpus free between them (a hog on each)."""
    return [world.node("n1", cpu="2"), world.node("n2", cpu="2"),
            world.pod("hog-1", cpu="1", nodeName="n1"), world.pod("hog-2", cpu="1", nodeName="n2")]


def test_a_like_gang_after_one_that_did_not_fit_is_not_decided_again(world):
    w, log = logged_world(world, *full_cluster(world), pod_group("a", 3), pod_group("b", 3), pod_group("c", 3),
                          *gang(world, "a", 3), *gang(world, "b", 3), *gang(world, "c", 3))
    result = w.cycle()
    assert (result.scheduled, result.unschedulable) == (0, 9)
    assert w.bind_requests() == []
    assert set(log.pods) == {"a-0", "a-1", "a-2"}  # b and c: known not to fit, no filter asked
    for group in ("a", "b", "c"):
        assert {w.message(f"{group}-{i}") for i in range(3)} == {
            f"PodGroup default/{group} (minMember 3): 3 pod(s) must be placed together but only 2 fit: "
            f"pod default/{group}-2: 0/2 nodes are available: 2 Insufficient cpu."}


def test_a_gang_after_a_placement_is_decided_again(world):
    # the order is by name: gang a, the pod b-solo (which fits and takes 1 cpu), then gang c
    w, log = logged_world(world, *full_cluster(world), pod_group("a", 3), pod_group("c", 3),
                          *gang(world, "a", 3), world.pod("b-solo", cpu="1", meta={"creationTimestamp": CREATED}),
                          *gang(world, "c", 3))
    result = w.cycle()
    assert (result.scheduled, result.unschedulable) == (1, 6)
    assert "c-0" in log.pods
    assert w.message("c-0") == ("PodGroup default/c (minMember 3): 3 pod(s) must be placed together but only 1 "
                                "fit: pod default/c-1: 0/2 nodes are available: 2 Insufficient cpu.")


def test_a_gang_needing_fewer_members_is_not_told_what_a_larger_one_was(world):
    w, _log = logged_world(world, *full_cluster(world), pod_group("a", 3), pod_group("b", 2),
                           *gang(world, "a", 3), *gang(world, "b", 2))
    result = w.cycle()
    assert (result.scheduled, result.unschedulable) == (2, 3)
    assert sorted(w.placed()) == ["b-0", "b-1"]


def test_like_gangs_share_the_filters_answers(world):
    nodes = [world.node(f"n{i}", cpu="2") for i in range(4)]
    w, log = logged_world(world, *nodes, pod_group("a", 2), pod_group("b", 2), *gang(world, "a", 2),
                          *gang(world, "b", 2))
    assert w.cycle().scheduled == 4
    # b's members are of a's shape: each asks only about the node the member before it took
    assert log.asked == [("a-0", 4), ("a-1", 1), ("b-0", 1), ("b-1", 1)]


def test_explained_decisions_decide_every_gang(world):
    w, log = logged_world(world, *full_cluster(world), pod_group("a", 3), pod_group("b", 3),
                          *gang(world, "a", 3), *gang(world, "b", 3))
    w.explain()
    w.cycle()
    assert "b-0" in log.pods
    assert "Insufficient cpu" in w.detailed("b-2")


def test_the_pod_group_is_not_part_of_a_pods_shape(world):
    w = world(world.node("n1"), pod_group("a", 1), pod_group("b", 1), member(world, "p", "a"), member(world, "q", "b"),
              world.pod("r", "1", meta={"labels": {"app": "train"}, "annotations": {"pod-group-name": "a", "x": "1"},
                                        "creationTimestamp": CREATED}))
    w.scheduler.cache.sync()
    snap = Snapshot(w.scheduler.cache, "kai-scheduler", FeatureGates())
    p, q, r = (snap.pods[("default", n)] for n in ("p", "q", "r"))
    assert pod_shape(p, snap) == pod_shape(q, snap) is not None
    assert pod_shape(r, snap) != pod_shape(p, snap)  # any other annotation still counts


def two_pods_on_one_node(world) -> tuple[Snapshot, dict, dict]:
    """A snapshot of node n1 and two pending pods, p and q."""
    w = world(world.node("n1", cpu="4"), world.pod("p", cpu="1"), world.pod("q", cpu="1"))
    w.scheduler.cache.sync()
    snap = Snapshot(w.scheduler.cache, "kai-scheduler", FeatureGates())
    return snap, snap.pods[("default", "p")], snap.pods[("default", "q")]


def test_a_rollback_gives_the_snapshot_its_state_back(world):
    snap, p, q = two_pods_on_one_node(world)
    start = snap.state
    statement = Statement(snap)
    statement.assume(p, "n1", [], None)
    after_p = snap.state
    mark = statement.checkpoint()
    statement.assume(q, "n1", [], None)
    assert len({start, after_p, snap.state}) == 3
    statement.rollback(mark)
    assert snap.state == after_p
    statement.rollback()
    assert snap.state == start
    # the same change made again is a new state: nothing learnt of the first one is assumed to hold
    statement.assume(p, "n1", [], None)
    assert snap.state not in (start, after_p)


def test_undoing_one_decision_leaves_no_earlier_state_to_come_back(world):
    snap, p, q = two_pods_on_one_node(world)
    start = snap.state
    statement = Statement(snap)
    statement.assume(p, "n1", [], ClaimAllocation([]))
    with_p = snap.state
    statement.assume(q, "n1", [], None)
    statement.undo(p)  # p's decision goes; q's stays
    statement.rollback()  # takes q back too: the snapshot is as it started, but not known to be
    assert snap.node_by_name["n1"].requested.get("cpu", 0) == 0
    assert snap.state not in (start, with_p)


def being_released(world) -> list[dict]:
    """:func:`full_cluster` with a 1-cpu pod on n1 that a finalizer keeps once it is deleted (see
    :func:`delete_dying`): n2 has 1 cpu free, n1 will have 1 once that pod is gone."""
    dying = world.pod("dying", cpu="1", nodeName="n1", meta={"finalizers": ["example.com/hold"]},
                      status={"phase": "Running"})
    return [world.node("n1", cpu="2"), world.node("n2", cpu="2"), world.pod("hog-1", cpu="1", nodeName="n1"),
            dying, world.pod("hog-2", cpu="1", nodeName="n2")]


def delete_dying(w) -> None:
    w.store.delete(RES_PODS, "dying", "default")


def test_like_gangs_are_not_decided_again_while_pods_are_being_deleted(world):
    """A pod being deleted (a finalizer holds it): each gang that fits nowhere is also tried in the
    room that pod leaves (pipelined allocation). That try, which does not fit either, leaves the
    snapshot as it was: the next like gangs are still told without being decided again."""
    w, log = logged_world(world, *being_released(world), pod_group("a", 3), pod_group("b", 3), pod_group("c", 3),
                          *gang(world, "a", 3), *gang(world, "b", 3), *gang(world, "c", 3))
    delete_dying(w)
    result = w.cycle()
    assert (result.scheduled, result.unschedulable) == (0, 9)
    assert set(log.pods) == {"a-0", "a-1", "a-2"}
    for group in ("b", "c"):
        assert w.message(f"{group}-0") == (
            f"PodGroup default/{group} (minMember 3): 3 pod(s) must be placed together but only 1 fit: "
            f"pod default/{group}-1: 0/2 nodes are available: 2 Insufficient cpu.")


def test_a_gang_that_fits_into_the_room_being_released_waits_for_it(world):
    w, _log = logged_world(world, *being_released(world), pod_group("a", 2), pod_group("b", 2),
                           *gang(world, "a", 2), *gang(world, "b", 2))
    delete_dying(w)
    w.cycle()
    assert w.bind_requests() == []
    assert w.message("a-0") == "waiting for pods being deleted to release their resources"
    # a's place in the room being released is promised: b, like a, fits nowhere else
    assert w.message("b-0").startswith("PodGroup default/b (minMember 2): 2 pod(s) must be placed together")
