"""A Binding's annotations are merged into the pod's in the write that binds it, as the API server's
pods/binding does (``setPodNodeAndMetadata``): in the embedded store, and over HTTP from the
Kubernetes store to the fake API server."""

from __future__ import annotations

import pytest

from kai_core.api.errors import Conflict
from kai_core.api.resources import RES_PODS
from kai_core.apiserver.store import EmbeddedStore


def node(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


def pod(name: str, **annotations: str) -> dict:
    md = {"name": name, "namespace": "default"}
    if annotations:
        md["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md,
            "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}


def check_binding_annotations(store, read) -> None:
    store.create(node("n1"))
    uid = store.create(pod("p", kept="yes", replaced="old"))["metadata"]["uid"]
    store.bind("default", "p", "n1", uid, annotations={"replaced": "new", "added": ""})
    got = read("p")
    assert got["spec"]["nodeName"] == "n1"
    assert got["metadata"]["annotations"] == {"kept": "yes", "replaced": "new", "added": ""}
    uid = store.create(pod("q"))["metadata"]["uid"]
    with pytest.raises(Conflict):  # a refused binding changes nothing
        store.bind("default", "q", "n1", "another-uid", annotations={"a": "b"})
    assert not read("q")["metadata"].get("annotations")
    store.bind("default", "q", "n1", uid)
    assert not read("q")["metadata"].get("annotations")


def test_embedded_store_merges_binding_annotations():
    store = EmbeddedStore()
    check_binding_annotations(store, lambda name: store.get(RES_PODS, name, "default"))


def test_kubernetes_store_sends_them_and_the_fake_server_merges_them():
    pytest.importorskip("kubernetes", reason="the kubernetes client is not installed")
    from kai_core.client.store import KubernetesStore
    from kai_core.testing import FakeApiServer

    server = FakeApiServer().start()
    store = KubernetesStore(server.client_configuration(), backoff_base=0.01, backoff_cap=0.05)
    try:
        check_binding_annotations(store, lambda name: server.store.get(RES_PODS, name, "default"))
        assert server.calls().count("create pods/binding") == 3
    finally:
        store.close()
        server.stop()
