"""The robust binder as kai-cli runs it: recommended options everywhere (parallel workers, the pods'
PodBound condition and Events, the node check), no second rate limit behind the API client's, no
BindRequest backoffLimit unless ``--backoff-limit`` sets one (KAI's scheduler never does), and
``--until-idle`` runs that wait out
retries on a simulated clock: a binding refused a few times ends Failed with the reason, the pod
is scheduled again and bound, and the run still ends at once, without sleeping."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections import Counter

import pytest
import yaml
from click.testing import CliRunner

from kai_cli.main import cli
from kai_core.api.resources import RES_BIND_REQUESTS, RES_EVENTS, RES_PODS
from kai_core.framework.hookspecs import hookimpl

CLUSTER = """
apiVersion: v1
kind: Node
metadata: {name: n1}
status:
  allocatable: {cpu: "4", memory: 8Gi, pods: "10"}
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Pod
metadata: {name: p1}
spec:
  schedulerName: kai-scheduler
  containers: [{name: c, image: busybox:1, resources: {requests: {cpu: "1"}}}]
"""
#: the --backoff-limit of the tests that retry a BindRequest
LIMIT = 3
SUMMARY = re.compile(r"pods bound: (\d+), pending: (\d+), unschedulable: (\d+), [\d.]+s, [\d.]+ pods/s "
                     r"\((\d+) rounds\)")


class RefusingDevice:
    """A binder plugin whose pre-bind refuses the first ``refusals`` attempts (all of them with
    None): the device it prepares is "not ready yet"."""

    def __init__(self, refusals: int | None) -> None:
        self.refusals = refusals
        self.attempts = 0
        self._lock = threading.Lock()  # the binder's workers call hooks concurrently

    @hookimpl
    def kai_binder_pre_bind(self, pod):
        with self._lock:
            self.attempts += 1
            n = self.attempts
        if self.refusals is None or n <= self.refusals:
            raise RuntimeError(f"device for {pod['metadata']['name']} not ready (attempt {n})")


@pytest.fixture
def cluster_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CLUSTER)
    return path


@pytest.fixture
def no_real_sleep(monkeypatch):
    """Any real sleep fails the test: waits must be skipped on the simulated clock."""
    import time

    def refuse(seconds):
        raise AssertionError(f"slept {seconds}s in real time")

    monkeypatch.setattr(time, "sleep", refuse)


@pytest.fixture
def with_plugin(monkeypatch):
    """Register ``plugin`` in the plugin manager of every kai-cli command run in-process."""
    import kai_cli.main as main

    def install(plugin, name: str = "refusing-device") -> None:
        build = main._plugin_manager

        def plugin_manager():
            pm = build()
            pm.register(plugin, name=name)
            return pm

        monkeypatch.setattr(main, "_plugin_manager", plugin_manager)

    return install


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def summary_numbers(output: str) -> tuple[int, int, int, int]:
    m = SUMMARY.search(output)
    assert m, output
    return tuple(int(g) for g in m.groups())


# -- the runner ----------------------------------------------------------------------------------


def test_refused_bindings_fail_with_the_reason_then_the_pod_is_rescheduled_and_bound(scenario, cluster_file,
                                                                                     no_real_sleep):
    # 3 attempts per BindRequest: the first two requests fail for good, the third binds
    device = RefusingDevice(2 * LIMIT)
    sc = scenario(cluster_file, gates="", backoff_limit=LIMIT,
                  plugins={"refusing-device": device})
    seen: dict[str, dict] = {}  # BindRequest uid -> its last status, round after round

    def watch(_round: int) -> None:
        for br in sc.list(RES_BIND_REQUESTS):
            seen[br["metadata"]["uid"]] = dict(br.get("status") or {})

    summary = sc.run(max_rounds=60, on_round=watch)
    assert (summary.bound, summary.pending, summary.unschedulable) == (1, 0, 0)
    assert summary.rounds < 60 and not summary.gave_up  # it ended by itself
    assert summary.skipped > 0 and sc.clock.now() == summary.skipped  # the retry waits were simulated
    assert device.attempts == 2 * LIMIT + 1

    # each refused request ended Failed with the plugin's reason, all its attempts used
    failed = [st for st in seen.values() if st.get("phase") == "Failed"]
    assert len(failed) == 2 and len(seen) == 3
    for st in failed:
        assert st["failedAttempts"] == LIMIT
        assert "plugin 'refusing-device' failed in kai_binder_pre_bind" in st["reason"]
        assert "device for p1 not ready" in st["reason"]
    # the scheduler deleted them and decided again; the last one was carried out
    [br] = sc.list(RES_BIND_REQUESTS)
    assert br["status"] == {"phase": "Succeeded"} and br["spec"]["backoffLimit"] == LIMIT
    pod = sc.get(RES_PODS, "p1")
    assert pod["spec"]["nodeName"] == "n1"
    [cond] = [c for c in pod["status"]["conditions"] if c["type"] == "PodBound"]
    assert (cond["status"], cond["reason"]) == ("True", "Bound")
    reasons = Counter(e["reason"] for e in sc.list(RES_EVENTS) if e["involvedObject"]["name"] == "p1")
    assert reasons == {"BindingError": 2 * LIMIT, "Bound": 1}


def test_a_binding_that_never_succeeds_ends_the_run_naming_the_pod(scenario, cluster_file, no_real_sleep):
    sc = scenario(cluster_file, gates="", backoff_limit=1, plugins={"refusing-device": RefusingDevice(None)})
    summary = sc.run(max_rounds=500, max_skipped=30.0)
    assert summary.gave_up and summary.rounds < 500
    assert 0 < summary.skipped <= 30.0
    assert (summary.bound, summary.pending) == (0, 1)
    assert summary.waiting == ["default/p1"]
    assert summary.warning() == (f"stopped waiting for retries after skipping {summary.skipped:.0f}s of "
                                 "backoff; pods still not bound: default/p1")
    assert SUMMARY.search(summary.line())  # the summary line keeps its shape


def test_without_until_idle_the_loop_runs_on_real_time_until_stopped(scenario, cluster_file):
    from kai_cli.runner import run_embedded

    sc = scenario(cluster_file, gates="")
    stop = threading.Event()
    summary = run_embedded(sc.cluster, sc.scheduler, sc.binder, period=0.0, stop=stop,
                           on_round=lambda n: n >= 3 and stop.set())
    assert summary.rounds == 3 and summary.bound == 1 and not summary.gave_up


# -- the command line ----------------------------------------------------------------------------


def test_cli_until_idle_retries_a_refused_binding_and_saves_the_pods_story(tmp_path, cluster_file, with_plugin,
                                                                           no_real_sleep):
    # the first request fails for good (3 attempts), the second fails once and then binds
    with_plugin(RefusingDevice(LIMIT + 1))
    state = tmp_path / "state.yaml"
    r = invoke("run", "scheduler", "--cluster", str(cluster_file), "--until-idle", "--save", str(state),
               "--backoff-limit", str(LIMIT))
    assert r.exit_code == 0, (r.output, r.stderr)
    assert "pod default/p1: bound to n1 (BindRequest" in r.output and "Succeeded)" in r.output
    bound, pending, unschedulable, _rounds = summary_numbers(r.output)
    assert (bound, pending, unschedulable) == (1, 0, 0)
    assert "warning" not in r.stderr

    r = invoke("get", "pods", "p1", "--cluster", str(state), "-o", "yaml")
    assert r.exit_code == 0
    pod = yaml.safe_load(r.output)
    [cond] = [c for c in pod["status"]["conditions"] if c["type"] == "PodBound"]
    assert (cond["status"], cond["reason"], cond["message"]) == ("True", "Bound",
                                                                "Pod bound successfully to node n1")
    r = invoke("get", "events", "--cluster", str(state), "-o", "yaml")
    events = [e for e in yaml.safe_load_all(r.output) if e and e["involvedObject"]["name"] == "p1"]
    failures = sorted((e for e in events if e["reason"] == "BindingError"), key=lambda e: e["message"])
    assert len(failures) == LIMIT + 1
    assert all(e["type"] == "Warning" and "Failed to bind pod default/p1 to node n1" in e["message"]
               and "not ready (attempt" in e["message"] for e in failures)
    [ok] = [e for e in events if e["reason"] == "Bound"]
    assert ok["type"] == "Normal" and ok["source"] == {"component": "kai-binder"}
    r = invoke("get", "br", "--cluster", str(state), "-o", "yaml")
    [br] = [b for b in yaml.safe_load_all(r.output) if b]
    assert br["spec"]["backoffLimit"] == LIMIT
    assert br["status"]["phase"] == "Succeeded" and br["status"]["failedAttempts"] == 1


def test_cli_until_idle_gives_up_on_a_binding_that_never_succeeds(cluster_file, with_plugin, no_real_sleep):
    with_plugin(RefusingDevice(None))
    r = invoke("run", "scheduler", "--cluster", str(cluster_file), "--until-idle")
    assert r.exit_code == 0, (r.output, r.stderr)
    assert "pod default/p1: pending" in r.output
    assert summary_numbers(r.output)[:2] == (0, 1)
    [warning] = [ln for ln in r.stderr.splitlines() if ln.startswith("kai-cli: warning:")]
    assert "stopped waiting for retries after skipping" in warning
    assert warning.endswith("pods still not bound: default/p1")


def test_backoff_limit_is_unset_by_default_as_kai_leaves_it_and_can_be_set(tmp_path, cluster_file):
    for extra, want in (([], None), (["--backoff-limit", "0"], 0), (["--backoff-limit", "7"], 7)):
        state = tmp_path / "state.yaml"
        r = invoke("run", "scheduler", "--cluster", str(cluster_file), "--until-idle", "--no-binder",
                   "--save", str(state), *extra)
        assert r.exit_code == 0, r.output
        [br] = [d for d in yaml.safe_load_all(state.read_text()) if d and d["kind"] == "BindRequest"]
        assert br["spec"].get("backoffLimit") == want, extra


def test_the_demo_still_prints_the_seeds_bind_request(shared_dir):
    """The demo leaves backoffLimit unset (--help says so): its BindRequest is the seed's, field for
    field (the node and the ComputeDomain's uid are the run's own)."""
    seed = shared_dir / "seed" / "dra.md"
    if not seed.is_file():
        pytest.skip(f"{seed} is absent: the seed is only in the project's workspace")
    r = invoke("run", "scheduler", "--feature-gates=DynamicResourceAllocation=true", "--until-idle")
    assert r.exit_code == 0, r.output
    printed = r.output.split("\n---\n")[1]
    [br] = [d for d in yaml.safe_load_all(printed) if d]
    block = re.search(r"(apiVersion: scheduling\.run\.ai/v1alpha2.*?)```", seed.read_text(), re.S).group(1)
    text = block.replace("NODE_NAME", br["spec"]["selectedNode"])
    domain = br["spec"]["resourceClaimAllocations"][0]["allocation"]["devices"]["config"][0]["opaque"]
    text = text.replace("83479f70-e292-43d6-aa67-dd4ba8adab8f", domain["parameters"]["domainID"])
    want = yaml.safe_load(text)
    assert br["spec"] == want["spec"]
    assert "backoffLimit" not in br["spec"]
    assert br["status"] == want["status"] == {"phase": "Succeeded"}


def test_help_documents_the_defaults():
    r = invoke("run", "scheduler", "--help")
    text = " ".join(r.output.split())
    assert "Unset by default, as KAI's own scheduler leaves it: one attempt, then the pod is scheduled again" \
        in text
    r = invoke("run", "binder", "--help")
    text = " ".join(r.output.split())
    assert "BindRequests carried out in parallel (default: 10 against a cluster, 1 in embedded mode" in text, text


@pytest.mark.parametrize("command", [["scheduler", "--until-idle"], ["binder"]])
def test_embedded_binder_runs_the_shipped_options_on_one_worker(monkeypatch, tmp_path, cluster_file, command):
    """In-process, worker threads only compete for the interpreter: one worker, everything else as
    against a cluster (PodBound, Events, the node check); --workers still wins."""
    from kai_binder.binder import Binder

    built = []
    real_init = Binder.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        built.append((self.workers, self.report, self.check_node))

    monkeypatch.setattr(Binder, "__init__", init)
    path = cluster_file
    if command[0] == "binder":
        path = tmp_path / "decided.yaml"
        assert invoke("run", "scheduler", "--cluster", str(cluster_file), "--until-idle", "--no-binder",
                      "--save", str(path)).exit_code == 0
    r = invoke("run", *command, "--cluster", str(path))
    assert r.exit_code == 0, r.output
    assert built == [(1, True, True)]
    built.clear()
    r = invoke("run", *command, "--cluster", str(path), *(["--workers", "3"] if command[0] == "binder" else []))
    assert built == [(3 if command[0] == "binder" else 1, True, True)]


def test_run_binder_on_a_saved_state_retries_on_the_simulated_clock(tmp_path, cluster_file, with_plugin,
                                                                     no_real_sleep):
    decided = tmp_path / "decided.yaml"
    r = invoke("run", "scheduler", "--cluster", str(cluster_file), "--until-idle", "--no-binder",
               "--save", str(decided), "--backoff-limit", str(LIMIT))
    assert r.exit_code == 0
    with_plugin(RefusingDevice(LIMIT - 1))  # the last attempt the request has succeeds
    r = invoke("run", "binder", "--cluster", str(decided))
    assert r.exit_code == 0, r.output
    assert "(pod p1 -> n1): Succeeded" in r.output
    assert "bind requests: 1 succeeded, 0 failed, 0 pending" in r.output


# -- against a cluster ---------------------------------------------------------------------------


@pytest.mark.parametrize("args, workers", [([], 10), (["--workers", "3"], 3)])
def test_cluster_binder_runs_with_recommended_options_and_the_clients_rate_limit_only(monkeypatch, args,
                                                                                      workers):
    from kai_cli import kube

    built = {}

    def run(self):
        built.update(options=self.binder_options(), qps=self.opts.qps, burst=self.opts.burst)
        return 0

    monkeypatch.setattr(kube.BinderComponent, "run", run)
    r = invoke("run", "binder", "--kubeconfig", "kubeconfig", "--qps", "20", "--burst", "40", *args)
    assert r.exit_code == 0, (r.output, r.stderr)
    assert built == {"options": {"workers": workers, "report": True, "check_node": True, "qps": 0},
                     "qps": 20.0, "burst": 40}


@pytest.mark.parametrize("args, names", [
    ([], None),
    (["--scheduler-name", "gpu-batch"], ["gpu-batch"]),
    (["--scheduler-name", "a,b", "--scheduler-name", "c", "--scheduler-name", "a"], ["a", "b", "c"]),
])
def test_cluster_binder_serves_the_scheduler_names_given(monkeypatch, args, names):
    from kai_binder.binder import Binder
    from kai_cli import kube

    built = {}

    def run(self):
        built.update(options=self.binder_options())
        return 0

    monkeypatch.setattr(kube.BinderComponent, "run", run)
    r = invoke("run", "binder", "--kubeconfig", "kubeconfig", *args)
    assert r.exit_code == 0, (r.output, r.stderr)
    assert built["options"].get("scheduler_names") == names
    from kai_core.apiserver.store import EmbeddedStore

    binder = Binder(EmbeddedStore(), **built["options"])
    assert binder.scheduler_names == frozenset(names or ["kai-scheduler"])


def test_embedded_run_binds_the_pods_of_its_scheduler_name_and_run_binder_needs_it_too(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CLUSTER.replace("schedulerName: kai-scheduler", "schedulerName: gpu-batch"))
    r = invoke("run", "scheduler", "--cluster", str(path), "--until-idle", "--scheduler-name", "gpu-batch")
    assert r.exit_code == 0, r.output
    assert summary_numbers(r.output)[:2] == (1, 0)  # the in-process binder serves gpu-batch
    decided = tmp_path / "decided.yaml"
    r = invoke("run", "scheduler", "--cluster", str(path), "--until-idle", "--no-binder", "--scheduler-name",
               "gpu-batch", "--save", str(decided))
    assert r.exit_code == 0, r.output
    r = invoke("run", "binder", "--cluster", str(decided))  # serves kai-scheduler only
    assert 'Failed: verification failed: pod default/p1 has schedulerName "gpu-batch"' in r.output
    r = invoke("run", "scheduler", "--cluster", str(path), "--until-idle", "--no-binder", "--scheduler-name",
               "gpu-batch", "--save", str(decided))
    r = invoke("run", "binder", "--cluster", str(decided), "--scheduler-name", "kai-scheduler,gpu-batch")
    assert "(pod p1 -> n1): Succeeded" in r.output, r.output


def test_run_binder_refuses_an_empty_scheduler_name():
    r = invoke("run", "binder", "--kubeconfig", "kubeconfig", "--scheduler-name", " , ")
    assert r.exit_code == 2 and "--scheduler-name: give at least one scheduler name" in r.output + r.stderr


def test_cluster_binder_reports_on_the_pod_and_keeps_one_rate_limit(live_cluster, demo_path):
    lc = live_cluster(demo_path)
    scheduler = lc.start("scheduler")
    binder = lc.start("binder")

    def bound() -> bool:
        pod = lc.store.get(RES_PODS, "gpu-imex-pod", "default")
        return any(c["type"] == "PodBound" and c["status"] == "True"
                   for c in (pod.get("status") or {}).get("conditions") or [])

    lc.wait_for(bound, "the seed pod's PodBound condition")
    b = binder.component.binder
    assert (b.workers, b.report, b.check_node, b.limiter.qps) == (10, True, True, 0.0)
    assert b.api is binder.component.store  # no second token bucket in front of the API client
    assert scheduler.stop() == 0 and binder.stop() == 0
    events = [e for e in lc.store.list(RES_EVENTS)[0] if e["involvedObject"]["name"] == "gpu-imex-pod"
              and e["source"] == {"component": "kai-binder"}]
    assert [(e["type"], e["reason"]) for e in events] == [("Normal", "Bound")]


def test_sigterm_stops_an_embedded_run_cleanly(tmp_path, cluster_file):
    """The periodic loop (no --until-idle) stops on SIGTERM after its round, closes the binder and
    prints its result, exit 0."""
    import signal

    p = subprocess.Popen([sys.executable, "-m", "kai_cli.main", "-v", "run", "scheduler", "--cluster",
                          str(cluster_file), "--period", "0.05"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stderr:  # -v logs the bind; the signal handlers are in place by then
            if "pod default/p1 bound to node n1" in line:
                break
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0
    assert "pod default/p1: bound to n1" in out
    assert summary_numbers(out)[:3] == (1, 0, 0)
