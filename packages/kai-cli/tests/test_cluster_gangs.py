"""Gang scheduling against a cluster (the fake API server in front of an embedded store): the
scheduler watches KAI's PodGroups when the cluster serves their CRD, and places a group whole or
writes nothing; on a cluster without the CRD it warns once and schedules as before, the
``pod-group-name`` annotation ignored."""

from __future__ import annotations

import logging

import pytest
import yaml

from kai_core.api.resources import RES_BIND_REQUESTS, RES_POD_GROUPS, RES_PODS
from kai_core.apiserver.schema import crd_path, load_crd
from kai_core.apiserver.store import EmbeddedStore

pytest.importorskip("kubernetes", reason="the kubernetes client is not installed")

WARNING = "PodGroups not served by the cluster (podgroups.scheduling.run.ai/v2alpha2)"


def node(name: str, cpu: str) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "10"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(name: str, cpu: str, group: str | None = None) -> dict:
    meta: dict = {"name": name, "namespace": "default"}
    if group is not None:
        meta["annotations"] = {"pod-group-name": group}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"schedulerName": "kai-scheduler",
                     "containers": [{"name": "c", "image": "busybox:1", "resources": {"requests": {"cpu": cpu}}}]}}


def pod_group(name: str, min_member: int) -> dict:
    return {"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
            "metadata": {"name": name, "namespace": "default"}, "spec": {"minMember": min_member}}


def write_manifests(tmp_path, *objs: dict):
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(objs))
    return path


def scheduled_condition(store, name: str) -> dict | None:
    conditions = store.get(RES_PODS, name, "default").get("status", {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "PodScheduled"), None)


def test_a_podgroup_whose_second_pod_cannot_fit_gets_no_bind_request(live_cluster, tmp_path, caplog):
    # one node with 4 CPUs: train-0 (1 CPU) fits alone, train-1 (8 CPUs) fits nowhere
    path = write_manifests(tmp_path, node("n1", "4"), pod_group("train", 2),
                           pod("train-0", "1", group="train"), pod("train-1", "8", group="train"))
    lc = live_cluster(path)
    with caplog.at_level(logging.WARNING, logger="kai.cli.kube"):
        scheduler = lc.start("scheduler")
        binder = lc.start("binder")

        def both_reported() -> bool:
            conds = [scheduled_condition(lc.store, n) for n in ("train-0", "train-1")]
            return all(c and c.get("reason") == "Unschedulable" for c in conds)

        lc.wait_for(both_reported, "both members of PodGroup train to be reported unschedulable")
        assert RES_POD_GROUPS in scheduler.component.store.reflector_stats()
        assert scheduler.stop() == 0 and binder.stop() == 0

    message = scheduled_condition(lc.store, "train-0")["message"]
    assert message.startswith("PodGroup default/train (minMember 2):"), message
    assert "Insufficient cpu" in message
    assert lc.store.list(RES_BIND_REQUESTS)[0] == []
    assert not [c for c in lc.server.calls() if c.startswith("create bindrequests")]
    assert all(not lc.store.get(RES_PODS, n, "default")["spec"].get("nodeName") for n in ("train-0", "train-1"))
    assert not [r for r in caplog.records if WARNING in r.getMessage()]


def cluster_without_pod_groups() -> EmbeddedStore:
    """A cluster with kai's BindRequest CRD installed but not the PodGroup CRD."""
    store = EmbeddedStore()
    store.restore(load_crd(crd_path("bindrequests.scheduling.run.ai")))
    for obj in (node("n1", "4"), pod("plain", "1"), pod("annotated", "1", group="train")):
        store.create(obj)
    return store


def test_without_the_podgroup_crd_the_scheduler_warns_once_and_still_binds(live_cluster, caplog):
    lc = live_cluster(store=cluster_without_pod_groups())
    with caplog.at_level(logging.WARNING, logger="kai.cli.kube"):
        scheduler = lc.start("scheduler", gates="")
        binder = lc.start("binder", gates="")

        def bound() -> bool:
            return all(lc.store.get(RES_PODS, n, "default")["spec"].get("nodeName") == "n1"
                       for n in ("plain", "annotated"))

        lc.wait_for(bound, "both pods to be bound to n1")
        assert RES_POD_GROUPS not in scheduler.component.store.reflector_stats()
        assert scheduler.stop() == 0 and binder.stop() == 0

    warnings = [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert [r.levelno for r in caplog.records if WARNING in r.getMessage()] == [logging.WARNING]
    assert "kubectl apply -f deploy/crds/scheduling.run.ai_podgroups.yaml" in warnings[0]
    assert "gang scheduling by PodGroup is off" in warnings[0]
    assert "groups declared by plugins still work" in warnings[0]
    assert not [c for c in lc.server.calls() if "podgroups" in c]  # never listed nor watched
    phases = [b.get("status", {}).get("phase") for b in lc.store.list(RES_BIND_REQUESTS)[0]]
    assert phases == ["Succeeded", "Succeeded"]
