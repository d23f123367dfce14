"""The binder carries out BindRequests: claim finalizer + allocation + reservation, pods/binding,
status; failures roll back what the pod's binding left, retries follow backoffLimit, and the pod is
told the truth."""

from __future__ import annotations

import copy
import threading
import time

import pytest

from kai_binder.binder import RECOMMENDED_OPTIONS, Binder, event_name
from kai_binder.claims import FINALIZER, FINALIZER_OWNER_ANNOTATION, MAX_RESERVED_FOR
from kai_binder.testing import CountingStore, invariant_violations
from kai_binder.verify import get_fresh, read_pod
from kai_core.api.errors import ApiError, Conflict, NotFound
from kai_core.api.resources import RES_BIND_REQUESTS, RES_CLAIMS, RES_NODES, RES_PODS
from kai_core.framework.hookspecs import hookimpl


def shared_rig(rig, *names, **kw):
    return rig(extra=rig.shared_claim("shared"), pods=[rig.pod(n, shared=["shared"]) for n in names], **kw)


# -- the happy path --------------------------------------------------------------------------------


def test_binds_pod_and_writes_claim(rig):
    r = shared_rig(rig, "p1")
    assert r.schedule().scheduled == 1
    assert r.bind().succeeded == 1
    p = r.get_pod("p1")
    claim = r.claim("shared")
    assert p["spec"]["nodeName"] == "n1"
    assert claim["metadata"]["finalizers"] == [FINALIZER]
    assert claim["metadata"]["annotations"] == {FINALIZER_OWNER_ANNOTATION: p["metadata"]["uid"]}
    assert claim["status"]["reservedFor"] == [{"resource": "pods", "name": "p1", "uid": p["metadata"]["uid"]}]
    assert claim["status"]["allocation"] == r.the_br()["spec"]["resourceClaimAllocations"][0]["allocation"]
    assert r.the_br()["status"] == {"phase": "Succeeded"}
    assert invariant_violations(r.store) == []


def test_reconcile_is_idempotent(rig):
    r = shared_rig(rig, "p1")
    r.schedule()
    r.bind()
    rv = r.store.resource_version
    assert r.binder.reconcile(r.the_br()) == ("Succeeded", "")
    assert r.bind().succeeded == 0
    assert r.store.resource_version == rv  # nothing written


def test_pod_already_bound_to_the_node_is_success_without_claim_writes(rig):
    r = shared_rig(rig, "p1")
    r.schedule()
    r.store.bind("default", "p1", "n1")
    assert r.binder.reconcile(r.the_br()) == ("Succeeded", "")
    assert "allocation" not in (r.claim("shared").get("status") or {})


def test_shared_claim_second_pod_only_reserves(rig):
    r = shared_rig(rig, "p1")
    r.schedule()
    r.bind()
    r.add(rig.pod("p2", shared=["shared"]))
    r.schedule()
    writes = len(r.faulty.log)
    r.bind()
    claim = r.claim("shared")
    assert [x["name"] for x in claim["status"]["reservedFor"]] == ["p1", "p2"]
    assert len(claim["status"]["allocation"]["devices"]["results"]) == 1
    assert r.node_of("p2") == "n1"
    # one status write on the claim (no finalizer write: it is there), the bind, the status
    assert [w[:2] for w in r.faulty.log[writes:]] == [
        ("update_status", "ResourceClaim"), ("bind", "Pod"), ("update_status", "BindRequest")]


def test_two_claims_each_get_finalizer_then_status(rig):
    r = rig(pods=[rig.pod("p", claims=2)])
    r.schedule()
    assert r.bind().succeeded == 1
    assert [w[:2] for w in r.faulty.log[-6:]] == [
        ("update", "ResourceClaim"), ("update_status", "ResourceClaim"),
        ("update", "ResourceClaim"), ("update_status", "ResourceClaim"),
        ("bind", "Pod"), ("update_status", "BindRequest")]
    devices = {c["status"]["allocation"]["devices"]["results"][0]["device"] for c in r.claims_of("p")}
    assert devices == {"fpga-0", "fpga-1"}


# -- claims that cannot be written -----------------------------------------------------------------


def test_claim_allocated_elsewhere_fails_and_leaves_theirs_untouched(rig):
    r = shared_rig(rig, "p1")
    r.schedule()
    claim = r.claim("shared")
    claim["status"] = {"allocation": {"devices": {"results": [
        {"request": "fpga", "driver": "fpga.example.com", "pool": "n1", "device": "fpga-1"}]}}}
    r.store.update_status(claim)
    result = r.bind()
    # the check before any write sees it (the claim write would refuse it too: test_fault_sweep)
    assert result.failed == 1 and "already allocated to other devices" in result.reasons[0]
    br = r.the_br()
    assert br["status"]["phase"] == "Failed" and "claim default/shared" in br["status"]["reason"]
    claim = r.claim("shared")
    assert claim["status"]["allocation"]["devices"]["results"][0]["device"] == "fpga-1"  # theirs
    assert "reservedFor" not in claim["status"]
    assert FINALIZER not in (claim["metadata"].get("finalizers") or [])
    assert not r.node_of("p1")


def test_claim_reserved_by_256_consumers_fails_the_attempt(rig):
    r = shared_rig(rig, "p1")
    r.schedule()
    alloc = r.the_br()["spec"]["resourceClaimAllocations"][0]["allocation"]
    claim = r.claim("shared")
    claim["status"] = {"allocation": alloc, "reservedFor": [
        {"resource": "pods", "name": f"x{i}", "uid": f"uid-{i}"} for i in range(MAX_RESERVED_FOR)]}
    r.store.update_status(claim)
    result = r.bind()
    assert result.failed == 1 and f"already reserved for {MAX_RESERVED_FOR} consumers" in result.reasons[0]
    assert len(r.claim("shared")["status"]["reservedFor"]) == MAX_RESERVED_FOR  # untouched


def test_claim_status_conflict_is_retried_after_a_fresh_read(rig):
    r = shared_rig(rig, "p1", faults={3: "conflict"})  # write 1 is the BindRequest, 2 the finalizer
    r.schedule()
    assert r.bind().succeeded == 1
    assert r.claim("shared")["status"]["reservedFor"][0]["name"] == "p1"


def test_dra_gate_off_in_the_binder_fails_with_how_to_turn_it_on(rig):
    r = shared_rig(rig, "p1")
    r.schedule()
    from kai_core.api.features import FeatureGates

    b = Binder(r.faulty, r.pm, FeatureGates(), qps=0)
    result = b.run_once()
    assert result.failed == 1 and "--feature-gates=DynamicResourceAllocation=true" in result.reasons[0]


# -- failures, rollback, retries -------------------------------------------------------------------


def test_bind_failure_rolls_back_everything_then_the_pod_is_rescheduled_and_bound(rig):
    r = rig(pods=[rig.pod("p", claims=2)])
    r.schedule()
    r.faulty.refuse_binds = True
    result = r.bind()
    assert result.failed == 1 and "refused by the test" in result.reasons[0]
    assert "Conflict (409)" in r.the_br()["status"]["reason"]  # the API's own reason
    for claim in r.claims_of("p"):
        assert not (claim.get("status") or {}).get("allocation")
        assert not (claim.get("status") or {}).get("reservedFor")
        assert FINALIZER not in (claim["metadata"].get("finalizers") or [])
        assert FINALIZER_OWNER_ANNOTATION not in (claim["metadata"].get("annotations") or {})
    assert invariant_violations(r.store) == []
    # the scheduler deletes the failed request and schedules the pod again at once (first failure)
    r.faulty.refuse_binds = False
    failed = r.the_br()["metadata"]["name"]
    assert r.schedule().scheduled == 1
    assert r.the_br()["metadata"]["name"] != failed
    r.bind()
    assert r.the_br()["status"]["phase"] == "Succeeded" and r.node_of("p") == "n1"


def test_retries_count_failed_attempts_with_growing_delays_up_to_backoff_limit(rig):
    r = rig(pods=[rig.pod("p", claims=1)], backoff_limit=3)
    r.schedule()
    assert r.the_br()["spec"]["backoffLimit"] == 3
    r.faulty.refuse_binds = True
    t0 = r.clock.now()
    assert r.bind().failed == 1
    assert r.the_br()["status"]["failedAttempts"] == 1
    assert r.binder.next_due() == t0 + 1.0
    assert r.bind().failed == 0  # not due yet: nothing tried
    r.clock.advance(1.0)
    assert r.bind().failed == 1
    assert r.the_br()["status"]["failedAttempts"] == 2
    assert r.binder.next_due() == r.clock.now() + 2.0
    r.schedule()
    assert len(r.brs()) == 1  # retries left: the scheduler keeps it
    r.clock.advance(2.0)
    assert r.bind().failed == 1
    br = r.the_br()
    assert br["status"]["failedAttempts"] == 3 and br["status"]["phase"] == "Failed"
    assert r.binder.next_due() is None  # no retries left
    r.clock.advance(60)
    assert r.bind().failed == 0
    # the scheduler deletes it and schedules the pod again; the binding now works
    r.faulty.refuse_binds = False
    r.schedule()
    assert r.the_br()["metadata"]["name"] != br["metadata"]["name"]
    assert r.bind().succeeded == 1


def test_delays_are_capped_by_max_delay(rig):
    r = rig(pods=[rig.pod("p")], backoff_limit=10, base_delay=1.0, max_delay=3.0)
    r.schedule()
    r.faulty.refuse_binds = True
    waits = []
    for _ in range(5):
        r.bind()
        waits.append(r.binder.next_due() - r.clock.now())
        r.clock.advance_to(r.binder.next_due())
    assert waits == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_a_server_error_fails_the_attempt_with_the_api_reason(rig):
    r = shared_rig(rig, "p1", faults={3: "error"})  # the claim's status write
    r.schedule()
    result = r.bind()
    assert result.failed == 1
    assert "InternalError (500)" in result.reasons[0]
    assert 'ResourceClaim "default/shared"' in result.reasons[0]
    claim = r.claim("shared")
    assert FINALIZER not in (claim["metadata"].get("finalizers") or [])  # the finalizer this bind added went
    assert invariant_violations(r.store) == []


def test_a_bind_that_timed_out_but_went_through_is_a_success(rig):
    r = shared_rig(rig, "p1", faults={4: "timeout"})  # BR, finalizer, claim status, then the bind
    r.schedule()
    result = r.bind()
    assert result.succeeded == 1 and result.failed == 0
    assert r.node_of("p1") == "n1" and r.claim("shared")["status"]["reservedFor"][0]["name"] == "p1"


def test_an_unknown_bind_outcome_is_left_for_later_without_rollback_or_count(rig, monkeypatch):
    r = shared_rig(rig, "p1", faults={4: "lost"}, backoff_limit=3)
    r.schedule()
    real_get = r.faulty.inner.get
    calls = {"n": 0}

    def get(resource, name, namespace=None):
        if resource == RES_PODS:
            calls["n"] += 1
            if calls["n"] == 2:  # reading the pod back after the failed bind
                raise ApiError("the server is unavailable", code=503, reason="ServiceUnavailable")
        return real_get(resource, name, namespace)

    monkeypatch.setattr(r.faulty.inner, "get", get)
    result = r.bind()
    assert (result.succeeded, result.failed, result.deferred) == (0, 0, 1)
    assert not (r.the_br().get("status") or {}).get("phase")  # nothing known, nothing written
    assert r.claim("shared")["status"]["reservedFor"][0]["name"] == "p1"  # kept: it may be bound
    assert r.binder.next_due() == r.clock.now() + 1.0
    r.clock.advance(1.0)
    assert r.bind().succeeded == 1 and r.node_of("p1") == "n1"


def test_a_rollback_the_api_does_not_let_finish_is_tried_again(rig):
    # BR, finalizer, claim status; bind refused; then the rollback's status write fails (5xx)
    r = shared_rig(rig, "p1", faults={5: "error"})
    r.schedule()
    r.faulty.refuse_binds = True
    result = r.bind()
    assert result.deferred == 1 and result.failed == 0
    assert not (r.the_br().get("status") or {}).get("phase")  # not Failed while claims are held
    r.clock.advance_to(r.binder.next_due())
    result = r.bind()
    assert result.failed == 1
    assert invariant_violations(r.store) == []
    assert FINALIZER not in (r.claim("shared")["metadata"].get("finalizers") or [])


def test_missing_pod_fails_request(rig):
    r = shared_rig(rig, "p1")
    r.schedule()
    br = r.the_br()
    r.store.delete(RES_PODS, "p1", "default")  # garbage-collects the request too (ownerReference)
    assert r.brs() == []
    assert r.binder.reconcile(br)[0] == "Failed"


def test_pod_deleted_mid_bind_leaves_no_reservation(rig):
    r = rig(extra=rig.shared_claim("shared"), pods=[rig.pod("p", claims=1, shared=["shared"])])
    r.schedule()

    class DeleteThePod:
        @hookimpl
        def kai_binder_pre_bind(self, pod, store):
            store.delete(RES_PODS, pod["metadata"]["name"], pod["metadata"]["namespace"])

    claims = [c["metadata"]["name"] for c in r.claims_of("p")]
    r.pm.register(DeleteThePod(), name="delete-the-pod")
    result = r.bind()
    assert result.failed == 1
    # released at once, before any controller ran: the pod's own claim is gone with it (its
    # finalizer removed), the shared one is free again
    assert [c["metadata"]["name"] for c in r.store.list(RES_CLAIMS)[0]] == ["shared"]
    claim = r.claim("shared")
    assert not claim.get("status") and not claim["metadata"].get("finalizers")
    assert claims[1] == "shared"


def test_bad_bind_request_fails_with_a_clear_reason(rig):
    r = rig(pods=[rig.pod("p")])
    r.schedule()
    br = r.the_br()
    br["spec"]["selectedNode"] = ""
    assert r.binder.reconcile(br) == (
        "Failed", f'BindRequest "default/{br["metadata"]["name"]}": spec.selectedNode must be a non-empty '
        "string, got ''")


@pytest.mark.parametrize("kwargs, message", [
    ({"workers": 0}, "workers must be a positive integer"),
    ({"qps": -1}, "qps must be a number >= 0"),
    ({"qps": 5, "burst": 0}, "burst must be a positive integer"),
    ({"base_delay": 0}, "base_delay must be a positive number"),
    ({"base_delay": 5, "max_delay": 1}, "max_delay must be at least base_delay"),
])
def test_bad_options_are_refused_by_name(rig, kwargs, message):
    r = rig()
    with pytest.raises(ValueError, match=message):
        Binder(r.store, r.pm, **kwargs)


# -- node gone --------------------------------------------------------------------------------------


def test_node_gone_with_claims_held_is_failed_by_the_binder_then_removed_and_rescheduled(rig):
    r = rig(nodes=("n1", "n2"), pods=[rig.pod("p", claims=1)], check_node=True)
    r.schedule()
    first = r.the_br()
    node = first["spec"]["selectedNode"]
    # an earlier binder reserved the claim and died before binding
    claim = r.claims_of("p")[0]
    claim["metadata"]["finalizers"] = [FINALIZER]
    claim["metadata"]["annotations"] = {FINALIZER_OWNER_ANNOTATION: r.get_pod("p")["metadata"]["uid"]}
    claim = r.store.update(claim)
    uid = r.get_pod("p")["metadata"]["uid"]
    claim["status"] = {"allocation": first["spec"]["resourceClaimAllocations"][0]["allocation"],
                       "reservedFor": [{"resource": "pods", "name": "p", "uid": uid}]}
    r.store.update_status(claim)
    r.store.delete(RES_NODES, node)
    r.schedule()
    assert r.the_br()["metadata"]["name"] == first["metadata"]["name"]  # left to the binder
    result = r.bind()
    assert result.failed == 1 and result.reasons == [f'node "{node}" not found']
    claim = r.claims_of("p")[0]
    assert not claim.get("status") and FINALIZER not in (claim["metadata"].get("finalizers") or [])
    r.schedule()
    again = r.the_br()
    assert again["spec"]["selectedNode"] != node
    assert r.bind().succeeded == 1
    assert invariant_violations(r.store) == []


def test_node_gone_without_claims_held_is_removed_by_the_scheduler_at_once(rig):
    r = rig(nodes=("n1", "n2"), pods=[rig.pod("p")])
    r.schedule()
    gone = r.the_br()["spec"]["selectedNode"]
    r.store.delete(RES_NODES, gone)
    r.schedule()
    assert r.the_br()["spec"]["selectedNode"] != gone


# -- truthful reporting -------------------------------------------------------------------------------


def test_report_says_bound_only_after_the_bind(rig):
    r = rig(pods=[rig.pod("p", claims=1)], backoff_limit=2, report=True)
    r.schedule()
    r.faulty.refuse_binds = True
    r.bind()
    cond = r.condition("p")
    assert (cond["status"], cond["reason"]) == ("False", "BindingError")
    assert cond["message"].startswith(
        "Failed to bind pod default/p to node n1: binding pod default/p to node n1: ")
    assert "refused by the test" in cond["message"]
    [ev] = r.events("p")
    assert (ev["type"], ev["reason"]) == ("Warning", "BindingError") and ev["message"] == cond["message"]
    assert not r.get_pod("p")["spec"].get("nodeName")

    r.faulty.refuse_binds = False
    r.clock.advance_to(r.binder.next_due())
    assert r.bind().succeeded == 1
    cond = r.condition("p")
    assert (cond["status"], cond["reason"]) == ("True", "Bound")
    assert cond["message"] == "Pod bound successfully to node n1"
    reported = sorted((e["type"], e["reason"]) for e in r.events("p"))
    assert reported == [("Normal", "Bound"), ("Warning", "BindingError")]


def test_every_failed_attempt_is_reported_once(rig):
    r = rig(pods=[rig.pod("p")], backoff_limit=3, report=True)
    r.schedule()
    r.faulty.refuse_binds = True
    for _ in range(3):
        r.bind()
        if r.binder.next_due():
            r.clock.advance_to(r.binder.next_due())
    br = r.the_br()
    names = sorted(e["metadata"]["name"] for e in r.events("p"))
    assert names == sorted(event_name("p", br, f"failed-{n}") for n in (1, 2, 3))
    assert all(e["reason"] == "BindingError" for e in r.events("p"))


def test_recommended_options_bind_the_seed_like_pod_and_report(rig):
    r = rig(pods=[rig.pod("p", claims=1)], **RECOMMENDED_OPTIONS)
    r.schedule()
    assert r.bind().succeeded == 1
    assert r.condition("p")["reason"] == "Bound"
    # claims, bind, condition, event, and the status last
    assert [w[:2] for w in r.faulty.log[-6:]] == [
        ("update", "ResourceClaim"), ("update_status", "ResourceClaim"), ("bind", "Pod"),
        ("patch", "pods"), ("create", "Event"), ("update_status", "BindRequest")]


def test_pod_bound_is_one_strategic_patch_without_reading_the_pod_again(rig):
    """KAI's way: the condition is a strategic merge patch of pods/status (conditions merge by
    type), so the binder neither reads the pod again nor retries on 409. A DRA pod costs (on a
    store without watch caches): the pod, node and claim read, the claim's two writes, the binding,
    the condition, the Event, the BindRequest's status. The BindRequests are not listed by an API
    call: the embedded store's own objects are read (only the due ones are copied)."""
    r = rig(pods=[rig.pod("p", claims=1)], **RECOMMENDED_OPTIONS)
    counting = CountingStore(r.faulty.inner)
    r.faulty.inner = counting
    r.schedule()
    uid = r.get_pod("p")["metadata"]["uid"]
    counting.calls.clear()
    assert r.bind().succeeded == 1
    assert counting.calls == [
        ("get", RES_PODS, ""), ("get", RES_NODES, ""), ("get", RES_CLAIMS, ""),
        ("update", "ResourceClaim", ""), ("update", "ResourceClaim", "status"), ("create", "Pod", "binding"),
        ("patch", RES_PODS, "status"), ("create", "Event", ""), ("update", "BindRequest", "status")]
    [(patch, strategic)] = counting.patches
    assert strategic
    [cond] = patch["status"]["conditions"]
    assert patch == {"metadata": {"uid": uid}, "status": {"conditions": [cond]}}
    assert cond["lastProbeTime"] is None and cond["lastTransitionTime"]
    assert {k: cond[k] for k in ("type", "status", "reason", "message")} == {
        "type": "PodBound", "status": "True", "reason": "Bound", "message": "Pod bound successfully to node n1"}
    conditions = r.get_pod("p")["status"]["conditions"]
    assert {c["type"] for c in conditions} == {"PodScheduled", "PodBound"}  # the binding's condition kept


def test_pod_bound_keeps_its_transition_time_and_is_not_written_again(rig):
    r = rig(pods=[rig.pod("p")], backoff_limit=3, report=True)
    counting = CountingStore(r.faulty.inner)
    r.faulty.inner = counting
    r.schedule()
    r.faulty.refuse_binds = True
    r.bind()
    first = r.condition("p")
    assert (first["status"], first["reason"]) == ("False", "BindingError")
    # the same failure again: the pod read at the start shows the condition already, no write
    counting.patches.clear()
    r.clock.advance_to(r.binder.next_due())
    r.bind()
    assert counting.patches == [] and r.condition("p") == first
    assert len(r.events("p")) == 2  # every failed attempt still has its Event
    # the same status with another message keeps its lastTransitionTime
    pod = r.get_pod("p")
    cond = {**{k: first[k] for k in ("type", "status", "reason")}, "message": "another failure"}
    assert r.binder._set_pod_condition(pod, "default", "p", cond) == pod["metadata"]["uid"]
    first.pop("lastProbeTime")  # a null in a strategic merge patch removes the field (the API shows null)
    assert {k: v for k, v in r.condition("p").items() if k != "lastProbeTime"} == {
        **first, "message": "another failure"}
    # a new status is a transition; the condition of the pod held is what counts, no read
    old = {**first, "lastTransitionTime": "2020-01-01T00:00:00Z"}
    pod["status"]["conditions"] = [c if c["type"] != "PodBound" else old for c in pod["status"]["conditions"]]
    r.binder._set_pod_condition(pod, "default", "p", {**cond, "status": "True"})
    assert r.condition("p")["status"] == "True"
    assert r.condition("p")["lastTransitionTime"] != "2020-01-01T00:00:00Z"
    counting.calls.clear()
    r.binder._set_pod_condition(pod, "default", "p", {**cond, "message": "same status"})
    assert r.condition("p")["lastTransitionTime"] == "2020-01-01T00:00:00Z"  # kept from the pod held
    assert counting.calls == [("patch", RES_PODS, "status")]


def test_pod_bound_is_not_written_on_a_new_pod_of_the_same_name(rig):
    r = rig(pods=[rig.pod("p")], report=True)
    old = r.get_pod("p")
    r.store.delete(RES_PODS, "p", "default")
    r.add(rig.pod("p"))
    cond = {"type": "PodBound", "status": "True", "reason": "Bound", "message": "m"}
    assert r.binder._set_pod_condition(old, "default", "p", cond) is None
    assert r.condition("p") is None


# -- plugins -------------------------------------------------------------------------------------------


class Recorder:
    def __init__(self, name: str, calls: list, fail_pre_bind: bool = False, fail_post_bind: bool = False):
        self.name, self.calls = name, calls
        self.fail_pre_bind, self.fail_post_bind = fail_pre_bind, fail_post_bind

    @hookimpl
    def kai_binder_pre_bind(self, pod, node_name):
        self.calls.append((self.name, "pre_bind", pod["metadata"]["name"], node_name))
        if self.fail_pre_bind:
            raise RuntimeError("no room on the switch")

    @hookimpl
    def kai_binder_post_bind(self, pod):
        self.calls.append((self.name, "post_bind", pod["metadata"]["name"]))
        if self.fail_post_bind:
            raise RuntimeError("post-bind broke")

    @hookimpl
    def kai_binder_rollback(self, pod):
        self.calls.append((self.name, "rollback", pod["metadata"]["name"]))


def test_a_failing_pre_bind_plugin_fails_the_attempt_by_name_and_everything_rolls_back(rig):
    r = rig(pods=[rig.pod("p", claims=1)])
    r.schedule()
    calls: list = []
    r.pm.register(Recorder("a", calls), name="a")
    r.pm.register(Recorder("b", calls, fail_pre_bind=True), name="b")
    result = r.bind()
    assert result.failed == 1
    [reason] = result.reasons
    assert reason == "plugin 'b' failed in kai_binder_pre_bind: RuntimeError: no room on the switch"
    # pluggy calls the later registered first; the first error stops pre-bind; rollback is the reverse
    assert calls == [("b", "pre_bind", "p", "n1"), ("a", "rollback", "p"), ("b", "rollback", "p")]
    claim = r.claims_of("p")[0]
    assert not (claim.get("status") or {}).get("reservedFor")  # the DRA step rolled back last
    assert not r.node_of("p")


def test_a_failing_post_bind_plugin_does_not_undo_the_bind(rig, caplog):
    r = rig(pods=[rig.pod("p")])
    r.schedule()
    calls: list = []
    r.pm.register(Recorder("a", calls, fail_post_bind=True), name="a")
    assert r.bind().succeeded == 1
    assert r.node_of("p") == "n1" and ("a", "post_bind", "p") in calls
    assert "plugin 'a' failed in kai_binder_post_bind: RuntimeError: post-bind broke" in caplog.text


def test_the_dra_step_is_a_builtin_plugin_that_runs_first(rig):
    r = rig(pods=[rig.pod("p", claims=1)])
    r.schedule()
    seen = []

    class Looker:
        @hookimpl(tryfirst=True)
        def kai_binder_pre_bind(self, pod, store):
            name = pod["status"]["resourceClaimStatuses"][0]["resourceClaimName"]
            claim = store.get(RES_CLAIMS, name, "default")
            seen.append(bool((claim.get("status") or {}).get("reservedFor")))

    r.pm.register(Looker(), name="looker")
    r.bind()
    assert seen == [True]  # even a tryfirst plugin sees the claims already written
    names = {i.name for i in r.pm.info()}
    assert "kai-binder.dra-claims" in names


# -- concurrency and rate limit ------------------------------------------------------------------------


def test_a_pool_of_workers_binds_every_pod_once(rig):
    pods = [rig.pod(f"p{i}", claims=1) for i in range(8)]
    r = rig(nodes=("n1", "n2", "n3", "n4"), pods=pods, workers=4)
    assert r.schedule().scheduled == 8
    result = r.bind()
    r.binder.close()
    assert (result.succeeded, result.failed, result.deferred) == (8, 0, 0)
    binds = [w for w in r.faulty.log if w[0] == "bind"]
    assert sorted(w[3] for w in binds) == sorted(f"p{i}" for i in range(8))
    assert invariant_violations(r.store) == []


def test_one_attempt_per_pod_at_a_time(rig):
    r = rig(pods=[rig.pod("p")])
    r.schedule()
    br = r.the_br()
    # a second request for the same pod (as a stale one left over would be)
    twin = {k: v for k, v in br.items() if k != "status"}
    twin["metadata"] = {k: br["metadata"][k] for k in ("namespace", "labels", "ownerReferences")}
    twin["metadata"]["name"] = "p-twin"
    r.store.create(twin)
    result = r.bind()
    # one of them this round: refused, since the pod has another live request
    assert (result.succeeded, result.failed) == (0, 1)
    assert "has another live BindRequest" in result.reasons[0]
    assert r.binder.next_due() == r.clock.now()  # the other is due at once
    assert r.bind().succeeded == 1  # the first one is Failed now: the other one binds the pod
    assert [w[0] for w in r.faulty.log].count("bind") == 1


def test_every_api_call_takes_a_token(rig):
    pods = [rig.pod(f"p{i}") for i in range(4)]
    r = rig(pods=pods, qps=2.0, burst=3)
    r.schedule()
    assert r.bind().succeeded == 4
    limiter = r.binder.limiter
    # per pod: get pod, bind, status = 12 calls (the BindRequests are the embedded store's own
    # objects, read without an API call); 3 from the burst, 9 waited for at 2/s
    assert limiter.acquired == 12 and limiter.waited == 9
    assert limiter.waited_seconds == pytest.approx(4.5)


def test_bind_requests_in_a_final_phase_are_left_alone(rig):
    r = rig(pods=[rig.pod("p")])
    r.schedule()
    br = r.the_br()
    br["status"] = {"phase": "Failed", "reason": "given up"}
    r.store.update_status(br)
    assert r.bind().failed == 0
    assert r.store.get(RES_BIND_REQUESTS, br["metadata"]["name"], "default")["status"]["reason"] == "given up"


def test_a_conflicting_status_write_is_done_on_a_fresh_read(rig):
    r = rig(pods=[rig.pod("p")], faults={3: "conflict"})  # BR, bind, then the status
    r.schedule()
    assert r.bind().succeeded == 1
    assert r.the_br()["status"] == {"phase": "Succeeded"}


def test_internal_errors_on_one_request_do_not_stop_the_others(rig, monkeypatch, caplog):
    r = rig(pods=[rig.pod("a"), rig.pod("b")])
    r.schedule()
    real = Binder._attempt

    def attempt(self, br):
        if br["spec"]["podName"] == "a":
            raise KeyError("boom")
        return real(self, br)

    monkeypatch.setattr(Binder, "_attempt", attempt)
    result = r.bind()
    assert (result.succeeded, result.deferred) == (1, 1)
    assert r.node_of("b") == "n1" and "internal binder error" in caplog.text


def test_conflict_on_bind_with_pod_bound_elsewhere_is_refused_without_rollback(rig, monkeypatch):
    r = shared_rig(rig, "p1")
    r.schedule()
    real_bind = r.faulty.inner.bind

    def bind_elsewhere(namespace, pod_name, node_name, pod_uid=None, *, annotations=None):
        real_bind(namespace, pod_name, "n1-other", pod_uid, annotations=annotations)
        raise Conflict(f'pod {pod_name} is already assigned to node "n1-other"')

    monkeypatch.setattr(r.faulty.inner, "bind", bind_elsewhere)
    result = r.bind()
    assert result.failed == 1 and "the pod is bound to node n1-other" in result.reasons[0]
    assert r.claim("shared")["status"]["reservedFor"][0]["name"] == "p1"  # whoever bound it may need it


# -- pods read from a watch cache --------------------------------------------------------------------


class LaggingPodCache:
    """A store that answers pod reads from a copy of the pods taken at :meth:`freeze`, as a
    Kubernetes store reading pods from its watch cache (``cached_reads``) may lag the server;
    ``fresh`` reads, and everything else, go to the store."""

    cached_reads = frozenset({RES_PODS})

    def __init__(self, inner) -> None:
        self.inner = inner
        self.snapshot: dict[tuple[str, str], dict] = {}
        self.reads: list[tuple[str, str]] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def freeze(self) -> None:
        self.snapshot = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in self.inner.list(RES_PODS)[0]}

    def get(self, resource, name, namespace=None, *, fresh=False):
        if resource != RES_PODS:
            return self.inner.get(resource, name, namespace)
        self.reads.append((name, "fresh" if fresh else "cache"))
        if fresh:
            return self.inner.get(resource, name, namespace)
        pod = self.snapshot.get((namespace or "default", name))
        if pod is None:
            raise NotFound(f'pods "{name}" not found')
        return copy.deepcopy(pod)


def test_a_pod_read_from_a_lagging_cache_is_read_again_before_any_refusal(rig):
    """KAI's binder reads pods from its informer; ours too when the store keeps them, but a copy
    that would fail or refuse the request (not there yet, being deleted, ...) is read again from
    the server first, and so is the pod after a binding refused with 409."""
    r = rig(nodes=("n1",), devices=2, pods=[rig.pod("p1"), rig.pod("p2"), rig.pod("p3")], report=True)
    lagging = LaggingPodCache(r.faulty)
    lagging.freeze()
    r.add(rig.pod("p4"))  # not in the cache yet
    lagging.snapshot[("default", "p2")] = {**lagging.snapshot[("default", "p2")]}
    lagging.snapshot[("default", "p2")]["metadata"] = {
        **lagging.snapshot[("default", "p2")]["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}
    r.schedule()
    r.store.bind("default", "p3", "n1")  # bound behind the cache's back: the binding will get 409
    r.faulty = lagging
    r.new_binder()
    result = r.bind()
    assert (result.succeeded, result.failed) == (4, 0), result.reasons
    assert all(r.node_of(p) == "n1" for p in ("p1", "p2", "p3", "p4"))
    assert sorted(lagging.reads) == [
        ("p1", "cache"),  # fine as cached: one read, no request
        ("p2", "cache"), ("p2", "fresh"),  # "being deleted" only in the cache
        ("p3", "cache"), ("p3", "fresh"),  # the binding's 409, read back from the server
        ("p4", "cache"), ("p4", "fresh")]  # not in the cache yet



def test_read_pod_asks_the_server_only_about_doubtful_copies(rig):
    """What the attempt and the checks (another BindRequest's pod) read pods with."""
    r = rig(pods=[rig.pod("p1")])
    lagging = LaggingPodCache(r.store)
    lagging.freeze()
    r.add(rig.pod("p2"))
    assert read_pod(lagging, "default", "p1", lambda p: p is None)["metadata"]["name"] == "p1"
    assert read_pod(lagging, "default", "p2", lambda p: p is None)["metadata"]["name"] == "p2"
    with pytest.raises(NotFound):
        read_pod(lagging, "default", "p3", lambda p: p is None)
    assert lagging.reads == [("p1", "cache"), ("p2", "cache"), ("p2", "fresh"), ("p3", "cache"), ("p3", "fresh")]
    assert get_fresh(lagging, RES_PODS, "p1", "default")["metadata"]["name"] == "p1"
    assert lagging.reads[-1] == ("p1", "fresh")
    # a store without a watch cache is read once, whatever the answer (and never asked for fresh=)
    with pytest.raises(NotFound):
        read_pod(r.store, "default", "p3", lambda p: True)
# -- dispatch: the long-running binder's work queue ------------------------------------------------------


class Gate:
    """A pre-bind hook that holds the attempts of the pods named in ``held`` until ``release``."""

    def __init__(self, held: set[str]) -> None:
        self.held = held
        self.open = threading.Event()
        self.waiting = threading.Event()

    @hookimpl
    def kai_binder_pre_bind(self, pod):
        if pod["metadata"]["name"] in self.held:
            self.waiting.set()
            assert self.open.wait(10), "the gate was never opened"


def wait_until(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_dispatch_does_not_wait_for_the_slowest_attempt(rig):
    gate = Gate({"slow"})
    r = rig(pods=[rig.pod("slow")], workers=2)
    r.pm.register(gate, name="gate")
    r.schedule()
    assert r.binder.dispatch() == 1  # returns at once, the attempt held in the hook
    assert gate.waiting.wait(10)
    # a pod scheduled while that attempt is still under way is bound by the other worker
    r.add(rig.pod("fast"))
    r.schedule()
    assert r.binder.dispatch() == 1
    wait_until(lambda: r.node_of("fast") == "n1")
    assert r.node_of("slow") is None and r.binder.in_progress() == 1
    assert r.binder.dispatch() == 0  # the held pod is not queued a second time
    gate.open.set()
    wait_until(lambda: r.binder.in_progress() == 0)
    r.binder.close()
    assert r.node_of("slow") == "n1"
    assert [b["status"]["phase"] for b in r.brs()] == ["Succeeded", "Succeeded"]
    assert [w[0] for w in r.faulty.log].count("bind") == 2
    assert invariant_violations(r.store) == []


def test_dispatch_skips_a_request_carried_out_while_it_waited_in_the_queue(rig):
    gate = Gate({"a"})
    r = rig(pods=[rig.pod("a"), rig.pod("b")], workers=1)
    r.pm.register(gate, name="gate")
    r.schedule()
    assert r.binder.dispatch() == 2  # one worker: "b" waits behind "a" in the queue
    assert gate.waiting.wait(10)
    [b_br] = [b for b in r.brs() if b["spec"]["podName"] == "b"]
    r.store.delete(RES_BIND_REQUESTS, b_br["metadata"]["name"], "default")
    gate.open.set()
    wait_until(lambda: r.binder.in_progress() == 0)
    r.binder.close()
    assert r.node_of("a") == "n1" and r.node_of("b") is None  # its request went: nothing done for it
    assert [w[3] for w in r.faulty.log if w[0] == "bind"] == ["a"]


def test_dispatch_raises_what_stopped_a_worker(rig):
    class Stop(BaseException):
        pass

    r = rig(pods=[rig.pod("p")], workers=2)
    r.schedule()

    def stopped(br):
        raise Stop()

    r.binder.reconcile = stopped
    assert r.binder.dispatch() == 1
    wait_until(lambda: r.binder.in_progress() == 0)
    with pytest.raises(Stop):
        r.binder.dispatch()
    r.binder.close()


def test_dispatch_binds_many_pods_once_each_on_a_pool(rig):
    pods = [rig.pod(f"p{i}", claims=1) for i in range(8)]
    r = rig(nodes=("n1", "n2", "n3", "n4"), pods=pods, workers=4)
    assert r.schedule().scheduled == 8
    assert r.binder.dispatch() == 8
    wait_until(lambda: r.binder.in_progress() == 0)
    assert r.binder.dispatch() == 0  # every request is Succeeded now
    r.binder.close()
    binds = [w for w in r.faulty.log if w[0] == "bind"]
    assert sorted(w[3] for w in binds) == sorted(f"p{i}" for i in range(8))
    assert invariant_violations(r.store) == []
