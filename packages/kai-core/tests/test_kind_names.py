"""The store takes the kind names ``kai-cli get`` takes: ``resourceclaims`` as well as
``resourceclaims.resource.k8s.io``, ``po``, ``pod``, ``Pod``, ``br``; unknown names are still
refused, and the fake API server's URLs stay as strict as a real API server's."""

from __future__ import annotations

import pytest

from kai_core.api.errors import NotFound, UnknownKind
from kai_core.cluster import EmbeddedCluster
from kai_core.plugins import build_plugin_manager

CLAIM = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
         "metadata": {"name": "c", "namespace": "default"},
         "spec": {"devices": {"requests": [{"name": "r", "exactly": {"deviceClassName": "x"}}]}}}
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
       "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}


@pytest.fixture
def store():
    s = EmbeddedCluster(build_plugin_manager(load_external=False)).store  # with kai's CRDs
    s.create(CLAIM)
    s.create(POD)
    return s


@pytest.mark.parametrize("name", ["resourceclaims.resource.k8s.io", "resourceclaims", "resourceclaim",
                                  "ResourceClaim"])
def test_get_and_list_take_the_names_kai_cli_get_takes(store, name):
    assert store.get(name, "c", "default")["metadata"]["name"] == "c"
    assert [o["metadata"]["name"] for o in store.list(name, "default")[0]] == ["c"]


@pytest.mark.parametrize("name", ["pods", "pod", "po", "Pods"])
def test_short_names_of_core_kinds(store, name):
    assert store.get(name, "p", "default")["metadata"]["name"] == "p"
    assert store.kinds.get(name).resource == "pods"


def test_bind_requests_by_plural_and_short_name(store):
    assert store.kinds.get("bindrequests").resource == store.kinds.get("br").resource == \
        "bindrequests.scheduling.run.ai"
    assert store.list("bindrequests")[0] == []


def test_unknown_names_are_refused(store):
    with pytest.raises(UnknownKind, match="widgets"):
        store.list("widgets")
    with pytest.raises(NotFound):
        store.get("po", "missing", "default")


def test_the_fake_api_server_serves_only_resource_paths(store):
    pytest.importorskip("kubernetes")
    import urllib.error
    import urllib.request

    from kai_core.testing import FakeApiServer

    with FakeApiServer(store) as server:
        with urllib.request.urlopen(f"{server.url}/api/v1/namespaces/default/pods/p") as reply:
            assert reply.status == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{server.url}/api/v1/namespaces/default/po/p")
        assert err.value.code == 404
