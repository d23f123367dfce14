"""The scheduling cycle: snapshot, then for each pending pod pre-filter, filter (claim allocation
included), score, and commit the chosen node as a BindRequest. The scheduler never binds a pod.

One cycle (:meth:`Scheduler.run_cycle`):

1. bring the cache up to date; delete BindRequests that failed for good or whose node is gone
   (their pods are scheduled again in this very cycle). A request whose node is gone but whose pod
   still holds claim reservations is left to the binder, which rolls them back and fails it;
2. build a :class:`~kai_core.snapshot.Snapshot` (in-flight BindRequests counted as used);
3. for each pending pod of this scheduler (``spec.schedulerName``), highest priority first, then
   oldest, then by namespace and name, except pods backing off (below):

   - ``kai_pre_filter`` (any reason rejects the pod),
   - ``kai_filter_nodes``, each plugin seeing the nodes that passed the plugins before it,
   - ``kai_allocate_claims``, once, over the nodes that passed every filter, for pods with claims,
   - ``kai_score_nodes`` over the feasible nodes (skipped when only one is left),
   - commit: ``kai_bind_request`` annotations, the BindRequest written, and the decision assumed
     in the snapshot so later pods of the cycle see its resources and devices taken;

4. a pod that fits nowhere gets ``PodScheduled=False`` / ``Unschedulable`` with kube-scheduler's
   ``0/N nodes are available: ...`` message and a ``FailedScheduling`` Event, written only when
   the message changes.

**Gangs** (:mod:`kai_core.gang`). Before the first pod, ``kai_pod_groups`` is called once with every
pod of this scheduler (KAI's PodGroups come through it too). A gang is placed when the order
reaches its first waiting member, once per cycle: ``kai_group_node_subsets`` is called once for
it, then, subset after subset, every waiting member goes through the steps above restricted to the
subset, each decision assumed so the next member sees it. The first subset where every declaration
of the gang is satisfied wins and all its BindRequests are written (after every
``kai_bind_request`` answered); otherwise every decision is taken back (:meth:`Snapshot.unassume`)
and nothing is written: the members get one reason naming the gang, what fit and what did not.

A plugin that raises, or returns something of the wrong shape, makes only the current pod
unschedulable, with a message naming the plugin and the hook.

**Pod backoff.** A pod whose binding failed for good (its BindRequest deleted as failed) is
scheduled again at once the first time, since that is usually a lost race (a claim or a node taken
meanwhile). From the second failure on it waits ``pod_initial_backoff * 2**(failures-2)`` seconds
(at most ``pod_max_backoff``; kube-scheduler's defaults are 1 and 10), so a pod that can never be
bound does not take the first place and its resources in every cycle while others wait.
:meth:`Scheduler.next_due` says when the next backed-off pod is due, on the scheduler's ``clock``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kai_core.bindrequest import build_bind_request
from kai_core.builtins.dra import pod_claims
from kai_core.cache import Cache
from kai_core.equivalence import (
    ShapeMemo,
    claim_refs,
    declares_node_local,
    generic_reason,
    pod_shape,
    specific_reason,
)
from kai_core.errors import ApiError, Conflict, NotFound
from kai_core.features import FeatureGates
from kai_core.gang import (
    MAX_SUBSETS_IN_MESSAGE,
    MAX_SUBSETS_TRIED,
    RES_POD_GROUPS,
    Gang,
    GroupSpec,
    NodeSubset,
    build_gangs,
    intersect_subsets,
    pod_key,
)
from kai_core.objects import clone, now_rfc3339, ref
from kai_core.plugins import KaiPluginManager, PluginError
from kai_core.resources import (
    RES_BIND_REQUESTS,
    RES_CLAIM_TEMPLATES,
    RES_CLAIMS,
    RES_DEVICE_CLASSES,
    RES_NAMESPACES,
    RES_NODES,
    RES_PODS,
    RES_SLICES,
)
from kai_core.snapshot import (
    ClaimAllocation,
    NodeInfo,
    PodClaim,
    Snapshot,
    bind_request_failed_for_good,
    is_active_pod,
)

log = logging.getLogger("kai.scheduler")

DEFAULT_SCHEDULER_NAME = "kai-scheduler"
COMPONENT = "kai-scheduler"
#: distinct reasons listed in an unschedulable message; the rest are summed up in one entry
MAX_REASONS_IN_MESSAGE = 10
#: what a command line should pass as ``backoff_limit`` by default (3 attempts per BindRequest).
#: SchedulerConfig itself keeps None, KAI's behaviour (no ``spec.backoffLimit``: one attempt).
DEFAULT_BACKOFF_LIMIT = 3


@dataclass
class SchedulerConfig:
    """What ``kai-cli run`` passes to the scheduler (``--scheduler-name``, ``--feature-gates``, ...)."""

    #: only pods with this ``spec.schedulerName`` are scheduled
    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    features: FeatureGates = field(default_factory=FeatureGates)
    #: plugin name -> weight of its scores (default 1)
    score_weights: dict[str, float] = field(default_factory=dict)
    #: written into each BindRequest's spec.backoffLimit (None: not set, as KAI does; the binder
    #: then makes one attempt). See DEFAULT_BACKOFF_LIMIT.
    backoff_limit: int | None = None
    #: seconds a pod waits after its second failed binding, doubling with each further one
    pod_initial_backoff: float = 1.0
    #: the longest a pod waits between failed bindings
    pod_max_backoff: float = 10.0


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


@dataclass
class Decision:
    """A node chosen for a pod, with the pod's claims and their allocation on that node."""

    node: str
    claims: list[PodClaim]
    allocation: ClaimAllocation | None


class Unschedulable(Exception):
    """The pod fits nowhere this cycle; ``message`` is what the pod's condition says."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def watched_resources(dra: bool, pod_groups: bool = True) -> list[str]:
    """The kinds the scheduler's cache lists and watches: namespaces, nodes, pods, BindRequests and
    (``pod_groups``) KAI's PodGroups, plus the DRA kinds with the gate on. Plugins' kinds
    (``kai_resource_kinds``) come on top, see :func:`plugin_resources`."""
    res = [RES_NAMESPACES, RES_NODES, RES_PODS, RES_BIND_REQUESTS]
    if pod_groups:
        res.append(RES_POD_GROUPS)
    if dra:
        res += [RES_CLAIMS, RES_CLAIM_TEMPLATES, RES_SLICES, RES_DEVICE_CLASSES]
    return res


def plugin_resources(pm: KaiPluginManager) -> list[str]:
    """The resource strings (``plural.group``) of the kinds plugins declare with
    ``kai_resource_kinds``, in plugin order; malformed CRDs are skipped (the cluster reports them)."""
    out: list[str] = []
    for _plugin, res in pm.call_each("kai_resource_kinds"):
        if isinstance(res, PluginError) or not isinstance(res, list):
            continue
        for crd in res:
            spec = crd.get("spec") if isinstance(crd, Mapping) else None
            try:
                resource = f"{spec['names']['plural']}.{spec['group']}"
            except (KeyError, TypeError):
                continue
            if resource not in out:
                out.append(resource)
    return out


def default_resources(store, pm: KaiPluginManager, dra: bool) -> list[str]:
    """What a Scheduler watches when not told: :func:`watched_resources`, with PodGroups only when
    the store serves them, and every plugin kind the store serves (``store.kinds``)."""
    kinds = getattr(store, "kinds", None)

    def served(resource: str) -> bool:
        return kinds is None or resource in kinds

    res = watched_resources(dra, pod_groups=served(RES_POD_GROUPS))
    return res + [r for r in plugin_resources(pm) if served(r) and r not in res]


class Scheduler:
    """Runs scheduling cycles against a store; see the module docstring for what a cycle does."""

    def __init__(self, store, pm: KaiPluginManager, config: SchedulerConfig | None = None, *,
                 clock: Callable[[], float] = time.monotonic, resources: list[str] | None = None) -> None:
        """``resources`` are the kinds to watch; by default :func:`default_resources` (what a caller
        that checked what the cluster serves should pass instead)."""
        self.store = store
        self.pm = pm
        self.config = config or SchedulerConfig()
        if resources is None:
            resources = default_resources(store, pm, self.config.features.dra)
        self.cache = Cache(store, resources)
        self.last_snapshot: Snapshot | None = None
        self.clock = clock
        #: pod uid -> (failed bindings, not to be scheduled before this time)
        self._backoff: dict[str, tuple[int, float]] = {}

    def run_cycle(self) -> CycleResult:
        """One cycle over every pending pod; returns counts (decisions are in the store)."""
        start = time.perf_counter()
        result = CycleResult()
        self.cache.sync()
        if self._clean_bind_requests():
            self.cache.sync()
        snap = Snapshot(self.cache, self.config.scheduler_name, self.config.features, self.pm)
        self.last_snapshot = snap
        pending = snap.pending_pods()
        self._forget_backoffs(snap)
        now = self.clock()
        ready = []
        for pod in pending:
            if self._backoff.get(pod["metadata"].get("uid"), (0, now))[1] > now:
                result.backed_off += 1
            else:
                ready.append(pod)
        gangs = self._gangs(snap, ready) if ready else {}
        done: set[int] = set()
        memos: dict[str, ShapeMemo] | None = {} if self._memo_allowed() else None
        for pod in ready:
            gang = gangs.get(pod_key(pod))
            if gang is not None:
                if id(gang) not in done:
                    done.add(id(gang))
                    try:
                        self._place_gang(gang, snap, result)
                    except Exception as exc:  # a bug of ours on one gang must not stop the others
                        log.exception("%s: internal error while scheduling", gang.description)
                        result.errors += len(gang.pods)
                        for member in gang.pods:
                            self._report_unschedulable(
                                member, f"internal scheduler error: {type(exc).__name__}: {exc}")
                continue
            try:
                decision = self.decide(pod, snap, memos=memos)
                committed = self._commit(pod, decision, snap)
            except Unschedulable as exc:
                result.unschedulable += 1
                self._report_unschedulable(pod, exc.message)
                continue
            except Exception as exc:  # a bug of ours on one pod must not stop the others
                log.exception("pod %s: internal error while scheduling", ref(pod))
                result.errors += 1
                self._report_unschedulable(pod, f"internal scheduler error: {type(exc).__name__}: {exc}")
                continue
            if committed:
                result.scheduled += 1
            else:
                result.errors += 1
        result.seconds = time.perf_counter() - start
        return result

    # -- one pod -------------------------------------------------------------------------------

    def decide(self, pod: dict, snap: Snapshot, nodes: list[NodeInfo] | None = None, *,
               pre_filtered: bool = False, memos: dict[str, ShapeMemo] | None = None) -> Decision:
        """Choose a node for ``pod`` (and its claims' allocation) among ``nodes`` (default: every
        node); raises Unschedulable. ``pre_filtered`` skips ``kai_pre_filter`` (already passed).
        With ``memos`` (the cycle's, by pod shape) and every node, answers the plugins gave for a
        pod of the same shape are reused for nodes unchanged since (:mod:`kai_core.equivalence`)."""
        if not pre_filtered:
            self.pre_filter(pod, snap)
        if nodes is None:
            nodes = snap.nodes
        if not nodes:
            raise Unschedulable("0/0 nodes are available: no nodes in the cluster.")
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
        return self._decide_among(pod, snap, nodes, memo, todo, memos, shape)

    def _decide_among(self, pod: dict, snap: Snapshot, nodes: list[NodeInfo], memo: ShapeMemo,
                      todo: list[NodeInfo], memos: dict[str, ShapeMemo] | None, shape: str | None) -> Decision:
        """:meth:`decide` with ``memo`` holding the answers already known for ``nodes`` (none for a
        pod without a shape): filters and the allocator are asked about ``todo`` only. A failure
        that leaves the memo incomplete takes it out of ``memos``."""
        has_claims = bool((pod.get("spec") or {}).get("resourceClaims"))
        claims: list[PodClaim] = []
        # reasons are kept with the pod's own claim names taken out (the allocator names the
        # claim), so the next pod of the shape is told about its claims, not this one's
        refs = claim_refs(pod, snap)
        try:
            if todo:
                rejected: dict[str, str | list[str]] = {}
                passed = self._filter(pod, todo, rejected, snap)
                allocations: dict[str, ClaimAllocation] = {}
                if passed and has_claims:
                    claims, allocations = self._allocate(pod, passed, rejected, snap)
                memo.rejected.update((name, generic_reason(r, refs)) for name, r in rejected.items())
                for n in passed:
                    if not has_claims:
                        memo.fit(n, None)
                    elif n.name in allocations:
                        memo.fit(n, allocations[n.name])
        except BaseException:
            if shape is not None:
                memos.pop(shape, None)  # the plugins' answers were cut short: start afresh next pod
            raise
        if has_claims and not claims:
            claims, reason = pod_claims(pod, snap)
            if reason:
                raise Unschedulable(reason)
        if not memo.fits:  # the memo is complete: the next pods of the shape need ask nothing
            raise Unschedulable(unschedulable_message(
                len(nodes), {name: specific_reason(r, refs) for name, r in memo.rejected.items()}))
        try:
            best = self._best_node(pod, nodes, snap, memo)
        except BaseException:
            if shape is not None:
                memos.pop(shape, None)  # scores half recorded
            raise
        allocation = memo.fits[best]
        if allocation is not None:  # the memo's copy may serve the next pod of the shape too
            allocation = ClaimAllocation(clone(allocation.allocations))
        return Decision(best, claims, allocation)

    def _memo_allowed(self) -> bool:
        """Whether filter and allocation answers may be reused per pod shape: not when a plugin
        implementing either says its answers depend on other nodes (``KAI_NODE_LOCAL = False``)."""
        return not any(
            declares_node_local(impl.plugin) is False
            for hook in ("kai_filter_nodes", "kai_allocate_claims", "kai_rank_devices")
            for impl in self.pm.implementations(hook))

    def pre_filter(self, pod: dict, snap: Snapshot) -> None:
        """Every ``kai_pre_filter``; raises Unschedulable with the first reason given."""
        for plugin, res in self.pm.call_each("kai_pre_filter", pod=pod, snapshot=snap):
            if isinstance(res, PluginError):
                raise Unschedulable(str(res))
            if not isinstance(res, str):
                raise self._bad_result(
                    plugin, "kai_pre_filter", f"expected None or a reason (str), got {type(res).__name__}")
            raise Unschedulable(res)

    def _filter(self, pod: dict, nodes: list[NodeInfo], rejected: dict, snap: Snapshot) -> list[NodeInfo]:
        """Run every filter in turn over the nodes still in; returns the nodes left and records
        each rejected node's reason(s) in ``rejected``."""
        hook = "kai_filter_nodes"
        for impl in self.pm.implementations(hook):
            if not nodes:
                break
            res = self.pm.call_impl(impl, hook, {"pod": pod, "nodes": nodes, "snapshot": snap})
            if res is None:
                continue
            if isinstance(res, PluginError):
                raise Unschedulable(str(res))
            if not isinstance(res, Mapping):
                raise self._bad_result(
                    impl.plugin_name, hook, f"expected a dict {{node name: reason}}, got {type(res).__name__}")
            if not res:
                continue
            left = []
            for n in nodes:
                reason = res.get(n.name)
                if reason is None:
                    left.append(n)
                elif isinstance(reason, str) or (
                        isinstance(reason, list | tuple) and reason and all(isinstance(r, str) for r in reason)):
                    rejected[n.name] = reason
                else:
                    raise self._bad_result(
                        impl.plugin_name, hook,
                        f"node {n.name}: expected a reason (str or list of str), got {reason!r}")
            nodes = left
        return nodes

    def _allocate(
        self, pod: dict, feasible: list[NodeInfo], rejected: dict, snap: Snapshot
    ) -> tuple[list[PodClaim], dict[str, ClaimAllocation]]:
        """One ``kai_allocate_claims`` call over the feasible nodes: the pod's claims and, per
        node where they fit, their allocation; nodes where they do not go into ``rejected``."""
        hook = "kai_allocate_claims"
        claims, reason = pod_claims(pod, snap)
        if reason:
            raise Unschedulable(reason)
        answer = self.pm.call_first(hook, pod=pod, claims=claims, nodes=feasible, snapshot=snap)
        if answer is None:
            raise Unschedulable("no plugin can allocate this pod's resource claims")
        plugin, res = answer
        if isinstance(res, PluginError):
            raise Unschedulable(str(res))
        if not isinstance(res, Mapping):
            raise self._bad_result(
                plugin, hook, f"expected a dict {{node name: ClaimAllocation or reason}}, got {type(res).__name__}")
        allocations: dict[str, ClaimAllocation] = {}
        for n in feasible:
            got = res.get(n.name, f"plugin {plugin!r} gave no allocation for this node")
            if isinstance(got, ClaimAllocation):
                if len(got.allocations) != len(claims):
                    raise self._bad_result(
                        plugin, hook, f"node {n.name}: {len(got.allocations)} allocation(s) for "
                        f"{len(claims)} claim(s)")
                allocations[n.name] = got
            elif isinstance(got, str):
                rejected[n.name] = f"cannot allocate all claims: {got}"
            else:
                raise self._bad_result(
                    plugin, hook, f"node {n.name}: expected a ClaimAllocation or a reason, got {type(got).__name__}")
        return claims, allocations

    def _best_node(self, pod: dict, nodes: list[NodeInfo], snap: Snapshot, memo: ShapeMemo) -> str:
        """The node of ``memo.fits`` with the highest weighted score sum; ties go to the first
        name. Totals of the plugins declaring node-local scores are kept in the memo: those
        plugins are asked only about nodes fitted since their last call, and while no other plugin
        scores the pod, the best node comes off the memo's heap without a pass over the nodes."""
        feasible = memo.feasible(nodes)
        if len(feasible) == 1:
            return feasible[0].name
        hook = "kai_score_nodes"
        unscored = {n.name: n for n in memo.unscored if n.name in memo.fits}
        memo.unscored = []
        local_sums = dict.fromkeys(unscored, 0.0)
        others: dict[str, float] = {}
        for impl in self.pm.implementations(hook):
            local = declares_node_local(impl.plugin) is True
            nodes = list(unscored.values()) if local else feasible
            if not nodes:
                continue
            res = self.pm.call_impl(impl, hook, {"pod": pod, "nodes": nodes, "snapshot": snap})
            if res is not None:
                self._add_scores(impl.plugin_name, res, local_sums if local else others,
                                 unscored if local else memo.fits)
        for name, total in local_sums.items():
            memo.set_total(name, total)
        if not others:
            best = memo.best()
            if best is not None:
                return best
        totals = memo.totals
        return _top({n.name: totals.get(n.name, 0.0) + others.get(n.name, 0.0) for n in feasible})

    def _add_scores(self, plugin: str, res: object, into: dict[str, float], among: Mapping) -> None:
        """Add a ``kai_score_nodes`` answer, weighted, to ``into`` for the nodes in ``among``;
        raises Unschedulable for an error or an answer of the wrong shape."""
        hook = "kai_score_nodes"
        if isinstance(res, PluginError):
            raise Unschedulable(str(res))
        if not isinstance(res, Mapping):
            raise self._bad_result(
                plugin, hook, f"expected a dict {{node name: score}}, got {type(res).__name__}")
        weight = self.config.score_weights.get(plugin, 1.0)
        try:
            for name, score in res.items():
                if name in among:
                    into[name] = into.get(name, 0.0) + weight * score
        except TypeError:
            raise self._bad_result(
                plugin, hook, f"node {name}: expected a number, got {score!r}") from None

    def _bad_result(self, plugin: str, hook: str, problem: str) -> Unschedulable:
        """The pod's reason when a plugin returned something the hook does not accept."""
        return Unschedulable(str(self.pm.bad_result(plugin, hook, problem)))

    def _commit(self, pod: dict, decision: Decision, snap: Snapshot) -> bool:
        """Write the decision as a BindRequest and assume it in the snapshot; False if it could
        not be written (the pod is tried again next cycle)."""
        br = self._bind_request(pod, decision, snap)
        if isinstance(br, str):
            self._report_unschedulable(pod, br)
            return False
        written = self._write(pod, br)
        if written is not False:  # None: maybe created (a timeout); count it for the rest of the cycle
            snap.assume(pod, decision.node, decision.claims, decision.allocation)
        return bool(written)

    def _bind_request(self, pod: dict, decision: Decision, snap: Snapshot) -> dict | str:
        """The BindRequest for a decision, with the annotations of ``kai_bind_request``; or the
        reason (a plugin's failure) why it cannot be written."""
        pairs = []
        if decision.allocation is not None:
            allocs = decision.allocation.allocations
            pairs = [(pc.name, alloc) for pc, alloc in zip(decision.claims, allocs, strict=True)]
        br = build_bind_request(pod, decision.node, pairs, self.config.backoff_limit,
                                requests=snap.requests_of(pod))
        node = snap.node_by_name[decision.node]
        annotations: dict = {}
        for plugin, res in self.pm.call_each("kai_bind_request", pod=pod, node=node, bind_request=br):
            if not isinstance(res, PluginError) and not (
                    isinstance(res, Mapping) and all(isinstance(v, str) for v in res.values())):
                res = self.pm.bad_result(plugin, "kai_bind_request",
                                         f"expected a dict of annotations (str values), got {res!r}")
            if isinstance(res, PluginError):
                return str(res)
            annotations.update(res)
        if annotations:
            br["metadata"].setdefault("annotations", {}).update(annotations)
        return br

    def _write(self, pod: dict, br: dict) -> bool | None:
        """Create the BindRequest: True when written, False when surely not, None when it may have
        been (a 5xx, 429 or lost connection: the decision counts as taken for the rest of the
        cycle; the next one sees what is there)."""
        try:
            self.store.create(br)
        except (ApiError, OSError) as exc:
            log.error("cannot write BindRequest for pod %s: %s", ref(pod), getattr(exc, "message", exc))
            if not isinstance(exc, ApiError) or exc.code >= 500 or exc.code == 429:
                return None
            return False
        log.info("pod %s: node %s selected (BindRequest %s)", ref(pod), br["spec"]["selectedNode"],
                 br["metadata"]["name"])
        return True

    # -- gangs ---------------------------------------------------------------------------------

    def _gangs(self, snap: Snapshot, ready: list[dict]) -> dict[tuple[str, str], Gang]:
        """One ``kai_pod_groups`` call per plugin; waiting pod key -> its gang."""
        hook = "kai_pod_groups"
        declared: list[tuple[str, GroupSpec]] = []
        pods = None
        for impl in self.pm.implementations(hook):
            if pods is None:
                pods = snap.group_candidates()
            res = self.pm.call_impl(impl, hook, {"pods": pods, "snapshot": snap})
            if res is None or isinstance(res, PluginError):
                continue  # a failure is logged by the manager; the plugin declares nothing this cycle
            if not isinstance(res, list | tuple) or not all(
                    isinstance(g, GroupSpec) and isinstance(g.pods, list) and (
                        g.min_member is None or (isinstance(g.min_member, int) and g.min_member >= 0))
                    for g in res):
                self.pm.bad_result(impl.plugin_name, hook,
                                   "expected a list of kai_core.gang.GroupSpec (pods a list, min_member "
                                   f"None or an int >= 0), got {res!r:.200}")
                continue
            declared += [(impl.plugin_name, g) for g in res]
        if not declared:
            return {}
        return build_gangs(declared, ready, snap.node_of, snap.pods)

    def _subsets(self, gang: Gang, snap: Snapshot) -> list[NodeSubset]:
        """The node subsets to try for a gang (every node when no plugin proposes any); raises
        Unschedulable with a plugin's reason when none can hold it."""
        hook = "kai_group_node_subsets"
        proposals: list[tuple[str, list[NodeSubset]]] = []
        for plugin, res in self.pm.call_each(hook, group=gang, nodes=snap.nodes, snapshot=snap):
            if isinstance(res, PluginError):
                raise Unschedulable(str(res))
            if isinstance(res, str):
                raise Unschedulable(res)
            if not isinstance(res, list | tuple) or not all(
                    isinstance(s, NodeSubset) and isinstance(s.nodes, list | tuple) for s in res):
                raise self._bad_result(
                    plugin, hook, f"expected a list of kai_core.gang.NodeSubset or a reason, got {res!r:.200}")
            proposals.append((plugin, [NodeSubset(s.name, [n for n in s.nodes if n in snap.node_by_name])
                                       for s in res]))
        if not proposals:
            return [NodeSubset("", [n.name for n in snap.nodes])]
        subsets = [s for s in intersect_subsets(proposals) if s.nodes]
        if not subsets:
            names = ", ".join(repr(p) for p, _ in proposals)
            raise Unschedulable(f"{gang.description}: no node subset proposed by plugin(s) {names} "
                                "holds a node of the cluster")
        return subsets

    def _place_gang(self, gang: Gang, snap: Snapshot, result: CycleResult) -> None:
        """Place the gang's waiting members all in one node subset, or none of them (see the module
        docstring); counts go into ``result``."""
        try:
            why = gang.unreachable()
            if why:
                raise Unschedulable(why)
            subsets = self._subsets(gang, snap)
        except Unschedulable as exc:
            self._gang_unschedulable(gang, exc.message, result)
            return
        # pre-filters are node-independent: once per member, not once per subset
        candidates, refused = [], {}
        for pod in gang.pods:
            try:
                self.pre_filter(pod, snap)
                candidates.append(pod)
            except Unschedulable as exc:
                refused[pod_key(pod)] = exc.message
        if not gang.satisfied(pod_key(p) for p in candidates):
            message = next(iter(refused.values()), "")
            if len(gang.pods) > 1:
                message = (f"{gang.description}: {gang.need} pod(s) must be placed together but {len(refused)} "
                           f"cannot be scheduled now: {_first(refused)}")
            self._gang_unschedulable(gang, message, result)
            return
        attempts: list[tuple[NodeSubset, int, str]] = []
        placed: list[tuple[dict, Decision]] = []
        failed: dict[tuple[str, str], str] = {}
        for subset in subsets[:MAX_SUBSETS_TRIED]:
            nodes = [snap.node_by_name[n] for n in dict.fromkeys(subset.nodes)]
            placed, failed = self._try_subset(gang, candidates, nodes, snap)
            if gang.satisfied(pod_key(p) for p, _ in placed):
                break
            for pod, d in reversed(placed):
                snap.unassume(pod, d.node, d.claims, d.allocation)
            attempts.append((subset, len(placed), _first(failed)))
            placed = []
        if not placed:
            if len(gang.pods) == 1 and len(attempts) == 1 and not attempts[0][0].name and failed:
                message = next(iter(failed.values()))  # a gang of one: the pod's own reason says it all
            else:
                message = self._gang_message(gang, subsets, attempts)
            self._gang_unschedulable(gang, message, result)
            return
        failed.update(refused)
        self._commit_gang(gang, placed, failed, snap, result)

    def _try_subset(self, gang: Gang, pods: list[dict], nodes: list[NodeInfo], snap: Snapshot
                    ) -> tuple[list[tuple[dict, Decision]], dict[tuple[str, str], str]]:
        """Decide every member inside ``nodes``, assuming each decision; stops early once the gang
        cannot be satisfied any more. Returns the decisions (assumed) and the failures."""
        placed: list[tuple[dict, Decision]] = []
        failed: dict[tuple[str, str], str] = {}
        remaining = {pod_key(p) for p in pods}
        new: set[tuple[str, str]] = set()
        for pod in pods:
            key = pod_key(pod)
            remaining.discard(key)
            try:
                d = self.decide(pod, snap, nodes, pre_filtered=True)
            except Unschedulable as exc:
                failed[key] = exc.message
            except Exception as exc:  # a bug of ours on one member fails the attempt, not the cycle
                log.exception("pod %s: internal error while scheduling", ref(pod))
                failed[key] = f"internal scheduler error: {type(exc).__name__}: {exc}"
            else:
                snap.assume(pod, d.node, d.claims, d.allocation)
                placed.append((pod, d))
                new.add(key)
            if gang.hopeless(new, remaining):
                break
        return placed, failed

    def _commit_gang(self, gang: Gang, placed: list[tuple[dict, Decision]], failed: dict,
                     snap: Snapshot, result: CycleResult) -> None:
        """Write the BindRequests of a gang that fits; members left out get their own reasons.

        Every ``kai_bind_request`` answers first: one failure and nothing is written. A store error
        on the first write also stops the gang (nothing written, tried again next cycle); one after
        some were written cannot be taken back safely (the binder may be at work), so those stay
        and count as placed members next cycle."""
        brs = []
        for pod, d in placed:
            br = self._bind_request(pod, d, snap)
            if isinstance(br, str):
                for p, dd in reversed(placed):
                    snap.unassume(p, dd.node, dd.claims, dd.allocation)
                self._gang_unschedulable(gang, f"{gang.description}: not placed: {br}", result)
                return
            brs.append(br)
        for i, ((pod, d), br) in enumerate(zip(placed, brs, strict=True)):
            written = self._write(pod, br)
            if written is False and i == 0:
                # nothing is written yet: keep it that way (the same error would likely hit the rest)
                for p, dd in reversed(placed):
                    snap.unassume(p, dd.node, dd.claims, dd.allocation)
                result.errors += len(placed)
                return
            if written is False:
                # members already written stay: they count toward the minimum next cycle, which
                # places the rest where the plugins' subsets keep them (the gang's own nodes)
                snap.unassume(pod, d.node, d.claims, d.allocation)
                result.errors += 1
            elif written:
                result.scheduled += 1
            else:
                result.errors += 1
        for pod in gang.pods:
            message = failed.get(pod_key(pod))
            if message is not None:
                result.unschedulable += 1
                self._report_unschedulable(pod, message)

    def _gang_message(self, gang: Gang, subsets: list[NodeSubset], attempts: list[tuple[NodeSubset, int, str]]
                      ) -> str:
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

    def _gang_unschedulable(self, gang: Gang, message: str, result: CycleResult) -> None:
        for pod in gang.pods:
            result.unschedulable += 1
            self._report_unschedulable(pod, message)

    # -- housekeeping --------------------------------------------------------------------------

    def _clean_bind_requests(self) -> bool:
        """Delete BindRequests that failed for good or whose node is gone, so their pods are
        scheduled again. Succeeded ones stay until their pod goes (ownerReference GC).

        A request in flight whose node is gone is deleted only while its pod holds no claim
        reservation: otherwise the binder may have written them, and deleting the request would
        leave them behind for a pod that is not bound. The binder fails such a request (rolling
        the claims back first) and it is deleted then."""
        nodes = self.cache.objects.get(RES_NODES, {})
        deleted = False
        reserved: set[str] | None = None
        for br in list(self.cache.objects.get(RES_BIND_REQUESTS, {}).values()):
            spec = br.get("spec") or {}
            phase = (br.get("status") or {}).get("phase")
            node_gone = ("", spec.get("selectedNode", "")) not in nodes and phase != "Succeeded"
            failed = bind_request_failed_for_good(br)
            if not (failed or node_gone):
                continue
            md = br["metadata"]
            uid = self._pod_uid_of(br)
            if node_gone and phase != "Failed":
                if reserved is None:
                    reserved = self._reserved_pod_uids()
                if uid in reserved:
                    log.info("BindRequest %s/%s: node %s is gone; left to the binder, which holds claims "
                             "for pod %s", md["namespace"], md["name"], spec.get("selectedNode"),
                             spec.get("podName"))
                    continue
            why = "its node is gone" if node_gone else f"it failed: {(br.get('status') or {}).get('reason')}"
            try:
                self.store.delete(RES_BIND_REQUESTS, md["name"], md["namespace"])
            except NotFound:
                continue
            except (ApiError, OSError) as exc:
                log.warning("cannot delete BindRequest %s/%s: %s", md["namespace"], md["name"],
                            getattr(exc, "message", exc))
                continue
            deleted = True
            if failed and not node_gone and uid:
                self._record_failed_binding(uid)
            log.info("BindRequest %s/%s deleted (%s); pod %s will be scheduled again",
                     md["namespace"], md["name"], why, spec.get("podName"))
        return deleted

    def _pod_uid_of(self, br: dict) -> str | None:
        """The uid of the pod a BindRequest is for: its Pod ownerReference, else the cached pod."""
        for o in br["metadata"].get("ownerReferences") or []:
            if o.get("kind") == "Pod" and o.get("uid"):
                return o["uid"]
        spec = br.get("spec") or {}
        pod = self.cache.get(RES_PODS, br["metadata"].get("namespace", ""), spec.get("podName", ""))
        return (pod or {}).get("metadata", {}).get("uid")

    def _reserved_pod_uids(self) -> set[str]:
        """Uids of the pods some cached claim is reserved for."""
        out = set()
        for claim in self.cache.objects.get(RES_CLAIMS, {}).values():
            for r in (claim.get("status") or {}).get("reservedFor") or []:
                if r.get("uid"):
                    out.add(r["uid"])
        return out

    # -- pod backoff ---------------------------------------------------------------------------

    def _record_failed_binding(self, uid: str) -> None:
        failures = self._backoff.get(uid, (0, 0.0))[0] + 1
        delay = 0.0
        if failures >= 2:
            delay = min(self.config.pod_initial_backoff * 2 ** (failures - 2), self.config.pod_max_backoff)
        self._backoff[uid] = (failures, self.clock() + delay)
        if delay:
            log.info("pod %s: binding failed %d times; not scheduled again for %.1fs", uid, failures, delay)

    def _forget_backoffs(self, snap: Snapshot) -> None:
        """Drop the failure counts of pods that are bound, finished or gone."""
        if not self._backoff:
            return
        waiting = {p["metadata"].get("uid") for p in snap.pods.values()
                   if not (p.get("spec") or {}).get("nodeName") and is_active_pod(p)}
        for uid in [u for u in self._backoff if u not in waiting]:
            del self._backoff[uid]

    def next_due(self) -> float | None:
        """When (on the scheduler's ``clock``) the next pod backing off may be scheduled again, or
        None when no pod is waiting out a backoff."""
        now = self.clock()
        return min((t for _, t in self._backoff.values() if t > now), default=None)

    def _report_unschedulable(self, pod: dict, message: str) -> None:
        """Set PodScheduled=False/Unschedulable with ``message`` and emit an Event, only when the
        condition's content changes (no write storms on every cycle)."""
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if (cond.get("type") == "PodScheduled" and cond.get("status") == "False"
                    and cond.get("reason") == "Unschedulable" and cond.get("message") == message):
                log.debug("pod %s still unschedulable: %s", ref(pod), message)
                return
        new = clone(pod)
        conds = [c for c in new.setdefault("status", {}).get("conditions") or [] if c.get("type") != "PodScheduled"]
        conds.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                      "lastProbeTime": None, "lastTransitionTime": now_rfc3339()})
        new["status"]["conditions"] = conds
        try:
            self.store.update_status(new)
        except (Conflict, NotFound):
            return  # the pod changed or went; the next cycle looks again
        except ApiError as exc:
            log.warning("cannot update the status of pod %s: %s", ref(pod), exc.message)
            return
        log.info("pod %s unschedulable: %s", ref(pod), message)
        self._event(pod, "Warning", "FailedScheduling", message)

    def _event(self, pod: dict, type_: str, reason: str, message: str) -> None:
        md = pod["metadata"]
        ts = now_rfc3339()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{md['name']}.", "namespace": md.get("namespace", "default")},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": md["name"],
                               "namespace": md.get("namespace", "default"), "uid": md.get("uid")},
            "type": type_,
            "reason": reason,
            "message": message,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }
        try:
            self.store.create(event)
        except ApiError as exc:
            log.warning("cannot record event for pod %s: %s", ref(pod), exc.message)


def _top(totals: dict[str, float]) -> str:
    """The name with the highest total (NaN never wins); ties go to the name that sorts first."""
    top = max((t for t in totals.values() if t == t), default=None)
    if top is None:
        return min(totals)
    return min(name for name, total in totals.items() if total == top)


def _first(failures: Mapping[tuple[str, str], str]) -> str:
    """``pod <namespace>/<name>: <reason>`` of the first failure, or ""."""
    for (namespace, name), reason in failures.items():
        return f"pod {namespace}/{name}: {reason}" if namespace else f"pod {name}: {reason}"
    return ""


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
