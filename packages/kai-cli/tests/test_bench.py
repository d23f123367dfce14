"""``kai-cli bench`` at a tiny size: it runs every scenario to the end with a correct outcome (every
pod bound, no device in two claims, no node over capacity) and prints its tables. Never a timing
assertion: the figures depend on the machine."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from kai_cli.bench import SCENARIOS, SUMMARY_HEADER, Scenario, run_scenario, sized, verify
from kai_cli.main import cli
from kai_core.api.resources import RES_CLAIMS
from kai_core.apiserver.store import EmbeddedStore


def invoke(*args: str):
    return CliRunner().invoke(cli, ["bench", *args], catch_exceptions=False)


def test_every_scenario_runs_at_tiny_size_and_binds_every_pod():
    r = invoke("--tiny", "--json")
    assert r.exit_code == 0, r.output
    results = {x["scenario"]: x for x in json.loads(r.stdout)["results"]}
    assert list(results) == list(SCENARIOS)
    for name, x in results.items():
        if SCENARIOS[name].kind == "queues":  # one cycle, half the pods left pending: see below
            continue
        assert x["problems"] == [], name
        assert x["bound"] == x["to_schedule"] > 0, name
        assert x["writes_per_pod"] > 0, name
        assert x["peak_rss_bytes"] > 0, name
        assert x["binder"] == "shipped", name
        if not SCENARIOS[name].via_run:
            assert x["phases"]["  decide (filter, allocate, score)"]["calls"] == x["to_schedule"], name
        if SCENARIOS[name].min_rate is not None:  # the throughput rows: cost per pod and latency too
            assert x["cpu_per_1000_pods"]["scheduler"] > 0 and x["cpu_per_1000_pods"]["binder"] > 0, name
            assert 0 < x["first_bound_seconds"] <= x["seconds"], name
    # a DRA pod costs its claim, the pod's claim status, the BindRequest and its status, the
    # claim's finalizer and allocation, the binding, the PodBound condition and the Event; the
    # same through kai-cli run's code path
    assert results["dra"]["writes_per_pod"] == results["run-dra"]["writes_per_pod"] == 9
    assert results["plain"]["writes_per_pod"] == results["run-plain"]["writes_per_pod"]
    assert results["snapshot"]["snapshot_cold"] is not None and results["snapshot"]["snapshot_warm"] is not None


def test_the_queues_scenario_times_two_cycles_that_place_gangs_whole():
    """At 1/100 of its size: 40 nodes, 8 leaf queues, 1,400 pods in gangs of 8, half running: the
    first cycle places the gang the free node holds, whole, and tells every other gang why it waits."""
    r = invoke("--scenario", "queues", "--scale", "0.01", "--json")
    assert r.exit_code == 0, r.output
    (x,) = json.loads(r.stdout)["results"]
    assert x["problems"] == [] and x["binder"] == "none"
    assert x["to_schedule"] == 704 and x["rounds"] == 2
    assert x["bound"] > 0 and x["bound"] % 8 == 0  # whole gangs
    first, second = x["cycle_phases"]
    assert first["scheduler cycle"]["seconds"] > 0 and second["scheduler cycle"]["seconds"] > 0
    assert first["  unschedulable reasons written"]["calls"] > 600  # every gang that waits says why
    assert first["  queue order (usage, fair share, order)"]["calls"] == 1
    r = invoke("--scenario", "queues", "--tiny")
    assert r.exit_code == 0, r.output
    assert "queues    none" in r.stdout and "cycle 1" in r.stdout and "allocate (gang placement)" in r.stdout


def test_the_tables_have_one_row_per_scenario_and_a_breakdown_per_plugin(tmp_path):
    prof = tmp_path / "bench.prof"
    r = invoke("--tiny", "--scenario", "dra", "--scenario", "plain", "--profile", str(prof))
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split("  ")[0] == "SCENARIO" and "WRITES/POD" in lines[0] and "PEAK RSS MIB" in lines[0]
    rows = [line.split() for line in lines[1:3]]
    assert [row[0] for row in rows] == ["dra", "plain"]
    assert all(row[1] == "shipped" for row in rows)  # BINDER
    assert all(row[4] == f"{x}/{x}" for row, x in zip(rows, (32, 8), strict=True))  # BOUND: all of them
    assert "plugin kai-core.dra kai_allocate_claims" in r.stdout
    assert "plugin kai-core.resources-fit kai_filter_nodes" in r.stdout
    assert len(SUMMARY_HEADER) == 17
    assert (tmp_path / "bench-dra.prof").stat().st_size > 0 and (tmp_path / "bench-plain.prof").exists()


def test_a_matchattribute_claim_gets_two_gpus_under_one_pcie_root():
    r = run_scenario(sized(SCENARIOS["dra-match"], nodes=2, pods=8))
    assert r.problems == [] and r.bound == 8


def test_sizes_that_cannot_fit_or_conflict_are_refused_with_a_clear_message():
    r = invoke("--scenario", "dra", "--nodes", "1", "--pods", "9")
    assert r.exit_code == 2 and "9 pods need more GPUs than 1 nodes x 8 have" in r.output
    r = invoke("--nodes", "3")
    assert r.exit_code == 2 and "--nodes/--pods size one scenario" in r.output
    r = invoke("--tiny", "--scale", "0.5")
    assert r.exit_code == 2 and "--tiny sets the size itself" in r.output


def test_a_profile_path_in_a_missing_directory_is_refused_before_running(tmp_path):
    target = tmp_path / "missing" / "p.out"
    r = invoke("--tiny", "--scenario", "plain", "--profile", str(target))
    assert r.exit_code == 2 and f"directory {target.parent} does not exist" in r.output
    assert "running plain" not in r.output  # refused before any scenario ran
    assert isinstance(r.exception, SystemExit)  # a usage error, not a traceback


def test_the_check_reports_a_device_given_to_two_claims_and_an_unbound_pod():
    store = EmbeddedStore()
    result = {"request": "gpu", "driver": "gpu.nvidia.com", "pool": "n1", "device": "gpu-0"}
    for name in ("a", "b"):
        store.restore({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                       "metadata": {"name": name, "namespace": "default"},
                       "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "x"}}]}},
                       "status": {"allocation": {"devices": {"results": [result]}}}})
    store.restore({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
                   "spec": {"schedulerName": "kai-scheduler", "containers": [{"name": "c", "image": "x"}]}})
    bound, problems = verify(store, "kai-scheduler")
    assert bound == 0
    assert any("gpu.nvidia.com/n1/gpu-0 in claims a and b" in p for p in problems)
    assert any("1 pod(s) not bound" in p for p in problems)
    assert store.list(RES_CLAIMS)[0]


@pytest.mark.parametrize("scale, nodes, pods, expect", [
    (0.5, None, None, (250, 2000)),
    (1.0, 10, None, (10, 4000)),
    (1.0, None, 80, (500, 80)),
])
def test_sizes(scale, nodes, pods, expect):
    sc = sized(SCENARIOS["dra"], scale, nodes, pods)
    assert isinstance(sc, Scenario) and (sc.nodes, sc.pods) == expect


def test_the_lean_binder_binds_every_pod_without_reports_and_says_so():
    r = invoke("--tiny", "--scenario", "dra", "--scenario", "run-dra", "--lean-binder", "--baseline", "--json")
    assert r.exit_code == 0, r.output
    results = {x["scenario"]: x for x in json.loads(r.stdout)["results"]}
    for name in ("dra", "run-dra"):
        assert results[name]["problems"] == [] and results[name]["bound"] == 32
        assert results[name]["binder"] == "lean"
        assert results[name]["writes_per_pod"] == 7  # no PodBound condition, no Event
        assert results[f"{name} (baseline)"]["bound"] == 0  # no pod uses the baseline's scheduler name


def test_the_run_scenarios_go_through_kai_cli_runs_own_code_path(monkeypatch, tmp_path):
    """run-dra loads manifest files as kai-cli run scheduler --cluster does and runs the rounds with
    the function that command calls, with the same binder options; and the command itself, on the
    same manifests, binds the same pods with the same writes."""
    import yaml

    from kai_cli import runner
    from kai_cli.bench import generate

    calls = []
    real = runner.run_scheduler_embedded

    def spy(cluster, pm, gates, config, **kwargs):
        calls.append(kwargs["binder"])
        return real(cluster, pm, gates, config, **kwargs)

    monkeypatch.setattr(runner, "run_scheduler_embedded", spy)
    r = invoke("--tiny", "--scenario", "run-dra", "--json")
    assert r.exit_code == 0, r.output
    (x,) = json.loads(r.stdout)["results"]
    assert calls == [runner.binder_options(embedded=True, scheduler_names=["kai-scheduler"])]
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(list(generate(sized(SCENARIOS["run-dra"], 4 / 500)))))
    out = CliRunner().invoke(cli, ["run", "scheduler", "--cluster", str(path), "--until-idle",
                                   "--feature-gates=DynamicResourceAllocation=true"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert f"pods bound: {x['bound']}, pending: 0" in out.output
    assert calls[1] == calls[0]  # the command ran through the same function, with the same binder


def test_written_manifests_run_with_kai_cli_run_as_a_user_would(tmp_path):
    r = invoke("--tiny", "--scenario", "dra", "--scenario", "plain", "--write-manifests", str(tmp_path / "m"))
    assert r.exit_code == 0, r.output
    assert "running" not in r.output  # nothing was benchmarked
    for name, pods in (("dra", 32), ("plain", 8)):
        out = CliRunner().invoke(cli, ["run", "scheduler", "--cluster", str(tmp_path / "m" / f"{name}.yaml"),
                                       "--until-idle", "--feature-gates=DynamicResourceAllocation=true"],
                                 catch_exceptions=False)
        assert out.exit_code == 0, out.output
        assert f"pods bound: {pods}, pending: 0, unschedulable: 0" in out.output
        assert "cpu seconds per 1,000 pods bound: controllers" in out.output
    (tmp_path / "file").write_text("")
    r = invoke("--tiny", "--scenario", "dra", "--write-manifests", str(tmp_path / "file" / "m"))
    assert r.exit_code == 2 and "--write-manifests" in r.output
