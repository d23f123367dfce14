"""Every code block of docs/writing-a-device-plugin.md is run or checked by a test: python blocks
executed, ``kai-cli`` commands of console blocks run with their output compared, messages compared
with the ones kai gives. This file runs the blocks no other test runs and checks that no block is
left out: a new block must be added to ``RUN_HERE`` or ``RUN_ELSEWHERE``, or marked
``<!-- not run: REASON -->``."""

from __future__ import annotations

import re
import sys
import tomllib
import types
from pathlib import Path

import pytest

from kai_cli.docblocks import Block, fenced_blocks, run_console

ROOT = Path(__file__).resolve().parents[3]
GUIDE = ROOT / "docs" / "writing-a-device-plugin.md"
EXAMPLE = ROOT / "examples" / "kai-plugin-fpga"

#: blocks run by other test files: those about the FPGA example run where it is installed
RUN_ELSEWHERE = {
    '### Devices: removing one, ranking, and "is this pod mine?" #1': "packages/kai-cli/tests/test_guide_testkit.py",
    "### The test kit: `kai_cluster` and `kai_live_cluster` #1": "packages/kai-cli/tests/test_guide_testkit.py",
    "### Why a node won: `kai-cli explain` #1": "packages/kai-cli/tests/test_guide_testkit.py",
    "## 5. Groups: pods that must start together #1": "packages/kai-core/tests/test_guide_groups.py",
    "## 5. Groups: pods that must start together #2": "packages/kai-core/tests/test_guide_groups.py",
    "### Reasons a user will read #1": "examples/kai-plugin-fpga/tests/test_guide.py",
    "### Reasons a user will read #2": "examples/kai-plugin-fpga/tests/test_guide.py",
    "### Without the kit #1": "examples/kai-plugin-fpga/tests/test_guide.py",
    "### As deployed: scheduler and binder as processes #1": "examples/kai-plugin-fpga/tests/test_guide.py",
    "### As deployed: scheduler and binder as processes #2": "packages/kai-cli/tests/test_testkit.py",
    "## 8. Running it #1": "examples/kai-plugin-fpga/tests/test_guide.py",
}
#: blocks run by the tests of this file
RUN_HERE = {
    "### The node-local rule: answers reused for a Job's later pods #1",
    "### When your plugin fails #1",
    "## 3. Slices, classes and claims for a new driver #1",
    "## 3. Slices, classes and claims for a new driver #2",
    "## 3. Slices, classes and claims for a new driver #3",
    "## 6. Packaging and the entry point #1",
    "## 6. Packaging and the entry point #2",
    "## 10. Where things are in kai-core #1",
}


def guide() -> dict[str, Block]:
    if not GUIDE.is_file():
        pytest.skip(f"{GUIDE} not found: the guide is only in the source repository")
    return {b.id: b for b in fenced_blocks(GUIDE)}


def test_every_block_is_run_or_marked():
    blocks = guide()
    unrun = [f"line {b.line}: {i}" for i, b in blocks.items()
             if i not in RUN_HERE and i not in RUN_ELSEWHERE and not b.not_run]
    assert not unrun, "blocks of the guide no test runs:\n" + "\n".join(unrun)
    assert not (RUN_HERE | set(RUN_ELSEWHERE)) - set(blocks), "blocks gone from the guide"
    for where in set(RUN_ELSEWHERE.values()):
        assert "writing-a-device-plugin" in (ROOT / where).read_text(encoding="utf-8"), where


def module_of(code: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(code, str(GUIDE), "exec"), module.__dict__)  # noqa: S102 - our own documentation
    return module


ZONES = """
apiVersion: batch/v1
kind: Job
metadata: {name: spread, namespace: default}
spec:
  parallelism: 2
  template:
    metadata: {labels: {example.com/job: spread}}
    spec:
      schedulerName: kai-scheduler
      restartPolicy: Never
      containers: [{name: c, image: busybox:1, resources: {requests: {cpu: "1"}}}]
"""


def zone_nodes() -> str:
    return "".join(f"""---
apiVersion: v1
kind: Node
metadata: {{name: {name}, labels: {{topology.kubernetes.io/zone: {name[0]}}}}}
status: {{allocatable: {{cpu: "4", memory: 8Gi, pods: "10"}}, conditions: [{{type: Ready, status: "True"}}]}}
""" for name in ("a1", "a2", "b1", "b2"))


def two_pods_of_one_shape() -> str:
    pod = """---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{example.com/job: spread}}}}
spec:
  schedulerName: kai-scheduler
  containers: [{{name: c, image: busybox:1, resources: {{requests: {{cpu: "1"}}}}}}]
"""
    return "".join(pod.format(name=n) for n in ("spread-0", "spread-1"))


@pytest.mark.parametrize("as_written", [True, False], ids=["as-written", "without-KAI_NODE_LOCAL"])
def test_the_node_local_sketch_keeps_a_jobs_pods_apart_only_with_its_first_line(kai_cluster, as_written):
    code = guide()["### The node-local rule: answers reused for a Job's later pods #1"].text
    if not as_written:
        code = re.sub(r"^KAI_NODE_LOCAL = False.*$", "", code, flags=re.M)
    cluster = kai_cluster(zone_nodes() + two_pods_of_one_shape(), plugins={"zones": module_of(code, "zones")},
                          installed_plugins=False)
    cluster.run()
    placed = cluster.placed()
    assert set(placed) == {"spread-0", "spread-1"}
    zones = {node[0] for node in placed.values()}
    assert len(zones) == (2 if as_written else 1), placed


def test_the_refusals_shown_are_kais(monkeypatch):
    import importlib.metadata

    from kai_core.plugins import build_plugin_manager

    shown = guide()["### When your plugin fails #1"].text.splitlines()
    sources = [
        "from kai_core.framework.hookspecs import hookimpl\n@hookimpl\ndef kai_filter_node(pod, nodes): pass\n",
        "import pluggy\nhookimpl = pluggy.HookimplMarker('kai-scheduler')\n"
        "@hookimpl\ndef kai_filter_nodes(pod, nodes): pass\n",
        "def kai_score_nodes(pod, nodes): pass\n",
        "from kai_core.framework.hookspecs import hookimpl\n@hookimpl\ndef kai_check_configs(configs): pass\n",
    ]
    point = importlib.metadata.EntryPoint("nic", "kai_plugin_nic.plugin", "kai_scheduler.plugins")
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **params: [point] if params.get("group") == point.group else [])
    got = []
    for source in sources:  # the plugin 'nic' of module kai_plugin_nic.plugin, written four wrong ways
        monkeypatch.setitem(sys.modules, "kai_plugin_nic.plugin", module_of(source, "kai_plugin_nic.plugin"))
        got += [e.error for e in build_plugin_manager().load_errors]
    assert got == shown


def test_nvidias_classes_copied_into_your_manifests_validate(tmp_path, monkeypatch):
    blocks = guide()
    monkeypatch.chdir(tmp_path)
    module_of(blocks["## 3. Slices, classes and claims for a new driver #2"].text, "copy_classes")
    classes = (tmp_path / "my-cluster" / "00-nvidia-deviceclasses.yaml").read_text()
    for name in ("gpu.nvidia.com", "mig.nvidia.com", "compute-domain-daemon.nvidia.com",
                 "compute-domain-default-channel.nvidia.com"):
        assert f"name: {name}\n" in classes  # the four the guide names
    assert run_console(blocks["## 3. Slices, classes and claims for a new driver #3"]) == []


def test_the_configs_shown_are_the_ones_the_driver_gets(kai_cluster):
    """Class and claim configs in the allocation, as kai-core writes it: no plugin needed."""
    import yaml

    shown = yaml.safe_load(guide()["## 3. Slices, classes and claims for a new driver #1"].text)
    cluster = kai_cluster(EXAMPLE / "manifests", installed_plugins=False)
    cluster.run()
    pod = cluster.get("pods", "aes-encrypt")
    [claim] = [s["resourceClaimName"] for s in pod["status"]["resourceClaimStatuses"]]
    allocation = cluster.get("resourceclaims", claim)["status"]["allocation"]
    assert allocation["devices"]["config"] == shown["config"]


def test_the_podgroup_message_shown_is_kais(kai_cluster):
    """The groups section's message for a PodGroup that does not fit (its other messages, from
    the section's sketch, are compared by kai-core's test_guide_groups.py)."""
    [shown] = [line for line in guide()["## 5. Groups: pods that must start together #2"].text.splitlines()
               if line.startswith("PodGroup ")]
    nodes = "".join(f"""---
apiVersion: v1
kind: Node
metadata: {{name: {name}}}
status: {{allocatable: {{cpu: "{cpu}", memory: 8Gi, pods: "10"}}, conditions: [{{type: Ready, status: "True"}}]}}
""" for name, cpu in (("n1", "2"), ("n2", "1")))
    group = """---
apiVersion: scheduling.run.ai/v2alpha2
kind: PodGroup
metadata: {name: train, namespace: default}
spec: {minMember: 4}
"""
    pods = [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"train-{i}", "namespace": "default", "annotations": {"pod-group-name": "train"}},
             "spec": {"schedulerName": "kai-scheduler", "containers": [
                 {"name": "c", "image": "busybox:1", "resources": {"requests": {"cpu": "1"}}}]}} for i in range(4)]
    cluster = kai_cluster(nodes + group, *pods, installed_plugins=False)
    cluster.run()
    assert cluster.placed() == {}
    assert cluster.pending_message("train-0") == shown


def test_the_entry_point_shown_is_the_examples():
    shown = tomllib.loads(guide()["## 6. Packaging and the entry point #1"].text)
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    assert shown["project"]["entry-points"] == {"kai_scheduler.plugins": project["project"]["entry-points"]
                                                ["kai_scheduler.plugins"]}


def test_plugins_list_prints_what_the_guide_shows():
    """The rows of the example's plugin are compared where it is installed (tox -e example); the
    others everywhere."""
    from importlib.metadata import PackageNotFoundError, distribution

    block = guide()["## 6. Packaging and the entry point #2"]
    assert block.not_run.startswith("pip install")
    try:
        distribution("kai-plugin-fpga")
    except PackageNotFoundError:
        text = re.sub(r"^fpga-example .*\n", "", block.text, flags=re.M)
        text = re.sub(r"kai-plugin-fpga", "kai-dra-nvidia ", text)  # the column is that wide then
        block = Block(block.heading, block.index, block.language, text, block.line, block.not_run)
    assert run_console(block) == []


def test_the_layout_shown_is_kai_cores():
    import kai_core

    shown = {line.split("/")[0] for line in guide()["## 10. Where things are in kai-core #1"].text.splitlines()
             if re.match(r"^\w+/", line)}
    root = Path(kai_core.__file__).parent
    layers = {p.name for p in root.iterdir() if (p / "__init__.py").is_file()} - {"testing"}
    assert shown == layers  # kai_core.testing puts the layers together, as the text under the tree says
