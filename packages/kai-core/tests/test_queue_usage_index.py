"""The cache's per-queue usage index (kai_core.framework.queue_usage.UsageIndex) and per-scheduler
node sums against a walk over every pod: after every step of random sequences of pods, PodGroups and
BindRequests created, changed and deleted, a cycle's snapshot reads the same usage from both, the
same members of every PodGroup and the same cluster total (queue_order.cluster_total). The queue
limits' workload of a gang member (read from running sums) is checked against the member-by-member
count."""

from __future__ import annotations

import random
from unittest.mock import patch

import pytest

from kai_core.api.errors import NotFound
from kai_core.api.features import FeatureGates
from kai_core.api.resources import RES_BIND_REQUESTS, RES_POD_GROUPS, RES_PODS
from kai_core.apiserver.store import EmbeddedStore
from kai_core.cluster import builtin_crds
from kai_core.framework import queue_order
from kai_core.framework.cache import Cache
from kai_core.framework.queue_limits import QueueLedger
from kai_core.framework.queue_order import cluster_total
from kai_core.framework.queue_usage import _indexed_usage, _walked_usage, amounts_of, snapshot_usage
from kai_core.framework.queues import pod_queue_in, tree_from_objects
from kai_core.framework.snapshot import Snapshot
from kai_core.scheduler.cycle import watched_resources

MINE = "kai-scheduler"
NAMESPACES = ("a", "b")
NAMES = ("p0", "p1", "p2")
#: mostly one namespace, so pods, their PodGroups and BindRequests meet often
SOME_NAMESPACE = ("a", "a", "a", "b")
GROUPS = ("g1", "g2", "missing")
QUEUES = [
    {"apiVersion": "scheduling.run.ai/v2", "kind": "Queue", "metadata": {"name": name},
     "spec": {"parentQueue": parent} if parent else {}}
    for name, parent in (("top", ""), ("q1", "top"), ("q2", "top"), ("default-queue", "top"))
]


def _pod(name: str, namespace: str, scheduler: str | None, queue: str | None, group: str | None,
         priority: int | None, node: str | None, phase: str | None, deleting: bool, gpus: int, cpu: int,
         memory: int, claim: bool = False) -> dict:
    md: dict = {"name": name, "namespace": namespace}
    if queue:
        md["labels"] = {"kai.scheduler/queue": queue}
    if group:
        md["annotations"] = {"pod-group-name": group}
    if deleting:
        md["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        md["finalizers"] = ["example.com/keep"]
    requests = {"cpu": f"{cpu}m", "memory": f"{memory}Mi"}
    container: dict = {"name": "c", "image": "x", "resources": {"requests": requests}}
    if gpus:
        container["resources"]["limits"] = {"nvidia.com/gpu": str(gpus)}
    spec: dict = {"containers": [container]}
    if claim:  # the namespace's claim of two allocated GPUs, shared: counted once, for its first pod
        spec["resourceClaims"] = [{"name": "gpus", "resourceClaimName": "shared"}]
    if scheduler:
        spec["schedulerName"] = scheduler
    if priority is not None:
        spec["priority"] = priority
    if node:
        spec["nodeName"] = node
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec}
    if phase:
        pod["status"] = {"phase": phase}
    return pod


def _random_pod(rng: random.Random) -> dict:
    return _pod(rng.choice(NAMES), rng.choice(SOME_NAMESPACE), rng.choice([MINE, MINE, "other", None]),
                rng.choice([None, "q1", "q2", "top", "nope"]), rng.choice([None, *GROUPS]),
                rng.choice([None, 50, 100, 200]), rng.choice([None, None, "n1", "n2"]),
                rng.choice([None, "Running", "Succeeded", "Failed"]), rng.random() < 0.2, rng.randint(0, 3),
                rng.randint(0, 4000), rng.randint(0, 5000), rng.random() < 0.3)


def _group(name: str, namespace: str, queue: str | None, preemptibility: str | None) -> dict:
    spec: dict = {"minMember": 1}
    if queue:
        spec["queue"] = queue
    if preemptibility:
        spec["preemptibility"] = preemptibility
    return {"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _random_group(rng: random.Random) -> dict:
    return _group(rng.choice(GROUPS[:2]), rng.choice(SOME_NAMESPACE), rng.choice([None, "q1", "q2", "nope"]),
                  rng.choice([None, "preemptible", "non-preemptible"]))


def _bind_request(pod: str, namespace: str, node: str) -> dict:
    return {"apiVersion": "scheduling.run.ai/v1alpha2", "kind": "BindRequest",
            "metadata": {"name": f"{pod}-br", "namespace": namespace},
            "spec": {"podName": pod, "selectedNode": node}}


def _random_operation(rng: random.Random) -> tuple[str, object]:
    roll = rng.random()
    if roll < 0.45:
        return "put", _random_pod(rng)
    if roll < 0.6:
        return "put", _random_group(rng)
    if roll < 0.7:
        return "put", _bind_request(rng.choice(NAMES), rng.choice(SOME_NAMESPACE), rng.choice(["n1", "n2"]))
    resource = rng.choice([RES_PODS, RES_PODS, RES_POD_GROUPS, RES_BIND_REQUESTS])
    name = {RES_PODS: rng.choice(NAMES), RES_POD_GROUPS: rng.choice(GROUPS[:2]),
            RES_BIND_REQUESTS: f"{rng.choice(NAMES)}-br"}[resource]
    return "delete", (resource, name, rng.choice(SOME_NAMESPACE))


_CRDS = builtin_crds()


def _store() -> EmbeddedStore:
    """A store serving KAI's kinds, with the queues."""
    store = EmbeddedStore()
    for crd in _CRDS:
        store.restore(crd)
    for q in QUEUES:
        store.restore(q)
    for node in ("n1", "n2"):
        store.restore({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node},
                       "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "nvidia.com/gpu": "8"},
                                  "conditions": [{"type": "Ready", "status": "True"}]}})
    for namespace in NAMESPACES:
        results = [{"request": "gpus", "driver": "gpu.nvidia.com", "pool": "n1", "device": f"gpu-{i}"}
                   for i in range(2)]
        store.restore({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                       "metadata": {"name": "shared", "namespace": namespace},
                       "spec": {"devices": {"requests": [{"name": "gpus", "exactly": {
                           "deviceClassName": "gpu", "allocationMode": "ExactCount", "count": 2}}]}},
                       "status": {"allocation": {"devices": {"results": results}}}})
    return store


def _apply(store, op: str, arg) -> None:
    if op == "put":
        store.restore(arg)
    elif op == "delete":
        resource, name, namespace = arg
        try:
            store.delete(resource, name, namespace)
        except NotFound:
            pass


def _figures(found) -> dict:
    return {q: (u.requested, u.allocated, u.allocated_non_preemptible) for q, u in found.usage.items()}


def _members(found) -> dict:
    return {(ns, g): sorted(p["metadata"]["name"] for p in found.members((ns, g))) for ns in NAMESPACES
            for g in GROUPS}


def _replay(seed: int) -> int:
    """Random operations, each followed by a sync and the two usages compared; returns after how
    many of them some claim was counted."""
    rng = random.Random(seed)
    ops = [_random_operation(rng) for _ in range(40)]
    claimed = 0
    store = _store()
    cache = Cache(store, [*watched_resources(dra=True)])
    tree = tree_from_objects(QUEUES)
    for op, arg in ops:
        _apply(store, op, arg)
        cache.sync()
        snap = Snapshot(cache, MINE, FeatureGates())
        indexed = _indexed_usage(snap, tree, None, cache.pod_index.usage)
        walked = _walked_usage(snap, tree, None)
        assert _figures(indexed) == _figures(walked)
        assert _members(indexed) == _members(walked)
        assert indexed.counted == walked.counted
        total = cluster_total(snap)  # what other schedulers' pods hold comes off, from the index's sums
        with patch.object(queue_order, "indexed_pods", lambda _snapshot: None):
            assert cluster_total(snap) == total
        claimed += bool(indexed.counted)
    return claimed


@pytest.mark.parametrize("seed", range(60))
def test_the_index_gives_what_walking_every_pod_gives(seed):
    _replay(seed)


def test_the_random_sequences_count_shared_claims():
    assert sum(_replay(seed) for seed in range(20)) > 20


def test_a_snapshot_older_than_the_cache_is_walked():
    store = _store()
    store.restore(_pod("p0", "a", MINE, "q1", None, None, "n1", "Running", False, 2, 1000, 10))
    cache = Cache(store, [*watched_resources(dra=True)])
    tree = tree_from_objects(QUEUES)
    cache.sync()
    snap = Snapshot(cache, MINE, FeatureGates())
    store.restore(_pod("p1", "a", MINE, "q1", None, None, "n1", "Running", False, 3, 1000, 10))
    cache.sync()  # the cache moved on: the index now holds p1 too, the snapshot does not
    assert snapshot_usage(snap, tree).usage["q1"].allocated["gpu"] == 2
    newer = Snapshot(cache, MINE, FeatureGates())
    assert snapshot_usage(newer, tree).usage["q1"].allocated["gpu"] == 5
    assert snapshot_usage(newer, tree).usage["top"].requested["gpu"] == 5


def _reference_workload(ledger, pod: dict, snapshot) -> dict[str, float]:
    """What a pod's workload asks for, computed member by member: the pod, the waiting members of
    its PodGroup named before it, and enough named after it for the group's minMember."""
    group = (pod["metadata"].get("annotations") or {}).get("pod-group-name")
    key = (pod["metadata"]["namespace"], group)
    minimum = ((snapshot.pod_groups.get(key) or {}).get("spec") or {}).get("minMember", 0) if group else 0
    members = ledger._members(key) if group else []
    placed = sum(1 for m in members if snapshot.node_of(m) is not None)
    waiting = sorted((m for m in members if snapshot.node_of(m) is None and m is not pod),
                     key=lambda m: m["metadata"]["name"])
    mine = pod["metadata"]["name"]
    before = [m for m in waiting if m["metadata"]["name"] < mine]
    after = [m for m in waiting if m["metadata"]["name"] >= mine]
    wanted = dict.fromkeys(("gpu", "cpu", "memory"), 0.0)
    for member in [pod, *before, *after[:max(0, minimum - placed - 1 - len(before))]]:
        for r, v in amounts_of(snapshot.requests_of(member)).items():
            wanted[r] += v
    return wanted


@pytest.mark.parametrize("seed", range(30))
def test_a_gang_members_workload_is_the_members_placed_alongside_it(seed):
    rng = random.Random(seed)
    store = _store()
    for g in GROUPS[:2]:
        group = _group(g, "a", "q1", None)
        group["spec"]["minMember"] = rng.randint(0, 6)
        store.restore(group)
    for _ in range(rng.randint(1, 9)):
        pod = _pod(f"m{rng.randint(0, 20):02d}", "a", MINE, None, rng.choice(GROUPS), None,
                   rng.choice([None, None, None, "n1"]), None, False, rng.randint(0, 2), rng.randint(0, 3000),
                   rng.randint(0, 100))
        store.restore(pod)
    cache = Cache(store, [*watched_resources(dra=False)])
    cache.sync()
    snap = Snapshot(cache, MINE, FeatureGates())
    tree = tree_from_objects(QUEUES)
    ledger = QueueLedger(snap, tree, lambda p: pod_queue_in(p, snap.pod_groups), lambda p: True)
    waiting = snap.pending_pods()
    for step in range(3):  # the cycle places some of them: the views follow
        for pod in snap.pods.values():
            assert ledger._workload(pod, snap) == _reference_workload(ledger, pod, snap), (step, pod["metadata"])
        if waiting:
            snap.assume(waiting.pop(rng.randrange(len(waiting))), "n2", [], None)
