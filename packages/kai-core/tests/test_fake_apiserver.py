"""The fake API server speaks the wire protocol the official ``kubernetes`` client (and kubectl)
expects: discovery, CRUD with 409/404/422 Status replies, the status and binding subresources,
paginated lists, watches with bookmarks and 410, selectors, patches, and injected faults."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the kubernetes client is not installed")

from kubernetes import client  # noqa: E402
from kubernetes.dynamic import DynamicClient  # noqa: E402

from kai_core.cluster import EmbeddedCluster  # noqa: E402
from kai_core.plugins import build_plugin_manager  # noqa: E402
from kai_core.testing import FakeApiServer  # noqa: E402

pytest_plugins = ["kai_core.testing.fixtures"]

TIMEOUT = 10  # seconds any single request or stream may take in these tests


def node(name: str, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}},
            "status": {"allocatable": {"cpu": "8", "memory": "16Gi", "pods": "10"}}}


def pod(name: str, namespace: str = "default", **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "busybox:1"}], **spec}}


def configmap(name: str, namespace: str = "default", labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}}, "data": {"k": name}}


def raw(api: client.ApiClient, method: str, path: str, query: dict | None = None, body=None,
        content_type: str = "application/json"):
    """One request through the client's own HTTP layer; returns (status, parsed body)."""
    req = api.param_serialize(method=method, resource_path=path, query_params=list((query or {}).items()),
                              header_params={"Content-Type": content_type, "Accept": "application/json"},
                              body=body)
    resp = api.call_api(*req, _request_timeout=TIMEOUT)
    data = resp.read()
    return resp.status, (json.loads(data) if data else None)


def watch_events(api: client.ApiClient, path: str, query: dict, stop_after: int | None = None) -> list[dict]:
    """Read a watch stream to its end (or ``stop_after`` events); returns the decoded events."""
    req = api.param_serialize(method="GET", resource_path=path,
                              query_params=list({"watch": "true", **query}.items()),
                              header_params={"Accept": "application/json"})
    resp = api.call_api(*req, _request_timeout=(TIMEOUT, TIMEOUT))
    out: list[dict] = []
    buf = b""
    try:
        for chunk in resp.response.stream(amt=None, decode_content=False):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                out.append(json.loads(line))
                if stop_after is not None and len(out) >= stop_after:
                    return out
    finally:
        resp.response.close()
    return out


@pytest.fixture
def cluster_server():
    """The fake server in front of an embedded cluster (kai's CRDs installed)."""
    cluster = EmbeddedCluster(build_plugin_manager(load_external=False))
    server = FakeApiServer(cluster.store, bookmark_interval=0.2).start()
    api = server.api_client()
    try:
        yield server, api
    finally:
        api.close()
        server.stop()


@pytest.fixture
def api(fake_apiserver):
    a = fake_apiserver.api_client()
    yield a
    a.close()


# -- discovery -------------------------------------------------------------------------------------


def test_discovery_lists_core_groups_and_crds(cluster_server):
    server, api = cluster_server
    assert raw(api, "GET", "/api")[1]["versions"] == ["v1"]
    groups = {g["name"]: g for g in raw(api, "GET", "/apis")[1]["groups"]}
    assert groups["resource.k8s.io"]["preferredVersion"]["version"] == "v1"
    assert groups["scheduling.run.ai"]["preferredVersion"]["groupVersion"] == "scheduling.run.ai/v1alpha2"
    core = {r["name"]: r for r in raw(api, "GET", "/api/v1")[1]["resources"]}
    assert core["pods"]["namespaced"] and "watch" in core["pods"]["verbs"]
    assert core["pods/status"]["verbs"] == ["get", "patch", "update"]
    assert core["pods/binding"] == {"name": "pods/binding", "singularName": "", "namespaced": True,
                                    "kind": "Binding", "verbs": ["create"]}
    assert core["nodes"]["namespaced"] is False
    brs = {r["name"]: r for r in raw(api, "GET", "/apis/scheduling.run.ai/v1alpha2")[1]["resources"]}
    assert brs["bindrequests"]["kind"] == "BindRequest" and "bindrequests/status" in brs
    assert raw(api, "GET", "/apis/scheduling.run.ai")[1]["kind"] == "APIGroup"
    assert client.VersionApi(api).get_code().git_version.startswith("v1.36")


def test_dynamic_client_resolves_kinds_through_discovery(cluster_server):
    server, api = cluster_server
    dyn = DynamicClient(api)
    brs = dyn.resources.get(api_version="scheduling.run.ai/v1alpha2", kind="BindRequest")
    brs.create(body={"apiVersion": "scheduling.run.ai/v1alpha2", "kind": "BindRequest",
                     "metadata": {"name": "b1"}, "spec": {"podName": "p", "selectedNode": "n1"}},
               namespace="default")
    got = brs.get(name="b1", namespace="default")
    assert got.spec.selectedNode == "n1"
    assert server.store.get("bindrequests.scheduling.run.ai", "b1", "default")["spec"]["podName"] == "p"


def test_unknown_paths_and_versions_are_404_status(api):
    for path in ("/api/v1/widgets", "/apis/resource.k8s.io/v1beta1/resourceclaims", "/apis/nope.io/v1/x",
                 "/api/v1/namespaces/default/pods/p/log"):
        status, body = raw(api, "GET", path)
        assert status == 404 and body["kind"] == "Status" and body["reason"] == "NotFound", path


# -- CRUD ----------------------------------------------------------------------------------------


def test_crud_with_conflict_on_stale_update(api):
    v1 = client.CoreV1Api(api)
    created = v1.create_node(node("n1"))
    rv = created.metadata.resource_version
    assert rv and created.metadata.uid

    fresh = v1.read_node("n1")
    fresh.metadata.labels = {"zone": "a"}
    updated = v1.replace_node("n1", fresh)
    assert int(updated.metadata.resource_version) > int(rv)

    stale = v1.read_node("n1")
    stale.metadata.resource_version = rv
    stale.metadata.labels = {"zone": "b"}
    with pytest.raises(client.ApiException) as exc:
        v1.replace_node("n1", stale)
    assert exc.value.status == 409
    status = json.loads(exc.value.body)
    assert status["kind"] == "Status" and status["reason"] == "Conflict"
    assert "the object has been modified" in status["message"]

    with pytest.raises(client.ApiException) as exc:
        v1.create_node(node("n1"))
    assert exc.value.status == 409 and json.loads(exc.value.body)["reason"] == "AlreadyExists"

    v1.delete_node("n1")
    with pytest.raises(client.ApiException) as exc:
        v1.read_node("n1")
    assert exc.value.status == 404 and json.loads(exc.value.body)["reason"] == "NotFound"


def test_invalid_object_is_422_status(api):
    status, body = raw(api, "POST", "/api/v1/namespaces/default/pods",
                       body={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"},
                             "spec": {"containers": [{"name": "c", "image": "x"}]}})
    assert status == 422 and body["reason"] == "Invalid" and "Bad_Name" in body["message"]


def test_body_must_match_the_url(api):
    status, body = raw(api, "POST", "/api/v1/namespaces/default/pods", body=pod("p", namespace="other"))
    assert status == 400 and "namespace" in body["message"]
    raw(api, "POST", "/api/v1/namespaces/default/configmaps", body=configmap("a"))
    status, body = raw(api, "PUT", "/api/v1/namespaces/default/configmaps/b", body=configmap("a"))
    assert status == 400 and "does not match the name on the URL" in body["message"]
    status, body = raw(api, "POST", "/api/v1/pods", body=pod("p"))
    assert status == 404


def test_status_subresource(api):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_pod("default", pod("p"))
    p = v1.read_namespaced_pod("p", "default")
    p.status.phase = "Running"
    p.metadata.labels = {"ignored": "by-status"}
    v1.replace_namespaced_pod_status("p", "default", p)
    got = v1.read_namespaced_pod("p", "default")
    assert got.status.phase == "Running" and not got.metadata.labels

    got.status.phase = "Failed"
    got.metadata.labels = {"kept": "yes"}
    v1.replace_namespaced_pod("p", "default", got)
    again = v1.read_namespaced_pod("p", "default")
    assert again.status.phase == "Running" and again.metadata.labels == {"kept": "yes"}


def test_custom_resource_status_via_custom_objects_api(cluster_server):
    server, api = cluster_server
    co = client.CustomObjectsApi(api)
    args = ("scheduling.run.ai", "v1alpha2", "default", "bindrequests")
    created = co.create_namespaced_custom_object(
        *args, {"apiVersion": "scheduling.run.ai/v1alpha2", "kind": "BindRequest", "metadata": {"name": "b1"},
                "spec": {"podName": "p", "selectedNode": "n1"}})
    assert created["metadata"]["resourceVersion"]
    patched = co.patch_namespaced_custom_object_status(*args, "b1", {"status": {"phase": "Succeeded"}})
    assert patched["status"] == {"phase": "Succeeded"}
    items = co.list_namespaced_custom_object(*args)["items"]
    assert [i["kind"] for i in items] == ["BindRequest"]  # custom resources keep their type in lists


# -- pods/binding ---------------------------------------------------------------------------------


def test_binding_replies_status_201_which_the_typed_client_cannot_parse(api):
    """The trap: the bind succeeds, then the generated method fails to parse the Status reply."""
    from pydantic import ValidationError

    v1 = client.CoreV1Api(api)
    v1.create_node(node("n1"))
    uid = v1.create_namespaced_pod("default", pod("p")).metadata.uid
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
               "target": {"kind": "Node", "name": "n1"}}
    with pytest.raises(ValidationError):
        v1.create_namespaced_pod_binding("p", "default", binding)
    assert v1.read_namespaced_pod("p", "default").spec.node_name == "n1"  # ... although it worked

    v1.create_namespaced_pod("default", pod("q"))
    resp = v1.create_namespaced_pod_binding("q", "default", {**binding, "metadata": {"name": "q"}},
                                            _preload_content=False)
    assert resp.status == 201
    assert json.loads(resp.data) == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                     "status": "Success", "code": 201}

    with pytest.raises(client.ApiException) as exc:  # already bound
        v1.create_namespaced_pod_binding("p", "default", binding, _preload_content=False)
    assert exc.value.status == 409
    v1.create_namespaced_pod("default", pod("r"))
    with pytest.raises(client.ApiException) as exc:  # pod uid precondition
        v1.create_namespaced_pod_binding("r", "default", {**binding, "metadata": {"name": "r", "uid": uid}},
                                         _preload_content=False)
    assert exc.value.status == 409 and "UID in precondition" in json.loads(exc.value.body)["message"]


# -- lists ----------------------------------------------------------------------------------------


def test_pagination_is_consistent_and_continue_expires_on_compaction(fake_apiserver, api):
    for i in range(5):
        fake_apiserver.store.create(configmap(f"cm{i}"))
    v1 = client.CoreV1Api(api)
    first = v1.list_namespaced_config_map("default", limit=2)
    assert [c.metadata.name for c in first.items] == ["cm0", "cm1"]
    assert first.metadata.remaining_item_count == 3
    fake_apiserver.store.create(configmap("cm9"))  # not in the snapshot being paged
    second = v1.list_namespaced_config_map("default", limit=2, _continue=first.metadata._continue)
    third = v1.list_namespaced_config_map("default", limit=2, _continue=second.metadata._continue)
    assert [c.metadata.name for c in second.items + third.items] == ["cm2", "cm3", "cm4"]
    assert third.metadata._continue is None
    assert len({first.metadata.resource_version, second.metadata.resource_version,
                third.metadata.resource_version}) == 1

    again = v1.list_namespaced_config_map("default", limit=2)
    fake_apiserver.compact()
    with pytest.raises(client.ApiException) as exc:
        v1.list_namespaced_config_map("default", limit=2, _continue=again.metadata._continue)
    assert exc.value.status == 410 and json.loads(exc.value.body)["reason"] == "Expired"


def test_list_items_of_builtin_kinds_carry_no_type_meta(fake_apiserver, api):
    fake_apiserver.store.create(configmap("a"))
    status, body = raw(api, "GET", "/api/v1/configmaps")
    assert body["kind"] == "ConfigMapList" and body["apiVersion"] == "v1"
    assert "kind" not in body["items"][0] and body["items"][0]["metadata"]["name"] == "a"
    assert body["metadata"]["resourceVersion"] == str(fake_apiserver.store.resource_version)


def test_label_and_field_selectors(fake_apiserver, api):
    store = fake_apiserver.store
    store.create(node("n1"))
    for name, labels in (("a", {"app": "x"}), ("b", {"app": "y"}), ("c", {})):
        store.create({**pod(name), "metadata": {"name": name, "namespace": "default", "labels": labels}})
    store.bind("default", "a", "n1")
    v1 = client.CoreV1Api(api)

    def names(**selectors) -> list[str]:
        return [p.metadata.name for p in v1.list_namespaced_pod("default", **selectors).items]

    assert [p.metadata.name for p in v1.list_pod_for_all_namespaces(label_selector="app in (x,y)").items] == [
        "a", "b"]
    assert names(label_selector="!app") == ["c"]
    assert names(field_selector="spec.nodeName=n1") == ["a"]
    assert names(field_selector="spec.nodeName=") == ["b", "c"]
    assert names(field_selector="spec.nodeName!=n1", label_selector="app") == ["b"]
    with pytest.raises(client.ApiException) as exc:
        v1.list_namespaced_pod("default", field_selector="spec.hostname=x")
    assert exc.value.status == 400 and "field label not supported" in json.loads(exc.value.body)["message"]


# -- patches --------------------------------------------------------------------------------------


def test_merge_json_and_strategic_patches(cluster_server):
    server, api = cluster_server
    server.store.create(configmap("a"))
    path = "/api/v1/namespaces/default/configmaps/a"
    status, body = raw(api, "PATCH", path, body={"data": {"x": "1", "k": None}},
                       content_type="application/merge-patch+json")
    assert status == 200 and body["data"] == {"x": "1"}
    status, body = raw(api, "PATCH", path, body=[{"op": "add", "path": "/data/y", "value": "2"},
                                                 {"op": "test", "path": "/data/x", "value": "1"}],
                       content_type="application/json-patch+json")
    assert status == 200 and body["data"] == {"x": "1", "y": "2"}
    status, body = raw(api, "PATCH", path, body=[{"op": "test", "path": "/data/x", "value": "9"}],
                       content_type="application/json-patch+json")
    assert status == 422
    # the typed client sends a dict patch as a strategic merge patch: maps merge as in a merge patch
    client.CoreV1Api(api).patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"l": "v"}}})
    assert server.store.get("configmaps", "a", "default")["metadata"]["labels"] == {"l": "v"}
    # a stale resourceVersion in a merge patch is a precondition
    status, body = raw(api, "PATCH", path, body={"metadata": {"resourceVersion": "1"}, "data": {"z": "3"}},
                       content_type="application/merge-patch+json")
    assert status == 409
    # custom resources do not take strategic merge patches, as on a real server
    server.store.create({"apiVersion": "scheduling.run.ai/v1alpha2", "kind": "BindRequest",
                         "metadata": {"name": "b1", "namespace": "default"},
                         "spec": {"podName": "p", "selectedNode": "n1"}})
    status, body = raw(api, "PATCH", "/apis/scheduling.run.ai/v1alpha2/namespaces/default/bindrequests/b1",
                       body={"spec": {"selectedNode": "n2"}},
                       content_type="application/strategic-merge-patch+json")
    assert status == 415 and body["reason"] == "UnsupportedMediaType"


def test_strategic_merge_patch_merges_pod_conditions_by_type(cluster_server):
    """As kube-apiserver does (and KAI's binder relies on): a strategic merge patch of a pod's
    status adds or updates the conditions it names and keeps the others; a merge patch replaces
    the list."""
    server, api = cluster_server
    server.store.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
                         "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}})
    server.store.patch("pods", "p", "default", {"status": {"conditions": [
        {"type": "PodScheduled", "status": "True"}]}}, "status")
    path = "/api/v1/namespaces/default/pods/p/status"
    bound = {"type": "PodBound", "status": "True", "reason": "Bound", "message": "m"}
    status, body = raw(api, "PATCH", path, body={"status": {"conditions": [bound]}},
                       content_type="application/strategic-merge-patch+json")
    assert status == 200 and body["status"]["conditions"] == [{"type": "PodScheduled", "status": "True"}, bound]
    status, body = raw(api, "PATCH", path, body={"status": {"conditions": [{"type": "PodBound", "status": "False"}]}},
                       content_type="application/strategic-merge-patch+json")
    assert body["status"]["conditions"] == [{"type": "PodScheduled", "status": "True"}, {**bound, "status": "False"}]
    status, body = raw(api, "PATCH", path, body={"status": {"conditions": [bound]}},
                       content_type="application/merge-patch+json")
    assert body["status"]["conditions"] == [bound]
    status, body = raw(api, "PATCH", path, body={"status": {"conditions": [{"type": "X", "$patch": "delete"}]}},
                       content_type="application/strategic-merge-patch+json")
    assert status == 415 and "directives" in body["message"]


def test_delete_with_preconditions(fake_apiserver, api):
    fake_apiserver.store.create(configmap("a"))
    v1 = client.CoreV1Api(api)
    with pytest.raises(client.ApiException) as exc:
        v1.delete_namespaced_config_map("a", "default", body={"preconditions": {"uid": "other"}})
    assert exc.value.status == 409
    rv = v1.read_namespaced_config_map("a", "default").metadata.resource_version
    v1.delete_namespaced_config_map("a", "default", body={"preconditions": {"resourceVersion": rv}})
    assert v1.list_namespaced_config_map("default").items == []


# -- watch ----------------------------------------------------------------------------------------


def test_watch_from_version_streams_changes_and_bookmarks(fake_apiserver, api):
    store = fake_apiserver.store
    store.create(configmap("before"))
    start = str(store.resource_version)
    store.create(configmap("a"))
    store.patch("configmaps", "a", "default", {"data": {"k": "changed"}})
    store.delete("configmaps", "a", "default")
    store.create(configmap("other-ns", namespace="kube-system"))
    events = watch_events(api, "/api/v1/namespaces/default/configmaps",
                          {"resourceVersion": start, "allowWatchBookmarks": "true", "timeoutSeconds": "5"},
                          stop_after=4)
    typed = [(e["type"], e["object"]["metadata"].get("name")) for e in events]
    assert typed == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a"), ("BOOKMARK", None)]
    assert events[-1]["object"]["metadata"]["resourceVersion"] == str(store.resource_version)
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events[:3]]
    assert rvs == sorted(rvs) and rvs[0] > int(start)


def test_watch_without_version_starts_with_current_objects(fake_apiserver, api):
    fake_apiserver.store.create(configmap("a"))
    fake_apiserver.store.create(configmap("b"))
    events = watch_events(api, "/api/v1/namespaces/default/configmaps", {"timeoutSeconds": "5"}, stop_after=2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a"), ("ADDED", "b")]


def test_watch_with_selector_reports_objects_leaving_it_as_deleted(fake_apiserver, api):
    store = fake_apiserver.store
    store.create(configmap("a", labels={"app": "x"}))
    start = str(store.resource_version)
    store.patch("configmaps", "a", "default", {"metadata": {"labels": {"app": "y"}}})
    store.patch("configmaps", "a", "default", {"metadata": {"labels": {"app": "x"}}})
    events = watch_events(api, "/api/v1/configmaps",
                          {"resourceVersion": start, "labelSelector": "app=x", "timeoutSeconds": "5"},
                          stop_after=2)
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]


def test_send_bookmarks_now(fake_apiserver, api):
    import threading

    fake_apiserver.bookmark_interval = 3600
    fake_apiserver.store.create(configmap("a"))
    rv = str(fake_apiserver.store.resource_version)
    got: list = []
    query = {"resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "5"}
    reader = threading.Thread(target=lambda: got.extend(
        watch_events(api, "/api/v1/namespaces/default/configmaps", query, stop_after=1)))
    reader.start()
    for _ in range(500):
        if fake_apiserver.open_watches("configmaps"):
            break
        reader.join(0.01)
    fake_apiserver.store.create(configmap("b", namespace="kube-system"))  # outside the watched namespace
    fake_apiserver.send_bookmarks()
    reader.join(TIMEOUT)
    assert [e["type"] for e in got] == ["BOOKMARK"]
    assert got[0]["object"]["metadata"]["resourceVersion"] == str(fake_apiserver.store.resource_version)
    assert got[0]["object"]["kind"] == "ConfigMap"


def test_watch_from_compacted_version_gets_410_error_event(fake_apiserver, api):
    fake_apiserver.store.create(configmap("a"))
    old = str(fake_apiserver.store.resource_version)
    fake_apiserver.compact()
    events = watch_events(api, "/api/v1/configmaps", {"resourceVersion": old, "timeoutSeconds": "5"})
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
    # the official client's Watch turns it into an ApiException (no silent retry with a timeout set)
    from kubernetes import watch

    with pytest.raises(client.ApiException) as exc:
        list(watch.Watch().stream(client.CoreV1Api(api).list_config_map_for_all_namespaces,
                                  resource_version=old, timeout_seconds=5))
    assert exc.value.status == 410
    # a fresh list after compaction hands out a version that can be watched from
    latest = client.CoreV1Api(api).list_config_map_for_all_namespaces().metadata.resource_version
    events = watch_events(api, "/api/v1/configmaps",
                          {"resourceVersion": latest, "allowWatchBookmarks": "true", "timeoutSeconds": "5"},
                          stop_after=1)
    assert [e["type"] for e in events] == ["BOOKMARK"]


def test_small_history_compacts_by_itself():
    from kai_core.apiserver.store import EmbeddedStore

    with FakeApiServer(EmbeddedStore(history=3)) as server:
        api = server.api_client()
        server.store.create(configmap("a"))
        old = str(server.store.resource_version)
        for i in range(5):
            server.store.create(configmap(f"x{i}"))
        events = watch_events(api, "/api/v1/configmaps", {"resourceVersion": old, "timeoutSeconds": "5"})
        api.close()
    assert [e["type"] for e in events] == ["ERROR"] and events[0]["object"]["code"] == 410


def test_cut_watch_drops_the_connection_mid_stream(fake_apiserver, api):
    import threading

    import urllib3

    fake_apiserver.store.create(configmap("a"))
    outcome: list = []

    def read() -> None:
        try:
            outcome.append(watch_events(api, "/api/v1/configmaps", {"timeoutSeconds": "8"}))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(500):
        if fake_apiserver.open_watches():
            break
        reader.join(0.01)
    assert fake_apiserver.cut_watches() == 1
    reader.join(TIMEOUT)
    assert not reader.is_alive()
    assert outcome and isinstance(outcome[0], Exception), outcome  # not a clean end of stream


# -- faults and the request log ------------------------------------------------------------------


def test_injected_5xx_and_429_then_recovery(fake_apiserver, api):
    v1 = client.CoreV1Api(api)
    fake_apiserver.fail_next(2, 503, verb="list", resource="nodes")
    for _ in range(2):
        with pytest.raises(client.ApiException) as exc:
            v1.list_node()
        assert exc.value.status == 503 and json.loads(exc.value.body)["reason"] == "ServiceUnavailable"
    assert v1.list_node().items == []

    fake_apiserver.throttle_next(1, retry_after=7, verb="create")
    with pytest.raises(client.ApiException) as exc:
        v1.create_node(node("n1"))
    assert exc.value.status == 429 and exc.value.headers["Retry-After"] == "7"
    assert json.loads(exc.value.body)["details"] == {"retryAfterSeconds": 7}
    assert fake_apiserver.store.list("nodes")[0] == []  # the refused request changed nothing
    v1.create_node(node("n1"))
    assert fake_apiserver.pending_faults() == 0


def test_request_log_names_rbac_verbs(fake_apiserver, api):
    v1 = client.CoreV1Api(api)
    v1.create_node(node("n1"))
    v1.create_namespaced_pod("default", pod("p"))
    v1.create_namespaced_pod_binding("p", "default", {"metadata": {"name": "p"}, "target": {"name": "n1"}},
                                     _preload_content=False)
    p = v1.read_namespaced_pod("p", "default")
    v1.replace_namespaced_pod_status("p", "default", p)
    v1.list_namespaced_pod("default")
    assert fake_apiserver.calls() == ["create nodes", "create pods", "create pods/binding", "get pods",
                                      "update pods/status", "list pods"]
    rec = fake_apiserver.requests[2]
    assert (rec.method, rec.namespace, rec.name, rec.status) == ("POST", "default", "p", 201)


def test_fixture_kubeconfig_loads_in_the_official_client(fake_kubeconfig):
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(fake_kubeconfig))
    try:
        names = [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items]
    finally:
        api.close()
    assert "default" in names and "kube-system" in names


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed on this machine")
def test_kubectl_reads_through_discovery(cluster_server, tmp_path):
    server, api = cluster_server
    server.store.create(node("n1"))
    server.store.create({"apiVersion": "scheduling.run.ai/v1alpha2", "kind": "BindRequest",
                         "metadata": {"name": "b1", "namespace": "default"},
                         "spec": {"podName": "p", "selectedNode": "n1"}})
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")

    def kubectl(*args: str) -> str:
        done = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "b1" in kubectl("get", "bindrequests", "-A")
    assert json.loads(kubectl("get", "nodes", "-o", "json"))["items"][0]["metadata"]["name"] == "n1"
    assert "pods/binding" not in kubectl("api-resources")  # subresources are not listed as resources
    assert "bindrequests" in kubectl("api-resources", "--api-group=scheduling.run.ai")
