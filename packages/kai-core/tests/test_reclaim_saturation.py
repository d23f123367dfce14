"""Reclaim's last check (KAI's proportion plugin, ``reclaimable.go``, "saturation"): level by level up
the reclaimer's queue chain, against each sibling whose subtree loses victims, a reclaim is refused
when, in a resource involved (asked for by the reclaimer, or freed by that sibling's victims), the
reclaimer's side would end above its fair share and no less saturated (allocated / fair share) than
the sibling after losing its victims. Scenarios on the embedded cluster; all GPU figures below are
the queues' fair shares (quota, over-quota weight 0 so nothing beyond quota is handed out)."""

from __future__ import annotations


def gpu_pod(world, name: str, *args, **kw) -> dict:
    return world.gpu_pod(name, *args, **kw)


def gpu_node(world, name: str = "n1", gpus: int = 4) -> dict:
    return world.gpu_node(name, gpus)


def exists(w, name: str) -> bool:
    return w.exists(name)


def two_departments(world, team_y_gpus: int, team_z_gpus: int):
    """One 12-GPU node, three departments (fair shares 4, 4 and at most 3). dept-a: team-x runs three
    non-preemptible 1-GPU pods (dept-a holds 3 of its 4), team-r (share 2, holds nothing) waits with
    one 2-GPU pod. dept-b: team-y runs preemptible 2-GPU pods. dept-c: team-z runs non-preemptible
    1-GPU pods, within its share. The node is full, so team-r can only reclaim from team-y, and
    with it dept-a would hold 5 of its 4 (saturation 1.25)."""
    running = [gpu_pod(world, f"x-{i}", "team-x", priority=100, nodeName="n1") for i in range(3)]
    running += [gpu_pod(world, f"y-{i}", "team-y", 2, nodeName="n1") for i in range(team_y_gpus // 2)]
    running += [gpu_pod(world, f"z-{i}", "team-z", priority=100, nodeName="n1") for i in range(team_z_gpus)]
    return world(gpu_node(world, gpus=12),
                 world.queue("dept-a", quota=4, weight=0), world.queue("dept-b", quota=4, weight=0),
                 world.queue("dept-c", quota=3, weight=0),
                 world.queue("team-x", "dept-a", quota=2, weight=0),
                 world.queue("team-r", "dept-a", quota=2, weight=0),
                 world.queue("team-y", "dept-b", quota=4, weight=0),
                 world.queue("team-z", "dept-c", quota=3, weight=0),
                 *running, gpu_pod(world, "train", "team-r", 2))


def test_no_reclaim_that_leaves_the_reclaimers_department_more_saturated_than_the_victims(world):
    """dept-b holds 6 of its 4: above its share, so its pods may be reclaimed, but once one 2-GPU pod
    goes dept-b holds 4 (saturation 1.0) while dept-a would hold 5 of 4 (1.25): refused. team-r is
    within its own share all along; the department level is what stops it."""
    w = two_departments(world, team_y_gpus=6, team_z_gpus=3)
    result = w.cycle()
    assert result.evictions == [] and w.bind_requests() == []
    assert all(exists(w, f"y-{i}") for i in range(3))
    # nothing was evicted for it: the pod waits for room, with allocate's reason
    assert w.message("train") == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    assert w.cycle().evictions == []  # and the next cycle decides the same


def test_reclaim_above_fair_share_is_allowed_from_a_more_saturated_sibling(world):
    """The same cluster with dept-b holding 8 of its 4 (team-z down to one pod): after losing one
    2-GPU pod dept-b still holds 6 (1.5), more saturated than dept-a would be (1.25), so the reclaim
    goes ahead although dept-a ends above its fair share."""
    w = two_departments(world, team_y_gpus=8, team_z_gpus=1)
    result = w.cycle()
    assert [(e.action, e.queue, e.preemptor_queue) for e in result.evictions] == [
        ("reclaim", "team-y", "team-r")]
    assert sum(not exists(w, f"y-{i}") for i in range(4)) == 1
    assert w.message("train") == f"reclaim: waiting for 1 evicted pod(s) to terminate " \
                                 f"(default/{result.evictions[0].pod['metadata']['name']})"
    w.cycle()  # the evicted pod is gone: allocate places the waiting one
    assert list(w.placed()) == ["train"]


def test_the_check_is_made_where_the_chains_part_two_levels_up(world):
    """Three levels. org-1 (share 8) holds 7: dept-a's team-x 3 and dept-b's team-y 4, all
    non-preemptible; org-2 (share 4) holds 5 in team-z's preemptible 2-GPU and 1-GPU pods. team-r (in
    dept-a) waits with a 2-GPU pod. The victims are in another organisation, so no department beside
    dept-a loses anything and the comparison is org-1 against org-2: org-1 would hold 9 of 8 (1.125),
    org-2 would keep 3 of 4 (0.75): refused. With dept-b smaller (org-1 ending at 8 of 8, not above
    its share) the same pod is reclaimed."""

    def build(team_y_gpus: int):
        running = [gpu_pod(world, f"x-{i}", "team-x", priority=100, nodeName="n1") for i in range(3)]
        running += [gpu_pod(world, f"y-{i}", "team-y", priority=100, nodeName="n1") for i in range(team_y_gpus)]
        running += [gpu_pod(world, "z-big", "team-z", 2, nodeName="n1"),
                    gpu_pod(world, "z-0", "team-z", 2, priority=100, nodeName="n1"),
                    gpu_pod(world, "z-1", "team-z", priority=100, nodeName="n1")]
        return world(gpu_node(world, gpus=12),
                     world.queue("org-1", quota=8, weight=0), world.queue("org-2", quota=4, weight=0),
                     world.queue("dept-a", "org-1", quota=4, weight=0),
                     world.queue("dept-b", "org-1", quota=4, weight=0),
                     world.queue("dept-c", "org-2", quota=4, weight=0),
                     world.queue("team-x", "dept-a", quota=2, weight=0),
                     world.queue("team-r", "dept-a", quota=2, weight=0),
                     world.queue("team-y", "dept-b", quota=4, weight=0),
                     world.queue("team-z", "dept-c", quota=4, weight=0),
                     *running, gpu_pod(world, "train", "team-r", 2))

    w = build(team_y_gpus=4)
    assert w.cycle().evictions == [] and exists(w, "z-big")
    assert w.message("train") == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."

    w = build(team_y_gpus=3)  # org-1 would end at 8 of 8; one GPU stays idle, too few for the pod
    result = w.cycle()
    assert [(e.queue, e.pod["metadata"]["name"]) for e in result.evictions] == [("team-z", "z-big")]


def cpu_queue(world, name: str, parent: str, gpu_quota: float, cpu_quota: float) -> dict:
    """A queue with a GPU quota and a CPU quota (cores), over-quota weight 0 for CPU."""
    queue = world.queue(name, parent, quota=gpu_quota)
    queue["spec"]["resources"]["cpu"] = {"quota": cpu_quota * 1000, "overQuotaWeight": 0, "limit": -1}
    return queue


def test_resources_the_victims_free_are_compared_too(world):
    """team-r waits with a pod asking for a GPU only. Its department runs 4 cores of CPU work (in
    team-c) on a CPU share of 2 (saturation 2). dept-b holds 2 GPUs of its share of 1, and each of its
    pods also holds a core: taking one leaves dept-b at 1 core of 2 (0.5). CPU is involved through
    the victim, dept-a is the more saturated in it, so the reclaim is refused. With team-c's CPU work
    within the department's share, the GPU is reclaimed."""

    def build(team_c_cores: int):
        cpu_work = [gpu_pod(world, f"c-{i}", "team-c", 0, priority=100, nodeName="n1")
                    for i in range(team_c_cores)]
        for pod in cpu_work:  # CPU only
            del pod["spec"]["containers"][0]["resources"]["limits"]
        running = [gpu_pod(world, f"y-{i}", "team-y", nodeName="n1") for i in range(2)]
        waiting = world.pod("infer", None, meta={"labels": {"kai.scheduler/queue": "team-r"}},
                            limits={"nvidia.com/gpu": "1"})
        return world(gpu_node(world, gpus=2),
                     cpu_queue(world, "dept-a", "", 1, 2), cpu_queue(world, "dept-b", "", 1, 2),
                     cpu_queue(world, "team-c", "dept-a", 0, 2), cpu_queue(world, "team-r", "dept-a", 1, 0),
                     cpu_queue(world, "team-y", "dept-b", 1, 2),
                     *cpu_work, *running, waiting)

    w = build(team_c_cores=4)
    assert w.cycle().evictions == []
    assert exists(w, "y-0") and exists(w, "y-1")

    w = build(team_c_cores=2)
    assert [e.queue for e in w.cycle().evictions] == ["team-y"]
