"""``kai-cli run scheduler --require-plugin`` (and ``run binder``'s) and ``--score-weight``, and
``kai-cli plugins list`` failing when a plugin failed to load: what an operator sees (one line,
exit 2 for bad flags)."""

from __future__ import annotations

import sys
import textwrap

import pytest
from click.testing import CliRunner

from kai_cli.main import cli


def node(name: str, cpu: str) -> str:
    return (f"apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nstatus:\n"
            f"  allocatable: {{cpu: \"{cpu}\", memory: 8Gi, pods: \"10\"}}\n"
            "  conditions: [{type: Ready, status: \"True\"}]\n")


#: n-b is the fuller node for a 1-cpu pod, so binpack prefers it
NODES = "---\n".join([node("n-a", "8"), node("n-b", "2"), (
    "apiVersion: v1\nkind: Pod\nmetadata: {name: p1}\nspec:\n  schedulerName: kai-scheduler\n"
    "  containers: [{name: c, image: busybox:1, resources: {requests: {cpu: \"1\"}}}]\n")])


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("kai-cli: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture
def cluster(tmp_path):
    (tmp_path / "c.yaml").write_text(NODES)
    return str(tmp_path / "c.yaml")


@pytest.fixture
def misspelt_plugin(tmp_path, monkeypatch):
    """An installed plugin (a real dist-info on sys.path) whose hook name is misspelt."""
    (tmp_path / "kai_nic_plugin.py").write_text(textwrap.dedent('''
        from kai_core.framework.hookspecs import hookimpl

        @hookimpl
        def kai_filter_node(pod, nodes):
            return {n.name: "NIC down" for n in nodes}
    '''))
    dist = tmp_path / "kai_nic_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kai-nic-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[kai_scheduler.plugins]\nnic = kai_nic_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kai_nic_plugin", raising=False)


def test_plugins_list_fails_naming_the_plugin_that_did_not_load(misspelt_plugin):
    r = invoke("plugins", "list")
    assert r.exit_code == 1
    assert "kai-core.binpack" in r.stdout  # the table is still shown
    assert r.stderr.splitlines() == [
        "kai-cli: plugin 'nic' (kai_nic_plugin) refused: kai_filter_node is not a kai hook (did you mean "
        "kai_filter_nodes?); it would never be called"]


def test_plugins_list_succeeds_when_every_plugin_loaded():
    r = invoke("plugins", "list")
    assert r.exit_code == 0 and r.stderr == ""


def test_require_plugin_refuses_to_start_without_it(cluster, misspelt_plugin):
    line = one_line_error(invoke("run", "scheduler", "--cluster", cluster, "--until-idle",
                                 "--require-plugin", "dra-nvidia", "--require-plugin", "nic"))
    assert "--require-plugin: required plugin 'nic' is not loaded: plugin 'nic' (kai_nic_plugin) refused: " in line
    line = one_line_error(invoke("run", "scheduler", "--cluster", cluster, "--until-idle",
                                 "--require-plugin", "rdma"))
    assert "required plugin 'rdma' is not installed (loaded: dra-nvidia, kai-binder.dra-claims, " in line


def test_require_plugin_starts_when_loaded(cluster):
    r = invoke("run", "scheduler", "--cluster", cluster, "--until-idle", "--require-plugin", "dra-nvidia")
    assert r.exit_code == 0, r.output
    assert "pod default/p1: bound to" in r.output


def test_binder_require_plugin_refuses_to_start_without_it(cluster, misspelt_plugin, tmp_path):
    state = str(tmp_path / "decided.yaml")
    r = invoke("run", "scheduler", "--cluster", cluster, "--until-idle", "--no-binder", "--save", state)
    assert r.exit_code == 0, r.output
    line = one_line_error(invoke("run", "binder", "--cluster", state, "--require-plugin", "nic"))
    assert "--require-plugin: required plugin 'nic' is not loaded: plugin 'nic' (kai_nic_plugin) refused: " in line
    # against a cluster too, before it connects (the kubeconfig does not even exist)
    line = one_line_error(invoke("run", "binder", "--kubeconfig", str(tmp_path / "none"), "--require-plugin", "rdma"))
    assert "required plugin 'rdma' is not installed" in line
    r = invoke("run", "binder", "--cluster", state, "--save", state, "--require-plugin", "kai-binder.dra-claims")
    assert r.exit_code == 0, r.output
    r = invoke("get", "pods", "p1", "--cluster", state)
    assert r.output.splitlines()[1].split()[1:3] == ["Bound", "n-b"]


def test_score_weight_changes_the_winner(cluster):
    r = invoke("run", "scheduler", "--cluster", cluster, "--until-idle")
    assert "pod default/p1: bound to n-b" in r.output  # binpack: the fuller node
    r = invoke("run", "scheduler", "--cluster", cluster, "--until-idle", "--score-weight", "kai-core.binpack=0")
    assert r.exit_code == 0, r.output
    assert "pod default/p1: bound to n-a" in r.output  # no score left: the name that sorts first


@pytest.mark.parametrize("value, fragment", [
    ("kai-core.binpack", "--score-weight 'kai-core.binpack': expected PLUGIN=N with N a number >= 0"),
    ("kai-core.binpack=heavy", "expected PLUGIN=N"),
    ("kai-core.binpack=-1", "expected PLUGIN=N"),
    ("=2", "expected PLUGIN=N"),
    ("binpak=2", "plugin 'binpak' is not loaded; plugins that score nodes: dra-nvidia, kai-core.binpack"),
    ("kai-core.taints=2", "plugin 'kai-core.taints' does not score nodes (kai_score_nodes)"),
])
def test_a_bad_score_weight_is_one_line(cluster, value, fragment):
    assert fragment in one_line_error(invoke("run", "scheduler", "--cluster", cluster, "--score-weight", value))
