"""``kai-cli explain pod``: on manifests or a saved state, the last decision about a pod, node by
node with the plugin behind each refusal, the scores of the winner and the runner-up, and the
devices chosen; the same explanation in the scheduler's debug log (``-vv``)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from kai_cli.main import cli

DRA = "--feature-gates=DynamicResourceAllocation=true"

#: a tainted node, one short of CPU, one with a single GPU (the claim wants two), and two that fit,
#: ``busy`` half full already (binpack prefers it)
CLUSTER = """
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: gpu.example.com}
spec:
  selectors: [{cel: {expression: "device.driver == 'gpu.example.com'"}}]
---
apiVersion: v1
kind: Node
metadata: {name: tainted}
spec: {taints: [{key: dedicated, value: infra, effect: NoSchedule}]}
status: {allocatable: {cpu: "8", memory: 16Gi, pods: "10"}, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Node
metadata: {name: small}
status: {allocatable: {cpu: "1", memory: 16Gi, pods: "10"}, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Node
metadata: {name: one-gpu}
status: {allocatable: {cpu: "8", memory: 16Gi, pods: "10"}, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Node
metadata: {name: busy}
status: {allocatable: {cpu: "8", memory: 16Gi, pods: "10"}, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Node
metadata: {name: idle}
status: {allocatable: {cpu: "8", memory: 16Gi, pods: "10"}, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: one-gpu}
spec: {driver: gpu.example.com,
       nodeName: one-gpu, pool: {name: one-gpu, generation: 1, resourceSliceCount: 1},
       devices: [{name: gpu-0}]}
---
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: busy}
spec: {driver: gpu.example.com,
       nodeName: busy, pool: {name: busy, generation: 1, resourceSliceCount: 1},
       devices: [{name: gpu-0}, {name: gpu-1}]}
---
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: idle}
spec: {driver: gpu.example.com,
       nodeName: idle, pool: {name: idle, generation: 1, resourceSliceCount: 1},
       devices: [{name: gpu-0}, {name: gpu-1}, {name: gpu-2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: running, namespace: default}
spec:
  schedulerName: kai-scheduler
  nodeName: busy
  containers: [{name: c, image: busybox:1, resources: {requests: {cpu: "4"}}}]
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: two-gpus, namespace: default}
spec:
  spec:
    devices:
      requests: [{name: gpus, exactly: {deviceClassName: gpu.example.com, count: 2}}]
---
apiVersion: v1
kind: Pod
metadata: {name: trainer, namespace: default}
spec:
  schedulerName: kai-scheduler
  containers: [{name: c, image: busybox:1, resources: {requests: {cpu: "2"}, claims: [{name: gpus}]}}]
  resourceClaims: [{name: gpus, resourceClaimTemplateName: two-gpus}]
"""


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def cluster(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER)
    return str(path)


def test_explain_names_each_refusing_plugin_the_scores_and_the_devices(cluster):
    result = invoke("explain", "pod", "trainer", "--cluster", cluster, DRA)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "pod default/trainer: scheduled to busy"
    assert "  tainted: refused by kai-core.taints: node(s) had untolerated taint(s)" in lines
    assert "  small: refused by kai-core.resources-fit: Insufficient cpu" in lines
    [dra] = [ln for ln in lines if ln.startswith("  one-gpu: ")]
    assert dra.startswith("  one-gpu: refused by kai-core.dra: cannot allocate all claims: claim default/trainer-gpus-")
    assert "needs 2 devices of DeviceClass gpu.example.com, 1 free" in dra
    # binpack: busy holds 4 + 2 of 8 CPUs, idle 2 of 8
    assert "  busy: total 37.5 (kai-core.binpack 37.5 x1)  <- chosen" in lines
    assert "  idle: total 12.5 (kai-core.binpack 12.5 x1)" in lines
    [devices] = [ln for ln in lines if ln.startswith("  claim gpus ")]
    assert "gpus -> gpu.example.com/busy/gpu-0, gpus -> gpu.example.com/busy/gpu-1" in devices


def test_score_weights_change_the_explained_totals(cluster):
    result = invoke("explain", "pod", "trainer", "--cluster", cluster, DRA, "--score-weight", "kai-core.binpack=2")
    assert "  busy: total 75 (kai-core.binpack 37.5 x2)  <- chosen" in result.stdout.splitlines()


def test_a_pod_decided_before_the_run_or_unknown_is_one_line_exit_2(cluster, tmp_path):
    saved = tmp_path / "saved.yaml"
    assert invoke("run", "scheduler", "--cluster", cluster, DRA, "--until-idle", "--save", str(saved)).exit_code == 0
    result = invoke("explain", "pod", "trainer", "--cluster", str(saved), DRA)
    assert result.exit_code == 2
    assert result.stderr.strip() == ("kai-cli: error: pod default/trainer: no decision made in this run: it was bound "
                                     "to busy before this run; its earlier decision was not recorded")
    result = invoke("explain", "pod", "nope", "--cluster", cluster)
    assert result.exit_code == 2
    assert result.stderr.strip() == f'kai-cli: error: pod "nope" not found in namespace default of {cluster}'


def test_a_pending_pod_of_a_saved_state_is_explained(cluster, tmp_path):
    saved = tmp_path / "saved.yaml"
    # without DRA the pod stays pending; the saved state is explained with it on
    assert invoke("run", "scheduler", "--cluster", cluster, "--until-idle", "--save", str(saved)).exit_code == 0
    result = invoke("explain", "pod", "trainer", "--cluster", str(saved), DRA)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "pod default/trainer: scheduled to busy"


def test_the_scheduler_debug_log_explains_each_decision(cluster):
    proc = subprocess.run([sys.executable, "-m", "kai_cli.main", "-vv", "run", "scheduler", "--cluster", cluster,
                           DRA, "--until-idle"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "DEBUG kai.scheduler.explain: decision explained:\npod default/trainer: scheduled to busy" in proc.stderr
    assert "  small: refused by kai-core.resources-fit: Insufficient cpu" in proc.stderr
    assert "  busy: total 37.5 (kai-core.binpack 37.5 x1)  <- chosen" in proc.stderr
    quiet = subprocess.run([sys.executable, "-m", "kai_cli.main", "-v", "run", "scheduler", "--cluster", cluster,
                            DRA, "--until-idle"], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and "decision explained" not in quiet.stderr
