"""kai-cli as a user runs it: results on stdout, every user error one line on stderr and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from kai_cli.main import cli

NODE = """
apiVersion: v1
kind: Node
metadata: {name: n1}
status:
  allocatable: {cpu: "4", memory: 8Gi, pods: "10", nvidia.com/gpu: "2"}
  conditions: [{type: Ready, status: "True"}]
"""
POD = """
apiVersion: v1
kind: Pod
metadata: {name: p1}
spec:
  schedulerName: kai-scheduler
  containers: [{name: c, image: busybox:1, resources: {limits: {nvidia.com/gpu: 1}}}]
"""


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("kai-cli: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_run_until_idle_binds_and_saves(tmp_path):
    (tmp_path / "c.yaml").write_text(NODE + "---" + POD)
    out = tmp_path / "state.yaml"
    r = invoke("run", "scheduler", "--cluster", str(tmp_path / "c.yaml"), "--until-idle", "--save", str(out))
    assert r.exit_code == 0, r.output
    assert "pod default/p1: bound to n1" in r.output
    assert "pods bound: 1, pending: 0, unschedulable: 0" in r.output
    kinds = [d["kind"] for d in yaml.safe_load_all(out.read_text())]
    assert "BindRequest" in kinds and kinds.count("Pod") == 1

    r = invoke("get", "br", "--cluster", str(out))
    assert r.exit_code == 0
    header, row = r.output.strip().splitlines()
    assert header.split()[:4] == ["NAME", "POD", "NODE", "PHASE"]
    assert row.split()[1:4] == ["p1", "n1", "Succeeded"]
    for alias in ("bindrequests", "bindrequest", "BindRequest"):
        assert invoke("get", alias, "--cluster", str(out), "-o", "name").output.startswith("bindrequest.")
    r = invoke("get", "pods", "p1", "--cluster", str(out), "-o", "json")
    assert '"nodeName": "n1"' in r.output


def test_demo_prints_the_seed_result():
    r = invoke("run", "scheduler", "--feature-gates=DynamicResourceAllocation=true", "--until-idle")
    assert r.exit_code == 0, r.output
    assert "built-in demo cluster" in r.output
    assert "pod default/gpu-imex-pod: bound to gb200-node-" in r.output
    assert "kind: BindRequest" in r.output and "phase: Succeeded" in r.output
    assert "driver: compute-domain.nvidia.com" in r.output


@pytest.mark.parametrize(
    "content,fragments",
    [
        ("kind: Pod\nmetadata: {name: x", ["c.yaml", "invalid YAML"]),
        ("- just\n- a list\n", ["c.yaml#1", "mapping"]),
        ("apiVersion: v1\nkind: Gizmo\nmetadata: {name: g}\n", ["Gizmo g", "nothing serves this kind"]),
        ("apiVersion: scheduling.run.ai/v1alpha2\nkind: BindRequest\nmetadata: {name: b}\n"
         "spec: {podName: p, receivedGPU: {count: many}}\n", ["BindRequest", "count"]),
        ("apiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata: {name: broken}\n"
         "spec: {selectors: [{cel: {expression: 'device.driver =='}}]}\n", ["DeviceClass broken", "device.driver =="]),
    ],
)
def test_bad_manifests_exit_2_with_one_line(tmp_path, content, fragments):
    (tmp_path / "c.yaml").write_text(content)
    assert_one_line_error(invoke("run", "scheduler", "--cluster", str(tmp_path / "c.yaml"), "--until-idle"),
                          *fragments)
    r = invoke("validate", str(tmp_path / "c.yaml"))
    assert r.exit_code == 2 and "Traceback" not in r.stderr
    assert all(f in r.stderr for f in fragments), r.stderr


def test_unreadable_path_and_bad_gate():
    assert_one_line_error(invoke("run", "scheduler", "--cluster", "/no/such/dir", "--until-idle"), "/no/such/dir")
    assert_one_line_error(invoke("run", "scheduler", "--feature-gates=Bogus=true", "--until-idle"), "Bogus")
    assert_one_line_error(invoke("get", "gizmos", "--cluster", "/no/such/file.yaml"), "/no/such/file.yaml")


def test_validate_reports_every_problem(tmp_path):
    (tmp_path / "a.yaml").write_text(NODE + "---\napiVersion: v1\nkind: Gizmo\nmetadata: {name: g}\n")
    (tmp_path / "b.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: nope}\nspec: {containers: []}\n")
    r = invoke("validate", str(tmp_path))
    assert r.exit_code == 2
    assert "a.yaml#2 (Gizmo g)" in r.stderr and "b.yaml#1 (Pod nope)" in r.stderr
    (tmp_path / "a.yaml").write_text(NODE)
    (tmp_path / "b.yaml").write_text(POD)
    r = invoke("validate", str(tmp_path))
    assert r.exit_code == 0 and "2 object(s) valid" in r.output


def test_plugins_list_shows_nvidia_plugin_and_builtins():
    r = invoke("plugins", "list")
    assert r.exit_code == 0
    rows = {line.split()[0]: line for line in r.output.splitlines()[1:]}
    assert "kai_embedded_controllers" in rows["dra-nvidia"] and "kai-dra-nvidia" in rows["dra-nvidia"]
    assert "kai_filter_nodes" in rows["kai-core.resources-fit"]


def test_real_entry_point_error_has_no_traceback(tmp_path):
    (tmp_path / "bad.yaml").write_text("kind: [")
    exe = [sys.executable, "-m", "kai_cli.main"]
    p = subprocess.run([*exe, "validate", str(tmp_path / "bad.yaml")], capture_output=True, text=True)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and "invalid YAML" in p.stderr
