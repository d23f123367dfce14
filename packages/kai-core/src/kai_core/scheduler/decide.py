"""One pod's decision: pre-filter, filter (claim allocation included), score, pick a node.

:class:`Decider` asks the plugins through the manager's typed hook methods and answers with a
:class:`Decision` whose :class:`~kai_core.framework.status.Status` says whether a node was found.
Within a cycle, pods of one shape share a :class:`~kai_core.scheduler.equivalence.ShapeMemo`: the
plugins are asked only about nodes changed since the previous pod of the shape (see
:mod:`kai_core.scheduler.equivalence`). Nothing here writes to the cluster or to the snapshot.

What an unschedulable pod is told follows kube-scheduler's ``FitError``:

- no node fits: ``0/N nodes are available: <count> <reason>, ...`` (:func:`unschedulable_message`),
  each node counted under its reason in kube-scheduler's words (a claim allocator's under
  DynamicResources' ``cannot allocate all claims``, its detail kept for ``kai-cli explain``);
- a pre-filter of a built-in plugin doing a kube-scheduler plugin's work (``VolumeBinding``,
  ``DynamicResources``, ``InterPodAffinity``...: :meth:`KaiPluginManager.kube_plugin`) turns the
  pod down whatever the node: ``0/N nodes are available: <reason>.``, N counting every node, as
  kube-scheduler wraps a PreFilter's rejection (:func:`pre_filter_message`); whatever the reason,
  a malformed spec's included (kube-scheduler wraps InterPodAffinity's ``parsing pod: ...`` alike);
- a pod whose required node affinity names its nodes (``matchFields`` ``metadata.name``, as a
  DaemonSet's pods) is tried on those nodes only, the others counted as ``node(s) didn't satisfy
  plugin(s) [NodeAffinity]``, as kube-scheduler does with NodeAffinity's PreFilter result
  (:meth:`Decider._unnamed`);
- any other reason is the whole message: a pre-filter of KAI's own plugins (a queue that does not
  exist or is over its limit, a gang's PodGroup not created yet) or of an installed plugin, the
  configs a driver's plugin refuses, a plugin's failure, the scheduler's own configuration (a pod
  with resource claims while DynamicResourceAllocation is off: one message however many nodes).
  kube-scheduler never gives such reasons, and a failure is not a fit error there either (it
  reports the error itself).

kube-scheduler then appends its PostFilter's (preemption's) message; this summary has no such part.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from kai_core.api.features import dra_disabled_message
from kai_core.api.nodeaffinity import named_nodes
from kai_core.api.objects import clone
from kai_core.dra.claims import ClaimAllocation, PodClaim, pod_claims
from kai_core.framework.plugins import KaiPluginManager, ListedOnUse
from kai_core.framework.snapshot import NodeInfo, Snapshot
from kai_core.framework.status import SUCCESS, Code, Status
from kai_core.scheduler.equivalence import ShapeMemo, claim_refs, generic_reason, pod_shape, specific_reason
from kai_core.scheduler.explain import DecisionRecorder, DecisionTrace

#: distinct reasons listed in an unschedulable message; the rest are summed up in one entry
MAX_REASONS_IN_MESSAGE = 10
NODE_AFFINITY = "NodeAffinity"
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
#: kube-scheduler's reason for a node its PreFilter result leaves out (schedule_one.go, ``%v`` of
#: the plugins' sorted names)
UNNAMED_REASON = f"node(s) didn't satisfy plugin(s) [{NODE_AFFINITY}]"


@dataclass
class Decision:
    """The outcome for one pod: on success the chosen node, the pod's claims and their allocation
    on that node; otherwise a Status saying why no node was chosen."""

    status: Status
    node: str = ""
    claims: list[PodClaim] = field(default_factory=list)
    allocation: ClaimAllocation | None = None

    @property
    def ok(self) -> bool:
        return self.status.ok


def _refused(status: Status) -> Decision:
    return Decision(status)


def _unresolved_claims(reason: str, snap: Snapshot) -> Decision:
    """The pod's claims cannot be resolved (what the DRA pre-filter says, for a pod decided
    without pre-filters: a gang member pre-filtered earlier in the cycle)."""
    return _refused(Status.unresolvable(pre_filter_message(len(snap.nodes), reason)))


class Decider:
    """Chooses nodes for pods with the plugins of ``pm``; scores are weighted by ``score_weights``."""

    def __init__(self, pm: KaiPluginManager, score_weights: Mapping[str, float]) -> None:
        self.pm = pm
        self.score_weights = score_weights
        #: set to explain decisions (``kai-cli explain``, debug logging); None costs nothing
        self.recorder: DecisionRecorder | None = None

    def memos(self) -> dict[str, ShapeMemo] | None:
        """A cycle's memo table (by pod shape), or None when a plugin's answers are not node-local."""
        return {} if self.pm.answers_are_node_local() else None

    def pre_filter(self, pod: dict, snap: Snapshot) -> Status:
        """Every ``kai_pre_filter``: success, or the first reason given (worded as kube-scheduler
        words it when the plugin does a kube-scheduler plugin's work, see the module's docstring)."""
        status = self.pm.pre_filter(pod, snap)
        if status.ok:
            if not snap.features.dra and (pod.get("spec") or {}).get("resourceClaims"):
                return Status.unresolvable(f"pod has resource claims but {dra_disabled_message()}")
            return status
        if status.code is Code.ERROR or self.pm.kube_plugin(status.plugin) is None:
            return status
        return Status(status.code, pre_filter_message(len(snap.nodes), status.message), status.plugin)

    def decide(self, pod: dict, snap: Snapshot, nodes: list[NodeInfo] | None = None, *,
               pre_filtered: bool = False, memos: dict[str, ShapeMemo] | None = None) -> Decision:
        """Choose a node for ``pod`` (and its claims' allocation) among ``nodes`` (default: every
        node). ``pre_filtered`` skips ``kai_pre_filter`` (already passed). With ``memos`` (the
        cycle's, by pod shape) and every node, answers the plugins gave for a pod of the same shape
        are reused for nodes unchanged since. With a :attr:`recorder`, what the plugins and the memo
        answered on the way is recorded (:mod:`kai_core.scheduler.explain`)."""
        recorder = self.recorder
        if recorder is None:
            return self._decide(pod, snap, nodes, pre_filtered, memos, None)
        trace = DecisionTrace()
        decision = self._decide(pod, snap, nodes, pre_filtered, memos, trace)
        recorder.record(pod, decision, trace)
        return decision

    def _decide(self, pod: dict, snap: Snapshot, nodes: list[NodeInfo] | None, pre_filtered: bool,
                memos: dict[str, ShapeMemo] | None, trace: DecisionTrace | None) -> Decision:
        if not pre_filtered:
            status = self.pre_filter(pod, snap)
            if not status.ok:
                return _refused(status)
        if nodes is None:
            nodes = snap.nodes
        if not nodes:
            return _refused(Status.unschedulable("0/0 nodes are available: no nodes in the cluster."))
        total, unnamed = len(nodes), self._unnamed(pod, nodes)
        if unnamed:
            nodes = [n for n in nodes if n.name not in unnamed]
            if not nodes:
                return _refused(Status.unschedulable(unschedulable_message(total, unnamed)))
        shape = pod_shape(pod, snap) if memos is not None and nodes is snap.nodes else None
        memo = memos.get(shape) if shape is not None else None
        if memo is None or memo.shared != snap.shared_changes:
            memo = ShapeMemo(seen=len(snap.node_changes), shared=snap.shared_changes)
            if shape is not None:
                memos[shape] = memo
            todo = nodes
        else:
            stale = memo.stale_nodes(snap)
            memo.forget(stale)
            memo.seen = len(snap.node_changes)
            todo = [snap.node_by_name[name] for name in sorted(stale) if name in snap.node_by_name]
        if trace is not None:
            trace.begin(pod, snap, nodes, todo, memo)
        try:
            decision, complete = self._decide_among(pod, snap, nodes, memo, todo, trace, total, unnamed)
        except BaseException:
            complete = False
            raise
        finally:
            if shape is not None and not complete:
                memos.pop(shape, None)  # the plugins' answers were cut short: start afresh next pod
        return decision

    def _decide_among(self, pod: dict, snap: Snapshot, nodes: list[NodeInfo], memo: ShapeMemo,
                      todo: list[NodeInfo], trace: DecisionTrace | None, total: int,
                      unnamed: Mapping[str, str]) -> tuple[Decision, bool]:
        """:meth:`decide` with ``memo`` holding the answers already known for ``nodes``: filters
        and the allocator are asked about ``todo`` only. Returns the decision and whether the memo
        is still complete (a plugin's failure cuts its answers short). ``total`` nodes were
        candidates, ``unnamed`` of them left out before (:meth:`_unnamed`)."""
        has_claims = bool((pod.get("spec") or {}).get("resourceClaims"))
        claims: list[PodClaim] = []
        # reasons are kept with the pod's own claim names taken out (the allocator names the
        # claim), so the next pod of the shape is told about its claims, not this one's
        refs = claim_refs(pod, snap)
        if todo:
            memo.summary = None
            rejected: dict[str, str | list[str]] = {}
            refused_by = trace.refused_by if trace is not None else None
            passed, status = self.pm.filter_nodes(pod, todo, snap, rejected, refused_by)
            if not status.ok:
                return _refused(status), False
            allocations: dict[str, ClaimAllocation] = {}
            if passed and has_claims:
                claims, reason = pod_claims(pod, snap)
                if reason:
                    return _unresolved_claims(reason, snap), False
                allocations, status = self.pm.allocate_claims(
                    pod, claims, passed, snap, rejected, refused_by, trace.devices if trace is not None else None,
                    trace.details if trace is not None else None)
                if not status.ok:
                    return _refused(status), False
            memo.rejected.update((name, generic_reason(r, refs)) for name, r in rejected.items())
            for n in passed:
                if not has_claims:
                    memo.fit(n, None)
                elif n.name in allocations:
                    memo.fit(n, allocations[n.name])
            if trace is not None:
                trace.asked(rejected, passed, allocations)
        if has_claims and not claims:
            claims, reason = pod_claims(pod, snap)
            if reason:
                return _unresolved_claims(reason, snap), True
        if not memo.fits:  # the memo is complete: the next pods of the shape need ask nothing
            if refs or unnamed:
                message = unschedulable_message(
                    total, {**unnamed, **{name: specific_reason(r, refs) for name, r in memo.rejected.items()}})
            else:
                if memo.summary is None:
                    memo.summary = unschedulable_message(total, memo.rejected)
                message = memo.summary
            return _refused(Status.unschedulable(message)), True
        best, status = self._best_node(pod, nodes, snap, memo, trace)
        if not status.ok:
            return _refused(status), False  # scores half recorded
        allocation = memo.fits[best]
        if allocation is not None:  # the memo's copy may serve the next pod of the shape too
            allocation = ClaimAllocation(clone(allocation.allocations))
        return Decision(SUCCESS, best, claims, allocation), True

    def _unnamed(self, pod: dict, nodes: list[NodeInfo]) -> dict[str, str]:
        """kube-scheduler's NodeAffinity PreFilterResult: when every required node affinity term
        names its nodes (``matchFields`` ``metadata.name In``, as a DaemonSet's pods do), only those
        nodes are filtered; each other candidate is counted under kube-scheduler's reason for it.
        Empty when the pod names no nodes or no plugin does NodeAffinity's work."""
        affinity = (pod.get("spec") or {}).get("affinity")
        node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, dict) else None
        required = node_affinity.get(REQUIRED) if isinstance(node_affinity, dict) else None
        terms = required.get("nodeSelectorTerms") if isinstance(required, dict) else None
        if not isinstance(terms, list) or not terms:
            return {}
        named = named_nodes(terms)
        if named is None or self.pm.doing_work_of(NODE_AFFINITY) is None:
            return {}
        return {n.name: UNNAMED_REASON for n in nodes if n.name not in named}

    def _best_node(self, pod: dict, nodes: list[NodeInfo], snap: Snapshot, memo: ShapeMemo,
                   trace: DecisionTrace | None) -> tuple[str, Status]:
        """The node of ``memo.fits`` with the highest weighted score sum; ties go to the first
        name. Totals of the plugins declaring node-local scores are kept in the memo: those
        plugins are asked only about nodes fitted since their last call, and while no other plugin
        scores the pod, the best node comes off the memo's heap without a pass over the nodes."""
        if len(memo.fits) == 1:
            return next(iter(memo.fits)), SUCCESS
        # listed only if a plugin that is not node-local reads it: a pass over every node per pod is
        # what the memo is for (once nodes fill, the list is made anew after each placement)
        feasible = ListedOnUse(lambda: memo.feasible(nodes))
        unscored = {n.name: n for n in memo.unscored if n.name in memo.fits}
        memo.unscored = []
        by_plugin = trace.scores if trace is not None else None
        local_sums, others, status = self.pm.score_nodes(
            pod, snap, self.score_weights, local_nodes=unscored, nodes=feasible, among=memo.fits,
            by_plugin=by_plugin)
        if not status.ok:
            return "", status
        for name, total in local_sums.items():
            memo.set_total(name, total)
        if trace is not None:
            trace.scored(feasible, memo, others)
        if not others:
            best = memo.best()
            if best is not None:
                return best, SUCCESS
        totals = memo.totals
        return _top({n.name: totals.get(n.name, 0.0) + others.get(n.name, 0.0) for n in feasible}), SUCCESS


def _top(totals: dict[str, float]) -> str:
    """The name with the highest total (NaN never wins); ties go to the name that sorts first."""
    top = max((t for t in totals.values() if t == t), default=None)
    if top is None:
        return min(totals)
    return min(name for name, total in totals.items() if total == top)


def pre_filter_message(total: int, reason: str) -> str:
    """kube-scheduler's summary when a PreFilter turned the pod down: ``0/3 nodes are available:
    pod has unbound immediate PersistentVolumeClaims.`` (the reason is for every node; none is
    counted)."""
    return f"0/{total} nodes are available: {reason}."


def unschedulable_message(total: int, rejected: Mapping[str, str | list[str] | tuple[str, ...]]) -> str:
    """kube-scheduler's summary: ``0/4 nodes are available: 1 Insufficient cpu, 3 ...``.

    Each node counts once per reason it was given; entries are ``"<count> <reason>"`` sorted as
    strings, as kube-scheduler sorts them. Past :data:`MAX_REASONS_IN_MESSAGE` distinct reasons
    the least frequent are summed up as ``N more reason(s)``, so a message stays readable on a
    large cluster whose nodes fail in many different ways.
    """
    counts: Counter[str] = Counter()
    for reasons in rejected.values():
        if isinstance(reasons, str):
            counts[reasons] += 1
        else:
            counts.update(dict.fromkeys(reasons, 1))
    kept = counts.most_common()
    rest = kept[MAX_REASONS_IN_MESSAGE:]
    parts = sorted(f"{n} {reason}" for reason, n in kept[:MAX_REASONS_IN_MESSAGE])
    if rest:
        parts.append(f"{len(rest)} more reason(s) on {sum(n for _, n in rest)} node(s)")
    if not parts:
        return f"0/{total} nodes are available."
    return f"0/{total} nodes are available: {', '.join(parts)}."
