"""The embedded store behaves as the Kubernetes API server does, for what a scheduler and binder see.

Every test goes through the public store interface (create, get, list, update, update_status,
patch, delete, bind, watch, events_since, restore) and asserts on what a client would observe:
returned objects, errors and their HTTP codes, watch events, saved state.
"""

from __future__ import annotations

import threading
from pathlib import Path

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from kai_core.api.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    MethodNotAllowed,
    NotFound,
    UnknownKind,
    UnsupportedMediaType,
)
from kai_core.api.features import FeatureGates
from kai_core.api.store import Store
from kai_core.apiserver.manifests import read_manifests, save_state
from kai_core.apiserver.schema import load_crd
from kai_core.apiserver.store import EmbeddedStore
from kai_core.cluster import EmbeddedCluster
from kai_core.framework.hookspecs import hookimpl
from kai_core.plugins import build_plugin_manager

ROOT = Path(__file__).resolve().parents[3]
BR = "bindrequests.scheduling.run.ai"
CLAIMS = "resourceclaims.resource.k8s.io"
TEMPLATES = "resourceclaimtemplates.resource.k8s.io"
CLASSES = "deviceclasses.resource.k8s.io"
SLICES = "resourceslices.resource.k8s.io"
CRDS = "customresourcedefinitions.apiextensions.k8s.io"
K8S_VERSION = "1.34"  # the first release with resource.k8s.io/v1, shipped by kubernetes-validate


# ---------------------------------------------------------------------------------------------
# object factories


def pod(name: str = "p", namespace: str | None = None, **spec) -> dict:
    md: dict = {"name": name}
    if namespace:
        md["namespace"] = namespace
    spec.setdefault("containers", [{"name": "main", "image": "busybox:1.36"}])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec}


def node(name: str = "n1", **status) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": status}


def configmap(name: str = "cm", namespace: str | None = None, **data) -> dict:
    md: dict = {"name": name}
    if namespace:
        md["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": data}


def device_class(
    name: str = "gpu.example.com", expression: str = "device.driver == 'gpu.example.com'"
) -> dict:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": {"selectors": [{"cel": {"expression": expression}}]},
    }


def claim(name: str = "claim", expression: str | None = None, **exactly) -> dict:
    exactly.setdefault("deviceClassName", "gpu.example.com")
    if expression is not None:
        exactly["selectors"] = [{"cel": {"expression": expression}}]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}},
    }


def allocation(device: str = "gpu-0") -> dict:
    return {
        "devices": {
            "results": [{"request": "gpu", "driver": "gpu.example.com", "pool": "n1", "device": device}]
        }
    }


def owner_ref(obj: dict) -> dict:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
    }


def bind_request(owner: dict, name: str | None = None) -> dict:
    return {
        "apiVersion": "scheduling.run.ai/v1alpha2",
        "kind": "BindRequest",
        "metadata": {
            "name": name or f"{owner['metadata']['name']}-br",
            "namespace": "default",
            "ownerReferences": [owner_ref(owner)],
        },
        "spec": {"podName": owner["metadata"]["name"], "selectedNode": "n1"},
    }


@pytest.fixture
def store() -> EmbeddedStore:
    return EmbeddedStore()


@pytest.fixture
def cluster() -> EmbeddedCluster:
    return EmbeddedCluster(build_plugin_manager(load_external=False))


def names(items: list[dict]) -> list[str]:
    return [o["metadata"]["name"] for o in items]


# ---------------------------------------------------------------------------------------------
# identity: uid, name, resourceVersion


def test_embedded_store_implements_the_store_interface(store):
    assert isinstance(store, Store)


def test_create_fills_in_uid_resource_version_generation_and_creation_time(store):
    created = store.create(pod())
    md = created["metadata"]
    assert len(md["uid"]) == 36 and md["uid"].count("-") == 4
    assert md["resourceVersion"].isdigit()
    assert md["generation"] == 1
    assert md["creationTimestamp"].endswith("Z")
    assert store.get("pods", "p") == created


def test_create_ignores_identity_fields_the_client_sends(store):
    obj = pod()
    obj["metadata"].update(
        uid="mine",
        resourceVersion="999",
        creationTimestamp="2000-01-01T00:00:00Z",
        deletionTimestamp="2000-01-01T00:00:00Z",
    )
    md = store.create(obj)["metadata"]
    assert md["uid"] != "mine" and md["resourceVersion"] != "999"
    assert md["creationTimestamp"] != "2000-01-01T00:00:00Z" and "deletionTimestamp" not in md


def test_every_object_gets_its_own_uid(store):
    uids = {store.create(configmap(f"cm{i}"))["metadata"]["uid"] for i in range(20)}
    assert len(uids) == 20


def test_generate_name_appends_a_random_suffix(store):
    obj = pod()
    del obj["metadata"]["name"]
    obj["metadata"]["generateName"] = "worker-"
    first = store.create(obj)
    second = store.create(obj)
    for made in (first, second):
        name = made["metadata"]["name"]
        assert name.startswith("worker-") and len(name) == len("worker-") + 5
    assert first["metadata"]["name"] != second["metadata"]["name"]


def test_an_object_needs_a_name_or_generate_name(store):
    obj = pod()
    del obj["metadata"]["name"]
    with pytest.raises(Invalid, match="metadata.name or metadata.generateName is required") as err:
        store.create(obj)
    assert err.value.code == 422


def test_create_of_an_existing_name_is_409_already_exists(store):
    store.create(pod())
    with pytest.raises(AlreadyExists, match='pods "p" already exists') as err:
        store.create(pod())
    assert err.value.code == 409 and err.value.reason == "AlreadyExists"
    assert err.value.status()["code"] == 409


def test_same_name_in_another_namespace_is_another_object(store):
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    a = store.create(pod(namespace="team-a"))
    b = store.create(pod())
    assert a["metadata"]["uid"] != b["metadata"]["uid"]
    assert store.get("pods", "p", "team-a")["metadata"]["namespace"] == "team-a"


def test_get_and_delete_of_a_missing_object_are_404(store):
    with pytest.raises(NotFound, match='pods "nope" not found') as err:
        store.get("pods", "nope")
    assert err.value.code == 404
    with pytest.raises(NotFound):
        store.delete("pods", "nope")
    with pytest.raises(NotFound):
        store.update(pod("nope"))


def test_resource_version_increases_with_every_write(store):
    rvs = [int(store.create(configmap())["metadata"]["resourceVersion"])]
    cm = store.get("configmaps", "cm")
    cm["data"] = {"a": "1"}
    rvs.append(int(store.update(cm)["metadata"]["resourceVersion"]))
    rvs.append(
        int(store.patch("configmaps", "cm", None, {"data": {"b": "2"}})["metadata"]["resourceVersion"])
    )
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    assert store.resource_version == rvs[-1]
    _, list_rv = store.list("configmaps")
    assert list_rv == str(rvs[-1])


def test_an_update_that_changes_nothing_is_not_a_write(store):
    created = store.create(configmap(data="x"))
    before = store.resource_version
    same = store.update(store.get("configmaps", "cm"))
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert store.resource_version == before
    assert store.events_since(before)[0] == []


def test_returned_objects_are_copies(store):
    created = store.create(configmap(data="x"))
    created["data"]["data"] = "changed"
    got = store.get("configmaps", "cm")
    got["data"]["data"] = "changed too"
    items, _ = store.list("configmaps")
    items[0]["metadata"]["name"] = "other"
    assert store.get("configmaps", "cm")["data"] == {"data": "x"}


# ---------------------------------------------------------------------------------------------
# updates: optimistic concurrency, status subresource, generation, merge patch


def test_update_with_a_stale_resource_version_is_409(store):
    store.create(configmap())
    first = store.get("configmaps", "cm")
    second = store.get("configmaps", "cm")
    first["data"] = {"winner": "1"}
    store.update(first)
    second["data"] = {"loser": "1"}
    with pytest.raises(Conflict, match="the object has been modified") as err:
        store.update(second)
    assert err.value.code == 409
    assert store.get("configmaps", "cm")["data"] == {"winner": "1"}


def test_update_without_a_resource_version_is_unconditional(store):
    store.create(configmap())
    store.patch("configmaps", "cm", None, {"data": {"x": "1"}})
    blind = configmap(data="overwritten")
    assert store.update(blind)["data"] == {"data": "overwritten"}


def test_update_with_another_uid_is_409(store):
    store.create(configmap())
    obj = store.get("configmaps", "cm")
    obj["metadata"]["uid"] = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(Conflict, match="UID in precondition"):
        store.update(obj)


def test_update_keeps_identity_fields(store):
    created = store.create(configmap())
    obj = store.get("configmaps", "cm")
    obj["metadata"]["creationTimestamp"] = "2000-01-01T00:00:00Z"
    obj["data"] = {"a": "b"}
    updated = store.update(obj)
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    assert updated["metadata"]["creationTimestamp"] == created["metadata"]["creationTimestamp"]


def test_update_ignores_status_and_update_status_ignores_everything_else(store):
    store.create(pod())
    p = store.get("pods", "p")
    p["metadata"]["labels"] = {"team": "a"}
    p["status"]["phase"] = "Running"
    updated = store.update(p)
    assert updated["metadata"]["labels"] == {"team": "a"}
    assert updated["status"]["phase"] == "Pending"

    p = store.get("pods", "p")
    p["metadata"]["labels"] = {"team": "b"}
    p["spec"]["priority"] = 100
    p["status"]["phase"] = "Running"
    updated = store.update_status(p)
    assert updated["status"]["phase"] == "Running"
    assert updated["metadata"]["labels"] == {"team": "a"} and updated["spec"]["priority"] == 0


def test_update_status_checks_the_resource_version_too(store):
    store.create(pod())
    stale = store.get("pods", "p")
    store.patch("pods", "p", None, {"status": {"phase": "Running"}}, subresource="status")
    stale["status"]["phase"] = "Failed"
    with pytest.raises(Conflict):
        store.update_status(stale)


def test_custom_resource_status_subresource(cluster):
    store = cluster.store
    p = store.create(pod())
    br = bind_request(p)
    br["status"] = {"phase": "Succeeded"}
    created = store.create(br)
    assert "status" not in created  # status is the binder's to write, not the creator's
    created["status"] = {"phase": "Failed", "reason": "node gone"}
    created["spec"]["selectedNode"] = "n2"
    after = store.update_status(created)
    assert after["status"] == {"phase": "Failed", "reason": "node gone"}
    assert after["spec"]["selectedNode"] == "n1"
    after["status"] = {"phase": "Succeeded"}
    after["spec"]["selectedNode"] = "n2"
    updated = store.update(after)
    assert updated["status"] == {"phase": "Failed", "reason": "node gone"}
    assert updated["spec"]["selectedNode"] == "n2"


def test_update_status_of_a_kind_without_status_subresource_is_404(store):
    store.create(configmap())
    with pytest.raises(NotFound, match="configmaps/status"):
        store.update_status(store.get("configmaps", "cm"))
    with pytest.raises(NotFound):
        store.patch("configmaps", "cm", None, {"status": {}}, subresource="status")


def test_generation_bumps_on_spec_changes_only(store):
    store.create(device_class())
    dc = store.get(CLASSES, "gpu.example.com")
    dc["metadata"]["labels"] = {"a": "b"}
    assert store.update(dc)["metadata"]["generation"] == 1
    dc = store.get(CLASSES, "gpu.example.com")
    dc["spec"]["selectors"][0]["cel"]["expression"] = "device.driver == 'other'"
    assert store.update(dc)["metadata"]["generation"] == 2
    store.create(pod())
    running = store.patch("pods", "p", None, {"status": {"phase": "Running"}}, subresource="status")
    assert running["metadata"]["generation"] == 1


def test_generation_ignores_defaults_the_update_left_out(store):
    store.create(pod())
    minimal = pod()  # no schedulerName, dnsPolicy, ...: defaulting fills them in again
    minimal["metadata"]["labels"] = {"a": "b"}
    assert store.update(minimal)["metadata"]["generation"] == 1


def test_merge_patch_adds_replaces_and_removes(store):
    cm = configmap(keep="1", drop="2")
    cm["metadata"]["labels"] = {"a": "1", "b": "2"}
    store.create(cm)
    patched = store.patch(
        "configmaps",
        "cm",
        None,
        {"metadata": {"labels": {"b": None, "c": "3"}}, "data": {"drop": None, "new": "4"}},
    )
    assert patched["metadata"]["labels"] == {"a": "1", "c": "3"}
    assert patched["data"] == {"keep": "1", "new": "4"}


def test_merge_patch_replaces_lists_whole(store):
    store.create(pod())
    patched = store.patch("pods", "p", None, {"metadata": {"finalizers": ["example.com/a", "example.com/b"]}})
    patched = store.patch("pods", "p", None, {"metadata": {"finalizers": ["example.com/b"]}})
    assert patched["metadata"]["finalizers"] == ["example.com/b"]


def test_merge_patch_with_a_resource_version_is_conditional(store):
    created = store.create(configmap())
    store.patch("configmaps", "cm", None, {"data": {"x": "1"}})
    with pytest.raises(Conflict):
        store.patch(
            "configmaps",
            "cm",
            None,
            {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "data": {"y": "2"}},
        )


def test_merge_patch_of_status_only_touches_status(store):
    store.create(pod())
    patched = store.patch(
        "pods", "p", None, {"spec": {"priority": 5}, "status": {"phase": "Running"}}, subresource="status"
    )
    assert patched["status"]["phase"] == "Running" and patched["spec"]["priority"] == 0
    patched = store.patch(
        "pods", "p", None, {"metadata": {"labels": {"x": "y"}}, "status": {"phase": "Failed"}}
    )
    assert patched["status"]["phase"] == "Running" and patched["metadata"]["labels"] == {"x": "y"}


def test_merge_patch_refuses_a_non_object_and_a_missing_target(store):
    store.create(configmap())
    with pytest.raises(BadRequest):
        store.patch("configmaps", "cm", None, ["not", "a", "patch"])  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        store.patch("configmaps", "missing", None, {"data": {}})


def test_merge_patch_cannot_rename_or_move_an_object(store):
    store.create(configmap())
    patched = store.patch(
        "configmaps", "cm", None, {"metadata": {"name": "other", "namespace": "kube-system"}}
    )
    assert patched["metadata"]["name"] == "cm" and patched["metadata"]["namespace"] == "default"


def _cond(type_: str, status: str = "True", **fields) -> dict:
    return {"type": type_, "status": status, **fields}


def test_strategic_merge_patch_merges_conditions_by_type(store):
    store.create(pod())
    store.patch("pods", "p", None, {"status": {"conditions": [
        _cond("PodScheduled"), _cond("Ready", "False", reason="NotYet", lastProbeTime="t0")]}}, "status")
    patched = store.patch("pods", "p", None, {"status": {"conditions": [
        _cond("PodBound", reason="Bound", lastProbeTime=None)]}}, "status", strategic=True)
    # a new type is appended as given (a null included), the others are kept in their order
    assert [c["type"] for c in patched["status"]["conditions"]] == ["PodScheduled", "Ready", "PodBound"]
    assert patched["status"]["conditions"][2] == _cond("PodBound", reason="Bound", lastProbeTime=None)
    # the same type: the fields named replace its own in place, a null removes one, the rest stay
    patched = store.patch("pods", "p", None, {"status": {"conditions": [
        _cond("Ready", reason=None, lastProbeTime=None, message="up")]}}, "status", strategic=True)
    assert patched["status"]["conditions"][1] == _cond("Ready", message="up")
    assert [c["type"] for c in patched["status"]["conditions"]] == ["PodScheduled", "Ready", "PodBound"]
    # the same patch as a JSON merge patch replaces the list whole
    patched = store.patch("pods", "p", None, {"status": {"conditions": [_cond("Ready")]}}, "status")
    assert patched["status"]["conditions"] == [_cond("Ready")]


def test_strategic_merge_patch_of_node_conditions_and_other_fields(store):
    store.create(node(conditions=[_cond("Ready"), _cond("MemoryPressure", "False")],
                      addresses=[{"type": "InternalIP", "address": "10.0.0.1"}], phase="Running"))
    patched = store.patch("nodes", "n1", None, {"status": {
        "conditions": [_cond("MemoryPressure")],
        "addresses": [{"type": "Hostname", "address": "n1"}],  # no merge key kept for it: replaced
        "phase": None,  # null deletes
    }}, "status", strategic=True)
    assert patched["status"]["conditions"] == [_cond("Ready"), _cond("MemoryPressure")]
    assert patched["status"]["addresses"] == [{"type": "Hostname", "address": "n1"}]
    assert "phase" not in patched["status"]
    # a list outside the table is replaced, as by a merge patch; maps merge
    store.create(pod())
    store.patch("pods", "p", None, {"metadata": {"finalizers": ["example.com/a"], "labels": {"a": "1"}}})
    patched = store.patch("pods", "p", None, {"metadata": {"finalizers": ["example.com/b"], "labels": {"b": "2"}}},
                          strategic=True)
    assert patched["metadata"]["finalizers"] == ["example.com/b"]
    assert patched["metadata"]["labels"] == {"a": "1", "b": "2"}


def test_strategic_merge_patch_refuses_what_it_cannot_do(cluster, store):
    store.create(pod())
    with pytest.raises(BadRequest, match="merge key 'type'"):
        store.patch("pods", "p", None, {"status": {"conditions": [{"status": "True"}]}}, "status", strategic=True)
    with pytest.raises(BadRequest, match=r"\$patch"):
        store.patch("pods", "p", None, {"status": {"conditions": [{"type": "X", "$patch": "delete"}]}},
                    "status", strategic=True)
    # custom resources take no strategic merge patch (the API server answers 415)
    p = cluster.store.create(pod())
    cluster.store.create(bind_request(p))
    with pytest.raises(UnsupportedMediaType) as exc:
        cluster.store.patch(BR, "p-br", None, {"status": {"phase": "Succeeded"}}, "status", strategic=True)
    assert exc.value.code == 415 and "BindRequest default/p-br" in exc.value.message
    assert not (cluster.store.get(BR, "p-br").get("status") or {}).get("phase")


def test_strategic_merge_patch_uid_is_a_precondition(store):
    created = store.create(pod())
    cond = {"status": {"conditions": [_cond("PodBound")]}}
    with pytest.raises(Conflict, match="UID in precondition"):
        store.patch("pods", "p", None, {"metadata": {"uid": "another"}, **cond}, "status", strategic=True)
    patched = store.patch("pods", "p", None, {"metadata": {"uid": created["metadata"]["uid"]}, **cond}, "status",
                          strategic=True)
    assert patched["status"]["conditions"] == [_cond("PodBound")]


# ---------------------------------------------------------------------------------------------
# deletion: finalizers, namespaces, garbage collection


def test_delete_waits_for_finalizers_and_removing_the_last_one_deletes(store):
    c = claim()
    c["metadata"]["finalizers"] = ["resource.kubernetes.io/delete-protection", "example.com/other"]
    store.create(c)
    store.delete(CLAIMS, "claim")
    deleting = store.get(CLAIMS, "claim")
    assert deleting["metadata"]["deletionTimestamp"].endswith("Z")
    store.delete(CLAIMS, "claim")  # deleting again changes nothing
    assert (
        store.get(CLAIMS, "claim")["metadata"]["resourceVersion"] == deleting["metadata"]["resourceVersion"]
    )

    deleting["metadata"]["finalizers"] = ["example.com/other"]
    still = store.update(deleting)
    assert still["metadata"]["deletionTimestamp"] == deleting["metadata"]["deletionTimestamp"]

    rv = store.resource_version
    store.patch(CLAIMS, "claim", None, {"metadata": {"finalizers": None}})
    with pytest.raises(NotFound):
        store.get(CLAIMS, "claim")
    events, _ = store.events_since(rv, {CLAIMS})
    assert [e.type for e in events] == ["DELETED"]


def test_no_new_finalizer_on_an_object_being_deleted(store):
    c = claim()
    c["metadata"]["finalizers"] = ["example.com/a"]
    store.create(c)
    store.delete(CLAIMS, "claim")
    obj = store.get(CLAIMS, "claim")
    obj["metadata"]["finalizers"].append("example.com/b")
    with pytest.raises(Forbidden, match="no new finalizers"):
        store.update(obj)


def test_deletion_timestamp_cannot_be_set_or_cleared_by_an_update(store):
    c = claim()
    c["metadata"]["finalizers"] = ["example.com/a"]
    store.create(c)
    obj = store.get(CLAIMS, "claim")
    obj["metadata"]["deletionTimestamp"] = "2020-01-01T00:00:00Z"
    assert "deletionTimestamp" not in store.update(obj)["metadata"]
    store.delete(CLAIMS, "claim")
    obj = store.get(CLAIMS, "claim")
    del obj["metadata"]["deletionTimestamp"]
    assert "deletionTimestamp" in store.update(obj)["metadata"]


def test_create_in_a_missing_namespace_is_404(store):
    with pytest.raises(NotFound, match='namespaces "nowhere" not found'):
        store.create(pod(namespace="nowhere"))


def test_a_namespaced_object_without_namespace_goes_to_default(store):
    assert store.create(pod())["metadata"]["namespace"] == "default"
    assert store.get("pods", "p", "default")["metadata"]["name"] == "p"


def test_cluster_scoped_objects_have_no_namespace(store):
    n = node()
    n["metadata"]["namespace"] = "default"
    assert "namespace" not in store.create(n)["metadata"]


def test_deleting_a_namespace_deletes_what_is_in_it(store):
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    store.create(pod(namespace="team-a"))
    store.create(configmap(namespace="team-a"))
    store.create(pod("stays"))
    store.delete("namespaces", "team-a")
    with pytest.raises(NotFound):
        store.get("namespaces", "team-a")
    assert store.list("pods", "team-a")[0] == [] and store.list("configmaps", "team-a")[0] == []
    assert names(store.list("pods")[0]) == ["stays"]


def test_a_namespace_terminates_until_its_last_object_goes(store):
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    held = configmap(namespace="team-a")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    store.create(held)
    store.delete("namespaces", "team-a")
    ns = store.get("namespaces", "team-a")
    assert ns["status"]["phase"] == "Terminating" and ns["metadata"]["deletionTimestamp"]
    with pytest.raises(Forbidden, match="because it is being terminated") as err:
        store.create(pod(namespace="team-a"))
    assert err.value.code == 403
    store.patch("configmaps", "cm", "team-a", {"metadata": {"finalizers": []}})
    with pytest.raises(NotFound):
        store.get("namespaces", "team-a")


def test_new_namespaces_are_active_and_system_ones_cannot_be_deleted(store):
    assert store.get("namespaces", "default")["status"]["phase"] == "Active"
    created = store.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "x"},
            "status": {"phase": "Terminating"},
        }
    )
    assert created["status"]["phase"] == "Active"
    with pytest.raises(Forbidden):
        store.delete("namespaces", "default")


def test_garbage_collection_deletes_dependents_when_the_owner_goes(cluster):
    store = cluster.store
    p = store.create(pod())
    store.create(bind_request(p))
    c = claim("pod-claim")
    c["metadata"]["ownerReferences"] = [owner_ref(p)]
    store.create(c)
    store.create(pod("other"))
    store.delete("pods", "p")
    assert store.list(BR)[0] == [] and store.list(CLAIMS)[0] == []
    assert names(store.list("pods")[0]) == ["other"]


def test_succeeded_bind_requests_stay_until_their_pod_goes(cluster):
    store = cluster.store
    p = store.create(pod())
    store.create(bind_request(p))
    store.bind("default", "p", "n1")
    store.patch(BR, "p-br", "default", {"status": {"phase": "Succeeded"}}, subresource="status")
    cluster.reconcile_controllers()
    assert store.get(BR, "p-br", "default")["status"] == {"phase": "Succeeded"}
    store.delete("pods", "p")
    with pytest.raises(NotFound):
        store.get(BR, "p-br", "default")


def test_a_dependent_with_a_live_owner_left_stays(store):
    a = store.create(configmap("a"))
    b = store.create(configmap("b"))
    dep = configmap("dep")
    dep["metadata"]["ownerReferences"] = [owner_ref(a), owner_ref(b)]
    store.create(dep)
    store.delete("configmaps", "a")
    assert store.get("configmaps", "dep")
    store.delete("configmaps", "b")
    with pytest.raises(NotFound):
        store.get("configmaps", "dep")


def test_garbage_collection_respects_the_dependents_finalizers(store):
    p = store.create(pod())
    c = claim()
    c["metadata"]["ownerReferences"] = [owner_ref(p)]
    c["metadata"]["finalizers"] = ["resource.kubernetes.io/delete-protection"]
    store.create(c)
    store.delete("pods", "p")
    assert store.get(CLAIMS, "claim")["metadata"]["deletionTimestamp"]


def test_an_object_created_for_an_owner_that_is_gone_is_collected(store):
    p = store.create(pod())
    store.delete("pods", "p")
    orphan = configmap()
    orphan["metadata"]["ownerReferences"] = [owner_ref(p)]
    store.create(orphan)
    with pytest.raises(NotFound):
        store.get("configmaps", "cm")


def test_owners_of_kinds_the_cluster_does_not_run_are_left_alone(store):
    worker = pod("worker-0")
    worker["metadata"]["ownerReferences"] = [
        {"apiVersion": "kubeflow.org/v2beta1", "kind": "MPIJob", "name": "job", "uid": "1234"}
    ]
    assert store.create(worker)
    assert store.get("pods", "worker-0")


# ---------------------------------------------------------------------------------------------
# pods/binding


def test_binding_assigns_the_node_and_marks_the_pod_scheduled(store):
    created = store.create(pod())
    store.bind("default", "p", "n1", pod_uid=created["metadata"]["uid"])
    bound = store.get("pods", "p")
    assert bound["spec"]["nodeName"] == "n1"
    [cond] = [c for c in bound["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert cond["status"] == "True"


def test_binding_a_missing_pod_is_404(store):
    with pytest.raises(NotFound, match='pods "ghost" not found'):
        store.bind("default", "ghost", "n1")


def test_binding_a_bound_pod_is_409_naming_the_node(store):
    store.create(pod())
    store.bind("default", "p", "n1")
    with pytest.raises(Conflict, match='already assigned to node "n1"') as err:
        store.bind("default", "p", "n2")
    assert err.value.code == 409
    assert store.get("pods", "p")["spec"]["nodeName"] == "n1"


def test_binding_with_another_pods_uid_is_409(store):
    store.create(pod())
    with pytest.raises(Conflict, match="UID in precondition"):
        store.bind("default", "p", "n1", pod_uid="not-the-uid")
    assert "nodeName" not in store.get("pods", "p")["spec"]


def test_binding_a_pod_being_deleted_or_gated_is_refused(store):
    held = pod()
    held["metadata"]["finalizers"] = ["example.com/hold"]
    store.create(held)
    store.delete("pods", "p")
    with pytest.raises(Conflict, match="being deleted"):
        store.bind("default", "p", "n1")
    store.create(pod("gated", schedulingGates=[{"name": "example.com/wait"}]))
    with pytest.raises(Conflict, match="schedulingGates"):
        store.bind("default", "gated", "n1")


def test_binding_needs_a_node_name(store):
    store.create(pod())
    with pytest.raises(Invalid, match="target.name"):
        store.bind("default", "p", "")


def test_an_update_cannot_assign_a_node(store):
    store.create(pod())
    p = store.get("pods", "p")
    p["spec"]["nodeName"] = "n1"
    with pytest.raises(Invalid, match="pods/binding"):
        store.update(p)
    p = store.get("pods", "p")
    p["spec"]["containers"][0]["image"] = "busybox:1.37"
    assert store.update(p)["spec"]["containers"][0]["image"] == "busybox:1.37"


# ---------------------------------------------------------------------------------------------
# watch and the event log


def test_watch_reports_added_modified_and_deleted_in_order(store):
    start = store.resource_version
    store.create(configmap())
    store.patch("configmaps", "cm", None, {"data": {"a": "1"}})
    store.create(pod())  # another kind: not in this watch
    store.delete("configmaps", "cm")
    events = list(store.watch("configmaps", str(start), timeout=0))
    assert [(e.type, e.object["metadata"]["name"]) for e in events] == [
        ("ADDED", "cm"),
        ("MODIFIED", "cm"),
        ("DELETED", "cm"),
    ]
    assert events[1].object["data"] == {"a": "1"}
    rvs = [int(e.resource_version) for e in events]
    assert rvs == sorted(rvs)
    assert events[2].object["metadata"]["resourceVersion"] == events[2].resource_version


def test_watch_events_are_copies(store):
    start = store.resource_version
    store.create(configmap(a="1"))
    [event] = list(store.watch("configmaps", str(start), timeout=0))
    event.object["data"]["a"] = "mutated"
    assert store.get("configmaps", "cm")["data"] == {"a": "1"}


def test_watch_without_a_version_starts_with_the_current_objects(store):
    store.create(configmap("a"))
    store.create(configmap("b"))
    store.delete("configmaps", "a")
    events = list(store.watch("configmaps", "0", timeout=0))
    assert [(e.type, e.object["metadata"]["name"]) for e in events] == [("ADDED", "b")]


def test_watch_waits_for_the_next_write(store):
    start = str(store.resource_version)
    watch = store.watch("configmaps", start, timeout=30)
    writer = threading.Timer(0.05, lambda: store.create(configmap("late")))
    writer.start()
    try:
        event = next(watch)
    finally:
        writer.join()
    assert (event.type, event.object["metadata"]["name"]) == ("ADDED", "late")


def test_watch_from_a_compacted_version_is_410_gone():
    store = EmbeddedStore(history=3)
    start = store.resource_version
    for i in range(5):
        store.create(configmap(f"cm{i}"))
    with pytest.raises(Gone) as err:
        store.watch("configmaps", str(start))
    assert err.value.code == 410
    with pytest.raises(Gone):
        store.events_since(start)
    recent = store.resource_version - 2
    assert [e.object["metadata"]["name"] for e in store.events_since(recent)[0]] == ["cm3", "cm4"]


def test_watch_of_an_unknown_resource_or_bad_version_is_refused(store):
    with pytest.raises(UnknownKind):
        store.watch("widgets", "0")
    with pytest.raises(BadRequest):
        store.watch("pods", "yesterday")


def test_events_since_filters_by_resource_and_returns_where_to_go_on(store):
    start = store.resource_version
    store.create(configmap())
    store.create(pod())
    events, now = store.events_since(start, {"pods"})
    assert [(e.type, e.resource) for e in events] == [("ADDED", "pods")]
    assert now == store.resource_version
    assert store.events_since(now) == ([], now)


def test_history_must_hold_at_least_one_event():
    with pytest.raises(ValueError):
        EmbeddedStore(history=0)


def test_restored_objects_keep_their_version_and_the_event_log_stays_in_order(store):
    start = store.resource_version
    old = configmap("old")
    old["metadata"]["resourceVersion"] = "2"  # older than the store's own writes
    restored = store.restore(old)
    assert restored["metadata"]["resourceVersion"] == "2"
    events, now = store.events_since(start)
    assert [e.object["metadata"]["name"] for e in events] == ["old"]
    store.create(configmap("new"))
    events, _ = store.events_since(now)
    assert [e.object["metadata"]["name"] for e in events] == ["new"]
    assert int(store.get("configmaps", "new")["metadata"]["resourceVersion"]) > now


def test_a_restored_version_ahead_of_the_store_moves_it_forward(store):
    far = configmap("far")
    far["metadata"]["resourceVersion"] = "1000"
    store.restore(far)
    assert store.get("configmaps", "far")["metadata"]["resourceVersion"] == "1000"
    assert int(store.create(configmap("next"))["metadata"]["resourceVersion"]) > 1000


# ---------------------------------------------------------------------------------------------
# label and field selectors


@pytest.fixture
def labelled(store):
    for name, labels in [
        ("a", {"app": "web", "tier": "front"}),
        ("b", {"app": "db", "tier": "back"}),
        ("c", {"app": "web"}),
        ("d", {}),
    ]:
        cm = configmap(name)
        cm["metadata"]["labels"] = labels
        store.create(cm)
    return store


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["a", "c"]),
        ("app==web", ["a", "c"]),
        ("app!=web", ["b", "d"]),  # != also matches objects without the label
        ("app in (web, db)", ["a", "b", "c"]),
        ("app notin (web)", ["b", "d"]),
        ("tier", ["a", "b"]),
        ("!tier", ["c", "d"]),
        ("app=web,tier", ["a"]),
        ("app=web,!tier", ["c"]),
        ("app in (db),tier=back", ["b"]),
        ("", ["a", "b", "c", "d"]),
    ],
)
def test_label_selectors(labelled, selector, expected):
    assert names(labelled.list("configmaps", label_selector=selector)[0]) == expected


@pytest.mark.parametrize("bad", ["app=web,", "app in web", "(app)", "a=b c=d"])
def test_bad_label_selectors_are_400(labelled, bad):
    with pytest.raises(BadRequest) as err:
        labelled.list("configmaps", label_selector=bad)
    assert err.value.code == 400


def test_field_selectors(store):
    store.create(pod("bound"))
    store.bind("default", "bound", "n1")
    store.create(pod("pending"))
    store.patch("pods", "pending", None, {"status": {"phase": "Failed"}}, subresource="status")
    store.create(pod("other-scheduler", schedulerName="kai-scheduler"))
    assert names(store.list("pods", field_selector="spec.nodeName=n1")[0]) == ["bound"]
    assert names(store.list("pods", field_selector="spec.nodeName=")[0]) == ["other-scheduler", "pending"]
    assert names(store.list("pods", field_selector="status.phase!=Failed")[0]) == ["bound", "other-scheduler"]
    assert names(store.list("pods", field_selector="spec.schedulerName==kai-scheduler")[0]) == [
        "other-scheduler"
    ]
    assert names(store.list("pods", field_selector="metadata.name=bound,spec.nodeName=n1")[0]) == ["bound"]


def test_field_selectors_the_kind_does_not_support_are_400(store):
    with pytest.raises(BadRequest, match="field label not supported"):
        store.list("pods", field_selector="spec.priority=0")
    with pytest.raises(BadRequest):
        store.list("configmaps", field_selector="data.x=1")


def test_list_by_namespace(store):
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    store.create(pod("x", namespace="team-a"))
    store.create(pod("y"))
    assert names(store.list("pods", "team-a")[0]) == ["x"]
    assert names(store.list("pods")[0]) == ["y", "x"]  # sorted by namespace, then name


# ---------------------------------------------------------------------------------------------
# API defaulting


def test_pods_get_the_api_servers_defaults(store):
    created = store.create(pod())
    spec = created["spec"]
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["restartPolicy"] == "Always" and spec["dnsPolicy"] == "ClusterFirst"
    assert spec["terminationGracePeriodSeconds"] == 30 and spec["priority"] == 0
    assert spec["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert created["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    assert (
        store.create(pod("mine", schedulerName="kai-scheduler"))["spec"]["schedulerName"] == "kai-scheduler"
    )


def test_a_created_pod_starts_pending_whatever_status_it_was_sent_with(store):
    running = pod()
    running["status"] = {"phase": "Running"}
    assert store.create(running)["status"]["phase"] == "Pending"


def test_quantities_are_stored_as_the_api_server_returns_them(store):
    p = pod(
        containers=[
            {
                "name": "c",
                "image": "x:1",
                "resources": {
                    "limits": {"cpu": 2, "memory": "1024Mi", "nvidia.com/gpu": 1},
                    "requests": {"cpu": 0.5},
                },
            }
        ]
    )
    res = store.create(p)["spec"]["containers"][0]["resources"]
    assert res["limits"] == {"cpu": "2", "memory": "1Gi", "nvidia.com/gpu": "1"}
    # requests default from limits where missing
    assert res["requests"] == {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": "1"}
    n = store.create(
        node(
            capacity={"cpu": 64, "memory": "512Gi", "pods": 110},
            allocatable={"cpu": "63500m", "memory": 549755813888},
        )
    )
    assert n["status"]["capacity"] == {"cpu": "64", "memory": "512Gi", "pods": "110"}
    assert n["status"]["allocatable"] == {"cpu": "63500m", "memory": "549755813888"}


def test_qos_class_is_computed(store):
    def qos(resources):
        name = f"p{len(store.list('pods')[0])}"
        return store.create(pod(name, containers=[{"name": "c", "image": "x", "resources": resources}]))[
            "status"
        ]["qosClass"]

    assert qos({}) == "BestEffort"
    assert qos({"limits": {"cpu": "1", "memory": "1Gi"}}) == "Guaranteed"
    assert qos({"requests": {"cpu": "1"}}) == "Burstable"
    assert (
        qos({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}})
        == "Burstable"
    )


def test_device_requests_get_their_defaults(store):
    c = claim()
    c["spec"]["devices"]["requests"].append(
        {
            "name": "any",
            "firstAvailable": [
                {"name": "big", "deviceClassName": "gpu.example.com"},
                {"name": "all", "deviceClassName": "gpu.example.com", "allocationMode": "All"},
            ],
        }
    )
    requests = store.create(c)["spec"]["devices"]["requests"]
    assert requests[0]["exactly"]["allocationMode"] == "ExactCount" and requests[0]["exactly"]["count"] == 1
    big, every = requests[1]["firstAvailable"]
    assert (big["allocationMode"], big["count"]) == ("ExactCount", 1)
    assert every["allocationMode"] == "All" and "count" not in every


def test_a_created_claim_has_no_status_until_the_binder_writes_one(store):
    c = claim()
    c["status"] = {"allocation": allocation()}
    created = store.create(c)
    assert "status" not in created
    created["status"] = {
        "allocation": allocation(),
        "reservedFor": [{"resource": "pods", "name": "p", "uid": "u"}],
    }
    assert store.update_status(created)["status"]["reservedFor"][0]["name"] == "p"


# ---------------------------------------------------------------------------------------------
# validation as the API server does it


def test_kinds_nobody_serves_are_refused_naming_the_kind(store):
    with pytest.raises(UnknownKind, match="Widget") as err:
        store.create({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    assert err.value.code == 404
    with pytest.raises(UnknownKind, match="v9"):
        store.create({"apiVersion": "v9", "kind": "Pod", "metadata": {"name": "p"}})
    with pytest.raises(UnknownKind, match="widgets"):
        store.list("widgets")
    with pytest.raises(UnknownKind, match="apiVersion or kind"):
        store.create({"metadata": {"name": "x"}})


def test_a_non_mapping_object_is_400(store):
    with pytest.raises(BadRequest):
        store.create(["not", "an", "object"])  # type: ignore[arg-type]


def test_resource_k8s_io_is_served_whatever_the_feature_gates_say(cluster):
    # the DRA gate decides what the scheduler does with claims, not what the cluster stores
    assert FeatureGates.parse("DynamicResourceAllocation=false").dra is False
    for resource in (CLAIMS, TEMPLATES, CLASSES, SLICES):
        assert resource in cluster.store.kinds
    assert cluster.store.create(claim())["kind"] == "ResourceClaim"


def test_device_class_with_a_selector_that_does_not_compile_is_refused(store):
    bad = "device.attributes['x'].model =="
    with pytest.raises(Invalid) as err:
        store.create(device_class("broken.example.com", bad))
    message = err.value.message
    assert "DeviceClass broken.example.com" in message and bad in message
    assert "spec.selectors[0].cel.expression" in message
    with pytest.raises(NotFound):
        store.get(CLASSES, "broken.example.com")


def test_claim_and_template_selectors_are_compiled_on_create(store):
    bad = "device.capacity['gpu.example.com'].memory >>> 1"
    with pytest.raises(Invalid) as err:
        store.create(claim("c1", expression=bad))
    assert "ResourceClaim default/c1" in err.value.message and bad in err.value.message
    template = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "t"},
        "spec": {"spec": claim(expression=bad)["spec"]},
    }
    with pytest.raises(Invalid, match="ResourceClaimTemplate default/t") as err:
        store.create(template)
    assert "spec.spec.devices.requests[0].exactly.selectors[0].cel.expression" in err.value.message
    ok = store.create(claim("c2", expression="device.attributes['gpu.example.com'].model == 'a100'"))
    assert ok["metadata"]["name"] == "c2"


def test_a_claims_spec_is_immutable_and_its_allocation_too_once_set(store):
    store.create(claim())
    c = store.get(CLAIMS, "claim")
    c["spec"]["devices"]["requests"][0]["exactly"]["count"] = 2
    with pytest.raises(Invalid, match="spec: field is immutable"):
        store.update(c)
    c = store.get(CLAIMS, "claim")
    c["status"] = {"allocation": allocation("gpu-0")}
    c = store.update_status(c)
    c["status"] = {"allocation": allocation("gpu-1")}
    with pytest.raises(Invalid, match="status.allocation"):
        store.update_status(c)
    c["status"] = {}
    assert "allocation" not in store.update_status(c)["status"]  # deallocation is allowed


def test_reserved_for_needs_an_allocation(store):
    c = store.create(claim())
    c["status"] = {"reservedFor": [{"resource": "pods", "name": "p", "uid": "u"}]}
    with pytest.raises(Invalid, match="status.reservedFor"):
        store.update_status(c)


def test_custom_resources_are_validated_against_their_crd(cluster):
    store = cluster.store
    p = store.create(pod())
    br = bind_request(p)
    del br["spec"]["selectedNode"]
    br["spec"]["receivedGPU"] = {"count": "two"}
    with pytest.raises(Invalid) as err:
        store.create(br)
    message = err.value.message
    assert "BindRequest default/p-br is invalid" in message
    assert "spec.selectedNode" in message and "spec.receivedGPU.count" in message


def test_a_crd_from_deploy_crds_serves_and_validates_its_kind():
    path = ROOT / "deploy" / "crds" / "scheduling.run.ai_bindrequests.yaml"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    store = EmbeddedStore()
    store.restore(load_crd(path))
    assert BR in store.kinds
    p = store.create(pod())
    assert store.create(bind_request(p))["kind"] == "BindRequest"
    with pytest.raises(Invalid, match="spec.podName"):
        store.create({**bind_request(p, "x"), "spec": {"selectedNode": "n1"}})


WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wd"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "selectableFields": [{"jsonPath": ".spec.color"}],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["color"],
                                "properties": {
                                    "color": {"type": "string", "enum": ["red", "blue"]},
                                    "size": {"type": "integer", "default": 3},
                                },
                                "x-kubernetes-validations": [
                                    {"rule": "self == oldSelf", "message": "spec is immutable"}
                                ],
                            },
                            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
                        },
                    }
                },
            }
        ],
    },
}


def widget(name: str = "w", **spec) -> dict:
    spec.setdefault("color", "red")
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


class WidgetPlugin:
    @hookimpl
    def kai_resource_kinds(self):
        return [WIDGET_CRD]


@pytest.fixture
def widgets() -> EmbeddedStore:
    pm = build_plugin_manager(load_external=False)
    pm.register_builtin(WidgetPlugin(), "widgets", distribution="test")
    return EmbeddedCluster(pm).store


def test_plugin_crds_are_served_through_the_hook(widgets):
    created = widgets.create(widget())
    assert created["spec"] == {"color": "red", "size": 3}  # schema defaults applied
    with pytest.raises(Invalid, match=r"Widget default/bad is invalid: spec.color: 'green' is not one of"):
        widgets.create(widget("bad", color="green"))
    assert widgets.kinds.lookup("wd").resource == "widgets.example.com"


def test_crd_transition_rule_self_equals_old_self_is_enforced(widgets):
    widgets.create(widget())
    w = widgets.get("widgets.example.com", "w")
    w["spec"]["color"] = "blue"
    with pytest.raises(Invalid, match="spec is immutable"):
        widgets.update(w)
    w = widgets.get("widgets.example.com", "w")
    w["metadata"]["labels"] = {"ok": "yes"}
    w = widgets.update(w)
    assert w["metadata"]["labels"] == {"ok": "yes"}
    w["status"] = {"ready": True}
    assert widgets.update_status(w)["status"] == {"ready": True}


def test_crd_selectable_fields_work_in_field_selectors(widgets):
    widgets.create(widget("r"))
    widgets.create(widget("b", color="blue"))
    assert names(widgets.list("widgets.example.com", field_selector="spec.color=blue")[0]) == ["b"]
    with pytest.raises(BadRequest):
        widgets.list("widgets.example.com", field_selector="spec.size=3")


def test_deleting_a_crd_deletes_its_objects_and_stops_serving_it(store):
    store.create(WIDGET_CRD)
    store.create(widget())
    held = widget("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    store.create(held)
    store.delete(CRDS, "widgets.example.com")
    assert store.get(CRDS, "widgets.example.com")["metadata"]["deletionTimestamp"]
    with pytest.raises(MethodNotAllowed):
        store.create(widget("late"))
    store.patch("widgets.example.com", "held", "default", {"metadata": {"finalizers": None}})
    with pytest.raises(NotFound):
        store.get(CRDS, "widgets.example.com")
    with pytest.raises(UnknownKind):
        store.create(widget("after"))


def test_a_crd_that_cannot_be_served_is_refused_naming_it(store):
    broken = yaml.safe_load(yaml.safe_dump(WIDGET_CRD))
    broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["type"] = "thing"
    with pytest.raises(Invalid, match="widgets.example.com"):
        store.create(broken)
    assert "widgets.example.com" not in store.kinds
    clash = yaml.safe_load(yaml.safe_dump(WIDGET_CRD))
    clash["metadata"]["name"] = "pods.example.com"
    with pytest.raises(Invalid, match="metadata.name"):
        store.create(clash)


def test_a_malformed_object_is_refused_by_name_not_with_a_traceback(store):
    with pytest.raises(Invalid, match="Pod default/odd is invalid"):
        store.create(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "odd"}, "spec": {"containers": "x"}}
        )
    with pytest.raises(Invalid, match="ResourceClaim default/odd is invalid"):
        store.create(
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaim",
                "metadata": {"name": "odd"},
                "spec": {"devices": ["not", "a", "mapping"]},
            }
        )
    with pytest.raises(Invalid, match="metadata must be a mapping"):
        store.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": "odd"})


# ---------------------------------------------------------------------------------------------
# older resource.k8s.io versions


def test_v1beta1_claims_and_slices_are_stored_as_v1(store):
    beta_claim = {
        "apiVersion": "resource.k8s.io/v1beta1",
        "kind": "ResourceClaim",
        "metadata": {"name": "old"},
        "spec": {
            "devices": {"requests": [{"name": "gpu", "deviceClassName": "gpu.example.com", "count": 2}]}
        },
    }
    stored = store.create(beta_claim)
    assert stored["apiVersion"] == "resource.k8s.io/v1"
    assert stored["spec"]["devices"]["requests"] == [
        {
            "name": "gpu",
            "exactly": {"deviceClassName": "gpu.example.com", "count": 2, "allocationMode": "ExactCount"},
        }
    ]
    beta_slice = {
        "apiVersion": "resource.k8s.io/v1beta1",
        "kind": "ResourceSlice",
        "metadata": {"name": "s"},
        "spec": {
            "driver": "gpu.example.com",
            "nodeName": "n1",
            "allNodes": False,
            "pool": {"name": "n1", "generation": 1, "resourceSliceCount": 1},
            "devices": [
                {
                    "name": "gpu-0",
                    "basic": {
                        "attributes": {"model": {"string": "a100"}},
                        "capacity": {"memory": {"value": "80Gi"}},
                    },
                }
            ],
        },
    }
    stored = store.create(beta_slice)
    assert stored["spec"]["devices"] == [
        {
            "name": "gpu-0",
            "attributes": {"model": {"string": "a100"}},
            "capacity": {"memory": {"value": "80Gi"}},
        }
    ]
    assert "allNodes" not in stored["spec"]
    beta2 = device_class()
    beta2["apiVersion"] = "resource.k8s.io/v1beta2"
    assert store.create(beta2)["apiVersion"] == "resource.k8s.io/v1"


# ---------------------------------------------------------------------------------------------
# whole state: save and load


def _populate(cluster: EmbeddedCluster) -> None:
    store = cluster.store
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    store.create(node(capacity={"cpu": 8, "memory": "32Gi"}, allocatable={"cpu": "7.5", "memory": "30Gi"}))
    store.create(device_class())
    p = store.create(pod(containers=[{"name": "c", "image": "x:1", "resources": {"limits": {"cpu": 1}}}]))
    store.create(pod("queued", namespace="team-a"))
    store.create(bind_request(p))
    store.bind("default", "p", "n1")
    store.patch(BR, "p-br", "default", {"status": {"phase": "Succeeded"}}, subresource="status")
    c = claim()
    c["metadata"]["finalizers"] = ["resource.kubernetes.io/delete-protection"]
    c["metadata"]["annotations"] = {"note": "2024-05-01T10:00:00Z"}
    store.create(c)
    store.patch(CLAIMS, "claim", None, {"status": {"allocation": allocation()}}, subresource="status")
    store.delete(CLAIMS, "claim")  # held by its finalizer: saved while being deleted


def test_state_saves_to_one_file_and_loads_again_unchanged(cluster, tmp_path):
    _populate(cluster)
    state = tmp_path / "state.yaml"
    save_state(cluster.store, state)
    docs = [d for d in yaml.safe_load_all(state.read_text()) if d is not None]
    assert len(docs) == len(cluster.store.all_objects())
    assert all(list(d)[:2] == ["apiVersion", "kind"] for d in docs)

    again = EmbeddedCluster(build_plugin_manager(load_external=False))
    again.load(state)
    assert again.store.all_objects() == cluster.store.all_objects()
    # later writes go on above every version the state carried
    highest = max(int(o["metadata"]["resourceVersion"]) for o in again.store.all_objects())
    assert int(again.store.create(configmap())["metadata"]["resourceVersion"]) > highest
    # and the loaded objects behave: the claim still waits for its finalizer, the pod owns its request
    again.store.delete("pods", "p")
    assert again.store.list(BR)[0] == []
    assert again.store.get(CLAIMS, "claim")["metadata"]["deletionTimestamp"]


def test_loading_the_same_state_twice_changes_nothing(cluster, tmp_path):
    _populate(cluster)
    state = tmp_path / "state.yaml"
    save_state(cluster.store, state)
    cluster.load(state)
    before = cluster.store.resource_version
    cluster.load(state)
    assert cluster.store.resource_version == before


# ---------------------------------------------------------------------------------------------
# what the store writes is what a real API server accepts


def _k8s_valid(obj: dict) -> None:
    shipped = {kubernetes_validate.utils.major_minor(v) for v in kubernetes_validate.utils.all_versions()}
    if K8S_VERSION not in shipped:
        pytest.skip(f"kubernetes-validate {kubernetes_validate.__version__} has no {K8S_VERSION} schemas")
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc.message} at {list(exc.absolute_path)}")


def test_stored_built_in_objects_pass_kubernetes_validate(store):
    store.create(
        node(capacity={"cpu": 64, "memory": "512Gi", "nvidia.com/gpu": 8}, allocatable={"cpu": 63.5})
    )
    store.create(
        pod(
            containers=[
                {
                    "name": "c",
                    "image": "x:1",
                    "resources": {
                        "limits": {"cpu": 0.5, "memory": "1Gi", "nvidia.com/gpu": 1},
                        "claims": [{"name": "gpu"}],
                    },
                }
            ],
            resourceClaims=[{"name": "gpu", "resourceClaimTemplateName": "t"}],
        )
    )
    store.bind("default", "p", "n1")
    store.create(device_class())
    c = claim()
    c["spec"]["devices"]["requests"].append(
        {"name": "any", "firstAvailable": [{"name": "one", "deviceClassName": "gpu.example.com"}]}
    )
    store.create(c)
    store.patch(
        CLAIMS,
        "claim",
        None,
        {
            "status": {
                "allocation": allocation(),
                "reservedFor": [{"resource": "pods", "name": "p", "uid": "u"}],
            }
        },
        subresource="status",
    )
    store.create(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaimTemplate",
            "metadata": {"name": "t"},
            "spec": {"spec": claim()["spec"]},
        }
    )
    store.create(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {"name": "s"},
            "spec": {
                "driver": "gpu.example.com",
                "nodeName": "n1",
                "pool": {"name": "n1", "generation": 1, "resourceSliceCount": 1},
                "devices": [{"name": "gpu-0", "capacity": {"memory": {"value": 85899345920}}}],
            },
        }
    )
    checked = set()
    for obj in store.all_objects():
        if obj["kind"] != "CustomResourceDefinition":
            _k8s_valid(obj)
            checked.add(obj["kind"])
    assert checked == {
        "Namespace",
        "Node",
        "Pod",
        "PriorityClass",  # the system classes
        "DeviceClass",
        "ResourceClaim",
        "ResourceClaimTemplate",
        "ResourceSlice",
    }


# ---------------------------------------------------------------------------------------------
# upstream data


def test_upstream_crds_and_device_classes_load(upstream_dir):
    store = EmbeddedStore()
    for name in (
        "kai-scheduler.bindrequests.crd.yaml",
        "kai-scheduler.podgroups.crd.yaml",
        "kai-scheduler.queues.crd.yaml",
        "nvidia.computedomains.crd.yaml",
    ):
        store.restore(load_crd(upstream_dir / name))
    for m in read_manifests(upstream_dir / "nvidia.deviceclasses.yaml"):
        store.restore(m.obj)
    assert len(store.list(CLASSES)[0]) == len(read_manifests(upstream_dir / "nvidia.deviceclasses.yaml"))
    for m in read_manifests(upstream_dir / "nvidia.demo.channel-injection.yaml"):
        store.restore(m.obj)
    cd = store.get("computedomains.resource.nvidia.com", "imex-channel-injection")
    assert cd["spec"]["numNodes"] == 1
    cd["spec"]["numNodes"] = 2
    with pytest.raises(Invalid, match="immutable"):
        store.update(cd)
