"""What a reclaimer asks for and may take (kai_core.scheduler.actions, reclaim): the DRA GPUs of a
pending gang count a claim its members share once, and a non-preemptible reclaimer may not leave
what non-preemptible workloads hold above the quota of its queue or of any queue above it (KAI's
proportion plugin, ``reclaimable/reclaimable.go``), in any resource. Scenarios on the embedded
cluster."""

from __future__ import annotations

import pytest

from kai_core.api.features import FeatureGates
from kai_core.dra.testing import GPU, claim, device_class, gpu_slice, request
from kai_core.scheduler.actions import ActionsConfig
from kai_core.scheduler.cycle import SchedulerConfig

DRA = SchedulerConfig(features=FeatureGates.parse("DynamicResourceAllocation=true"))


def pod_group(name: str, min_member: int, queue_name: str) -> dict:
    return {"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"minMember": min_member, "queue": queue_name}}


def team_a_on_gpu_0(world) -> tuple[dict, dict]:
    """The claim ``held``, allocated DRA GPU gpu-0 of n1, and team-a's preemptible running pod a-0
    holding it."""
    held = claim("held", request("gpu", "gpu.nvidia.com"))
    held["status"] = {"allocation": {"devices": {"results": [
        {"request": "gpu", "driver": GPU, "pool": "n1", "device": "gpu-0"}]}},
        "reservedFor": [{"resource": "pods", "name": "a-0", "uid": "uid-a-0"}]}
    victim = world.gpu_pod("a-0", "team-a", gpus=0, priority=10, nodeName="n1",
                           resourceClaims=[{"name": "gpu", "resourceClaimName": "held"}])
    victim["metadata"]["uid"] = "uid-a-0"
    return held, victim


def test_a_gang_sharing_one_claim_asks_for_its_gpus_once_and_reclaims_them(world):
    """One DRA GPU, held by a preemptible pod of team-a (no quota). team-b (quota 1, so a fair share
    of 1) waits with a gang of two pods sharing one claim of one GPU: the gang asks for 1 GPU, within
    its fair share, so team-a's pod is reclaimed, and once it is gone both members run on that GPU.
    (Counted once per member, the gang would ask for 2, above its fair share, and reclaim nothing.)"""
    held, victim = team_a_on_gpu_0(world)
    members = [world.gpu_pod(f"m-{i}", "team-b", gpus=0, group="g",
                             resourceClaims=[{"name": "gpu", "resourceClaimName": "shared"}]) for i in range(2)]
    w = world(world.node("n1", cpu="16"), gpu_slice("n1", count=1),
              device_class("gpu.nvidia.com", f'device.driver == "{GPU}"'),
              world.queue("team-a"), world.queue("team-b", quota=1, weight=0), pod_group("g", 2, "team-b"),
              held, victim, claim("shared", request("gpu", "gpu.nvidia.com")), *members, config=DRA)
    result = w.cycle()
    assert result.queues["team-b"].fair_share["gpu"] == 1
    assert [(e.action, e.queue, e.preemptor_queue) for e in result.evictions] == [("reclaim", "team-a", "team-b")]
    assert not w.exists("a-0") and w.bind_requests() == []
    assert w.message("m-0") == "reclaim: waiting for 1 evicted pod(s) to terminate (default/a-0)"
    w.cycle()  # the victim's claim is released: allocate places the gang on its GPU
    assert w.placed() == {"m-0": "n1", "m-1": "n1"}


def cpu_terms(queue: dict, cores: float) -> dict:
    """The queue with a CPU quota of ``cores`` (over-quota weight 0)."""
    queue["spec"]["resources"]["cpu"] = {"quota": cores * 1000, "overQuotaWeight": 0, "limit": -1}
    return queue


def over_quota_world(world, over: str, priority: int):
    """A 2-GPU node, both GPUs held by team-a's preemptible pods (team-a has no quota). dept (GPU
    quota 2, CPU quota 2 cores) holds team-b (GPU quota 1, CPU quota 2 cores) and team-c.
    Non-preemptible CPU-only work holds 4 cores in ``over`` (team-b, or team-c and so dept): above
    that queue's CPU quota, lowered since the work started. team-b waits with a pod of ``priority``
    asking for one GPU and no CPU, within every GPU quota and its fair share."""
    home = "team-c" if over == "dept" else over
    cpu_work = [world.pod(f"c-{i}", "2", meta={"labels": {"kai.scheduler/queue": home}}, priority=100,
                          nodeName="n1", status={"phase": "Running"}) for i in range(2)]
    running = [world.pod(f"a-{i}", None, meta={"labels": {"kai.scheduler/queue": "team-a"}},
                         limits={"nvidia.com/gpu": "1"}, priority=10, nodeName="n1", status={"phase": "Running"})
               for i in range(2)]
    waiting = world.pod("infer", None, meta={"labels": {"kai.scheduler/queue": "team-b"}},
                        limits={"nvidia.com/gpu": "1"}, priority=priority)
    return world(world.gpu_node(gpus=2), world.queue("team-a"),
                 cpu_terms(world.queue("dept", quota=2, weight=0), 2),
                 cpu_terms(world.queue("team-b", "dept", quota=1, weight=0), 2),
                 world.queue("team-c", "dept", weight=0), *cpu_work, *running, waiting)


@pytest.mark.parametrize("over", ["team-b", "dept"])
def test_no_reclaim_for_a_non_preemptible_workload_where_non_preemptible_work_is_over_a_quota(world, over):
    """In :func:`over_quota_world`, a non-preemptible pod (priority 100) reclaims nothing: KAI checks
    every resource, not only those the reclaimer asks for, in its queue and every queue above it. It
    waits with allocate's reason. A preemptible one (priority 10) reclaims a GPU from team-a when
    the CPU is held in its sibling team-c; in team-b itself, whose CPU is then above its fair share,
    it reclaims nothing either (KAI's CanReclaimResources: the reclaimer's queue stays within its
    fair share in every resource)."""
    w = over_quota_world(world, over, 10)
    if over == "dept":
        assert [e.queue for e in w.cycle().evictions] == ["team-a"]
        assert sum(w.exists(f"a-{i}") for i in range(2)) == 1
    else:
        assert w.cycle().evictions == []
        assert w.exists("a-0") and w.exists("a-1")

    w = over_quota_world(world, over, 100)
    assert w.cycle().evictions == []
    assert w.exists("a-0") and w.exists("a-1")
    assert w.message("infer") == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    assert w.cycle().evictions == []  # and the next cycle decides the same


def test_a_non_preemptible_workload_over_its_quota_does_not_use_up_reclaims_budget(world):
    """team-b (GPU quota 1, fair share 2) waits with a non-preemptible 2-GPU pod, over its quota, and
    a preemptible 1-GPU pod; team-a (no quota) holds both GPUs. Reclaim tries one workload per
    cycle here: the non-preemptible one, first in the queue's order, is not a reclaimer at all (as in
    KAI, which checks this before looking for victims), so the preemptible one is tried and reclaims."""
    running = [world.gpu_pod(f"a-{i}", "team-a", priority=10, nodeName="n1") for i in range(2)]
    w = world(world.gpu_node(gpus=2), world.queue("team-a", weight=0), world.queue("team-b", quota=1),
              *running, world.gpu_pod("build", "team-b", gpus=2, priority=100),
              world.gpu_pod("train", "team-b", priority=10),
              config=SchedulerConfig(actions=ActionsConfig(actions=("reclaim",), max_workloads=1)))
    result = w.cycle()
    assert result.queues["team-b"].fair_share["gpu"] == 2
    assert [(e.queue, e.preemptor) for e in result.evictions] == [("team-a", ("default", "train"))]
    assert w.message("build").startswith("NonPreemptibleOverQuota: Non-preemptible workload is over quota.")
    assert w.message("train").startswith("reclaim: waiting for 1 evicted pod(s) to terminate")


def test_dra_gpus_allocated_earlier_in_the_cycle_count_for_the_reclaimer(world):
    """Two DRA GPUs: team-a (no quota, no weight: a fair share of 0) runs a preemptible pod on one;
    team-b (quota 1) waits with two 1-GPU pods. Allocate places the first on the free GPU; with it
    team-b holds its whole fair share, so the second reclaims nothing (counting only what team-b
    held when the cycle started, it would evict team-a's pod)."""
    held, victim = team_a_on_gpu_0(world)
    waiting = [world.gpu_pod(f"b-{i}", "team-b", gpus=0, resourceClaims=[{"name": "gpu", "resourceClaimName": f"c{i}"}])
               for i in range(2)]
    w = world(world.node("n1", cpu="16"), gpu_slice("n1", count=2),
              device_class("gpu.nvidia.com", f'device.driver == "{GPU}"'),
              world.queue("team-a", weight=0), world.queue("team-b", quota=1, weight=0),
              held, victim, *(claim(f"c{i}", request("gpu", "gpu.nvidia.com")) for i in range(2)), *waiting,
              config=DRA)
    result = w.cycle()
    assert result.queues["team-b"].fair_share["gpu"] == 1
    assert list(w.placed()) == ["b-0"]
    assert result.evictions == [] and w.exists("a-0")
