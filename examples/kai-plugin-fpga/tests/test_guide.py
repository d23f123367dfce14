"""The blocks of docs/writing-a-device-plugin.md about this example run as written, with the
example installed: the messages shown are the plugin's, the "Without the kit" code places the pod
where its comment says, the "As deployed" test passes with the scheduler and binder as processes,
and the console session of section 8 prints what it shows.
(packages/kai-cli/tests/test_guide_blocks.py checks that every block of the guide is run somewhere.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kai_cli.docblocks import fenced_blocks, run_console

ROOT = Path(__file__).resolve().parents[3]
GUIDE = ROOT / "docs" / "writing-a-device-plugin.md"
MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"


def block(block_id: str):
    if not GUIDE.is_file():
        pytest.skip(f"{GUIDE} not found: the guide is only in the source repository")
    [found] = [b for b in fenced_blocks(GUIDE) if b.id == block_id]
    return found


def without_pods() -> list[Path]:
    return sorted(p for p in MANIFESTS.glob("*.yaml") if not p.name.startswith("40-"))


def test_the_filter_reason_shown_is_the_plugins(kai_cluster):
    [shown] = block("### Reasons a user will read #1").text.splitlines()
    pod = (MANIFESTS / "40-pods.yaml").read_text().split("---")[1].replace("shell: v3", "shell: v9")
    cluster = kai_cluster(*without_pods(), pod)
    cluster.run()
    assert cluster.pending_message("aes-encrypt") == shown


def test_the_config_problem_shown_is_the_plugins(kai_cluster):
    [shown] = block("### Reasons a user will read #2").text.splitlines()
    template = (MANIFESTS / "30-claimtemplate.yaml").read_text().replace("clockMHz: 400", "clockMHz: 900")
    pod = (MANIFESTS / "40-pods.yaml").read_text().split("---")[1].replace("name: aes-encrypt", "name: hot")
    cluster = kai_cluster(*[p for p in without_pods() if not p.name.startswith("30-")], template, pod)
    cluster.run()
    assert re.sub(r"hot-fpga-\w{5}", "hot-fpga-x7k2q", cluster.pending_message("hot")) == shown


def test_without_the_kit_places_the_pod_where_its_comment_says(monkeypatch):
    code = block("### Without the kit #1").text
    [(variable, field, node)] = re.findall(r'# (\w+)\["spec"\]\["(\w+)"\] == "([\w-]+)"', code)
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(code, str(GUIDE), "exec"), namespace)  # noqa: S102 - our own documentation
    assert namespace[variable]["spec"][field] == node == "fpga-node-c"


def test_running_it_prints_what_the_guide_shows(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert run_console(block("## 8. Running it #1")) == []


def test_as_deployed_runs_the_processes_as_the_guide_shows(kai_live_cluster):
    code = block("### As deployed: scheduler and binder as processes #1").text
    namespace: dict = {"__file__": __file__}
    exec(compile(code, str(GUIDE), "exec"), namespace)  # noqa: S102 - our own documentation
    assert namespace["MANIFESTS"] == MANIFESTS
    [test] = [v for k, v in namespace.items() if k.startswith("test_")]
    test(kai_live_cluster)
