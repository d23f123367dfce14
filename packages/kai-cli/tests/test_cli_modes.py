"""kai-cli's two modes: against a cluster only with an explicit --kubeconfig or --in-cluster, the
embedded cluster otherwise; flags of the other mode are one clear error; `run binder` on a saved
state; and `kai-cli --help` stays fast (nothing heavy imported)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
from click.testing import CliRunner

from kai_cli.main import cli

NODE_AND_POD = """
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


def invoke(*args, env=None):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, env=env)


def one_error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.output, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("kai-cli: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_importing_the_cli_and_its_help_import_nothing_heavy():
    code = """
import sys
from kai_cli.main import cli
for args in (["--help"], ["run", "scheduler", "--help"], ["run", "binder", "--help"]):
    cli(args, standalone_mode=False)
heavy = [m for m in ("kubernetes", "prometheus_client", "urllib3", "kai_core.scheduler.cycle",
                     "kai_core.client.store") if m in sys.modules]
print("HEAVY", heavy)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "HEAVY []" in p.stdout, p.stdout
    assert "--kubeconfig" in p.stdout and "--leader-elect" in p.stdout and "--workers" in p.stdout


def test_run_binder_without_a_cluster_says_what_it_needs():
    line = one_error_line(invoke("run", "binder"))
    assert "--kubeconfig FILE or --in-cluster" in line and "--cluster PATH" in line
    assert "kai-cli run scheduler" in line


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["run", "scheduler", "--leader-elect"], "--leader-elect: only against a real cluster"),
        (["run", "scheduler", "--metrics-bind-address", ":8080", "--until-idle"], "--metrics-bind-address"),
        (["run", "scheduler", "--qps", "5"], "--qps: only against a real cluster"),
        (["run", "binder", "--cluster", "x.yaml", "--health-probe-bind-address", ":8081"],
         "--health-probe-bind-address: only against a real cluster"),
        (["run", "scheduler", "--kubeconfig", "k", "--until-idle", "--save", "s.yaml"],
         "--until-idle, --save: only for the embedded cluster"),
        (["run", "scheduler", "--in-cluster", "--cluster", "c.yaml"],
         "--cluster: only for the embedded cluster"),
        (["run", "binder", "--kubeconfig", "k", "--in-cluster"], "exclude each other"),
    ],
)
def test_flags_of_the_other_mode_are_one_clear_error(args, fragment):
    assert fragment in one_error_line(invoke(*args))


def test_kubeconfig_env_alone_never_touches_a_cluster(tmp_path):
    (tmp_path / "c.yaml").write_text(NODE_AND_POD)
    r = invoke("run", "scheduler", "--cluster", str(tmp_path / "c.yaml"), "--until-idle",
               env={"KUBECONFIG": str(tmp_path / "some-real-cluster")})
    assert r.exit_code == 0, r.output
    assert "pod default/p1: bound to n1" in r.output
    assert "$KUBECONFIG is set but not used; pass --kubeconfig" in r.stderr


def test_run_binder_carries_out_a_saved_states_bind_requests(tmp_path):
    (tmp_path / "c.yaml").write_text(NODE_AND_POD)
    decided, done = tmp_path / "decided.yaml", tmp_path / "done.yaml"
    r = invoke("run", "scheduler", "--cluster", str(tmp_path / "c.yaml"), "--until-idle", "--no-binder",
               "--save", str(decided))
    assert r.exit_code == 0 and "pod default/p1: pending" in r.output
    r = invoke("run", "binder", "--cluster", str(decided), "--save", str(done))
    assert r.exit_code == 0, r.output
    assert "(pod p1 -> n1): Succeeded" in r.output
    assert "bind requests: 1 succeeded, 0 failed, 0 pending" in r.output
    r = invoke("get", "pods", "p1", "--cluster", str(done), "-o", "json")
    assert '"nodeName": "n1"' in r.output
    r = invoke("run", "binder", "--cluster", str(done))  # nothing left to do
    assert "bind requests: 1 succeeded, 0 failed, 0 pending" in r.output


def test_workers_reach_the_binder_when_it_takes_them(tmp_path):
    from kai_binder.binder import Binder
    from kai_cli.kube import supported_binder_kwargs

    takes_workers = "workers" in inspect.signature(Binder.__init__).parameters
    accepted, ignored = supported_binder_kwargs({"workers": 3, "qps": None, "burst": 7})
    assert ("workers" in accepted) == takes_workers
    assert ("workers" in ignored) == (not takes_workers)
    assert "qps" not in accepted and "qps" not in ignored  # not given: the binder's own default stays
    (tmp_path / "c.yaml").write_text(NODE_AND_POD)
    r = invoke("run", "binder", "--cluster", str(tmp_path / "c.yaml"), "--workers", "3")
    assert r.exit_code == 0
    assert ("--workers is ignored" in r.stderr) == (not takes_workers)


def test_bad_or_busy_bind_address_is_one_error(live_cluster):
    lc = live_cluster()
    line = one_error_line(invoke("run", "binder", "--kubeconfig", str(lc.kubeconfig),
                                 "--metrics-bind-address", "8080"))
    assert "bind address '8080': expected [host]:port" in line
    from kai_core.observability import ObservabilityServer

    with ObservabilityServer("127.0.0.1:0", health={}) as busy:
        port = busy.port
        line = one_error_line(invoke("run", "scheduler", "--kubeconfig", str(lc.kubeconfig),
                                     "--health-probe-bind-address", f"127.0.0.1:{port}"))
    assert f"cannot listen on 127.0.0.1:{port}" in line


def test_leader_election_timings_are_checked(live_cluster):
    lc = live_cluster()
    line = one_error_line(invoke("run", "binder", "--kubeconfig", str(lc.kubeconfig), "--leader-elect",
                                 "--leader-elect-lease-duration", "5", "--leader-elect-renew-deadline", "8"))
    assert "lease duration (5s) must be longer than the renew deadline (8s)" in line
