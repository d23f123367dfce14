"""``kai-cli bench``: how fast the scheduler and binder are, and where the time goes.

Each scenario is generated in memory, loaded into a fresh embedded cluster, and run with the
embedded controllers, the scheduler and the binder in this one process, in rounds, until a round
writes nothing. What is measured is what a user waits for: from the manifests being loaded to the
last pod bound. Generating and loading the objects is not counted; neither is the final round that
only finds nothing left to do.

Two ways to run a scenario. The plain names (``dra``, ``plain``, ...) run the rounds here, timed
phase by phase and plugin hook by plugin hook. The ``run-`` scenarios (``run-dra``, ``run-plain``)
go through the code path of ``kai-cli run scheduler --cluster DIR --until-idle`` instead: the
manifests are written to files and loaded as that command loads them, and
:func:`kai_cli.runner.run_scheduler_embedded` runs the rounds, so the bench and the command cannot
drift apart.

The scenarios are those of the performance issue, at full size by default (``--scale``,
``--nodes``/``--pods`` and ``--tiny`` make them smaller):

* ``dra``: 500 nodes with 8 ``gpu.nvidia.com`` GPUs each as ResourceSlices, 4,000 pods each with its
  own claim from a ResourceClaimTemplate with a CEL memory selector, filling every GPU;
* ``dra-match``: the same cluster, 2,000 pods with 2-GPU claims under a ``matchAttribute``
  constraint on ``resource.kubernetes.io/pcieRoot``, filling every GPU;
* ``plain``: 5,000 nodes, 10,000 pods asking for cpu, memory and ``nvidia.com/gpu``;
* ``snapshot``: 4,000 nodes and 140,000 pods, all but 1,000 already bound: the time to bring the
  cache up to date and build one cycle's snapshot, from cold and after a few changes;
* ``memory``: 5,000 nodes and 100,000 pods, all but 10,000 already bound: the peak resident
  memory of loading and scheduling them;
* ``queues``: 4,000 nodes with 8 GPUs each, 200 leaf queues in three levels, 140,000 pods in gangs
  of 8, half of them running and some queues over their fair share (reclaim possible): the wall
  time of one scheduling cycle, the first after the load and the next, phase by phase
  (:mod:`kai_cli.bench_queues`).

The binder is the one ``kai-cli run scheduler`` ships (:func:`kai_cli.runner.binder_options`,
embedded: one worker, a PodBound condition and an Event per pod, the node check, no client-side
rate limit: the store is in this process). ``--lean-binder`` runs the Binder's bare defaults
instead (no PodBound condition, no Event, no node check), which nothing ships. Every row names the
binder it ran with.

Besides pods/s, each row gives the CPU seconds per 1,000 pods bound of the scheduler and of the
binder (the embedded controllers apart), and the time from the start of the run to the first pod
bound.

The numbers are wall-clock times on whatever machine runs the command; tests run this at a tiny
size and check what it did, never how fast.
"""

from __future__ import annotations

import cProfile
import gc
import json
import math
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click

BENCH_NAMESPACE = "bench"
GPU_DRIVER = "gpu.nvidia.com"
GPU_CLASS = "gpu.nvidia.com"
PCIE_ROOT = "resource.kubernetes.io/pcieRoot"
SCHEDULER_NAME = "kai-scheduler"
#: a scheduler name no pod uses: the baseline run (controllers, binder and cycle overhead alone)
IDLE_SCHEDULER_NAME = "kai-bench-nobody"
MAX_ROUNDS = 200
MIB = 1024 * 1024
#: the phases of a round, in the order printed; the indented ones are parts of the scheduler cycle
PH_CONTROLLERS = "controllers (resourceclaim, ...)"
PH_CYCLE = "scheduler cycle"
PH_SYNC = "  cache sync"
PH_SNAPSHOT = "  snapshot build"
PH_DECIDE = "  decide (filter, allocate, score)"
PH_COMMIT = "  commit (BindRequest write, assume)"
PH_OTHER = "  other (queue, housekeeping, reports)"
PH_BINDER = "binder"
PHASES = (PH_CONTROLLERS, PH_CYCLE, PH_SYNC, PH_SNAPSHOT, PH_DECIDE, PH_COMMIT, PH_OTHER, PH_BINDER)
#: --growth: the fractions of a scenario's nodes, then of its pods, it is run at
GROWTH_STEPS = (0.25, 0.5, 1.0)


# -- scenarios -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One row of the issue's table: what to generate and what the target is."""

    name: str
    title: str
    nodes: int
    pods: int
    target: str
    #: "dra", "dra-match", "plain" (pods to schedule), "snapshot" / "memory" (mostly bound), or
    #: "queues" (one cycle of a cluster shared by queues, half its pods pending)
    kind: str
    #: pods already bound when the run starts (the rest are pending)
    bound: int = 0
    #: the pods/s the row must reach, when its target is a rate
    min_rate: float | None = None
    #: run through ``kai-cli run scheduler``'s code path (manifest files, runner) instead of timed rounds
    via_run: bool = False


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("dra", "500 nodes x 8 GPUs, 4,000 pods, a 1-GPU claim each (CEL memory selector)",
             500, 4000, ">= 1500 pods/s", "dra", min_rate=1500.0),
    Scenario("dra-match", "same cluster, 2,000 pods with 2-GPU claims, matchAttribute pcieRoot",
             500, 2000, ">= 500 pods/s", "dra-match", min_rate=500.0),
    Scenario("plain", "5,000 nodes, 10,000 plain pods (cpu, memory, nvidia.com/gpu)",
             5000, 10000, ">= 2000 pods/s", "plain", min_rate=2000.0),
    Scenario("run-dra", "dra through kai-cli run scheduler --cluster DIR --until-idle's code path",
             500, 4000, ">= 1500 pods/s", "dra", min_rate=1500.0, via_run=True),
    Scenario("run-plain", "plain through kai-cli run scheduler --cluster DIR --until-idle's code path",
             5000, 10000, ">= 2000 pods/s", "plain", min_rate=2000.0, via_run=True),
    Scenario("snapshot", "4,000 nodes, 140,000 pods (139,000 bound): one cycle's snapshot",
             4000, 140000, "<= 1 s; < 100 ms when little changed", "snapshot", bound=139000),
    Scenario("memory", "5,000 nodes, 100,000 pods (90,000 bound): peak memory",
             5000, 100000, "<= 2 GiB", "memory", bound=90000),
    Scenario("queues", "4,000 nodes x 8 GPUs, 200 queues in 3 levels, 140,000 pods in gangs (70,000 pending): "
             "one scheduling cycle", 4000, 140000, "<= 1 s per cycle", "queues", bound=70000),
)}

#: --tiny: each scenario scaled down to this many nodes (pods in proportion), enough to exercise it
TINY_NODES = 4


def sized(sc: Scenario, scale: float = 1.0, nodes: int | None = None, pods: int | None = None) -> Scenario:
    """``sc`` at another size: ``scale`` times its nodes and pods (bound pods in proportion), then
    ``nodes``/``pods`` where given. The DRA scenarios keep their pods within the GPUs there are."""
    n = nodes if nodes is not None else max(1, round(sc.nodes * scale))
    p = pods if pods is not None else max(1, round(sc.pods * scale))
    bound = min(p - 1, round(sc.bound * p / sc.pods)) if sc.bound else 0
    return Scenario(sc.name, sc.title, n, p, sc.target, sc.kind, max(bound, 0), sc.min_rate, sc.via_run)


def _node(index: int, cpu: str, memory: str, gpus: int | None, pods: int = 110) -> dict:
    name = _node_name(index)
    allocatable = {"cpu": cpu, "memory": memory, "pods": str(pods)}
    if gpus:
        allocatable["nvidia.com/gpu"] = str(gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kai.bench/zone": f"z{index % 4}"}},
        "status": {
            "capacity": dict(allocatable),
            "allocatable": allocatable,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }


def _pod(name: str, requests: dict, limits: dict | None = None, claims: list[dict] | None = None,
         node: str | None = None) -> dict:
    container: dict = {"name": "main", "image": "registry.example/bench:1", "resources": {"requests": requests}}
    if limits:
        container["resources"]["limits"] = limits
    spec: dict = {"schedulerName": SCHEDULER_NAME, "containers": [container]}
    if claims:
        container["resources"]["claims"] = [{"name": c["name"]} for c in claims]
        spec["resourceClaims"] = claims
    pod: dict = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": BENCH_NAMESPACE, "labels": {"app": "bench"}},
        "spec": spec,
    }
    if node is not None:
        spec["nodeName"] = node
        pod["status"] = {"phase": "Running"}
    return pod


def _node_name(i: int) -> str:
    return f"node-{i:05d}"


def _pod_name(i: int) -> str:
    return f"pod-{i:06d}"


def _claim_template(name: str, count: int, match_pcie_root: bool) -> dict:
    body: dict = {
        "deviceClassName": GPU_CLASS,
        "selectors": [{"cel": {"expression":
                               f"device.capacity['{GPU_DRIVER}'].memory.compareTo(quantity('40Gi')) >= 0"}}],
    }
    if count != 1:
        body["count"] = count
    devices: dict = {"requests": [{"name": "gpu", "exactly": body}]}
    if match_pcie_root:
        devices["constraints"] = [{"matchAttribute": PCIE_ROOT}]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name, "namespace": BENCH_NAMESPACE},
        "spec": {"spec": {"devices": devices}},
    }


def generate(sc: Scenario) -> Iterator[dict]:
    """The scenario's objects, one at a time (so a large one is never held twice in memory)."""
    from kai_core.dra.testing import device_class, gpu_slice

    if sc.kind == "queues":
        from kai_cli.bench_queues import generate as queues_scenario

        yield from queues_scenario(sc.nodes, sc.pods)
        return
    yield {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": BENCH_NAMESPACE}}
    if sc.kind in ("dra", "dra-match"):
        yield device_class(GPU_CLASS, f"device.driver == '{GPU_DRIVER}' && "
                                      f"device.attributes['{GPU_DRIVER}'].type == 'gpu'")
        count = 2 if sc.kind == "dra-match" else 1
        yield _claim_template("gpu", count, match_pcie_root=sc.kind == "dra-match")
        for i in range(sc.nodes):
            yield _node(i, "64", "512Gi", None)
            yield gpu_slice(_node_name(i), count=8)
        for i in range(sc.pods):
            yield _pod(_pod_name(i), {"cpu": "1", "memory": "4Gi"},
                       claims=[{"name": "gpu", "resourceClaimTemplateName": "gpu"}])
        return
    if sc.kind == "plain":
        for i in range(sc.nodes):
            yield _node(i, "64", "256Gi", 8)
        for i in range(sc.pods):
            yield _pod(_pod_name(i), {"cpu": "2", "memory": "8Gi"}, limits={"nvidia.com/gpu": "1"})
        return
    # snapshot / memory: a large cluster, mostly bound already
    for i in range(sc.nodes):
        yield _node(i, "128", "1Ti", 8)
    for i in range(sc.pods):
        node = _node_name(i % sc.nodes) if i < sc.bound else None
        yield _pod(_pod_name(i), {"cpu": "500m", "memory": "1Gi"}, node=node)


# -- measuring -----------------------------------------------------------------------------------


def _reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """This process's peak resident memory since the last reset (else since it started)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by the nearest-rank method; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Timer:
    """Calls and seconds spent in one phase or one plugin hook."""

    calls: int = 0
    seconds: float = 0.0
    cpu: float = 0.0

    def add(self, seconds: float, cpu: float = 0.0) -> None:
        self.calls += 1
        self.seconds += seconds
        self.cpu += cpu


@dataclass
class Result:
    """What one scenario run measured."""

    scenario: str
    nodes: int
    pods: int
    to_schedule: int
    bound: int = 0
    seconds: float = 0.0
    decide_seconds: float = 0.0
    rounds: int = 0
    cycles: list[float] = field(default_factory=list)
    attempts: list[float] = field(default_factory=list)
    phases: dict[str, Timer] = field(default_factory=dict)
    plugins: dict[str, Timer] = field(default_factory=dict)
    peak_rss: int = 0
    writes: int = 0
    load_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    #: snapshot scenario: cache sync + snapshot build, from cold and after a few changes
    snapshot_cold: float | None = None
    snapshot_warm: float | None = None
    target: str = ""
    met: bool | None = None
    #: which binder ran: "shipped" (what kai-cli run ships) or "lean" (--lean-binder)
    binder: str = "shipped"
    #: seconds from the start of the run to the first pod bound (None: none was)
    first_bound: float | None = None
    #: queues scenario: each timed cycle's phases, as ``{phase: (calls, seconds)}``
    cycle_phases: list[dict[str, tuple[int, float]]] = field(default_factory=list)

    def timers_state(self) -> dict:
        """The phase and plugin timers as they are now, to go back to with :meth:`restore_timers`."""
        return {name: (t.calls, t.seconds, t.cpu) for group in (self.phases, self.plugins)
                for name, t in group.items()}

    def restore_timers(self, state: dict) -> None:
        for group in (self.phases, self.plugins):
            for name, t in group.items():
                t.calls, t.seconds, t.cpu = state.get(name, (0, 0.0, 0.0))

    def cpu_per_1000(self, phase: str) -> float | None:
        """CPU seconds of ``phase`` per 1,000 pods bound (None when nothing was bound or timed)."""
        t = self.phases.get(phase)
        return t.cpu * 1000 / self.bound if t is not None and self.bound else None

    @property
    def rate(self) -> float:
        return self.bound / self.seconds if self.seconds > 0 else 0.0

    @property
    def decide_rate(self) -> float:
        return self.bound / self.decide_seconds if self.decide_seconds > 0 else 0.0

    @property
    def writes_per_pod(self) -> float:
        return self.writes / self.bound if self.bound else 0.0

    def as_dict(self) -> dict:
        return {
            "scenario": self.scenario, "nodes": self.nodes, "pods": self.pods, "to_schedule": self.to_schedule,
            "bound": self.bound, "seconds": self.seconds, "pods_per_second": self.rate,
            "decision_pods_per_second": self.decide_rate, "rounds": self.rounds,
            "cycle_p50": percentile(self.cycles, 0.5), "cycle_p99": percentile(self.cycles, 0.99),
            "attempt_p50": percentile(self.attempts, 0.5), "attempt_p99": percentile(self.attempts, 0.99),
            "phases": {k: {"calls": t.calls, "seconds": t.seconds} for k, t in self.phases.items()},
            "plugins": {k: {"calls": t.calls, "seconds": t.seconds} for k, t in self.plugins.items()},
            "peak_rss_bytes": self.peak_rss, "writes": self.writes, "writes_per_pod": self.writes_per_pod,
            "load_seconds": self.load_seconds, "snapshot_cold": self.snapshot_cold,
            "snapshot_warm": self.snapshot_warm, "target": self.target, "met": self.met,
            "problems": self.problems, "binder": self.binder, "first_bound_seconds": self.first_bound,
            "cycle_phases": [{k: {"calls": c, "seconds": s} for k, (c, s) in p.items()} for p in self.cycle_phases],
            "cpu_per_1000_pods": {"scheduler": self.cpu_per_1000(PH_CYCLE), "binder": self.cpu_per_1000(PH_BINDER),
                                  "controllers": self.cpu_per_1000(PH_CONTROLLERS)},
        }


class _Instruments:
    """Timing wrappers set on one scheduler, binder and plugin manager for the run (instance
    attributes only: the classes are untouched, and nothing outlives the run)."""

    def __init__(self, result: Result) -> None:
        self.result = result
        self.perf = time.perf_counter

    def phase(self, name: str) -> Timer:
        timer = self.result.phases.get(name)
        if timer is None:
            timer = self.result.phases[name] = Timer()
        return timer

    def wrap(self, owner: object, attr: str, phase: str, on_done: Callable[[float], None] | None = None) -> None:
        """Time every call of ``owner.attr`` into ``phase`` (nothing when there is no such method:
        the phase then reads 0)."""
        inner = getattr(owner, attr, None)
        if inner is None:
            return
        timer = self.phase(phase)
        perf = self.perf

        def timed(*args, **kwargs):
            start = perf()
            try:
                return inner(*args, **kwargs)
            finally:
                spent = perf() - start
                timer.add(spent)
                if on_done is not None:
                    on_done(spent)

        setattr(owner, attr, timed)

    def plugins(self, pm) -> None:
        inner = pm.call_impl
        timers = self.result.plugins
        perf = self.perf

        def call_impl(impl, hook: str, kwargs: dict):
            start = perf()
            try:
                return inner(impl, hook, kwargs)
            finally:
                key = f"{impl.plugin_name} {hook}"
                timer = timers.get(key)
                if timer is None:
                    timer = timers[key] = Timer()
                timer.add(perf() - start)

        pm.call_impl = call_impl


def _snapshot_class():
    """The Snapshot class the cycle builds, timed (``None`` when the cycle module has none)."""
    import kai_core.scheduler.cycle as cycle_module

    return getattr(cycle_module, "Snapshot", None)


def run_scenario(sc: Scenario, *, scheduler_name: str = SCHEDULER_NAME, profile: cProfile.Profile | None = None,
                 check: bool = True, lean_binder: bool = False) -> Result:
    """Generate ``sc``, load it into a fresh embedded cluster, run it until idle and measure.

    The binder is the one ``kai-cli run scheduler`` ships (:func:`kai_cli.runner.binder_options`)
    unless ``lean_binder``: then the Binder's bare defaults (no PodBound condition or Event, no
    node check). Either way without a client-side rate limit. ``sc.via_run`` scenarios go
    through ``kai-cli run scheduler``'s code path (see :func:`_run_via_cli_path`)."""
    from kai_cli.runner import binder_options

    result = Result(sc.name, sc.nodes, sc.pods, sc.pods - sc.bound, target=sc.target,
                    binder="lean" if lean_binder else "shipped")
    if sc.kind == "queues":
        return _run_queues(sc, result, profile)
    binder_kwargs = {"qps": 0, "scheduler_names": [scheduler_name]} if lean_binder else binder_options(
        embedded=True, scheduler_names=[scheduler_name])
    gc.collect()
    _reset_peak_rss()
    if sc.via_run:
        store = _run_via_cli_path(sc, result, scheduler_name, binder_kwargs, profile)
    else:
        store = _run_rounds(sc, result, scheduler_name, binder_kwargs, profile)
    result.peak_rss = peak_rss_bytes()
    result.bound, result.problems = verify(store, scheduler_name, check=check)
    result.bound -= sc.bound
    result.met = _met(sc, result)
    return result


def _run_queues(sc: Scenario, result: Result, profile: cProfile.Profile | None) -> Result:
    """The queues scenario: two cycles timed phase by phase (no binder: see :mod:`kai_cli.bench_queues`)."""
    from kai_cli.bench_queues import run as run_queues

    result.binder = "none"
    gc.collect()
    _reset_peak_rss()
    run = run_queues(sc.nodes, sc.pods, profile=profile)
    result.peak_rss = peak_rss_bytes()
    result.load_seconds = run.load_seconds + run.sync_seconds
    result.to_schedule = run.pending
    result.cycles = [c.seconds[PH_CYCLE] for c in run.cycles]
    result.seconds = sum(result.cycles)
    result.rounds = len(run.cycles)
    result.bound = sum(scheduled for scheduled, _, _ in run.outcomes)
    result.writes = run.writes
    result.cycle_phases = [{p: (c.calls.get(p, 1), s) for p, s in c.seconds.items()} for c in run.cycles]
    result.problems = run.problems + [f"cycle {i + 1}: {errors} pod(s) hit an error"
                                      for i, (_, _, errors) in enumerate(run.outcomes) if errors]
    result.met = not result.problems and max(result.cycles) <= 1.0
    return result


def _first_bound(store, result: Result, start: list[float]):
    """Record in ``result.first_bound`` when the store's first binding happens, counted from
    ``start[0]`` (set by the caller when the run starts); returns the wrapper set on ``store``
    (an instance attribute: the class is untouched)."""
    inner = store.bind

    def bind(*args, **kwargs):
        out = inner(*args, **kwargs)
        if result.first_bound is None:
            result.first_bound = time.perf_counter() - start[0]
        return out

    store.bind = bind
    return bind


def _run_via_cli_path(sc: Scenario, result: Result, scheduler_name: str, binder_kwargs: dict,
                      profile: cProfile.Profile | None):
    """``kai-cli run scheduler --cluster DIR --feature-gates=DynamicResourceAllocation=true
    --until-idle``, minus its printing: the scenario written as manifest files, loaded by
    ``EmbeddedCluster.load``, run by :func:`kai_cli.runner.run_scheduler_embedded` with the same
    plugin manager, scheduler config and binder options. Loading is timed apart, as ``load``."""
    import tempfile

    import yaml

    from kai_cli.main import _embedded_cluster, _plugin_manager
    from kai_cli.runner import run_scheduler_embedded
    from kai_core.api.features import FeatureGates
    from kai_core.runtime import tune_gc
    from kai_core.scheduler.cycle import SchedulerConfig

    gates = FeatureGates.parse("DynamicResourceAllocation=true")
    with tempfile.TemporaryDirectory(prefix="kai-bench-") as tmp:
        path = Path(tmp) / "cluster.yaml"
        with path.open("w") as f:
            yaml.dump_all(generate(sc), f, Dumper=yaml.CSafeDumper)
        pm = _plugin_manager()
        start = time.perf_counter()
        cluster = _embedded_cluster(pm, str(path))
        result.load_seconds = time.perf_counter() - start
    tune_gc()  # as kai-cli run does
    store = cluster.store
    run_start = [0.0]
    _first_bound(store, result, run_start)
    writes_before = store.writes
    run_start[0] = time.perf_counter()
    if profile is not None:
        profile.enable()
    try:
        summary = run_scheduler_embedded(cluster, pm, gates, SchedulerConfig(scheduler_name, gates),
                                         until_idle=True, binder=binder_kwargs)
    finally:
        if profile is not None:
            profile.disable()
    result.seconds, result.rounds = summary.seconds, summary.rounds
    result.writes = store.writes - writes_before
    for phase, component in ((PH_CONTROLLERS, "controllers"), (PH_CYCLE, "scheduler"), (PH_BINDER, "binder")):
        if component in summary.wall:
            result.phases[phase] = Timer(summary.rounds, summary.wall[component], summary.cpu[component])
    return store


def _run_rounds(sc: Scenario, result: Result, scheduler_name: str, binder_kwargs: dict,
                profile: cProfile.Profile | None):
    """The scenario's rounds run here, each phase and plugin hook timed."""
    import kai_core.scheduler.cycle as cycle_module
    from kai_binder.binder import Binder, add_binder_hookspecs
    from kai_core.api.features import FeatureGates
    from kai_core.cluster import EmbeddedCluster
    from kai_core.plugins import build_plugin_manager
    from kai_core.runtime import tune_gc
    from kai_core.scheduler.cycle import Scheduler, SchedulerConfig

    pm = build_plugin_manager()
    add_binder_hookspecs(pm)
    gates = FeatureGates.parse("DynamicResourceAllocation=true")
    cluster = EmbeddedCluster(pm)
    store = cluster.store
    start = time.perf_counter()
    for obj in generate(sc):
        store.restore(obj)
    result.load_seconds = time.perf_counter() - start
    scheduler = Scheduler(store, pm, SchedulerConfig(scheduler_name, gates))
    binder = Binder(store, pm, gates, **binder_kwargs)

    tune_gc()  # as kai-cli run does
    if sc.kind == "snapshot":
        _measure_snapshot(sc, scheduler, store, result)
    ins = _Instruments(result)
    ins.plugins(pm)
    ins.wrap(scheduler, "decide", PH_DECIDE, result.attempts.append)
    ins.wrap(scheduler, "_commit", PH_COMMIT)
    ins.wrap(scheduler.cache, "sync", PH_SYNC)
    snapshot_cls = _snapshot_class()
    if snapshot_cls is not None:
        timer = ins.phase(PH_SNAPSHOT)

        class TimedSnapshot(snapshot_cls):  # type: ignore[misc, valid-type]
            def __init__(self, *args, **kwargs) -> None:
                t0 = time.perf_counter()
                super().__init__(*args, **kwargs)
                timer.add(time.perf_counter() - t0)

        cycle_module.Snapshot = TimedSnapshot  # type: ignore[misc]
    run_start = [0.0]
    _first_bound(store, result, run_start)
    writes_before = store.writes
    controllers, cycle, binding = ins.phase(PH_CONTROLLERS), ins.phase(PH_CYCLE), ins.phase(PH_BINDER)
    perf, process = time.perf_counter, time.process_time
    last_change = run_start[0] = perf()
    try:
        if profile is not None:
            profile.enable()
        for _ in range(MAX_ROUNDS):
            before = store.resource_version
            kept, attempts, first = result.timers_state(), len(result.attempts), result.first_bound
            t0, c0 = perf(), process()
            cluster.reconcile_controllers()
            t1, c1 = perf(), process()
            scheduler.run_cycle()
            t2, c2 = perf(), process()
            binder.run_once()
            t3, c3 = perf(), process()
            controllers.add(t1 - t0, c1 - c0)
            cycle.add(t2 - t1, c2 - c1)
            result.cycles.append(t2 - t1)
            binding.add(t3 - t2, c3 - c2)
            result.rounds += 1
            if store.resource_version == before:
                result.restore_timers(kept)  # the round that found nothing to do is not counted
                result.cycles.pop()
                del result.attempts[attempts:]
                result.first_bound = first
                break
            last_change = t3
    finally:
        if profile is not None:
            profile.disable()
        if snapshot_cls is not None:
            cycle_module.Snapshot = snapshot_cls  # type: ignore[misc]
        binder.close()
    result.seconds = last_change - run_start[0]
    result.writes = store.writes - writes_before
    result.decide_seconds = result.phases[PH_DECIDE].seconds if PH_DECIDE in result.phases else 0.0
    parts = sum(result.phases[p].seconds for p in (PH_SYNC, PH_SNAPSHOT, PH_DECIDE, PH_COMMIT) if p in result.phases)
    result.phases[PH_OTHER] = Timer(result.phases[PH_CYCLE].calls, max(0.0, result.phases[PH_CYCLE].seconds - parts))
    return store


def _measure_snapshot(sc: Scenario, scheduler, store, result: Result) -> None:
    """Cache sync + snapshot build from cold (first cycle), then after a few pods changed."""
    from kai_core.api.resources import RES_PODS
    from kai_core.framework.snapshot import Snapshot

    cfg = scheduler.config
    t0 = time.perf_counter()
    scheduler.cache.sync()
    Snapshot(scheduler.cache, cfg.scheduler_name, cfg.features).pending_pods()
    result.snapshot_cold = time.perf_counter() - t0
    changed = max(1, sc.pods // 1000)  # 0.1% of the pods: a quiet cluster between two cycles
    for i in range(changed):
        store.delete(RES_PODS, _pod_name(i), BENCH_NAMESPACE)
        store.restore(_pod(f"new-{i:06d}", {"cpu": "500m", "memory": "1Gi"}, node=_node_name(i % sc.nodes)))
    t0 = time.perf_counter()
    scheduler.cache.sync()
    Snapshot(scheduler.cache, cfg.scheduler_name, cfg.features).pending_pods()
    result.snapshot_warm = time.perf_counter() - t0


def _met(sc: Scenario, r: Result) -> bool | None:
    if r.problems:
        return False
    if sc.min_rate is not None:
        return r.rate >= sc.min_rate
    if sc.kind == "snapshot" and r.snapshot_cold is not None and r.snapshot_warm is not None:
        return r.snapshot_cold <= 1.0 and r.snapshot_warm < 0.1
    if sc.kind == "memory":
        return r.peak_rss <= 2 * 1024 * MIB
    return None


def verify(store, scheduler_name: str, check: bool = True) -> tuple[int, list[str]]:
    """How many of the scheduler's pods are bound, and what is wrong with the outcome: a pod not
    bound, a device in two claims, a claim allocated on another node than its pod's, a node given
    more cpu, memory, GPUs or pods than it has."""
    from kai_core.api.resources import RES_CLAIMS, RES_NODES, RES_PODS, node_allocatable, pod_requests

    pods, _ = store.list_refs(RES_PODS)
    mine = [p for p in pods if p["spec"].get("schedulerName") == scheduler_name]
    bound = sum(1 for p in mine if p["spec"].get("nodeName"))
    if not check:
        return bound, []
    problems: list[str] = []
    unbound = [p["metadata"]["name"] for p in mine if not p["spec"].get("nodeName")]
    if unbound:
        problems.append(f"{len(unbound)} pod(s) not bound, e.g. {', '.join(unbound[:3])}")
    node_of = {(p["metadata"]["namespace"], p["metadata"]["name"]): p["spec"].get("nodeName") for p in pods}
    seen: dict[tuple, str] = {}
    claims, _ = store.list_refs(RES_CLAIMS)
    for c in claims:
        md = c["metadata"]
        alloc = (c.get("status") or {}).get("allocation") or {}
        for r in (alloc.get("devices") or {}).get("results") or []:
            dev = (r.get("driver"), r.get("pool"), r.get("device"))
            other = seen.setdefault(dev, md["name"])
            if other != md["name"]:
                problems.append(f"device {'/'.join(map(str, dev))} in claims {other} and {md['name']}")
        for ref in (c.get("status") or {}).get("reservedFor") or []:
            node = node_of.get((md["namespace"], ref.get("name")))
            pools = {r.get("pool") for r in (alloc.get("devices") or {}).get("results") or []}
            if node and pools and pools != {node}:
                problems.append(f"claim {md['name']}: devices of {sorted(pools)} for a pod on {node}")
    used: dict[str, dict[str, int]] = {}
    for p in pods:
        node = p["spec"].get("nodeName")
        if node and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            acc = used.setdefault(node, {"pods": 0})
            acc["pods"] += 1000
            for k, v in pod_requests(p).items():
                acc[k] = acc.get(k, 0) + v
    nodes, _ = store.list_refs(RES_NODES)
    for n in nodes:
        alloc = node_allocatable(n)
        for k, v in used.get(n["metadata"]["name"], {}).items():
            if v > alloc.get(k, 0):
                problems.append(f"node {n['metadata']['name']}: {k} over capacity ({v} > {alloc.get(k, 0)} milli)")
    return bound, problems


def growth_exponent(points: list[tuple[float, float]]) -> float:
    """The least-squares slope of log(time) against log(size): time grows as size**slope."""
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(max(y, 1e-9)) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


# -- printing ------------------------------------------------------------------------------------


def _table(rows: list[list[str]], right: set[int] | None = None) -> str:
    right = right or set()
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


SUMMARY_HEADER = ["SCENARIO", "BINDER", "NODES", "PODS", "BOUND", "SECONDS", "PODS/S", "FIRST BOUND S",
                  "CPU S/1K PODS SCHED+BINDER", "DECIDE PODS/S", "CYCLE P50/P99 MS", "POD P50/P99 MS", "ROUNDS",
                  "PEAK RSS MIB", "WRITES/POD", "TARGET", "MET"]


def _figure(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def summary_table(results: list[Result]) -> str:
    """One line per scenario: the figures the issue's table asks for."""
    rows = [SUMMARY_HEADER]
    for r in results:
        target = r.target
        if r.snapshot_cold is not None:
            target += f" (cold {r.snapshot_cold * 1000:.0f} ms, warm {(r.snapshot_warm or 0) * 1000:.0f} ms)"
        if r.cycle_phases:
            target += " (" + ", ".join(f"cycle {i + 1} {s * 1000:.0f} ms" for i, s in enumerate(r.cycles)) + ")"
        timed = bool(r.cycles)  # the run-* scenarios time whole rounds, not cycles or pods
        rows.append([
            r.scenario, r.binder, str(r.nodes), str(r.pods), f"{r.bound}/{r.to_schedule}", f"{r.seconds:.3f}",
            f"{r.rate:.1f}", _figure(r.first_bound, ".3f"),
            f"{_figure(r.cpu_per_1000(PH_CYCLE), '.2f')}+{_figure(r.cpu_per_1000(PH_BINDER), '.2f')}",
            f"{r.decide_rate:.1f}" if timed else "-",
            f"{percentile(r.cycles, 0.5) * 1000:.1f}/{percentile(r.cycles, 0.99) * 1000:.1f}" if timed else "-",
            f"{percentile(r.attempts, 0.5) * 1000:.2f}/{percentile(r.attempts, 0.99) * 1000:.2f}" if timed else "-",
            str(r.rounds), f"{r.peak_rss / MIB:.0f}", f"{r.writes_per_pod:.2f}", target,
            {True: "yes", False: "NO", None: "-"}[r.met],
        ])
    return _table(rows, right=set(range(2, 15)))


def breakdown_table(r: Result) -> str:
    """Where one scenario's time went: each phase, then each plugin hook, with its share (the
    queues scenario: each phase of each cycle)."""
    if r.cycle_phases:
        from kai_cli.bench_queues import PHASES as CYCLE_PHASES

        rows = [["PHASE", *(f"CYCLE {i + 1} S (CALLS)" for i in range(len(r.cycle_phases)))]]
        for name in CYCLE_PHASES:
            if any(name in p for p in r.cycle_phases):
                rows.append([name, *(_phase_cell(p.get(name)) for p in r.cycle_phases)])
        return _table(rows, right=set(range(1, len(rows[0]))))
    total = r.seconds or 1.0
    rows = [["PHASE / PLUGIN HOOK", "CALLS", "SECONDS", "SHARE", "CPU S"]]
    for name in PHASES:
        t = r.phases.get(name)
        if t is not None:
            cpu = f"{t.cpu:.3f}" if name in (PH_CONTROLLERS, PH_CYCLE, PH_BINDER) else ""
            rows.append([name, str(t.calls), f"{t.seconds:.3f}", f"{100 * t.seconds / total:.1f}%", cpu])
    for name, t in sorted(r.plugins.items(), key=lambda kv: -kv[1].seconds):
        rows.append([f"  plugin {name}", str(t.calls), f"{t.seconds:.3f}", f"{100 * t.seconds / total:.1f}%", ""])
    return _table(rows, right={1, 2, 3, 4})


def _phase_cell(timed: tuple[int, float] | None) -> str:
    if timed is None:
        return "-"
    calls, seconds = timed
    return f"{seconds:.3f}" + (f" ({calls})" if calls > 1 else "")


# -- the command ---------------------------------------------------------------------------------


@click.command("bench")
@click.option("--scenario", "scenarios", multiple=True, type=click.Choice(["all", *SCENARIOS]), default=("all",),
              show_default=True, help="Scenario(s) to run (repeatable).")
@click.option("--scale", type=click.FloatRange(min=0.0, min_open=True), default=1.0, show_default=True,
              help="Run each scenario at this fraction (or multiple) of its full size.")
@click.option("--nodes", type=click.IntRange(min=1), help="Nodes, instead of the scenario's (scaled) count.")
@click.option("--pods", type=click.IntRange(min=1), help="Pods, instead of the scenario's (scaled) count.")
@click.option("--tiny", is_flag=True, help=f"Every scenario at {TINY_NODES} nodes (for CI: checks it works).")
@click.option("--growth", is_flag=True,
              help="Also run each throughput scenario at 1/4 and 1/2 of its nodes, then of its pods, and "
                   "print the exponent of time in nodes and in pods.")
@click.option("--baseline", is_flag=True,
              help="Also run each scenario with a scheduler name no pod uses (the fixed cost of the loop).")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False),
              help="Write a cProfile profile of the measured part to this file (one per scenario when "
                   "several run: FILE gets the scenario name before its suffix).")
@click.option("--lean-binder", is_flag=True,
              help="Run the Binder's bare defaults (no PodBound condition or Event per pod, no node check), "
                   "which nothing ships, instead of the binder kai-cli run uses.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of tables.")
@click.option("--write-manifests", "manifests_dir", type=click.Path(file_okay=False),
              help="Write each scenario's manifests to DIR/<scenario>.yaml (at the size asked) and run nothing: "
                   "kai-cli run scheduler --cluster DIR/<scenario>.yaml --until-idle then runs it as a user would.")
def bench(scenarios, scale, nodes, pods, tiny, growth, baseline, profile_path, lean_binder, as_json,
          manifests_dir) -> None:
    """Measure scheduling throughput on the embedded cluster (scheduler and binder in one process),
    with the binder kai-cli run ships unless --lean-binder.

    Prints, per scenario: the binder, pods/s from manifests loaded to the last pod bound, the time
    to the first pod bound, CPU seconds per 1,000 pods of the scheduler and of the binder, pods/s
    of the decisions alone, scheduler cycle and per-pod latency (p50/p99), rounds, peak RSS,
    writes per pod and the target; then where the time went, per phase and per plugin hook. The
    run-* scenarios go through kai-cli run scheduler's own code path. Exits 1 when a run did not
    end with every pod bound and no device or node given out twice.
    """
    names = list(SCENARIOS) if "all" in scenarios else list(dict.fromkeys(scenarios))
    if (nodes or pods) and len(names) > 1:
        raise click.UsageError("--nodes/--pods size one scenario: pick it with --scenario")
    if tiny and (nodes or pods or scale != 1.0):
        raise click.UsageError("--tiny sets the size itself: leave out --scale, --nodes and --pods")
    if profile_path and not Path(profile_path).resolve().parent.is_dir():
        # found now, not after minutes of benchmarking
        raise click.UsageError(f"--profile {profile_path}: directory {Path(profile_path).resolve().parent} "
                               "does not exist")
    if manifests_dir is not None:
        _write_manifests(names, manifests_dir, tiny, scale, nodes, pods)
        return
    results: list[Result] = []
    growth_lines: list[str] = []
    for name in names:
        base = SCENARIOS[name]
        sc = sized(base, TINY_NODES / base.nodes) if tiny else sized(base, scale, nodes, pods)
        if sc.kind in ("dra", "dra-match") and sc.pods * (2 if sc.kind == "dra-match" else 1) > sc.nodes * 8:
            raise click.UsageError(f"{name}: {sc.pods} pods need more GPUs than {sc.nodes} nodes x 8 have")
        profile = cProfile.Profile() if profile_path else None
        if not as_json:
            click.echo(f"running {name}: {sc.title} at {sc.nodes} nodes, {sc.pods} pods ...", err=True)
        r = run_scenario(sc, profile=profile, lean_binder=lean_binder)
        results.append(r)
        if profile is not None:
            path = Path(profile_path)
            if len(names) > 1:
                path = path.with_name(f"{path.stem}-{name}{path.suffix}")
            try:
                profile.dump_stats(str(path))
            except OSError as exc:
                raise click.UsageError(f"--profile {path}: cannot write: {exc.strerror or exc}") from None
            if not as_json:
                click.echo(f"profile of {name} written to {path} (python -m pstats {path})", err=True)
        if baseline and sc.kind != "queues":  # no pod of that scenario is placed by another scheduler
            idle = run_scenario(sc, scheduler_name=IDLE_SCHEDULER_NAME, check=False, lean_binder=lean_binder)
            idle.scenario = f"{name} (baseline)"
            results.append(idle)
        if growth and sc.min_rate is not None:
            growth_lines.append(_growth(sc))
    if as_json:
        click.echo(json.dumps({"results": [r.as_dict() for r in results], "growth": growth_lines}, indent=2))
    else:
        click.echo(summary_table(results))
        for r in results:
            click.echo(f"\n{r.scenario}: {r.seconds:.3f}s measured (load {r.load_seconds:.1f}s not counted)")
            click.echo(breakdown_table(r))
            for p in r.problems:
                click.echo(f"PROBLEM: {p}")
        for line in growth_lines:
            click.echo(line)
    if any(r.problems for r in results if not r.scenario.endswith("(baseline)")):
        raise SystemExit(1)


def _write_manifests(names: list[str], directory: str, tiny: bool, scale: float, nodes: int | None,
                     pods: int | None) -> None:
    import yaml

    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            base = SCENARIOS[name]
            sc = sized(base, TINY_NODES / base.nodes) if tiny else sized(base, scale, nodes, pods)
            path = out / f"{name}.yaml"
            with path.open("w") as f:
                yaml.dump_all(generate(sc), f, Dumper=yaml.CSafeDumper)
            click.echo(f"{path}: {sc.nodes} nodes, {sc.pods} pods ({sc.title})")
    except OSError as exc:
        raise click.UsageError(f"--write-manifests {directory}: {exc.strerror or exc}") from None


def _pods_per_node(sc: Scenario) -> int:
    """How many of the scenario's pods one node holds (8 GPUs; 2 per pod with matchAttribute)."""
    return 4 if sc.kind == "dra-match" else 8


def _growth(sc: Scenario) -> str:
    """Run ``sc`` at 1/4, 1/2 and all of its nodes with the pods fixed (as many as a quarter of the
    nodes hold), then at 1/4, 1/2 and all of its pods on all its nodes; the exponents of time in
    nodes and in pods."""
    fixed_pods = min(sc.pods, max(1, sc.nodes // 4) * _pods_per_node(sc))
    by_nodes, by_pods = [], []
    for f in GROWTH_STEPS:
        n = max(1, round(sc.nodes * f))
        by_nodes.append((n, run_scenario(sized(sc, nodes=n, pods=fixed_pods), check=False).seconds))
    for f in GROWTH_STEPS:
        p = max(1, round(sc.pods * f))
        by_pods.append((p, run_scenario(sized(sc, nodes=sc.nodes, pods=p), check=False).seconds))
    return (f"growth {sc.name}: time ~ nodes^{growth_exponent(by_nodes):.2f} at {fixed_pods} pods "
            f"({', '.join(f'{n}: {s:.2f}s' for n, s in by_nodes)}); "
            f"~ pods^{growth_exponent(by_pods):.2f} at {sc.nodes} nodes "
            f"({', '.join(f'{p}: {s:.2f}s' for p, s in by_pods)})")
