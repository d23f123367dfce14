"""Why a pod went where it went: a record of one decision, taken while it is made.

A :class:`DecisionRecorder` set on the scheduler's decider (``Decider.recorder``) is handed, for
every pod decided, a :class:`DecisionTrace` that the decision itself fills in on its way: the
plugin behind each node's refusal (``kai_filter_nodes`` or ``kai_allocate_claims``; a claim
allocator's reason whole, where the pod's message counts it under kube-scheduler's words), what the
device hooks removed and ranked, each scoring plugin's scores and weight, and which answers came
from the equivalence memo (an earlier pod of the same shape in this cycle) rather than from the
plugins. Nothing is computed again afterwards: an :class:`Explanation` is what that decision saw.
Without a recorder the decision path pays one ``is None`` test per pod.

Who asks for it:

- ``kai-cli explain pod NAME`` keeps the last explanation of one pod (:attr:`DecisionRecorder.last`);
- the scheduler records every decision while the ``kai.scheduler.explain`` logger is enabled
  for DEBUG (``kai-cli -vv``) and logs each explanation there (:func:`debug_recorder`).

Answers the memo gave are told apart: a node it answered for is marked ``memo`` with the pod
whose decision asked the plugins, and its refusing plugin is the one that refused then (recorded
in the memo while recording is on; ``?`` if recording started after that answer).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kai_core.api.objects import ref
from kai_core.scheduler.equivalence import ShapeMemo, claim_refs, generic_reason, specific_reason

#: the logger explanations go to, at DEBUG (``kai-cli -vv`` enables it)
EXPLAIN_LOGGER = "kai.scheduler.explain"
#: nodes whose scores an explanation lists (best first)
TOP_NODES = 5

log = logging.getLogger(EXPLAIN_LOGGER)


@dataclass
class MemoNotes:
    """What recording learnt when a memo's answers were asked of the plugins, kept in the memo
    (``ShapeMemo.explained``) for the later pods of the shape that reuse them."""

    #: node -> the plugin that refused it
    refused_by: dict[str, str] = field(default_factory=dict)
    #: node -> the refusal with kai's detail, where the pod's message has kube-scheduler's words only
    #: (a claim allocator's reason), the pod's claim names taken out as in the memo
    details: dict[str, str] = field(default_factory=dict)
    #: node -> the pod (``ns/name``) whose decision asked the plugins about it
    asked_for: dict[str, str] = field(default_factory=dict)
    #: node -> node-local scoring plugin -> its score
    local_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    #: node-local scoring plugin -> its weight
    weights: dict[str, float] = field(default_factory=dict)


class DecisionTrace:
    """Filled in by one decision as it runs (see :mod:`kai_core.scheduler.decide`)."""

    def __init__(self) -> None:
        #: node -> the plugin that refused it, for the nodes the plugins were asked about
        self.refused_by: dict[str, str] = {}
        #: what the device hooks answered: ``removed``, ``ranked`` (device id -> ...), ``allocator``
        self.devices: dict = {}
        #: node -> the claim allocator's whole reason (kube-scheduler's words, then kai's detail)
        self.details: dict[str, str] = {}
        #: scoring plugin -> (weight, node-local, {node: score}) for the plugins asked
        self.scores: dict[str, tuple[float, bool, dict[str, float]]] = {}
        self.nodes: list[str] = []
        self.fresh: set[str] = set()
        self.memo: ShapeMemo | None = None
        self.refs: list[str] = []
        self.pod = ""
        #: the nodes that were scored, and the totals the winner was picked from
        self.feasible: list[str] = []
        self.totals: dict[str, float] = {}
        #: node-local scores of nodes scored for an earlier pod of the shape
        self.memo_scored: set[str] = set()

    def begin(self, pod: dict, snap, nodes: list, todo: list, memo: ShapeMemo) -> None:
        """The candidates, those the plugins are asked about (``todo``; the memo answers for the
        rest) and the memo holding the answers."""
        self.pod = ref(pod)
        self.nodes = [n.name for n in nodes]
        self.fresh = {n.name for n in todo}
        self.memo = memo
        self.refs = claim_refs(pod, snap)
        if memo.explained is None:
            memo.explained = MemoNotes()

    def asked(self, rejected: Mapping[str, object], passed: list, allocations: Mapping[str, object]) -> None:
        """The plugins' answers for the nodes asked about, kept in the memo for later pods."""
        notes = self.memo.explained
        for name in rejected:
            notes.refused_by[name] = self.refused_by.get(name, "?")
            notes.asked_for[name] = self.pod
            if name in self.details:
                notes.details[name] = generic_reason(self.details[name], self.refs)
            else:
                notes.details.pop(name, None)
        for n in passed:
            notes.asked_for[n.name] = self.pod

    def scored(self, feasible: list, memo: ShapeMemo, others: Mapping[str, float]) -> None:
        """The scores as the winner is picked from them: node-local totals (kept in the memo)
        plus the other plugins' weighted sums."""
        notes = memo.explained
        fresh_local: set[str] = set()
        for plugin, (weight, local, scores) in self.scores.items():
            if local:
                notes.weights[plugin] = weight
                for name, score in scores.items():
                    notes.local_scores.setdefault(name, {})[plugin] = score
                    fresh_local.add(name)
        self.feasible = [n.name for n in feasible]
        self.totals = {name: memo.totals.get(name, 0.0) + others.get(name, 0.0) for name in self.feasible}
        self.memo_scored = {name for name in self.feasible if name not in fresh_local and name in notes.local_scores}


@dataclass
class NodeVerdict:
    """One candidate node: whether the pod fits it, and if not why and whose answer that is."""

    node: str
    fits: bool
    reason: str = ""
    plugin: str = ""
    #: the pod whose decision asked the plugins, when the memo answered; "" when they were asked now
    from_memo: str = ""


@dataclass
class Explanation:
    """One decision: its outcome, every candidate node's verdict, the scores of the top nodes,
    and the devices chosen (see :meth:`lines`)."""

    pod: str
    node: str
    message: str
    plugin: str = ""
    verdicts: list[NodeVerdict] = field(default_factory=list)
    #: scoring plugin -> (weight, {node: score}) over the listed nodes
    scores: dict[str, tuple[float, dict[str, float]]] = field(default_factory=dict)
    #: node -> weighted total, best first, at most TOP_NODES
    top: list[tuple[str, float]] = field(default_factory=list)
    feasible: int = 0
    #: nodes whose node-local scores came from the memo
    memo_scored: set[str] = field(default_factory=set)
    #: per claim of the pod: (pod's claim name, claim ns/name, [(request, device id)])
    devices: list[tuple[str, str, list[tuple[str, str]]]] = field(default_factory=list)
    removed: dict[str, str] = field(default_factory=dict)
    ranked: dict[str, float] = field(default_factory=dict)
    allocator: str = ""

    def verdict(self, node: str) -> NodeVerdict | None:
        return next((v for v in self.verdicts if v.node == node), None)

    def lines(self) -> list[str]:
        """The explanation as text, one line each (what ``kai-cli explain`` prints and the debug
        log holds)."""
        if self.node:
            out = [f"pod {self.pod}: scheduled to {self.node}"]
        else:
            by = f" (plugin {self.plugin})" if self.plugin else ""
            out = [f"pod {self.pod}: not scheduled{by}: {self.message}"]
        if self.verdicts:
            memo = sum(1 for v in self.verdicts if v.from_memo)
            out.append(f"filters ({len(self.verdicts)} node(s)"
                       + (f", {memo} answered by the equivalence memo" if memo else "") + "):")
            for v in self.verdicts:
                source = f" [memo: answered for pod {v.from_memo}]" if v.from_memo else ""
                if v.fits:
                    out.append(f"  {v.node}: fits{source}")
                else:
                    out.append(f"  {v.node}: refused by {v.plugin or '?'}: {v.reason}{source}")
        if self.top:
            out.append(f"scores (top {len(self.top)} of {self.feasible} node(s) that fit; "
                       "total = sum of weight x score):")
            for node, total in self.top:
                parts = []
                for plugin, (weight, scores) in self.scores.items():
                    if node in scores:
                        parts.append(f"{plugin} {scores[node]:g} x{weight:g}")
                memo = " [node-local scores from the memo]" if node in self.memo_scored else ""
                mark = "  <- chosen" if node == self.node else ""
                out.append(f"  {node}: total {total:g} ({', '.join(parts) or 'no scores'}){memo}{mark}")
        elif self.node and self.feasible == 1:
            out.append(f"scores: none asked, {self.node} is the only node that fits")
        if self.devices:
            who = f" (allocated by {self.allocator})" if self.allocator else ""
            out.append(f"devices on {self.node}{who}:")
            for name, claim, chosen in self.devices:
                got = ", ".join(f"{request} -> {device}" for request, device in chosen) or "none"
                out.append(f"  claim {name} ({claim}): {got}")
        if self.removed:
            out.append("devices removed by plugins (never chosen):")
            out += [f"  {device}: {reason}" for device, reason in sorted(self.removed.items())]
        if self.ranked:
            out.append("device ranking (summed kai_rank_devices scores, higher preferred):")
            out += [f"  {device}: {score:g}" for device, score in
                    sorted(self.ranked.items(), key=lambda item: (-item[1], item[0]))]
        return out

    def text(self) -> str:
        return "\n".join(self.lines())


def explain(pod: dict, decision, trace: DecisionTrace) -> Explanation:
    """The :class:`Explanation` of ``decision`` (a :class:`~kai_core.scheduler.decide.Decision`)
    from what ``trace`` recorded while it was made."""
    status = decision.status
    out = Explanation(trace.pod or ref(pod), decision.node if decision.ok else "",
                      "" if decision.ok else status.message, status.plugin or "")
    memo = trace.memo
    if memo is not None:
        notes = memo.explained
        for name in trace.nodes:
            fresh = name in trace.fresh
            from_memo = "" if fresh else notes.asked_for.get(name, "?")
            if name in memo.fits:
                out.verdicts.append(NodeVerdict(name, True, from_memo=from_memo))
            elif name in memo.rejected:
                reason = specific_reason(notes.details.get(name, memo.rejected[name]), trace.refs)
                if not isinstance(reason, str):
                    reason = "; ".join(reason)
                plugin = trace.refused_by.get(name, "?") if fresh else notes.refused_by.get(name, "?")
                out.verdicts.append(NodeVerdict(name, False, reason, plugin, from_memo))
    if trace.totals:
        out.feasible = len(trace.feasible)
        ranked = sorted(trace.totals.items(), key=lambda item: (-item[1] if item[1] == item[1] else 1e300, item[0]))
        out.top = ranked[:TOP_NODES]
        listed = {name for name, _ in out.top}
        for plugin, (weight, _local, scores) in trace.scores.items():
            out.scores[plugin] = (weight, {n: s for n, s in scores.items() if n in listed})
        notes = memo.explained
        for name in trace.memo_scored & listed:
            for plugin, score in notes.local_scores.get(name, {}).items():
                out.scores.setdefault(plugin, (notes.weights.get(plugin, 1.0), {}))[1][name] = score
        out.memo_scored = trace.memo_scored & listed
    elif decision.ok:
        out.feasible = 1
    if decision.ok and decision.allocation is not None:
        for claim, result in zip(decision.claims, decision.allocation.allocations, strict=False):
            md = claim.claim.get("metadata") or {}
            chosen = [(r.get("request", ""), f"{r.get('driver')}/{r.get('pool')}/{r.get('device')}")
                      for r in ((result.get("devices") or {}).get("results") or [])]
            out.devices.append((claim.name, f"{md.get('namespace', '')}/{md.get('name', '')}", chosen))
    out.removed = {str(d): reason for d, reason in (trace.devices.get("removed") or {}).items()}
    out.ranked = {str(d): score for d, score in (trace.devices.get("ranked") or {}).items()}
    out.allocator = trace.devices.get("allocator", "")
    return out


class DecisionRecorder:
    """Turns each recorded decision into an :class:`Explanation`: kept in :attr:`last` for the
    pods asked about (``pods``: ``ns/name`` keys; ``keep_all``: every pod) and logged at DEBUG on
    :data:`EXPLAIN_LOGGER` while that is enabled."""

    def __init__(self, pods: Iterable[str] | None = None, *, keep_all: bool = False) -> None:
        self.pods = set(pods) if pods is not None else set()
        self.keep_all = keep_all
        #: ``ns/name`` -> the explanation of that pod's last decision
        self.last: dict[str, Explanation] = {}

    def record(self, pod: dict, decision, trace: DecisionTrace) -> None:
        key = trace.pod or ref(pod)
        logging_on = log.isEnabledFor(logging.DEBUG)
        keep = self.keep_all or key in self.pods
        if not keep and not logging_on:
            return
        explanation = explain(pod, decision, trace)
        if keep:
            self.last[key] = explanation
        if logging_on:
            log.debug("decision explained:\n%s", explanation.text())


def debug_recorder(current: DecisionRecorder | None) -> DecisionRecorder | None:
    """The recorder a cycle runs with: ``current`` (one asked for), else one that only logs while
    :data:`EXPLAIN_LOGGER` is enabled for DEBUG, else None (nothing recorded)."""
    if current is not None:
        return current
    return DecisionRecorder() if log.isEnabledFor(logging.DEBUG) else None
