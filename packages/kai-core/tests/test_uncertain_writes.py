"""A BindRequest write whose reply is lost is assumed, not forgotten; every write is fenced.

The scheduler must never give a node's room (or a device) to a second pod because the reply to
the first pod's BindRequest was cut: the decision stays counted until the watch shows the request,
or a read long enough after the write finds it does not exist."""

from __future__ import annotations

import pytest

from kai_core.api.errors import ApiError, OutcomeUnknown
from kai_core.api.resources import RES_BIND_REQUESTS
from kai_core.scheduler.cycle import SchedulerConfig, WritesStopped


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lose_replies(w, *, store_it: bool, times: int = 1) -> list[str]:
    """Make the next ``times`` BindRequest creates lose their reply (storing the request first when
    ``store_it``); returns the names attempted."""
    real = w.store.create
    attempted: list[str] = []

    def create(obj):
        if obj.get("kind") == "BindRequest" and len(attempted) < times:
            attempted.append(obj["metadata"]["name"])
            if store_it:
                real(obj)
            raise OutcomeUnknown("create bindrequests: connection aborted after the request was sent")
        return real(obj)

    w.store.create = create
    return attempted


def one_slot_world(world, clock):
    w = world(world.node("n1", cpu="1"), world.pod("a"), world.pod("b"),
              config=SchedulerConfig(uncertain_write_grace=10.0))
    w.scheduler.clock = clock
    w.scheduler.bind_requests.clock = clock
    w.scheduler.backoff.clock = clock
    return w


def test_a_lost_reply_keeps_the_decision_until_the_watch_shows_it(world):
    clock = Clock()
    w = one_slot_world(world, clock)
    lose_replies(w, store_it=True)
    first = w.cycle()
    assert (first.scheduled, first.errors, first.unschedulable) == (0, 1, 1)
    again = w.cycle()  # the watch now shows the request: the room stays taken, nothing is written twice
    assert again.scheduled == 0
    assert list(w.placed()) == ["a"]
    assert w.scheduler.bind_requests.unconfirmed == {}
    assert w.message("b") == "0/1 nodes are available: 1 Insufficient cpu."


def test_a_request_that_was_not_written_counts_until_a_read_after_the_grace_says_so(world):
    clock = Clock()
    w = one_slot_world(world, clock)
    lose_replies(w, store_it=False)
    w.cycle()
    assert w.placed() == {}
    clock.now += 5  # within the grace: the server may still be working on it
    w.cycle()
    assert w.placed() == {}, "a pod was scheduled while the first decision's outcome was unknown"
    assert w.message("b") == "0/1 nodes are available: 1 Insufficient cpu."
    clock.now += 6  # past the grace: a read finds nothing, and the room is given out again
    result = w.cycle()
    assert result.scheduled == 1
    assert len(w.placed()) == 1


def test_a_5xx_on_create_is_an_unknown_outcome_but_a_4xx_is_not(world):
    clock = Clock()
    w = one_slot_world(world, clock)
    real = w.store.create
    calls = []

    def create(obj):
        if obj.get("kind") == "BindRequest" and not calls:
            calls.append(1)
            raise ApiError("admission webhook said no", code=400, reason="BadRequest")
        return real(obj)

    w.store.create = create
    result = w.cycle()  # a refused write is surely not written: b may take the room
    assert result.errors == 1 and result.scheduled == 1
    assert w.scheduler.bind_requests.unconfirmed == {}


def test_every_write_is_fenced_and_a_lost_lease_stops_the_cycle_at_once(world):
    answers = iter([None, "the leader Lease was not renewed within the renew deadline"])
    w = world(world.node("n1", cpu="8"), *(world.pod(f"p{i}") for i in range(5)))
    w.scheduler.bind_requests.may_write = lambda: next(answers)
    with pytest.raises(WritesStopped, match="renew deadline"):
        w.cycle()
    assert len(w.store.list(RES_BIND_REQUESTS)[0]) == 1


@pytest.mark.parametrize("applied", [True, False], ids=["delete applied", "delete not applied"])
def test_a_pod_whose_failed_request_may_still_exist_gets_no_new_one(world, applied):
    """The scheduler deletes a BindRequest that failed for good and schedules its pod again; when the
    delete's reply is lost, the old request may still exist, so the pod waits for a later cycle
    that finds it gone (404 or the watch) instead of getting a second live request at once."""
    clock = Clock()
    w = world(world.node("n1", cpu="1"), world.pod("a"), config=SchedulerConfig(uncertain_write_grace=10.0))
    for part in (w.scheduler, w.scheduler.bind_requests, w.scheduler.backoff):
        part.clock = clock
    assert w.cycle().scheduled == 1
    [br] = w.store.list(RES_BIND_REQUESTS)[0]
    br["status"] = {"phase": "Failed", "reason": "refused by a test"}
    w.store.update_status(br)
    real = w.store.delete
    lost: list[str] = []

    def delete(resource, name, namespace=None):
        if resource == RES_BIND_REQUESTS and not lost:
            lost.append(name)
            if applied:
                real(resource, name, namespace)
            raise OutcomeUnknown("delete bindrequests: connection reset after the request was sent")
        return real(resource, name, namespace)

    w.store.delete = delete
    w.cycle()
    assert lost == [br["metadata"]["name"]]
    for_a = [b for b in w.store.list(RES_BIND_REQUESTS)[0] if b["spec"]["podName"] == "a"]
    assert len(for_a) == (0 if applied else 1), "a second request was written while the first one's delete was unknown"
    assert ("default", "a") in w.scheduler.bind_requests.held
    for _ in range(5):  # the next cycles find the old request gone (or delete it) and schedule the pod again
        clock.now += 30
        w.cycle()
    live = [b for b in w.store.list(RES_BIND_REQUESTS)[0] if b["spec"]["podName"] == "a"]
    assert len(live) == 1 and live[0]["metadata"]["name"] != br["metadata"]["name"]
    assert w.scheduler.bind_requests.held == set()


def test_a_request_failing_while_others_are_cleaned_up_keeps_its_pod_waiting(world):
    """The binder fails b's request right while the scheduler deletes a's (failed earlier): the
    cache, brought up to date after that delete, shows b's failed request, which clean_up did not
    see. b waits for the next cycle's clean_up instead of getting a second request while its first
    still exists (the real control plane's cut-replies test saw exactly this)."""
    w = world(world.node("n1", cpu="1"), world.node("n2", cpu="1"), world.pod("a"), world.pod("b"))
    assert w.cycle().scheduled == 2
    by_pod = {b["spec"]["podName"]: b for b in w.store.list(RES_BIND_REQUESTS)[0]}
    w.set_br_status(by_pod["a"], phase="Failed", reason="refused by a test")
    real = w.store.delete

    def delete(resource, name, namespace=None):
        real(resource, name, namespace)
        if resource == RES_BIND_REQUESTS and name == by_pod["a"]["metadata"]["name"]:
            w.set_br_status(by_pod["b"], phase="Failed", reason="refused by a test, meanwhile")

    w.store.delete = delete
    w.cycle()
    for_b = [b for b in w.store.list(RES_BIND_REQUESTS)[0] if b["spec"]["podName"] == "b"]
    assert [b["metadata"]["name"] for b in for_b] == [by_pod["b"]["metadata"]["name"]]
    # nothing will change in the cache to wake the scheduler: it asks for the next cycle itself
    assert w.scheduler.next_due() is not None and w.scheduler.next_due() <= w.scheduler.clock()
    w.cycle()  # deletes b's failed request and writes its new one
    for_b = [b for b in w.store.list(RES_BIND_REQUESTS)[0] if b["spec"]["podName"] == "b"]
    assert len(for_b) == 1 and for_b[0]["metadata"]["name"] != by_pod["b"]["metadata"]["name"]


def test_a_request_deleted_but_still_cached_is_not_deleted_nor_counted_again(world):
    """The scheduler deleted a failed request, and a cycle runs again before the watch shows it gone
    (a cache that lags behind the scheduler's own delete): the request is neither deleted a second
    time (a 404 the API server counts as a refused write) nor counted as a second failed binding of
    its pod; once the cache no longer shows it, it is forgotten."""
    w = world(world.node("n1", cpu="1"), world.pod("a"))
    assert w.cycle().scheduled == 1
    [br] = w.store.list(RES_BIND_REQUESTS)[0]
    w.set_br_status(br, phase="Failed", reason="refused by a test")
    w.scheduler.cache.sync()
    bind_requests = w.scheduler.bind_requests
    cache = w.scheduler.cache
    lagging = dict(cache.objects[RES_BIND_REQUESTS])  # what the cache showed before the delete
    deletes: list[str] = []
    real = w.store.delete

    def delete(resource, name, namespace=None):
        deletes.append(name)
        return real(resource, name, namespace)

    w.store.delete = delete
    failures: list[str] = []
    assert bind_requests.clean_up(cache, failures.append)
    cache.objects[RES_BIND_REQUESTS] = lagging  # the watch has not brought the delete yet
    assert not bind_requests.clean_up(cache, failures.append)
    assert deletes == [br["metadata"]["name"]] and len(failures) == 1
    assert bind_requests.not_cleaned_up(lagging) == set()  # deleted: its pod may be scheduled again
    cache.objects[RES_BIND_REQUESTS] = {}
    bind_requests.clean_up(cache, failures.append)
    assert bind_requests.deleted == {}
