"""A binder killed after any single write, then started afresh on the same cluster, finishes the job:
the same end state as a run that was never interrupted, nothing leaked, no write done twice."""

from __future__ import annotations

import pytest

from kai_binder.binder import RECOMMENDED_OPTIONS
from kai_binder.claims import FINALIZER
from kai_binder.testing import Crash, invariant_violations
from kai_core.api.resources import RES_CLAIMS

_VOLATILE_MD = ("resourceVersion", "creationTimestamp", "generation", "managedFields")
_VOLATILE = ("lastTransitionTime", "lastProbeTime", "firstTimestamp", "lastTimestamp")


def _scrub(obj):
    if isinstance(obj, dict):
        return {k: _scrub(v) for k, v in obj.items() if k not in _VOLATILE}
    if isinstance(obj, list):
        return [_scrub(v) for v in obj]
    return obj


def state(store) -> list[dict]:
    """Every object, without what differs between two runs of the same writes (versions, times,
    and the uids the API gives new Events)."""
    out = []
    for obj in store.all_objects():
        obj = _scrub(obj)
        md = obj["metadata"]
        for f in _VOLATILE_MD:
            md.pop(f, None)
        if obj.get("kind") == "Event":
            md.pop("uid", None)
        out.append(obj)
    return out


def finish(r, rounds: int = 20) -> None:
    """Run the (restarted) binder until it has nothing left to do, skipping backoff waits."""
    for _ in range(rounds):
        r.bind()
        due = r.binder.next_due()
        if due is None:
            return
        r.clock.advance_to(due)
    raise AssertionError("the binder did not finish")


def seeded(rig, pods, **kw) -> list[dict]:
    """The cluster right after scheduling: BindRequests written, nothing bound yet."""
    r = rig(pods=pods, extra=rig.shared_claim("shared"), **kw)
    assert r.schedule().scheduled == len(pods)
    return r.store.all_objects()


def crash_sweep(rig, seed: list[dict], *, refuse_binds: bool = False, **options) -> int:
    """Crash after write 1, 2, ... n of an uninterrupted run; each time restart and finish.
    Returns n."""
    clean = rig(seed=seed, **options)
    clean.faulty.refuse_binds = refuse_binds
    finish(clean)
    want, want_log = state(clean.store), list(clean.faulty.log)
    assert want_log, "the uninterrupted run wrote nothing"
    for n in range(1, len(want_log) + 1):
        r = rig(seed=seed, **options)
        r.faulty.refuse_binds = refuse_binds
        r.faulty.crash_after = n
        with pytest.raises(Crash):
            finish(r)
        r.faulty.crash_after = None
        r.new_binder()  # a new process: nothing remembered
        finish(r)
        got = state(r.store)
        assert got == want, f"crash after write {n} {want_log[n - 1]}: a different end state"
        assert invariant_violations(r.store) == [], f"crash after write {n}"
        if not refuse_binds:
            # nothing written twice, nothing missing: the restart picks up exactly where it died
            assert r.faulty.log == want_log, f"crash after write {n} {want_log[n - 1]}"
    return len(want_log)


def test_plain_bind_with_reporting(rig):
    seed = seeded(rig, [rig.pod("p")])
    n = crash_sweep(rig, seed, report=True)
    assert n == 4  # bind, PodBound condition, Event, status


def test_dra_bind_with_two_claims(rig):
    seed = seeded(rig, [rig.pod("p", claims=2)])
    n = crash_sweep(rig, seed, **RECOMMENDED_OPTIONS)
    assert n == 8  # 2 x (finalizer, status), bind, condition, Event, status


def test_dra_bind_with_two_claims_lean(rig):
    seed = seeded(rig, [rig.pod("p", claims=2)])
    assert crash_sweep(rig, seed) == 6


def test_several_pods_and_a_shared_claim(rig):
    pods = [rig.pod("a", claims=1), rig.pod("b", shared=["shared"]), rig.pod("c", shared=["shared"]),
            rig.pod("d")]
    seed = seeded(rig, pods, nodes=("n1",), devices=3)
    n = crash_sweep(rig, seed, report=True)
    assert n == 4 * 4 + 2 + 1 + 2  # 4 x (bind, condition, Event, status), a: 2, b: 2, c: 1


def test_a_failing_bind_rolls_back_whatever_the_crash(rig):
    """Crashes in the middle of the rollback: the restarted binder tries again, fails again and
    rolls back completely; the request ends Failed with the reason, reported once."""
    seed = seeded(rig, [rig.pod("p", claims=2, shared=["shared"])], devices=3)
    n = crash_sweep(rig, seed, refuse_binds=True, report=True)
    assert n == 6 + 6 + 3  # 3 claims written, 3 rolled back (2 writes each), condition, Event, status
    r = rig(seed=seed, report=True)
    r.faulty.refuse_binds = True
    finish(r)
    for claim in r.store.list(RES_CLAIMS)[0]:
        assert not claim.get("status") and FINALIZER not in (claim["metadata"].get("finalizers") or [])
    [br] = r.brs()
    assert br["status"]["phase"] == "Failed" and "refused by the test" in br["status"]["reason"]
    assert [e["reason"] for e in r.events("p")] == ["BindingError"]
