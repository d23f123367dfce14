"""``kai-cli get pods`` tells a bound pod from a waiting one, although no kubelet ever moves the
phase on from Pending in the embedded cluster; ``-o wide`` adds the PodScheduled condition and the
pod's BindRequest with the node it names."""

from __future__ import annotations

from click.testing import CliRunner

from kai_cli.main import cli

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
metadata: {name: fits}
spec:
  schedulerName: kai-scheduler
  containers: [{name: c, image: busybox:1, resources: {requests: {cpu: "1"}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: too-big}
spec:
  schedulerName: kai-scheduler
  containers: [{name: c, image: busybox:1, resources: {requests: {cpu: "8"}}}]
"""


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def table(output: str) -> dict[str, dict[str, str]]:
    header, *rows = [line.split() for line in output.strip().splitlines()]
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


def saved(tmp_path, *flags: str) -> str:
    (tmp_path / "c.yaml").write_text(CLUSTER)
    state = tmp_path / "state.yaml"
    run("run", "scheduler", "--cluster", str(tmp_path / "c.yaml"), "--until-idle", "--save", str(state), *flags)
    return str(state)


def test_a_bound_pod_shows_bound_and_its_node(tmp_path):
    pods = table(run("get", "pods", "--cluster", saved(tmp_path)))
    assert pods["fits"]["STATUS"] == "Bound" and pods["fits"]["NODE"] == "n1"
    assert pods["too-big"]["STATUS"] == "Pending" and pods["too-big"]["NODE"] == "<none>"
    assert "SCHEDULED" not in pods["fits"] and "BINDREQUEST" not in pods["fits"]


def test_wide_shows_the_scheduling_condition_and_the_bind_request(tmp_path):
    state = saved(tmp_path)
    pods = table(run("get", "pods", "--cluster", state, "-o", "wide"))
    assert [pods["fits"][c] for c in ("SCHEDULED", "BINDREQUEST", "BINDREQUEST-NODE")] == ["True", "Succeeded", "n1"]
    assert [pods["too-big"][c] for c in ("SCHEDULED", "BINDREQUEST")] == ["Unschedulable", "<none>"]
    everywhere = run("get", "pods", "--cluster", state, "-o", "wide", "-A").splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert [ln.split()[5:7] for ln in everywhere[1:]] == [["Succeeded", "n1"], ["<none>", "<none>"]]  # -A too


def test_a_pod_whose_binder_has_not_run_is_pending_with_its_bind_request(tmp_path):
    pods = table(run("get", "pods", "--cluster", saved(tmp_path, "--no-binder"), "-o", "wide"))
    assert pods["fits"]["STATUS"] == "Pending" and pods["fits"]["NODE"] == "<none>"
    assert (pods["fits"]["BINDREQUEST"], pods["fits"]["BINDREQUEST-NODE"]) == ("Pending", "n1")


def test_a_phase_the_kubelet_set_is_shown_as_it_is(tmp_path):
    running = CLUSTER.replace("metadata: {name: fits}", "metadata: {name: fits}\nstatus: {phase: Running}")
    (tmp_path / "c.yaml").write_text(running.split("---")[0] + "---" + running.split("---")[1].replace(
        "spec:\n", "spec:\n  nodeName: n1\n", 1))
    pods = table(run("get", "pods", "--cluster", str(tmp_path / "c.yaml")))
    assert pods["fits"]["STATUS"] == "Running"
