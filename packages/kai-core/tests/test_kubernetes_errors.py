"""Errors of the Kubernetes backend read as one line saying what happened: a reply that is not a
Kubernetes ``Status`` (a proxy's HTML page, a server that is not an API server) and a connection
that could not be made, without urllib3's wrapping."""

from __future__ import annotations

import socket

import pytest

from kai_core.api.errors import AlreadyExists, ApiError, NotFound

pytest.importorskip("kubernetes", reason="the kubernetes client is not installed")

from kai_core.client.store import KubernetesStore, api_error  # noqa: E402


def test_a_status_body_gives_its_message():
    err = api_error(404, b'{"kind":"Status","reason":"NotFound","message":"nodes \\"n1\\" not found"}', "get n1")
    assert isinstance(err, NotFound) and err.message == 'nodes "n1" not found'
    err = api_error(409, b'{"kind":"Status","reason":"AlreadyExists"}', "create x")
    assert isinstance(err, AlreadyExists)
    err = api_error(410, b'{"kind":"Status","reason":"Expired"}', "watch pods")
    assert err.message == "watch pods: HTTP 410 Expired"


def test_a_reply_that_is_not_a_status_is_named_on_one_line():
    page = b"<!DOCTYPE html>\n<html>\n  <body>\n    <h1>404 Not Found</h1>\n  </body>\n</html>\n"
    err = api_error(404, page, "discover /api")
    assert isinstance(err, NotFound)
    assert err.message.startswith("discover /api: HTTP 404 (not a Kubernetes API reply): <!DOCTYPE html>")
    assert "\n" not in err.message
    assert api_error(502, b"", "list pods").message == "list pods: HTTP 502"
    err = api_error(401, b"Unauthorized\n", "list pods")
    assert err.message == "list pods: unauthorized (Unauthorized); check the kubeconfig credentials"


def test_an_unreachable_server_says_why_without_urllib3s_wrapping():
    from kubernetes import client

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{port}"
    st = KubernetesStore(cfg, max_retries=0, qps=0)
    try:
        with pytest.raises(ApiError) as exc:
            st.get("nodes", "n1")
    finally:
        st.close()
    assert exc.value.code == 503
    message = exc.value.message
    assert message.startswith(f"get nodes n1: cannot reach the API server at {cfg.host}: "
                              "Failed to establish a new connection: [Errno "), message
    assert message.endswith("Connection refused"), message  # the errno differs between systems
