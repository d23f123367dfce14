"""benchmarks/bench_realcluster.py runs end to end at a tiny size: both workloads on real control
planes, kai and kube-scheduler each binding every pod, and both schedulers' lines printed. Nothing
here checks how fast: the benchmark is a command, not a timed test."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_realcluster.py"


def test_bench_realcluster_runs_both_schedulers_on_both_workloads(controlplane_binaries, tmp_path):
    # controlplane_binaries: the binaries are built (or reused) first, failing with one line
    # when Go or the module proxy cannot be reached; the script then starts its own control planes
    # (its API server keeps an audit log, which the session control plane does not)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--workload", "all", "--scale", "0.004", "--qps", "100", "--burst", "200",
         "--timeout", "300"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    out = proc.stdout  # the report; progress lines go to stderr
    assert proc.returncode == 0, (out + proc.stderr)[-4000:]
    assert "PROBLEM" not in out, out[-4000:]
    for workload, pods in (("dra", 16), ("plain", 40)):
        section = out.split(f"workload {workload}:", 1)[1].split("\nworkload ", 1)[0]
        assert "client QPS 100, burst 200 for both" in section
        assert "--qps 100 --burst 200" in section and "clientConnection.qps 100, burst 200" in section
        assert re.search(r"^SCHEDULER\s+PODS\s+BOUND\s+SECONDS\s+PODS/S\s+P50 S\s+P99 S\s+WRITES/POD", section, re.M)
        for scheduler in ("kai", "kube-scheduler"):
            row = re.search(rf"^{scheduler}\s+{pods}\s+(\d+)\s", section, re.M)
            assert row and int(row.group(1)) == pods, section  # every pod bound
            assert re.search(rf"^{scheduler}: API calls/pod: .*create pods/binding", section, re.M), section
        assert re.search(r"^kai/kube\s+\S", section, re.M), section
    # the DRA run: every claim allocated by each scheduler went through the API server's validation
    dra = out.split("workload dra:", 1)[1].split("\nworkload ", 1)[0]
    assert "update resourceclaims/status" in dra
