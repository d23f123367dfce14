"""The group sketch of docs/writing-a-device-plugin.md (section 5) runs as written: its
``kai_pod_groups`` and ``kai_group_node_subsets`` place a job inside one chassis, and the messages
the guide shows are the ones users get."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest

from kai_core.plugins import build_plugin_manager

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "writing-a-device-plugin.md"


def guide_section() -> str:
    if not GUIDE.is_file():
        pytest.skip(f"{GUIDE} not found: the guide is only in the source repository")
    text = GUIDE.read_text(encoding="utf-8")
    match = re.search(r"^## 5\. Groups.*?(?=^## 6\. )", text, re.S | re.M)
    assert match, "section 5 (Groups) of the guide"
    return match.group(0)


def sketch_plugin() -> types.ModuleType:
    """The guide's python block, executed as a module."""
    [code] = re.findall(r"```python\n(.*?)```", guide_section(), re.S)
    module = types.ModuleType("guide_groups_sketch")
    exec(compile(code, str(GUIDE), "exec"), module.__dict__)  # noqa: S102 - our own documentation
    return module


def guide_messages() -> list[str]:
    """The example messages of the guide's ``text`` block, comments left out."""
    [block] = re.findall(r"```text\n(.*?)```", guide_section(), re.S)
    return [ln for ln in block.splitlines() if ln and not ln.startswith("#")]


def chassis_world(world, *objs, chassis: dict[str, int] | None = None, with_plugin: bool = True):
    """Nodes of one CPU in chassis (name -> node count; default c1 with 2 nodes, c2 with 3), the
    guide's sketch registered as plugin ``fpga-groups`` unless ``with_plugin`` is False."""
    pm = build_plugin_manager(load_external=False)
    if with_plugin:
        pm.register(sketch_plugin(), name="fpga-groups")
    nodes = [world.node(f"{c}-{i}", cpu="1", labels={"fpga.example.com/chassis": c})
             for c, count in (chassis or {"c1": 2, "c2": 3}).items() for i in range(1, count + 1)]
    return world(*nodes, *objs, pm=pm)


def job_pod(world, name: str, size: int | None = None, **kw) -> dict:
    meta: dict = {"labels": {"fpga.example.com/job": "encode"}}
    if size is not None:
        meta["annotations"] = {"fpga.example.com/job-size": str(size)}
    return world.pod(name, "1", meta=meta, **kw)


def test_a_job_goes_into_the_smallest_chassis_that_holds_it(world):
    w = chassis_world(world, job_pod(world, "encode-0"), job_pod(world, "encode-1"))
    assert w.cycle().scheduled == 2
    assert sorted(w.placed().values()) == ["c1-1", "c1-2"]


@pytest.mark.parametrize("with_plugin,nodes", [(True, ["c2-1", "c2-2"]), (False, ["c1-2", "c2-1"])],
                         ids=["with-the-sketch", "without"])
def test_a_job_is_kept_inside_one_chassis_only_by_the_sketch(world, with_plugin, nodes):
    w = chassis_world(world, world.pod("hog", "1", nodeName="c1-1"), job_pod(world, "encode-0"),
                      job_pod(world, "encode-1"), with_plugin=with_plugin)
    assert w.cycle().scheduled == 2
    assert sorted(w.placed().values()) == nodes


def test_a_job_larger_than_any_chassis_waits_with_the_guides_reason(world):
    w = chassis_world(world, world.node("unlabelled", cpu="8"),
                      *[job_pod(world, f"encode-{i}", size=3) for i in range(3)], chassis={"c1": 2, "c2": 2})
    w.cycle()
    assert w.bind_requests() == []
    assert w.message("encode-0") == guide_messages()[0]


def test_a_job_that_fits_no_chassis_says_what_fit_where(world):
    hogs = [world.pod(f"hog-{n}", "1", nodeName=n) for n in ("c1-1", "c2-1", "c2-2")]
    w = chassis_world(world, *hogs, job_pod(world, "encode-0"), job_pod(world, "encode-1"))
    w.cycle()
    assert w.bind_requests() == []
    shown = guide_messages()[1].removesuffix(" in chassis c2: ...")
    assert w.message("encode-0").startswith(shown), w.message("encode-0")


def test_a_job_short_of_pods_waits_with_the_guides_reason(world):
    w = chassis_world(world, job_pod(world, "encode-0", size=3), job_pod(world, "encode-1", size=3))
    w.cycle()
    assert w.bind_requests() == []
    assert w.message("encode-0") == guide_messages()[3]


def test_a_job_with_running_pods_stays_in_their_chassis(world):
    w = chassis_world(world, job_pod(world, "encode-0", size=3, nodeName="c2-1"),
                      job_pod(world, "encode-1", size=3), job_pod(world, "encode-2", size=3))
    assert w.cycle().scheduled == 2  # chassis c1 would hold the two, but the job runs in c2
    assert sorted(w.placed().values()) == ["c2-2", "c2-3"]


def test_pods_of_no_job_are_left_alone(world):
    w = chassis_world(world, world.pod("plain-0", "1"), world.pod("plain-1", "1"))
    assert w.cycle().scheduled == 2
    assert sorted(w.placed().values()) == ["c1-1", "c1-2"]
