"""The scheduler's half of safe binding: a pod that keeps failing to bind backs off so the others
get their turn, a decision whose write may have gone through is counted as taken, and the
resourceclaim controller only deallocates what upstream's does."""

from __future__ import annotations

from kai_binder.claims import FINALIZER
from kai_binder.testing import invariant_violations
from kai_core.framework.hookspecs import hookimpl


class Refuse:
    def __init__(self, *names: str) -> None:
        self.names = set(names)

    @hookimpl
    def kai_binder_pre_bind(self, pod):
        if pod["metadata"]["name"] in self.names:
            raise RuntimeError("this pod never binds")


def test_a_pod_that_never_binds_does_not_starve_the_others(rig):
    # one node with room for one of them; the urgent one goes first every time it is pending
    r = rig(pods=[rig.pod("urgent", cpu="6", priority=100), rig.pod("patient", cpu="6")])
    r.pm.register(Refuse("urgent"), name="refuse")
    placed = []
    for _ in range(6):
        result = r.schedule()
        placed += [b["spec"]["podName"] for b in r.brs() if not b.get("status")]
        r.bind()
        if r.node_of("patient"):
            break
        due = [t for t in (r.scheduler.next_due(), r.binder.next_due()) if t is not None]
        if due:
            r.clock.advance_to(min(due))
    assert r.node_of("patient") == "n1"
    assert placed[:2] == ["urgent", "urgent"]  # the first failure is retried at once, the second backs off
    assert result.backed_off == 1
    assert r.scheduler.next_due() is not None  # "urgent" will be tried again later
    assert not r.node_of("urgent")


def test_backoff_grows_and_is_capped(rig):
    r = rig(pods=[rig.pod("p")])
    r.pm.register(Refuse("p"), name="refuse")
    waits = []
    for _ in range(8):
        r.schedule()
        r.bind()
        r.schedule()  # deletes the failed request; the pod backs off from the second failure
        due = r.scheduler.next_due()
        waits.append(None if due is None else due - r.clock.now())
        if due is not None:
            r.clock.advance_to(due)
    assert waits[0] is None  # first failure: straight back
    assert waits[1:6] == [1.0, 2.0, 4.0, 8.0, 10.0]


def test_a_bind_request_that_may_have_been_written_is_counted_as_taken(rig):
    # the first BindRequest create goes through but the reply is lost: the device must not be
    # given to the second pod in the same cycle
    r = rig(devices=1, pods=[rig.pod("a", claims=1), rig.pod("b", claims=1)], faults={1: "timeout"})
    result = r.schedule()
    assert (result.scheduled, result.errors) == (0, 1)
    assert [b["spec"]["podName"] for b in r.brs()] == ["a"]
    r.settle()
    assert r.node_of("a") == "n1" and not r.node_of("b")
    assert invariant_violations(r.store) == []


def test_the_controller_leaves_a_free_claim_with_a_finalizer_alone(rig):
    # a binder between its finalizer write and its allocation write must not lose the finalizer
    r = rig(extra=rig.shared_claim("shared"))
    claim = r.claim("shared")
    claim["metadata"]["finalizers"] = [FINALIZER]
    r.store.update(claim)
    r.cluster.reconcile_controllers()
    assert r.claim("shared")["metadata"]["finalizers"] == [FINALIZER]


def test_the_controller_releases_a_deleted_pods_claims_like_upstream(rig):
    r = rig(extra=rig.shared_claim("shared"), pods=[rig.pod("p", shared=["shared"])])
    r.settle()
    assert r.claim("shared")["status"]["reservedFor"][0]["name"] == "p"
    r.store.delete("pods", "p", "default")
    r.cluster.reconcile_controllers()
    claim = r.claim("shared")
    assert not claim.get("status") and FINALIZER not in (claim["metadata"].get("finalizers") or [])
