"""The chart's KAI objects (deploy/helm/kai-scheduler, rendered by a real Helm engine as in
test_helm_chart.py): the workload PriorityClasses train 50, build-preemptible 75, build 100 and
inference 125, and the queues default-parent-queue -> default-queue, as KAI-Scheduler's chart
installs them (values ``defaultPriorityClasses`` and ``defaultQueue``, KAI's own keys). What the
chart installs must be what the embedded cluster has (the classes) and assumes (the queues), and
must be accepted by an API server serving the chart's CRDs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kai_core.api.errors import Forbidden
from kai_core.apiserver.store import EmbeddedStore
from kai_core.cluster import EmbeddedCluster, kai_priority_classes
from kai_core.framework.queues import build_tree, queue_from_object
from kai_core.plugins import build_plugin_manager

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (an embedded Helm engine) is not installed")
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is missing")

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "kai-scheduler"
UPSTREAM_QUEUE_CRD = ROOT.parent / "shared" / "upstream" / "kai-scheduler.queues.crd.yaml"
KAI_CLASSES = {"train": 50, "build-preemptible": 75, "build": 100, "inference": 125}

if not (CHART / "Chart.yaml").is_file():
    pytest.skip(f"{CHART} is absent: the chart is only in a checkout of the repository", allow_module_level=True)


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as c:
        yield c


def render(chart, values: dict | None = None, *, upgrade: bool = False) -> list[dict]:
    flags = {"is_upgrade": True, "is_install": False} if upgrade else {"is_install": True}
    rendered = chart.render(values or {}, name="kai", namespace="kai-system", **flags)
    return [o for path in sorted(rendered) if path.endswith(".yaml") for o in yaml.safe_load_all(rendered[path]) if o]


def of_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_the_chart_installs_kais_priority_classes(chart):
    classes = of_kind(render(chart), "PriorityClass")
    assert {n: c["value"] for n, c in classes.items()} == KAI_CLASSES
    for pc in classes.values():
        assert "globalDefault" not in pc and "preemptionPolicy" not in pc  # false and PreemptLowerPriority
        kubernetes_validate.validate(pc, "1.34.0", strict=True)
    assert of_kind(render(chart, {"defaultPriorityClasses": {"enabled": False}}), "PriorityClass") == {}


def test_the_chart_installs_kais_default_queues_on_install_only(chart):
    queues = of_kind(render(chart), "Queue")
    assert sorted(queues) == ["default-parent-queue", "default-queue"]
    assert queues["default-queue"]["spec"]["parentQueue"] == "default-parent-queue"
    assert "parentQueue" not in queues["default-parent-queue"]["spec"]
    for q in queues.values():
        assert q["spec"]["resources"] == {r: {"quota": 0, "limit": -1, "overQuotaWeight": 1}
                                          for r in ("cpu", "gpu", "memory")}
        assert q["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"  # uninstall leaves them
    # the scheduler assumes exactly these while no Queue of that name exists
    assert build_tree(queue_from_object(q) for q in queues.values()).queues == build_tree([]).queues
    assert of_kind(render(chart, upgrade=True), "Queue") == {}  # an upgrade never undoes edits
    assert of_kind(render(chart, {"defaultQueue": {"createDefaultQueue": False}}), "Queue") == {}


def test_queue_names_and_resources_come_from_the_values(chart):
    values = {"defaultQueue": {"parentName": "org", "childName": "everyone",
                               "childResources": {"gpu": {"quota": 2, "limit": 8, "overQuotaWeight": 3},
                                                  "cpu": {"quota": -1, "limit": -1, "overQuotaWeight": 1},
                                                  "memory": {"quota": 0, "limit": -1, "overQuotaWeight": 0.5}}}}
    queues = of_kind(render(chart, values), "Queue")
    assert sorted(queues) == ["everyone", "org"] and queues["everyone"]["spec"]["parentQueue"] == "org"
    assert queues["everyone"]["spec"]["resources"]["gpu"] == {"quota": 2, "limit": 8, "overQuotaWeight": 3}
    assert queues["everyone"]["spec"]["resources"]["memory"]["overQuotaWeight"] == 0.5


@pytest.mark.parametrize("values, where", [
    ({"defaultPriorityClasses": {"enabled": "yes"}}, "/defaultPriorityClasses/enabled"),
    ({"defaultPriorityClasses": {"create": True}}, "/defaultPriorityClasses"),
    ({"defaultQueue": {"childName": "Default Queue"}}, "/defaultQueue/childName"),
    ({"defaultQueue": {"parentResources": {"gpu": {"overQuotaWeight": -1}}}},
     "/defaultQueue/parentResources/gpu/overQuotaWeight"),
    ({"defaultQueue": {"childResources": {"cpu": {"limit": "lots"}}}}, "/defaultQueue/childResources/cpu/limit"),
])
def test_the_schema_refuses_bad_values(chart, values, where):
    with pytest.raises(helm.HelmValuesError) as exc:
        chart.validate_schema(chart.merge_values(values))
    assert where in str(exc.value)


def test_an_api_server_with_the_charts_crds_accepts_every_kai_object(chart):
    """The rendered classes and queues, applied as `helm install` applies them (CRDs first), are
    accepted; the upstream Queue CRD accepts the queues too; pods then get the classes' values."""
    store = EmbeddedStore()
    crds = [yaml.safe_load(c["data"]) for c in chart.crds]
    if UPSTREAM_QUEUE_CRD.is_file():
        upstream = EmbeddedStore()
        upstream.create(yaml.safe_load(UPSTREAM_QUEUE_CRD.read_text()))
        for q in of_kind(render(chart), "Queue").values():
            upstream.create(q)
    for obj in crds + [o for o in render(chart) if o["kind"] in ("PriorityClass", "Queue")]:
        store.create(obj)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"priorityClassName": "inference", "containers": [{"name": "c", "image": "busybox:1"}]}}
    assert store.create(pod)["spec"]["priority"] == 125


def test_the_embedded_cluster_has_the_charts_classes(chart):
    rendered = of_kind(render(chart), "PriorityClass")
    cluster = EmbeddedCluster(build_plugin_manager())
    stored = {o["metadata"]["name"]: o for o in cluster.store.list("priorityclasses")[0]}
    for name, pc in rendered.items():
        assert (stored[name]["value"], stored[name].get("globalDefault", False), stored[name]["preemptionPolicy"]) == (
            pc["value"], False, "PreemptLowerPriority")
    assert sorted(stored) == sorted([*rendered, "system-cluster-critical", "system-node-critical"])
    assert {pc["metadata"]["name"] for pc in kai_priority_classes()} == set(rendered)
    with pytest.raises(Forbidden, match="no PriorityClass with name trian was found"):
        cluster.store.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "typo"},
                              "spec": {"priorityClassName": "trian", "containers": [{"name": "c", "image": "b:1"}]}})


def test_get_priorityclasses_lists_them_with_their_values(tmp_path):
    from click.testing import CliRunner

    from kai_cli.main import cli

    state = tmp_path / "state.yaml"
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": "1"}}}
    state.write_text(yaml.safe_dump(node))
    rows = CliRunner().invoke(cli, ["get", "pc", "--cluster", str(state)]).output.splitlines()
    assert rows[0].split() == ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE"]
    assert {r.split()[0]: r.split()[1:3] for r in rows[1:]} == {
        **{n: [str(v), "false"] for n, v in KAI_CLASSES.items()},
        "system-cluster-critical": ["2000000000", "false"], "system-node-critical": ["2000001000", "false"]}
