"""The binder carries out BindRequests: claim finalizer + allocation + reservation, pods/binding,
status; failures roll back exactly what the attempt wrote."""

from __future__ import annotations

import pytest
from kai_binder.binder import Binder
from kai_binder.claims import FINALIZER
from kai_core.cluster import EmbeddedCluster
from kai_core.cycle import Scheduler, SchedulerConfig
from kai_core.errors import Conflict
from kai_core.features import FeatureGates
from kai_core.manifests import parse_documents
from kai_core.plugins import build_plugin_manager
from kai_core.resources import RES_BIND_REQUESTS, RES_CLAIMS, RES_PODS

GATES = FeatureGates.parse("DynamicResourceAllocation=true")

CLUSTER = """
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {allocatable: {cpu: "8", memory: 16Gi, pods: "10"}, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: fpga.example.com}
spec: {selectors: [{cel: {expression: "device.driver == 'fpga.example.com'"}}]}
---
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: n1-fpga}
spec:
  driver: fpga.example.com
  nodeName: n1
  pool: {name: n1, generation: 1, resourceSliceCount: 1}
  devices: [{name: fpga-0}, {name: fpga-1}]
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: shared-fpga}
spec: {devices: {requests: [{name: fpga, exactly: {deviceClassName: fpga.example.com}}]}}
"""


def pod(name: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  schedulerName: kai-scheduler
  containers: [{{name: c, image: busybox:1, resources: {{claims: [{{name: fpga}}]}}}}]
  resourceClaims: [{{name: fpga, resourceClaimName: shared-fpga}}]
"""


@pytest.fixture
def cluster():
    pm = build_plugin_manager(load_external=False)
    c = EmbeddedCluster(pm)
    for m in parse_documents(CLUSTER + "---" + pod("p1"), "test"):
        c.store.restore(m.obj)
    c.scheduler = Scheduler(c.store, pm, SchedulerConfig(features=GATES))
    c.binder = Binder(c.store, pm, GATES)
    return c


def the_bind_request(store) -> dict:
    [br] = store.list(RES_BIND_REQUESTS)[0]
    return br


def test_binds_pod_and_writes_claim(cluster):
    assert cluster.scheduler.run_cycle().scheduled == 1
    assert cluster.binder.run_once().succeeded == 1
    store = cluster.store
    p = store.get(RES_PODS, "p1", "default")
    claim = store.get(RES_CLAIMS, "shared-fpga", "default")
    assert p["spec"]["nodeName"] == "n1"
    assert claim["metadata"]["finalizers"] == [FINALIZER]
    assert claim["status"]["reservedFor"] == [{"resource": "pods", "name": "p1", "uid": p["metadata"]["uid"]}]
    assert claim["status"]["allocation"]["devices"]["results"][0]["device"] == "fpga-0"
    assert the_bind_request(store)["status"] == {"phase": "Succeeded"}


def test_reconcile_is_idempotent(cluster):
    cluster.scheduler.run_cycle()
    cluster.binder.run_once()
    rv = cluster.store.resource_version
    assert cluster.binder.reconcile(the_bind_request(cluster.store)) == ("Succeeded", "")
    assert cluster.binder.run_once().succeeded == 0
    assert cluster.store.resource_version == rv  # nothing written


def test_pod_already_bound_to_the_node_is_success_without_writes(cluster):
    cluster.scheduler.run_cycle()
    cluster.store.bind("default", "p1", "n1")
    br = the_bind_request(cluster.store)
    assert cluster.binder.reconcile(br) == ("Succeeded", "")
    claim = cluster.store.get(RES_CLAIMS, "shared-fpga", "default")
    assert "allocation" not in (claim.get("status") or {})


def test_shared_claim_second_pod_only_reserves(cluster):
    cluster.scheduler.run_cycle()
    cluster.binder.run_once()
    for m in parse_documents(pod("p2"), "test"):
        cluster.store.restore(m.obj)
    cluster.scheduler.run_cycle()
    cluster.binder.run_once()
    claim = cluster.store.get(RES_CLAIMS, "shared-fpga", "default")
    assert [r["name"] for r in claim["status"]["reservedFor"]] == ["p1", "p2"]
    assert len(claim["status"]["allocation"]["devices"]["results"]) == 1
    assert cluster.store.get(RES_PODS, "p2", "default")["spec"]["nodeName"] == "n1"


def test_claim_allocated_elsewhere_fails_and_leaves_nothing(cluster):
    cluster.scheduler.run_cycle()
    # meanwhile someone else allocated the claim to the other device
    claim = cluster.store.get(RES_CLAIMS, "shared-fpga", "default")
    claim["status"] = {"allocation": {"devices": {"results": [
        {"request": "fpga", "driver": "fpga.example.com", "pool": "n1", "device": "fpga-1"}]}}}
    cluster.store.update_status(claim)
    result = cluster.binder.run_once()
    assert result.failed == 1 and "allocated to other devices" in result.reasons[0]
    br = the_bind_request(cluster.store)
    assert br["status"]["phase"] == "Failed" and "shared-fpga" in br["status"]["reason"]
    claim = cluster.store.get(RES_CLAIMS, "shared-fpga", "default")
    assert claim["status"]["allocation"]["devices"]["results"][0]["device"] == "fpga-1"  # theirs, untouched
    assert "reservedFor" not in claim["status"]
    assert not cluster.store.get(RES_PODS, "p1", "default")["spec"].get("nodeName")


def test_bind_failure_rolls_back_claim(cluster, monkeypatch):
    cluster.scheduler.run_cycle()

    def refuse(*a, **kw):
        raise Conflict("pods/binding refused for the test")

    monkeypatch.setattr(cluster.store, "bind", refuse)
    result = cluster.binder.run_once()
    assert result.failed == 1 and "refused for the test" in result.reasons[0]
    claim = cluster.store.get(RES_CLAIMS, "shared-fpga", "default")
    assert not (claim.get("status") or {}).get("allocation")
    assert not (claim.get("status") or {}).get("reservedFor")
    assert FINALIZER not in (claim["metadata"].get("finalizers") or [])
    # the scheduler deletes the failed request and schedules the pod again
    monkeypatch.undo()
    cluster.scheduler.run_cycle()
    cluster.binder.run_once()
    assert the_bind_request(cluster.store)["status"]["phase"] == "Succeeded"
    assert cluster.store.get(RES_PODS, "p1", "default")["spec"]["nodeName"] == "n1"


def test_claim_status_conflict_is_retried(cluster, monkeypatch):
    cluster.scheduler.run_cycle()
    real = cluster.store.update_status
    calls = {"n": 0}

    def flaky(obj):
        if obj.get("kind") == "ResourceClaim" and calls["n"] == 0:
            calls["n"] += 1
            raise Conflict("the object has been modified")
        return real(obj)

    monkeypatch.setattr(cluster.store, "update_status", flaky)
    assert cluster.binder.run_once().succeeded == 1
    assert calls["n"] == 1


def test_missing_pod_fails_request(cluster):
    cluster.scheduler.run_cycle()
    br = the_bind_request(cluster.store)
    br_name = br["metadata"]["name"]
    # deleting the pod garbage-collects the request too (ownerReference)
    cluster.store.delete(RES_PODS, "p1", "default")
    assert cluster.store.list(RES_BIND_REQUESTS)[0] == []
    assert cluster.binder.reconcile(br)[0] == "Failed"
    assert br_name
