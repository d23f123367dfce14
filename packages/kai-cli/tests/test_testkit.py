"""The plugin authors' test kit: pytest finds its fixtures through kai-cli's ``pytest11`` entry
point; ``kai_cluster`` schedules manifests with a plugin on an embedded cluster and shows the
result, ``kai_live_cluster`` does the same over the fake API server with kai's scheduler and binder
components; both read kinds by the names ``kai-cli get`` takes."""

from __future__ import annotations

import importlib.metadata

import pytest

from kai_core.framework.hookspecs import hookimpl
from kai_core.framework.plugins import PluginRefused

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
