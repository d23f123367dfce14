"""The plugin of the README's "Writing a plugin" section, run as written: a plugin written only
from the docs works against the layered kai-core (its filter keeps other teams off the training
pool; its score prefers fast nodes)."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest

from kai_core.plugins import build_plugin_manager

README = Path(__file__).resolve().parents[3] / "README.md"


def readme_plugin() -> types.ModuleType:
    if not README.is_file():
        pytest.skip(f"{README} not found: the README is only in the source repository")
    section = re.search(r"^## Writing a plugin.*?(?=^## )", README.read_text(encoding="utf-8"), re.S | re.M)
    assert section, "the README's 'Writing a plugin' section"
    [code] = re.findall(r"```python\n(.*?)```", section.group(0), re.S)
    module = types.ModuleType("readme_plugin")
    exec(compile(code, str(README), "exec"), module.__dict__)  # noqa: S102 - our own documentation
    return module


def test_the_readme_plugin_filters_and_scores(world):
    pm = build_plugin_manager(load_external=False)
    pm.register(readme_plugin(), name="my-plugin")
    w = world(
        world.node("train", labels={"pool": "training", "fast": "true"}),
        world.node("slow"),
        world.node("fast", labels={"fast": "true"}),
        world.pod("web"),
        world.pod("trainer", meta={"labels": {"team": "ml"}}),
        pm=pm,
    )
    w.cycle()
    placed = w.placed()
    assert placed["web"] == "fast"  # kept off the training pool, and the fast node wins
    assert placed["trainer"] in {"train", "fast"}


def test_the_readme_filter_reason_reaches_the_pod(world):
    pm = build_plugin_manager(load_external=False)
    pm.register(readme_plugin(), name="my-plugin")
    w = world(world.node("train", labels={"pool": "training"}), world.pod("web"), pm=pm)
    w.cycle()
    assert w.message("web") == "0/1 nodes are available: 1 node(s) are reserved for training."
