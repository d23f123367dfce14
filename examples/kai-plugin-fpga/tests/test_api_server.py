"""The plugin unchanged against an API server: the example cluster behind kai's fake Kubernetes API
server, with its controllers on a thread as a control plane runs them (the kit's
``kai_live_cluster``). kai's scheduler and binder reach it over HTTP only, as they would reach a
real cluster: first as the kit runs them (the components, on threads), then as deployed
(``kai-cli run scheduler|binder --kubeconfig`` as two processes, which find the plugin through its
entry point: the kit's ``processes=True``)."""

from __future__ import annotations

from pathlib import Path

import pytest

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"

EXAMPLE_WITH_PLUGIN = {"aes-encrypt": "fpga-node-c", "h265-transcode": "fpga-node-b"}


@pytest.fixture(autouse=True)
def _kubernetes_client() -> None:
    pytest.importorskip("kubernetes", reason="the kubernetes client is not installed")


def test_the_kits_scheduler_and_binder_place_pods_with_the_plugin(kai_live_cluster):
    cluster = kai_live_cluster(MANIFESTS)
    cluster.start()
    assert cluster.wait_bound("aes-encrypt", "h265-transcode") == EXAMPLE_WITH_PLUGIN
    assert cluster.devices_of("aes-encrypt") == {"fpga": ["fpga.example.com/fpga-node-c/fpga-0"]}


def test_scheduler_and_binder_processes_place_pods_with_the_plugin(kai_live_cluster):
    # as deployed: `kai-cli run scheduler|binder --kubeconfig` processes, which find the plugin
    # through its entry point only; --require-plugin makes them refuse to start without it
    cluster = kai_live_cluster(MANIFESTS, processes=True, require_plugins=["fpga-example"])
    scheduler, binder = cluster.start()
    assert cluster.wait_bound("aes-encrypt", "h265-transcode") == EXAMPLE_WITH_PLUGIN
    assert cluster.devices_of("h265-transcode") == {"fpga": ["fpga.example.com/fpga-node-b/fpga-0"]}
    cluster.stop_components()
    assert [scheduler.code, binder.code] == [0, 0]
