"""What a user of the installed plugin sees through ``kai-cli``."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from kai_cli.main import cli

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_plugins_list_shows_the_installed_plugin_with_its_hooks():
    result = invoke("plugins", "list")
    assert result.exit_code == 0, result.output
    row = next(line.split() for line in result.output.splitlines() if line.startswith("fpga-example "))
    assert row[:3] == ["fpga-example", "kai-plugin-fpga", "0.1.0"]
    assert " ".join(row[3:]) == "kai_check_configs, kai_filter_nodes, kai_rank_devices, kai_score_nodes"
    assert "ERROR" not in result.output


def test_example_manifests_are_valid():
    result = invoke("validate", str(MANIFESTS))
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("10 object(s) valid")


def test_run_scheduler_on_the_example_cluster_places_pods_by_shell_and_bitstream():
    result = invoke("run", "scheduler", "--cluster", str(MANIFESTS),
                    "--feature-gates=DynamicResourceAllocation=true", "--until-idle")
    assert result.exit_code == 0, result.output
    assert "pod default/aes-encrypt: bound to fpga-node-c" in result.output
    assert "pod default/h265-transcode: bound to fpga-node-b" in result.output
    assert "pods bound: 2, pending: 0, unschedulable: 0" in result.output
