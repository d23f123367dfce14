"""Running the embedded cluster: controllers, scheduler and binder in rounds, in one process.

**Until idle.** A round that writes nothing does not end the run while a retry is pending: the
binder may owe a delayed attempt at a failed BindRequest (``Binder.next_due``) and the scheduler a
pod backing off after failed bindings (``Scheduler.next_due``). When both share a
:class:`~kai_binder.clock.ManualClock` (what ``kai-cli run scheduler --until-idle`` builds, see
:func:`embedded_clock`), the runner moves that clock to the earlier due time instead of waiting,
so a run with failed bindings still ends in moments. The simulated time skipped is capped
(:data:`MAX_SKIPPED_SECONDS`): a binding that can never succeed ends the run with
:attr:`RunSummary.gave_up` set and the pods still not bound named, instead of retrying forever.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kai_core.api.resources import RES_PODS

#: the most simulated time an ``until_idle`` run skips over retry waits before it gives up
MAX_SKIPPED_SECONDS = 600.0
#: pods named in :meth:`RunSummary.warning` (the rest are counted)
MAX_NAMED_PODS = 10
#: rounds in a row that write nothing although something is due now; then the run stops
_MAX_STUCK_ROUNDS = 3
#: the parts of a round, in order
COMPONENTS = ("controllers", "scheduler", "binder")


@dataclass
class RunSummary:
    """What a run did: pods bound, pending and unschedulable (pods of the scheduler), wall time,
    rounds; and for ``until_idle`` runs the simulated seconds skipped over retry waits, whether it
    gave up waiting (``gave_up``) and the pods then still not bound (``waiting``, ``ns/name``)."""

    bound: int
    pending: int
    unschedulable: int
    seconds: float
    rounds: int
    skipped: float = 0.0
    gave_up: bool = False
    waiting: list[str] = field(default_factory=list)
    #: per component (``controllers``, ``scheduler``, ``binder``): wall and CPU seconds of its calls
    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    #: the scheduler's evictions (``kai_core.scheduler.evictions.Eviction``), in order
    evictions: list = field(default_factory=list)

    def eviction_lines(self) -> list[str]:
        """One line per evicted pod: by which action, for whom, from which queue."""
        out = []
        for e in self.evictions:
            md = e.pod["metadata"]
            whom = f" for {e.preemptor[0]}/{e.preemptor[1]}" if e.preemptor else ""
            out.append(f"pod {md.get('namespace', 'default')}/{md['name']}: evicted by {e.action}{whom} "
                       f"(queue {e.queue})")
        return out

    @property
    def pods_per_second(self) -> float:
        return self.bound / self.seconds if self.seconds > 0 else 0.0

    def cost_line(self) -> str:
        """CPU seconds per 1,000 pods bound, per component (the embedded controllers stand in for
        the API server's; every component's calls into the embedded store count as its own)."""
        per = 1000 / self.bound if self.bound else 0.0
        parts = ", ".join(f"{name} {self.cpu[name] * per:.2f}" for name in COMPONENTS if name in self.cpu)
        return f"cpu seconds per 1,000 pods bound: {parts}" if self.bound else "cpu seconds: no pod bound"

    def line(self) -> str:
        return (
            f"pods bound: {self.bound}, pending: {self.pending}, unschedulable: {self.unschedulable}, "
            f"{self.seconds:.3f}s, {self.pods_per_second:.1f} pods/s ({self.rounds} rounds)"
        )

    def warning(self) -> str | None:
        """One line saying the run gave up waiting for retries, and for which pods; None if it did not."""
        if not self.gave_up:
            return None
        names = ", ".join(self.waiting[:MAX_NAMED_PODS])
        more = len(self.waiting) - MAX_NAMED_PODS
        if more > 0:
            names += f" and {more} more"
        return (f"stopped waiting for retries after skipping {self.skipped:.0f}s of backoff; "
                f"pods still not bound: {names or 'none'}")


#: binder worker threads in embedded mode. Threads pay off against a remote API server, where
#: each attempt waits on the network; in-process every attempt only competes for the interpreter
#: (``kai-cli bench --scenario dra``, 4,000 pods, shipped binder: 1 worker 997 pods/s, 10 workers
#: 749 pods/s)
EMBEDDED_BINDER_WORKERS = 1


def binder_options(workers: int | None = None, *, embedded: bool = False, **overrides) -> dict:
    """What every binder kai-cli builds runs with: the binder's :data:`RECOMMENDED_OPTIONS` (the
    PodBound condition and Events, the node check, 10 workers against a cluster and
    :data:`EMBEDDED_BINDER_WORKERS` in embedded mode), ``workers`` when given, and no rate limit of
    its own (``qps=0``): against a cluster the API client already limits every request to
    --qps/--burst, and the embedded cluster has no API server to protect. ``overrides`` that are
    not None win (an embedded ``run binder --qps`` still limits)."""
    from kai_binder.binder import RECOMMENDED_OPTIONS

    options = {**RECOMMENDED_OPTIONS, "qps": 0}
    if embedded:
        options["workers"] = EMBEDDED_BINDER_WORKERS
    if workers is not None:
        options["workers"] = workers
    options.update({k: v for k, v in overrides.items() if v is not None})
    return options


def embedded_components(cluster, pm, gates, config, *, until_idle: bool, binder: dict | None):
    """The scheduler and binder of an embedded run, as ``kai-cli run scheduler`` builds them:
    ``config`` is the SchedulerConfig, ``binder`` the Binder's keyword arguments (None: no binder).
    With ``until_idle`` both share a simulated clock, so retry waits cost nothing. Returns
    ``(scheduler, binder or None, clock or None)``; the caller closes the binder."""
    from kai_binder.binder import Binder
    from kai_core.scheduler.cycle import Scheduler

    clock = embedded_clock() if until_idle else None
    scheduler = Scheduler(cluster.store, pm, config, **({"clock": clock.now} if clock else {}))
    if binder is None:
        return scheduler, None, clock
    timing = {"clock": clock.now, "sleep": clock.sleep} if clock else {}
    return scheduler, Binder(cluster.store, pm, gates, **binder, **timing), clock


def embedded_clock():
    """A fresh :class:`~kai_binder.clock.ManualClock` for an ``until_idle`` run: pass ``clock=c.now``
    to the Scheduler, ``clock=c.now, sleep=c.sleep`` to the Binder and ``clock=c`` to
    :func:`run_embedded`."""
    from kai_binder.clock import ManualClock

    return ManualClock()


def _pod_counts(store, scheduler_name: str) -> tuple[int, int, int, list[str]]:
    bound = pending = unschedulable = 0
    waiting: list[str] = []
    pods, _ = store.list_refs(RES_PODS)
    for p in pods:
        if p["spec"].get("schedulerName") != scheduler_name:
            continue
        if p["spec"].get("nodeName"):
            bound += 1
            continue
        if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        pending += 1
        md = p["metadata"]
        waiting.append(f"{md.get('namespace') or 'default'}/{md['name']}")
        for c in (p.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable":
                unschedulable += 1
    return bound, pending, unschedulable, sorted(waiting)


def count_pods(store, scheduler_name: str) -> tuple[int, int, int]:
    """(bound, pending, unschedulable) among the pods of ``scheduler_name``."""
    return _pod_counts(store, scheduler_name)[:3]


def _wait_until_due(scheduler, binder) -> float | None:
    """Seconds until the scheduler or the binder has something due (0: due now), None if nothing is.
    Each component's due time is measured on its own clock."""
    waits = []
    for component in (scheduler, binder):
        next_due = getattr(component, "next_due", None) if component is not None else None
        when = next_due() if next_due is not None else None
        if when is not None:
            waits.append(max(0.0, when - component.clock()))
    return min(waits) if waits else None


def run_embedded(cluster, scheduler, binder=None, until_idle: bool = False, period: float = 1.0,
                 max_rounds: int | None = None, on_round: Callable[[int], None] | None = None, *,
                 clock=None, max_skipped: float = MAX_SKIPPED_SECONDS,
                 stop: threading.Event | None = None) -> RunSummary:
    """Run rounds of controllers -> scheduler -> binder.

    With ``until_idle`` it stops after a round that writes nothing to the store once neither the
    scheduler nor the binder has a retry pending. A pending retry is waited for by moving
    ``clock`` (a ManualClock shared by both; see :func:`embedded_clock`) to its due time, or, without
    one, by sleeping until then; either way at most ``max_skipped`` seconds in all, after which the
    run stops with :attr:`RunSummary.gave_up` set. Otherwise it runs every ``period`` seconds
    (real time) until interrupted, ``stop`` is set, or ``max_rounds`` rounds ran.
    """
    store = cluster.store
    wall = dict.fromkeys(COMPONENTS, 0.0)
    cpu = dict.fromkeys(COMPONENTS, 0.0)
    perf, process = time.perf_counter, time.process_time

    def timed(component: str, call: Callable[[], object]) -> None:
        w, c = perf(), process()  # process-wide CPU: a binder's worker threads count as the binder's
        try:
            call()
        finally:
            wall[component] += perf() - w
            cpu[component] += process() - c

    start = perf()
    evicted: list = []
    rounds = 0
    skipped = 0.0
    gave_up = False
    stuck = 0
    try:
        while (max_rounds is None or rounds < max_rounds) and not (stop is not None and stop.is_set()):
            before = store.resource_version
            timed("controllers", cluster.reconcile_controllers)
            timed("scheduler", lambda: evicted.extend(scheduler.run_cycle().evictions))
            if binder is not None:
                timed("binder", binder.run_once)
            rounds += 1
            if on_round is not None:
                on_round(rounds)
            if not until_idle:
                if stop is not None:
                    stop.wait(period)
                else:
                    time.sleep(period)
                continue
            if store.resource_version != before:
                stuck = 0
                continue
            wait = _wait_until_due(scheduler, binder)
            if wait is None:
                break
            if wait <= 0:
                stuck += 1  # due now, yet the round did nothing: do not spin on it
                if stuck >= _MAX_STUCK_ROUNDS:
                    gave_up = True
                    break
                continue
            stuck = 0
            if skipped + wait > max_skipped:
                gave_up = True
                break
            skipped += wait
            if clock is not None:
                clock.advance(wait)
            else:
                time.sleep(wait)
    except KeyboardInterrupt:
        pass
    seconds = time.perf_counter() - start
    bound, pending, unschedulable, waiting = _pod_counts(store, scheduler.config.scheduler_name)
    if binder is None:
        del wall["binder"], cpu["binder"]
    return RunSummary(bound, pending, unschedulable, seconds, rounds, skipped=skipped, gave_up=gave_up,
                      waiting=waiting if gave_up else [], wall=wall, cpu=cpu, evictions=evicted)


def run_scheduler_embedded(cluster, pm, gates, config, *, until_idle: bool, binder: dict | None,
                           period: float = 1.0, stop: threading.Event | None = None) -> RunSummary:
    """What ``kai-cli run scheduler`` does with a loaded embedded ``cluster``: build the scheduler
    and binder (:func:`embedded_components`), run them (:func:`run_embedded`), close the binder.
    ``kai-cli bench``'s ``run-*`` scenarios call this too, so the two cannot drift apart."""
    scheduler, binder_, clock = embedded_components(cluster, pm, gates, config, until_idle=until_idle,
                                                    binder=binder)
    try:
        return run_embedded(cluster, scheduler, binder_, until_idle=until_idle, period=period, clock=clock,
                            stop=stop)
    finally:
        if binder_ is not None:
            binder_.close()
