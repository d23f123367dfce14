"""Score weights as kube-scheduler's default profile has them: kai-core's plugins doing one of its
plugins' work weigh their scores as kube-scheduler weighs that plugin's (InterPodAffinity and
PodTopologySpread 2), kai's own scorers and installed plugins 1, and a configured weight replaces
only the named plugin's."""

from __future__ import annotations

import pytest

from kai_core.plugins import BUILTINS, KUBE_SCHEDULER_PLUGINS, build_plugin_manager
from kai_core.scheduler.cycle import SchedulerConfig
from kai_core.scheduler.explain import DecisionRecorder

HOST = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"
PREF = "preferredDuringSchedulingIgnoredDuringExecution"


def node(world, name: str, zone: str = "") -> dict:
    return world.node(name, cpu="10", memory="10Gi", labels={HOST: name, **({ZONE: zone} if zone else {})})


def placed_pod(world, name: str, on: str, cpu: str, labels: dict) -> dict:
    """A pod created bound to ``on`` (it counts there for resources and affinity)."""
    return world.pod(name, cpu, f"{cpu}Gi", meta={"labels": labels}, nodeName=on)


def affinity_world(world, config: SchedulerConfig | None = None):
    """Bin packing prefers n1 (80 after the pod) to n3 (20); the pod's preferred affinity to app=a
    prefers n3 (two app=a pods: 100) to n1 (one: 50) and n2 (none: 0). Weighed 1 each, n1 wins
    (130 to 120); with InterPodAffinity's weight 2, n3 (220 to 180), as kube-scheduler weighs it."""
    preferred = {"podAffinity": {PREF: [{"weight": 10, "podAffinityTerm": {
        "labelSelector": {"matchLabels": {"app": "a"}}, "topologyKey": HOST}}]}}
    return world(node(world, "n1"), node(world, "n2"), node(world, "n3"),
                 placed_pod(world, "big", "n1", "7", {"app": "a"}),
                 placed_pod(world, "small-1", "n3", "0.5", {"app": "a"}),
                 placed_pod(world, "small-2", "n3", "0.5", {"app": "a"}),
                 world.pod("p", "1", "1Gi", affinity=preferred), config=config)


def test_preferred_pod_affinity_weighs_twice_bin_packing_as_in_kube_scheduler(world):
    w = affinity_world(world)
    w.scheduler.recorder = recorder = DecisionRecorder(["default/p"])
    w.cycle()
    assert w.placed() == {"p": "n3"}
    scores = recorder.last["default/p"].scores
    assert scores["kai-core.inter-pod-affinity"][0] == 2 and scores["kai-core.binpack"][0] == 1
    assert recorder.last["default/p"].top == [("n3", 220), ("n1", 180), ("n2", 10)]


def test_a_configured_weight_replaces_the_default_of_that_plugin_only(world):
    w = affinity_world(world, SchedulerConfig(score_weights={"kai-core.inter-pod-affinity": 1}))
    w.cycle()
    assert w.placed() == {"p": "n1"}
    # binpack keeps its default when another plugin is named
    w = affinity_world(world, SchedulerConfig(score_weights={"kai-core.binpack": 3}))
    w.cycle()
    assert w.placed() == {"p": "n1"}  # 3 x 80 + 2 x 50 = 340 beats 3 x 20 + 2 x 100 = 260


def spread_world(world, config: SchedulerConfig | None = None):
    """Three zones: a (n1, one web pod, filled to 90 after the pod), b (n2, two web pods), c (n3,
    none). The pod's ScheduleAnyway spread scores n3 100, n1 33, n2 0; bin packing n1 90, n3 10.
    Weighed 1 each, n1 wins (123 to 110); with PodTopologySpread's weight 2, n3 (210 to 156)."""
    spread = [{"maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "ScheduleAnyway",
               "labelSelector": {"matchLabels": {"app": "web"}}}]
    return world(node(world, "n1", "a"), node(world, "n2", "b"), node(world, "n3", "c"),
                 placed_pod(world, "web-0", "n1", "8", {"app": "web"}),
                 placed_pod(world, "web-1", "n2", "0.5", {"app": "web"}),
                 placed_pod(world, "web-2", "n2", "0.5", {"app": "web"}),
                 world.pod("p", "1", "1Gi", meta={"labels": {"app": "web"}}, topologySpreadConstraints=spread),
                 config=config)


def test_schedule_anyway_spread_weighs_twice_bin_packing_as_in_kube_scheduler(world):
    w = spread_world(world)
    w.cycle()
    assert w.placed() == {"p": "n3"}
    w = spread_world(world, SchedulerConfig(score_weights={"kai-core.topology-spread": 1}))
    w.cycle()
    assert w.placed() == {"p": "n1"}


@pytest.mark.parametrize(("name", "weight"), [
    ("kai-core.inter-pod-affinity", 2), ("kai-core.topology-spread", 2), ("kai-core.node-affinity", 2),
    ("kai-core.taints", 3), ("kai-core.resources-fit", 1), ("kai-core.dra", 2),
    ("kai-core.binpack", 1), ("kai-core.gang", 1), ("kai-core.queues", 1), ("an-installed-plugin", 1),
])
def test_default_weights_are_kube_schedulers_for_the_plugins_doing_its_work(name, weight):
    assert build_plugin_manager(load_external=False).default_score_weight(name) == weight


def test_kai_only_plugins_name_no_kube_scheduler_plugin():
    assert set(KUBE_SCHEDULER_PLUGINS) <= set(BUILTINS)
    assert not {"kai-core.binpack", "kai-core.gang", "kai-core.queues"} & set(KUBE_SCHEDULER_PLUGINS)
