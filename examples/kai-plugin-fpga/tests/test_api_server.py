"""The plugin unchanged against an API server: the example cluster behind kai's fake Kubernetes API
server, with its controllers on a thread as a control plane runs them (the kit's
``kai_live_cluster``). kai's scheduler and binder reach it over HTTP only, as they would reach a
real cluster: first as the kit runs them (the components, on threads), then as deployed
(``kai-cli run scheduler|binder --kubeconfig`` as two processes, which find the plugin through its
entry point)."""

from __future__ import annotations

import subprocess
import sys
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


def test_scheduler_and_binder_processes_place_pods_with_the_plugin(kai_live_cluster, tmp_path):
    cluster = kai_live_cluster(MANIFESTS)
    procs = {}
    try:
        for component in ("scheduler", "binder"):
            log = (tmp_path / f"{component}.log").open("w")
            procs[component] = subprocess.Popen(
                [sys.executable, "-m", "kai_cli.main", "run", component, "--kubeconfig", str(cluster.kubeconfig),
                 "--feature-gates=DynamicResourceAllocation=true", "--period", "0.2"],
                stdout=log, stderr=subprocess.STDOUT)
            log.close()

        def bound_or_died() -> bool:
            # a component that died ends the wait at once; the assertions below show its log
            return len(cluster.placed()) == 2 or any(p.poll() is not None for p in procs.values())

        cluster.wait_for(bound_or_died, "both pods to be bound")
        placed = cluster.placed()
    finally:
        for p in procs.values():
            p.terminate()
        codes = {component: p.wait(30) for component, p in procs.items()}
    logs = {c: (tmp_path / f"{c}.log").read_text() for c in codes}
    assert placed == EXAMPLE_WITH_PLUGIN, logs
    assert codes == {"scheduler": 0, "binder": 0}, logs
