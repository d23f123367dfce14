"""The cache's pod index (:class:`kai_core.framework.cache.PodIndex`) and the snapshot built on it.

A snapshot no longer recounts every pod: each node's usage starts from the sums the cache keeps
per watch event, and only the pods not bound yet are looked at. What a user sees must not change,
so the property test drives an embedded store through random pod lifecycles (create, bind, finish,
delete, delete-with-finalizers, replace under the same name, gates, BindRequests in flight, nodes
coming and going, watch history compacted, fresh caches) and, after every sync, compares the
snapshot with usage recomputed from scratch from the store.

The property test runs ``KAI_PROPERTY_EXAMPLES`` examples (default 100), derandomized so every run
checks the same ones.
"""

from __future__ import annotations

import gc
import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from kai_core.api.bindrequest import build_bind_request
from kai_core.api.errors import AlreadyExists, Conflict, Forbidden, NotFound
from kai_core.api.features import FeatureGates
from kai_core.api.resources import RES_BIND_REQUESTS, RES_NAMESPACES, RES_NODES, RES_PODS, pod_requests
from kai_core.apiserver.store import EmbeddedStore
from kai_core.cluster import builtin_crds
from kai_core.framework.cache import Cache, PodIndex
from kai_core.framework.snapshot import Snapshot
from kai_core.runtime import GC_THRESHOLDS, tune_gc

EXAMPLES = int(os.environ.get("KAI_PROPERTY_EXAMPLES", "100"))
SCHEDULER = "kai-scheduler"
GPU = "nvidia.com/gpu"
RESOURCES = [RES_NAMESPACES, RES_NODES, RES_PODS, RES_BIND_REQUESTS]
#: n1 and n2 always exist; n3 comes and goes; "ghost" is a node name pods may carry before (or
#: without) a Node of that name existing
NODE_NAMES = ("n1", "n2", "n3", "ghost")
NAMESPACES = ("default", "team")
POD_NAMES = ("a", "b", "c", "d", "e")  # few names: the same name is often deleted and reused
FINALIZER = "example.com/hold"
TIMESTAMPS = ("2024-01-01T00:00:00Z", "2024-01-01T00:00:05Z", "2024-06-01T12:00:00Z")


# -- builders ----------------------------------------------------------------------------------


def make_node(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110", GPU: "8"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def make_pod(namespace: str, name: str, *, cpu: str | None = "1", memory: str | None = None,
             gpus: str | None = None, node: str | None = None, scheduler: str | None = SCHEDULER,
             priority: int = 0, init: list[dict] | None = None, overhead: dict | None = None,
             pod_level: dict | None = None, gated: bool = False, finalizer: bool = False,
             created: str | None = None, phase: str | None = None) -> dict:
    """A pod with one container requesting ``cpu``/``memory`` and ``gpus`` (as a limit)."""
    resources: dict = {}
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    if requests:
        resources["requests"] = requests
    if gpus:
        resources["limits"] = {GPU: gpus}
    spec: dict = {"priority": priority,
                  "containers": [{"name": "main", "image": "busybox:1", "resources": resources}]}
    if scheduler:
        spec["schedulerName"] = scheduler
    if node:
        spec["nodeName"] = node
    if init:
        spec["initContainers"] = init
    if overhead:
        spec["overhead"] = overhead
    if pod_level:
        spec["resources"] = {"requests": pod_level}
    if gated:
        spec["schedulingGates"] = [{"name": "example.com/wait"}]
    meta: dict = {"name": name, "namespace": namespace}
    if finalizer:
        meta["finalizers"] = [FINALIZER]
    if created:
        meta["creationTimestamp"] = created
    obj: dict = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    if phase:
        obj["status"] = {"phase": phase}
    return obj


def new_store(history: int = 500_000) -> EmbeddedStore:
    """An embedded store serving KAI's CRDs (BindRequests), with nodes n1..n3 and namespace team."""
    store = EmbeddedStore(history=history)
    for crd in builtin_crds():
        store.restore(crd)
    for name in ("n1", "n2", "n3"):
        store.create(make_node(name))
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    return store


def snapshot(cache: Cache) -> Snapshot:
    return Snapshot(cache, SCHEDULER, FeatureGates())


def usage(snap: Snapshot, node: str) -> tuple[dict[str, int], int]:
    """What the filters see of a node: summed requests and the number of pods."""
    info = snap.node_by_name[node]
    return info.requested, info.pod_count


# -- the oracle: everything recomputed from the store's objects --------------------------------


def _key(obj: dict) -> tuple[str, str]:
    return (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def _active(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _dead(br: dict) -> bool:
    """A BindRequest that failed with no retries left no longer holds its node."""
    status = br.get("status") or {}
    limit = (br.get("spec") or {}).get("backoffLimit")
    return status.get("phase") == "Failed" and (limit is None or status.get("failedAttempts", 0) >= limit)


def _owns(br: dict, pod: dict) -> bool:
    owners = [o for o in br["metadata"].get("ownerReferences") or [] if o.get("kind") == "Pod"]
    return not owners or any(o.get("uid") == pod["metadata"]["uid"] for o in owners)


class Expected:
    """Per-node usage, bound usage by node name (Node or not), and the pending pods, from scratch."""

    def __init__(self, store: EmbeddedStore) -> None:
        pods = store.list_refs(RES_PODS)[0]
        self.node_names = {n["metadata"]["name"] for n in store.list_refs(RES_NODES)[0]}
        live_brs = {}
        for br in store.list_refs(RES_BIND_REQUESTS)[0]:
            if not _dead(br):
                live_brs[(br["metadata"]["namespace"], br["spec"]["podName"])] = br
        self.bound: dict[str, Counter] = {}
        self.bound_count: Counter = Counter()
        self.unbound: set[tuple[str, str]] = set()
        for pod in pods:
            node = pod["spec"].get("nodeName")
            if not node:
                self.unbound.add(_key(pod))
            elif _active(pod):
                self.bound.setdefault(node, Counter()).update(pod_requests(pod))
                self.bound_count[node] += 1
        self.usage = {n: Counter(self.bound.get(n, Counter())) for n in self.node_names}
        self.count = Counter({n: self.bound_count[n] for n in self.node_names})
        self.in_flight: set[tuple[str, str]] = set()
        waiting = []
        for pod in pods:
            if pod["spec"].get("nodeName") or not _active(pod) or pod["metadata"].get("deletionTimestamp"):
                continue
            br = live_brs.get(_key(pod))
            if br is not None and _owns(br, pod):
                self.in_flight.add(_key(pod))
                node = br["spec"]["selectedNode"]
                if node in self.node_names:
                    self.usage[node].update(pod_requests(pod))
                    self.count[node] += 1
                continue
            if pod["spec"].get("schedulerName") == SCHEDULER and not pod["spec"].get("schedulingGates"):
                waiting.append(pod)
        # documented order: highest priority, then oldest creationTimestamp, then namespace and name
        waiting.sort(key=lambda p: (-p["spec"].get("priority", 0), p["metadata"]["creationTimestamp"],
                                    p["metadata"]["namespace"], p["metadata"]["name"]))
        self.pending = [_ident(p) for p in waiting]


def _ident(pod: dict) -> tuple[str, str, str, str]:
    md = pod["metadata"]
    return (md["namespace"], md["name"], md["uid"], md["resourceVersion"])


def _nonzero(counter: Counter) -> dict[str, int]:
    return {k: v for k, v in counter.items() if v}


def check_cache(cache: Cache, store: EmbeddedStore) -> None:
    """The cache's index and a snapshot built from it agree with the store, recomputed from scratch."""
    want = Expected(store)
    index = cache.pod_index
    bound_nodes = {n for n, c in want.bound_count.items() if c}
    assert index.requested == {n: _nonzero(want.bound[n]) for n in bound_nodes}
    assert index.pod_count == {n: want.bound_count[n] for n in bound_nodes}
    assert set(index.unbound) == want.unbound

    snap = snapshot(cache)
    assert set(snap.node_by_name) == want.node_names
    for name in sorted(want.node_names):
        assert usage(snap, name) == (_nonzero(want.usage[name]), want.count[name]), name
    assert set(snap.in_flight) == want.in_flight
    assert [_ident(p) for p in snap.pending_pods()] == want.pending
    for pod in snap.pods.values():
        assert snap.requests_of(pod) == pod_requests(pod), _key(pod)


# -- the property ------------------------------------------------------------------------------

names = st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(POD_NAMES))
cpus = st.sampled_from([None, "100m", "1", "2500m"])
memories = st.sampled_from([None, "256Mi", "1Gi"])
gpu_counts = st.sampled_from([None, None, "1", "2"])


@st.composite
def init_containers(draw) -> list[dict] | None:
    out = []
    for i in range(draw(st.integers(0, 2))):
        c: dict = {"name": f"init{i}", "image": "busybox:1",
                   "resources": {"requests": {"cpu": draw(st.sampled_from(["500m", "4"]))}}}
        if draw(st.booleans()):
            c["restartPolicy"] = "Always"  # a sidecar: adds to the containers' sum
        out.append(c)
    return out or None


@st.composite
def pod_shapes(draw) -> dict:
    """Keyword arguments for :func:`make_pod` (all but namespace and name)."""
    node = draw(st.sampled_from([None, None, None, None, *NODE_NAMES]))
    return {
        "cpu": draw(cpus),
        "memory": draw(memories),
        "gpus": draw(gpu_counts),
        "node": node,
        "scheduler": draw(st.sampled_from([SCHEDULER, SCHEDULER, SCHEDULER, "default-scheduler", None])),
        "priority": draw(st.sampled_from([0, 0, 10, -5])),
        "init": draw(init_containers()),
        "overhead": draw(st.sampled_from([None, None, {"cpu": "50m"}])),
        "pod_level": draw(st.sampled_from([None, None, {"memory": "2Gi"}])),
        "gated": node is None and draw(st.integers(0, 3)) == 0,
        "finalizer": draw(st.integers(0, 3)) == 0,
    }


class PodLifecycles(RuleBasedStateMachine):
    """Random writes to an embedded store; after each sync the cache must match the store."""

    store: EmbeddedStore
    cache: Cache

    @initialize(history=st.sampled_from([3, 12, 500_000]),
                seed=st.lists(st.tuples(names, pod_shapes(), st.sampled_from(TIMESTAMPS)), max_size=8),
                in_flight=st.lists(st.tuples(st.integers(0, 50), st.sampled_from(NODE_NAMES)), max_size=3))
    def start(self, history: int, seed, in_flight) -> None:
        """A store with some pods (and BindRequests) already, so the rules below find objects to
        act on, and a cache that has not listed yet."""
        # a short event history makes the cache relist (410 Gone) instead of applying events
        self.store = new_store(history)
        for (ns, name), shape, created in seed:
            self.store.restore(make_pod(ns, name, **shape, created=created))
        for pick, node in in_flight:
            self.request_binding(pick, node, None)
        self.cache = Cache(self.store, RESOURCES)

    def _pod(self, ns: str, name: str) -> dict | None:
        try:
            return self.store.get(RES_PODS, name, ns)
        except NotFound:
            return None

    # -- pods --

    @rule(at=names, shape=pod_shapes())
    def create_pod(self, at, shape) -> None:
        try:
            self.store.create(make_pod(*at, **shape))
        except (AlreadyExists, NotFound, Forbidden):
            pass  # name taken, or namespace team missing or terminating

    @rule(at=names, shape=pod_shapes(), created=st.sampled_from(TIMESTAMPS),
          phase=st.sampled_from([None, "Running", "Succeeded", "Failed"]), keep_uid=st.booleans())
    def apply_pod(self, at, shape, created, phase, keep_uid) -> None:
        """``restore`` (kubectl apply of a whole object): a new pod, or the same name replaced in
        one MODIFIED event, possibly moved to another node, unbound, finished or resized."""
        obj = make_pod(*at, **shape, created=created, phase=phase)
        current = self._pod(*at)
        if current is not None and keep_uid:
            obj["metadata"]["uid"] = current["metadata"]["uid"]
        elif current is not None:
            obj["metadata"]["uid"] = f"uid-{current['metadata']['resourceVersion']}-new"
        self.store.restore(obj)

    @rule(at=names, node=st.sampled_from(NODE_NAMES))
    def bind(self, at, node) -> None:
        try:
            self.store.bind(at[0], at[1], node)
        except (NotFound, Conflict):
            pass  # no such pod, already bound, gated or being deleted

    @rule(at=names, phase=st.sampled_from(["Running", "Succeeded", "Failed"]))
    def set_phase(self, at, phase) -> None:
        if self._pod(*at) is not None:
            self.store.patch(RES_PODS, at[1], at[0], {"status": {"phase": phase}}, subresource="status")

    @rule(at=names)
    def ungate(self, at) -> None:
        if self._pod(*at) is not None:
            self.store.patch(RES_PODS, at[1], at[0], {"spec": {"schedulingGates": None}})

    @rule(at=names)
    def delete_pod(self, at) -> None:
        """Gone at once, or (with a finalizer) marked with a deletionTimestamp."""
        try:
            self.store.delete(RES_PODS, at[1], at[0])
        except NotFound:
            pass

    @rule(at=names)
    def drop_finalizers(self, at) -> None:
        """Lets a pod being deleted go."""
        if self._pod(*at) is not None:
            self.store.patch(RES_PODS, at[1], at[0], {"metadata": {"finalizers": None}})

    @rule(at=names, shape=pod_shapes())
    def delete_and_recreate(self, at, shape) -> None:
        """The same name, a new uid, in two events (possibly within one sync)."""
        try:
            self.store.delete(RES_PODS, at[1], at[0])
            self.store.patch(RES_PODS, at[1], at[0], {"metadata": {"finalizers": None}})
        except NotFound:
            pass
        try:
            self.store.create(make_pod(*at, **shape))
        except (AlreadyExists, NotFound, Forbidden):
            pass

    # -- BindRequests in flight --

    @rule(pick=st.integers(0, 50), node=st.sampled_from(NODE_NAMES), backoff=st.sampled_from([None, 0, 1]))
    def request_binding(self, pick, node, backoff) -> None:
        """A BindRequest for an unbound pod that has no live one (the scheduler never writes two)."""
        live = {(br["metadata"]["namespace"], br["spec"]["podName"])
                for br in self.store.list_refs(RES_BIND_REQUESTS)[0] if not _dead(br)}
        pods = [p for p in self.store.list_refs(RES_PODS)[0]
                if not p["spec"].get("nodeName") and _key(p) not in live]
        if not pods:
            return
        try:
            self.store.create(build_bind_request(pods[pick % len(pods)], node, backoff_limit=backoff))
        except Forbidden:
            pass  # namespace team is being deleted

    @rule(pick=st.integers(0, 50), attempts=st.integers(0, 2))
    def fail_binding(self, pick, attempts) -> None:
        """A BindRequest fails: live while retries remain, dead once they are used up."""
        brs = self.store.list(RES_BIND_REQUESTS)[0]
        if brs:
            br = brs[pick % len(brs)]
            br["status"] = {"phase": "Failed", "failedAttempts": attempts}
            self.store.update_status(br)

    @rule(pick=st.integers(0, 50))
    def delete_binding(self, pick) -> None:
        brs = self.store.list_refs(RES_BIND_REQUESTS)[0]
        if brs:
            br = brs[pick % len(brs)]
            self.store.delete(RES_BIND_REQUESTS, br["metadata"]["name"], br["metadata"]["namespace"])

    # -- nodes and namespaces --

    @rule(name=st.sampled_from(["n3", "ghost"]))
    def toggle_node(self, name) -> None:
        """A node leaves (its pods stay bound to its name) or (re)appears."""
        try:
            self.store.delete(RES_NODES, name)
        except NotFound:
            self.store.create(make_node(name))

    @rule()
    def delete_team(self) -> None:
        """Its pods go with it (those with a finalizer stay, being deleted, until it is dropped)."""
        try:
            self.store.delete(RES_NAMESPACES, "team")
        except NotFound:
            self.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})

    # -- the cache --

    @rule()
    def sync(self) -> None:
        self.cache.sync()
        check_cache(self.cache, self.store)

    @rule()
    def fresh_cache(self) -> None:
        """A restart: a new cache lists everything."""
        self.cache = Cache(self.store, RESOURCES)
        self.cache.sync()
        check_cache(self.cache, self.store)

    def teardown(self) -> None:
        if hasattr(self, "cache"):
            self.cache.sync()
            check_cache(self.cache, self.store)


PodLifecycles.TestCase.settings = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, stateful_step_count=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestPodLifecycles = PodLifecycles.TestCase


# -- examples ----------------------------------------------------------------------------------


def test_usage_follows_a_pod_through_its_life():
    store = new_store()
    cache = Cache(store, RESOURCES)
    store.create(make_pod("default", "train", cpu="2", gpus="1"))
    cache.sync()
    assert snapshot(cache).node_by_name["n1"].pod_count == 0
    assert [p["metadata"]["name"] for p in snapshot(cache).pending_pods()] == ["train"]

    store.bind("default", "train", "n1")
    cache.sync()
    snap = snapshot(cache)
    assert usage(snap, "n1") == ({"cpu": 2000, GPU: 1000}, 1)
    assert snap.pending_pods() == []

    store.patch(RES_PODS, "train", "default", {"status": {"phase": "Succeeded"}}, subresource="status")
    cache.sync()
    assert usage(snapshot(cache), "n1") == ({}, 0)
    assert cache.pod_index.requested == {} and cache.pod_index.pod_count == {}


def test_a_name_reused_within_one_sync_is_counted_once():
    store = new_store()
    cache = Cache(store, RESOURCES)
    store.create(make_pod("default", "w", cpu="1", node="n1"))
    cache.sync()
    store.delete(RES_PODS, "w", "default")
    store.create(make_pod("default", "w", cpu="3", node="n2"))
    cache.sync()
    snap = snapshot(cache)
    assert usage(snap, "n1") == ({}, 0)
    assert usage(snap, "n2") == ({"cpu": 3000}, 1)


def test_a_relist_after_compaction_rebuilds_the_index():
    store = new_store(history=2)
    cache = Cache(store, RESOURCES)
    store.create(make_pod("default", "x", cpu="1", node="n1"))
    cache.sync()
    for i in range(5):  # more events than the history keeps: the next sync gets 410 Gone
        store.create(make_pod("default", f"y{i}", cpu="500m", node="n2"))
    store.delete(RES_PODS, "x", "default")
    cache.sync()
    snap = snapshot(cache)
    assert usage(snap, "n1") == ({}, 0)
    assert usage(snap, "n2") == ({"cpu": 2500}, 5)
    check_cache(cache, store)


def test_pods_without_requests_still_count_against_the_node():
    store = new_store()
    cache = Cache(store, RESOURCES)
    store.create(make_pod("default", "be-1", cpu=None, node="n1"))
    store.create(make_pod("default", "be-2", cpu=None, node="n1"))
    cache.sync()
    assert usage(snapshot(cache), "n1") == ({}, 2)


def test_a_node_at_its_pod_limit_takes_no_more_best_effort_pods(world):
    w = world(world.node("full", pods="1"), world.pod("resident", cpu=None, nodeName="full"),
              world.pod("newcomer", cpu=None))
    w.cycle()
    assert w.placed() == {}


def test_pending_pods_come_in_the_documented_order():
    store = new_store()
    early, late = TIMESTAMPS[0], TIMESTAMPS[2]
    for ns, name, priority, created in [("team", "a", 0, early), ("default", "b", 0, early),
                                        ("default", "old", 0, early), ("default", "new", 0, late),
                                        ("default", "urgent", 10, late), ("default", "low", -5, early)]:
        store.restore(make_pod(ns, name, priority=priority, created=created))
    store.restore(make_pod("default", "gated", priority=10, gated=True))
    store.restore(make_pod("default", "theirs", scheduler="default-scheduler"))
    store.restore(make_pod("default", "bound", node="n1"))
    store.restore(make_pod("default", "done", phase="Succeeded"))
    store.create(make_pod("default", "going", finalizer=True))
    store.delete(RES_PODS, "going", "default")
    store.create(make_pod("default", "flying"))
    store.create(build_bind_request(store.get(RES_PODS, "flying", "default"), "n2"))
    cache = Cache(store, RESOURCES)
    cache.sync()
    snap = snapshot(cache)
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in snap.pending_pods()] == [
        ("default", "urgent"), ("default", "b"), ("default", "old"), ("team", "a"), ("default", "new"),
        ("default", "low")]
    assert snap.node_by_name["n2"].pod_count == 1  # the pod in flight holds its node


def test_put_and_remove_are_idempotent():
    index = PodIndex()
    pod = make_pod("default", "p", cpu="1", node="n1")
    index.put(("default", "p"), pod)
    index.put(("default", "p"), pod)  # the same event replayed after a relist
    assert (index.requested, index.pod_count) == ({"n1": {"cpu": 1000}}, {"n1": 1})
    assert index.requests_of(("default", "p"), pod) == {"cpu": 1000}
    assert index.requests_of(("default", "p"), make_pod("default", "p", cpu="1", node="n1")) is None
    index.remove(("default", "p"))
    index.remove(("default", "p"))
    index.remove(("default", "never-seen"))
    assert (index.requested, index.pod_count, index.unbound) == ({}, {}, {})


# -- assume() works on the snapshot's own copy -------------------------------------------------


def test_assume_does_not_change_the_cache_or_the_next_snapshot():
    store = new_store()
    store.create(make_pod("default", "running", cpu="2", memory="1Gi", node="n1"))
    store.restore(make_pod("default", "waiting", cpu="3", gpus="2", created=TIMESTAMPS[0]))
    store.restore(make_pod("default", "small", cpu="100m", created=TIMESTAMPS[0]))
    cache = Cache(store, RESOURCES)
    cache.sync()
    before = {n: dict(r) for n, r in cache.pod_index.requested.items()}, dict(cache.pod_index.pod_count)

    first = snapshot(cache)
    small, waiting = first.pending_pods()
    first.assume(waiting, "n1", [], None)
    first.assume(small, "n2", [], None)  # a node without usage yet
    assert usage(first, "n2") == ({"cpu": 100}, 1)
    assert first.node_by_name["n1"].requested == {"cpu": 5000, "memory": 1073741824000, GPU: 2000}
    assert first.node_by_name["n1"].pod_count == 2
    assert first.pending_pods() == []

    second = snapshot(cache)
    assert second.node_by_name["n1"].requested == {"cpu": 2000, "memory": 1073741824000}
    assert second.node_by_name["n1"].pod_count == 1
    assert usage(second, "n2") == ({}, 0)
    assert [p["metadata"]["name"] for p in second.pending_pods()] == ["small", "waiting"]
    after = {n: dict(r) for n, r in cache.pod_index.requested.items()}, dict(cache.pod_index.pod_count)
    assert after == before
    assert second.requests_of(waiting) == {"cpu": 3000, GPU: 2000}

    first.unassume(waiting, "n1", [], None)
    assert first.node_by_name["n1"].requested == {"cpu": 2000, "memory": 1073741824000}
    assert second.node_by_name["n1"].requested == {"cpu": 2000, "memory": 1073741824000}


def test_a_snapshot_keeps_its_pending_pods_when_the_cache_syncs_later():
    store = new_store()
    store.create(make_pod("default", "early"))
    cache = Cache(store, RESOURCES)
    cache.sync()
    snap = snapshot(cache)
    store.create(make_pod("default", "late"))
    cache.sync()
    assert [p["metadata"]["name"] for p in snap.pending_pods()] == ["early"]


# -- tune_gc -----------------------------------------------------------------------------------


@pytest.fixture
def gc_thresholds():
    saved = gc.get_threshold()
    yield saved
    gc.set_threshold(*saved)


def test_tune_gc_sets_the_documented_thresholds(gc_thresholds):
    gc.set_threshold(700, 10, 10)
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700  # young collections run less often than CPython's default
    tune_gc()  # calling it again changes nothing
    assert gc.get_threshold() == GC_THRESHOLDS
