"""Plugins fail loudly: a hook name that is not a hook, a function marked by another project's
``HookimplMarker`` (or a hook-named one not marked at all) is refused at load with the plugin
named and the closest real hook suggested; a required plugin that is not loaded is named."""

from __future__ import annotations

import importlib.metadata
import sys
import types

import pluggy
import pytest

from kai_core.framework.hookspecs import hookimpl
from kai_core.framework.plugins import ENTRY_POINT_GROUP, KaiPluginManager, PluginRefused
from kai_core.plugins import build_plugin_manager


def module(name: str, **functions) -> types.ModuleType:
    mod = types.ModuleType(name)
    for attr, fn in functions.items():
        setattr(mod, attr, fn)
    return mod


@hookimpl
def misspelt(pod, nodes):
    return None


@pluggy.HookimplMarker("kai-scheduler")
def other_marker(pod, nodes):
    return None


def unmarked(pod, nodes):
    return None


def test_a_misspelt_hook_is_refused_with_the_closest_real_name():
    pm = KaiPluginManager()
    with pytest.raises(PluginRefused) as err:
        pm.register(module("m", kai_filter_node=misspelt), name="nic")
    assert str(err.value) == ("plugin 'nic': kai_filter_node is not a kai hook (did you mean kai_filter_nodes?); "
                              "it would never be called")
    assert not pm.has_plugin("nic")


def test_a_hook_marked_with_another_projects_marker_is_refused():
    pm = KaiPluginManager()
    with pytest.raises(PluginRefused, match=r"plugin 'nic': kai_filter_nodes is marked by "
                       r"pluggy.HookimplMarker\('kai-scheduler'\), not kai's \('kai'\)"):
        pm.register(module("m", kai_filter_nodes=other_marker), name="nic")


def test_an_unmarked_hook_function_is_refused_but_other_helpers_are_fine():
    pm = KaiPluginManager()
    with pytest.raises(PluginRefused, match="kai_score_nodes is not marked @hookimpl"):
        pm.register(module("m", kai_score_nodes=unmarked), name="nic")
    # a helper of the plugin's own that is no hook's name, unmarked, is its business
    pm.register(module("m2", kai_nic_speed=unmarked), name="nic2")
    assert pm.has_plugin("nic2")


def test_an_object_plugin_with_a_wrong_marker_is_refused():
    class Plugin:
        @pluggy.HookimplMarker("kai_scheduler")
        def kai_pre_filter(self, pod):
            return None

    with pytest.raises(PluginRefused, match="kai_pre_filter is marked by pluggy.HookimplMarker"):
        KaiPluginManager().register(Plugin(), name="obj")


@pytest.fixture
def entry_points(monkeypatch):
    def install(spec: dict[str, types.ModuleType]) -> None:
        eps = []
        for name, mod in spec.items():
            monkeypatch.setitem(sys.modules, mod.__name__, mod)
            eps.append(importlib.metadata.EntryPoint(name, mod.__name__, ENTRY_POINT_GROUP))
        monkeypatch.setattr(importlib.metadata, "entry_points",
                            lambda **params: [ep for ep in eps if params.get("group") == ep.group])
    return install


def test_an_installed_plugin_with_a_misspelt_hook_is_a_load_error(entry_points):
    entry_points({"nic": module("kai_test_nic", kai_filter_node=misspelt),
                  "fine": module("kai_test_fine", kai_filter_nodes=misspelt)})
    pm = build_plugin_manager()
    assert pm.has_plugin("fine") and not pm.has_plugin("nic")
    [err] = pm.load_errors
    assert err.error == ("plugin 'nic' (kai_test_nic) refused: kai_filter_node is not a kai hook "
                         "(did you mean kai_filter_nodes?); it would never be called")
    assert pm.missing(["fine", "kai-core.dra"]) is None
    assert pm.missing(["nic"]) == f"required plugin 'nic' is not loaded: {err.error}"
    assert pm.missing(["rdma"]).startswith("required plugin 'rdma' is not installed (loaded: fine, kai-core.")
