"""The Kubernetes backend of the store, with the official client, against the fake API server:
CRUD and error mapping, reflectors (pages, bookmarks, 410 relist, cut watch reconnect), retries of
5xx and 429, the binding trap, the rate limiter, and a scheduling round trip through HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

pytest.importorskip("kubernetes", reason="the kubernetes client is not installed")

from kai_core.api.errors import (  # noqa: E402
    AlreadyExists,
    ApiError,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    UnsupportedMediaType,
)
from kai_core.api.resources import RES_BIND_REQUESTS, RES_PODS  # noqa: E402
from kai_core.client.store import (  # noqa: E402
    KubeconfigError,
    KubernetesStore,
    TokenBucket,
    api_error,
    kind_from_crd,
)
from kai_core.cluster import EmbeddedCluster  # noqa: E402
from kai_core.framework.cache import Cache  # noqa: E402
from kai_core.plugins import build_plugin_manager  # noqa: E402
from kai_core.testing import FakeApiServer  # noqa: E402

pytest_plugins = ["kai_core.testing.fixtures"]

WAIT = 15.0  # the most any test waits for the reflectors to catch up (a bound, not an expectation)


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


class Sleeps:
    """Records the waits a store asks for instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def node(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"allocatable": {"cpu": "8", "memory": "16Gi", "pods": "10"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(name: str, scheduler: str = "kai-scheduler") -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"schedulerName": scheduler,
                     "containers": [{"name": "c", "image": "busybox:1",
                                     "resources": {"requests": {"cpu": "1"}}}]}}


def configmap(name: str, data: str = "v") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"},
            "data": {"k": data}}


def names(items: list[dict]) -> list[str]:
    return [o["metadata"]["name"] for o in items]


def cached(cache: Cache, resource: str = "configmaps", namespace: str = "default") -> dict[str, dict]:
    """Sync ``cache`` and return its objects of ``namespace`` by name."""
    cache.sync()
    return {name: obj for (ns, name), obj in cache.objects[resource].items() if ns == namespace}


def make_store(server: FakeApiServer, **kw) -> KubernetesStore:
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_cap", 0.05)
    kw.setdefault("sync_timeout", WAIT)
    return KubernetesStore(server.client_configuration(), **kw)


@pytest.fixture
def server():
    s = FakeApiServer(bookmark_interval=0.2).start()
    yield s
    s.stop()


@pytest.fixture
def store(server):
    st = make_store(server)
    yield st
    st.close()


# -- CRUD and errors -------------------------------------------------------------------------------


def test_crud_and_error_mapping(store, server):
    created = store.create(node("n1"))
    assert created["kind"] == "Node" and created["metadata"]["uid"]
    with pytest.raises(AlreadyExists):
        store.create(node("n1"))

    got = store.get("nodes", "n1")
    got["metadata"]["labels"] = {"zone": "a"}
    updated = store.update(got)
    assert updated["metadata"]["labels"] == {"zone": "a"}
    with pytest.raises(Conflict) as exc:
        store.update(got)  # got still carries the old resourceVersion
    assert exc.value.code == 409 and "modified" in exc.value.message

    with pytest.raises(NotFound):
        store.get("nodes", "nope")
    with pytest.raises(Invalid) as exc:
        store.create({**pod("x"), "spec": {"containers": []}})
    assert exc.value.code == 422

    items, rv = store.list("nodes")
    assert names(items) == ["n1"] and items[0]["kind"] == "Node" and rv == str(server.store.resource_version)

    store.delete("nodes", "n1")
    with pytest.raises(NotFound):
        store.get("nodes", "n1")


def test_status_subresource_and_merge_patch(store):
    store.create(pod("p"))
    p = store.get(RES_PODS, "p", "default")
    p["status"] = {"phase": "Running"}
    p["metadata"]["labels"] = {"not": "written"}
    out = store.update_status(p)
    assert out["status"]["phase"] == "Running" and not out["metadata"].get("labels")
    patched = store.patch(RES_PODS, "p", "default", {"metadata": {"labels": {"a": "b"}}})
    assert patched["metadata"]["labels"] == {"a": "b"} and patched["status"]["phase"] == "Running"
    patched = store.patch(RES_PODS, "p", "default", {"status": {"phase": "Succeeded"}}, subresource="status")
    assert patched["status"]["phase"] == "Succeeded"
    with pytest.raises(Conflict):
        store.patch(RES_PODS, "p", "default", {"metadata": {"resourceVersion": "1", "labels": {"c": "d"}}})
    with pytest.raises(NotFound):
        store.update_status(configmap("cm"))  # configmaps have no status subresource


def test_strategic_merge_patch_over_http(store, server):
    store.create(pod("p"))
    store.patch(RES_PODS, "p", "default", {"status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}},
                "status")
    bound = {"type": "PodBound", "status": "True", "reason": "Bound"}
    out = store.patch(RES_PODS, "p", "default", {"status": {"conditions": [bound]}}, "status", strategic=True)
    assert out["status"]["conditions"] == [{"type": "PodScheduled", "status": "True"}, bound]
    assert out["kind"] == "Pod"
    assert [r.call for r in server.requests if r.verb == "patch"] == ["patch pods/status", "patch pods/status"]


def test_reports_take_from_the_events_token_bucket(store, server):
    """for_reports(): a component's reports (the binder's PodBound condition and Events) do not use
    up the token bucket of the work itself, as client-go's event recorder has a client of its own."""
    store.create(pod("p"))
    work, events = store.limiter.acquired, store.event_limiter.acquired
    bound = {"type": "PodBound", "status": "True", "reason": "Bound"}
    out = store.for_reports().patch(RES_PODS, "p", "default", {"status": {"conditions": [bound]}}, "status",
                                    strategic=True)
    assert out["status"]["conditions"] == [bound]
    assert (store.limiter.acquired, store.event_limiter.acquired) == (work, events + 1)
    store.patch(RES_PODS, "p", "default", {"metadata": {"labels": {"a": "b"}}})
    assert (store.limiter.acquired, store.event_limiter.acquired) == (work + 1, events + 1)


def test_strategic_merge_patch_of_a_custom_resource_is_refused_unsent():
    cluster = EmbeddedCluster(build_plugin_manager(load_external=False))
    with FakeApiServer(cluster.store) as server:
        st = make_store(server)
        try:
            with pytest.raises(UnsupportedMediaType) as exc:
                st.patch(RES_BIND_REQUESTS, "b1", "default", {"status": {"phase": "Succeeded"}}, "status",
                         strategic=True)
        finally:
            st.close()
    assert exc.value.code == 415 and 'BindRequest "b1"' in exc.value.message
    assert not [r for r in server.requests if r.resource == RES_BIND_REQUESTS]


def test_custom_resources_and_dra_kinds_over_http():
    cluster = EmbeddedCluster(build_plugin_manager(load_external=False))
    with FakeApiServer(cluster.store) as server:
        st = make_store(server)
        try:
            br = st.create({"apiVersion": "scheduling.run.ai/v1alpha2", "kind": "BindRequest",
                            "metadata": {"name": "b1", "namespace": "default"},
                            "spec": {"podName": "p", "selectedNode": "n1"}})
            st.patch(RES_BIND_REQUESTS, "b1", "default", {"status": {"phase": "Succeeded"}}, "status")
            assert cluster.store.get(RES_BIND_REQUESTS, "b1", "default")["status"] == {"phase": "Succeeded"}
            assert br["kind"] == "BindRequest"
            selectors = [{"cel": {"expression": "device.driver == 'gpu.example.com'"}}]
            st.create({"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": "gpu"},
                       "spec": {"selectors": selectors}})
            items, _ = st.list_refs("deviceclasses.resource.k8s.io")
            assert names(items) == ["gpu"] and items[0]["apiVersion"] == "resource.k8s.io/v1"
            groups = st.server_groups()
            assert groups[""] == ["v1"] and groups["resource.k8s.io"] == ["v1"]
            assert groups["scheduling.run.ai"] == ["v1alpha2", "v2alpha2", "v2"]  # BindRequests, PodGroups, Queues
        finally:
            st.close()
    assert {r.path for r in server.requests if r.resource == RES_BIND_REQUESTS} == {
        "/apis/scheduling.run.ai/v1alpha2/namespaces/default/bindrequests",
        "/apis/scheduling.run.ai/v1alpha2/namespaces/default/bindrequests/b1/status",
    }


def test_api_error_maps_status_bodies():
    body = (b'{"kind":"Status","status":"Failure","message":"pods \\"x\\" already exists",'
            b'"reason":"AlreadyExists"}')
    err = api_error(409, body, "create pod x")
    assert isinstance(err, AlreadyExists) and err.message == 'pods "x" already exists'
    assert isinstance(api_error(410, b'{"reason":"Expired","message":"too old"}', "w"), Gone)
    err = api_error(401, b"Unauthorized", "list pods")
    assert err.code == 401 and "kubeconfig credentials" in err.message
    err = api_error(502, b"<html>bad gateway</html>", "list pods")
    assert type(err) is ApiError and err.code == 502 and "bad gateway" in err.message


def test_kind_from_crd_reads_storage_version_scope_and_status():
    from kai_core.apiserver.schema import builtin_crd_paths, load_crd

    kind = kind_from_crd(load_crd(builtin_crd_paths()[0]))
    assert (kind.resource, kind.version, kind.namespaced, kind.has_status) == (
        RES_BIND_REQUESTS, "v1alpha2", True, True)
    with pytest.raises(ValueError, match="'broken'"):
        kind_from_crd({"metadata": {"name": "broken"}, "spec": {"group": "x.io"}})


def test_kubeconfig_loading(fake_kubeconfig, fake_apiserver, tmp_path):
    st = KubernetesStore.from_kubeconfig(str(fake_kubeconfig))
    try:
        items, _ = st.list("namespaces")
        assert "default" in names(items)
    finally:
        st.close()
    with pytest.raises(KubeconfigError, match="cannot load .*missing"):
        KubernetesStore.from_kubeconfig(str(tmp_path / "missing"))


def test_importing_the_backend_and_the_fake_server_does_not_import_the_client():
    import subprocess
    import sys

    code = ("import sys, kai_core.client.store, kai_core.testing; "
            "sys.exit(any(m.split('.')[0] == 'kubernetes' for m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr or "the kubernetes package was imported at module import"


def test_kube_store_fixture(kube_store, fake_apiserver):
    kube_store.create(configmap("a"))
    assert names(kube_store.list_refs("configmaps", namespace="default")[0]) == ["a"]
    assert fake_apiserver.calls()[:2] == ["create configmaps", "list configmaps"]


# -- retries and faults ----------------------------------------------------------------------------


def test_5xx_on_reads_is_retried_then_succeeds(server):
    sleeps = Sleeps()
    st = make_store(server, sleep=sleeps, qps=0)
    try:
        server.store.create(node("n1"))
        server.fail_next(2, 503, verb="get", resource="nodes")
        assert st.get("nodes", "n1")["metadata"]["name"] == "n1"
        assert st.retries == 2 and len(sleeps.calls) == 2
        assert [r.status for r in server.requests if r.verb == "get"] == [503, 503, 200]

        server.fail_next(10, 500, verb="list")
        with pytest.raises(ApiError) as exc:
            st.list("nodes")
        assert exc.value.code == 500 and "injected fault" in exc.value.message
        assert len([r for r in server.requests if r.verb == "list"]) == st.max_retries + 1
    finally:
        server.clear_faults()
        st.close()


def test_5xx_on_a_write_is_surfaced_not_repeated(server):
    st = make_store(server, sleep=Sleeps())
    try:
        server.fail_next(1, 500, verb="create")
        with pytest.raises(ApiError) as exc:
            st.create(configmap("a"))
        assert exc.value.code == 500
        assert [r.status for r in server.requests if r.verb == "create"] == [500]
        assert server.store.list("configmaps", "default")[0] == []
    finally:
        st.close()


def test_429_is_retried_after_retry_after(server):
    sleeps = Sleeps()
    st = make_store(server, sleep=sleeps, qps=0)
    try:
        server.throttle_next(2, retry_after=3, verb="create")
        st.create(configmap("a"))
        assert sleeps.calls == [3.0, 3.0]  # the server's Retry-After, not our own backoff
        assert [r.status for r in server.requests if r.verb == "create"] == [429, 429, 201]
        assert names(server.store.list("configmaps", "default")[0]) == ["a"]
        # a 5xx that carries Retry-After promises the write was not done: retried too
        server.fail_next(1, 503, retry_after=1, verb="update")
        cm = st.get("configmaps", "a", "default")
        cm["data"] = {"k": "2"}
        assert st.update(cm)["data"] == {"k": "2"}
    finally:
        st.close()


def test_unreachable_server_is_an_api_error(server):
    cfg = server.client_configuration()
    cfg.host = "http://127.0.0.1:9"  # the discard port: nothing listens there
    st = KubernetesStore(cfg, max_retries=1, sleep=Sleeps(), qps=0)
    try:
        with pytest.raises(ApiError) as exc:
            st.get("nodes", "n1")
        assert exc.value.code == 503 and "cannot reach the API server" in exc.value.message
    finally:
        st.close()


# -- pods/binding ----------------------------------------------------------------------------------


def test_bind_is_judged_by_http_status(store, server):
    store.create(node("n1"))
    uid = store.create(pod("p"))["metadata"]["uid"]
    store.bind("default", "p", "n1", uid)  # the typed client would raise a ValidationError here
    assert server.store.get(RES_PODS, "p", "default")["spec"]["nodeName"] == "n1"
    with pytest.raises(Conflict, match="already assigned"):
        store.bind("default", "p", "n1", uid)
    store.create(pod("q"))
    with pytest.raises(Conflict, match="UID in precondition"):
        store.bind("default", "q", "n1", uid)
    with pytest.raises(NotFound):
        store.bind("default", "missing", "n1")
    with pytest.raises(Invalid):
        store.bind("default", "q", "")
    assert server.calls().count("create pods/binding") == 4  # the empty target never left the client


# -- the rate limiter ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_token_bucket_counts():
    clock = FakeClock()
    bucket = TokenBucket(qps=2, burst=3, clock=clock, sleep=clock.sleep)
    for _ in range(7):
        bucket.acquire()
    assert (bucket.acquired, bucket.waited) == (7, 4)  # three from the burst, then one per 1/qps
    assert clock.slept == [0.5] * 4
    clock.now += 10  # idle: the bucket refills up to the burst, no more
    for _ in range(3):
        bucket.acquire()
    assert bucket.waited == 4
    bucket.acquire()
    assert bucket.waited == 5
    off = TokenBucket(qps=0, burst=1)
    assert [off.acquire() for _ in range(100)] == [0.0] * 100
    with pytest.raises(ValueError):
        TokenBucket(qps=5, burst=0)


def test_store_takes_a_token_for_every_request_retries_included(server):
    clock = FakeClock()
    st = KubernetesStore(server.client_configuration(), qps=1, burst=2, clock=clock, sleep=clock.sleep)
    try:
        server.store.create(node("n1"))
        server.fail_next(1, 503, verb="get")
        for _ in range(3):
            st.get("nodes", "n1")
        assert len(server.requests) == 4 == st.requests == st.limiter.acquired
        assert st.limiter.waited == 2  # burst 2, then every request waits for its token
    finally:
        st.close()


# -- reflectors and the cache API ------------------------------------------------------------------


def test_reflector_lists_in_pages_and_feeds_the_cache(server):
    for i in range(5):
        server.store.create(configmap(f"cm{i}"))
    st = make_store(server, page_size=2)
    try:
        cache = Cache(st, ["configmaps"])
        cache.sync()
        assert sorted(n for _, n in cache.objects["configmaps"]) == [f"cm{i}" for i in range(5)]
        lists = [r for r in server.requests if r.verb == "list"]
        assert len(lists) == 3 and [r.query.get("limit") for r in lists] == ["2", "2", "2"]
        assert "continue" in lists[1].query and "continue" in lists[2].query
        assert all(o["kind"] == "ConfigMap" for o in cache.items("configmaps"))

        server.store.create(configmap("new"))
        server.store.patch("configmaps", "cm0", "default", {"data": {"k": "changed"}})
        server.store.delete("configmaps", "cm1", "default")
        wait_for(lambda: "cm1" not in cached(cache) and "new" in cached(cache), "watch events")
        assert cached(cache)["cm0"]["data"] == {"k": "changed"}
        assert st.synced and st.reflector_stats()["configmaps"]["lists"] == 1
    finally:
        st.close()


def test_events_since_orders_changes_and_bookmarks_advance_the_watch(server):
    st = make_store(server)
    try:
        items, rv = st.list_refs("configmaps")
        assert items == []
        server.store.create(configmap("a"))
        server.store.patch("configmaps", "a", "default", {"data": {"k": "2"}})
        server.store.delete("configmaps", "a", "default")
        wait_for(lambda: len(st.events_since(int(rv))[0]) == 3, "three events")
        events, now = st.events_since(int(rv), {"configmaps"})
        assert [e.type for e in events] == ["ADDED", "MODIFIED", "DELETED"]
        assert [int(e.resource_version) for e in events] == list(range(int(rv) + 1, now + 1))
        assert st.events_since(now) == ([], now) and st.resource_version == now

        server.store.create(node("n1"))  # another kind moves the server's version on
        target = str(server.store.resource_version)
        server.send_bookmarks()
        wait_for(lambda: st.reflector_stats()["configmaps"]["resource_version"] == target, "a bookmark")
        assert st.events_since(now, {"configmaps"})[0] == []
    finally:
        st.close()


def test_cut_watch_reconnects_without_relisting(server):
    st = make_store(server)
    try:
        st.list_refs("configmaps")
        wait_for(lambda: server.open_watches("configmaps") == 1, "the watch")
        assert server.cut_watches("configmaps") == 1
        server.store.create(configmap("after-cut"))
        wait_for(lambda: names(st.list_refs("configmaps")[0]) == ["after-cut"], "the reconnected watch")
        stats = st.reflector_stats()["configmaps"]
        assert stats["lists"] == 1 and stats["watches"] >= 2
    finally:
        st.close()


def test_410_relists_and_reports_the_difference_as_events(server):
    server.store.create(configmap("gone"))
    server.store.create(configmap("changed"))
    server.store.create(configmap("same"))
    st = make_store(server)
    try:
        cache = Cache(st, ["configmaps"])
        cache.sync()
        wait_for(lambda: server.open_watches("configmaps") == 1, "the watch")
        # keep the reflector from reconnecting while the cluster changes and forgets its history
        server.fail_next(1000, 503, verb="watch", resource="configmaps")
        server.cut_watches("configmaps")
        server.store.delete("configmaps", "gone", "default")
        server.store.patch("configmaps", "changed", "default", {"data": {"k": "new"}})
        server.store.create(configmap("added"))
        server.compact()
        server.clear_faults()
        wait_for(lambda: st.reflector_stats()["configmaps"]["lists"] == 2, "the relist")
        wait_for(lambda: sorted(cached(cache)) == ["added", "changed", "same"], "the cache to follow")
        assert cached(cache)["changed"]["data"] == {"k": "new"}
        assert cached(cache, namespace="kube-system")  # the compaction marker is a configmap too
    finally:
        server.clear_faults()
        st.close()


def test_writes_show_in_the_cache_at_once_and_only_once(store, server):
    store.list_refs("configmaps")
    rv0 = store.resource_version
    created = store.create(configmap("a"))
    assert names(store.list_refs("configmaps")[0]) == ["a"]  # written through, before any watch event
    created["data"] = {"k": "2"}
    store.update(created)
    store.delete("configmaps", "a", "default")
    assert store.list_refs("configmaps")[0] == []
    target = str(server.store.resource_version)
    server.send_bookmarks()
    wait_for(lambda: store.reflector_stats()["configmaps"]["resource_version"] == target, "the watch")
    events, _ = store.events_since(rv0, {"configmaps"})
    assert [e.type for e in events] == ["ADDED", "MODIFIED", "DELETED"]  # the watch's copies were dropped
    assert store.list_refs("configmaps")[0] == []


def test_direct_watch_and_gone(store, server):
    server.store.create(configmap("a"))
    rv = str(server.store.resource_version)
    server.store.create(configmap("b"))
    events = []
    for ev in store.watch("configmaps", rv, timeout=5):
        events.append(ev)
        if ev.type == "ADDED":
            break
    assert events[-1].object["metadata"]["name"] == "b" and events[-1].object["kind"] == "ConfigMap"
    server.compact()
    with pytest.raises(Gone):
        next(iter(store.watch("configmaps", rv, timeout=5)))


def test_list_refs_filters_like_list(store, server):
    server.store.create({**configmap("a"), "metadata": {"name": "a", "namespace": "default",
                                                        "labels": {"x": "1"}}})
    server.store.create({**configmap("b"), "metadata": {"name": "b", "namespace": "kube-system"}})
    assert names(store.list_refs("configmaps", namespace="kube-system")[0]) == ["b"]
    assert names(store.list_refs("configmaps", label_selector="x=1")[0]) == ["a"]
    assert names(store.list_refs("configmaps", field_selector="metadata.name=b")[0]) == ["b"]


def test_closed_store_refuses_new_reflectors(server):
    st = make_store(server)
    st.list_refs("nodes")
    st.close()
    assert server.open_watches() == 0 or True  # the server notices the hang-up on its next write
    with pytest.raises(RuntimeError, match="closed"):
        st.list_refs("pods")


# -- a scheduling round trip through HTTP ----------------------------------------------------------

DRA_CLUSTER = """
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
  devices: [{name: fpga-0}, {name: fpga-1}, {name: fpga-2}]
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: one-fpga, namespace: default}
spec: {spec: {devices: {requests: [{name: fpga, exactly: {deviceClassName: fpga.example.com}}]}}}
"""


def dra_pod(name: str) -> dict:
    p = pod(name)
    p["spec"]["containers"][0]["resources"]["claims"] = [{"name": "fpga"}]
    p["spec"]["resourceClaims"] = [{"name": "fpga", "resourceClaimTemplateName": "one-fpga"}]
    return p


class RoundTrip:
    """An embedded cluster (with its controllers) behind the fake server, and the scheduler and the
    binder each on a KubernetesStore of its own: they reach the cluster over HTTP only."""

    def __init__(self, pods: list[dict], gates: str = "") -> None:
        from kai_core.api.features import FeatureGates
        from kai_core.apiserver.manifests import parse_documents
        from kai_core.scheduler.cycle import Scheduler, SchedulerConfig

        self.pm = build_plugin_manager(load_external=False)
        self.gates = FeatureGates.parse(gates)
        self.cluster = EmbeddedCluster(self.pm)
        self.cluster.store.create(node("n1"))
        if self.gates.dra:
            for m in parse_documents(DRA_CLUSTER, "dra"):
                self.cluster.store.create(m.obj)
        for p in pods:
            self.cluster.store.create(p)
        self.cluster.store.create(pod("not-ours", scheduler="default-scheduler"))
        self.cluster.reconcile_controllers()  # the cluster's own controllers (claims from templates)
        self.server = FakeApiServer(self.cluster.store, bookmark_interval=0.2).start()
        self.stores = [make_store(self.server), make_store(self.server)]
        self.scheduler = Scheduler(self.stores[0], self.pm, SchedulerConfig(features=self.gates))
        self.binder_store = self.stores[1]

    def schedule(self) -> tuple:
        self.scheduler.cache.sync()  # reflectors list and start watching: set-up, not per-pod cost
        self.server.clear_requests()
        result = self.scheduler.run_cycle()
        return result, [c for c in self.server.calls() if not c.startswith("watch ")]

    def bind(self) -> tuple:
        from kai_binder.binder import Binder

        self.server.clear_requests()
        result = Binder(self.binder_store, self.pm, self.gates).run_once()
        return result, [c for c in self.server.calls() if not c.startswith("watch ")]

    def close(self) -> None:
        for st in self.stores:
            st.close()
        self.server.stop()


@pytest.fixture
def round_trip():
    made: list[RoundTrip] = []

    def make(pods: list[dict], gates: str = "") -> RoundTrip:
        made.append(RoundTrip(pods, gates))
        return made[-1]

    yield make
    for rt in made:
        rt.close()


def test_scheduler_on_the_kubernetes_store_writes_bind_requests_into_the_cluster(round_trip):
    rt = round_trip([pod("p1"), pod("p2"), pod("p3")])
    result, calls = rt.schedule()
    assert (result.scheduled, result.unschedulable, result.errors) == (3, 0, 0)
    brs, _ = rt.cluster.store.list(RES_BIND_REQUESTS)
    assert sorted(b["spec"]["podName"] for b in brs) == ["p1", "p2", "p3"]
    assert {b["spec"]["selectedNode"] for b in brs} == {"n1"}
    # on the wire, per scheduled pod: one BindRequest create; the scheduler's reads are the watches
    assert calls == [f"create {RES_BIND_REQUESTS}"] * 3

    again, calls = rt.schedule()  # its own writes are in its cache: nothing is scheduled twice
    assert again.scheduled == 0 and calls == []
    assert len(rt.cluster.store.list(RES_BIND_REQUESTS)[0]) == 3


def test_unschedulable_pod_costs_a_status_update_and_an_event(round_trip):
    big = pod("big")
    big["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "64"
    rt = round_trip([big])
    result, calls = rt.schedule()
    assert result.unschedulable == 1
    assert calls == ["update pods/status", "create events"]
    cond = [c for c in rt.cluster.store.get(RES_PODS, "big", "default")["status"]["conditions"]
            if c["type"] == "PodScheduled"]
    assert cond[0]["reason"] == "Unschedulable" and "Insufficient cpu" in cond[0]["message"]
    again, calls = rt.schedule()
    assert again.unschedulable == 1 and calls == []  # same message: no write storm


def without_index_lists(calls: list[str], dra: bool) -> list[str]:
    """``calls`` without the first list of each kind the binder's index watches (exactly once each:
    then it follows their watches, and its checks cost no call per pod)."""
    from kai_binder.index import index_resources

    calls = list(calls)
    for resource in index_resources(dra):
        calls.remove(f"list {resource}")
        assert f"list {resource}" not in calls
    return calls


def test_scheduler_and_binder_round_trip(round_trip):
    pytest.importorskip("kai_binder", reason="kai-binder is not installed")
    rt = round_trip([pod("p1"), pod("p2"), pod("p3")])
    rt.schedule()
    bound, calls = rt.bind()
    assert (bound.succeeded, bound.failed) == (3, 0)
    store = rt.cluster.store
    for name in ("p1", "p2", "p3"):
        assert store.get(RES_PODS, name, "default")["spec"]["nodeName"] == "n1"
    assert not store.get(RES_PODS, "not-ours", "default")["spec"].get("nodeName")
    assert {b["status"]["phase"] for b in store.list(RES_BIND_REQUESTS)[0]} == {"Succeeded"}
    # the binder lists once, then per pod: read the pod, bind it, mark its BindRequest Succeeded;
    # its checks read their index, which lists what it watches once (BindRequests, nodes)
    assert calls[0] == f"list {RES_BIND_REQUESTS}"
    assert without_index_lists(calls[1:], dra=False) == [
        "get pods", "create pods/binding", f"update {RES_BIND_REQUESTS}/status"] * 3


def test_dra_round_trip_allocates_claims_over_http(round_trip):
    pytest.importorskip("kai_binder", reason="kai-binder is not installed")
    from kai_core.api.resources import RES_CLAIMS

    rt = round_trip([dra_pod("p1"), dra_pod("p2")], gates="DynamicResourceAllocation=true")
    result, sched_calls = rt.schedule()
    assert result.scheduled == 2, rt.cluster.store.get(RES_PODS, "p1", "default").get("status")
    assert sched_calls == [f"create {RES_BIND_REQUESTS}"] * 2
    bound, bind_calls = rt.bind()
    assert (bound.succeeded, bound.failed) == (2, 0), bound.reasons
    store = rt.cluster.store
    devices = set()
    for name in ("p1", "p2"):
        p = store.get(RES_PODS, name, "default")
        assert p["spec"]["nodeName"] == "n1"
        claim = store.get(RES_CLAIMS, p["status"]["resourceClaimStatuses"][0]["resourceClaimName"], "default")
        reserved = [{"resource": "pods", "name": name, "uid": p["metadata"]["uid"]}]
        assert claim["status"]["reservedFor"] == reserved
        devices.add(claim["status"]["allocation"]["devices"]["results"][0]["device"])
    assert len(devices) == 2  # two pods, two devices: nothing handed out twice
    # per pod with one claim: read the pod and the claim, add the claim's finalizer, write its
    # allocation and reservation, bind the pod, mark the BindRequest Succeeded
    claims = "resourceclaims.resource.k8s.io"
    per_pod = ["get pods", f"get {claims}", f"update {claims}", f"update {claims}/status",
               "create pods/binding", f"update {RES_BIND_REQUESTS}/status"]
    assert bind_calls[0] == f"list {RES_BIND_REQUESTS}"
    assert without_index_lists(bind_calls[1:], dra=True) == per_pod * 2
