"""pytest fixtures around the fake API server; load them with
``pytest_plugins = ["kai_core.testing.fixtures"]`` in a ``conftest.py``.

* ``fake_apiserver``: a started :class:`~kai_core.testing.FakeApiServer` on a fresh embedded store,
  stopped after the test;
* ``fake_kubeconfig``: the path of a kubeconfig pointing at it (for ``kubectl`` or
  ``KubernetesStore.from_kubeconfig``);
* ``kube_store``: a :class:`~kai_core.client.store.KubernetesStore` on it, closed after the
  test (needs the ``kubernetes`` package).

A test that needs a prepared cluster (an ``EmbeddedCluster`` with CRDs and plugins' kinds) builds
its own ``FakeApiServer(cluster.store)``; these fixtures only cover the common case.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kai_core.testing.apiserver import FakeApiServer


@pytest.fixture
def fake_apiserver() -> Iterator[FakeApiServer]:
    """A fake API server serving a fresh EmbeddedStore on 127.0.0.1 and an ephemeral port."""
    server = FakeApiServer(bookmark_interval=0.5).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_kubeconfig(fake_apiserver: FakeApiServer, tmp_path: Path) -> Path:
    """A kubeconfig file whose current context is the fake API server."""
    return fake_apiserver.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def kube_store(fake_apiserver: FakeApiServer):
    """A KubernetesStore talking to ``fake_apiserver`` over HTTP with the official client."""
    pytest.importorskip("kubernetes", reason="the kubernetes client is not installed")
    from kai_core.client.store import KubernetesStore

    store = KubernetesStore(fake_apiserver.client_configuration(), sync_timeout=20, backoff_base=0.05)
    try:
        yield store
    finally:
        store.close()
