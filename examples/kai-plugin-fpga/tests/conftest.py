"""Fixtures for the example plugin's tests, on kai's test kit (the ``kai_cluster`` and
``kai_live_cluster`` fixtures kai-cli gives every pytest run): the example cluster in kai's
embedded cluster, run by the real scheduler and binder until nothing changes.

These tests exercise the plugin as a user gets it, through its installed entry point, so they only
run where ``kai-plugin-fpga`` is installed (``tox -e example``, or ``pip install
./examples/kai-plugin-fpga``); elsewhere every test is skipped with a message saying so. They are
outside the main suite (``pytest.ini`` collects ``packages/`` only).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from pathlib import Path

import pytest

from kai_core.plugins import ENTRY_POINT_GROUP

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
PLUGIN_NAME = "fpga-example"


def plugin_installed() -> bool:
    """Whether the entry point ``fpga-example`` is installed (what kai itself looks for)."""
    return any(ep.name == PLUGIN_NAME for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


@pytest.fixture(autouse=True)
def _require_installed_plugin() -> None:
    if not plugin_installed():
        pytest.skip("kai-plugin-fpga is not installed: run `tox -e example`, or "
                    "`pip install ./examples/kai-plugin-fpga` and then pytest examples/kai-plugin-fpga/tests")


def example_manifests(with_example_pods: bool = True) -> list[Path]:
    """The example's manifest files, in the order ``--cluster`` loads them (all, or all but its pods)."""
    return [p for p in sorted(MANIFESTS.glob("*.yaml")) if with_example_pods or p.name != "40-pods.yaml"]


@pytest.fixture
def fpga_cluster(kai_cluster) -> Callable:
    """``fpga_cluster(*more, with_plugin=True, with_example_pods=True, **kit options)`` -> the kit's
    cluster (:class:`kai_cli.testing.EmbeddedKaiCluster`) of the example's manifests and ``more``
    (objects, YAML). With the plugin as installed (its entry point), or without it: kai where it is
    not installed."""

    def make(*more, with_plugin: bool = True, with_example_pods: bool = True, **kw):
        kw.setdefault("installed_plugins", with_plugin)
        cluster = kai_cluster(*example_manifests(with_example_pods), *more, **kw)
        assert cluster.pm.has_plugin(PLUGIN_NAME) == (with_plugin or PLUGIN_NAME in (kw.get("plugins") or {})), \
            [i.error for i in cluster.pm.load_errors]
        return cluster

    return make


@pytest.fixture
def fpga_pod() -> Callable[..., dict]:
    """``fpga_pod(name, shell=None, bitstream=None, template="one-fpga")`` -> a Pod asking for one
    FPGA through the ResourceClaimTemplate ``template``, annotated for the plugin when given
    ``shell``/``bitstream``."""

    def make(name: str, shell: str | None = None, bitstream: str | None = None,
             template: str = "one-fpga") -> dict:
        annotations = {}
        if shell is not None:
            annotations["fpga.example.com/shell"] = shell
        if bitstream is not None:
            annotations["fpga.example.com/bitstream"] = bitstream
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {
                "schedulerName": "kai-scheduler",
                "containers": [{"name": "ctr", "image": "registry.example.com/app:1",
                                "resources": {"requests": {"cpu": "1"}, "claims": [{"name": "fpga"}]}}],
                "resourceClaims": [{"name": "fpga", "resourceClaimTemplateName": template}],
            },
        }

    return make
