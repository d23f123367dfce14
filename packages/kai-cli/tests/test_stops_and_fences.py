"""The scheduler and the binder as processes, as a cluster runs them: a SIGTERM under load ends
them within seconds with the Lease released, and a leader paused past its Lease writes nothing
after it resumes (issue 12, parts 2 and 4). No pod ever has two live BindRequests."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from kai_core.api.resources import RES_BIND_REQUESTS, RES_PODS

LEASES = "leases.coordination.k8s.io"
#: how long a process may take to exit after SIGTERM (Kubernetes kills it after 30 s)
EXIT_WITHIN = 10.0


def node(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"n{i}"},
            "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i:04d}", "namespace": "default"},
            "spec": {"schedulerName": "kai-scheduler",
                     "containers": [{"name": "c", "image": "busybox:1", "resources": {"requests": {"cpu": "100m"}}}]}}


@pytest.fixture
def api(tmp_path):
    from kai_core.cluster import EmbeddedCluster
    from kai_core.plugins import build_plugin_manager
    from kai_core.testing import FakeApiServer

    cluster = EmbeddedCluster(build_plugin_manager(load_external=False))
    for i in range(20):
        cluster.store.create(node(i))
    server = FakeApiServer(cluster.store).start()
    server.kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    procs: list[subprocess.Popen] = []

    def start(which: str, *args: str) -> subprocess.Popen:
        cmd = [sys.executable, "-c", "from kai_cli.main import cli; cli()", "run", which,
               "--kubeconfig", str(server.kubeconfig), *args]
        log = open(tmp_path / f"{which}-{len(procs)}.log", "wb")  # noqa: SIM115 - the process owns it
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        p.log_path = tmp_path / f"{which}-{len(procs)}.log"
        procs.append(p)
        return p

    server.start_process = start
    server.cluster = cluster
    yield server
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    server.stop()


def wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def live_requests_per_pod(store) -> Counter:
    return Counter(b["spec"]["podName"] for b in store.list(RES_BIND_REQUESTS)[0])


def stop_within(p: subprocess.Popen, limit: float = EXIT_WITHIN) -> tuple[int, float]:
    sent = time.monotonic()
    p.send_signal(signal.SIGTERM)
    try:
        code = p.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{p.args[-3]} still running {limit:g}s after SIGTERM:\n{p.log_path.read_text()[-2000:]}")
    return code, time.monotonic() - sent


def test_sigterm_under_load_stops_both_within_seconds_and_releases_the_leases(api):
    store = api.cluster.store
    for i in range(600):  # at the default 50 requests/s: a cycle of about 12 s, a binder busy for longer
        store.create(pod(i))
    scheduler = api.start_process("scheduler", "--leader-elect")
    binder = api.start_process("binder", "--leader-elect")
    wait_for(lambda: len(store.list(RES_BIND_REQUESTS)[0]) >= 100, "the scheduler to be mid-cycle")
    wait_for(lambda: any(p["spec"].get("nodeName") for p in store.list(RES_PODS)[0]), "the binder to be busy")
    assert len(store.list(RES_BIND_REQUESTS)[0]) < 600, "the load was over before the SIGTERM"
    for p in (scheduler, binder):
        code, took = stop_within(p)
        assert code == 0, p.log_path.read_text()[-2000:]
    leases = {lease["metadata"]["name"]: lease["spec"] for lease in store.list(LEASES)[0]}
    assert set(leases) == {"kai-scheduler", "kai-binder"}
    assert all(not spec.get("holderIdentity") for spec in leases.values()), leases  # released
    assert max(live_requests_per_pod(store).values()) == 1
    # nothing half-done: every bound pod has its request, and every Succeeded request its pod bound
    pods = {p["metadata"]["name"]: p for p in store.list(RES_PODS)[0]}
    for br in store.list(RES_BIND_REQUESTS)[0]:
        if (br.get("status") or {}).get("phase") == "Succeeded":
            assert pods[br["spec"]["podName"]]["spec"]["nodeName"] == br["spec"]["selectedNode"]


def test_a_leader_paused_past_its_lease_writes_nothing_after_it_resumes(api):
    store = api.cluster.store
    for i in range(400):
        store.create(pod(i))
    fast = ("--leader-elect", "--leader-elect-lease-duration", "2", "--leader-elect-renew-deadline", "1.5",
            "--leader-elect-retry-period", "0.2")
    first = api.start_process("scheduler", *fast)
    wait_for(lambda: len(store.list(RES_BIND_REQUESTS)[0]) >= 40, "the first scheduler to be mid-cycle")
    second = api.start_process("scheduler", *fast)
    time.sleep(1.0)  # the second one is a standby now
    first.send_signal(signal.SIGSTOP)
    paused_at = len(store.list(RES_BIND_REQUESTS)[0])
    wait_for(lambda: len(store.list(RES_BIND_REQUESTS)[0]) > paused_at + 20, "the standby to take over")
    writes_before_resume = api.calls().count(f"create {RES_BIND_REQUESTS}")
    first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=EXIT_WITHIN) == 1, first.log_path.read_text()[-2000:]  # a lost Lease: exit 1
    wait_for(lambda: len(store.list(RES_BIND_REQUESTS)[0]) == 400, "every pod to have its BindRequest")
    assert max(live_requests_per_pod(store).values()) == 1
    creates = api.calls().count(f"create {RES_BIND_REQUESTS}")
    assert creates == 400, f"{creates - 400} BindRequest(s) written twice (writes before the resume: " \
                           f"{writes_before_resume})"
    code, _ = stop_within(second)
    assert code == 0
    assert "leader Lease" in first.log_path.read_text()


def test_a_clock_jump_past_the_renew_deadline_fences_the_next_write():
    """A suspended VM wakes with its clock far ahead: the Lease may have passed to another, so the
    leader writes nothing until it has renewed."""
    from kai_core.client.leaderelection import LeaderElector
    from kai_core.cluster import EmbeddedCluster
    from kai_core.plugins import build_plugin_manager
    from kai_core.scheduler.cycle import Scheduler, WritesStopped

    class Clock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    store = EmbeddedCluster(build_plugin_manager(load_external=False)).store
    for i in range(2):
        store.create(node(i))
    for i in range(3):
        store.create(pod(i))
    elector = LeaderElector(store, "kai-scheduler", "default", "me", lease_duration=15, renew_deadline=10,
                            retry_period=2, clock=clock).start()
    try:
        wait_for(lambda: elector.is_leader, "the Lease")  # acquired; the next renewal is 2 s away
        scheduler = Scheduler(store, build_plugin_manager(load_external=False),
                              may_write=lambda: None if elector.is_leader else "the Lease is not held")
        clock.now += 30  # the jump: 30 s since the last renewal, past the 10 s renew deadline
        with pytest.raises(WritesStopped):
            scheduler.run_cycle()
        assert store.list(RES_BIND_REQUESTS)[0] == []
        wait_for(lambda: elector.is_leader, "a renewal")  # nobody took it meanwhile: writing resumes
        assert scheduler.run_cycle().scheduled == 3
    finally:
        elector.stop()
