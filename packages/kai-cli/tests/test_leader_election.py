"""Leader election on a coordination.k8s.io/v1 Lease (kai_core.client.leaderelection): on the embedded
store and through the fake API server, with the CLI's exit code on a lost Lease."""

from __future__ import annotations

import threading
import time

import pytest

from kai_core.api.errors import Conflict
from kai_core.apiserver.store import EmbeddedStore
from kai_core.client.leaderelection import RES_LEASES, LeaderElector, check_timings, micro_time

WAIT = 30.0
FAST = {"lease_duration": 1, "renew_deadline": 0.5, "retry_period": 0.05}


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lease(store, name="kai-binder", ns="default") -> dict:
    return store.get(RES_LEASES, name, ns)["spec"]


@pytest.fixture
def electors():
    made: list[LeaderElector] = []

    def make(store, identity, **kw) -> LeaderElector:
        kw = {**FAST, **kw}
        e = LeaderElector(store, kw.pop("name", "kai-binder"), kw.pop("namespace", "default"), identity, **kw)
        made.append(e)
        return e

    yield make
    for e in made:
        e.stop(release=False)


def test_first_candidate_creates_the_lease_and_others_wait(electors):
    store = EmbeddedStore()
    clock = FakeClock()
    a = electors(store, "a", clock=clock)
    b = electors(store, "b", clock=clock)
    assert a.try_acquire_or_renew()
    spec = lease(store)
    assert spec["holderIdentity"] == "a" and spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] == spec["renewTime"] and spec["renewTime"].endswith("Z")
    assert not b.try_acquire_or_renew() and b.observed_holder == "a"
    clock.now += 0.9  # b saw the record 0.9 s ago: not expired yet
    assert not b.try_acquire_or_renew()
    assert a.try_acquire_or_renew()  # a renews: the record changes...
    clock.now += 0.5
    assert not b.try_acquire_or_renew()  # ...and b, seeing the change, starts counting again
    clock.now += 0.9
    assert not b.try_acquire_or_renew()
    clock.now += 0.2  # 1.1 s since b saw the last renewal: expired
    assert b.try_acquire_or_renew()
    spec = lease(store)
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    assert not a.try_acquire_or_renew() and a.observed_holder == "b"


def test_expiry_is_judged_on_the_candidates_own_clock_not_the_lease_timestamps():
    store = EmbeddedStore()
    old = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": "kai-binder", "namespace": "default"},
           "spec": {"holderIdentity": "gone", "leaseDurationSeconds": 15,
                    "renewTime": "2001-01-01T00:00:00.000000Z", "acquireTime": "2001-01-01T00:00:00.000000Z",
                    "leaseTransitions": 4}}
    store.create(old)
    clock = FakeClock()
    b = LeaderElector(store, "kai-binder", "default", "b", clock=clock)
    assert not b.try_acquire_or_renew()  # a renewTime from 2001 proves nothing: other clocks differ
    clock.now += 15.5
    assert b.try_acquire_or_renew()
    assert lease(store)["leaseTransitions"] == 5 and lease(store)["leaseDurationSeconds"] == 15


def test_a_renewal_whose_reply_comes_late_counts_from_when_it_was_sent():
    """The process is paused (SIGSTOP) right after its renewal reached the API server, for longer
    than the Lease: on resuming, the reply says the renewal succeeded, but the Lease expired
    meanwhile (a standby may hold it now). The candidate must not count itself as leader from that
    reply: its writes stay fenced until a renewal sent after the pause succeeds."""
    store = EmbeddedStore()
    clock = FakeClock()
    a = LeaderElector(store, "kai-binder", "default", "a", clock=clock, lease_duration=4, renew_deadline=3,
                      retry_period=1)
    assert a.try_acquire_or_renew()
    a.leading.set()
    assert a.is_leader
    real = store.update

    def paused_after_sending(obj):
        out = real(obj)
        clock.now += 12  # the reply is read 12 s later
        return out

    store.update = paused_after_sending
    assert a.try_acquire_or_renew()
    assert not a.is_leader
    store.update = real
    assert a.try_acquire_or_renew() and a.is_leader  # a renewal sent now counts again


def test_racing_candidates_one_wins_by_resource_version(electors):
    store = EmbeddedStore()
    store.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                  "metadata": {"name": "kai-binder", "namespace": "default"},
                  "spec": {"holderIdentity": "gone", "leaseDurationSeconds": 1}})
    clock = FakeClock()
    a, b = electors(store, "a", clock=clock), electors(store, "b", clock=clock)
    assert not a.try_acquire_or_renew() and not b.try_acquire_or_renew()  # both see "gone" holding it
    clock.now += 2  # expired for both
    stale = store.get(RES_LEASES, "kai-binder", "default")
    assert a.try_acquire_or_renew()

    class ReadsBeforeAWrote:
        """b read the Lease just before a wrote it: its update carries the older resourceVersion."""

        def get(self, *args):
            return stale

        def update(self, obj):
            return store.update(obj)

    b.store = ReadsBeforeAWrote()
    assert not b.try_acquire_or_renew()  # 409 Conflict: b does not lead
    assert lease(store)["holderIdentity"] == "a" and lease(store)["leaseTransitions"] == 1
    with pytest.raises(Conflict):
        store.update({**stale, "spec": {**stale["spec"], "holderIdentity": "b"}})


def test_run_acquires_renews_and_releases_so_a_standby_takes_over_at_once(electors):
    store = EmbeddedStore()
    started = threading.Event()
    a = electors(store, "a", on_started_leading=started.set, lease_duration=30, renew_deadline=10,
                 retry_period=0.05)
    b = electors(store, "b", lease_duration=30, renew_deadline=10, retry_period=0.05)
    a.start()
    wait_for(started.is_set, "a to lead")
    assert a.is_leader
    renewed = lease(store)["renewTime"]
    wait_for(lambda: lease(store)["renewTime"] != renewed, "a to renew")
    b.start()
    wait_for(lambda: b.observed_holder == "a", "b to see a")
    a.stop()  # clean stop: released, so b need not wait out the 30 s lease
    assert not a.lost.is_set() and not a.is_leader
    wait_for(b.leading.is_set, "b to take over")
    spec = lease(store)
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    assert spec["leaseDurationSeconds"] == 30


def test_leadership_is_lost_when_someone_else_holds_the_lease(electors):
    store = EmbeddedStore()
    lost = threading.Event()
    a = electors(store, "a", on_stopped_leading=lost.set).start()
    wait_for(lambda: a.is_leader, "a to lead")
    current = store.get(RES_LEASES, "kai-binder", "default")
    current["spec"].update(holderIdentity="intruder", renewTime=micro_time(), leaseDurationSeconds=60)
    store.update(current)
    wait_for(lost.is_set, "a to notice")
    assert a.lost.is_set() and not a.is_leader
    assert lease(store)["holderIdentity"] == "intruder"  # a lost leader writes nothing more


def test_leadership_is_lost_when_renewals_fail_past_the_deadline(electors):
    pytest.importorskip("kubernetes", reason="the kubernetes client is not installed")
    from kai_core.client.store import KubernetesStore
    from kai_core.testing import FakeApiServer

    with FakeApiServer() as server:
        store = KubernetesStore(server.client_configuration(), max_retries=0)
        try:
            lost = threading.Event()
            a = electors(store, "a", on_stopped_leading=lost.set).start()
            wait_for(lambda: a.is_leader, "a to lead over HTTP")
            first = lease(server.store)
            assert first["holderIdentity"] == "a"
            wait_for(lambda: lease(server.store)["renewTime"] != first["renewTime"], "a to renew over HTTP")
            server.fail_next(10_000, 503, resource=RES_LEASES)  # the API server stops answering
            wait_for(lost.is_set, "a to give up after the renew deadline")
            assert not a.is_leader
            calls = [c for c in server.calls() if "leases" in c]
            assert "create leases.coordination.k8s.io" in calls
            assert "update leases.coordination.k8s.io" in calls
        finally:
            server.clear_faults()
            store.close()


def test_stop_without_release_leaves_the_lease_to_expire(electors):
    store = EmbeddedStore()
    a = electors(store, "a").start()
    wait_for(lambda: a.is_leader, "a to lead")
    a.stop(release=False)  # as a crashed process would
    assert lease(store)["holderIdentity"] == "a"
    b = electors(store, "b").start()
    wait_for(b.leading.is_set, "b to take over once the lease expired")
    assert lease(store)["holderIdentity"] == "b"


@pytest.mark.parametrize(
    "timings,fragment",
    [
        ((10, 10, 2), "longer than the renew deadline"),
        ((15, 2, 2), "1.2 x the retry period"),
        ((15, 10, 0), "must be positive"),
        ((1.5, 1, 0.2), "whole seconds"),
    ],
)
def test_bad_timings_are_refused_with_the_values(timings, fragment):
    with pytest.raises(ValueError, match=fragment):
        check_timings(*timings)
    with pytest.raises(ValueError, match=fragment):
        LeaderElector(EmbeddedStore(), "l", "default", "me", lease_duration=timings[0],
                      renew_deadline=timings[1], retry_period=timings[2])


def test_cli_exits_1_with_one_line_when_its_lease_is_lost(live_cluster, tmp_path):
    import subprocess
    import sys

    lc = live_cluster()
    p = subprocess.Popen(
        [sys.executable, "-m", "kai_cli.main", "run", "binder", "--kubeconfig", str(lc.kubeconfig),
         "--leader-elect", "--leader-elect-lease-duration", "2", "--leader-elect-renew-deadline", "1",
         "--leader-elect-retry-period", "0.1", "--leader-elect-identity", "me"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lc.wait_for(lambda: lease(lc.store)["holderIdentity"] == "me", "the binder process to lead")
        current = lc.store.get(RES_LEASES, "kai-binder", "default")
        current["spec"].update(holderIdentity="intruder", renewTime=micro_time(), leaseDurationSeconds=60)
        lc.store.update(current)
        out, err = p.communicate(timeout=WAIT)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    assert p.returncode == 1, (out, err)
    errors = [ln for ln in err.splitlines() if ln.startswith("kai-cli: error:")]
    assert len(errors) == 1 and "lost the leader Lease default/kai-binder" in errors[0], err
    assert "Traceback" not in err
    assert lease(lc.store)["holderIdentity"] == "intruder"
