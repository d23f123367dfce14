"""What a cluster serves, checked at start (kai_core.client.discovery): one clear error (exit 2) naming
what to install, and clusters serving only resource.k8s.io/v1beta1 or v1beta2 handled by
conversion at the wire."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from kai_cli.main import cli
from kai_core.api.kinds import builtin_kinds
from kai_core.api.resources import RES_BIND_REQUESTS, RES_CLAIMS, RES_PODS
from kai_core.apiserver.store import EmbeddedStore
from kai_core.client.discovery import DRA_GROUP, dra_kinds_at, served_dra_version

pytest.importorskip("kubernetes", reason="the kubernetes client is not installed")


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.output, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("kai-cli: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "served,want",
    [(["v1", "v1beta1"], "v1"), (["v1beta1", "v1beta2"], "v1beta2"), (["v1beta1"], "v1beta1"),
     (["v1alpha3"], None), ([], None)],
)
def test_the_best_served_dra_version_is_used(served, want):
    assert served_dra_version({DRA_GROUP: served}) == want


def with_bind_request_crd(store: EmbeddedStore) -> EmbeddedStore:
    from kai_core.cluster import builtin_crds

    for crd in builtin_crds():
        store.restore(crd)
    return store


@pytest.mark.parametrize("component", ["scheduler", "binder"])
def test_missing_bind_request_crd_is_one_error_saying_what_to_install(live_cluster, component):
    lc = live_cluster(store=EmbeddedStore())  # a cluster without our CRD
    line = one_error_line(invoke("run", component, "--kubeconfig", str(lc.kubeconfig)))
    assert "does not serve BindRequests (bindrequests.scheduling.run.ai/v1alpha2)" in line
    assert "kubectl apply -f deploy/crds/scheduling.run.ai_bindrequests.yaml" in line
    started = [c for c in lc.server.calls() if c.startswith(("list ", "watch ", "create "))]
    assert not started  # nothing was started


def test_dra_gate_on_without_the_dra_api_is_one_error(live_cluster):
    no_dra = [k for k in builtin_kinds() if k.group != DRA_GROUP]
    lc = live_cluster(store=with_bind_request_crd(EmbeddedStore(kinds=no_dra)))
    line = one_error_line(invoke("run", "scheduler", "--kubeconfig", str(lc.kubeconfig),
                                 "--feature-gates=DynamicResourceAllocation=true"))
    assert "DynamicResourceAllocation feature gate is on but the cluster does not serve the DRA API" in line
    assert "Kubernetes 1.34" in line and "leave the gate off" in line


def test_both_missing_are_reported_together(live_cluster):
    no_dra = [k for k in builtin_kinds() if k.group != DRA_GROUP]
    lc = live_cluster(store=EmbeddedStore(kinds=no_dra))
    line = one_error_line(invoke("run", "binder", "--kubeconfig", str(lc.kubeconfig),
                                 "--feature-gates=DynamicResourceAllocation=true"))
    assert "BindRequests" in line and "DRA API" in line


def test_dra_gate_off_needs_no_dra_api(live_cluster):
    no_dra = [k for k in builtin_kinds() if k.group != DRA_GROUP]
    lc = live_cluster(store=with_bind_request_crd(EmbeddedStore(kinds=no_dra)))
    running = lc.start("scheduler", gates="")
    assert running.stop() == 0 and running.error is None


def test_plugin_kinds_not_served_are_reported_and_not_watched(live_cluster):
    lc = live_cluster(store=with_bind_request_crd(EmbeddedStore()))  # no ComputeDomain CRD installed
    lines: list[str] = []
    running = lc.start("scheduler", gates="", announce=lines.append)
    assert running.stop() == 0
    assert any("plugin dra-nvidia: ComputeDomain (resource.nvidia.com/v1beta1) is not served" in ln
               for ln in lines), lines
    assert not [c for c in lc.server.calls() if "computedomains" in c]


def test_plugin_kinds_served_are_watched_read_only(live_cluster, demo_path):
    lc = live_cluster(demo_path)
    running = lc.start("scheduler")
    assert "computedomains.resource.nvidia.com" in running.component.store.reflector_stats()
    assert running.stop() == 0
    calls = {c for c in lc.server.calls() if "computedomains" in c}
    assert calls == {"list computedomains.resource.nvidia.com", "watch computedomains.resource.nvidia.com"}


def dra_objects(version: str) -> list[dict]:
    """A node with one device, its class, and a pod whose claim asks for it, in ``version``'s shape."""
    api = f"{DRA_GROUP}/{version}"
    request = {"name": "dev", "deviceClassName": "dev.example.com", "allocationMode": "ExactCount",
               "count": 1}
    device = {"name": "dev-0", "attributes": {"model": {"string": "x1"}}}
    if version == "v1beta1":
        requests = [request]
        devices = [{"name": "dev-0", "basic": {"attributes": device["attributes"]}}]
    else:
        requests = [{"name": "dev", "exactly": {k: v for k, v in request.items() if k != "name"}}]
        devices = [device]
    return [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
         "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "10"},
                    "conditions": [{"type": "Ready", "status": "True"}]}},
        {"apiVersion": api, "kind": "DeviceClass", "metadata": {"name": "dev.example.com"},
         "spec": {"selectors": [{"cel": {"expression": "device.driver == 'dev.example.com'"}}]}},
        {"apiVersion": api, "kind": "ResourceSlice", "metadata": {"name": "n1-dev"},
         "spec": {"driver": "dev.example.com", "nodeName": "n1", "devices": devices,
                  "pool": {"name": "n1", "generation": 1, "resourceSliceCount": 1}}},
        {"apiVersion": api, "kind": "ResourceClaim", "metadata": {"name": "c", "namespace": "default"},
         "spec": {"devices": {"requests": requests}}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
         "spec": {"schedulerName": "kai-scheduler",
                  "resourceClaims": [{"name": "dev", "resourceClaimName": "c"}],
                  "containers": [{"name": "c", "image": "busybox:1",
                                  "resources": {"claims": [{"name": "dev"}]}}]}},
    ]


def old_dra_cluster(version: str) -> EmbeddedStore:
    """An embedded store playing an API server that serves resource.k8s.io at ``version`` only and
    stores objects as written (no v1 validation)."""
    from kai_core.api.kinds import ResourceKind

    kinds = [k for k in builtin_kinds() if k.group != DRA_GROUP]
    for k in dra_kinds_at(version):
        kinds.append(ResourceKind(k.group, k.version, k.kind, k.plural, k.namespaced, has_status=k.has_status,
                                  singular=k.singular, field_selectors=k.field_selectors))
    store = with_bind_request_crd(EmbeddedStore(kinds=kinds))
    for obj in dra_objects(version):
        store.create(obj)
    return store


@pytest.mark.parametrize("version", ["v1beta1", "v1beta2"])
def test_a_cluster_serving_an_older_dra_version_is_read_and_written_in_that_version(live_cluster, version):
    lc = live_cluster(store=old_dra_cluster(version))
    scheduler = lc.start("scheduler")
    binder = lc.start("binder")
    assert scheduler.component.store.dra_version == version

    def bound() -> bool:
        brs = lc.store.list(RES_BIND_REQUESTS)[0]
        return bool(lc.store.get(RES_PODS, "p", "default")["spec"].get("nodeName")) and \
            [b.get("status", {}).get("phase") for b in brs] == ["Succeeded"]

    lc.wait_for(bound, f"the pod to be bound on a {version} cluster")
    assert scheduler.stop() == 0 and binder.stop() == 0
    claim = lc.store.get(RES_CLAIMS, "c", "default")
    assert claim["apiVersion"] == f"{DRA_GROUP}/{version}"
    # the claim keeps the served version's shape: the binder's v1 writes were converted back
    assert claim["spec"] == dra_objects(version)[3]["spec"]
    [result] = claim["status"]["allocation"]["devices"]["results"]
    assert (result["device"], result["pool"], result["driver"]) == ("dev-0", "n1", "dev.example.com")
    assert [r["name"] for r in claim["status"]["reservedFor"]] == ["p"]
    br = lc.store.list(RES_BIND_REQUESTS)[0][0]
    assert br["spec"]["resourceClaimAllocations"][0]["allocation"] == claim["status"]["allocation"]
    dra_paths = {r.path.split("/")[3] for r in lc.server.requests if r.path.startswith(f"/apis/{DRA_GROUP}/")}
    assert dra_paths == {version}  # every DRA call used the served version


def test_bad_kubeconfig_and_in_cluster_outside_a_cluster_are_one_line(tmp_path, monkeypatch):
    line = one_error_line(invoke("run", "scheduler", "--kubeconfig", str(tmp_path / "nope")))
    assert f"--kubeconfig {tmp_path / 'nope'}: cannot load" in line
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    line = one_error_line(invoke("run", "binder", "--in-cluster"))
    assert "--in-cluster: not running in a cluster" in line


def test_queues_served_are_watched_read_only(live_cluster, demo_path):
    lc = live_cluster(demo_path)
    running = lc.start("scheduler")
    assert "queues.scheduling.run.ai" in running.component.store.reflector_stats()
    assert running.stop() == 0
    assert {c for c in lc.server.calls() if "queues" in c} == {"list queues.scheduling.run.ai",
                                                              "watch queues.scheduling.run.ai"}


def test_a_cluster_without_the_queue_crd_is_scheduled_without_queues(live_cluster):
    from kai_core.cluster import builtin_crds

    store = EmbeddedStore()
    for crd in builtin_crds():
        if crd["metadata"]["name"] != "queues.scheduling.run.ai":
            store.restore(crd)
    lc = live_cluster(store=store)
    running = lc.start("scheduler", gates="")
    assert running.stop() == 0 and running.error is None
    assert not [c for c in lc.server.calls() if "queues" in c]


def test_the_scheduler_writes_queue_status_on_a_real_cluster(live_cluster):
    from kai_core.api.resources import RES_QUEUES

    store = with_bind_request_crd(EmbeddedStore())  # no embedded controllers: only the scheduler writes
    unlimited = {"quota": -1, "overQuotaWeight": 1, "limit": -1}
    store.restore({"apiVersion": "scheduling.run.ai/v2", "kind": "Queue", "metadata": {"name": "team-a"},
                   "spec": {"resources": {"gpu": unlimited, "cpu": unlimited, "memory": unlimited}}})
    store.restore({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                   "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "10"},
                              "conditions": [{"type": "Ready", "status": "True"}]}})
    for name, node in (("running", "n1"), ("waiting", None)):
        spec = {"schedulerName": "kai-scheduler",
                "containers": [{"name": "c", "image": "busybox:1", "resources": {"requests": {"cpu": "1"}}}]}
        if node:
            spec["nodeName"] = node
        store.restore({"apiVersion": "v1", "kind": "Pod", "spec": spec, "metadata": {
            "name": name, "namespace": "default", "labels": {"kai.scheduler/queue": "team-a"}}})
    lc = live_cluster(store=store)
    running = lc.start("scheduler", gates="")

    def status() -> dict:
        return store.get(RES_QUEUES, "team-a").get("status") or {}

    lc.wait_for(lambda: status().get("requested") == {"cpu": "2"}, "the scheduler to write the Queue's status")
    assert status()["allocated"] == {"cpu": "1"}
    assert running.stop() == 0 and running.error is None
