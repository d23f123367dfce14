"""KAI's queues in the scheduler: the queue tree read from Queue objects (kai_core.framework.queues),
a pod's queue, and pods whose queue cannot hold workloads staying pending with the reason
(kai_core.plugins.queues)."""

from __future__ import annotations

import pytest

from kai_core.framework.hookspecs import hookimpl
from kai_core.framework.queues import (
    DEFAULT_PARENT_QUEUE,
    DEFAULT_QUEUE,
    build_tree,
    pod_queue,
    queue_from_object,
    why_not_schedulable,
)


def queue(name: str, parent: str = "", gpu_quota: float = 0, **spec) -> dict:
    if parent:
        spec["parentQueue"] = parent
    unlimited = {"quota": -1, "overQuotaWeight": 1, "limit": -1}
    return {"apiVersion": "scheduling.run.ai/v2", "kind": "Queue", "metadata": {"name": name},
            "spec": {"resources": {"gpu": {"quota": gpu_quota, "overQuotaWeight": 1, "limit": -1}, "cpu": unlimited,
                                   "memory": unlimited}, **spec}}


def tree_of(*objs: dict):
    return build_tree(queue_from_object(o) for o in objs)


# -- the tree ---------------------------------------------------------------------------------------


def test_kais_chart_default_queues_are_assumed_when_missing():
    tree = tree_of(queue("research"), queue("team-a", "research"))
    assert tree.children[""] == (DEFAULT_PARENT_QUEUE, "research")
    assert tree.children[DEFAULT_PARENT_QUEUE] == (DEFAULT_QUEUE,)
    default = tree.queues[DEFAULT_QUEUE].terms("gpu")
    assert (default.quota, default.over_quota_weight, default.limit) == (0, 1, -1)
    assert why_not_schedulable(tree, DEFAULT_QUEUE) is None


def test_a_default_queue_the_user_made_is_kept_as_it_is():
    tree = tree_of(queue(DEFAULT_QUEUE, gpu_quota=2))
    assert DEFAULT_PARENT_QUEUE not in tree.queues
    assert tree.queues[DEFAULT_QUEUE].terms("gpu").quota == 2 and tree.queues[DEFAULT_QUEUE].parent == ""


def test_queues_under_a_missing_parent_or_on_a_cycle_are_left_out_with_their_subtree():
    tree = tree_of(queue("orphan", "gone"), queue("kid", "orphan"), queue("x", "y"), queue("y", "x"),
                   queue("ok"))
    assert set(tree.queues) == {"ok", DEFAULT_QUEUE, DEFAULT_PARENT_QUEUE}
    assert tree.left_out["orphan"] == "its parent queue gone does not exist"
    assert "orphan is not in the tree" in tree.left_out["kid"]
    assert why_not_schedulable(tree, "kid").startswith("queue 'kid' is left out of scheduling")
    assert "x" in tree.left_out and "y" in tree.left_out


def test_only_leaf_queues_hold_workloads():
    tree = tree_of(queue("research"), queue("team-a", "research"))
    assert why_not_schedulable(tree, "team-a") is None
    assert why_not_schedulable(tree, "research") == (
        "queue 'research' is not a leaf queue (its children: team-a); only leaf queues hold workloads")
    assert why_not_schedulable(tree, "ghost") == "Queue 'ghost' does not exist"


def test_a_pods_queue_comes_from_its_podgroup_then_its_label_then_the_default():
    labelled = {"metadata": {"labels": {"kai.scheduler/queue": "team-a"}}}
    assert pod_queue(labelled, {"spec": {"queue": "team-b", "minMember": 2}}) == "team-b"
    assert pod_queue(labelled, {"spec": {"minMember": 2}}) == "team-a"
    assert pod_queue(labelled, None) == "team-a"
    assert pod_queue({"metadata": {}}, None) == DEFAULT_QUEUE


# -- in the scheduler ---------------------------------------------------------------------------------


def labelled(world, name: str, queue_name: str, **kw) -> dict:
    return world.pod(name, meta={"labels": {"kai.scheduler/queue": queue_name}}, **kw)


def test_without_queues_every_pod_runs_in_the_default_queue(world):
    w = world(world.node("n1"), world.pod("a"), labelled(world, "b", DEFAULT_QUEUE))
    w.cycle()
    assert w.placed() == {"a": "n1", "b": "n1"}


def test_a_pod_naming_a_queue_that_does_not_exist_waits_until_it_is_created(world):
    w = world(world.node("n1"), labelled(world, "a", "team-a"), world.pod("b"))
    w.cycle()
    assert w.placed() == {"b": "n1"}
    assert w.condition("a")["reason"] == "Unschedulable"
    assert "Queue 'team-a' does not exist" in w.message("a")
    w.add(queue("team-a"))
    w.cycle()
    assert w.placed() == {"a": "n1", "b": "n1"}


def test_a_podgroups_queue_is_the_one_that_counts(world):
    group = {"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
             "metadata": {"name": "pg", "namespace": "default"}, "spec": {"minMember": 1, "queue": "ghost"}}
    pod = labelled(world, "a", DEFAULT_QUEUE)
    pod["metadata"]["annotations"] = {"pod-group-name": "pg"}
    w = world(world.node("n1"), group, pod)
    w.cycle()
    assert w.placed() == {}
    assert "Queue 'ghost' does not exist" in w.message("a")


def test_a_pod_in_a_parent_queue_waits_with_the_reason(world):
    w = world(world.node("n1"), queue("research"), queue("team-a", "research"),
              labelled(world, "a", "research"), labelled(world, "b", "team-a"))
    w.cycle()
    assert w.placed() == {"b": "n1"}
    assert "queue 'research' is not a leaf queue" in w.message("a")


# -- usage and status -------------------------------------------------------------------------------


def claim(name: str, *devices: tuple[str, str], pool: str = "n1") -> dict:
    results = [{"request": "gpu", "driver": driver, "pool": pool, "device": dev} for driver, dev in devices]
    return {"metadata": {"name": name, "namespace": "default"},
            "status": {"allocation": {"devices": {"results": results}}}}


def gpu_slice(*devices: dict) -> dict:
    return {"spec": {"driver": "gpu.nvidia.com", "pool": {"name": "n1"}, "devices": list(devices)}}


def device(name: str, kind: str, uuid: str, memory: str, **attrs: str) -> dict:
    attributes = {"type": {"string": kind}, "uuid": {"string": uuid}, **{k: {"string": v} for k, v in attrs.items()}}
    return {"name": name, "attributes": attributes, "capacity": {"memory": {"value": memory}}}


def with_claims(pod: dict, *names: str, node: str | None = "n1") -> dict:
    pod["spec"]["resourceClaims"] = [{"name": f"c{i}", "resourceClaimName": n} for i, n in enumerate(names)]
    if node:
        pod["spec"]["nodeName"] = node
    return pod


def test_usage_counts_what_pods_hold_and_ask_for_up_the_tree(world):
    from kai_core.framework.queue_usage import queue_usage

    tree = tree_of(queue("research"), queue("team-a", "research"), queue("team-b", "research"))
    bound = world.pod("a", "500m", "1Gi", nodeName="n1", limits={"nvidia.com/gpu": "2"})
    pending = world.pod("b", "2", "1G")
    done = world.pod("c", "8", nodeName="n1", status={"phase": "Succeeded"})
    usage = queue_usage(tree, [(bound, "team-a"), (pending, "team-b"), (done, "team-b"), (world.pod("d"), "ghost")],
                        {}, [])
    assert usage["team-a"].allocated == {"gpu": 2, "cpu": 500, "memory": 2**30}
    assert usage["team-b"].allocated == {"gpu": 0, "cpu": 0, "memory": 0}
    assert usage["team-b"].requested == {"gpu": 0, "cpu": 2000, "memory": 1e9}
    assert usage["research"].requested == {"gpu": 2, "cpu": 2500, "memory": 2**30 + 1e9}
    assert usage["research"].allocated == usage["team-a"].allocated


def test_dra_gpus_count_what_was_allocated_a_shared_claim_once_and_mig_as_a_fraction(world):
    from kai_core.framework.queue_usage import queue_usage

    tree = tree_of(queue("team-a"), queue("team-b"))
    slices = [gpu_slice(device("gpu-0", "gpu", "GPU-0", "80Gi"), device("gpu-1", "gpu", "GPU-1", "80Gi"),
                        device("gpu-1-mig-1g10gb-19-0", "mig", "MIG-A", "10Gi", parentUUID="GPU-1",
                               profile="1g.10gb"),
                        device("gpu-2-mig-3g40gb-9-0", "mig", "MIG-B", "40Gi", parentUUID="GPU-9",
                               profile="3g.40gb"))]
    claims = {("default", "shared"): claim("shared", ("gpu.nvidia.com", "gpu-0")),
              ("default", "mig"): claim("mig", ("gpu.nvidia.com", "gpu-1-mig-1g10gb-19-0"),
                                        ("gpu.nvidia.com", "gpu-2-mig-3g40gb-9-0")),
              ("default", "nic"): claim("nic", ("rdma.example.com", "nic-0"))}
    pods = [(with_claims(world.pod("a"), "shared"), "team-a"), (with_claims(world.pod("b"), "shared"), "team-a"),
            (with_claims(world.pod("c"), "mig", "nic"), "team-b"),
            (with_claims(world.pod("d"), "shared", node=None), "team-b")]
    usage = queue_usage(tree, pods, claims, slices)
    assert usage["team-a"].allocated["gpu"] == 1  # two pods, one claim, one GPU
    assert usage["team-b"].allocated["gpu"] == pytest.approx(1 / 8 + 3 / 7)  # memory share; profile when no parent
    assert usage["team-b"].requested["gpu"] == pytest.approx(1 / 8 + 3 / 7)  # the pending pod adds no DRA GPU


def test_queue_status_is_written_back_on_the_embedded_cluster(world):
    from kai_core.api.resources import RES_QUEUES

    w = world(world.node("n1"), queue("research"), queue("team-a", "research"),
              labelled(world, "a", "team-a", nodeName="n1", limits={"nvidia.com/gpu": "1"}),
              labelled(world, "firm", "team-b", nodeName="n1", cpu="500m", priority=100), queue("team-b"),
              labelled(world, "b", "team-a"), world.pod("other", scheduler="default-scheduler", nodeName="n1"))
    w.cluster.reconcile_controllers()
    team = w.store.get(RES_QUEUES, "team-a")["status"]
    parent = w.store.get(RES_QUEUES, "research")["status"]
    assert team == {"allocated": {"nvidia.com/gpu": "1", "cpu": "1"}, "requested": {"nvidia.com/gpu": "1", "cpu": "2"}}
    assert parent == {**team, "childQueues": ["team-a"]}
    assert w.store.get(RES_QUEUES, "team-b")["status"] == {
        "allocated": {"cpu": "500m"}, "allocatedNonPreemptible": {"cpu": "500m"}, "requested": {"cpu": "500m"}}
    version = w.store.get(RES_QUEUES, "team-a")["metadata"]["resourceVersion"]
    w.cluster.reconcile_controllers()
    assert w.store.get(RES_QUEUES, "team-a")["metadata"]["resourceVersion"] == version  # nothing changed, no write
    pod = w.get_pod("a")
    pod["status"] = {"phase": "Succeeded"}
    w.store.update_status(pod)  # a is done: the next round sees it
    w.cluster.reconcile_controllers()
    assert w.store.get(RES_QUEUES, "team-a")["status"] == {"requested": {"cpu": "1"}}


# -- limits -------------------------------------------------------------------------------------------


def limited(name: str, gpu_limit: float | None, parent: str = "") -> dict:
    q = queue(name, parent)
    if gpu_limit is None:
        del q["spec"]["resources"]["gpu"]["limit"]
    else:
        q["spec"]["resources"]["gpu"]["limit"] = gpu_limit
    return q


def gpu_pod(world, name: str, queue_name: str, gpus: int, **kw) -> dict:
    return labelled(world, name, queue_name, limits={"nvidia.com/gpu": str(gpus)}, **kw)


def test_a_workload_that_would_take_its_queue_over_its_limit_waits_despite_free_gpus(world):
    """KAI's T7: a queue with GPU limit 2 and a 3-GPU job: OverLimit, though the node has 8 GPUs."""
    node = world.node("n1", cpu="16", extra={"nvidia.com/gpu": "8"})
    w = world(node, limited("team-a", 2), gpu_pod(world, "big", "team-a", 3), gpu_pod(world, "small", "team-a", 2))
    w.cycle()
    assert w.placed() == {"small": "n1"}
    assert w.message("big") == ("OverLimit: team-a quota has reached the allowable limit of GPUs. Limit is 2 GPUs, "
                                "currently 0 GPUs allocated and workload requested 3 GPUs")


def test_an_unset_limit_is_zero_and_what_the_cycle_placed_counts(world):
    node = world.node("n1", cpu="16", extra={"nvidia.com/gpu": "8"})
    w = world(node, limited("no-limit", None), limited("research", 3), limited("team-a", -1, "research"),
              gpu_pod(world, "a", "no-limit", 1), gpu_pod(world, "cpu-only", "no-limit", 0),
              gpu_pod(world, "b1", "team-a", 2), gpu_pod(world, "b2", "team-a", 2))
    w.cycle()
    assert w.placed() == {"cpu-only": "n1", "b1": "n1"}
    assert "Limit is 0 GPUs" in w.message("a")
    assert w.message("b2").startswith("OverLimit: research quota has reached the allowable limit of GPUs. "
                                      "Limit is 3 GPUs, currently 2 GPUs allocated")


def test_a_gang_is_checked_against_the_limit_up_to_its_min_member_then_pod_by_pod(world):
    group = {"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
             "metadata": {"name": "pg", "namespace": "default"}, "spec": {"minMember": 2, "queue": "team-a"}}
    members = [gpu_pod(world, f"m{i}", "team-a", 1) for i in range(3)]
    for m in members:
        m["metadata"]["annotations"] = {"pod-group-name": "pg"}
    w = world(world.node("n1", cpu="16", extra={"nvidia.com/gpu": "8"}), limited("team-a", 1), group, *members)
    w.cycle()
    assert w.placed() == {}
    assert "currently 0 GPUs allocated and workload requested 2 GPUs" in w.message("m0")
    w.store.update(limited("team-a", 2) | {"metadata": w.store.get("queues.scheduling.run.ai", "team-a")["metadata"]})
    w.cycle()
    assert sorted(w.placed()) == ["m0", "m1"]
    assert "workload requested 3 GPUs" in w.message("m2")  # m0 and m1 are placed alongside it


def quota_queue(name: str, gpu_quota: float) -> dict:
    return queue(name, gpu_quota=gpu_quota)


def test_a_non_preemptible_workload_stays_within_its_queues_quota(world):
    """KAI's T6: priority 100 and above is non-preemptible; what such workloads hold stays within the
    quota, while preemptible ones may go over it."""
    node = world.node("n1", cpu="16", extra={"nvidia.com/gpu": "8"})
    w = world(node, quota_queue("team-a", 1),
              gpu_pod(world, "inference", "team-a", 2, priority=125),
              gpu_pod(world, "train", "team-a", 2, priority=50),
              gpu_pod(world, "serve", "team-a", 1, priority=125))
    w.cycle()
    assert sorted(w.placed()) == ["serve", "train"]
    assert w.message("inference") == (
        "NonPreemptibleOverQuota: Non-preemptible workload is over quota. Workload requested 2 GPUs, but team-a "
        "quota is 1 GPUs, while 0 GPUs are already allocated for non-preemptible pods. Use a preemptible "
        "workload to go over quota.")


def test_a_podgroups_preemptibility_overrides_the_priority(world):
    group = {"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
             "metadata": {"name": "pg", "namespace": "default"},
             "spec": {"minMember": 1, "queue": "team-a", "preemptibility": "non-preemptible"}}
    pod = gpu_pod(world, "a", "team-a", 2, priority=10)
    pod["metadata"]["annotations"] = {"pod-group-name": "pg"}
    w = world(world.node("n1", cpu="16", extra={"nvidia.com/gpu": "8"}), quota_queue("team-a", 1), group, pod)
    w.cycle()
    assert w.placed() == {}
    assert w.message("a").startswith("NonPreemptibleOverQuota")


def test_without_queue_objects_nothing_is_checked_against_the_assumed_defaults(world):
    """The assumed default-queue has quota 0 (KAI's chart): it would refuse every non-preemptible pod,
    so with no Queue at all kai schedules as it did before queues."""
    w = world(world.node("n1", cpu="16", extra={"nvidia.com/gpu": "8"}), world.pod("a", priority=1000))
    w.cycle()
    assert w.placed() == {"a": "n1"}


# -- a device plugin says what its devices are worth ------------------------------------------------


class HalfGpus:
    """A plugin whose "shared" GPUs are half a GPU each, and which answers nothing for other devices."""

    @hookimpl
    def kai_device_gpu_worth(self, driver, device, pool_devices):
        if driver == "gpu.nvidia.com" and device and "shared" in (device.get("attributes") or {}):
            assert {d["name"] for d in pool_devices} >= {device["name"]}
            return 0.5
        return None


class Broken:
    @hookimpl
    def kai_device_gpu_worth(self):
        return -1


def test_a_device_plugin_says_what_its_devices_are_worth(world):
    from kai_core.framework.queue_usage import queue_usage
    from kai_core.plugins import build_plugin_manager

    pm = build_plugin_manager(load_external=False)
    pm.register(HalfGpus(), name="half-gpus")
    shared = device("gpu-0", "gpu", "GPU-0", "80Gi") | {"attributes": {"shared": {"bool": True}}}
    slices = [gpu_slice(shared, device("gpu-1", "gpu", "GPU-1", "80Gi"))]
    claims = {("default", "a"): claim("a", ("gpu.nvidia.com", "gpu-0"), ("gpu.nvidia.com", "gpu-1"))}
    tree = tree_of(queue("team-a"))
    usage = queue_usage(tree, [(with_claims(world.pod("a"), "a"), "team-a")], claims, slices,
                        worth=pm.device_gpu_worth)
    assert usage["team-a"].allocated["gpu"] == 1.5  # half for the shared GPU, kai's rule for the other


def test_a_wrong_answer_is_logged_and_kais_rule_counts(world, caplog):
    from kai_core.framework.queue_usage import queue_usage
    from kai_core.plugins import build_plugin_manager

    pm = build_plugin_manager(load_external=False)
    pm.register(Broken(), name="broken")
    claims = {("default", "a"): claim("a", ("gpu.nvidia.com", "gpu-0"))}
    usage = queue_usage(tree_of(queue("team-a")), [(with_claims(world.pod("a"), "a"), "team-a")], claims,
                        [gpu_slice(device("gpu-0", "gpu", "GPU-0", "80Gi"))], worth=pm.device_gpu_worth)
    assert usage["team-a"].allocated["gpu"] == 1
    assert "broken" in caplog.text and "expected a number >= 0, got -1" in caplog.text


def test_the_embedded_cluster_runs_the_queue_controller_with_the_plugins_say(world):
    from kai_core.plugins.queues import QueueStatusController

    w = world()
    controllers = [c for c in w.cluster.controllers if isinstance(c, QueueStatusController)]
    assert len(controllers) == 1 and controllers[0].worth == w.pm.device_gpu_worth


def test_gpus_a_cycle_allocates_through_dra_count_against_the_limit_at_once(world):
    """team-a may hold 2 GPUs: two DRA pods take 2 GPUs in this cycle, so the device-plugin pod after
    them is over the limit, in the same cycle, before any claim status is written."""
    from kai_core.api.features import FeatureGates
    from kai_core.dra.testing import GPU, claim, device_class, gpu_slice, request
    from kai_core.scheduler.cycle import SchedulerConfig

    objs = [world.node("dra-node", cpu="16"), gpu_slice("dra-node", count=4),
            device_class("gpu.nvidia.com", f"device.driver == '{GPU}'"),
            world.node("n1", cpu="16", extra={"nvidia.com/gpu": "2"}), limited("team-a", 2)]
    for i in range(2):
        objs.append(claim(f"c{i}", request("gpu", "gpu.nvidia.com")))
        pod = labelled(world, f"d{i}", "team-a", resourceClaims=[{"name": "gpu", "resourceClaimName": f"c{i}"}])
        pod["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
        objs.append(pod)
    late = gpu_pod(world, "x", "team-a", 1)
    late["metadata"]["creationTimestamp"] = "2026-01-02T00:00:00Z"
    w = world(*objs, late, config=SchedulerConfig(features=FeatureGates.parse("DynamicResourceAllocation=true")))
    w.cycle()
    assert sorted(w.placed()) == ["d0", "d1"]
    assert "Limit is 2 GPUs, currently 2 GPUs allocated and workload requested 1 GPUs" in w.message("x")
