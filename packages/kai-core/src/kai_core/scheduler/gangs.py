"""Gang placement: a group of pods placed all together, inside one node subset, or not at all.

Before the first pod of a cycle, ``kai_pod_groups`` is called once with every pod of this scheduler
(KAI's PodGroups come through it too; see :mod:`kai_core.framework.gang`). A gang is placed when the
scheduling order reaches its first waiting member, once per cycle: ``kai_group_node_subsets`` is
called once for it, then, subset after subset, every waiting member is decided inside the subset,
each decision assumed in a :class:`~kai_core.framework.statement.Statement` so the next member sees
it. The first subset where every declaration of the gang is satisfied wins and all its BindRequests
are written (after every ``kai_bind_request`` answered); otherwise the statement is rolled back and
nothing is written: the members get one reason naming the gang, what fit and what did not.

Members are decided with the cycle's shape memos (:mod:`kai_core.scheduler.equivalence`) when the
gang may go anywhere (no plugin proposed subsets): gangs made from one template share the filters'
answers as single pods do. And a gang that did not fit is remembered by its members' shapes with
the snapshot's :attr:`~kai_core.framework.snapshot.Snapshot.state`: a later gang of the same shapes
and need, tried while nothing was placed or evicted since (a failed attempt rolls back to the same
state), gets the same answer without deciding its members again. On a full cluster, where thousands
of like gangs wait, that is what keeps a cycle short.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from kai_core.api.objects import ref
from kai_core.framework.gang import (
    MAX_SUBSETS_IN_MESSAGE,
    MAX_SUBSETS_TRIED,
    Gang,
    NodeSubset,
    build_gangs,
    intersect_subsets,
    pod_key,
)
from kai_core.framework.plugins import KaiPluginManager
from kai_core.framework.snapshot import NodeInfo, Snapshot
from kai_core.framework.statement import Statement
from kai_core.framework.status import Status
from kai_core.scheduler.bindrequests import BindRequests, Written
from kai_core.scheduler.decide import Decision
from kai_core.scheduler.equivalence import ShapeMemo, pod_shape

log = logging.getLogger("kai.scheduler")

PodKey = tuple[str, str]
#: how a member's failure by a bug of ours starts
INTERNAL_ERROR = "internal scheduler error"


class Deciding(Protocol):
    """What gang placement needs of a decider: its plugins, pre-filter and decision (the
    scheduler passes itself, so each member's decision goes through ``Scheduler.decide``)."""

    pm: KaiPluginManager

    def pre_filter(self, pod: dict, snap: Snapshot) -> Status: ...

    def decide(self, pod: dict, snap: Snapshot, nodes: list[NodeInfo] | None = None, *,
               pre_filtered: bool = False, memos: dict[str, ShapeMemo] | None = None) -> Decision: ...


def find_gangs(decider: Deciding, snap: Snapshot, ready: list[dict]) -> dict[PodKey, Gang]:
    """Waiting pod key -> its gang, from one ``kai_pod_groups`` call per plugin."""
    declared = decider.pm.pod_groups(snap.group_candidates, snap)
    if not declared:
        return {}
    return build_gangs(declared, ready, snap.node_of, snap.pods)


class GangPlacer:
    """Places gangs with ``decider`` and writes their BindRequests with ``bind_requests``;
    ``report(pod, message)`` tells a member why it waits."""

    def __init__(self, decider: Deciding, bind_requests: BindRequests, report) -> None:
        self.decider = decider
        self.bind_requests = bind_requests
        self.report = report
        #: the cycle's shape memos (None: each member decided on its own)
        self.memos: dict[str, ShapeMemo] | None = None
        #: gangs known not to fit in this cycle: outcome key -> _Failure (None: not remembered)
        self._failures: dict[tuple, _Failure] | None = None
        #: the outcome key of the gang :meth:`place` last tried (None: it has none, or failures are
        #: not remembered), for the pipelined allocation's try that follows
        self.last_outcome: tuple | None = None

    def start_cycle(self, memos: dict[str, ShapeMemo] | None, remember_failures: bool = True) -> None:
        """Called before a cycle places its first gang, with the cycle's memo table; what earlier
        cycles learnt is forgotten. ``remember_failures`` False decides every gang afresh (while
        decisions are explained, each member's decision is recorded); so does a cycle without
        memos (a plugin's answers are not node-local: what is remembered is not checked either)."""
        self.memos = memos
        self._failures = {} if remember_failures and memos is not None else None

    def place(self, gang: Gang, snap: Snapshot, result) -> None:
        """Place the gang's waiting members all in one node subset, or none of them; counts go
        into ``result`` (a CycleResult)."""
        self.last_outcome = None
        why = gang.unreachable()
        if why:
            self._unschedulable(gang, why, result)
            return
        subsets, status = self._subsets(gang, snap)
        if not status.ok:
            self._unschedulable(gang, status.message, result)
            return
        # pre-filters are node-independent: once per member, not once per subset
        candidates, refused = [], {}
        for pod in gang.pods:
            status = self.decider.pre_filter(pod, snap)
            if status.ok:
                candidates.append(pod)
            else:
                refused[pod_key(pod)] = status.message
        if not gang.satisfied(pod_key(p) for p in candidates):
            message = next(iter(refused.values()), "")
            if len(gang.pods) > 1:
                message = (f"{gang.description}: {gang.need} pod(s) must be placed together but {len(refused)} "
                           f"cannot be scheduled now: {_first(refused)}")
            self._unschedulable(gang, message, result)
            return
        key = self.last_outcome = self._outcome_key(gang, candidates, subsets, snap)
        known = self._failures.get(key) if key is not None else None
        if known is not None and known.state == snap.state:
            self._unschedulable(gang, known.message(gang, candidates, subsets), result)
            return
        statement = Statement(snap)
        attempts: list[tuple[NodeSubset, int, str]] = []
        placed: list[tuple[dict, Decision]] = []
        failed: dict[PodKey, str] = {}
        for subset in subsets[:MAX_SUBSETS_TRIED]:
            placed, failed = self._try_subset(gang, candidates, self._nodes(subset, snap), snap, statement)
            if gang.satisfied(pod_key(p) for p, _ in placed):
                break
            statement.rollback()
            attempts.append((subset, len(placed), _first(failed)))
            placed = []
        if not placed:
            failure = _Failure.of(snap.state, candidates, attempts, failed)
            if key is not None and failure is not None:
                self._failures[key] = failure
            message = failure.message(gang, candidates, subsets) if failure is not None else \
                _gang_message(gang, subsets, attempts)
            self._unschedulable(gang, message, result)
            return
        failed.update(refused)
        self._commit(gang, placed, failed, snap, statement, result)

    def simulate(self, gang: Gang, snap: Snapshot, statement: Statement) -> list[tuple[dict, Decision]] | None:
        """Place the gang on the snapshot as :meth:`place` would, with each member's decision
        assumed in ``statement`` and nothing written: the decisions when the whole gang fits
        (left assumed), None when it does not (nothing left assumed). The eviction actions ask
        this after counting their victims as gone."""
        if gang.unreachable():
            return None
        subsets, status = self._subsets(gang, snap)
        if not status.ok:
            return None
        candidates = [p for p in gang.pods if self.decider.pre_filter(p, snap).ok]
        if not gang.satisfied(pod_key(p) for p in candidates):
            return None
        for subset in subsets[:MAX_SUBSETS_TRIED]:
            mark = statement.checkpoint()
            placed, _failed = self._try_subset(gang, candidates, self._nodes(subset, snap), snap, statement)
            if gang.satisfied(pod_key(p) for p, _ in placed):
                return placed
            statement.rollback(mark)
        return None

    def _subsets(self, gang: Gang, snap: Snapshot) -> tuple[list[NodeSubset], Status]:
        """The node subsets to try (every node when no plugin proposes any), or why none can hold
        the gang."""
        proposals, status = self.decider.pm.group_node_subsets(gang, snap.nodes, snap)
        if not status.ok:
            return [], status
        if not proposals:
            return [NodeSubset("", [n.name for n in snap.nodes])], status
        proposals = [(plugin, [NodeSubset(s.name, [n for n in s.nodes if n in snap.node_by_name]) for s in subsets])
                     for plugin, subsets in proposals]
        subsets = [s for s in intersect_subsets(proposals) if s.nodes]
        if not subsets:
            names = ", ".join(repr(p) for p, _ in proposals)
            return [], Status.unschedulable(
                f"{gang.description}: no node subset proposed by plugin(s) {names} holds a node of the cluster")
        return subsets, status

    @staticmethod
    def _nodes(subset: NodeSubset, snap: Snapshot) -> list[NodeInfo]:
        """The subset's nodes; the snapshot's own list when it is every node (the shape memos hold
        answers about that list only)."""
        if not subset.name and len(subset.nodes) == len(snap.nodes):
            return snap.nodes
        return [snap.node_by_name[n] for n in dict.fromkeys(subset.nodes)]

    def _outcome_key(self, gang: Gang, candidates: list[dict], subsets: list[NodeSubset],
                     snap: Snapshot) -> tuple | None:
        """What decides whether the gang fits, given the snapshot: its need and its candidates'
        shapes in order. None when that is not all (several declarations, node subsets proposed by
        plugins, a member without a shape or with claims, whose reasons name its own claims) or
        failures are not remembered."""
        if self._failures is None or len(gang.specs) != 1 or len(subsets) != 1 or \
                self._nodes(subsets[0], snap) is not snap.nodes:
            return None
        shapes = []
        for pod in candidates:
            if (pod.get("spec") or {}).get("resourceClaims"):
                return None
            shape = pod_shape(pod, snap)
            if shape is None:
                return None
            shapes.append(shape)
        return (gang.need, tuple(shapes))

    def _try_subset(self, gang: Gang, pods: list[dict], nodes: list[NodeInfo], snap: Snapshot,
                    statement: Statement) -> tuple[list[tuple[dict, Decision]], dict[PodKey, str]]:
        """Decide every member inside ``nodes``, assuming each decision in ``statement``; stops
        early once the gang cannot be satisfied any more. Returns the decisions and the failures."""
        placed: list[tuple[dict, Decision]] = []
        failed: dict[PodKey, str] = {}
        remaining = {pod_key(p) for p in pods}
        new: set[PodKey] = set()
        for pod in pods:
            key = pod_key(pod)
            remaining.discard(key)
            try:
                d = self.decider.decide(pod, snap, nodes, pre_filtered=True, memos=self.memos)
            except Exception as exc:  # a bug of ours on one member fails the attempt, not the cycle
                log.exception("pod %s: internal error while scheduling", ref(pod))
                failed[key] = f"{INTERNAL_ERROR}: {type(exc).__name__}: {exc}"
            else:
                if d.ok:
                    statement.assume(pod, d.node, d.claims, d.allocation)
                    placed.append((pod, d))
                    new.add(key)
                else:
                    failed[key] = d.status.message
            if gang.hopeless(new, remaining):
                break
        return placed, failed

    def _commit(self, gang: Gang, placed: list[tuple[dict, Decision]], failed: dict, snap: Snapshot,
                statement: Statement, result) -> None:
        """Write the BindRequests of a gang that fits; members left out get their own reasons.

        Every ``kai_bind_request`` answers first: one failure and nothing is written. A store error
        on the first write also stops the gang (nothing written, tried again next cycle); one after
        some were written cannot be taken back safely (the binder may be at work), so those stay
        and count as placed members next cycle."""
        brs = []
        for pod, d in placed:
            br, status = self.bind_requests.build(pod, d, snap)
            if not status.ok:
                statement.rollback()
                self._unschedulable(gang, f"{gang.description}: not placed: {status.message}", result)
                return
            brs.append(br)
        for i, ((pod, _), br) in enumerate(zip(placed, brs, strict=True)):
            written = self.bind_requests.write(pod, br)
            if written is Written.NO and i == 0:
                # nothing is written yet: keep it that way (the same error would likely hit the rest)
                statement.rollback()
                result.errors += len(placed)
                return
            if written is Written.NO:
                # members already written stay: they count toward the minimum next cycle, which
                # places the rest where the plugins' subsets keep them (the gang's own nodes)
                statement.undo(pod)
                result.errors += 1
            elif written is Written.YES:
                result.scheduled += 1
            else:
                result.errors += 1
        for pod in gang.pods:
            message = failed.get(pod_key(pod))
            if message is not None:
                result.unschedulable += 1
                self.report(pod, message)

    def _unschedulable(self, gang: Gang, message: str, result) -> None:
        for pod in gang.pods:
            result.unschedulable += 1
            self.report(pod, message)


@dataclass(frozen=True)
class _Failure:
    """A gang that fit nowhere while the snapshot was in ``state``, in terms that hold for a gang
    of the same shapes: how many members fit before the attempt was given up, and the first
    member that failed (its index among the candidates) with its reason."""

    state: int
    fit: int
    index: int
    reason: str

    @classmethod
    def of(cls, state: int, candidates: list[dict], attempts: list[tuple[NodeSubset, int, str]],
           failed: Mapping[PodKey, str]) -> _Failure | None:
        """The failure of one attempt over every node; None for any other (several subsets, no
        member failing: an answer not worth repeating), or one that hit an internal error."""
        if len(attempts) != 1 or attempts[0][0].name or not failed:
            return None
        first, reason = next(iter(failed.items()))
        if reason.startswith(INTERNAL_ERROR):
            return None
        index = next((i for i, p in enumerate(candidates) if pod_key(p) == first), None)
        return None if index is None else cls(state, attempts[0][1], index, reason)

    def message(self, gang: Gang, candidates: list[dict], subsets: list[NodeSubset]) -> str:
        """What ``gang``'s members are told (named after ``gang``'s own pods)."""
        if len(gang.pods) == 1:
            return self.reason  # a gang of one: the pod's own reason says it all
        why = _first({pod_key(candidates[self.index]): self.reason})
        return _gang_message(gang, subsets, [(subsets[0], self.fit, why)])


def _gang_message(gang: Gang, subsets: list[NodeSubset], attempts: list[tuple[NodeSubset, int, str]]) -> str:
    """What a gang that did not fit says: how many members fit where, and why the first one that
    did not fit failed."""
    need = gang.need
    head = f"{gang.description}: {need} pod(s) must be placed together"
    if len(attempts) == 1 and not attempts[0][0].name:
        _, fit, why = attempts[0]
        return f"{head} but only {fit} fit: {why}" if why else f"{head} but only {fit} fit"
    parts = []
    for subset, fit, why in attempts[:MAX_SUBSETS_IN_MESSAGE]:
        parts.append(f"in {subset.name}: {fit} fit" + (f" ({why})" if why else ""))
    more = len(attempts) - MAX_SUBSETS_IN_MESSAGE
    if more > 0:
        parts.append(f"{more} more subset(s) tried")
    untried = len(subsets) - len(attempts)
    if untried > 0:
        parts.append(f"{untried} more subset(s) left for the next cycle")
    return f"{head} inside one node subset and none holds them: " + "; ".join(parts)


def _first(failures: Mapping[PodKey, str]) -> str:
    """``pod <namespace>/<name>: <reason>`` of the first failure, or ""."""
    for (namespace, name), reason in failures.items():
        return f"pod {namespace}/{name}: {reason}" if namespace else f"pod {name}: {reason}"
    return ""
