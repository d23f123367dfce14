"""The Kubernetes store's reads from its watch cache (``read_from_cache``), as controller-runtime's
client reads from its informers, and the Events' token bucket of their own: fewer requests per pod
for the binder, never a lost update."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("kubernetes")

from kai_core.api.errors import Conflict, NotFound  # noqa: E402
from kai_core.client.store import KubernetesStore  # noqa: E402
from kai_core.testing import FakeApiServer  # noqa: E402

CLAIMS = "resourceclaims.resource.k8s.io"


def claim(name: str) -> dict:
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu"}}]}}}


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + 15
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def server():
    with FakeApiServer(bookmark_interval=0.2) as s:
        yield s


@pytest.fixture
def store(server):
    st = KubernetesStore(server.client_configuration(), backoff_base=0.01, backoff_cap=0.05)
    yield st
    st.close()


def test_gets_come_from_the_cache_once_listed_and_misses_ask_the_server(server, store):
    store.create(claim("a"))
    store.read_from_cache(CLAIMS)
    wait_for(lambda: store.reflector_stats()[CLAIMS]["synced"], "the claims to be listed")
    server.clear_requests()
    got = store.get(CLAIMS, "a", "default")
    assert got["metadata"]["name"] == "a" and server.calls() == []
    got["metadata"]["labels"] = {"mutated": "by the caller"}  # a copy: the cache is not touched
    assert "labels" not in store.get(CLAIMS, "a", "default")["metadata"]
    with pytest.raises(NotFound):
        store.get(CLAIMS, "missing", "default")
    assert server.calls() == [f"get {CLAIMS}"]
    server.clear_requests()
    with pytest.raises(NotFound):  # other kinds: from the server, as before
        store.get("configmaps", "x", "default")
    assert server.calls() == ["get configmaps"]


def test_a_fresh_get_asks_the_server_even_for_a_cached_kind(server, store):
    """What the binder reads a pod with before failing a request on a cached copy."""
    store.create(claim("a"))
    store.read_from_cache(CLAIMS)
    wait_for(lambda: store.reflector_stats()[CLAIMS]["synced"], "the claims to be listed")
    server.clear_requests()
    store.get(CLAIMS, "a", "default")
    assert server.calls() == []
    assert store.get(CLAIMS, "a", "default", fresh=True)["metadata"]["name"] == "a"
    assert server.calls() == [f"get {CLAIMS}"]


def test_a_stale_copy_costs_a_conflict_and_one_fresh_read_never_a_lost_update(server, store):
    store.create(claim("a"))
    store.read_from_cache(CLAIMS)
    wait_for(lambda: store.reflector_stats()[CLAIMS]["synced"], "the claims to be listed")
    stale = store.get(CLAIMS, "a", "default")
    # someone else writes the claim; our cache has not seen it yet
    other = KubernetesStore(server.client_configuration())
    try:
        newer = other.get(CLAIMS, "a", "default")
        newer["metadata"]["labels"] = {"writer": "other"}
        other.update(newer)
    finally:
        other.close()
    stale["metadata"]["annotations"] = {"writer": "us"}
    store._reflectors[CLAIMS].objects[("default", "a")] = stale  # as if the watch were behind
    with pytest.raises(Conflict):
        store.update(stale)
    server.clear_requests()
    fresh = store.get(CLAIMS, "a", "default")  # after the 409: from the server
    assert server.calls() == [f"get {CLAIMS}"]
    assert fresh["metadata"]["labels"] == {"writer": "other"}
    fresh["metadata"]["annotations"] = {"writer": "us"}
    written = store.update(fresh)
    server.clear_requests()
    again = store.get(CLAIMS, "a", "default")  # the write went through to the cache: no read
    assert server.calls() == []
    assert again["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]
    assert again["metadata"]["labels"] == {"writer": "other"} and again["metadata"]["annotations"] == {"writer": "us"}


def test_events_take_tokens_from_a_bucket_of_their_own(server):
    st = KubernetesStore(server.client_configuration(), qps=1.0, burst=2)
    try:
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": "default"}}
        st.create({**cm, "metadata": {"name": "a", "namespace": "default"}})
        st.create({**cm, "metadata": {"name": "b", "namespace": "default"}})
        event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1", "namespace": "default"},
                 "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
                 "reason": "Bound", "message": "m", "type": "Normal"}
        started = time.monotonic()
        st.create(event)  # the work's bucket is empty; the Events' is not
        assert time.monotonic() - started < 0.5
        assert (st.limiter.acquired, st.event_limiter.acquired) == (2, 1)
    finally:
        st.close()


def test_lists_come_from_the_cache_with_the_servers_resource_version(server, store):
    for name in ("a", "b"):
        store.create(claim(name))
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    store.create({**claim("c"), "metadata": {"name": "c", "namespace": "other"}})
    before, _ = store.list(CLAIMS)  # not read from the cache yet: the server's list
    assert [c["metadata"]["name"] for c in before] == ["a", "b", "c"]
    store.read_from_cache(CLAIMS)
    wait_for(lambda: store.reflector_stats()[CLAIMS]["synced"], "the claims to be listed")
    server.clear_requests()
    items, rv = store.list(CLAIMS, "default")
    assert [c["metadata"]["name"] for c in items] == ["a", "b"] and server.calls() == []
    assert rv == store.reflector_stats()[CLAIMS]["resource_version"] and rv.isdigit()
    items[0]["metadata"]["name"] = "changed"  # copies
    assert [c["metadata"]["name"] for c in store.list(CLAIMS)[0]] == ["a", "b", "c"]
