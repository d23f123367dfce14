"""kai's scheduler with KAI's binder's way of reporting failures: a BindRequest that failed for good
leads to the pod being scheduled again, with or without a ``backoffLimit``.

KAI's binder (``pkg/binder/controllers/bindrequest_controller.go``, ``UpdateStatus``) patches the
status only when the phase changes: its first failure writes ``phase: Failed``, ``failedAttempts:
1`` (with a ``backoffLimit``) and every later failure writes nothing. :func:`kai_binder_fails` does
exactly that to a request. Our own binder's retries up to the limit are in test_seed_failure.py."""

from __future__ import annotations

from kai_core.scheduler.bindrequests import STUCK_AFTER


def kai_binder_fails(r, br: dict, reason: str = "failed to bind pod: injected") -> dict:
    """One failed attempt as KAI's binder records it: the status is written only when the phase
    changes (to Failed), and ``failedAttempts`` is counted then while ``backoffLimit`` allows."""
    status = dict(br.get("status") or {})
    if status.get("phase") == "Failed":
        return br  # the phase does not change: KAI's binder writes nothing
    limit = br["spec"].get("backoffLimit")
    if limit is not None and limit > status.get("failedAttempts", 0):
        status["failedAttempts"] = status.get("failedAttempts", 0) + 1
    status.update(phase="Failed", reason=reason)
    return r.store.update_status({**br, "status": status})


def test_without_a_backoff_limit_one_failure_is_for_good_and_the_pod_is_scheduled_again(rig):
    r = rig(pods=[rig.pod("p")])
    r.schedule()
    first = r.the_br("p")
    assert "backoffLimit" not in first["spec"]
    kai_binder_fails(r, first)
    r.schedule()
    second = r.the_br("p")
    assert second["metadata"]["uid"] != first["metadata"]["uid"]  # deleted, and a new decision
    assert not second.get("status")


def test_with_a_backoff_limit_a_failure_kai_binder_stops_counting_is_for_good_after_a_while(rig):
    r = rig(pods=[rig.pod("p")], backoff_limit=3)
    r.schedule()
    first = r.the_br("p")
    assert first["spec"]["backoffLimit"] == 3
    first = kai_binder_fails(r, first)
    assert first["status"]["failedAttempts"] == 1
    r.schedule()
    # retries left: KAI's binder is retrying it; the scheduler waits, and says until when
    assert r.the_br("p")["metadata"]["uid"] == first["metadata"]["uid"]
    due = r.scheduler.next_due()
    assert due == r.clock.now() + STUCK_AFTER
    for _ in range(5):  # KAI's binder fails again and again: nothing is written
        r.clock.advance(STUCK_AFTER / 6)
        kai_binder_fails(r, r.the_br("p"))
        r.schedule()
        assert r.the_br("p")["metadata"]["uid"] == first["metadata"]["uid"]
    r.clock.advance_to(due)
    r.schedule()
    second = r.the_br("p")
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    assert not second.get("status")
    assert r.scheduler.next_due() is None


def test_a_failed_request_whose_attempts_are_still_counted_is_not_taken_for_stuck(rig):
    r = rig(pods=[rig.pod("p")], backoff_limit=5)
    r.schedule()
    br = r.the_br("p")
    uid = br["metadata"]["uid"]
    for attempts in range(1, 5):  # a binder that records each attempt (ours does), just in time
        status = {"phase": "Failed", "reason": "not yet", "failedAttempts": attempts}
        br = r.store.update_status({**br, "status": status})
        r.schedule()
        assert r.the_br("p")["metadata"]["uid"] == uid
        r.clock.advance(STUCK_AFTER - 1)
    r.schedule()
    assert r.the_br("p")["metadata"]["uid"] == uid
    # and with its attempts used up it is failed for good at once
    r.store.update_status({**br, "status": {**br["status"], "failedAttempts": 5}})
    r.schedule()
    assert r.the_br("p")["metadata"]["uid"] != uid



def test_a_pod_whose_backoff_ended_is_due_until_a_cycle_tried_it(rig):
    """A loop that looks at next_due() only now and then (every 50 ms against a cluster) must
    still see a backoff that ended in between: found on the real control plane, where such a pod
    stayed pending until something else changed."""
    r = rig(pods=[rig.pod("p")])
    for _ in range(2):
        r.schedule()
        kai_binder_fails(r, r.the_br("p"))
    r.schedule()  # deletes the second failed request; the pod backs off for a second
    assert r.brs("p") == []
    due = r.scheduler.next_due()
    assert due == r.clock.now() + 1.0
    r.clock.advance(5.0)  # the loop woke late: the wait is over, no cycle has run since
    assert r.scheduler.next_due() == due
    r.schedule()
    assert len(r.brs("p")) == 1  # scheduled again
    assert r.scheduler.next_due() is None
