"""The eviction actions after allocate (kai_core.scheduler.actions): reclaim, preempt and
consolidation on the embedded cluster, each planned on the snapshot first and carried out against
the API (pod condition, deletion, Events), the pods they make room for placed once the evicted pods
are gone. Scenarios after KAI's (``../shared/reference/kai-queues-and-fairness.md`` section 6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kai_core.api.resources import RES_EVENTS, RES_PODS
from kai_core.scheduler.actions import ActionsConfig, parse_duration
from kai_core.scheduler.cycle import SchedulerConfig


def pod_group(name: str, min_member: int, queue_name: str, **spec) -> dict:
    return {"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"minMember": min_member, "queue": queue_name, **spec}}


def gpu_pod(world, name: str, *args, **kw) -> dict:
    return world.gpu_pod(name, *args, **kw)


def owned(pod: dict, owner: str = "rs") -> dict:
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner,
                                           "uid": f"uid-{owner}", "controller": True}]
    return pod


def gpu_node(world, name: str = "n1", gpus: int = 4) -> dict:
    return world.gpu_node(name, gpus)


def exists(w, name: str) -> bool:
    return w.exists(name)


def evict_events(w, name: str) -> list[dict]:
    return [e for e in w.store.list(RES_EVENTS, "default")[0]
            if e["involvedObject"]["name"] == name and e["reason"] == "Evict"]


# -- reclaim -------------------------------------------------------------------------------------


def reclaim_world(world, **config):
    """KAI's reclaim test (T2): one 6-GPU node; queue0 and queue1 (quota 1, weight 1) run three 1-GPU
    pods each (priorities 50, 50, 49); the reclaimer queue (quota 2, weight 0) has a gang of two
    1-GPU pods waiting. Fair shares are 2/2/2."""
    running = []
    for q in ("queue0", "queue1"):
        for i, prio in enumerate((50, 50, 49)):
            running.append(gpu_pod(world, f"{q}-{i}", q, priority=prio, nodeName="n1"))
    return world(gpu_node(world, gpus=6), world.queue("dept", quota=-1),
                 world.queue("queue0", "dept", quota=1), world.queue("queue1", "dept", quota=1),
                 world.queue("reclaimer", "dept", quota=2, weight=0), pod_group("train", 2, "reclaimer"),
                 *running, *[gpu_pod(world, f"train-{i}", "reclaimer", group="train") for i in range(2)], **config)


def test_a_queue_below_its_fair_share_reclaims_from_the_queues_above_theirs(world):
    w = reclaim_world(world)
    result = w.cycle()
    assert w.bind_requests() == []  # nothing is bound into capacity the evicted pods still hold
    assert not exists(w, "queue0-2") and not exists(w, "queue1-2")  # both priority-49 pods
    assert all(exists(w, f"{q}-{i}") for q in ("queue0", "queue1") for i in (0, 1))
    assert [(e.action, e.queue, e.preemptor_queue) for e in result.evictions] == [
        ("reclaim", "queue0", "reclaimer"), ("reclaim", "queue1", "reclaimer")]
    assert w.message("train-0").startswith("reclaim: waiting for 2 evicted pod(s) to terminate")
    from kai_core.observability import SchedulerMetrics

    metrics = SchedulerMetrics()
    metrics.observe_cycle(result)
    text = metrics.exposition()[0].decode()
    assert 'kai_pods_evicted_total{action="reclaim",queue="queue0"} 1.0' in text
    assert 'kai_pods_evicted_total{action="reclaim",queue="queue1"} 1.0' in text
    w.cycle()  # the evicted pods are gone: allocate places the gang
    assert sorted(w.placed()) == ["train-0", "train-1"]


def test_an_eviction_is_a_condition_an_event_on_the_pod_and_its_podgroup_then_a_deletion(world):
    running = [gpu_pod(world, "victim", "queue0", priority=10, group="old", nodeName="n1",
                       finalizers=["example.com/hold"])]
    w = world(gpu_node(world, gpus=1), world.queue("queue0"), world.queue("queue1", quota=1),
              pod_group("old", 1, "queue0"),
              *running, gpu_pod(world, "new", "queue1"))
    w.cycle()
    victim = w.get_pod("victim")  # its finalizer keeps it terminating
    assert victim["metadata"]["deletionTimestamp"]
    cond = next(c for c in victim["status"]["conditions"] if c["type"] == "DisruptionTarget")
    assert cond["status"] == "True" and cond["reason"] == "PreemptionByScheduler"
    assert cond["message"].startswith("Pod default/victim was preempted by workload default/new.\n")
    assert "queue0 uses <GPUs: 1" in cond["message"] and "queue1 uses <GPUs: 0" in cond["message"]
    (pod_event,) = evict_events(w, "victim")
    (group_event,) = evict_events(w, "old")
    assert group_event["involvedObject"]["kind"] == "PodGroup"
    assert group_event["metadata"]["annotations"] == {
        "num-evicted-pods": "1", "evictor-action-type": "reclaim",
        "evictor-pod-group-name": "new", "evictor-pod-group-namespace": "default"}
    assert pod_event["message"] == cond["message"]


def test_a_terminating_pod_holds_its_capacity_and_is_not_evicted_for_twice(world):
    """The evicted pod stays terminating (a finalizer): the waiting pod is not bound into its GPU, and
    no further pod is evicted for it while it waits."""
    running = [gpu_pod(world, "victim", "queue0", priority=10, nodeName="n1", finalizers=["example.com/hold"]),
               gpu_pod(world, "bystander", "queue0", priority=20, nodeName="n1")]  # taken last
    w = world(gpu_node(world, gpus=2), world.queue("queue0"), world.queue("queue1", quota=1),
              *running, gpu_pod(world, "new", "queue1"))
    first = w.cycle()
    assert len(first.evictions) == 1
    for _ in range(3):
        again = w.cycle()
        assert again.evictions == [] and w.bind_requests() == []
    assert exists(w, "bystander")
    assert w.message("new") == "waiting for pods being deleted to release their resources"
    gone = w.get_pod(first.evictions[0].pod["metadata"]["name"])
    gone["metadata"]["finalizers"] = []
    w.store.update(gone)  # the kubelet is done: the pod goes
    w.cycle()
    assert list(w.placed()) == ["new"]


def test_no_reclaim_from_queues_within_their_quota(world):
    """T5: both departments are under their deserved quota: nothing is taken from them."""
    running = [gpu_pod(world, f"a-{i}", "team-a", priority=10, nodeName="n1") for i in range(2)]
    w = world(gpu_node(world, gpus=2), world.queue("team-a", quota=2), world.queue("team-b", quota=2),
              *running, gpu_pod(world, "b-0", "team-b"))
    result = w.cycle()
    assert result.evictions == [] and exists(w, "a-0") and exists(w, "a-1")


def test_a_non_preemptible_workload_is_never_reclaimed(world):
    running = [gpu_pod(world, "a-0", "team-a", priority=100, nodeName="n1")]  # 100 and up: non-preemptible
    w = world(gpu_node(world, gpus=1), world.queue("team-a"), world.queue("team-b", quota=1),
              *running,
              gpu_pod(world, "b-0", "team-b"))
    assert w.cycle().evictions == []


def test_a_gang_is_evicted_whole_and_an_elastic_one_loses_its_surplus_only(world):
    """T8: a gang at its minMember loses all its pods; one above it loses surplus pods first."""
    gang = [gpu_pod(world, f"g-{i}", "team-a", priority=10, group="g", nodeName="n1") for i in range(4)]
    w = world(gpu_node(world, gpus=4), world.queue("team-a"), world.queue("team-b", quota=4),
              pod_group("g", 4, "team-a"),
              *gang, gpu_pod(world, "b-0", "team-b"))
    assert len(w.cycle().evictions) == 4 and not any(exists(w, f"g-{i}") for i in range(4))

    elastic = [gpu_pod(world, f"e-{i}", "team-a", priority=10, group="e", nodeName="n1",
                       started=f"2026-01-01T00:0{i}:00Z") for i in range(4)]
    w = world(gpu_node(world, gpus=4), world.queue("team-a"), world.queue("team-b", quota=4),
              pod_group("e", 2, "team-a"),
              *elastic, gpu_pod(world, "b-0", "team-b"))
    result = w.cycle()
    assert [e.pod["metadata"]["name"] for e in result.evictions] == ["e-3"]  # the newest surplus pod
    assert all(exists(w, f"e-{i}") for i in range(3))


def test_reclaim_min_runtime_protects_a_young_workload(world):
    """T9 for reclaim: the victim's queue says 10m; a pod started 5m ago stays, one of 15m goes."""
    now = datetime.now(UTC)
    young = (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    old = (now - timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for started, evicted in ((young, False), (old, True)):
        w = world(gpu_node(world, gpus=1), world.queue("team-a", reclaimMinRuntime="10m"),
                  world.queue("team-b", quota=1),
                  gpu_pod(world, "a-0", "team-a", priority=10, nodeName="n1", started=started),
                  gpu_pod(world, "b-0", "team-b"))
        assert bool(w.cycle().evictions) is evicted


# -- preempt -------------------------------------------------------------------------------------


def test_a_higher_priority_workload_preempts_a_lower_one_in_its_own_queue(world):
    """T3: queue test (quota 1, limit 1) runs a `train` pod (50); a `build` pod (100) preempts it."""
    w = world(gpu_node(world, gpus=1), world.queue("test", quota=1, limit=1),
              gpu_pod(world, "train", "test", priority=50, nodeName="n1"),
              gpu_pod(world, "build", "test", priority=100))
    result = w.cycle()
    assert [(e.action, e.pod["metadata"]["name"]) for e in result.evictions] == [("preempt", "train")]
    assert evict_events(w, "train")[0]["message"] == (
        "Pod default/train was preempted by higher priority workload default/build")
    w.cycle()
    assert list(w.placed()) == ["build"]


def test_equal_priority_and_other_queues_are_not_preempted(world):
    w = world(gpu_node(world, gpus=2), world.queue("a", quota=1), world.queue("b", quota=1),
              gpu_pod(world, "same", "a", priority=50, nodeName="n1"),
              gpu_pod(world, "other", "b", priority=10, nodeName="n1"),
              gpu_pod(world, "waiting", "a", priority=50, gpus=2))
    assert [e for e in w.cycle().evictions if e.action == "preempt"] == []


def test_preempt_min_runtime_is_inherited_from_the_parent_queue(world):
    now = datetime.now(UTC)
    young = (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    w = world(gpu_node(world, gpus=1), world.queue("dept", quota=-1, preemptMinRuntime="10m"),
              world.queue("test", "dept", quota=1),
              gpu_pod(world, "train", "test", priority=50, nodeName="n1", started=young),
              gpu_pod(world, "build", "test", priority=75))
    assert w.cycle().evictions == []


# -- consolidation -------------------------------------------------------------------------------


def test_consolidation_moves_a_pod_to_make_room_for_a_bigger_one(world):
    """T13: two 2-GPU nodes each run one 1-GPU pod; a 2-GPU pod waits: one pod is moved."""
    w = world(gpu_node(world, "n1", gpus=2), gpu_node(world, "n2", gpus=2),
              owned(gpu_pod(world, "one", nodeName="n1", priority=10)),
              owned(gpu_pod(world, "two", nodeName="n2", priority=10)),
              gpu_pod(world, "big", gpus=2, priority=10))
    result = w.cycle()
    assert [e.action for e in result.evictions] == ["consolidation"]
    assert evict_events(w, result.evictions[0].pod["metadata"]["name"])[0]["message"].endswith(
        "was preempted and rescheduled due to bin packing (resource consolidation) procedure")
    w.cycle()
    assert list(w.placed()) == ["big"]


def test_no_consolidation_when_a_moved_pod_would_not_fit_again(world):
    w = world(gpu_node(world, "n1", gpus=2), gpu_node(world, "n2", gpus=2),
              owned(gpu_pod(world, "one", nodeName="n1", priority=10)),
              owned(gpu_pod(world, "two", nodeName="n2", gpus=2, priority=10)),
              gpu_pod(world, "big", gpus=2, priority=10))
    assert w.cycle().evictions == [] and exists(w, "one") and exists(w, "two")


def test_a_bare_pod_is_never_moved(world):
    """Nothing would create it again: consolidation leaves it be, and the big pod waits."""
    w = world(gpu_node(world, "n1", gpus=2), gpu_node(world, "n2", gpus=2),
              gpu_pod(world, "one", nodeName="n1", priority=10), owned(gpu_pod(world, "two", nodeName="n2",
                                                                                priority=10)),
              gpu_pod(world, "big", gpus=2, priority=10))
    result = w.cycle()
    assert [e.pod["metadata"]["name"] for e in result.evictions] == ["two"]


def test_actions_can_be_turned_off(world):
    w = reclaim_world(world, config=SchedulerConfig(actions=ActionsConfig(actions=())))
    assert w.cycle().evictions == []
    assert all(exists(w, f"{q}-{i}") for q in ("queue0", "queue1") for i in range(3))


def test_a_plan_that_does_not_place_the_whole_gang_evicts_nothing(world):
    """The reclaimer's gang needs 3 GPUs but only its fair share of 2 could be freed: nothing goes."""
    running = [gpu_pod(world, f"a-{i}", "team-a", priority=10, nodeName="n1") for i in range(2)]
    w = world(gpu_node(world, gpus=2), world.queue("team-a"), world.queue("team-b", quota=1),
              pod_group("big", 3, "team-b"),
              *running, *[gpu_pod(world, f"big-{i}", "team-b", group="big") for i in range(3)])
    assert w.cycle().evictions == []
    assert exists(w, "a-0") and exists(w, "a-1")
    assert w.store.list(RES_PODS, "default")[0]


@pytest.mark.parametrize("text,seconds", [("10m", 600), ("1h30m", 5400), ("90s", 90), ("1.5h", 5400),
                                          ("", None), ("10", None), ("5 m", None), ("m", None)])
def test_min_runtimes_are_go_durations(text, seconds):
    assert parse_duration(text) == seconds


# -- DRA -----------------------------------------------------------------------------------------


def test_a_dra_gpu_is_preempted_and_its_device_goes_to_the_preemptor(world):
    """The victim's claim holds the node's only DRA GPU: the simulation counts it released, the
    victim is evicted, the resource claim controller deallocates its claim once the pod is gone,
    and the preemptor's claim gets that device."""
    from kai_core.api.features import FeatureGates
    from kai_core.dra.testing import GPU, claim, device_class, gpu_slice, request

    held = claim("held", request("gpu", "gpu.nvidia.com"))
    held["status"] = {"allocation": {"devices": {"results": [
        {"request": "gpu", "driver": GPU, "pool": "n1", "device": "gpu-0"}]}},
        "reservedFor": [{"resource": "pods", "name": "train", "uid": "uid-train"}]}
    victim = gpu_pod(world, "train", "test", gpus=0, priority=50, nodeName="n1",
                     resourceClaims=[{"name": "gpu", "resourceClaimName": "held"}])
    victim["metadata"]["uid"] = "uid-train"
    wanted = claim("wanted", request("gpu", "gpu.nvidia.com"))
    w = world(world.node("n1", cpu="16"), gpu_slice("n1", count=1),
              device_class("gpu.nvidia.com", f'device.driver == "{GPU}"'),
              world.queue("test", quota=-1), held, victim, wanted,
              gpu_pod(world, "build", "test", gpus=0, priority=75,
                      resourceClaims=[{"name": "gpu", "resourceClaimName": "wanted"}]),
              config=SchedulerConfig(features=FeatureGates.parse("DynamicResourceAllocation=true")))
    result = w.cycle()
    assert [(e.action, e.pod["metadata"]["name"]) for e in result.evictions] == [("preempt", "train")]
    assert w.bind_requests() == []
    w.cycle()  # the controller released the victim's claim; allocate gives its GPU to build
    (br,) = w.bind_requests()
    assert br["spec"]["podName"] == "build"
    results = br["spec"]["resourceClaimAllocations"][0]["allocation"]["devices"]["results"]
    assert [r["device"] for r in results] == ["gpu-0"]


def test_room_being_released_is_promised_to_the_first_workload_that_fits_into_it(world):
    """A 2-GPU node, one GPU held by a pod being deleted: the older 2-GPU pod waits for it, and the
    newer 1-GPU pod does not take the free GPU it needs (KAI's pipelined allocation)."""
    dying = gpu_pod(world, "dying", nodeName="n1", finalizers=["example.com/hold"])
    w = world(gpu_node(world, gpus=2), dying)
    w.store.delete(RES_PODS, "dying", "default")  # terminating: the finalizer keeps it
    big = gpu_pod(world, "big", gpus=2)
    big["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    small = gpu_pod(world, "small")
    small["metadata"]["creationTimestamp"] = "2026-01-02T00:00:00Z"
    w.add(big, small)
    result = w.cycle()
    assert w.bind_requests() == [] and result.evictions == []
    assert w.message("big") == "waiting for pods being deleted to release their resources"
    assert w.message("small").startswith("0/1 nodes are available: 1 Insufficient nvidia.com/gpu")
    pod = w.get_pod("dying")
    pod["metadata"]["finalizers"] = []
    w.store.update(pod)
    w.cycle()
    assert list(w.placed()) == ["big"]
