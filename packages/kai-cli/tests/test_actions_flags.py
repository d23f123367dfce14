"""``kai-cli run scheduler --actions LIST --max-consolidation-preemptees N --actions-time-budget
SECONDS``: which eviction actions run after allocate and how far they may go, seen in what the
embedded cluster evicts (the README's examples), bad values refused in one line with exit 2, and the
flags reaching the scheduler through the Helm chart's ``scheduler.additionalArgs``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from kai_cli.action_flags import actions_config
from kai_cli.main import cli

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "queues"
CHART = Path(__file__).resolve().parents[3] / "deploy" / "helm" / "kai-scheduler"


def run(*args: str):
    result = CliRunner().invoke(cli, ["run", "scheduler", "--until-idle", *args], catch_exceptions=False)
    return result, [line for line in result.output.splitlines() if "evicted" in line]


def test_the_priorities_example_preempts_by_class_and_only_with_preempt_on():
    result, evicted = run("--cluster", str(EXAMPLES / "priorities.yaml"))
    assert result.exit_code == 0, result.output
    assert evicted == ["pod default/finetune: evicted by preempt for default/serve (queue default-queue)"]
    readme = EXAMPLES.parents[1] / "README.md"
    if readme.is_file():  # the README quotes what the example prints
        assert f"prints `{evicted[0]}`" in readme.read_text()
    assert "pod default/serve: bound to n1" in result.output
    for actions in ("", "consolidation,reclaim"):
        result, evicted = run("--cluster", str(EXAMPLES / "priorities.yaml"), "--actions", actions)
        assert result.exit_code == 0 and evicted == [], result.output
        assert "pod default/finetune: bound to n1" in result.output
        assert "pod default/serve: pending: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu." in result.output


@pytest.mark.parametrize("actions, evictions", [
    (None, 2), ("reclaim", 2), ("preempt,consolidation", 0), ("", 0), (" reclaim , preempt ", 2)])
def test_reclaim_runs_only_when_listed(actions, evictions):
    flags = [] if actions is None else ["--actions", actions]
    result, evicted = run("--cluster", str(EXAMPLES / "reclaim.yaml"), *flags)
    assert result.exit_code == 0, result.output
    assert len(evicted) == evictions and all("evicted by reclaim" in line for line in evicted)


CONSOLIDATION = """
apiVersion: v1
kind: Node
metadata: {name: NAME}
status:
  allocatable: {cpu: "8", memory: 32Gi, pods: "110", nvidia.com/gpu: "2"}
  conditions: [{type: Ready, status: "True"}]
"""
OWNED_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: NAME
  namespace: default
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: rs, uid: uid-rs, controller: true}]
spec:
  schedulerName: kai-scheduler
  priorityClassName: train
  nodeName: NODE
  containers: [{name: c, image: busybox:1, resources: {limits: {nvidia.com/gpu: "1"}, requests: {cpu: "1"}}}]
status: {phase: Running, startTime: "2026-01-01T00:00:00Z"}
"""
BIG_POD = """
apiVersion: v1
kind: Pod
metadata: {name: big, namespace: default}
spec:
  schedulerName: kai-scheduler
  priorityClassName: train
  containers: [{name: c, image: busybox:1, resources: {limits: {nvidia.com/gpu: "2"}, requests: {cpu: "1"}}}]
"""


@pytest.fixture
def consolidation(tmp_path) -> str:
    """Two 2-GPU nodes each run one 1-GPU pod of a ReplicaSet; a 2-GPU pod waits: moving one pod
    makes room (consolidation), and nothing else would (one queue, equal priorities)."""
    docs = [CONSOLIDATION.replace("NAME", n) for n in ("n1", "n2")]
    docs += [OWNED_POD.replace("NAME", p).replace("NODE", n) for p, n in (("one", "n1"), ("two", "n2"))]
    path = tmp_path / "consolidation.yaml"
    path.write_text("---".join([*docs, BIG_POD]))
    return str(path)


@pytest.mark.parametrize("flags, moved", [
    ([], 1), (["--max-consolidation-preemptees", "1"], 1), (["--max-consolidation-preemptees", "0"], 0),
    (["--actions", "reclaim,preempt"], 0)])
def test_consolidation_is_bounded_by_max_consolidation_preemptees(consolidation, flags, moved):
    result, evicted = run("--cluster", consolidation, *flags)
    assert result.exit_code == 0, result.output
    assert len(evicted) == moved and all("evicted by consolidation for default/big" in line for line in evicted)
    assert ("pod default/big: bound to" in result.output) == bool(moved)


@pytest.mark.parametrize("flags, message", [
    (["--actions", "evict"], "--actions 'evict': unknown action 'evict'; the actions are consolidation, reclaim, "
                             'preempt ("" for none)'),
    (["--actions", "allocate,reclaim"], "--actions 'allocate,reclaim': allocate always runs first; list only the "
                                        "eviction actions after it (consolidation, reclaim, preempt)"),
    (["--actions", "preempt,reclaim,preempt"], "--actions 'preempt,reclaim,preempt': preempt named twice"),
    (["--actions", "reclaim,"], "--actions 'reclaim,': unknown action ''"),
    (["--max-consolidation-preemptees", "-1"],
     "--max-consolidation-preemptees '-1': expected a whole number, 0 (consolidation off) or more"),
    (["--max-consolidation-preemptees", "many"], "--max-consolidation-preemptees 'many': expected a whole number"),
    (["--actions-time-budget", "0"], "--actions-time-budget '0': expected a number of seconds above 0"),
    (["--actions-time-budget", "inf"], "--actions-time-budget 'inf': expected a number of seconds above 0"),
    (["--actions-time-budget", "1s"], "--actions-time-budget '1s': expected a number of seconds above 0"),
])
def test_bad_values_are_one_line_errors(flags, message):
    result = CliRunner().invoke(cli, ["run", "scheduler", *flags])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith(f"kai-cli: error: {message}"), result.output


def test_the_defaults_are_kais():
    config = actions_config()
    assert (config.actions, config.max_consolidation_preemptees) == (("consolidation", "reclaim", "preempt"), 16)
    config = actions_config("preempt, reclaim", "4", "2.5")
    assert (config.actions, config.max_consolidation_preemptees, config.time_budget) == (
        ("preempt", "reclaim"), 4, 2.5)


def test_the_chart_passes_them_through_additional_args():
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk (an embedded Helm engine) is not installed")
    extra = ["--actions=reclaim,preempt", "--max-consolidation-preemptees=0", "--actions-time-budget=1"]
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render({"scheduler": {"additionalArgs": extra}}, name="kai", namespace="kai-system")
    deployment = next(o for o in yaml.safe_load_all(rendered["kai-scheduler/templates/scheduler.yaml"])
                      if o and o["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-3:] == extra
    cmd = cli.commands["run"].commands["scheduler"]
    with cmd.make_context("scheduler", list(args[2:])) as ctx:
        params = ctx.params
    config = actions_config(params["actions"], params["max_preemptees"], params["actions_budget"])
    assert (config.actions, config.max_consolidation_preemptees, config.time_budget) == (("reclaim", "preempt"), 0, 1)
