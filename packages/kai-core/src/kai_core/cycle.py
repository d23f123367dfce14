"""The scheduling cycle: snapshot, then for each pending pod pre-filter, filter (claim allocation
included), score, and commit the chosen node as a BindRequest. The scheduler never binds a pod."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from kai_core.bindrequest import build_bind_request
from kai_core.builtins.dra import pod_claims
from kai_core.cache import Cache
from kai_core.errors import ApiError, Conflict, NotFound
from kai_core.features import FeatureGates
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
from kai_core.snapshot import ClaimAllocation, PodClaim, Snapshot, bind_request_failed_for_good

log = logging.getLogger("kai.scheduler")

DEFAULT_SCHEDULER_NAME = "kai-scheduler"
COMPONENT = "kai-scheduler"


@dataclass
class SchedulerConfig:
    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    features: FeatureGates = field(default_factory=FeatureGates)
    #: plugin name -> weight of its scores (default 1)
    score_weights: dict[str, float] = field(default_factory=dict)
    #: written into each BindRequest's spec.backoffLimit (None: not set, as KAI does)
    backoff_limit: int | None = None


@dataclass
class CycleResult:
    scheduled: int = 0
    unschedulable: int = 0
    errors: int = 0
    seconds: float = 0.0


@dataclass
class Decision:
    node: str
    claims: list[PodClaim]
    allocation: ClaimAllocation | None


class Unschedulable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def watched_resources(dra: bool) -> list[str]:
    res = [RES_NAMESPACES, RES_NODES, RES_PODS, RES_BIND_REQUESTS]
    if dra:
        res += [RES_CLAIMS, RES_CLAIM_TEMPLATES, RES_SLICES, RES_DEVICE_CLASSES]
    return res


class Scheduler:
    def __init__(self, store, pm: KaiPluginManager, config: SchedulerConfig | None = None) -> None:
        self.store = store
        self.pm = pm
        self.config = config or SchedulerConfig()
        self.cache = Cache(store, watched_resources(self.config.features.dra))
        self.last_snapshot: Snapshot | None = None

    def run_cycle(self) -> CycleResult:
        start = time.perf_counter()
        result = CycleResult()
        self.cache.sync()
        if self._clean_bind_requests():
            self.cache.sync()
        snap = Snapshot(self.cache, self.config.scheduler_name, self.config.features)
        self.last_snapshot = snap
        for pod in snap.pending_pods():
            try:
                decision = self.decide(pod, snap)
            except Unschedulable as exc:
                result.unschedulable += 1
                self._report_unschedulable(pod, exc.message)
                continue
            if self._commit(pod, decision, snap):
                result.scheduled += 1
            else:
                result.errors += 1
        result.seconds = time.perf_counter() - start
        return result

    # -- one pod -------------------------------------------------------------------------------

    def decide(self, pod: dict, snap: Snapshot) -> Decision:
        """Choose a node for ``pod`` (and its claims' allocation); raises Unschedulable."""
        for _plugin, res in self.pm.call_each("kai_pre_filter", pod=pod, snapshot=snap):
            raise Unschedulable(str(res))
        nodes = snap.nodes
        if not nodes:
            raise Unschedulable("0/0 nodes are available: no nodes in the cluster.")
        rejected: dict[str, str] = {}
        for _plugin, res in self.pm.call_each("kai_filter_nodes", pod=pod, nodes=nodes, snapshot=snap):
            if isinstance(res, PluginError):
                raise Unschedulable(str(res))
            for name, reason in res.items():
                rejected.setdefault(name, reason)
        feasible = [n for n in nodes if n.name not in rejected]
        claims: list[PodClaim] = []
        allocations: dict[str, ClaimAllocation] = {}
        if feasible and (pod.get("spec") or {}).get("resourceClaims"):
            claims, reason = pod_claims(pod, snap)
            if reason:
                raise Unschedulable(reason)
            answer = self.pm.call_first(
                "kai_allocate_claims", pod=pod, claims=claims, nodes=feasible, snapshot=snap
            )
            if answer is None:
                raise Unschedulable("no plugin can allocate this pod's resource claims")
            plugin, res = answer
            if isinstance(res, PluginError):
                raise Unschedulable(str(res))
            for n in feasible:
                got = res.get(n.name, f"plugin {plugin!r} gave no allocation for this node")
                if isinstance(got, ClaimAllocation):
                    allocations[n.name] = got
                else:
                    rejected[n.name] = f"cannot allocate all claims: {got}"
            feasible = [n for n in feasible if n.name in allocations]
        if not feasible:
            raise Unschedulable(unschedulable_message(len(nodes), rejected))
        best = self._best_node(pod, feasible, snap)
        return Decision(best, claims, allocations.get(best))

    def _best_node(self, pod: dict, feasible: list, snap: Snapshot) -> str:
        if len(feasible) == 1:
            return feasible[0].name
        totals = dict.fromkeys((n.name for n in feasible), 0.0)
        for plugin, res in self.pm.call_each("kai_score_nodes", pod=pod, nodes=feasible, snapshot=snap):
            if isinstance(res, PluginError):
                raise Unschedulable(str(res))
            weight = self.config.score_weights.get(plugin, 1.0)
            for name, score in res.items():
                if name in totals:
                    totals[name] += weight * float(score)
        return min(totals, key=lambda name: (-totals[name], name))

    def _commit(self, pod: dict, decision: Decision, snap: Snapshot) -> bool:
        pairs = []
        if decision.allocation is not None:
            allocs = decision.allocation.allocations
            pairs = [(pc.name, alloc) for pc, alloc in zip(decision.claims, allocs, strict=True)]
        br = build_bind_request(pod, decision.node, pairs, self.config.backoff_limit)
        node = snap.node_by_name[decision.node]
        annotations: dict = {}
        for _plugin, res in self.pm.call_each("kai_bind_request", pod=pod, node=node, bind_request=br):
            if isinstance(res, PluginError):
                self._report_unschedulable(pod, str(res))
                return False
            annotations.update(res)
        if annotations:
            br["metadata"].setdefault("annotations", {}).update(annotations)
        try:
            self.store.create(br)
        except ApiError as exc:
            log.error("cannot write BindRequest for pod %s: %s", ref(pod), exc.message)
            return False
        snap.assume(pod, decision.node, decision.claims, decision.allocation)
        log.info("pod %s: node %s selected (BindRequest %s)", ref(pod), decision.node, br["metadata"]["name"])
        return True

    # -- housekeeping --------------------------------------------------------------------------

    def _clean_bind_requests(self) -> bool:
        """Delete BindRequests that failed for good or whose node is gone, so their pods are
        scheduled again. Succeeded ones stay until their pod goes (ownerReference GC)."""
        nodes = self.cache.objects.get(RES_NODES, {})
        deleted = False
        for br in list(self.cache.objects.get(RES_BIND_REQUESTS, {}).values()):
            spec = br.get("spec") or {}
            phase = (br.get("status") or {}).get("phase")
            node_gone = ("", spec.get("selectedNode", "")) not in nodes and phase != "Succeeded"
            if bind_request_failed_for_good(br) or node_gone:
                try:
                    self.store.delete(RES_BIND_REQUESTS, br["metadata"]["name"], br["metadata"]["namespace"])
                    deleted = True
                except NotFound:
                    pass
        return deleted

    def _report_unschedulable(self, pod: dict, message: str) -> None:
        """Set PodScheduled=False/Unschedulable with ``message`` and emit an Event, only when the
        condition's content changes (no write storms on every cycle)."""
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if (cond.get("type") == "PodScheduled" and cond.get("status") == "False"
                    and cond.get("reason") == "Unschedulable" and cond.get("message") == message):
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


def unschedulable_message(total: int, rejected: dict[str, str]) -> str:
    """kube-scheduler's summary: ``0/4 nodes are available: 1 Insufficient cpu, 3 ...``."""
    counts = Counter(rejected.values())
    parts = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda kv: kv[0]))
    return f"0/{total} nodes are available: {parts}."
