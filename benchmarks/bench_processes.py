"""The scheduler and the binder as two processes against an API server: CPU seconds and stop time.

Run from the project root with the project's venv::

    .venv/bin/python benchmarks/bench_processes.py [--pods 2000] [--nodes 100] [--sigterm-at 0.5]

It serves an embedded cluster (``--nodes`` nodes, ``--pods`` plain pods of ``kai-scheduler``)
through the fake API server in this process, starts ``kai-cli run scheduler`` and ``kai-cli run
binder`` with their default flags (as a user would, through a kubeconfig), and waits until every
pod is bound. Then it sends SIGTERM to both and prints, per process: the CPU seconds it used
(user + system, from the kernel's accounting at exit) and how long it took to exit after SIGTERM;
and the API calls per bound pod, by call (both processes', from the fake API server's record).
With ``--sigterm-at F`` the SIGTERM goes out once a fraction F of the pods is bound instead (the
stop under load). The fake API server, in this process, is not counted.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path


def node(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"n{i:04d}"},
            "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i:05d}", "namespace": "default"},
            "spec": {"schedulerName": "kai-scheduler",
                     "containers": [{"name": "c", "image": "busybox:1",
                                     "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from kai_cli.main import cli; cli()", *args]


def bound(store) -> int:
    pods, _ = store.list("pods")
    return sum(1 for p in pods if (p.get("spec") or {}).get("nodeName"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=2000)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--sigterm-at", type=float, default=None,
                    help="send SIGTERM once this fraction of the pods is bound (default: once all are)")
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()

    from kai_core.cluster import EmbeddedCluster
    from kai_core.plugins import build_plugin_manager
    from kai_core.testing import FakeApiServer

    cluster = EmbeddedCluster(build_plugin_manager())
    for i in range(args.nodes):
        cluster.store.create(node(i))
    for i in range(args.pods):
        cluster.store.create(pod(i))
    server = FakeApiServer(cluster.store).start()
    stop = threading.Event()

    def control_plane() -> None:
        while not stop.wait(0.05):
            cluster.reconcile_controllers()

    threading.Thread(target=control_plane, daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="kai-bench-"))
    kubeconfig = server.write_kubeconfig(tmp / "kubeconfig")
    procs = {}
    logs = {}
    for which in ("scheduler", "binder"):
        logs[which] = open(tmp / f"{which}.log", "wb")  # noqa: SIM115 - closed below
        procs[which] = subprocess.Popen(cli("run", which, "--kubeconfig", str(kubeconfig)),
                                        stdout=logs[which], stderr=subprocess.STDOUT)
    start = time.monotonic()
    target = args.pods if args.sigterm_at is None else max(1, int(args.pods * args.sigterm_at))
    done_at = None
    while time.monotonic() - start < args.timeout:
        if any(p.poll() is not None for p in procs.values()):
            break
        if bound(cluster.store) >= target:
            done_at = time.monotonic()
            break
        time.sleep(0.05)
    n_bound = bound(cluster.store)
    sent = time.monotonic()
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    results = {}
    for which, p in procs.items():
        try:
            _, status, usage = os.wait4(p.pid, 0)
        except ChildProcessError:
            status, usage = p.returncode, None
        p.returncode = os.waitstatus_to_exitcode(status) if usage is not None else p.returncode
        results[which] = (time.monotonic() - sent, usage, p.returncode)
        logs[which].close()
    stop.set()
    server.stop()
    took = (done_at - start) if done_at else None
    print(f"pods {args.pods}, nodes {args.nodes}: {n_bound} bound"
          + (f" in {took:.1f}s" if took else " (gave up waiting)")
          + (f"; SIGTERM at {target} bound" if args.sigterm_at is not None else "; SIGTERM once all were bound"))
    print(f"{'PROCESS':<10} {'CPU S':>7} {'EXIT AFTER SIGTERM S':>21} {'EXIT CODE':>9}")
    for which, (exit_after, usage, code) in results.items():
        cpu = usage.ru_utime + usage.ru_stime if usage is not None else float("nan")
        print(f"{which:<10} {cpu:>7.1f} {exit_after:>21.2f} {code!s:>9}")
    calls = Counter(r.call for r in server.requests if r.verb and r.verb != "watch")
    per_pod = ", ".join(f"{c} {n / max(n_bound, 1):.2f}" for c, n in calls.most_common())
    print(f"API calls per bound pod (scheduler and binder together, watches aside): {per_pod}")
    print(f"logs in {tmp}")
    return 0 if n_bound >= target else 1


if __name__ == "__main__":
    sys.exit(main())
