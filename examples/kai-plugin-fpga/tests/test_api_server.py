"""The plugin unchanged against an API server: the example cluster behind kai-core's fake API server
(``kai_core.testing.FakeApiServer``), and ``kai-cli run scheduler|binder --kubeconfig`` as two
processes that reach it over HTTP only, as they would reach a real cluster. The processes find the
plugin through its entry point, exactly as in a deployment."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kai_binder.binder import add_binder_hookspecs
from kai_core.cluster import EmbeddedCluster
from kai_core.plugins import build_plugin_manager

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
#: the most the test waits for the two pods to be bound (a bound, not an expectation)
WAIT = 60.0


def test_scheduler_and_binder_processes_place_pods_with_the_plugin(tmp_path):
    pytest.importorskip("kubernetes", reason="the kubernetes client is not installed")
    from kai_core.testing import FakeApiServer

    # the "cluster": its store, its CRDs and its controllers (the resourceclaim controller makes the
    # pods' claims from the template), served over HTTP
    pm = build_plugin_manager()
    add_binder_hookspecs(pm)
    cluster = EmbeddedCluster(pm)
    cluster.load(MANIFESTS)
    server = FakeApiServer(cluster.store, bookmark_interval=0.2).start()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    stop = threading.Event()

    def control_plane() -> None:
        while not stop.wait(0.05):
            cluster.reconcile_controllers()

    controllers = threading.Thread(target=control_plane, name="fpga-control-plane", daemon=True)
    controllers.start()
    procs = []
    try:
        for component in ("scheduler", "binder"):
            log = (tmp_path / f"{component}.log").open("w")
            procs.append((component, log, subprocess.Popen(
                [sys.executable, "-m", "kai_cli.main", "run", component, "--kubeconfig", str(kubeconfig),
                 "--feature-gates=DynamicResourceAllocation=true", "--period", "0.2"],
                stdout=log, stderr=subprocess.STDOUT)))

        def placed() -> dict:
            return {p["metadata"]["name"]: p["spec"].get("nodeName")
                    for p in cluster.store.list("pods", "default")[0]}

        deadline = time.monotonic() + WAIT
        while not all(placed().values()) and time.monotonic() < deadline:
            if any(p.poll() is not None for _, _, p in procs):
                break  # a component died: no point waiting
            time.sleep(0.1)
        result = placed()
    finally:
        for _, _, p in procs:
            p.terminate()
        codes = {component: p.wait(30) for component, _, p in procs}
        for _, log, _ in procs:
            log.close()
        stop.set()
        controllers.join(30)
        server.stop()
    logs = {c: (tmp_path / f"{c}.log").read_text() for c in codes}
    assert result == {"aes-encrypt": "fpga-node-c", "h265-transcode": "fpga-node-b"}, logs
    assert codes == {"scheduler": 0, "binder": 0}, logs
