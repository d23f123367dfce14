"""The scheduling cycle: snapshot, then place every pending pod, and commit each decision as a
BindRequest. The scheduler never binds a pod.

One cycle (:meth:`Scheduler.run_cycle`):

1. bring the cache up to date; delete BindRequests that failed for good or whose node is gone
   (their pods are scheduled again in this very cycle; :mod:`kai_core.scheduler.bindrequests`);
2. build a :class:`~kai_core.framework.snapshot.Snapshot` (in-flight BindRequests counted as used);
3. for each pending pod of this scheduler (``spec.schedulerName``), highest priority first, then
   oldest, then by namespace and name, except pods backing off after failed bindings (with more
   than one leaf Queue, queues take turns, the one furthest below its fair share first:
   :mod:`kai_core.framework.queue_order`):

   - a member of a gang is placed with its whole gang (:mod:`kai_core.scheduler.gangs`);
   - any other pod is decided (:mod:`kai_core.scheduler.decide`: ``kai_pre_filter``,
     ``kai_filter_nodes``, ``kai_allocate_claims``, ``kai_score_nodes``), then committed:
     ``kai_bind_request`` annotations, the BindRequest written, and the decision assumed in the
     snapshot so later pods of the cycle see its resources and devices taken. With
     ``SchedulerConfig.bind_request_writers`` > 1 the BindRequest is written by background
     threads while the next pods are decided (the decision is assumed at once), and the cycle
     waits for those writes before it ends;

4. what allocate left waiting may make room by evicting running pods: consolidation, reclaim and
   preempt, in KAI's order, each simulated first (:mod:`kai_core.scheduler.actions`); the pods it
   makes room for are bound in a later cycle, once the evicted pods are gone;
   last, a gang left running below its minimum for its grace period is evicted
   (:mod:`kai_core.scheduler.stale_gangs`);
5. a pod that fits nowhere gets ``PodScheduled=False`` / ``Unschedulable`` with kube-scheduler's
   ``0/N nodes are available: ...`` message and a ``FailedScheduling`` Event
   (:mod:`kai_core.scheduler.conditions`), and a PodGroup waiting for that reason a
   ``schedulingConditions`` entry (:mod:`kai_core.scheduler.podgroup_status`).

A plugin that raises, or returns something of the wrong shape, makes only the current pod
unschedulable, with a message naming the plugin and the hook; a bug of ours on one pod is logged
and counted as an error, and the cycle goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kai_core.api.features import FeatureGates
from kai_core.api.objects import ref
from kai_core.api.resources import (
    RES_BIND_REQUESTS,
    RES_CLAIM_TEMPLATES,
    RES_CLAIMS,
    RES_DEVICE_CLASSES,
    RES_NAMESPACES,
    RES_NODES,
    RES_POD_GROUPS,
    RES_PODS,
    RES_QUEUES,
    RES_SLICES,
)
from kai_core.api.store import Store
from kai_core.framework.cache import Cache
from kai_core.framework.gang import pod_key
from kai_core.framework.plugins import KaiPluginManager
from kai_core.framework.queue_order import QueueFigures, order_pending
from kai_core.framework.snapshot import NodeInfo, Snapshot
from kai_core.scheduler.actions import ActionsConfig, EvictionActions
from kai_core.scheduler.bindrequests import BindRequests, PodBackoff, WritesStopped, Written
from kai_core.scheduler.conditions import COMPONENT, report_unschedulable
from kai_core.scheduler.decide import Decider, Decision, unschedulable_message
from kai_core.scheduler.equivalence import ShapeMemo
from kai_core.scheduler.evictions import Eviction, Evictor
from kai_core.scheduler.explain import DecisionRecorder, debug_recorder
from kai_core.scheduler.gangs import GangPlacer, find_gangs
from kai_core.scheduler.podgroup_status import PodGroupStatus
from kai_core.scheduler.podgroups import CycleGroups
from kai_core.scheduler.stale_gangs import StaleGangConfig, StaleGangEviction, wall_time_following

__all__ = ["COMPONENT", "DEFAULT_BACKOFF_LIMIT", "DEFAULT_SCHEDULER_NAME", "CycleResult", "Decision", "Scheduler",
           "SchedulerConfig", "WritesStopped", "default_resources", "plugin_watches", "unschedulable_message",
           "watched_resources"]

log = logging.getLogger("kai.scheduler")

DEFAULT_SCHEDULER_NAME = "kai-scheduler"
#: why a pod that fits only into the room of pods being deleted waits (see EvictionActions.pipeline)
PIPELINED = "waiting for pods being deleted to release their resources"
#: the ``backoff_limit`` kai-cli wrote by default before it left ``spec.backoffLimit`` unset, as
#: KAI's scheduler does (kept for plugins that import it; nothing passes it by default any more).
DEFAULT_BACKOFF_LIMIT = 3


@dataclass
class SchedulerConfig:
    """What ``kai-cli run`` passes to the scheduler (``--scheduler-name``, ``--feature-gates``, ...)."""

    #: only pods with this ``spec.schedulerName`` are scheduled
    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    features: FeatureGates = field(default_factory=FeatureGates)
    #: plugin name -> weight of its scores; a plugin not named weighs what its manager says
    #: (kube-scheduler's default weight for kai-core's plugins doing one of its plugins' work, else 1)
    score_weights: dict[str, float] = field(default_factory=dict)
    #: written into each BindRequest's spec.backoffLimit (None: not set, as KAI does; the binder
    #: then makes one attempt; ``kai-cli run scheduler --backoff-limit N`` sets it).
    backoff_limit: int | None = None
    #: seconds a pod waits after its second failed binding, doubling with each further one
    pod_initial_backoff: float = 1.0
    #: the longest a pod waits between failed bindings
    pod_max_backoff: float = 10.0
    #: seconds after a BindRequest write with a lost reply before a read may decide it was not
    #: written (the server may still be working on a request that timed out)
    uncertain_write_grace: float = 10.0
    #: threads writing single pods' BindRequests while the cycle decides the next pods (1: each
    #: written in the cycle, in order; a real API server's round trips then add up in the cycle)
    bind_request_writers: int = 1
    #: the eviction actions after allocate (consolidation, reclaim, preempt) and their budgets
    actions: ActionsConfig = field(default_factory=ActionsConfig)
    #: stale gang eviction, the cycle's last action (:mod:`kai_core.scheduler.stale_gangs`)
    stale_gangs: StaleGangConfig = field(default_factory=StaleGangConfig)


@dataclass
class CycleResult:
    """What one cycle did: pods given a node, pods left unschedulable, pods whose decision could
    not be written (or that hit an internal error), pods skipped while backing off after failed
    bindings, and the cycle's wall time."""

    scheduled: int = 0
    unschedulable: int = 0
    errors: int = 0
    seconds: float = 0.0
    backed_off: int = 0
    #: every KAI queue's fair share, allocation and waiting pods at the cycle's start (None: no Queue)
    queues: dict[str, QueueFigures] | None = field(default=None, repr=False)
    #: pods the eviction actions evicted, with why and for whom
    evictions: list[Eviction] = field(default_factory=list, repr=False)


def watched_resources(dra: bool, pod_groups: bool = True) -> list[str]:
    """The kinds the scheduler's cache lists and watches: namespaces, nodes, pods, BindRequests and
    (``pod_groups``) KAI's PodGroups, plus the DRA kinds with the gate on. Plugins' kinds
    (``kai_resource_kinds``) come on top, see :func:`default_resources`."""
    res = [RES_NAMESPACES, RES_NODES, RES_PODS, RES_BIND_REQUESTS]
    if pod_groups:
        res.append(RES_POD_GROUPS)
    if dra:
        res += [RES_CLAIMS, RES_CLAIM_TEMPLATES, RES_SLICES, RES_DEVICE_CLASSES]
    return res


def default_resources(store: Store, pm: KaiPluginManager, dra: bool) -> list[str]:
    """What a Scheduler watches when not told: :func:`watched_resources`, with PodGroups only when
    the store serves them, and every plugin kind the store serves (``store.kinds``)."""
    kinds = getattr(store, "kinds", None)

    def served(resource: str) -> bool:
        return kinds is None or resource in kinds

    res = watched_resources(dra, pod_groups=served(RES_POD_GROUPS))
    if served(RES_QUEUES):  # KAI's queues; a real cluster's caller passes its resources itself
        res.append(RES_QUEUES)
    res += [r for r in plugin_watches(pm) if served(r) and r not in res]
    return res + [r for r in pm.resource_names() if served(r) and r not in res]


def plugin_watches(pm: KaiPluginManager) -> list[str]:
    """The built-in kinds registered plugins read (their ``KAI_WATCHES``, e.g. the volume binding
    plugin's PersistentVolumes, claims and StorageClasses): watched only while such a plugin is on,
    so a scheduler without it lists nothing more."""
    out: list[str] = []
    for plugin in pm.get_plugins():
        for resource in getattr(plugin, "KAI_WATCHES", ()) or ():
            if isinstance(resource, str) and resource not in out:
                out.append(resource)
    return sorted(out)


class Scheduler:
    """Runs scheduling cycles against a store; see the module docstring for what a cycle does."""

    def __init__(self, store: Store, pm: KaiPluginManager, config: SchedulerConfig | None = None, *,
                 clock: Callable[[], float] = time.monotonic, resources: list[str] | None = None,
                 may_write: Callable[[], str | None] | None = None) -> None:
        """``resources`` are the kinds to watch; by default :func:`default_resources` (what a caller
        that checked what the cluster serves should pass instead). ``may_write`` fences every
        BindRequest write: it returns why writing must stop (the leader Lease is not held with
        margin, the process is stopping), and the cycle then ends with
        :class:`~kai_core.scheduler.bindrequests.WritesStopped`."""
        self.store = store
        self.pm = pm
        self.config = config or SchedulerConfig()
        if resources is None:
            resources = default_resources(store, pm, self.config.features.dra)
        self.cache = Cache(store, resources)
        self.last_snapshot: Snapshot | None = None
        self.clock = clock
        self.decider = Decider(pm, self.config.score_weights)
        #: explains decisions of the pods it names (``kai-cli explain``); with the
        #: ``kai.scheduler.explain`` logger at DEBUG every decision is explained in the log anyway
        self.recorder: DecisionRecorder | None = None
        self.bind_requests = BindRequests(store, pm, self.config.backoff_limit, may_write=may_write,
                                          grace=self.config.uncertain_write_grace, clock=clock,
                                          writers=self.config.bind_request_writers)
        self.backoff = PodBackoff(self.config.pod_initial_backoff, self.config.pod_max_backoff, clock)
        self.gangs = GangPlacer(self, self.bind_requests, self._report_unschedulable)
        self.actions = EvictionActions(self, Evictor(store), self.config.actions)
        self.stale_gangs = StaleGangEviction(store, self.actions.evictor, self.config.stale_gangs,
                                             wall_clock=wall_time_following(clock))
        self.pod_group_status = PodGroupStatus(store, wall_clock=self.stale_gangs.wall_clock)
        #: pod key -> (pod, why it waits), while a cycle collects them (see run_cycle)
        self._deferred: dict[tuple[str, str], tuple[dict, str]] | None = None

    def run_cycle(self) -> CycleResult:
        """One cycle over every pending pod; returns counts (decisions are in the store)."""
        start = time.perf_counter()
        result = CycleResult()
        self.decider.recorder = debug_recorder(self.recorder)
        self.cache.sync()
        synced_again = self.bind_requests.clean_up(self.cache, self.backoff.record_failure)
        if synced_again:
            self.cache.sync()
        snap = Snapshot(self.cache, self.config.scheduler_name, self.config.features,
                        self.bind_requests.still_unconfirmed(self.cache))
        self.last_snapshot = snap
        held = self.bind_requests.held
        if synced_again:  # only the second sync can bring requests that failed after clean_up looked
            held = held | self.bind_requests.not_cleaned_up(snap.bind_requests)
        pending = snap.pending_pods()
        if held:  # an old request of theirs may still exist: see BindRequests.held
            pending = [p for p in pending if (p["metadata"].get("namespace", ""), p["metadata"]["name"]) not in held]
        self.backoff.forget_settled(snap)
        now = self.clock()
        ready = []
        for pod in pending:
            if self.backoff.waiting(pod, now):
                result.backed_off += 1
            else:
                ready.append(pod)
        ready, result.queues = order_pending(ready, snap, self.pm.device_gpu_worth)  # below fair share first
        gangs = find_gangs(self, snap, ready) if ready else {}
        # why pods wait is written once the actions had their say (one write per pod and cycle)
        self._deferred = {}
        try:
            self._place(ready, gangs, snap, result)
            if ready:
                self._run_actions(snap, ready, gangs, result)
            groups = CycleGroups(snap)
            self._run_stale_gangs(snap, groups, result)
        finally:  # even when the cycle stops early: no write of this cycle is left in flight
            deferred, self._deferred = self._deferred, None
            written = self.bind_requests.wait_written()
        for pod, message in deferred.values():
            report_unschedulable(self.store, pod, message)
        self._write_pod_group_status(snap, groups, deferred)
        for _pod, outcome in written:
            if outcome is Written.YES:
                result.scheduled += 1
            else:
                result.errors += 1
        result.seconds = time.perf_counter() - start
        return result

    def _place(self, ready: list[dict], gangs: dict, snap: Snapshot, result: CycleResult) -> None:
        """Place every ready pod, highest priority first (gangs as a whole)."""
        done: set[int] = set()
        memos = self.decider.memos()
        self.gangs.start_cycle(memos, remember_failures=self.decider.recorder is None)
        for pod in ready:
            gang = gangs.get(pod_key(pod))
            if gang is not None:
                if id(gang) not in done:
                    done.add(id(gang))
                    try:
                        self.gangs.place(gang, snap, result)
                        if gang.pods and all(snap.node_of(p) is None for p in gang.pods) and \
                                self.actions.pipeline(snap, gang.pods, gang, self.gangs.last_outcome):
                            for member in gang.pods:
                                self._report_unschedulable(member, PIPELINED)
                    except WritesStopped:
                        raise
                    except Exception as exc:  # a bug of ours on one gang must not stop the others
                        log.exception("%s: internal error while scheduling", gang.description)
                        result.errors += len(gang.pods)
                        for member in gang.pods:
                            self._report_unschedulable(
                                member, f"internal scheduler error: {type(exc).__name__}: {exc}")
                continue
            self._schedule_one(pod, snap, memos, result)

    def _run_actions(self, snap: Snapshot, ready: list[dict], gangs: dict, result: CycleResult) -> None:
        """The eviction actions for what allocate left waiting (:mod:`kai_core.scheduler.actions`)."""
        try:
            self.actions.run(snap, ready, gangs, result.queues, result)
        except WritesStopped:
            raise
        except Exception:  # a bug of ours there must not stop the cycle's allocations
            log.exception("eviction actions: internal error")
            result.errors += 1

    def _run_stale_gangs(self, snap: Snapshot, groups: CycleGroups, result: CycleResult) -> None:
        """Stale gang eviction, the last action (:mod:`kai_core.scheduler.stale_gangs`)."""
        try:
            self.stale_gangs.run(snap, groups, result)
        except Exception:  # a bug of ours there must not stop the cycle
            log.exception("stale gang eviction: internal error")
            result.errors += 1

    def _write_pod_group_status(self, snap: Snapshot, groups: CycleGroups, deferred: dict) -> None:
        """Why each PodGroup waits, on the PodGroup (:mod:`kai_core.scheduler.podgroup_status`)."""
        try:
            self.pod_group_status.write(snap, groups, deferred, bool(self.config.actions.actions))
        except Exception:  # a bug of ours there must not stop the cycle
            log.exception("PodGroup status: internal error")

    def close(self) -> None:
        """Stop the BindRequest writer threads (between cycles)."""
        self.bind_requests.close()

    def _schedule_one(self, pod: dict, snap: Snapshot, memos: dict[str, ShapeMemo] | None,
                      result: CycleResult) -> None:
        """Decide one pod and commit the decision, counting the outcome in ``result``."""
        try:
            decision = self.decide(pod, snap, memos=memos)
            if not decision.ok:
                result.unschedulable += 1
                if self.actions.pipeline(snap, [pod], None):
                    self._report_unschedulable(pod, PIPELINED)
                else:
                    self._report_unschedulable(pod, decision.status.message)
                return
            written = self._commit(pod, decision, snap)
        except WritesStopped:
            raise
        except Exception as exc:  # a bug of ours on one pod must not stop the others
            log.exception("pod %s: internal error while scheduling", ref(pod))
            result.errors += 1
            self._report_unschedulable(pod, f"internal scheduler error: {type(exc).__name__}: {exc}")
            return
        if written is Written.YES:
            result.scheduled += 1
        elif written is not Written.QUEUED:  # a queued write is counted once it is done
            result.errors += 1

    def decide(self, pod: dict, snap: Snapshot, nodes: list[NodeInfo] | None = None, *,
               pre_filtered: bool = False, memos: dict[str, ShapeMemo] | None = None) -> Decision:
        """:meth:`kai_core.scheduler.decide.Decider.decide` with this scheduler's plugins."""
        return self.decider.decide(pod, snap, nodes, pre_filtered=pre_filtered, memos=memos)

    def pre_filter(self, pod: dict, snap: Snapshot):
        """Every ``kai_pre_filter``: a Status (success, or the first reason given)."""
        return self.decider.pre_filter(pod, snap)

    def _commit(self, pod: dict, decision: Decision, snap: Snapshot) -> Written:
        """Write the decision as a BindRequest and assume it in the snapshot (unless it surely was
        not written: the pod is tried again next cycle). A write queued for the writer threads is
        assumed at once; should it fail, the pod is pending again in the next cycle."""
        br, status = self.bind_requests.build(pod, decision, snap)
        if not status.ok:
            self._report_unschedulable(pod, status.message)
            return Written.NO
        written = self.bind_requests.write_later(pod, br)
        if written is not Written.NO:  # maybe created (a timeout): count it for the rest of the cycle
            snap.assume(pod, decision.node, decision.claims, decision.allocation)
        return written

    def work_position(self) -> int:
        """Brings the cache up to date and returns its count of changes that may give this
        scheduler new work: while it stays the same (and :meth:`next_due` is not reached), a cycle
        would find nothing new to do. A loop waiting for work polls this instead of cycling."""
        self.cache.sync()
        return self.cache.changes

    def next_due(self) -> float | None:
        """When (on the scheduler's ``clock``) a cycle is next wanted although nothing changed: a
        pod backing off may be scheduled again, a write with a lost reply may be read back, a
        stale gang's grace period ends, or a PodGroup's condition may go once its pods are bound;
        None when none is waiting."""
        due = [t for t in (self.backoff.next_due(), self.bind_requests.next_check(),
                           self.stale_gangs.next_due(self.clock), self.pod_group_status.next_due(self.clock))
               if t is not None]
        return min(due, default=None)

    def _report_unschedulable(self, pod: dict, message: str) -> None:
        if self._deferred is not None:
            self._deferred[pod_key(pod)] = (pod, message)
        else:
            report_unschedulable(self.store, pod, message)
