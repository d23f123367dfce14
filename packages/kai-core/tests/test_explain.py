"""Explained decisions: what each node's filters said and which plugin said it, the scores of the
top nodes per plugin, the devices chosen, the answers the equivalence memo gave marked as such, and
the same explanation in the scheduler's debug log."""

from __future__ import annotations

import logging

from kai_core.api.features import FeatureGates
from kai_core.scheduler.cycle import SchedulerConfig
from kai_core.scheduler.explain import EXPLAIN_LOGGER, DecisionRecorder

DRA = SchedulerConfig(features=FeatureGates.parse("DynamicResourceAllocation=true"))


def gpu_slice(node: str, count: int) -> str:
    devices = ", ".join(f"{{name: gpu-{i}}}" for i in range(count))
    return f"""
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {{name: {node}}}
spec: {{driver: gpu.example.com, nodeName: {node}, pool: {{name: {node}, generation: 1, resourceSliceCount: 1}},
        devices: [{devices}]}}
"""


CLASS_AND_TEMPLATE = """
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: gpu.example.com}
spec:
  selectors: [{cel: {expression: "device.driver == 'gpu.example.com'"}}]
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: two-gpus, namespace: default}
spec:
  spec:
    devices:
      requests: [{name: gpus, exactly: {deviceClassName: gpu.example.com, count: 2}}]
"""


def trainer(world, name: str) -> dict:
    pod = world.pod(name, "2", resourceClaims=[{"name": "gpus", "resourceClaimTemplateName": "two-gpus"}])
    pod["spec"]["containers"][0]["resources"]["claims"] = [{"name": "gpus"}]
    return pod


def cluster(world, *pods: str):
    """Five nodes: one tainted, one short of CPU, one with a single GPU (the claim wants two), and
    two that fit, ``busy`` half full already (binpack prefers it)."""
    w = world(
        world.node("tainted", "8", taints=[{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]),
        world.node("small", "1"), world.node("one-gpu", "8"), world.node("busy", "8"), world.node("idle", "8"),
        CLASS_AND_TEMPLATE, gpu_slice("one-gpu", 1), gpu_slice("busy", 2), gpu_slice("idle", 4),
        world.pod("running", "4", nodeName="busy"),
        config=DRA)
    w.add(*(trainer(world, p) for p in pods))
    w.cluster.reconcile_controllers()
    return w


def test_each_refused_node_names_its_plugin_and_reason_and_the_winner_and_runner_up_scores(world):
    w = cluster(world, "trainer")
    w.scheduler.recorder = recorder = DecisionRecorder(["default/trainer"])
    w.cycle()
    assert w.placed() == {"trainer": "busy"}
    ex = recorder.last["default/trainer"]
    assert ex.node == "busy"
    by_node = {v.node: v for v in ex.verdicts}
    assert set(by_node) == {"tainted", "small", "one-gpu", "busy", "idle"}
    assert (by_node["tainted"].plugin, by_node["tainted"].reason) == (
        "kai-core.taints", "node(s) had untolerated taint(s)")
    assert (by_node["small"].plugin, by_node["small"].reason) == ("kai-core.resources-fit", "Insufficient cpu")
    assert by_node["one-gpu"].plugin == "kai-core.dra"
    assert "needs 2 devices of DeviceClass gpu.example.com, 1 free" in by_node["one-gpu"].reason
    assert by_node["busy"].fits and by_node["idle"].fits
    assert not any(v.from_memo for v in ex.verdicts)
    # binpack: (4 + 2) / 8 of busy's CPU against 2 / 8 of idle's
    assert [node for node, _ in ex.top] == ["busy", "idle"]
    weight, scores = ex.scores["kai-core.binpack"]
    assert weight == 1.0 and scores["busy"] > scores["idle"]
    assert dict(ex.top) == {"busy": scores["busy"], "idle": scores["idle"]}
    [(claim, _ref, chosen)] = ex.devices
    assert claim == "gpus" and sorted(chosen) == [("gpus", "gpu.example.com/busy/gpu-0"),
                                                  ("gpus", "gpu.example.com/busy/gpu-1")]
    text = ex.text()
    assert "tainted: refused by kai-core.taints: node(s) had untolerated taint(s)" in text
    assert "small: refused by kai-core.resources-fit: Insufficient cpu" in text
    assert "one-gpu: refused by kai-core.dra: cannot allocate all claims:" in text
    assert f"busy: total {scores['busy']:g} (kai-core.binpack {scores['busy']:g} x1)  <- chosen" in text


def test_weights_are_shown_and_make_the_totals(world):
    w = cluster(world, "trainer")
    w.scheduler.decider.score_weights["kai-core.binpack"] = 3.0
    w.scheduler.recorder = recorder = DecisionRecorder(["default/trainer"])
    w.cycle()
    ex = recorder.last["default/trainer"]
    weight, scores = ex.scores["kai-core.binpack"]
    assert weight == 3.0 and dict(ex.top)["busy"] == 3.0 * scores["busy"]


def test_answers_from_the_equivalence_memo_are_marked_with_the_pod_that_asked(world):
    w = cluster(world, "t1", "t2")
    w.scheduler.recorder = recorder = DecisionRecorder(["default/t1", "default/t2"])
    w.cycle()
    first, second = recorder.last["default/t1"], recorder.last["default/t2"]
    assert not any(v.from_memo for v in first.verdicts)
    by_node = {v.node: v for v in second.verdicts}
    # t1 went to busy, so busy was asked again for t2 (it no longer has two free GPUs); the others
    # were answered by the memo, which keeps who refused them
    assert by_node["busy"].from_memo == "" and by_node["busy"].plugin == "kai-core.dra"
    for node in ("tainted", "small", "one-gpu", "idle"):
        assert by_node[node].from_memo == "default/t1", node
    assert by_node["tainted"].plugin == "kai-core.taints"
    assert by_node["small"].plugin == "kai-core.resources-fit"
    assert second.node == "idle"
    assert "tainted: refused by kai-core.taints: node(s) had untolerated taint(s) " \
           "[memo: answered for pod default/t1]" in second.text()


def test_an_unschedulable_pod_is_explained_node_by_node(world):
    w = world(world.node("a", "1"), world.node("b", "8", taints=[{"key": "k", "effect": "NoSchedule"}]),
              world.pod("big", "4"))
    w.scheduler.recorder = recorder = DecisionRecorder(["default/big"])
    w.cycle()
    ex = recorder.last["default/big"]
    assert not ex.node and ex.message.startswith("0/2 nodes are available")
    assert [(v.node, v.plugin) for v in ex.verdicts] == [("a", "kai-core.resources-fit"), ("b", "kai-core.taints")]
    assert ex.text().startswith("pod default/big: not scheduled: 0/2 nodes are available")


def test_the_debug_log_holds_the_explanation_and_nothing_is_recorded_without_it(world, caplog):
    w = cluster(world, "trainer")
    with caplog.at_level(logging.INFO, logger=EXPLAIN_LOGGER):
        w.cycle()
    assert w.scheduler.decider.recorder is None
    assert not [r for r in caplog.records if r.name == EXPLAIN_LOGGER]
    w = cluster(world, "trainer")
    with caplog.at_level(logging.DEBUG, logger=EXPLAIN_LOGGER):
        w.cycle()
    [record] = [r for r in caplog.records if r.name == EXPLAIN_LOGGER]
    assert record.levelno == logging.DEBUG
    message = record.getMessage()
    assert "pod default/trainer: scheduled to busy" in message
    assert "small: refused by kai-core.resources-fit: Insufficient cpu" in message
    assert "busy: total" in message and "<- chosen" in message
