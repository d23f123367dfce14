"""The plugin authors' test kit: pytest finds its fixtures through kai-cli's ``pytest11`` entry
point; ``kai_cluster`` schedules manifests with a plugin on an embedded cluster and shows the
result, ``kai_live_cluster`` does the same over the fake API server with kai's scheduler and binder
components; both read kinds by the names ``kai-cli get`` takes."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from kai_cli.docblocks import fenced_blocks, output_matches
from kai_core.framework.hookspecs import hookimpl
from kai_core.framework.plugins import PluginRefused

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "writing-a-device-plugin.md"

CLUSTER = """
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {zone: a}}
status: {allocatable: {cpu: "8", memory: 16Gi, pods: "10"}, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2, labels: {zone: b}}
status: {allocatable: {cpu: "2", memory: 16Gi, pods: "10"}, conditions: [{type: Ready, status: "True"}]}
"""


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"schedulerName": "kai-scheduler",
                     "containers": [{"name": "c", "image": "busybox:1", "resources": {"requests": {"cpu": "1"}}}]}}


class KeepOutOfZoneB:
    """A node filter: nodes labelled zone=b are refused."""

    @hookimpl
    def kai_filter_nodes(self, pod, nodes, snapshot):
        return {n.name: "zone b is closed" for n in nodes if n.labels.get("zone") == "b"}


def test_the_fixtures_come_from_kai_clis_pytest11_entry_point(request):
    [ep] = [ep for ep in importlib.metadata.entry_points(group="pytest11") if ep.value == "kai_cli.pytest_plugin"]
    assert ep.dist.name == "kai-cli"
    assert request.config.pluginmanager.has_plugin(ep.name)
    assert request.getfixturevalue("kai_cluster") is not None


def test_manifests_scheduled_with_a_plugin_and_the_resulting_state(kai_cluster, tmp_path):
    # without the plugin binpack prefers the small node; with it zone b is refused
    (tmp_path / "nodes.yaml").write_text(CLUSTER)
    plain = kai_cluster(tmp_path / "nodes.yaml", pod("p"))
    summary = plain.run()
    assert summary.bound == 1 and plain.placed() == {"p": "n2"}
    mine = kai_cluster(CLUSTER, pod("p"), plugins={"zones": KeepOutOfZoneB()})
    mine.run()
    assert mine.placed() == {"p": "n1"}
    assert mine.explain("p").verdict("n2").plugin == "zones"
    [br] = mine.list("bindrequests")
    assert br["spec"]["selectedNode"] == "n1" and br["status"]["phase"] == "Succeeded"
    assert mine.get("po", "p")["spec"]["nodeName"] == "n1"
    assert [n["metadata"]["name"] for n in mine.list("nodes")] == ["n1", "n2"]


def test_a_pod_the_plugin_leaves_nowhere_to_go_shows_its_reason(kai_cluster):
    cluster = kai_cluster(CLUSTER.replace('cpu: "8"', 'cpu: "0"'), pod("p"), plugins={"zones": KeepOutOfZoneB()})
    cluster.run()
    assert cluster.placed() == {}
    assert cluster.pending_message("p") == "0/2 nodes are available: 1 Insufficient cpu, 1 zone b is closed."
    with pytest.raises(KeyError, match="default/nope"):
        cluster.explain("nope")


def test_a_misspelt_hook_is_refused_when_the_cluster_is_made(kai_cluster):
    class Misspelt:
        @hookimpl
        def kai_filter_node(self, pod, nodes, snapshot):
            return {}

    with pytest.raises(PluginRefused, match="kai_filter_nodes"):
        kai_cluster(CLUSTER, plugins={"typo": Misspelt()})


def test_the_same_over_the_fake_api_server_with_scheduler_and_binder_components(kai_live_cluster):
    cluster = kai_live_cluster(CLUSTER, pod("p"), plugins={"zones": KeepOutOfZoneB()})
    scheduler, binder = cluster.start()
    assert cluster.wait_bound("p") == {"p": "n1"}
    cluster.wait_for(lambda: cluster.list("br")[0]["status"]["phase"] == "Succeeded", "the BindRequest to succeed")
    cluster.store.create(pod("q"))
    assert cluster.wait_bound("q") == {"q": "n1"}
    assert scheduler.component.pm.get_plugin("zones") is not None
    assert binder.component.pm is not scheduler.component.pm


# -- scheduler and binder as processes ------------------------------------------------------------

def imex_demo() -> list:
    """kai-dra-nvidia's demo: GB200 nodes and the seed's pod asking for a GPU and an IMEX channel
    of a ComputeDomain (kai-dra-nvidia is installed wherever kai-cli's tests run)."""
    from kai_dra_nvidia.demo import demo_manifests_path

    return sorted(demo_manifests_path().glob("*.yaml"))


def test_scheduler_and_binder_processes_with_an_installed_plugin(kai_live_cluster):
    cluster = kai_live_cluster(*imex_demo(), processes=True, require_plugins=["dra-nvidia"])
    scheduler, binder = cluster.start()
    assert "--require-plugin" in scheduler.args and "dra-nvidia" in binder.args
    assert [scheduler.code, binder.code] == [None, None]
    [(pod, node)] = cluster.wait_bound("gpu-imex-pod").items()
    assert cluster.devices_of(pod) == {"channel": [f"compute-domain.nvidia.com/{node}/channel-0"]}
    cluster.wait_for(lambda: cluster.list("br")[0]["status"]["phase"] == "Succeeded", "the BindRequest to succeed")
    assert cluster.list("br")[0]["spec"]["selectedNode"] == node
    cluster.stop_components()
    assert [scheduler.code, binder.code] == [0, 0] and not (scheduler.killed or binder.killed)
    assert "kai-cli: scheduler: running" in scheduler.stdout()


def test_a_required_plugin_that_is_not_installed_fails_with_the_processes_one_line_error(kai_live_cluster):
    cluster = kai_live_cluster(CLUSTER, pod("p"), processes=True, require_plugins=["nic-example"])
    with pytest.raises(pytest.fail.Exception) as failed:
        cluster.start()
    message = str(failed.value)
    assert message.startswith("kai-cli run scheduler exited with code 2 before it was running: kai-cli: error: "
                              "--require-plugin: required plugin 'nic-example' is not installed (loaded: "), message
    assert "\n" not in message
    assert cluster.placed() == {}


def test_the_guides_missing_plugin_failure_is_the_kits(kai_live_cluster):
    # docs/writing-a-device-plugin.md, "As deployed": the line a test fails with when the plugin
    # named in require_plugins is not installed (the guide names the FPGA example's, which may be
    # installed where this runs: a name that never is stands in for it)
    if not GUIDE.is_file():
        pytest.skip(f"{GUIDE} not found: the guide is only in the source repository")
    [shown] = [b for b in fenced_blocks(GUIDE) if b.id == "### As deployed: scheduler and binder as processes #2"]
    cluster = kai_live_cluster(CLUSTER, processes=True, require_plugins=["nic-example"])
    with pytest.raises(pytest.fail.Exception) as failed:
        cluster.start()
    expected = shown.text.replace("'fpga-example'", "'nic-example'").splitlines()
    assert output_matches(expected, f"Failed: {failed.value}"), str(failed.value)


def test_a_process_that_dies_ends_the_wait_with_its_stderr(kai_live_cluster):
    cluster = kai_live_cluster(CLUSTER, pod("p"), processes=True)
    scheduler, binder = cluster.start()
    assert cluster.wait_bound("p") == {"p": "n2"}
    scheduler.popen.kill()
    scheduler.popen.wait(30)
    cluster.store.create(pod("q"))
    with pytest.raises(pytest.fail.Exception) as failed:
        cluster.wait_bound("q")
    head, *tail = str(failed.value).splitlines()
    assert head.startswith("gave up waiting for pods q to be bound: kai-cli run scheduler was ended by signal "
                           "SIGKILL; its stderr (last "), head
    assert any("pod default/p: node n2 selected" in line for line in tail), tail
    cluster.stop_components()
    assert binder.code == 0


def test_plugins_of_the_tests_process_cannot_reach_processes(kai_live_cluster):
    with pytest.raises(TypeError, match=r"install your plugin \(pip install -e \.\) and name it in require_plugins="):
        kai_live_cluster(CLUSTER, plugins={"zones": KeepOutOfZoneB()}, processes=True)


def test_required_plugins_are_checked_on_threads_too(kai_live_cluster):
    with pytest.raises(AssertionError, match="require_plugins: required plugin 'zones' is not installed"):
        kai_live_cluster(CLUSTER, require_plugins=["zones"])
    cluster = kai_live_cluster(CLUSTER, pod("p"), plugins={"zones": KeepOutOfZoneB()}, require_plugins=["zones"])
    cluster.start()
    assert cluster.wait_bound("p") == {"p": "n1"}
