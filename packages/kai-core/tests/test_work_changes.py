"""The cache counts only the changes that may give the scheduler new work, so a scheduler waiting
while the binder works runs no empty cycles (kai_core.framework.cache.may_give_work)."""

from __future__ import annotations

from kai_core.api.resources import RES_BIND_REQUESTS, RES_PODS
from kai_core.framework.cache import may_give_work


def test_a_waiting_scheduler_sees_no_work_in_the_binders_progress(world):
    w = world(world.node("n1", cpu="4"), world.pod("a"), world.pod("b"))
    assert w.cycle().scheduled == 2
    start = w.scheduler.work_position()
    for br in w.bind_requests():  # what the binder does: bind, report, succeed
        pod = w.get_pod(br["spec"]["podName"])
        w.store.bind("default", pod["metadata"]["name"], br["spec"]["selectedNode"], pod["metadata"]["uid"])
        pod = w.get_pod(pod["metadata"]["name"])
        pod.setdefault("status", {})["conditions"] = [{"type": "PodBound", "status": "True"}]
        w.store.update_status(pod)
        w.set_br_status(br, phase="Succeeded")
    assert w.scheduler.work_position() == start
    w.add(world.pod("c"))  # a new pod is work
    assert w.scheduler.work_position() > start


def test_what_counts_as_work():
    pod = {"metadata": {"name": "p"}, "spec": {"containers": []}, "status": {}}
    bound = {**pod, "spec": {**pod["spec"], "nodeName": "n1"}}
    running = {**bound, "status": {"phase": "Running"}}
    done = {**bound, "status": {"phase": "Succeeded"}}
    conditions = {**pod, "status": {"conditions": [{"type": "PodScheduled", "status": "False"}]}}
    gated = {**pod, "spec": {**pod["spec"], "schedulingGates": [{"name": "g"}]}}
    assert may_give_work("ADDED", RES_PODS, None, pod)
    assert may_give_work("DELETED", RES_PODS, bound, bound)
    assert not may_give_work("MODIFIED", RES_PODS, pod, bound)  # being bound
    assert not may_give_work("MODIFIED", RES_PODS, bound, running)  # running: no room freed...
    assert may_give_work("MODIFIED", RES_PODS, running, done)  # ...only finishing frees room
    assert not may_give_work("MODIFIED", RES_PODS, pod, conditions)  # its own scheduling message
    assert may_give_work("MODIFIED", RES_PODS, gated, pod)  # a scheduling gate removed
    br = {"metadata": {"name": "b"}, "spec": {}}
    assert not may_give_work("ADDED", RES_BIND_REQUESTS, None, br)
    assert not may_give_work("MODIFIED", RES_BIND_REQUESTS, br, {**br, "status": {"phase": "Succeeded"}})
    assert may_give_work("MODIFIED", RES_BIND_REQUESTS, br, {**br, "status": {"phase": "Failed"}})
    assert may_give_work("DELETED", RES_BIND_REQUESTS, br, br)
