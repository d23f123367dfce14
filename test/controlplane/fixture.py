"""pytest fixtures for a real Kubernetes control plane (see controlplane.py and build.py).

``controlplane`` (session scope) builds or reuses the binaries and starts etcd, kube-apiserver and
kube-controller-manager on 127.0.0.1; it stops them at the end of the session. When Go or the
module proxy cannot be reached, or a component does not start, the tests that use it fail with one
line saying why: they are never skipped.

Tests under test/ get the fixtures through test/conftest.py; elsewhere, load this file the same
way it does (by path: its sibling modules are loaded by path too, under the names
``kai_controlplane_build`` and ``kai_controlplane``) and re-export ``controlplane`` and
``controlplane_binaries`` from a conftest.py.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _load(name: str, filename: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / filename)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


build = _load("kai_controlplane_build", "build.py")
cpmod = _load("kai_controlplane", "controlplane.py")
ControlPlane = cpmod.ControlPlane
ControlPlaneError = cpmod.ControlPlaneError


def binaries_or_fail(config: pytest.Config | None = None) -> dict[str, Path]:
    """build.ensure_binaries(), showing its progress on the terminal (a cold build is long); a
    BuildError fails the calling test with its one line."""
    capman = config.pluginmanager.getplugin("capturemanager") if config is not None else None
    try:
        if capman is not None:
            with capman.global_and_fixture_disabled():
                return build.ensure_binaries()
        return build.ensure_binaries()
    except build.BuildError as e:
        message = str(e)
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def controlplane_binaries(request: pytest.FixtureRequest) -> dict[str, Path]:
    """Paths of etcd, kube-apiserver, kube-controller-manager and kube-scheduler (built if absent)."""
    return binaries_or_fail(request.config)


@pytest.fixture(scope="session")
def controlplane(controlplane_binaries):
    """A started ControlPlane (admin kubeconfig: ``controlplane.kubeconfig``), with the API server's
    audit log on (``controlplane.audit_events()``: the end-to-end tests check every request kai's
    ServiceAccounts make against it)."""
    cp = ControlPlane(controlplane_binaries, audit=True)
    failure = None
    try:
        cp.start()
    except ControlPlaneError as e:
        print(str(e), file=sys.stderr)  # the component's last log lines, shown with the error
        failure = f"cannot start the Kubernetes control plane: {str(e).splitlines()[0]}"
    if failure:
        pytest.fail(failure, pytrace=False)
    try:
        yield cp
    finally:
        cp.stop()
