"""Allocate ordering by queues (kai_core.framework.queue_order): a cycle tries the pods of the queue
furthest below its fair share first, then by priority and age within a queue."""

from __future__ import annotations

from kai_core.framework.queue_order import cluster_total


def gpu_pod(world, name: str, queue_name: str | None, gpus: int = 1, created: str = "2026-01-01T00:00:00Z",
            **spec) -> dict:
    meta: dict = {"creationTimestamp": created}
    if queue_name:
        meta["labels"] = {"kai.scheduler/queue": queue_name}
    return world.pod(name, "1", meta=meta, limits={"nvidia.com/gpu": str(gpus)}, **spec)


def gpu_node(world, name: str = "n1", gpus: int = 4) -> dict:
    return world.node(name, cpu="16", extra={"nvidia.com/gpu": str(gpus)})


def burst(world, queue_name: str | None, prefix: str, created: str, n: int = 4) -> list[dict]:
    return [gpu_pod(world, f"{prefix}{i}", queue_name, created=created) for i in range(n)]


def test_without_queues_the_oldest_pods_take_everything(world):
    w = world(gpu_node(world), *burst(world, None, "a", "2026-01-01T00:00:00Z"),
              *burst(world, None, "b", "2026-01-02T00:00:00Z"))
    w.cycle()
    assert sorted(w.placed()) == ["a0", "a1", "a2", "a3"]


def test_two_queues_of_equal_weight_take_turns_up_to_their_fair_share(world):
    w = world(gpu_node(world), world.queue("team-a"), world.queue("team-b"),
              *burst(world, "team-a", "a", "2026-01-01T00:00:00Z"),
              *burst(world, "team-b", "b", "2026-01-02T00:00:00Z"))
    w.cycle()
    assert sorted(w.placed()) == ["a0", "a1", "b0", "b1"]


def test_weights_and_running_pods_count(world):
    """team-b (weight 3) is owed 3 of 4 GPUs; team-a already runs one, so team-b gets the other three."""
    running = gpu_pod(world, "a-running", "team-a", nodeName="n1")
    w = world(gpu_node(world), world.queue("team-a"), world.queue("team-b", weight=3), running,
              *burst(world, "team-a", "a", "2026-01-01T00:00:00Z"),
              *burst(world, "team-b", "b", "2026-01-02T00:00:00Z"))
    w.cycle()
    assert sorted(w.placed()) == ["b0", "b1", "b2"]


def test_a_queue_within_its_quota_goes_first_whatever_the_age(world):
    w = world(gpu_node(world, gpus=2), world.queue("team-a"), world.queue("team-b", quota=2),
              *burst(world, "team-a", "a", "2026-01-01T00:00:00Z"),
              *burst(world, "team-b", "b", "2026-01-02T00:00:00Z"))
    w.cycle()
    assert sorted(w.placed()) == ["b0", "b1"]


def test_departments_share_first_then_their_projects(world):
    """research (2 projects) and ops (1 project) share 6 GPUs 3/3 at the top; research's 3 go 2/1 by age."""
    w = world(gpu_node(world, gpus=6), world.queue("research"), world.queue("ops"),
              world.queue("vision", "research"), world.queue("llm", "research"), world.queue("infra", "ops"),
              *burst(world, "vision", "v", "2026-01-01T00:00:00Z"),
              *burst(world, "llm", "l", "2026-01-02T00:00:00Z"),
              *burst(world, "infra", "i", "2026-01-03T00:00:00Z"))
    w.cycle()
    placed = sorted(w.placed())
    assert [p for p in placed if p[0] == "i"] == ["i0", "i1", "i2"]
    assert len([p for p in placed if p[0] in "vl"]) == 3 and {"v0", "l0"} <= set(placed)


def test_cluster_total_leaves_out_unready_nodes_and_other_schedulers_pods(world):
    other = gpu_pod(world, "other", None, scheduler="default-scheduler", nodeName="n1")
    w = world(gpu_node(world), gpu_node(world, "n2", gpus=8) | {"status": {"allocatable": {"nvidia.com/gpu": "8"},
                                                                           "conditions": [{"type": "Ready",
                                                                                           "status": "False"}]}},
              other, world.queue("team-a"))
    w.cycle()
    total = cluster_total(w.scheduler.last_snapshot)
    assert total["gpu"] == 3 and total["cpu"] == 15000 and total["memory"] == 16 * 2**30


def test_dra_gpus_a_queue_holds_count_against_its_fair_share(world):
    """team-a already holds 2 GPUs through DRA claims; 2 more (device-plugin GPUs) are free: fair
    shares are 2 and 2, so team-b's pods go first although team-a's are older."""
    from kai_core.api.features import FeatureGates
    from kai_core.dra.testing import GPU, claim, gpu_slice, request
    from kai_core.framework.queue_order import snapshot_standing
    from kai_core.scheduler.cycle import SchedulerConfig

    held = []
    for i in range(2):
        c = claim(f"held-{i}", request("gpu", "gpu.nvidia.com"))
        c["status"] = {"allocation": {"devices": {"results": [
            {"request": "gpu", "driver": GPU, "pool": "dra-node", "device": f"gpu-{i}"}]}},
            "reservedFor": [{"resource": "pods", "name": f"a-running-{i}", "uid": f"uid-{i}"}]}
        pod = gpu_pod(world, f"a-running-{i}", "team-a", gpus=0, nodeName="dra-node",
                      resourceClaims=[{"name": "gpu", "resourceClaimName": f"held-{i}"}])
        pod["metadata"]["uid"] = f"uid-{i}"
        held += [c, pod]
    w = world(world.node("dra-node", cpu="16"), gpu_slice("dra-node", count=2), gpu_node(world, "n1", gpus=2),
              world.queue("team-a"), world.queue("team-b"), *held,
              *burst(world, "team-a", "a", "2026-01-01T00:00:00Z", n=2),
              *burst(world, "team-b", "b", "2026-01-02T00:00:00Z", n=2),
              config=SchedulerConfig(features=FeatureGates.parse("DynamicResourceAllocation=true")))
    w.cycle()
    assert sorted(w.placed()) == ["b0", "b1"]
    _tree, usage, shares = snapshot_standing(w.scheduler.last_snapshot)
    assert usage["team-a"].allocated["gpu"] == 2 and shares["team-a"]["gpu"] == shares["team-b"]["gpu"] == 2


def test_each_cycle_reports_every_queues_fair_share_allocation_and_waiting_pods(world):
    from kai_core.observability import SchedulerMetrics

    running = gpu_pod(world, "a-running", "team-a", nodeName="n1")
    w = world(gpu_node(world), world.queue("team-a"), world.queue("team-b", weight=3), running,
              *burst(world, "team-a", "a", "2026-01-01T00:00:00Z"),
              *burst(world, "team-b", "b", "2026-01-02T00:00:00Z", n=2))
    result = w.cycle()
    a, b = result.queues["team-a"], result.queues["team-b"]
    assert (a.fair_share["gpu"], a.allocated["gpu"], a.pending) == (2, 1, 4)  # what team-b leaves
    assert (b.fair_share["gpu"], b.allocated["gpu"], b.pending) == (2, 0, 2)  # asks for 2 of its 3
    metrics = SchedulerMetrics()
    metrics.observe_cycle(result)
    text = metrics.exposition()[0].decode()
    assert 'kai_queue_fair_share{queue="team-b",resource="gpu"} 2.0' in text
    assert 'kai_queue_allocated{queue="team-a",resource="gpu"} 1.0' in text
    assert 'kai_queue_pending_pods{queue="team-a"} 4.0' in text
    metrics.observe_cycle(world(gpu_node(world)).cycle())  # no Queue any more: the queues are dropped
    assert "kai_queue_pending_pods{" not in metrics.exposition()[0].decode()
