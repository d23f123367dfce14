"""The plugin manager: built-ins registered directly, external plugins from the
``kai_scheduler.plugins`` entry points (a broken one reported, the rest loaded), and plugins that
raise or misbehave at run time isolated to the pod being scheduled."""

from __future__ import annotations

import importlib.metadata
import logging
import sys
import types

import pytest

from kai_core.api.features import FeatureGates
from kai_core.framework.hookspecs import hookimpl
from kai_core.framework.plugins import ENTRY_POINT_GROUP, KaiPluginManager
from kai_core.plugins import BUILTINS, build_plugin_manager
from kai_core.scheduler.cycle import SchedulerConfig

# -- registration ----------------------------------------------------------------------------


def test_builtins_are_registered_directly():
    pm = build_plugin_manager(load_external=False)
    info = {p.name: p for p in pm.info()}
    assert set(info) == set(BUILTINS)
    assert all(p.distribution == "kai-core" and p.error is None for p in info.values())
    assert info["kai-core.resources-fit"].hooks == ["kai_filter_nodes"]
    assert info["kai-core.dra"].hooks == ["kai_allocate_claims", "kai_pre_filter"]
    assert pm.load_errors == []


def good_module() -> types.ModuleType:
    mod = types.ModuleType("kai_test_good_plugin")

    @hookimpl
    def kai_filter_nodes(pod, nodes):
        return {n.name: "example.com: reserved for batch" for n in nodes if n.name == "reserved"}

    @hookimpl
    def kai_bind_request(pod, node):
        return {"good.kai.scheduler/node": node.name}

    mod.kai_filter_nodes = kai_filter_nodes
    mod.kai_bind_request = kai_bind_request
    return mod


def bad_signature_module() -> types.ModuleType:
    mod = types.ModuleType("kai_test_bad_signature_plugin")

    @hookimpl
    def kai_filter_nodes(pod, nodes, gpu_budget):  # an argument the hook does not have
        return None

    mod.kai_filter_nodes = kai_filter_nodes
    return mod


@pytest.fixture
def entry_points(monkeypatch):
    """Installs fake entry points: ``entry_points({"name": "module:attr", ...})``."""
    def install(spec: dict[str, str]) -> None:
        eps = [importlib.metadata.EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in spec.items()]

        def fake(**params):
            return [ep for ep in eps if params.get("group") == ep.group]

        monkeypatch.setattr(importlib.metadata, "entry_points", fake)

    monkeypatch.setitem(sys.modules, "kai_test_good_plugin", good_module())
    monkeypatch.setitem(sys.modules, "kai_test_bad_signature_plugin", bad_signature_module())
    return install


def test_a_broken_plugin_is_reported_and_the_others_load(entry_points, caplog, world):
    entry_points({
        "good": "kai_test_good_plugin",
        "missing": "kai_test_no_such_module_anywhere",
        "bad-signature": "kai_test_bad_signature_plugin",
    })
    with caplog.at_level(logging.ERROR, logger="kai.plugins"):
        pm = build_plugin_manager()
    assert pm.has_plugin("good")
    errors = {e.name: e.error for e in pm.load_errors}
    assert set(errors) == {"missing", "bad-signature"}
    assert errors["missing"].startswith(
        "plugin 'missing' (kai_test_no_such_module_anywhere) failed to load: ModuleNotFoundError: ")
    assert "gpu_budget" in errors["bad-signature"]
    info = {p.name: p for p in pm.info()}
    assert info["good"].hooks == ["kai_bind_request", "kai_filter_nodes"] and info["good"].error is None
    assert info["missing"].error == errors["missing"]
    assert "plugin 'missing'" in caplog.text and "plugin 'bad-signature'" in caplog.text

    # the good plugin takes part in scheduling
    w = world(world.node("reserved"), world.node("z-free", cpu="1"), world.pod("p"), world.pod("q"), pm=pm)
    w.cycle()
    assert w.placed() == {"p": "z-free"}
    assert w.message("q") == ("0/2 nodes are available: 1 Insufficient cpu, "
                              "1 example.com: reserved for batch.")
    [br] = w.bind_requests()
    assert br["metadata"]["annotations"] == {"good.kai.scheduler/node": "z-free"}


def test_blocked_plugins_are_not_loaded(entry_points):
    entry_points({"good": "kai_test_good_plugin"})
    pm = build_plugin_manager(blocked=["good"])
    assert not pm.has_plugin("good")
    assert "good" not in {p.name for p in pm.info()}


def test_external_plugins_are_skipped_when_disabled(entry_points):
    entry_points({"good": "kai_test_good_plugin"})
    assert not build_plugin_manager(load_external=False).has_plugin("good")


def test_hook_wrappers_are_refused_with_a_clear_message():
    class Wrapping:
        @hookimpl(wrapper=True)
        def kai_filter_nodes(self, pod, nodes):
            return (yield)

    pm = KaiPluginManager()
    with pytest.raises(ValueError, match="plugin 'wrapping': kai_filter_nodes is a hook wrapper"):
        pm.register(Wrapping(), name="wrapping")
    assert not pm.has_plugin("wrapping")


# -- plugins that raise ----------------------------------------------------------------------

DRA = """
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: fpga.example.com}
spec: {selectors: [{cel: {expression: "device.driver == 'fpga.example.com'"}}]}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: fpga, namespace: default}
spec: {spec: {devices: {requests: [{name: fpga, exactly: {deviceClassName: fpga.example.com}}]}}}
"""


def slice_for(node: str) -> str:
    return f"""
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {{name: {node}-fpga}}
spec:
  driver: fpga.example.com
  nodeName: {node}
  pool: {{name: {node}, generation: 1, resourceSliceCount: 1}}
  devices: [{{name: fpga-0}}, {{name: fpga-1}}]
"""


class Flaky:
    """Raises in one hook for pods whose name starts with "bad"; otherwise stays out of the way."""

    def __init__(self, hook: str) -> None:
        self.hook = hook

    def _maybe_raise(self, hook: str, pod: dict) -> None:
        if hook == self.hook and pod["metadata"]["name"].startswith("bad"):
            raise RuntimeError(f"boom in {hook}")

    @hookimpl
    def kai_pre_filter(self, pod):
        self._maybe_raise("kai_pre_filter", pod)

    @hookimpl
    def kai_filter_nodes(self, pod, nodes):
        self._maybe_raise("kai_filter_nodes", pod)

    @hookimpl
    def kai_score_nodes(self, pod, nodes):
        self._maybe_raise("kai_score_nodes", pod)

    @hookimpl
    def kai_allocate_claims(self, pod):
        self._maybe_raise("kai_allocate_claims", pod)  # None: the built-in allocator answers

    @hookimpl
    def kai_bind_request(self, pod):
        self._maybe_raise("kai_bind_request", pod)


def claim_pod(world, name: str) -> dict:
    p = world.pod(name, resourceClaims=[{"name": "fpga", "resourceClaimTemplateName": "fpga"}])
    p["spec"]["containers"][0]["resources"]["claims"] = [{"name": "fpga"}]
    return p


HOOKS = ["kai_pre_filter", "kai_filter_nodes", "kai_score_nodes", "kai_allocate_claims", "kai_bind_request"]


@pytest.mark.parametrize("hook", HOOKS)
def test_a_raising_plugin_makes_only_that_pod_unschedulable(world, caplog, hook):
    pm = build_plugin_manager(load_external=False)
    pm.register(Flaky(hook), name="flaky")
    w = world(DRA, world.node("n1"), world.node("n2"), slice_for("n1"), slice_for("n2"),
              claim_pod(world, "bad-1"), claim_pod(world, "bad-2"), claim_pod(world, "good"),
              pm=pm, config=SchedulerConfig(features=FeatureGates.parse("DynamicResourceAllocation=true")))
    with caplog.at_level(logging.ERROR):
        result = w.cycle()
    assert set(w.placed()) == {"good"}
    assert result.scheduled == 1
    for bad in ("bad-1", "bad-2"):
        assert w.message(bad) == f"plugin 'flaky' failed in {hook}: RuntimeError: boom in {hook}"
    logged = [r for r in caplog.records if "plugin 'flaky'" in r.getMessage()]
    assert len(logged) == 1  # once, with the traceback
    assert "Traceback (most recent call last)" in logged[0].getMessage()


def test_a_pod_is_scheduled_once_the_plugin_stops_raising(world):
    flaky = Flaky("kai_bind_request")
    pm = build_plugin_manager(load_external=False)
    pm.register(flaky, name="flaky")
    w = world(world.node("n1"), world.pod("bad"), pm=pm)
    assert w.cycle().errors == 1
    assert w.bind_requests() == []
    flaky.hook = None
    assert w.cycle().scheduled == 1


class Odd:
    """Returns results of the wrong shape."""

    def __init__(self, hook: str, result) -> None:
        self.hook, self.result = hook, result

    @hookimpl
    def kai_filter_nodes(self):
        return self.result if self.hook == "kai_filter_nodes" else None

    @hookimpl
    def kai_score_nodes(self):
        return self.result if self.hook == "kai_score_nodes" else None

    @hookimpl
    def kai_pre_filter(self):
        return self.result if self.hook == "kai_pre_filter" else None


@pytest.mark.parametrize(("hook", "result", "problem"), [
    ("kai_filter_nodes", ["n1"], "expected a dict {node name: reason}, got list"),
    ("kai_filter_nodes", {"n1": 42}, "node n1: expected a reason (str or list of str), got 42"),
    ("kai_score_nodes", {"n1": "high"}, "node n1: expected a number, got 'high'"),
    ("kai_pre_filter", 42, "expected None or a reason (str), got int"),
])
def test_a_result_of_the_wrong_shape_is_reported_like_an_error(world, hook, result, problem):
    pm = build_plugin_manager(load_external=False)
    pm.register(Odd(hook, result), name="odd")
    w = world(world.node("n1"), world.node("n2"), world.pod("p"), pm=pm)
    w.cycle()
    assert w.message("p") == f"plugin 'odd' returned a bad result from {hook}: {problem}"


# -- scores and filters of external plugins ---------------------------------------------------


class PreferN2:
    seen: list[list[str]]

    def __init__(self) -> None:
        self.seen = []

    @hookimpl
    def kai_filter_nodes(self, nodes):
        self.seen.append([n.name for n in nodes])

    @hookimpl
    def kai_score_nodes(self, nodes):
        return {n.name: 100 for n in nodes if n.name == "n2"}


@pytest.mark.parametrize(("weight", "chosen"), [(1.0, "n2"), (0.0, "n1")])
def test_score_weights_per_plugin(world, weight, chosen):
    pm = build_plugin_manager(load_external=False)
    pm.register(PreferN2(), name="prefer-n2")
    w = world(world.node("n1"), world.node("n2"), world.pod("running", "2", nodeName="n1"), world.pod("p"),
              pm=pm, config=SchedulerConfig(score_weights={"prefer-n2": weight}))
    w.cycle()
    assert w.placed() == {"p": chosen}


def test_a_filter_sees_only_the_nodes_the_filters_before_it_left(world):
    plugin = PreferN2()
    pm = build_plugin_manager(load_external=False)
    pm.register(plugin, name="prefer-n2")
    w = world(world.node("n1", unschedulable=True), world.node("n2"), world.node("n3", cpu="1"),
              world.pod("p", "2"), pm=pm)
    w.cycle()
    assert plugin.seen == [["n2"]]
