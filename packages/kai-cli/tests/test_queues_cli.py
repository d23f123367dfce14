"""``kai-cli`` with KAI's queues: the README's example runs, a pod of an unknown queue or over its
queue's limit stays pending with the reason, and ``get queues`` shows the tree with quota, limit,
usage and fair share."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from kai_cli.main import cli

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "queues" / "cluster.yaml"


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_the_queues_example_runs_and_get_queues_shows_usage(tmp_path):
    state = tmp_path / "state.yaml"
    run = invoke("run", "scheduler", "--cluster", str(EXAMPLE), "--until-idle", "--save", str(state))
    assert run.exit_code == 0, run.output
    assert "pod default/lost: pending: Queue 'team-b' does not exist" in run.output
    assert "pod default/train-0: bound to n1" in run.output
    assert ("pod default/too-big: pending: OverLimit: team-a quota has reached the allowable limit of GPUs. "
            "Limit is 4 GPUs, currently 1 GPUs allocated and workload requested 4 GPUs") in run.output
    table = invoke("get", "queues", "--cluster", str(state), "-o", "wide").output.splitlines()
    assert table[0].split() == ["NAME", "PARENT", "PRIORITY", "GPU-QUOTA", "GPU-LIMIT", "GPU-ALLOCATED",
                                "GPU-REQUESTED", "GPU-FAIR-SHARE", "CPU-FAIR-SHARE", "MEMORY-FAIR-SHARE", "AGE"]
    # 4 GPUs: research's quota 2, and the other 2 by weight (it asks for 5); team-a's limit 4 caps it at 4.
    # CPU: quota -1 is all there is, capped by what is asked (2 cores, "lost" is in no queue)
    assert [row.split()[:10] for row in table[1:]] == [
        ["research", "<none>", "100", "2", "-1", "1", "5", "4", "2", "0"],
        ["team-a", "research", "100", "1", "4", "1", "5", "4", "2", "0"]]
    narrow = invoke("get", "queues", "--cluster", str(state)).output.splitlines()
    assert narrow[0].split() == ["NAME", "PARENT", "GPU-QUOTA", "GPU-LIMIT", "GPU-ALLOCATED", "GPU-REQUESTED",
                                 "GPU-FAIR-SHARE", "AGE"]


def test_the_reclaim_example_evicts_the_newest_pods_of_the_queue_above_its_share(tmp_path):
    state = tmp_path / "state.yaml"
    example = EXAMPLE.with_name("reclaim.yaml")
    run = invoke("run", "scheduler", "--cluster", str(example), "--until-idle", "--save", str(state))
    assert run.exit_code == 0, run.output
    lines = run.output.splitlines()
    assert [line for line in lines if "evicted" in line] == [
        "pod default/sweep-3: evicted by reclaim for default/train (queue team-a)",
        "pod default/sweep-2: evicted by reclaim for default/train (queue team-a)"]
    assert {"pod default/sweep-0: bound to n1", "pod default/sweep-1: bound to n1"} <= set(lines)
    assert sum(1 for line in lines if line.startswith("pod default/train-") and ": bound to n1" in line) == 2
    table = invoke("get", "queues", "--cluster", str(state)).output.splitlines()
    assert [row.split()[:7] for row in table[1:]] == [
        ["team-a", "<none>", "0", "-1", "2", "2", "2"], ["team-b", "<none>", "2", "-1", "2", "2", "2"]]


STALE_GANG = """\
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {allocatable: {cpu: "16", memory: 64Gi, pods: "110", nvidia.com/gpu: "4"},
         conditions: [{type: Ready, status: "True"}]}
---
apiVersion: scheduling.run.ai/v2alpha2
kind: PodGroup
metadata: {name: train, namespace: default}
spec: {minMember: 3}
""" + "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: t-{i}, namespace: default, annotations: {{pod-group-name: train}}}}
spec:
  schedulerName: kai-scheduler
  nodeName: n1
  containers: [{{name: c, image: busybox:1, resources: {{limits: {{nvidia.com/gpu: "1"}}}}}}]
status: {{phase: Running, startTime: "2026-01-01T00:00:00Z"}}
""" for i in range(2))


def test_an_until_idle_run_waits_out_a_stale_gangs_grace_period_on_its_simulated_clock(tmp_path):
    """Two pods of a gang of three run: the gang is stale, and after KAI's default grace period
    (60 s, skipped over on the run's simulated clock) both are evicted; the run ends there, not by
    giving up."""
    manifest = tmp_path / "stale.yaml"
    manifest.write_text(STALE_GANG)
    run = invoke("run", "scheduler", "--cluster", str(manifest), "--until-idle")
    assert run.exit_code == 0, run.output
    assert sorted(line for line in run.output.splitlines() if "evicted" in line) == [
        "pod default/t-0: evicted by stale-gang (queue default-queue)",
        "pod default/t-1: evicted by stale-gang (queue default-queue)"]
    assert "stopped waiting" not in run.output
