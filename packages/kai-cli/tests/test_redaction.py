"""Credentials never appear in what kai-cli prints: a password in a kubeconfig's server URL
(``https://user:pass@host``) is shown as ``xxxxx`` in the start-up line, in errors and in log lines
(text and JSON, at any verbosity), as Go's ``url.URL.Redacted`` prints a URL."""

from __future__ import annotations

import json
import subprocess
import sys

TIMEOUT = 60


def _kai(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kai_cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def test_a_password_in_the_server_url_is_never_printed(tmp_path):
    """A kubeconfig whose server URL carries a password, and no server there: the start-up line and
    the error show the user and ``xxxxx``, in text and JSON logs, at any verbosity; exit 2."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = f"https://admin:s3cr3t-pw@127.0.0.1:{port}"
    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "c", "cluster": {"server": server}}], "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}]}))
    for extra in ([], ["-vv"], ["-vv", "--log-format=json"]):
        verbosity = [a for a in extra if a == "-vv"]
        args = [*verbosity, "run", "scheduler", "--kubeconfig", str(config), *[a for a in extra if a != "-vv"]]
        proc = _kai(*args)
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 2, stderr[-2000:]
        assert "s3cr3t-pw" not in stdout + stderr
        assert f"API server https://admin:xxxxx@127.0.0.1:{port}" in stdout
        assert stderr.splitlines()[-1].startswith(
            f"kai-cli: error: cannot discover the APIs of https://admin:xxxxx@127.0.0.1:{port}: ")


def test_redaction_keeps_everything_but_the_password():
    from kai_core.observability import redact_credentials

    assert redact_credentials("at https://u:p@h:6443/x and http://v:q@[::1]:80") == \
        "at https://u:xxxxx@h:6443/x and http://v:xxxxx@[::1]:80"
    assert redact_credentials("https://h:6443 user@example.com https://token@h") == \
        "https://h:6443 user@example.com https://token@h"  # no password: nothing to hide (as Go)
