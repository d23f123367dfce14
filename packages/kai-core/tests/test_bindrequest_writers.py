"""BindRequests written by background threads while the cycle decides the next pods
(``SchedulerConfig.bind_request_writers``), as kube-scheduler binds in goroutines: the same
decisions and counts as writing them in the cycle, every write fenced right before it is sent."""

from __future__ import annotations

import threading
import time

import pytest

from kai_core.api.errors import ApiError
from kai_core.api.resources import RES_BIND_REQUESTS
from kai_core.scheduler.cycle import SchedulerConfig, WritesStopped

WRITERS = SchedulerConfig(bind_request_writers=4)


def slow_creates(w, seconds: float = 0.01) -> list[str]:
    """Every BindRequest create takes ``seconds`` (a round trip); returns the threads that wrote."""
    real = w.store.create
    threads: list[str] = []

    def create(obj):
        if obj.get("kind") == "BindRequest":
            threads.append(threading.current_thread().name)
            time.sleep(seconds)
        return real(obj)

    w.store.create = create
    return threads


def test_queued_writes_give_the_same_decisions_and_counts(world):
    w = world(world.node("n1", cpu="3"), world.node("n2", cpu="2"), *(world.pod(f"p{i}") for i in range(7)),
              config=WRITERS)
    threads = slow_creates(w)
    result = w.cycle()
    assert (result.scheduled, result.unschedulable, result.errors) == (5, 2, 0)
    placed = w.placed()
    assert sorted(placed.values()) == ["n1", "n1", "n1", "n2", "n2"]  # assumed at once: no node over
    assert all(name.startswith("kai-bindrequest-writer") for name in threads)
    assert len(set(threads)) > 1
    unplaced = sorted({f"p{i}" for i in range(7)} - set(placed))
    assert all(w.message(p) == "0/2 nodes are available: 2 Insufficient cpu." for p in unplaced)
    w.scheduler.close()


def test_a_queued_write_refused_is_an_error_and_the_pod_is_placed_next_cycle(world):
    w = world(world.node("n1", cpu="8"), world.pod("a"), world.pod("b"), config=WRITERS)
    real = w.store.create
    refused = []

    def create(obj):
        if obj.get("kind") == "BindRequest" and obj["spec"]["podName"] == "a" and not refused:
            refused.append(obj["metadata"]["name"])
            raise ApiError("admission webhook said no", code=400, reason="BadRequest")
        return real(obj)

    w.store.create = create
    first = w.cycle()
    assert (first.scheduled, first.errors) == (1, 1)
    assert set(w.placed()) == {"b"}
    assert w.scheduler.bind_requests.unconfirmed == {}
    again = w.cycle()
    assert again.scheduled == 1
    assert set(w.placed()) == {"a", "b"}
    w.scheduler.close()


def test_the_fence_is_checked_again_by_each_writer_and_stops_the_cycle(world):
    w = world(world.node("n1", cpu="64"), *(world.pod(f"p{i:02d}") for i in range(20)), config=WRITERS)
    slow_creates(w, 0.02)
    lock = threading.Lock()
    checks = []

    def may_write():
        with lock:
            checks.append(threading.current_thread().name)
            return "the leader Lease was not renewed within the renew deadline" if len(checks) > 12 else None

    w.scheduler.bind_requests.may_write = may_write
    with pytest.raises(WritesStopped, match="renew deadline"):
        w.cycle()
    written = len(w.store.list(RES_BIND_REQUESTS)[0])
    # the cycle checks before queuing and each writer again before writing: at most 12 checks
    # passed, and each write took two of them
    assert 1 <= written <= 6
    assert any(name.startswith("kai-bindrequest-writer") for name in checks)
    assert not w.scheduler.bind_requests._queued  # nothing left in flight after the cycle
    time.sleep(0.1)
    assert len(w.store.list(RES_BIND_REQUESTS)[0]) == written  # and nothing written later
    w.scheduler.close()


def test_one_writer_writes_in_the_cycle_in_order(world):
    w = world(world.node("n1", cpu="8"), *(world.pod(f"p{i}") for i in range(3)))
    threads = slow_creates(w, 0.0)
    result = w.cycle()
    assert result.scheduled == 3
    assert set(threads) == {threading.current_thread().name}
    assert w.scheduler.bind_requests._pool is None


def test_writers_must_be_a_positive_integer(world):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="writers must be a positive integer"):
            world(world.node("n1"), config=SchedulerConfig(bind_request_writers=bad))


def test_the_kubernetes_store_asks_its_write_guard_before_sending_each_write():
    pytest.importorskip("kubernetes")
    from kai_core.client.store import KubernetesStore
    from kai_core.testing import FakeApiServer

    with FakeApiServer() as server:
        store = KubernetesStore(server.client_configuration(), backoff_base=0.01, backoff_cap=0.05)
        try:
            closed = []

            def guard():
                if closed:
                    raise WritesStopped("the process is stopping")

            store.write_guard = guard
            cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "default"}}
            store.create(cm)
            closed.append(True)
            server.clear_requests()
            with pytest.raises(WritesStopped):
                store.create({**cm, "metadata": {"name": "b", "namespace": "default"}})
            assert store.get("configmaps", "a", "default")["metadata"]["name"] == "a"  # reads go on
            assert server.calls() == ["get configmaps"]  # the refused write was never sent
        finally:
            store.close()
