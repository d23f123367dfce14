"""``kai-cli bench --scenario queues``: one scheduling cycle of a large cluster shared by queues.

The issue's figure: 4,000 nodes (8 ``nvidia.com/gpu`` each), 200 leaf queues under 20 projects
under 4 departments (one leaf per 20 nodes on a smaller cluster, at least 8; parents in
proportion), 140,000 pods in gangs of 8 (KAI PodGroups, ``minMember`` 8, the queue in
``spec.queue``), half of them running. GPUs are nearly all taken: three leaf queues in four run
above their quota (and fair share) while every fourth runs at a third of its quota with most of the
pending gangs, so reclaim is possible. A few nodes are left free of GPU work, so the cycle also
places some gangs (decisions and BindRequests).

What is timed is :meth:`Scheduler.run_cycle` alone, with the plugins and the configuration
``kai-cli run scheduler`` ships (DRA off, as its default), on a cache already synced with the
loaded state (loading and the first sync are not counted): the first cycle after the load (it
also writes the reason of every pending pod once) and a second cycle (what each later cycle costs
while nothing changes but the first cycle's own writes and evictions). Each cycle is broken down into phases; no
binder runs, so the first cycle's decisions are still in flight in the second.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

#: the queue tree at full size: departments -> projects -> leaf queues (fewer on fewer nodes, see Layout)
DEPARTMENTS = 4
PROJECTS = 20
LEAVES = 200
#: nodes per leaf queue below full size (a leaf's quota stays a few gangs' worth)
NODES_PER_LEAF = 20
GANG_SIZE = 8
NODE_GPUS = 8
NODE_CPU = 128
NODE_MEMORY_GI = 1024
#: leaf queues' quotas add up to this fraction of the cluster (the rest is shared by weight)
QUOTA_FRACTION = 0.75
#: every HUNGRY-th leaf queue runs below its quota and has most pending gangs
HUNGRY = 4
#: share of the pending gangs that belong to the hungry queues
HUNGRY_PENDING = 0.6
#: one node in this many is left without GPU work: the cycle has gangs to place
FREE_NODE_EVERY = 100
QUEUE_API = "scheduling.run.ai/v2"
POD_GROUP_API = "scheduling.run.ai/v2alpha2"
SCHEDULER_NAME = "kai-scheduler"

#: phases of one cycle, in the order printed; the indented ones add up to the cycle (with "other"),
#: the last three are counted wherever they happen (allocate and the eviction actions)
PH_CYCLE = "scheduler cycle"
PH_SYNC = "  cache sync"
PH_SNAPSHOT = "  snapshot build"
PH_ORDER = "  queue order (usage, fair share, order)"
PH_GANGS = "  find gangs (kai_pod_groups)"
PH_PLACE = "  allocate (gang placement)"
PH_ACTIONS = "  eviction actions (consolidation, reclaim, preempt)"
PH_REPORT = "  unschedulable reasons written"
PH_OTHER = "  other"
PH_PRE_FILTER = "pre-filter calls (queue limits, gangs)"
PH_DECIDE = "decide calls (filter, score)"
PH_WRITE = "BindRequests written"
PARTS = (PH_SYNC, PH_SNAPSHOT, PH_ORDER, PH_GANGS, PH_PLACE, PH_ACTIONS, PH_REPORT)
PHASES = (PH_CYCLE, *PARTS, PH_OTHER, PH_PRE_FILTER, PH_DECIDE, PH_WRITE)


@dataclass(frozen=True)
class Layout:
    """How many of each thing the scenario has at a size."""

    nodes: int
    pods: int

    @property
    def leaves(self) -> int:
        return min(LEAVES, max(8, self.nodes // NODES_PER_LEAF))

    @property
    def projects(self) -> int:
        return max(2, self.leaves * PROJECTS // LEAVES)

    @property
    def departments(self) -> int:
        return max(1, self.projects * DEPARTMENTS // PROJECTS)

    def project_of(self, leaf: int) -> int:
        return leaf * self.projects // self.leaves

    def department_of(self, project: int) -> int:
        return project * self.departments // self.projects

    @property
    def free_nodes(self) -> int:
        return max(1, self.nodes // FREE_NODE_EVERY)

    @property
    def gangs(self) -> int:
        return -(-self.pods // GANG_SIZE)

    @property
    def running_gangs(self) -> int:
        return (self.pods // 2) // GANG_SIZE

    @property
    def gpu_gangs(self) -> int:
        """Running gangs of 1-GPU pods: one per node that is not kept free (fills its 8 GPUs)."""
        return min(self.running_gangs, self.nodes - self.free_nodes)

    @property
    def leaf_gpu_quota(self) -> int:
        return max(GANG_SIZE, int(QUOTA_FRACTION * self.nodes * NODE_GPUS / self.leaves) // GANG_SIZE * GANG_SIZE)


def _leaf(i: int) -> str:
    return f"leaf-{i:03d}"


def _project(i: int) -> str:
    return f"project-{i:02d}"


def _department(i: int) -> str:
    return f"department-{i}"


def _namespace(layout: Layout, leaf: int) -> str:
    return f"team-{layout.project_of(leaf):02d}"  # one namespace per project


def _queue(name: str, parent: str | None, gpu: float, cpu_milli: float, memory_mb: float, weight: int) -> dict:
    spec: dict = {"resources": {
        "gpu": {"quota": gpu, "overQuotaWeight": weight, "limit": -1},
        "cpu": {"quota": cpu_milli, "overQuotaWeight": weight, "limit": -1},
        "memory": {"quota": memory_mb, "overQuotaWeight": weight, "limit": -1},
    }}
    if parent:
        spec["parentQueue"] = parent
    return {"apiVersion": QUEUE_API, "kind": "Queue", "metadata": {"name": name}, "spec": spec}


def _queues(layout: Layout) -> Iterator[dict]:
    gpu = layout.leaf_gpu_quota
    cpu = int(QUOTA_FRACTION * layout.nodes * NODE_CPU * 1000 / layout.leaves)
    memory = int(QUOTA_FRACTION * layout.nodes * NODE_MEMORY_GI * 2**30 / 1_000_000 / layout.leaves)
    leaves_of_project = [0] * layout.projects
    for q in range(layout.leaves):
        leaves_of_project[layout.project_of(q)] += 1
    leaves_of_department = [0] * layout.departments
    for p in range(layout.projects):
        leaves_of_department[layout.department_of(p)] += leaves_of_project[p]
    # a parent's quota is its leaves' quotas added up
    for d, n in enumerate(leaves_of_department):
        yield _queue(_department(d), None, gpu * n, cpu * n, memory * n, 1)
    for p, n in enumerate(leaves_of_project):
        yield _queue(_project(p), _department(layout.department_of(p)), gpu * n, cpu * n, memory * n, 1)
    for q in range(layout.leaves):
        yield _queue(_leaf(q), _project(layout.project_of(q)), gpu, cpu, memory, 1 + q % 3)


def _node(i: int) -> dict:
    name = f"node-{i:05d}"
    allocatable = {"cpu": str(NODE_CPU), "memory": f"{NODE_MEMORY_GI}Gi", "pods": "110",
                   "nvidia.com/gpu": str(NODE_GPUS)}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"capacity": dict(allocatable), "allocatable": allocatable,
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}


def _stamp(i: int) -> str:
    """Creation times one second apart, oldest first (running gangs are older than pending ones)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_767_225_600 + i))


def _gang(layout: Layout, g: int, leaf: int, size: int, gpu: bool, nodes: list[str] | None) -> Iterator[dict]:
    ns, group = _namespace(layout, leaf), f"gang-{g:06d}"
    stamp = _stamp(g)
    yield {"apiVersion": POD_GROUP_API, "kind": "PodGroup",
           "metadata": {"name": group, "namespace": ns, "creationTimestamp": stamp},
           "spec": {"minMember": size, "queue": _leaf(leaf)}}
    requests = {"cpu": "4", "memory": "16Gi"} if gpu else {"cpu": "2", "memory": "8Gi"}
    for m in range(size):
        container: dict = {"name": "main", "image": "registry.example/train:1", "resources": {"requests": requests}}
        if gpu:
            container["resources"]["limits"] = {"nvidia.com/gpu": "1"}
        pod: dict = {"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": f"{group}-{m}", "namespace": ns, "creationTimestamp": stamp,
                                  "labels": {"app": "bench"}, "annotations": {"pod-group-name": group}},
                     "spec": {"schedulerName": SCHEDULER_NAME, "containers": [container]}}
        if nodes is not None:
            pod["spec"]["nodeName"] = nodes[m % len(nodes)]
            pod["status"] = {"phase": "Running"}
        yield pod


def generate(nodes: int, pods: int) -> Iterator[dict]:
    """The scenario's objects at a size, one at a time."""
    layout = Layout(nodes, pods)
    for ns in sorted({_namespace(layout, q) for q in range(layout.leaves)}):
        yield {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    yield from _queues(layout)
    node_names = [f"node-{i:05d}" for i in range(nodes)]
    for i in range(nodes):
        yield _node(i)
    hungry = [q for q in range(layout.leaves) if q % HUNGRY == 0]
    others = [q for q in range(layout.leaves) if q % HUNGRY]
    # running GPU gangs: each hungry queue a third of its quota, the rest over the other queues
    per_hungry = min(layout.gpu_gangs // len(hungry), layout.leaf_gpu_quota // 3 // GANG_SIZE)
    gpu_owner = [q for q in hungry for _ in range(per_hungry)]
    gpu_owner += [others[i % len(others)] for i in range(layout.gpu_gangs - len(gpu_owner))]
    gpu_nodes = [i for i in range(nodes) if (i + 1) % FREE_NODE_EVERY][:layout.gpu_gangs]
    g = 0
    left = pods
    for owner, node in zip(gpu_owner, gpu_nodes, strict=True):
        yield from _gang(layout, g, owner, GANG_SIZE, True, [node_names[node]])
        g, left = g + 1, left - GANG_SIZE
    # running CPU-only gangs over every queue, their pods spread over the nodes
    for i in range(layout.running_gangs - layout.gpu_gangs):
        spread = [node_names[(i * GANG_SIZE + m) % nodes] for m in range(GANG_SIZE)]
        yield from _gang(layout, g, i % layout.leaves, GANG_SIZE, False, spread)
        g, left = g + 1, left - GANG_SIZE
    # pending GPU gangs, mostly in the hungry queues
    pending = layout.gangs - g
    hungry_share = round(pending * HUNGRY_PENDING)
    for i in range(pending):
        owner = hungry[i % len(hungry)] if i < hungry_share else others[i % len(others)]
        size = min(GANG_SIZE, left)
        yield from _gang(layout, g, owner, size, True, None)
        g, left = g + 1, left - size


# -- measuring -----------------------------------------------------------------------------------


@dataclass
class CyclePhases:
    """Seconds and calls of each phase of one cycle."""

    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds
        self.calls[phase] = self.calls.get(phase, 0) + 1


@dataclass
class QueuesRun:
    """What the scenario measured: the cycles' phases, what they did and what is wrong."""

    load_seconds: float = 0.0
    sync_seconds: float = 0.0
    cycles: list[CyclePhases] = field(default_factory=list)
    #: per cycle: (scheduled, unschedulable, errors)
    outcomes: list[tuple[int, int, int]] = field(default_factory=list)
    pending: int = 0
    #: objects written by the cycles (BindRequests, pod conditions, Events)
    writes: int = 0
    problems: list[str] = field(default_factory=list)


def run(nodes: int, pods: int, profile=None, cycles: int = 2) -> QueuesRun:
    """Load the scenario into a fresh embedded cluster, sync a scheduler built as ``kai-cli run
    scheduler`` builds it, then run and time ``cycles`` cycles (``profile``, a cProfile.Profile,
    covers the cycles only)."""
    import kai_core.scheduler.cycle as cycle_module
    from kai_cli.main import _plugin_manager
    from kai_cli.runner import embedded_components
    from kai_core.api.features import FeatureGates
    from kai_core.cluster import EmbeddedCluster
    from kai_core.runtime import tune_gc
    from kai_core.scheduler.cycle import SchedulerConfig

    out = QueuesRun()
    pm = _plugin_manager()
    gates = FeatureGates.parse("")
    cluster = EmbeddedCluster(pm)
    store = cluster.store
    t0 = time.perf_counter()
    for obj in generate(nodes, pods):
        store.restore(obj)
    out.load_seconds = time.perf_counter() - t0
    tune_gc()  # as kai-cli run does
    scheduler, _binder, _clock = embedded_components(cluster, pm, gates, SchedulerConfig(SCHEDULER_NAME, gates),
                                                     until_idle=False, binder=None)
    t0 = time.perf_counter()
    scheduler.cache.sync()
    out.sync_seconds = time.perf_counter() - t0
    out.pending = len(scheduler.cache.pod_index.unbound)
    current: list[CyclePhases] = [CyclePhases()]
    restore = _instrument(scheduler, cycle_module, current)
    writes = store.writes
    try:
        for _ in range(cycles):
            current[0] = phases = CyclePhases()
            if profile is not None:
                profile.enable()
            start = time.perf_counter()
            try:
                result = scheduler.run_cycle()
            finally:
                spent = time.perf_counter() - start
                if profile is not None:
                    profile.disable()
            phases.add(PH_CYCLE, spent)
            known = sum(phases.seconds.get(p, 0.0) for p in PARTS)
            phases.seconds[PH_OTHER] = max(0.0, spent - known)
            out.cycles.append(phases)
            out.outcomes.append((result.scheduled, result.unschedulable, result.errors))
    finally:
        restore()
        scheduler.close()
    out.writes = store.writes - writes
    out.problems = check(store)
    return out


def _instrument(scheduler, cycle_module, current: list[CyclePhases]):
    """Time the cycle's phases into ``current[0]`` (instance attributes and the cycle module's
    names, put back by the function returned)."""
    perf = time.perf_counter
    module_names = {}

    def timed(inner, phase):
        def call(*args, **kwargs):
            t0 = perf()
            try:
                return inner(*args, **kwargs)
            finally:
                current[0].add(phase, perf() - t0)
        return call

    for attr, phase in (("order_pending", PH_ORDER), ("find_gangs", PH_GANGS),
                        ("report_unschedulable", PH_REPORT)):
        module_names[attr] = getattr(cycle_module, attr)
        setattr(cycle_module, attr, timed(module_names[attr], phase))
    snapshot_cls = module_names["Snapshot"] = cycle_module.Snapshot

    class TimedSnapshot(snapshot_cls):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs) -> None:
            t0 = perf()
            super().__init__(*args, **kwargs)
            current[0].add(PH_SNAPSHOT, perf() - t0)

    cycle_module.Snapshot = TimedSnapshot
    for owner, attr, phase in ((scheduler.cache, "sync", PH_SYNC), (scheduler.gangs, "place", PH_PLACE),
                               (scheduler, "_run_actions", PH_ACTIONS), (scheduler, "decide", PH_DECIDE),
                               (scheduler, "pre_filter", PH_PRE_FILTER), (scheduler.bind_requests, "write", PH_WRITE),
                               (scheduler.bind_requests, "write_later", PH_WRITE)):
        inner = getattr(owner, attr, None)
        if inner is not None:
            setattr(owner, attr, timed(inner, phase))

    def restore() -> None:
        for attr, value in module_names.items():
            setattr(cycle_module, attr, value)

    return restore


def check(store) -> list[str]:
    """What is wrong after the cycles: a node given more than it has (bound pods and BindRequests
    counted), or a gang placed short of its ``minMember``."""
    from kai_core.api.resources import (
        RES_BIND_REQUESTS,
        RES_NODES,
        RES_POD_GROUPS,
        RES_PODS,
        node_allocatable,
        pod_requests,
    )

    pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in store.list_refs(RES_PODS)[0]}
    where = {k: p["spec"].get("nodeName") for k, p in pods.items() if p["spec"].get("nodeName")}
    for br in store.list_refs(RES_BIND_REQUESTS)[0]:
        key = (br["metadata"]["namespace"], br["spec"]["podName"])
        where.setdefault(key, br["spec"]["selectedNode"])
    used: dict[str, dict[str, int]] = {}
    for key, node in where.items():
        acc = used.setdefault(node, {"pods": 0})
        acc["pods"] += 1000
        for k, v in pod_requests(pods[key]).items():
            acc[k] = acc.get(k, 0) + v
    problems = []
    for n in store.list_refs(RES_NODES)[0]:
        alloc = node_allocatable(n)
        for k, v in used.get(n["metadata"]["name"], {}).items():
            if v > alloc.get(k, 0):
                problems.append(f"node {n['metadata']['name']}: {k} over capacity ({v} > {alloc.get(k, 0)} milli)")
    placed: dict[tuple[str, str], int] = {}
    for key in where:
        group = pods[key]["metadata"]["annotations"]["pod-group-name"]
        placed[(key[0], group)] = placed.get((key[0], group), 0) + 1
    for pg in store.list_refs(RES_POD_GROUPS)[0]:
        key = (pg["metadata"]["namespace"], pg["metadata"]["name"])
        if 0 < placed.get(key, 0) < pg["spec"]["minMember"]:
            problems.append(f"PodGroup {key[0]}/{key[1]}: {placed[key]} of minMember {pg['spec']['minMember']} placed")
    return problems
