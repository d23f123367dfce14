"""Every single fault at every write, one run each: a 409, a 500, a timeout the server never saw and
a timeout after the write went through, injected at write 1, 2, ... n of a DRA workload (template
claims, a claim shared by two pods, reporting on). After each round the cluster is consistent, and
once it settles every pod is bound with its claims reserved exactly once, and reported Bound at
most once (reporting is best effort) and never otherwise.

Also the 409 path of the claim writes with a real competitor: another writer changes the claim
between the binder's read and its write, and the binder's re-read sees what it must not overwrite."""

from __future__ import annotations

import pytest

from kai_binder.claims import FINALIZER, FINALIZER_OWNER_ANNOTATION, MAX_RESERVED_FOR, release_claim
from kai_binder.testing import invariant_violations
from kai_core.api.claims import claim_name_for
from kai_core.api.resources import RES_BIND_REQUESTS, RES_CLAIMS, RES_PODS

KINDS = ("conflict", "error", "lost", "timeout")
ROUNDS = 6


def workload(rig, faults: dict[int, str] | None = None):
    pods = [rig.pod("a", claims=2), rig.pod("b", shared=["shared"]), rig.pod("c", claims=1, shared=["shared"])]
    return rig(pods=pods, extra=rig.shared_claim("shared"), nodes=("n1", "n2"), devices=2, backoff_limit=3,
               faults=faults, report=True, check_node=True)


def run(r) -> None:
    """A few rounds with the fault armed, the invariants checked after each, then settle."""
    for rnd in range(ROUNDS):
        r.schedule()
        r.bind()
        assert invariant_violations(r.store) == [], f"after round {rnd}"
        due = [t for t in (r.scheduler.next_due(), r.binder.next_due()) if t is not None]
        r.clock.advance_to(min(due) if due else r.clock.now() + 1.0)
    r.settle()


def assert_all_bound_once(r) -> None:
    assert invariant_violations(r.store) == []
    pods = r.store.list(RES_PODS)[0]
    for pod in pods:
        name = pod["metadata"]["name"]
        assert pod["spec"].get("nodeName"), f"pod {name} is not bound"
        for rc in pod["spec"].get("resourceClaims") or []:
            claim = r.claim(claim_name_for(pod, rc["name"]))
            uids = [x["uid"] for x in claim["status"]["reservedFor"]]
            assert len(uids) == len(set(uids)), f"claim {claim['metadata']['name']} names a pod twice"
            assert pod["metadata"]["uid"] in uids
        # reporting is best effort (a refused Event is not retried), but never twice and never false
        assert len([e for e in r.events(name) if e["reason"] == "Bound"]) <= 1
        assert (r.condition(name) or {}).get("reason", "Bound") == "Bound"
    live = r.store.list(RES_BIND_REQUESTS)[0]
    assert sorted(b["spec"]["podName"] for b in live) == ["a", "b", "c"]
    assert all(b["status"]["phase"] == "Succeeded" for b in live)
    shared = r.claim("shared")
    assert sorted(x["name"] for x in shared["status"]["reservedFor"]) == ["b", "c"]


_CLEAN: dict[str, int] = {}


def writes_of_a_clean_run(rig) -> int:
    """How many writes the workload makes without faults (computed once per session)."""
    if "writes" not in _CLEAN:
        r = workload(rig)
        run(r)
        assert_all_bound_once(r)
        _CLEAN["writes"] = r.faulty.writes
    return _CLEAN["writes"]


@pytest.mark.parametrize("kind", KINDS)
def test_one_fault_at_any_write_ends_consistent_and_everything_bound(rig, kind):
    writes = writes_of_a_clean_run(rig)
    assert writes > 10
    for n in range(1, writes + 1):
        r = workload(rig, faults={n: kind})
        try:
            run(r)
            assert_all_bound_once(r)
        except AssertionError as exc:
            raise AssertionError(f"{kind} at write {n}: {exc}") from None


# -- a competitor between the binder's read and its write --------------------------------------------


def _race_on_claim_status(r, competitor) -> None:
    """Before the binder's first status write of claim "shared" reaches the store, ``competitor(claim)``
    writes the claim: the binder's write then carries a stale resourceVersion and gets a 409."""
    inner = r.faulty.inner
    real = inner.update_status
    fired = []

    def update_status(obj):
        if obj.get("kind") == "ResourceClaim" and obj["metadata"]["name"] == "shared" and not fired:
            fired.append(True)
            current = inner.get(RES_CLAIMS, "shared", "default")
            competitor(current)
            real(current)
        return real(obj)

    inner.update_status = update_status


def test_a_claim_allocated_differently_meanwhile_is_not_overwritten(rig):
    r = rig(pods=[rig.pod("p", shared=["shared"])], extra=rig.shared_claim("shared"), devices=2)
    r.schedule()
    theirs = {"devices": {"results": [
        {"request": "fpga", "driver": "fpga.example.com", "pool": "n1", "device": "fpga-1"}]}}
    mine = r.the_br()["spec"]["resourceClaimAllocations"][0]["allocation"]
    assert mine["devices"]["results"][0]["device"] == "fpga-0"

    def allocate_elsewhere(claim):
        claim["status"] = {"allocation": theirs, "reservedFor": [
            {"resource": "pods", "name": "other", "uid": "00000000-0000-4000-8000-000000000001"}]}

    _race_on_claim_status(r, allocate_elsewhere)
    result = r.bind()
    assert result.failed == 1
    assert result.reasons == ['ResourceClaim "default/shared" was meanwhile allocated to other devices']
    claim = r.claim("shared")
    assert claim["status"]["allocation"] == theirs  # the competitor's write stands
    assert [x["name"] for x in claim["status"]["reservedFor"]] == ["other"]
    assert FINALIZER in claim["metadata"]["finalizers"]  # an allocated claim keeps its protection
    assert not r.node_of("p")


def test_a_claim_filled_to_256_meanwhile_is_not_overwritten(rig):
    r = rig(pods=[rig.pod("p", shared=["shared"])], extra=rig.shared_claim("shared"))
    r.schedule()
    mine = r.the_br()["spec"]["resourceClaimAllocations"][0]["allocation"]
    crowd = [{"resource": "pods", "name": f"x{i}", "uid": f"00000000-0000-4000-8000-{i:012d}"}
             for i in range(MAX_RESERVED_FOR)]

    def fill(claim):
        claim["status"] = {"allocation": mine, "reservedFor": crowd}

    _race_on_claim_status(r, fill)
    result = r.bind()
    assert result.failed == 1
    assert result.reasons == [f'ResourceClaim "default/shared" is already reserved for {MAX_RESERVED_FOR} '
                              "consumers"]
    assert r.claim("shared")["status"]["reservedFor"] == crowd
    assert not r.node_of("p")


def test_a_consumer_added_meanwhile_is_kept_next_to_ours(rig):
    r = rig(pods=[rig.pod("p", shared=["shared"])], extra=rig.shared_claim("shared"))
    r.schedule()
    mine = r.the_br()["spec"]["resourceClaimAllocations"][0]["allocation"]
    other = {"resource": "pods", "name": "other", "uid": "00000000-0000-4000-8000-000000000001"}

    def join(claim):
        claim["status"] = {"allocation": mine, "reservedFor": [other]}

    _race_on_claim_status(r, join)
    assert r.bind().succeeded == 1
    uid = r.get_pod("p")["metadata"]["uid"]
    assert r.claim("shared")["status"]["reservedFor"] == [other, {"resource": "pods", "name": "p", "uid": uid}]


# -- the finalizer's note ---------------------------------------------------------------------------


def test_the_finalizer_note_goes_with_the_finalizer_whichever_pod_it_names(rig):
    r = rig(pods=[rig.pod("a", shared=["shared"]), rig.pod("b", shared=["shared"])],
            extra=rig.shared_claim("shared"))
    r.settle()
    claim = r.claim("shared")
    a_uid, b_uid = (r.get_pod(n)["metadata"]["uid"] for n in ("a", "b"))
    assert claim["metadata"]["annotations"] == {FINALIZER_OWNER_ANNOTATION: a_uid}  # a's binding added it
    # a stops using the claim, then b's binding is taken back: b was the last consumer
    claim["status"]["reservedFor"] = [x for x in claim["status"]["reservedFor"] if x["uid"] != a_uid]
    r.store.update_status(claim)
    assert release_claim(r.store, "default", "shared", b_uid) is True
    claim = r.claim("shared")
    assert not claim.get("status")
    assert not claim["metadata"].get("finalizers") and "annotations" not in claim["metadata"]


def test_a_note_left_behind_by_a_removed_finalizer_is_cleaned_up(rig):
    r = rig(pods=[rig.pod("a", shared=["shared"])], extra=rig.shared_claim("shared"))
    r.settle()
    uid = r.get_pod("a")["metadata"]["uid"]
    claim = r.claim("shared")
    claim["metadata"]["finalizers"] = []  # as the resourceclaim controller does when it deallocates
    claim = r.store.update(claim)
    claim["status"] = {}
    r.store.update_status(claim)
    assert release_claim(r.store, "default", "shared", uid) is True
    assert "annotations" not in r.claim("shared")["metadata"]
    assert release_claim(r.store, "default", "shared", uid) is False  # nothing left to do
