"""Gangs and the eviction actions on the embedded cluster: stale gangs evicted after their grace
period (kai_core.scheduler.stale_gangs), a PodGroup's preemptionDelay, and the PodGroup status
conditions that say why a group waits (kai_core.scheduler.podgroup_status). Scenarios after KAI's
(``../shared/reference/kai-queues-and-fairness.md``, T10 and T11)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from kai_core.api.resources import RES_POD_GROUPS, RES_PODS
from kai_core.scheduler.podgroups import format_go_duration, go_duration
from kai_core.scheduler.stale_gangs import STALE_SINCE_ANNOTATION

T0 = 1_800_000_000.0  # the tests' wall clock starts here (2027-01-15T08:00:00Z)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def group(name: str, min_member: int | None = None, queue: str = "", **spec) -> dict:
    if min_member is not None:
        spec["minMember"] = min_member
    if queue:
        spec["queue"] = queue
    return {"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def member(world, name: str, group_name: str, node: str | None = "n1", *, gpus: int = 1, subgroup: str = "",
           phase: str = "Running", queue: str = "", priority: int = 0) -> dict:
    meta: dict = {"uid": f"uid-{name}", "creationTimestamp": "2026-01-01T00:00:00Z"}
    if group_name:
        meta["annotations"] = {"pod-group-name": group_name}
    labels = {}
    if subgroup:
        labels["kai.scheduler/subgroup-name"] = subgroup
    if queue:
        labels["kai.scheduler/queue"] = queue
    if labels:
        meta["labels"] = labels
    spec = {"nodeName": node} if node else {}
    status = {"phase": phase, "startTime": "2026-01-01T00:00:00Z"} if node else None
    return world.pod(name, "1", meta=meta, limits={"nvidia.com/gpu": str(gpus)}, status=status,
                     priority=priority, **spec)


def gpu_node(world) -> dict:
    return world.node("n1", cpu="16", extra={"nvidia.com/gpu": "4"})


def exists(w, name: str) -> bool:
    return any(p["metadata"]["name"] == name for p in w.store.list(RES_PODS, "default")[0])


def stale_since(w, name: str) -> str | None:
    pg = w.store.get(RES_POD_GROUPS, name, "default")
    return (pg["metadata"].get("annotations") or {}).get(STALE_SINCE_ANNOTATION)


def with_clock(w) -> Clock:
    clock = Clock()
    w.scheduler.stale_gangs.wall_clock = clock
    return clock


@pytest.fixture(params=["index", "walk"])
def world(request, world, monkeypatch):
    """Each scenario twice: with the cache's pod index, and with every pod walked (a snapshot the
    index does not describe)."""
    if request.param == "walk":
        monkeypatch.setattr("kai_core.scheduler.podgroups.indexed_pods", lambda snap: None)
    return world


# -- stale gangs ---------------------------------------------------------------------------------


def test_a_gang_that_lost_a_pod_is_evicted_after_the_default_grace_period(world):
    """T10: minMember 3, one pod lost: the other two are evicted 60s later, not before."""
    w = world(gpu_node(world), group("train", 3), *[member(world, f"t-{i}", "train") for i in range(3)])
    clock = with_clock(w)
    assert w.cycle().evictions == [] and stale_since(w, "train") is None
    w.store.delete(RES_PODS, "t-2", "default")
    assert w.cycle().evictions == []
    assert stale_since(w, "train") == "2027-01-15T08:00:00Z"
    (event,) = [e for e in w.events("train") if e["reason"] == "StaleJob"]
    assert event["message"] == "Job is stale. 2 pods are active, minMember is 3"
    assert event["involvedObject"]["kind"] == "PodGroup"
    assert w.scheduler.next_due() == pytest.approx(w.scheduler.clock() + 60, abs=1)
    clock.now += 59
    assert w.cycle().evictions == [] and exists(w, "t-0") and exists(w, "t-1")
    clock.now += 1
    assert w.scheduler.next_due() <= w.scheduler.clock()  # due: a loop comparing with its clock runs a cycle
    result = w.cycle()
    assert sorted((e.action, e.pod["metadata"]["name"]) for e in result.evictions) == [
        ("stale-gang", "t-0"), ("stale-gang", "t-1")]
    from kai_core.observability import SchedulerMetrics

    metrics = SchedulerMetrics()
    metrics.observe_cycle(result)
    assert 'kai_pods_evicted_total{action="stale-gang",queue="default-queue"} 2.0' in metrics.exposition()[0].decode()
    assert not exists(w, "t-0") and not exists(w, "t-1")
    (evict,) = [e for e in w.events("t-0") if e["reason"] == "Evict"]
    assert evict["message"] == ("Workload doesn't meet the minimum required number of pods (3), "
                                "evicting remaining pod: default/t-0")
    group_events = [e for e in w.events("train") if e["reason"] == "Evict"]
    assert {e["metadata"]["annotations"]["evictor-action-type"] for e in group_events} == {"stale-gang"}
    assert group_events[0]["metadata"]["annotations"]["num-evicted-pods"] == "2"
    w.cycle()  # nothing of it is active any more: no longer stale
    assert stale_since(w, "train") is None
    assert w.scheduler.next_due() is None


def test_a_negative_grace_period_never_evicts(world):
    """T10: stalenessGracePeriod -1s: a stale gang keeps running."""
    w = world(gpu_node(world), group("train", 3, stalenessGracePeriod="-1s"),
              *[member(world, f"t-{i}", "train") for i in range(2)])
    clock = with_clock(w)
    w.cycle()
    assert stale_since(w, "train") is not None
    clock.now += 86400
    assert w.cycle().evictions == [] and exists(w, "t-0") and exists(w, "t-1")
    assert w.scheduler.next_due() is None


@pytest.mark.parametrize("grace,evicted_at", [("30s", 30), ("2m", 120), ("0s", 0)])
def test_the_podgroup_sets_its_own_grace_period(world, grace, evicted_at):
    w = world(gpu_node(world), group("train", 3, stalenessGracePeriod=grace),
              *[member(world, f"t-{i}", "train") for i in range(2)])
    clock = with_clock(w)
    if evicted_at:
        assert w.cycle().evictions == []
        clock.now += evicted_at - 1
        assert w.cycle().evictions == []
        clock.now += 1
    assert len(w.cycle().evictions) == 2


def test_a_grace_period_that_is_not_a_duration_leaves_the_gang_running(world, caplog):
    w = world(gpu_node(world), group("train", 3, stalenessGracePeriod="-1"),
              *[member(world, f"t-{i}", "train") for i in range(2)])
    clock = with_clock(w)
    w.cycle()
    clock.now += 3600
    assert w.cycle().evictions == []
    assert caplog.text.count("spec.stalenessGracePeriod '-1' is not a duration") == 1  # said once


def test_the_stale_time_survives_a_scheduler_restart(world):
    """The annotation is where the count starts: a new scheduler evicts at once when it is old."""
    pg = group("train", 3)
    pg["metadata"]["annotations"] = {STALE_SINCE_ANNOTATION: "2027-01-15T07:58:00Z"}
    w = world(gpu_node(world), pg, *[member(world, f"t-{i}", "train") for i in range(2)])
    with_clock(w)
    assert len(w.cycle().evictions) == 2
    assert [e for e in w.events("train") if e["reason"] == "StaleJob"] == []  # it was stale already


def test_a_gang_being_bound_or_finished_is_not_stale(world):
    """Pods in flight to the binder count as active; a gang with a Succeeded pod is done, not stale."""
    w = world(gpu_node(world), group("train", 3), *[member(world, f"t-{i}", "train", node=None) for i in range(3)])
    clock = with_clock(w)
    w.cycle()
    assert len(w.bind_requests()) == 3
    w.store.bind("default", "t-0", "n1")  # one bound, two still in flight
    clock.now += 3600
    assert w.cycle().evictions == [] and stale_since(w, "train") is None

    pg = group("done", 3)
    pg["metadata"]["annotations"] = {STALE_SINCE_ANNOTATION: "2027-01-15T07:00:00Z"}  # stale before one finished
    w = world(gpu_node(world), pg, member(world, "d-0", "done", phase="Succeeded"), member(world, "d-1", "done"))
    clock = with_clock(w)
    for _ in range(2):  # the second cycle knows d-0 finished without looking at every pod
        assert w.cycle().evictions == [] and stale_since(w, "done") is None
        w.store.patch(RES_POD_GROUPS, "done", "default",
                      {"metadata": {"annotations": {STALE_SINCE_ANNOTATION: "2027-01-15T07:00:00Z"}}})
        clock.now += 3600


def test_a_gang_that_gets_its_pod_back_is_no_longer_stale(world):
    w = world(gpu_node(world), group("train", 3), *[member(world, f"t-{i}", "train") for i in range(2)])
    clock = with_clock(w)
    w.cycle()
    assert stale_since(w, "train") is not None
    w.add(member(world, "t-2", "train", node=None))  # its controller creates it again
    clock.now += 30
    w.cycle()  # placed: three active again
    assert w.placed() == {"t-2": "n1"}
    assert stale_since(w, "train") is None
    clock.now += 3600
    assert w.cycle().evictions == []


def test_each_sub_group_must_keep_its_own_minimum(world):
    """KAI's pod sets: with sub-groups, each leaf sub-group has its minimum; a group whose workers
    sub-group is short is stale although it has as many pods in all as its sets ask for."""
    sub_groups = [{"name": "roles"}, {"name": "leader", "parent": "roles", "minMember": 1},
                  {"name": "workers", "parent": "roles", "minMember": 2}]
    pods = [member(world, "lead-0", "job", subgroup="leader"), member(world, "lead-1", "job", subgroup="leader"),
            member(world, "work-0", "job", subgroup="workers")]
    w = world(gpu_node(world), group("job", subGroups=sub_groups, stalenessGracePeriod="0s"), *pods)
    with_clock(w)
    result = w.cycle()
    assert sorted(e.pod["metadata"]["name"] for e in result.evictions) == ["lead-0", "lead-1", "work-0"]
    (event,) = [e for e in w.events("job") if e["reason"] == "StaleJob"]
    assert event["message"] == ("Job is stale. 3 pods are active, minMember is 3, "
                                "subGroup workers minMember is 2 and 1 pods are active")
    evict = [e for e in w.events("work-0") if e["reason"] == "Evict"][0]
    assert evict["message"] == ("Workload doesn't meet the minimum required number of pods (2) in sub-group "
                                "workers, evicting remaining pod: default/work-0")


def test_a_gang_without_minimum_or_of_one_pod_is_never_stale(world):
    w = world(gpu_node(world), group("elastic", 0), group("single"),
              member(world, "e-0", "elastic"), member(world, "s-0", "single"))
    clock = with_clock(w)
    w.cycle()
    clock.now += 3600
    assert w.cycle().evictions == []
    assert stale_since(w, "elastic") is None and stale_since(w, "single") is None


def test_stale_gang_eviction_can_be_turned_off(world):
    from kai_core.scheduler.cycle import SchedulerConfig
    from kai_core.scheduler.stale_gangs import StaleGangConfig

    w = world(gpu_node(world), group("train", 3, stalenessGracePeriod="0s"),
              *[member(world, f"t-{i}", "train") for i in range(2)],
              config=SchedulerConfig(stale_gangs=StaleGangConfig(enabled=False)))
    assert w.cycle().evictions == [] and stale_since(w, "train") is None


@pytest.mark.parametrize("text,seconds", [("60s", 60), ("-1s", -1), ("0", 0), ("1h30m", 5400), ("1.5m", 90),
                                          ("+2s", 2), ("-1", None), ("", None), ("5 m", None), ("-", None)])
def test_grace_periods_are_go_durations(text, seconds):
    assert go_duration(text) == seconds


@pytest.mark.parametrize("seconds,text", [(300, "5m0s"), (3600, "1h0m0s"), (90.5, "1m30.5s"), (0, "0s"),
                                          (0.5, "500ms"), (45, "45s")])
def test_durations_print_as_go_prints_them(seconds, text):
    assert format_go_duration(seconds) == text




# -- preemptionDelay -----------------------------------------------------------------------------


def ago(minutes: float) -> str:
    return datetime.fromtimestamp(time.time() - minutes * 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def delayed_world(world, created_minutes_ago: float, **annotations):
    """One 2-GPU node in queue `test`: `train` (priority 50) runs on one GPU; PodGroup `build`
    (priority 75, minMember 1, preemptionDelay 5m) waits with two 1-GPU pods."""
    pg = group("build", 1, "test", preemptionDelay="5m")
    pg["metadata"]["creationTimestamp"] = ago(created_minutes_ago)
    if annotations:
        pg["metadata"]["annotations"] = annotations
    return world(world.node("n1", cpu="16", extra={"nvidia.com/gpu": "2"}), world.queue("test", quota=2),
                 member(world, "train", "", queue="test", priority=50),
                 pg, *[member(world, f"build-{i}", "build", node=None, queue="test", priority=75) for i in range(2)])


def test_within_its_preemption_delay_a_group_only_takes_free_capacity(world):
    """T11: preemptionDelay 5m, pending for 1m: one pod goes into the free GPU, nothing is evicted."""
    w = delayed_world(world, 1)
    result = w.cycle()
    assert result.evictions == [] and exists(w, "train")
    assert len(w.placed()) == 1


def test_after_its_preemption_delay_a_group_preempts(world):
    w = delayed_world(world, 6)
    result = w.cycle()
    assert [(e.action, e.pod["metadata"]["name"]) for e in result.evictions] == [("preempt", "train")]


def test_the_preemption_delay_counts_again_from_the_last_eviction(world):
    w = delayed_world(world, 60, **{"kai.scheduler/last-eviction-timestamp": ago(2)})
    assert w.cycle().evictions == [] and exists(w, "train")


# -- PodGroup status -----------------------------------------------------------------------------


def conditions(w, name: str) -> list[dict]:
    return (w.store.get(RES_POD_GROUPS, name, "default").get("status") or {}).get("schedulingConditions") or []


def resource_version(w, name: str) -> str:
    return w.store.get(RES_POD_GROUPS, name, "default")["metadata"]["resourceVersion"]


def test_a_gang_that_does_not_fit_says_why_on_its_podgroup_once(world):
    w = world(world.node("n1", cpu="16", extra={"nvidia.com/gpu": "2"}), group("train", 3),
              *[member(world, f"t-{i}", "train", node=None) for i in range(3)])
    w.cycle()
    (cond,) = conditions(w, "train")
    why = w.message("t-0")
    assert {k: v for k, v in cond.items() if k != "lastTransitionTime"} == {
        "type": "UnschedulableOnNodePool", "nodePool": "default", "reason": "Unschedulable", "status": "True",
        "message": f"PodSchedulingErrors: {why.rstrip('.')}.", "transitionID": "1",
        "reasons": [{"reason": "PodSchedulingErrors", "message": why}]}
    assert cond["lastTransitionTime"].endswith("Z")
    written = resource_version(w, "train")
    for _ in range(3):  # the same reason: no write storm
        w.cycle()
    assert resource_version(w, "train") == written


def test_the_condition_stays_until_the_group_is_bound_then_goes(world):
    w = world(world.node("n1", cpu="16", extra={"nvidia.com/gpu": "2"}), group("train", 3),
              *[member(world, f"t-{i}", "train", node=None) for i in range(3)])
    w.cycle()
    assert conditions(w, "train")
    w.add(world.node("n2", cpu="16", extra={"nvidia.com/gpu": "2"}))
    w.cycle()
    assert len(w.placed()) == 3
    assert conditions(w, "train")  # decided, not bound: a failed binding still finds the explanation
    # the binding is no work for the scheduler: it asks for a cycle a second later to look again
    assert w.scheduler.next_due() == pytest.approx(w.scheduler.clock() + 1, abs=0.5)
    for name, node in w.placed().items():
        w.store.bind("default", name, node)
    w.cycle()
    assert conditions(w, "train") == []
    assert "schedulingConditions" not in (w.store.get(RES_POD_GROUPS, "train", "default").get("status") or {})


def test_a_new_reason_is_a_new_transition_and_other_node_pools_are_kept(world):
    pg = group("train", 1, "missing")
    pg["metadata"]["labels"] = {"kai.scheduler/node-pool": "pool-a"}
    other = {"type": "UnschedulableOnNodePool", "nodePool": "pool-b", "reason": "Unschedulable",
             "message": "elsewhere", "status": "True", "transitionID": "4",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}
    pg["status"] = {"schedulingConditions": [other]}
    w = world(world.node("n1", cpu="16", extra={"nvidia.com/gpu": "2"}), world.queue("test", quota=2), pg,
              member(world, "t-0", "train", node=None, queue="missing"))
    w.cycle()
    kept, cond = conditions(w, "train")
    assert kept == other
    assert cond["nodePool"] == "pool-a" and cond["transitionID"] == "5"
    assert cond["reasons"] == [{"reason": "QueueDoesNotExist", "message": "Queue 'missing' does not exist"}]
    assert cond["message"] == "QueueDoesNotExist: Queue 'missing' does not exist."


def test_a_group_short_of_pods_or_partly_running_gets_no_condition(world):
    w = world(world.node("n1", cpu="16", extra={"nvidia.com/gpu": "1"}), group("short", 3), group("elastic", 1),
              *[member(world, f"s-{i}", "short", node=None) for i in range(2)],
              *[member(world, f"e-{i}", "elastic", node=None) for i in range(2)])
    w.cycle()
    assert len(w.placed()) == 1  # one elastic pod runs, the other waits
    assert conditions(w, "short") == [] and conditions(w, "elastic") == []


def test_a_group_within_its_preemption_delay_says_so(world):
    pg = group("build", 1, "test", preemptionDelay="5m")
    pg["metadata"]["creationTimestamp"] = ago(1)
    w = world(world.node("n1", cpu="16", extra={"nvidia.com/gpu": "1"}), world.queue("test", quota=2),
              member(world, "train", "", queue="test", priority=50), pg,
              member(world, "build-0", "build", node=None, queue="test", priority=75))
    w.cycle()
    (cond,) = conditions(w, "build")
    assert [r["reason"] for r in cond["reasons"]] == ["PodSchedulingErrors", "PreemptionDelayNotElapsed"]
    assert cond["reasons"][1]["message"].startswith(
        "Workload is within its preemption delay window (5m0s) and may not trigger evictions before ")
    assert cond["message"].startswith("Unable to schedule podgroup: ")


def test_a_group_long_waiting_for_its_binding_is_looked_at_less_often_then_left(world):
    """No binder here: the group's pods stay in flight. The scheduler looks again 1 s, 2 s, ... 32 s
    later (a binding is no work for it), then leaves the condition to the next cycle run anyway."""
    w = world(world.node("n1", cpu="16", extra={"nvidia.com/gpu": "2"}), group("train", 3),
              *[member(world, f"t-{i}", "train", node=None) for i in range(3)])
    w.cycle()
    w.add(world.node("n2", cpu="16", extra={"nvidia.com/gpu": "2"}))
    clock = Clock()
    w.scheduler.pod_group_status.wall_clock = clock
    waits = []
    for _ in range(8):
        w.cycle()
        due = w.scheduler.next_due()
        waits.append(None if due is None else round(due - w.scheduler.clock()))
        clock.now += 100
    assert waits == [1, 2, 4, 8, 16, 32, None, None]
    assert conditions(w, "train")


def test_an_evicted_group_is_stamped_and_its_preemption_delay_counts_again(world):
    """The victim's PodGroup gets kai.scheduler/last-eviction-timestamp: when its pods come back
    waiting, its own preemptionDelay counts from that eviction, not from its creation long ago."""
    victim_group = group("old", 1, "test", preemptionDelay="5m")
    victim_group["metadata"]["creationTimestamp"] = ago(60)
    w = world(world.node("n1", cpu="16", extra={"nvidia.com/gpu": "1"}), world.queue("test", quota=2), victim_group,
              member(world, "old-0", "old", queue="test", priority=50),
              member(world, "new-0", "", node=None, queue="test", priority=75))
    assert [e.pod["metadata"]["name"] for e in w.cycle().evictions] == ["old-0"]
    stamp = w.store.get(RES_POD_GROUPS, "old", "default")["metadata"]["annotations"][
        "kai.scheduler/last-eviction-timestamp"]
    assert abs(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - time.time()) < 5
    w.cycle()  # new-0 is placed on the freed GPU
    w.store.bind("default", "new-0", "n1")
    w.add(member(world, "old-1", "old", node=None, queue="test", priority=90))  # its controller's new pod
    assert w.cycle().evictions == []  # within its delay again: it would preempt new-0 (75) otherwise
    pg = w.store.get(RES_POD_GROUPS, "old", "default")
    del pg["metadata"]["annotations"]["kai.scheduler/last-eviction-timestamp"]
    w.store.update(pg)
    assert [e.pod["metadata"]["name"] for e in w.cycle().evictions] == ["new-0"]
