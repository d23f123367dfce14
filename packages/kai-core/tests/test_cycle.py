"""The scheduling cycle on the embedded cluster: which pods, in which order, what gets written
(BindRequests, or a PodScheduled=False condition and an Event), in-flight decisions counted as
used, and stale BindRequests cleaned up."""

from __future__ import annotations

import pytest

from kai_core.api.features import FeatureGates
from kai_core.api.resources import RES_NODES
from kai_core.framework.snapshot import Snapshot
from kai_core.scheduler.cycle import SchedulerConfig, unschedulable_message

# -- which pods ------------------------------------------------------------------------------


def test_only_pods_of_this_scheduler_are_touched(world):
    w = world(world.node("n1"), world.pod("mine"), world.pod("theirs", scheduler="default-scheduler"))
    before = w.get_pod("theirs")
    result = w.cycle()
    assert (result.scheduled, result.unschedulable, result.errors) == (1, 0, 0)
    assert w.placed() == {"mine": "n1"}
    assert w.get_pod("theirs") == before  # not even a condition


def test_scheduler_name_is_configurable(world):
    w = world(world.node("n1"), world.pod("a"), world.pod("b", scheduler="team-scheduler"),
              config=SchedulerConfig(scheduler_name="team-scheduler"))
    w.cycle()
    assert w.placed() == {"b": "n1"}
    assert w.condition("a") is None


def test_bound_finished_deleting_and_gated_pods_are_left_alone(world):
    w = world(
        world.node("n1"),
        world.pod("bound", nodeName="n1"),
        world.pod("done", status={"phase": "Succeeded"}),
        world.pod("gated", schedulingGates=[{"name": "example.com/wait"}]),
    )
    assert w.cycle().scheduled == 0
    assert w.bind_requests() == []
    assert w.condition("gated") is None


def test_order_is_priority_then_creation_then_name(world):
    def created(ts: str) -> dict:
        return {"creationTimestamp": ts}

    w = world(
        world.node("n1", cpu="2"),
        world.pod("a-new", meta=created("2024-01-03T00:00:00Z")),
        world.pod("b-old", meta=created("2024-01-01T00:00:00Z")),
        world.pod("a-old", meta=created("2024-01-01T00:00:00Z")),
        world.pod("z-urgent", meta=created("2024-01-09T00:00:00Z"), priority=100),
        world.pod("other-scheduler", scheduler="default-scheduler", priority=1000),
    )
    w.scheduler.cache.sync()
    snap = Snapshot(w.scheduler.cache, "kai-scheduler", FeatureGates())
    assert [p["metadata"]["name"] for p in snap.pending_pods()] == ["z-urgent", "a-old", "b-old", "a-new"]
    w.cycle()
    # room for two: the most urgent, then the oldest (the name breaks the tie)
    assert set(w.placed()) == {"z-urgent", "a-old"}
    assert w.condition("b-old")["reason"] == "Unschedulable"
    assert w.condition("a-new")["reason"] == "Unschedulable"


# -- decisions in one cycle ------------------------------------------------------------------


def test_a_decision_is_assumed_so_the_next_pod_sees_the_resources_taken(world):
    w = world(world.node("n1"), world.node("n2"), world.pod("a", "3"), world.pod("b", "3"), world.pod("c", "3"))
    result = w.cycle()
    assert (result.scheduled, result.unschedulable) == (2, 1)
    assert sorted(w.placed().values()) == ["n1", "n2"]
    assert w.message("c") == "0/2 nodes are available: 2 Insufficient cpu."


def test_in_flight_bind_requests_hold_their_resources_across_cycles(world):
    w = world(world.node("n1"), world.pod("first", "3"))
    assert w.cycle().scheduled == 1
    w.add(world.pod("second", "3"))
    result = w.cycle()  # no binder ran: "first" is still only a BindRequest
    assert result.unschedulable == 1
    assert w.message("second") == "0/1 nodes are available: 1 Insufficient cpu."
    assert len(w.bind_requests()) == 1


def test_a_pod_with_a_bind_request_is_not_scheduled_twice(world):
    w = world(world.node("n1"), world.pod("p"))
    for _ in range(3):
        w.cycle()
    assert len(w.bind_requests()) == 1


def test_a_bind_request_left_by_an_earlier_pod_of_the_same_name_is_ignored(world):
    w = world(world.node("n1"), world.pod("p", "3"))
    w.add({
        "apiVersion": "scheduling.run.ai/v1alpha2",
        "kind": "BindRequest",
        "metadata": {"name": "p-oldoldoldo", "namespace": "default", "ownerReferences": [
            {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "00000000-0000-0000-0000-000000000001"}]},
        "spec": {"podName": "p", "selectedNode": "n1", "receivedResourceType": "Regular"},
    })
    assert w.cycle().scheduled == 1  # the stale request neither blocks the pod nor takes the cpu


# -- unschedulable pods ----------------------------------------------------------------------


def test_unschedulable_condition_message_and_event_like_kube_scheduler(world):
    w = world(
        world.node("n1", cpu="1", labels={"zone": "a"}),
        world.node("n2"), world.node("n3"), world.node("n4"),
        world.pod("big", "2", nodeSelector={"zone": "a"}),
    )
    result = w.cycle()
    assert result.unschedulable == 1 and w.bind_requests() == []
    cond = w.condition("big")
    expected = "0/4 nodes are available: 1 Insufficient cpu, 3 node(s) didn't match Pod's node affinity/selector."
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "Unschedulable", expected)
    [event] = w.events("big")
    assert (event["type"], event["reason"], event["message"]) == ("Warning", "FailedScheduling", expected)
    assert event["involvedObject"]["uid"] == w.get_pod("big")["metadata"]["uid"]


def test_an_unchanged_reason_is_not_written_again(world):
    w = world(world.node("n1", cpu="1"), world.pod("big", "2"))
    w.cycle()
    rv = w.store.resource_version
    w.cycle()
    w.cycle()
    assert w.store.resource_version == rv
    assert len(w.events("big")) == 1


def test_a_changed_reason_is_written_with_a_new_event(world):
    w = world(world.node("n1", cpu="1"), world.pod("big", "2"))
    w.cycle()
    w.add(world.node("n2", cpu="1"))
    w.cycle()
    assert w.message("big") == "0/2 nodes are available: 2 Insufficient cpu."
    assert len(w.events("big")) == 2


def test_no_nodes_at_all(world):
    w = world(world.pod("p"))
    w.cycle()
    assert w.message("p").startswith("0/0 nodes are available")


def test_a_pod_unschedulable_earlier_is_scheduled_once_room_appears(world):
    w = world(world.node("n1", cpu="1"), world.pod("p", "2"))
    assert w.cycle().unschedulable == 1
    w.add(world.node("n2"))
    assert w.cycle().scheduled == 1
    assert w.placed() == {"p": "n2"}


def test_message_counts_every_reason_of_a_node_and_sorts_like_kube_scheduler():
    msg = unschedulable_message(5, {
        "n1": ["Insufficient cpu", "Insufficient memory"],
        "n2": "Insufficient cpu",
        "n3": "node(s) were unschedulable",
        "n4": "node(s) were unschedulable",
        "n5": "node(s) had untolerated taint {gpu: true}",
    })
    assert msg == ("0/5 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint "
                   "{gpu: true}, 2 Insufficient cpu, 2 node(s) were unschedulable.")


def test_message_stays_short_when_nodes_fail_in_many_ways():
    rejected = {f"n{i}": f"reason {i}" for i in range(30)}
    rejected.update({f"m{i}": "common reason" for i in range(5)})
    msg = unschedulable_message(35, rejected)
    assert msg.startswith("0/35 nodes are available: ")
    assert "5 common reason" in msg
    assert "21 more reason(s) on 21 node(s)" in msg


# -- stale BindRequests ----------------------------------------------------------------------


def test_a_failed_bind_request_is_deleted_and_the_pod_scheduled_again(world):
    w = world(world.node("n1"), world.pod("p"))
    w.cycle()
    [first] = w.bind_requests()
    w.set_br_status(first, phase="Failed", reason="binding refused")
    w.cycle()
    [second] = w.bind_requests()
    assert second["metadata"]["name"] != first["metadata"]["name"]
    assert second["spec"]["selectedNode"] == "n1"


def test_a_failed_bind_request_with_retries_left_stays_and_keeps_its_resources(world):
    w = world(world.node("n1"), world.pod("p", "3"), config=SchedulerConfig(backoff_limit=3))
    w.cycle()
    [br] = w.bind_requests()
    assert br["spec"]["backoffLimit"] == 3
    w.set_br_status(br, phase="Failed", failedAttempts=1, reason="transient")
    w.add(world.pod("q", "3"))
    w.cycle()
    assert [b["metadata"]["name"] for b in w.bind_requests()] == [br["metadata"]["name"]]
    assert w.condition("q")["reason"] == "Unschedulable"  # the binder still retries "p" on n1

    w.set_br_status(br, phase="Failed", failedAttempts=3, reason="gave up")
    w.cycle()
    assert br["metadata"]["name"] not in {b["metadata"]["name"] for b in w.bind_requests()}
    assert set(w.placed()) == {"p"}  # "p" is older than "q" and goes first again


def test_a_bind_request_whose_node_is_gone_is_deleted_and_the_pod_rescheduled(world):
    w = world(world.node("n1"), world.node("n2"), world.pod("p"))
    w.cycle()
    [br] = w.bind_requests()
    gone = br["spec"]["selectedNode"]
    w.store.delete(RES_NODES, gone)
    w.cycle()
    [again] = w.bind_requests()
    assert again["spec"]["selectedNode"] != gone


def test_succeeded_bind_requests_stay(world):
    w = world(world.node("n1"), world.pod("p"))
    w.cycle()
    [br] = w.bind_requests()
    w.set_br_status(br, phase="Succeeded")
    w.store.bind("default", "p", "n1")
    w.cycle()
    assert [b["metadata"]["name"] for b in w.bind_requests()] == [br["metadata"]["name"]]


@pytest.mark.parametrize("gates", ["", "DynamicResourceAllocation=true"])
def test_cycle_result_counts(world, gates):
    w = world(world.node("n1", cpu="2"), world.pod("a"), world.pod("b"), world.pod("c"),
              config=SchedulerConfig(features=FeatureGates.parse(gates)))
    result = w.cycle()
    assert (result.scheduled, result.unschedulable, result.errors) == (2, 1, 0)
    assert result.seconds >= 0


def test_an_internal_error_on_one_pod_does_not_stop_the_others(world, monkeypatch, caplog):
    w = world(world.node("n1"), world.pod("a"), world.pod("b"))
    real = w.scheduler.decide

    def decide(pod, snap, **kwargs):
        if pod["metadata"]["name"] == "a":
            raise KeyError("boom")
        return real(pod, snap, **kwargs)

    monkeypatch.setattr(w.scheduler, "decide", decide)
    result = w.cycle()
    assert (result.scheduled, result.errors) == (1, 1)
    assert w.placed() == {"b": "n1"}
    assert w.message("a") == "internal scheduler error: KeyError: 'boom'"
    assert "internal error while scheduling" in caplog.text
