"""Eviction actions on the real control plane: kai's scheduler and binder (processes under the
chart's RBAC) reclaim GPUs for a queue below its fair share, and preempt by priority within a queue.

There is no kubelet: a deleted pod that is on a node stays terminating until the test removes it
(``gracePeriodSeconds: 0``, what the kubelet does once the containers stopped). While it terminates,
its GPUs stay held: the pod it was evicted for is not bound, and nothing more is evicted for it.
"""

from __future__ import annotations

import time

import pytest

Q = "scheduling.run.ai/v2"


@pytest.fixture
def queues(kube, namespace):
    """Queues named after the test's namespace (they are cluster-scoped); deleted afterwards."""
    made: list[str] = []

    def make(name: str, quota: float, weight: float = 1) -> str:
        name = f"{namespace}-{name}"
        unlimited = {"quota": -1, "overQuotaWeight": 1, "limit": -1}
        kube.create({"apiVersion": Q, "kind": "Queue", "metadata": {"name": name},
                     "spec": {"resources": {"gpu": {"quota": quota, "overQuotaWeight": weight, "limit": -1},
                                            "cpu": unlimited, "memory": unlimited}}})
        made.append(name)
        return name

    yield make
    for name in made:
        kube.delete(Q, "Queue", name)


def gpu_pod(name: str, queue: str, *, node: str = "", priority_class: str = "") -> dict:
    container = {"name": "c", "image": "busybox:1",
                 "resources": {"requests": {"cpu": "100m"}, "limits": {"nvidia.com/gpu": "1"}}}
    spec: dict = {"schedulerName": "kai-scheduler", "containers": [container]}
    if node:
        spec["nodeName"] = node  # running before the test starts kai
    if priority_class:
        spec["priorityClassName"] = priority_class
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"kai.scheduler/queue": queue}}, "spec": spec}


def terminating(kube, namespace: str, names: list[str]) -> list[str]:
    out = []
    for name in names:
        pod = kube.get("v1", "Pod", name, namespace)
        if pod is not None and pod["metadata"].get("deletionTimestamp"):
            out.append(name)
    return out


def test_a_queue_below_its_fair_share_reclaims_a_gpu(kube, kai, nodes, namespace, queues):
    node = f"{namespace}-n1"
    nodes.add(node, capacity={"cpu": "8", "memory": "16Gi", "pods": "110", "nvidia.com/gpu": "2"})
    team_a, team_b = queues("a", quota=0), queues("b", quota=1)
    running = ["a-0", "a-1"]
    for name in running:
        kube.create(gpu_pod(name, team_a, node=node), namespace)
    kai.start("scheduler")
    kai.start("binder")
    kube.create(gpu_pod("b-0", team_b), namespace)

    (victim,) = kai.wait_for(lambda: terminating(kube, namespace, running), "a pod of team a to be evicted")
    pod = kube.get("v1", "Pod", victim, namespace)
    cond = next(c for c in pod["status"]["conditions"] if c["type"] == "DisruptionTarget")
    assert cond["reason"] == "PreemptionByScheduler"
    assert cond["message"].startswith(f"Pod {namespace}/{victim} was preempted by workload {namespace}/b-0.")
    events = [e for e in kube.list("v1", "Event", namespace)
              if e["involvedObject"]["name"] == victim and e["reason"] == "Evict"]
    assert events and events[0]["message"] == cond["message"]

    # while the evicted pod terminates, its GPU stays held: b-0 waits, and nothing more is evicted
    kai.wait_for(lambda: "waiting for" in _scheduled_message(kube, namespace, "b-0"), "b-0 to say it waits")
    time.sleep(3)  # a few cycles
    assert kube.list("scheduling.run.ai/v1alpha2", "BindRequest", namespace) == []
    assert terminating(kube, namespace, running) == [victim]

    kube.delete("v1", "Pod", victim, namespace, grace=0)  # the kubelet is done with it
    pod, _br = kai.wait_bound(namespace, "b-0")
    assert pod["spec"]["nodeName"] == node
    kai.assert_no_forbidden()
    kai.assert_clean_stop()


def test_a_higher_priority_pod_preempts_within_its_queue(kube, kai, nodes, namespace, queues):
    node = f"{namespace}-n1"
    nodes.add(node, capacity={"cpu": "8", "memory": "16Gi", "pods": "110", "nvidia.com/gpu": "1"})
    team = queues("team", quota=1)
    for name, value in ((f"{namespace}-train", 50), (f"{namespace}-build", 100)):
        kube.apply({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
                    "value": value})
    try:
        kube.create(gpu_pod("train", team, node=node, priority_class=f"{namespace}-train"), namespace)
        kai.start("scheduler")
        kai.start("binder")
        kube.create(gpu_pod("build", team, priority_class=f"{namespace}-build"), namespace)
        kai.wait_for(lambda: terminating(kube, namespace, ["train"]), "the train pod to be preempted")
        events = [e for e in kube.list("v1", "Event", namespace)
                  if e["involvedObject"]["name"] == "train" and e["reason"] == "Evict"]
        assert events[0]["message"] == (
            f"Pod {namespace}/train was preempted by higher priority workload {namespace}/build")
        kube.delete("v1", "Pod", "train", namespace, grace=0)
        kai.wait_bound(namespace, "build")
        kai.assert_clean_stop()
    finally:
        for name in (f"{namespace}-train", f"{namespace}-build"):
            kube.delete("scheduling.k8s.io/v1", "PriorityClass", name)


def test_a_preempted_pods_gpus_are_released_by_kubernetes_and_given_to_the_preemptor(kube, kai, nodes, namespace,
                                                                                     queues, nvidia):
    """DRA: `train` holds all four GPUs of a GB200 node through a claim made from a template; `build`
    (higher priority, same queue) wants two. kai evicts `train`; once its pod is gone the real
    resourceclaim controller releases its claim (and garbage collection deletes it), and kai gives
    the freed GPUs to `build`."""
    nodes.add_gb200(1)
    team = queues("team", quota=-1)
    for name, value in ((f"{namespace}-train", 50), (f"{namespace}-build", 100)):
        kube.apply({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
                    "value": value})
    try:
        for gpus in (4, 2):
            kube.create({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                         "metadata": {"name": f"gpus-{gpus}", "namespace": namespace},
                         "spec": {"spec": {"devices": {"requests": [{"name": "gpus", "exactly": {
                             "deviceClassName": "gpu.nvidia.com", "count": gpus}}]}}}})

        def dra_pod(name: str, gpus: int) -> dict:
            return {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "labels": {"kai.scheduler/queue": team}},
                    "spec": {"schedulerName": "kai-scheduler", "priorityClassName": f"{namespace}-{name}",
                             "containers": [{"name": "c", "image": "busybox:1",
                                             "resources": {"claims": [{"name": "gpus"}]}}],
                             "resourceClaims": [{"name": "gpus", "resourceClaimTemplateName": f"gpus-{gpus}"}]}}

        kai.start("scheduler")
        kai.start("binder")
        kube.create(dra_pod("train", 4), namespace)
        train, _ = kai.wait_bound(namespace, "train")
        kube.create(dra_pod("build", 2), namespace)
        kai.wait_for(lambda: terminating(kube, namespace, ["train"]), "train to be preempted")
        held = kube.pod_claim(train, "gpus")
        assert held["status"]["reservedFor"][0]["name"] == "train"  # released only once the pod is gone
        assert kube.list("scheduling.run.ai/v1alpha2", "BindRequest", namespace)[0]["spec"]["podName"] == "train"

        kube.delete("v1", "Pod", "train", namespace, grace=0)
        build, br = kai.wait_bound(namespace, "build", timeout=90)
        [claim] = kai.assert_carried_out(build, br)
        assert len(claim["status"]["allocation"]["devices"]["results"]) == 2
        assert kube.get("resource.k8s.io/v1", "ResourceClaim", held["metadata"]["name"], namespace) is None
        kai.assert_clean_stop()
    finally:
        for name in (f"{namespace}-train", f"{namespace}-build"):
            kube.delete("scheduling.k8s.io/v1", "PriorityClass", name)


def test_consolidation_moves_a_replicaset_pod_to_make_room(kube, kai, nodes, namespace):
    """Two 2-GPU nodes, each running one 1-GPU pod of a ReplicaSet; a 2-GPU pod waits. kai moves one
    of them: it is evicted, the real ReplicaSet controller creates it again, and once the old pod is
    gone the big pod gets the emptied node and the new replica the GPU left beside its sibling."""
    gpus = {"cpu": "8", "memory": "16Gi", "pods": "110", "nvidia.com/gpu": "2"}
    n1, n2 = f"{namespace}-n1", f"{namespace}-n2"
    nodes.add(n1, capacity=gpus)
    nodes.add(n2, capacity=gpus)
    container = {"name": "c", "image": "busybox:1",
                 "resources": {"requests": {"cpu": "100m"}, "limits": {"nvidia.com/gpu": "1"}}}
    term = {"labelSelector": {"matchLabels": {"tier": "web"}}, "topologyKey": "kubernetes.io/hostname"}
    apart = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": term}]}}

    def replicas() -> list[dict]:
        return [p for p in kube.list("v1", "Pod", namespace) if p["metadata"]["name"].startswith("web-")]

    kai.start("scheduler")
    kai.start("binder")
    for i in range(2):  # kai spreads them (preferred anti-affinity): one GPU used on each node
        kube.create({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": f"web-{i}"},
                     "spec": {"replicas": 1, "selector": {"matchLabels": {"app": f"web-{i}"}},
                              "template": {"metadata": {"labels": {"app": f"web-{i}", "tier": "web"}},
                                           "spec": {"schedulerName": "kai-scheduler", "affinity": apart,
                                                    "containers": [container]}}}}, namespace)
        kai.wait_for(lambda i=i: [p for p in replicas() if p["metadata"]["name"].startswith(f"web-{i}-")
                                  and p["spec"].get("nodeName")], f"web-{i}'s pod to be bound")

    assert {p["spec"]["nodeName"] for p in replicas()} == {n1, n2}
    big = {**container, "resources": {"requests": {"cpu": "100m"}, "limits": {"nvidia.com/gpu": "2"}}}
    kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"},
                 "spec": {"schedulerName": "kai-scheduler", "containers": [big]}}, namespace)
    moved = kai.wait_for(lambda: [p for p in replicas() if p["metadata"].get("deletionTimestamp")],
                         "a replica to be moved")
    assert len(moved) == 1, [p["metadata"]["name"] for p in moved]
    kube.delete("v1", "Pod", moved[0]["metadata"]["name"], namespace, grace=0)
    pod, _ = kai.wait_bound(namespace, "big")
    assert pod["spec"]["nodeName"] == moved[0]["spec"]["nodeName"]
    other = ({n1, n2} - {pod["spec"]["nodeName"]}).pop()
    again = kai.wait_for(lambda: [p for p in replicas() if p["spec"].get("nodeName") and
                                  p["metadata"]["uid"] != moved[0]["metadata"]["uid"] and
                                  p["metadata"]["labels"]["app"] == moved[0]["metadata"]["labels"]["app"]],
                         "the moved replica's new pod to be bound")
    assert again[0]["spec"]["nodeName"] == other
    kai.assert_clean_stop()


def _scheduled_message(kube, namespace: str, name: str) -> str:
    pod = kube.get("v1", "Pod", name, namespace) or {}
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled":
            return c.get("message") or ""
    return ""


def test_a_gang_says_why_it_waits_on_its_podgroup_and_is_evicted_once_stale(kube, kai, nodes, namespace, queues):
    """A 3-pod gang on a 2-GPU node: its PodGroup's status says why it waits (written by the
    scheduler through the status subresource, under the chart's RBAC); a second node lets it run and
    the condition goes once it is bound. Then one pod is lost: the PodGroup is stamped stale, and
    after its 2s grace period the other two are evicted."""
    pg_version = "scheduling.run.ai/v2alpha2"
    nodes.add(f"{namespace}-n1", capacity={"cpu": "8", "memory": "16Gi", "pods": "110", "nvidia.com/gpu": "2"})
    team = queues("a", quota=4)
    kube.create({"apiVersion": pg_version, "kind": "PodGroup", "metadata": {"name": "train"},
                 "spec": {"minMember": 3, "queue": team, "stalenessGracePeriod": "2s"}}, namespace)
    names = ["t-0", "t-1", "t-2"]
    for name in names:
        pod = gpu_pod(name, team)
        pod["metadata"]["annotations"] = {"pod-group-name": "train"}
        kube.create(pod, namespace)
    kai.start("scheduler")
    kai.start("binder")

    def group() -> dict:
        return kube.get(pg_version, "PodGroup", "train", namespace) or {}

    def conditions() -> list[dict]:
        return (group().get("status") or {}).get("schedulingConditions") or []

    (cond,) = kai.wait_for(conditions, "the PodGroup to say why it waits")
    assert (cond["type"], cond["status"], cond["reason"], cond["nodePool"], cond["transitionID"]) == (
        "UnschedulableOnNodePool", "True", "Unschedulable", "default", "1")
    assert [r["reason"] for r in cond["reasons"]] == ["PodSchedulingErrors"]
    assert cond["message"].startswith("PodSchedulingErrors: ")

    nodes.add(f"{namespace}-n2", capacity={"cpu": "8", "memory": "16Gi", "pods": "110", "nvidia.com/gpu": "2"})
    kai.wait_for(lambda: all((kube.get("v1", "Pod", n, namespace) or {}).get("spec", {}).get("nodeName")
                             for n in names), "the gang to be bound")
    kai.wait_for(lambda: not conditions(), "the condition to go once the gang is bound")

    kube.delete("v1", "Pod", "t-0", namespace, grace=0)  # one pod lost
    kai.wait_for(lambda: (group()["metadata"].get("annotations") or {}).get("kai.scheduler/stale-podgroup-timestamp"),
                 "the PodGroup to be stamped stale")
    kai.wait_for(lambda: terminating(kube, namespace, ["t-1", "t-2"]) == ["t-1", "t-2"],
                 "the rest of the stale gang to be evicted")
    events = [e for e in kube.list("v1", "Event", namespace) if e["involvedObject"]["name"] == "t-1"
              and e["reason"] == "Evict"]
    assert events[0]["message"] == (f"Workload doesn't meet the minimum required number of pods (3), "
                                    f"evicting remaining pod: {namespace}/t-1")
    assert [e["message"] for e in kube.list("v1", "Event", namespace)
            if e["involvedObject"]["name"] == "train" and e["reason"] == "StaleJob"] == [
        "Job is stale. 2 pods are active, minMember is 3"]
    kai.assert_clean_stop()
