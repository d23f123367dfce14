"""Bad input a user can give ``kai-cli run``: each ends with exactly one line on stderr naming the
problem, exit code 2, no traceback and no library noise (urllib3's retry warnings, a YAML
parser's multi-line report), and nothing is run first when the problem can be seen up front."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from kai_cli.main import cli


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def only_line(result) -> str:
    """The single non-empty line on stderr, after checking the exit code and the absence of a traceback."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kai-cli: error: ") and "Traceback" not in result.stderr
    return lines[0]


def closed_port() -> int:
    """A local port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kubeconfig(tmp_path, server: str):
    path = tmp_path / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    return path


@pytest.mark.parametrize("component", ["scheduler", "binder"])
def test_an_unreachable_api_server_is_one_line(tmp_path, monkeypatch, component):
    import kai_cli.main as main

    real_opts = main._cluster_opts

    def quick_opts(params, period):  # the store's own retries, kept but short
        opts = real_opts(params, period)
        opts.store_kwargs = {"max_retries": 2, "backoff_base": 0.01, "backoff_cap": 0.02}
        return opts

    monkeypatch.setattr(main, "_cluster_opts", quick_opts)
    server = f"https://127.0.0.1:{closed_port()}"
    line = only_line(invoke("run", component, "--kubeconfig", str(kubeconfig(tmp_path, server))))
    assert f"cannot reach the API server at {server}" in line
    assert "Connection refused" in line
    assert "Max retries exceeded" not in line and "HTTPSConnectionPool" not in line


def test_a_kubeconfig_that_is_not_yaml_is_one_line(tmp_path):
    bad = tmp_path / "kubeconfig"
    bad.write_text("clusters: [oops\n")
    line = only_line(invoke("run", "scheduler", "--kubeconfig", str(bad)))
    assert f"--kubeconfig {bad}: cannot load" in line


@pytest.mark.parametrize(("gates", "fragment"), [
    ("DynamicResourceAllocation", "expected Name=true|false"),
    ("DynamicResourceAllocation=maybe", "invalid value 'maybe'"),
    ("Bogus=true", "unrecognized feature gate 'Bogus'"),
])
def test_bad_feature_gates_are_one_line(gates, fragment):
    for component in (["run", "scheduler", "--until-idle"], ["run", "binder", "--cluster", "/unused"]):
        line = only_line(invoke(*component, f"--feature-gates={gates}"))
        assert line.startswith("kai-cli: error: --feature-gates: ") and fragment in line


def test_a_save_path_that_cannot_be_written_is_refused_before_the_run(tmp_path):
    target = tmp_path / "missing" / "state.yaml"
    result = invoke("run", "scheduler", "--until-idle", "--save", str(target))
    assert f"--save {target}: directory {target.parent} does not exist" in only_line(result)
    assert "pods bound" not in result.stdout  # refused up front, not after the whole run
    result = invoke("run", "binder", "--cluster", str(tmp_path), "--save", str(target))
    assert f"--save {target}" in only_line(result)


def test_a_server_that_is_not_kubernetes_is_one_line(tmp_path):
    import http.server
    import threading

    class NotKubernetes(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server naming
            self.send_error(404)  # an HTML page over several lines

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotKubernetes)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        server = f"http://127.0.0.1:{httpd.server_address[1]}"
        line = only_line(invoke("run", "scheduler", "--kubeconfig", str(kubeconfig(tmp_path, server))))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert f"cannot discover the APIs of {server}" in line
    assert "HTTP 404 (not a Kubernetes API reply)" in line


@pytest.mark.parametrize(("flag", "value", "fragment"), [
    ("--metrics-bind-address", "8080", "expected [host]:port"),
    ("--health-probe-bind-address", ":99999", "the port must be a number from 0 to 65535"),
])
def test_a_bad_bind_address_is_refused_before_connecting(tmp_path, flag, value, fragment):
    # the kubeconfig names a server nothing listens on: the flag's error comes first, at once
    config = kubeconfig(tmp_path, f"https://127.0.0.1:{closed_port()}")
    line = only_line(invoke("run", "binder", "--kubeconfig", str(config), f"{flag}={value}"))
    assert line.startswith(f"kai-cli: error: {flag}: bind address {value!r}") and fragment in line
    assert "cannot reach" not in line
