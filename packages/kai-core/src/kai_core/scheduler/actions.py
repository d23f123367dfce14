"""The eviction actions that follow allocate in a cycle, in KAI's order: consolidation, reclaim,
preempt (``pkg/scheduler/actions``). Each makes room for a workload that allocate could not place by
evicting running ones, and only when a simulation shows the room is enough.

For each waiting workload (a gang, or a single pod), in the cycle's order (queues furthest below
their fair share first, then priority and age):

1. **Releasing capacity first.** Pods already terminating (evicted earlier, being deleted) still hold
   their node resources and devices, so allocate does not bind into them. If a workload fits once
   they are counted as gone, allocate has it wait for them (KAI's *pipelined*, :meth:`pipeline`):
   no BindRequest, no eviction, and the room stays promised to it for the rest of the cycle.
2. **Victims**, by action (a victim is a running workload of this scheduler; only bound pods count):

   - *consolidation*: the workload is preemptible; victims are preemptible workloads of any queue
     whose pods a controller owns; the plan holds only if every victim fits again elsewhere (its
     controller recreates it and the next cycles place it there; a bare pod would be gone for good,
     so it is never moved), and it moves at most ``max_consolidation_preemptees`` pods;
   - *reclaim*: the workload's queue stays within its fair share with it, and, for a
     non-preemptible workload, what non-preemptible workloads hold stays within the quota of its
     queue and of every queue above it, in every resource (not only those it asks for); victims
     are preemptible workloads of other queues whose queue (at the first level where the two
     chains part) is above its fair share in a resource the workload asks for (above its quota,
     when the reclaiming side stays within its own quota), and a victim is taken only while its
     queue is still above it;
   - *preempt*: victims are preemptible workloads of the same queue with a lower priority.

   Victims are taken in reverse scheduling order: the queue most above its fair share first, then the
   lowest priority, then the newest. A gang loses one pod at a time above its ``minMember``, then
   the rest of its running pods all together (never fewer). Protected workloads are left alone: a
   queue's ``preemptMinRuntime`` / ``reclaimMinRuntime`` (KAI's rules for which queue's value
   applies) counted from when the workload started.
3. **Simulation.** Victims are counted as gone on the snapshot (:class:`Statement`), a few at a time,
   and the workload is placed as allocate would place it (gang all-or-nothing, every filter and
   queue limit). The first set of victims that makes it fit is the plan; otherwise everything is
   rolled back and nothing happens.
4. **Commit.** The victims are evicted against the API (:mod:`kai_core.scheduler.evictions`); the
   workload is not bound in this cycle: it stays assumed on the snapshot (nothing else takes that
   room) and is told it waits for the evicted pods to terminate. Once they are gone, allocate places
   it.

A PodGroup with a ``spec.preemptionDelay`` evicts nothing until that long after the later of its
creation and its last eviction (the annotation ``kai.scheduler/last-eviction-timestamp``; KAI's
``PreemptionDelayNotElapsed``): until then it only takes free (or releasing) capacity.

Budgets keep a cycle short on a big cluster: at most ``max_workloads`` workloads are tried per action
and cycle, a workload whose shape (queue, pods, requests) already failed is not tried again, and the
actions stop once ``time_budget`` seconds have passed.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from kai_core.api.objects import ref
from kai_core.api.resources import RES_QUEUES, RES_SLICES, is_active_pod
from kai_core.framework.device_worth import DeviceIndex
from kai_core.framework.gang import Gang, pod_key
from kai_core.framework.pending_gpus import PendingDevices
from kai_core.framework.queue_order import QueueFigures
from kai_core.framework.queue_usage import amounts_of, dra_gpus, snapshot_usage
from kai_core.framework.queues import RESOURCES, QueueTree, pod_group_in, pod_queue_in, preemptible, tree_from_objects
from kai_core.framework.snapshot import Snapshot
from kai_core.framework.statement import Statement
from kai_core.scheduler.equivalence import pod_shape
from kai_core.scheduler.evictions import LAST_EVICTION_ANNOTATION, Eviction, Evictor, eviction_message

log = logging.getLogger("kai.scheduler.actions")

ACTIONS = ("consolidation", "reclaim", "preempt")
PodKey = tuple[str, str]


@dataclass
class ActionsConfig:
    """What the eviction actions may do (``kai-cli run scheduler --actions ...``)."""

    #: the actions run after allocate, in this order (KAI's: consolidation, reclaim, preempt)
    actions: tuple[str, ...] = ACTIONS
    #: the most pods one consolidation plan may move (KAI's ``--max-consolidation-preemptees``)
    max_consolidation_preemptees: int = 16
    #: waiting workloads tried per action and cycle
    max_workloads: int = 32
    #: seconds the actions of one cycle may take, all together
    time_budget: float = 0.5
    #: min runtime of a victim when no queue of its chain sets one (KAI's defaults: 0)
    default_preempt_min_runtime: float = 0.0
    default_reclaim_min_runtime: float = 0.0


@dataclass
class Workload:
    """A gang or a single pod: waiting (its ``pods`` wait) or running (its ``pods`` are bound)."""

    key: PodKey
    pods: list[dict]
    queue: str
    priority: int
    preemptible: bool
    min_member: int = 1
    pod_group: dict | None = None
    gang: Gang | None = None
    started: float | None = None

    @property
    def description(self) -> str:
        kind = "pod group" if self.pod_group is not None or self.gang is not None else "pod"
        return f"{kind} {self.key[0]}/{self.key[1]}"

    def units(self) -> list[list[dict]]:
        """The victim units of a running workload, in the order they are taken: one pod at a time
        above ``minMember`` (newest first), then the rest together."""
        pods = sorted(self.pods, key=_newest_first)
        surplus = max(0, len(pods) - max(self.min_member, 1))
        return [[p] for p in pods[:surplus]] + ([pods[surplus:]] if pods[surplus:] else [])


@dataclass
class Plan:
    action: str
    workload: Workload
    victims: list[tuple[Workload, dict]] = field(default_factory=list)
    #: each queue's allocation before the plan (KAI's reclaim messages tell the state before it)
    allocated_before: dict[str, dict[str, float]] = field(default_factory=dict)


class EvictionActions:
    """Runs the actions of one cycle (see the module docstring) for a :class:`Scheduler`."""

    def __init__(self, scheduler, evictor: Evictor, config: ActionsConfig | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.scheduler = scheduler
        self.evictor = evictor
        self.config = config or ActionsConfig()
        self.wall_clock = wall_clock
        #: uids of pods this scheduler evicted that its cache may not show deleted yet (a watch
        #: lags behind its own writes): they count as terminating, never as victims again
        self.evicted: set[str] = set()
        self._releasing_in: tuple[Snapshot, list[dict]] | None = None
        #: (snapshot, {workload's outcome key: the snapshot state in which it did not fit}) for pipeline
        self._not_pipelined: tuple[Snapshot, dict[tuple, int]] | None = None

    def run(self, snap: Snapshot, waiting: list[dict], gangs: Mapping[PodKey, Gang],
            figures: Mapping[str, QueueFigures] | None, result) -> list[Plan]:
        """Try the actions for the pods of ``waiting`` (in cycle order) still without a node;
        evictions carried out are counted in ``result.evictions``. Returns the plans carried out."""
        if not self.config.actions:
            return []
        if self.evicted:
            present = {p["metadata"].get("uid") for p in snap.pods.values()}
            self.evicted &= present
        left = [p for p in waiting if snap.node_of(p) is None]
        if not left:
            return []
        deadline = time.perf_counter() + self.config.time_budget
        state = _State(self, snap, figures)
        workloads = state.waiting_workloads(left, gangs)
        statement = Statement(snap)
        for pod in state.terminating:  # their room is already promised (see pipeline)
            statement.evict(pod)
        plans: list[Plan] = []
        done: set[PodKey] = set()
        for action in self.config.actions:
            tried = 0
            failed_shapes: set = set()
            for pending in workloads:
                if pending.key in done or time.perf_counter() > deadline or tried >= self.config.max_workloads:
                    continue
                if within_preemption_delay(pending.pod_group, state.now):
                    continue  # KAI's PreemptionDelayNotElapsed: free capacity only, for now
                shape = _shape(pending, snap)
                if shape in failed_shapes:
                    continue
                if not state.eligible(action, pending):
                    continue
                tried += 1
                plan = state.search(action, pending, statement, deadline)
                if plan is None:
                    failed_shapes.add(shape)
                    continue
                done.add(pending.key)
                plans.append(plan)
                self._commit(plan, state, result)
        return plans

    def pipeline(self, snap: Snapshot, pods: list[dict], gang: Gang | None, outcome: tuple | None = None) -> bool:
        """Allocate's last try for a workload that fits nowhere: does it fit once the pods being
        deleted are gone? Then it waits for them (KAI's *pipelined*): it is assumed where it fits,
        with no BindRequest, while the terminating pods stay counted too, so no later workload of
        the cycle takes that room (the node counts both until they are gone). True when pipelined.

        ``outcome`` names what decides the answer besides the snapshot (a gang's outcome key, see
        :class:`~kai_core.scheduler.gangs.GangPlacer`; a single pod's shape is worked out here): a
        workload found not to fit is not tried again while the snapshot's state is the same, and a
        try that does not fit leaves the snapshot in the state it found (so like gangs after it are
        still told what the first one was)."""
        releasing = self._releasing(snap)
        if not releasing:
            return False
        if outcome is None and gang is None and not (pods[0].get("spec") or {}).get("resourceClaims"):
            shape = pod_shape(pods[0], snap)
            outcome = ("pod", shape) if shape is not None else None
        misses = self._not_pipelined
        if misses is None or misses[0] is not snap:
            misses = self._not_pipelined = (snap, {})
        if outcome is not None and misses[1].get(outcome) == snap.state:
            return False
        before = snap.state
        statement = Statement(snap)
        for pod in releasing:
            statement.evict(pod)
        placed = False
        try:
            if gang is not None:
                placed = self.scheduler.gangs.simulate(gang, snap, statement) is not None
            else:
                decision = self.scheduler.decide(pods[0], snap)
                placed = decision.ok
                if placed:
                    statement.assume(pods[0], decision.node, decision.claims, decision.allocation)
        finally:
            if placed:  # the workload stays assumed, the terminating pods counted again beside it
                for pod in reversed(releasing):
                    snap.unevict(pod)
            else:
                statement.rollback()
        if not placed and outcome is not None and snap.state == before:
            misses[1][outcome] = before
        return placed

    def _releasing(self, snap: Snapshot) -> list[dict]:
        """Pods on nodes being deleted (or evicted by this scheduler, which its cache may not show
        yet): their resources and devices are released soon. Once per snapshot."""
        found = self._releasing_in
        if found is not None and found[0] is snap:
            return found[1]
        out = []
        for pod in snap.pods.values():
            spec = pod.get("spec")
            if not isinstance(spec, dict) or spec.get("nodeName") not in snap.node_by_name or not is_active_pod(pod):
                continue
            if pod["metadata"].get("deletionTimestamp") or pod["metadata"].get("uid") in self.evicted:
                out.append(pod)
        self._releasing_in = (snap, out)
        return out

    def _commit(self, plan: Plan, state: _State, result) -> None:
        pending = plan.workload
        preemptor = pending.key
        evicted = 0
        for victim, pod in plan.victims:
            message = eviction_message(plan.action, pod, preemptor)
            if plan.action == "reclaim":
                message += "\n" + state.reclaim_details(victim.queue, pending.queue, plan.allocated_before)
            eviction = Eviction(pod=pod, action=plan.action, message=message, queue=victim.queue,
                                preemptor=preemptor, preemptor_queue=pending.queue, gang_size=len(plan.victims),
                                pod_group=victim.pod_group)
            if self.evictor.evict(eviction):
                evicted += 1
                result.evictions.append(eviction)
                uid = pod["metadata"].get("uid")
                if uid:
                    self.evicted.add(uid)
        log.info("%s: evicted %d pod(s) for %s (queue %s)", plan.action, evicted, pending.description,
                 pending.queue)
        self._report(pending, f"{plan.action}: waiting for {evicted} evicted pod(s) to terminate "
                              f"({', '.join(ref(p) for _, p in plan.victims[:3])}"
                              f"{', ...' if len(plan.victims) > 3 else ''})")

    def _report(self, pending: Workload, message: str) -> None:
        for pod in pending.pods:
            self.scheduler._report_unschedulable(pod, message)


class _State:
    """The queues and running workloads one run of the actions works with."""

    def __init__(self, actions: EvictionActions, snap: Snapshot, figures: Mapping[str, QueueFigures] | None) -> None:
        self.actions = actions
        self.config = actions.config
        self.snap = snap
        self.now = actions.wall_clock()
        self.tree: QueueTree = tree_from_objects(snap.objects(RES_QUEUES).values()) if snap.watches(RES_QUEUES) \
            else tree_from_objects(())
        self.fair_share = {q: dict(f.fair_share) for q, f in (figures or {}).items()}
        self.allocated = {q: dict(f.allocated) for q, f in (figures or {}).items()}
        self.min_runtime = _queue_min_runtimes(snap.objects(RES_QUEUES).values() if snap.watches(RES_QUEUES) else ())
        self._charge_placed(snap)
        self.running: list[Workload] = []
        #: running workloads by queue, in the order victims are taken (lowest priority, newest first)
        self.by_queue: dict[str, list[Workload]] = {}
        self.terminating: list[dict] = []
        self._free: dict[str, int] | None = None
        self._requests: dict[int, dict[str, float]] = {}
        #: what non-preemptible workloads hold by queue (:meth:`_firm`), worked out on first need, from
        #: the cycle's start, its placements so far (``_placed_firm``) and the plans' non-preemptible
        #: reclaimers (``_firm_planned``)
        self._firm_held: dict[str, dict[str, float]] | None = None
        self._firm_planned: list[tuple[str, dict[str, float]]] = []
        self._collect_running()

    def queue_of(self, pod: Mapping) -> str:
        return pod_queue_in(pod, self.snap.pod_groups)

    def _charge_placed(self, snap: Snapshot) -> None:
        """Charge this cycle's decisions so far to their queues: their requests, and the DRA GPUs
        allocated to their claims (a claim counted at the cycle's start, or for an earlier pod, is
        not counted again), as the queue ledger of allocate counts them. What non-preemptible pods
        were charged is kept for :meth:`_firm`."""
        self._placed_firm: list[tuple[str, dict[str, float], int]] = []
        net: dict[int, list] = {}
        for sign, pod, _node in snap.pod_changes:
            self._charge_placement(pod, amounts_of(snap.requests_of(pod)), sign)
            net.setdefault(id(pod), [0, pod])[0] += sign
        placed = [pod for n, pod in net.values() if n > 0 and (pod.get("spec") or {}).get("resourceClaims")]
        if not placed or not self.tree.queues:
            return
        counted = set(snapshot_usage(snap, self.tree).counted)
        index = DeviceIndex(snap.objects(RES_SLICES).values())
        for pod in placed:
            gpus = dra_gpus(pod, snap.allocation_of, index, counted=counted)
            if gpus:
                self._charge_placement(pod, {"gpu": gpus}, 1)

    def _charge_placement(self, pod: Mapping, amounts: dict[str, float], sign: int) -> None:
        queue = self.queue_of(pod)
        self._charge(queue, amounts, sign)
        if not preemptible(pod, pod_group_in(pod, self.snap.pod_groups)):
            self._placed_firm.append((queue, amounts, sign))

    def _charge(self, queue: str, amounts: Mapping[str, float], sign: int) -> None:
        if self.allocated:
            self._add_up(self.allocated, queue, amounts, sign)

    def _add_up(self, table: dict[str, dict[str, float]], queue: str, amounts: Mapping[str, float],
                sign: int) -> None:
        """Add ``sign * amounts`` to ``queue`` and every queue above it in ``table``."""
        if queue not in self.tree.queues:
            return
        for up in self.tree.ancestry(queue):
            held = table.setdefault(up, dict.fromkeys(RESOURCES, 0.0))
            for r in RESOURCES:
                held[r] = held.get(r, 0.0) + sign * amounts.get(r, 0.0)

    # -- workloads ------------------------------------------------------------------------------

    def _collect_running(self) -> None:
        snap = self.snap
        by_key: dict[PodKey, Workload] = {}
        for key, pod in snap.pods.items():
            spec = pod.get("spec")
            if not isinstance(spec, dict) or spec.get("schedulerName") != snap.scheduler_name:
                continue
            if not spec.get("nodeName") or spec["nodeName"] not in snap.node_by_name or not is_active_pod(pod):
                continue
            uid = pod["metadata"].get("uid")
            if pod["metadata"].get("deletionTimestamp") or uid in self.actions.evicted:
                self.terminating.append(pod)
                if uid in self.actions.evicted and pod["metadata"].get("deletionTimestamp"):
                    self.actions.evicted.discard(uid)  # the cache shows it now
                continue
            group = pod_group_in(pod, snap.pod_groups)
            wkey = (key[0], group["metadata"]["name"]) if group is not None else key
            workload = by_key.get(wkey)
            if workload is None:
                workload = by_key[wkey] = Workload(
                    key=wkey, pods=[], queue=self.queue_of(pod), priority=_priority(pod),
                    preemptible=preemptible(pod, group), min_member=_min_member(group), pod_group=group)
            workload.pods.append(pod)
            workload.priority = max(workload.priority, _priority(pod))
            started = _started(pod)
            if started is not None and (workload.started is None or started < workload.started):
                workload.started = started
        self.running = list(by_key.values())
        for w in self.running:
            self.by_queue.setdefault(w.queue, []).append(w)
        for line in self.by_queue.values():
            line.sort(key=_victim_order)

    def waiting_workloads(self, pods: Iterable[dict], gangs: Mapping[PodKey, Gang]) -> list[Workload]:
        out: list[Workload] = []
        seen: set[int] = set()
        for pod in pods:
            gang = gangs.get(pod_key(pod))
            if gang is not None:
                if id(gang) in seen:
                    continue
                seen.add(id(gang))
                members = [p for p in gang.pods if self.snap.node_of(p) is None]
                group = pod_group_in(pod, self.snap.pod_groups)
                key = (pod["metadata"].get("namespace", ""), group["metadata"]["name"] if group else gang.name)
                out.append(Workload(key=key, pods=members, queue=self.queue_of(pod),
                                    priority=max(_priority(p) for p in members), gang=gang, pod_group=group,
                                    preemptible=preemptible(pod, group)))
            else:
                group = pod_group_in(pod, self.snap.pod_groups)
                out.append(Workload(key=pod_key(pod), pods=[pod], queue=self.queue_of(pod), priority=_priority(pod),
                                    preemptible=preemptible(pod, group), pod_group=group))
        return out

    def requests(self, workload: Workload) -> dict[str, float]:
        """What a waiting workload asks for: its pods' requests, and the GPUs of the DRA
        allocation its claims would get (:class:`PendingDevices`), a claim its pods share once."""
        found = self._requests.get(id(workload))
        if found is not None:
            return found
        total = dict.fromkeys(RESOURCES, 0.0)
        devices = PendingDevices.of_snapshot(self.snap, self.actions.scheduler.pm.device_gpu_worth) \
            if any((p.get("spec") or {}).get("resourceClaims") for p in workload.pods) else None
        counted: set = set()  # the workload's claims counted so far: members sharing one get it once
        for pod in workload.pods:
            for r, v in amounts_of(self.snap.requests_of(pod)).items():
                total[r] = total.get(r, 0.0) + v
            if devices is not None:
                total["gpu"] += devices.gpus(pod, counted)
        self._requests[id(workload)] = total
        return total

    # -- placement ------------------------------------------------------------------------------

    def place(self, workload: Workload, statement: Statement) -> list | None:
        """Place the waiting workload on the snapshot (assumed in ``statement``), or None."""
        scheduler = self.actions.scheduler
        if workload.gang is not None:
            return scheduler.gangs.simulate(workload.gang, self.snap, statement)
        pod = workload.pods[0]
        decision = scheduler.decide(pod, self.snap)
        if not decision.ok:
            return None
        statement.assume(pod, decision.node, decision.claims, decision.allocation)
        return [(pod, decision)]

    def replace(self, victims: list[tuple[Workload, dict]], statement: Statement) -> bool:
        """Whether every victim pod fits again on the snapshot (each assumed where it fits)."""
        scheduler = self.actions.scheduler
        for _w, pod in victims:
            again = _unbound_copy(pod)
            decision = scheduler.decide(again, self.snap)
            if not decision.ok:
                return False
            statement.assume(again, decision.node, decision.claims, decision.allocation)
        return True

    # -- the actions ----------------------------------------------------------------------------

    def eligible(self, action: str, pending: Workload) -> bool:
        if action == "consolidation":
            return pending.preemptible and self.config.max_consolidation_preemptees > 0
        if action == "reclaim":
            if pending.queue not in self.fair_share or not self.tree.is_leaf(pending.queue):
                return False
            want = self.requests(pending)
            held = self.allocated.get(pending.queue, {})
            share = self.fair_share[pending.queue]
            # KAI's CanReclaimResources: within its fair share with the workload in every resource,
            # not only those the workload asks for (above its CPU share, a queue reclaims no GPU)
            if not all(held.get(r, 0.0) + want[r] <= share.get(r, 0.0) + 1e-9 for r in RESOURCES):
                return False
            return self._non_preemptible_within_quota(pending)
        return action == "preempt"

    def candidates(self, action: str, pending: Workload) -> Iterator[Workload]:
        """The running workloads this action may take from for ``pending``, in the order taken
        (lazily: a search seldom needs more than the first few)."""
        if action == "preempt":
            queues = [pending.queue] if pending.queue in self.by_queue else []
            protection = self._preempt_min_runtime(pending.queue)
        elif action == "reclaim":
            queues = [q for q in self.by_queue
                      if q != pending.queue and q in self.tree.queues and self._over(pending, q)]
        else:
            queues = list(self.by_queue)
        over = {q: self._dominant_over(q) for q in queues}
        queues.sort(key=lambda q: -over[q])
        for _, tied in itertools.groupby(queues, key=lambda q: over[q]):
            for w in heapq.merge(*(self.by_queue[q] for q in tied), key=_victim_order):
                if not w.pods or not w.preemptible or w.key == pending.key:
                    continue
                if action == "consolidation":
                    if not all(_recreated(p) for p in w.pods):
                        continue
                elif action == "preempt":
                    if w.priority >= pending.priority or self._protected(w, protection):
                        continue
                elif self._protected(w, self._reclaim_min_runtime(pending.queue, w.queue)):
                    continue
                yield w

    def _levels(self, reclaimer: str, victim: str) -> tuple[str | None, str]:
        """The two queues where the chains of ``reclaimer`` and ``victim`` part (None: other trees)."""
        up_r = list(reversed(self.tree.ancestry(reclaimer)))
        up_v = list(reversed(self.tree.ancestry(victim)))
        i = 0
        while i < min(len(up_r), len(up_v)) and up_r[i] == up_v[i]:
            i += 1
        return (up_r[i] if i < len(up_r) else None), up_v[min(i, len(up_v) - 1)]

    def _over(self, pending: Workload, victim_queue: str) -> bool:
        """Whether the victim queue's side is over its share where the reclaimer's side needs room."""
        mine, theirs = self._levels(pending.queue, victim_queue)
        want = self.requests(pending)
        asked = [r for r in RESOURCES if want[r] > 0]
        held_v = self.allocated.get(theirs, {})
        if mine is not None and self._within_quota(mine, want):
            quota = self.tree.queues[theirs]
            return any(held_v.get(r, 0.0) > _quota(quota.terms(r).quota) for r in asked)
        share_v = self.fair_share.get(theirs, {})
        return any(held_v.get(r, 0.0) > share_v.get(r, 0.0) + 1e-9 for r in asked)

    def _within_quota(self, queue: str, want: Mapping[str, float]) -> bool:
        q = self.tree.queues[queue]
        held = self.allocated.get(queue, {})
        return all(held.get(r, 0.0) + want[r] <= _quota(q.terms(r).quota) for r in RESOURCES if want[r] > 0)

    def _dominant_over(self, queue: str) -> float:
        held, share = self.allocated.get(queue, {}), self.fair_share.get(queue, {})
        return max((held.get(r, 0.0) - share.get(r, 0.0)) / max(share.get(r, 0.0), 1.0) for r in RESOURCES)

    def _protected(self, w: Workload, min_runtime: float) -> bool:
        return min_runtime > 0 and w.started is not None and self.now < w.started + min_runtime

    def _preempt_min_runtime(self, queue: str) -> float:
        for q in self.tree.ancestry(queue) if queue in self.tree.queues else ():
            found = self.min_runtime.get(q, {}).get("preemptMinRuntime")
            if found is not None:
                return found
        return self.config.default_preempt_min_runtime

    def _reclaim_min_runtime(self, reclaimer: str, victim: str) -> float:
        mine, theirs = self._levels(reclaimer, victim)
        chain = self.tree.ancestry(theirs) if mine is not None else [self.tree.ancestry(victim)[-1]]
        for q in chain:
            found = self.min_runtime.get(q, {}).get("reclaimMinRuntime")
            if found is not None:
                return found
        return self.config.default_reclaim_min_runtime

    def search(self, action: str, pending: Workload, statement: Statement, deadline: float) -> Plan | None:
        """The smallest prefix of victim units (tried at 1, 2, 4, ... units, then each one more)
        after which ``pending`` fits; None (nothing left assumed) when none does."""
        if action == "consolidation" and not self._room_for(pending):
            return None  # moving pods frees nothing: the free room must already be there
        start = statement.checkpoint()
        before = {q: dict(held) for q, held in self.allocated.items()}
        taken: list[tuple[Workload, dict]] = []
        charged: list[tuple[str, dict[str, float]]] = []
        limit = self.config.max_consolidation_preemptees if action == "consolidation" else None
        n = tried_at = 0
        next_try = 1
        for workload in self.candidates(action, pending):
            for unit in workload.units():
                if time.perf_counter() > deadline:
                    break
                if action == "reclaim" and not self._over(pending, workload.queue):
                    break  # its queue is no longer above its share: the rest of it stays too
                if limit is not None and len(taken) + len(unit) > limit:
                    break
                for pod in unit:
                    statement.evict(pod)
                    taken.append((workload, pod))
                    amounts = amounts_of(self.snap.requests_of(pod))
                    self._charge(workload.queue, amounts, -1)
                    charged.append((workload.queue, amounts))
                n += 1
                if n < next_try:
                    continue
                next_try, tried_at = n * 2, n
                if self._fits(action, pending, taken, statement):
                    return self._planned(action, pending, taken, before)
            if time.perf_counter() > deadline or (limit is not None and len(taken) >= limit):
                break
        if n > tried_at and time.perf_counter() <= deadline and self._fits(action, pending, taken, statement):
            return self._planned(action, pending, taken, before)
        statement.rollback(start)
        for queue, amounts in charged:
            self._charge(queue, amounts, 1)
        return None

    def _fits(self, action: str, pending: Workload, taken: list[tuple[Workload, dict]], statement: Statement) -> bool:
        """Whether ``pending`` fits now (and, for consolidation, every moved pod fits again); what
        was tried is rolled back unless it fits."""
        if action == "reclaim" and not self._saturation_ok(pending, taken):
            return False
        mark = statement.checkpoint()
        if self.place(pending, statement) is not None and (
                action != "consolidation" or self.replace(taken, statement)):
            return True
        statement.rollback(mark)
        return False

    def _saturation_ok(self, pending: Workload, taken: list[tuple[Workload, dict]]) -> bool:
        """KAI's last reclaim check (the proportion plugin's reclaim validator), level by level up
        the reclaimer's chain against each sibling whose subtree loses victims: refused when, in a
        resource involved (one the reclaimer asks for or the sibling's victims free), the
        reclaimer's side would end above its fair share (ratio r > 1) and no less saturated than the
        sibling (r >= the sibling's ratio after losing its victims); a sibling without a fair share
        in that resource is never compared. Called with the victims already uncharged, so every
        allocation read here is what remains after the plan."""
        want = self.requests(pending)
        asked = {r for r in RESOURCES if want[r] > 0}
        freed: dict[str, set[str]] = {}  # loser queue -> resources its victims hold
        for w, pod in taken:
            amounts = amounts_of(self.snap.requests_of(pod))
            freed.setdefault(w.queue, set()).update(r for r in RESOURCES if amounts.get(r, 0.0) > 0)
        for level in self.tree.ancestry(pending.queue):
            parent = self.tree.queues[level].parent
            involved: dict[str, set[str]] = {}
            for loser, resources in freed.items():
                sibling = self._child_towards(parent, loser)
                if sibling is not None and sibling != level:
                    involved.setdefault(sibling, set(asked)).update(resources)
            for sibling, resources in involved.items():
                for r in resources:
                    mine = _saturation(self.allocated.get(level, {}).get(r, 0.0) + want[r],
                                       self.fair_share.get(level, {}).get(r, 0.0))
                    theirs_share = self.fair_share.get(sibling, {}).get(r, 0.0)
                    if mine > 1 and theirs_share > 0 and \
                            mine >= _saturation(self.allocated.get(sibling, {}).get(r, 0.0), theirs_share):
                        return False
        return True

    def _non_preemptible_within_quota(self, pending: Workload) -> bool:
        """KAI's bound on a non-preemptible reclaimer (the proportion plugin's reclaim checks): at
        every level of its queue chain, what non-preemptible workloads hold there plus what it asks
        for stays within the queue's quota (deserved), in every resource, not only those it asks for
        (a queue whose non-preemptible workloads already hold more than a quota, lowered since they
        started, reclaims nothing for another one). Victims are preemptible, so no plan changes
        these figures: reclaim checks this once per workload, before looking for victims."""
        if pending.preemptible:
            return True
        want = self.requests(pending)
        firm = self._firm()
        for level in self.tree.ancestry(pending.queue):
            queue = self.tree.queues[level]
            held = firm.get(level, {})
            if any(held.get(r, 0.0) + want[r] > _quota(queue.terms(r).quota) + 1e-9 for r in RESOURCES):
                return False
        return True

    def _firm(self) -> dict[str, dict[str, float]]:
        """What non-preemptible workloads hold in each queue, its children's included: bound and in
        flight when the cycle started, then allocate's placements and the reclaimers planned since."""
        if self._firm_held is None:
            usage = snapshot_usage(self.snap, self.tree).usage
            firm = {q: dict(u.allocated_non_preemptible) for q, u in usage.items()}
            for queue, amounts, sign in self._placed_firm + [(q, a, 1) for q, a in self._firm_planned]:
                self._add_up(firm, queue, amounts, sign)
            self._firm_held = firm
        return self._firm_held

    def _child_towards(self, parent: str, queue: str) -> str | None:
        """The child of ``parent`` ("" the root) on ``queue``'s chain, or None when not under it."""
        chain = self.tree.ancestry(queue) if queue in self.tree.queues else []
        for i, q in enumerate(chain):
            if self.tree.queues[q].parent == parent:
                return chain[i]
        return None

    def _planned(self, action: str, pending: Workload, taken: list[tuple[Workload, dict]],
                 before: dict[str, dict[str, float]]) -> Plan:
        self._charge(pending.queue, self.requests(pending), 1)
        if not pending.preemptible:  # held by a non-preemptible workload from now on
            self._firm_planned.append((pending.queue, self.requests(pending)))
            self._firm_held = None
        self._free = None
        for w, pod in taken:
            if pod in w.pods:
                w.pods.remove(pod)
        return Plan(action, pending, taken, before)

    def _room_for(self, pending: Workload) -> bool:
        """Whether the cluster's free room, all nodes together, holds what ``pending`` asks for."""
        if self._free is None:
            free: dict[str, int] = {}
            for node in self.snap.nodes:
                for r, v in node.allocatable.items():
                    free[r] = free.get(r, 0) + v - node.requested.get(r, 0)
            self._free = free
        want: dict[str, int] = {}
        for pod in pending.pods:
            for r, v in self.snap.requests_of(pod).items():
                want[r] = want.get(r, 0) + v
        return all(self._free.get(r, 0) >= v for r, v in want.items() if v > 0)

    def reclaim_details(self, victim_queue: str, reclaimer_queue: str,
                        allocated: Mapping[str, Mapping[str, float]]) -> str:
        """KAI's second and third lines of a reclaim message: each side's usage, quota and share."""
        mine, theirs = self._levels(reclaimer_queue, victim_queue)
        lines = []
        for name in (theirs, mine or reclaimer_queue):
            q = self.tree.queues.get(name)
            if q is None:
                continue
            lines.append(f"{name} uses <{_amounts(allocated.get(name, {}))}> with a quota of "
                         f"<{_amounts({r: q.terms(r).quota for r in RESOURCES})}>, fair-share of "
                         f"<{_amounts(self.fair_share.get(name, {}))}> and queue priority of <{q.priority}>.")
        return "\n".join(lines)


# -- helpers -------------------------------------------------------------------------------------


def _saturation(allocated: float, fair_share: float) -> float:
    """allocated / fair share; with no fair share, infinite when anything is allocated, else 0."""
    if fair_share <= 0:
        return float("inf") if allocated > 1e-9 else 0.0
    return allocated / fair_share


def _victim_order(w: Workload) -> tuple:
    return (w.priority, -(w.started or 0.0), w.key)


def _shape(w: Workload, snap: Snapshot) -> tuple:
    return (w.queue, w.priority, len(w.pods),
            tuple(sorted(tuple(sorted(snap.requests_of(p).items())) for p in w.pods)))


def _priority(pod: Mapping) -> int:
    priority = (pod.get("spec") or {}).get("priority")
    return priority if isinstance(priority, int) and not isinstance(priority, bool) else 0


def _min_member(group: Mapping | None) -> int:
    spec = (group or {}).get("spec")
    value = spec.get("minMember") if isinstance(spec, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def _parse_time(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def preemption_delay_end(group: Mapping | None) -> float | None:
    """When a waiting PodGroup may first make room by evicting others (KAI's
    ``PreemptionDelayEnd``): its ``spec.preemptionDelay`` after the later of its creation and its
    last eviction; None when it sets no delay."""
    spec = (group or {}).get("spec")
    delay = parse_duration(spec.get("preemptionDelay")) if isinstance(spec, Mapping) else None
    if not delay or delay <= 0:
        return None
    md = group.get("metadata") or {}
    anchor = _parse_time(md.get("creationTimestamp")) or 0.0
    last = _parse_time((md.get("annotations") or {}).get(LAST_EVICTION_ANNOTATION))
    return max(anchor, last or 0.0) + delay


def within_preemption_delay(group: Mapping | None, now: float) -> bool:
    """Whether the group is still within its preemption delay at ``now`` (Unix seconds)."""
    end = preemption_delay_end(group)
    return end is not None and now < end


def _started(pod: Mapping) -> float | None:
    """When the pod started running: its ``status.startTime``, else when it was scheduled, else
    its creation."""
    status = pod.get("status") if isinstance(pod.get("status"), dict) else {}
    found = _parse_time(status.get("startTime"))
    if found is None:
        for cond in status.get("conditions") or []:
            if isinstance(cond, dict) and cond.get("type") == "PodScheduled" and cond.get("status") == "True":
                found = _parse_time(cond.get("lastTransitionTime"))
    return found if found is not None else _parse_time(pod["metadata"].get("creationTimestamp"))


def _newest_first(pod: Mapping) -> tuple:
    return (-(_started(pod) or 0.0), pod["metadata"].get("name", ""))


def _recreated(pod: Mapping) -> bool:
    """Whether a controller owns the pod and creates it again once evicted, for the scheduler to
    place: only such pods can be moved by consolidation (a bare pod evicted is gone for good)."""
    owners = [o for o in pod["metadata"].get("ownerReferences") or [] if isinstance(o, dict) and o.get("controller")]
    # a DaemonSet creates its pod again on the very same node: moving it would free nothing
    return bool(owners) and all(o.get("kind") != "DaemonSet" for o in owners)


def _unbound_copy(pod: dict) -> dict:
    """The pod as its controller would create it again: without a node, waiting."""
    spec = dict(pod.get("spec") or {})
    spec.pop("nodeName", None)
    return {**pod, "spec": spec, "status": {"phase": "Pending"}}


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: object) -> float | None:
    """A Kubernetes ``metav1.Duration`` (Go's duration: ``90s``, ``10m``, ``1h30m``) in seconds, or
    None when it is not one."""
    if not isinstance(text, str) or not text:
        return None
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    return total if pos == len(text) else None


def _queue_min_runtimes(queues: Iterable[Mapping]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for obj in queues:
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        name = (obj.get("metadata") or {}).get("name")
        for field_name in ("preemptMinRuntime", "reclaimMinRuntime"):
            seconds = parse_duration(spec.get(field_name))
            if name and seconds is not None:
                out.setdefault(name, {})[field_name] = seconds
    return out


def _quota(value: float) -> float:
    return float("inf") if value == -1 else value


def _amounts(amounts: Mapping[str, float]) -> str:
    """GPUs, CPU cores and memory GB, -1 (a quota of "the whole share") as ``unlimited``."""
    parts = []
    for label, r, scale, unit in (("GPUs", "gpu", 1, ""), ("CPU", "cpu", 1000, " cores"),
                                  ("memory", "memory", 1e9, " GB")):
        value = amounts.get(r, 0.0)
        parts.append(f"{label}: unlimited" if value == -1 else f"{label}: {value / scale:g}{unit}")
    return ", ".join(parts)
