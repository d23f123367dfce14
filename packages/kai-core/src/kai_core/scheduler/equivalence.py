"""Equivalence classes: pods of one shape share their per-node filter, allocation and score results.

Pods made from one template (a Job's, a Deployment's, an MPIJob's workers) ask for the same thing:
the same resources, selectors, tolerations and, for DRA, claims with the same spec. Within a
cycle, what the filters and the allocator say about a node for one such pod holds for the next,
unless something was placed on that node meanwhile. So the cycle keeps, per shape, one
:class:`ShapeMemo` of those answers and, for each further pod of the shape, asks the plugins only
about the nodes changed since (``Snapshot.node_changes``): the first pod of a shape costs a pass
over every node, the next ones a pass over one or two.

What makes two pods the same shape (:func:`pod_shape`): namespace, labels, annotations (but KAI's
``pod-group-name``), owner references and the whole spec, with each ResourceClaim replaced by its
spec, and the name of the ServiceAccount token volume left out. Which PodGroup a pod belongs to is
for the gang hooks (``kai_pod_groups``, ``kai_group_node_subsets``) and the pre-filters, never for
a node's filter or node-local score: so the gangs of one template share their answers. As for the
token volume: the API server's ServiceAccount admission gives every pod
its own ``kube-api-access-<5 random characters>`` projected volume (and a mount of it in every
container), which no scheduling decision reads, and without this no two pods of a real cluster
would ever share a shape. Pods whose claims are
shared (not made for the pod from a template) get no shape: whether such a claim is already
allocated can change with any decision, so they are decided the plain way.

The contract this relies on, stated in the hook specs: a ``kai_filter_nodes`` or
``kai_allocate_claims`` answer for a node depends only on the pod and on that node (its object,
what is placed on it, the devices it reaches). A plugin whose answers also depend on other nodes
sets ``KAI_NODE_LOCAL = False`` on its plugin object (module or instance), which turns the memo off.
Scores are often relative to the other nodes, so ``kai_score_nodes`` answers are reused only from
plugins that declare ``KAI_NODE_LOCAL = True``. Devices reaching several nodes (``allNodes`` or
node-selector slices) are not node-local: placing a pod that uses one refreshes every memo.

The built-in pod predicates that look at other pods keep this contract as follows. Host ports
depend only on the node's pods. Pods with required inter-pod affinity or anti-affinity, or
``DoNotSchedule`` topology spread constraints, get no shape (decided on their own, every node
asked). A plain pod's answers depend on other nodes only through placed pods' required
anti-affinity (symmetry): placing or taking back such a pod makes every memo ask about every node
again (:meth:`ShapeMemo.stale_nodes`). Scores of those plugins are not node-local, so they are
asked afresh each time.
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass, field

from kai_core.api.claims import claim_name_for
from kai_core.dra.claims import ClaimAllocation
from kai_core.framework.gang import POD_GROUP_ANNOTATION
from kai_core.framework.plugins import declares_node_local  # noqa: F401 (re-exported for callers)
from kai_core.framework.pod_constraints import has_hard_spread, has_required_anti_affinity, has_required_terms
from kai_core.framework.snapshot import NodeInfo, Snapshot


def pod_shape(pod: dict, snapshot: Snapshot) -> str | None:
    """A key equal for pods the filters, the allocator and node-local scores cannot tell apart;
    None for a pod that must be decided on its own (a shared claim, or a claim not created yet; or
    required inter-pod affinity terms or topology spread constraints, whose answers for a node
    depend on the pods of other nodes; or PersistentVolumeClaim volumes)."""
    if depends_on_other_nodes(pod) or has_claim_volumes(pod.get("spec")):
        return None
    md = pod.get("metadata") or {}
    ns = md.get("namespace", "")
    claim_specs = []
    for rc in (pod.get("spec") or {}).get("resourceClaims") or []:
        if not isinstance(rc, dict) or not rc.get("resourceClaimTemplateName") or rc.get("resourceClaimName"):
            return None
        name = claim_name_for(pod, rc.get("name"))
        claim = snapshot.claims.get((ns, name)) if name else None
        if claim is None or snapshot.allocation_of((ns, name)) is not None:
            return None
        claim_specs.append(claim.get("spec"))
    annotations = md.get("annotations")
    if isinstance(annotations, dict) and POD_GROUP_ANNOTATION in annotations:
        annotations = {k: v for k, v in annotations.items() if k != POD_GROUP_ANNOTATION}
    try:
        return json.dumps(
            [ns, md.get("labels"), annotations, md.get("ownerReferences"),
             _without_token_volume_name(pod.get("spec")), claim_specs],
            sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):  # not JSON (a test's odd object): decide it on its own
        return None


def depends_on_other_nodes(pod: dict) -> bool:
    """Whether the built-in filters' answers for this pod on a node depend on pods of other nodes."""
    return has_required_terms(pod) or has_hard_spread(pod)


def has_claim_volumes(spec) -> bool:
    """Whether the pod mounts PersistentVolumeClaims (named or generic ephemeral): the volume
    filter's answers change as claims get PVs during the cycle, so such a pod is decided alone."""
    volumes = spec.get("volumes") if isinstance(spec, dict) else None
    return bool(volumes) and any(isinstance(v, dict) and ("persistentVolumeClaim" in v or "ephemeral" in v)
                                 for v in volumes)


def changes_other_nodes(pod: dict) -> bool:
    """Whether placing this pod may change the built-in filters' answers for other pods on nodes
    other than its own."""
    return has_required_anti_affinity(pod)


#: the prefix of the projected volume the ServiceAccount admission plugin adds to every pod
TOKEN_VOLUME_PREFIX = "kube-api-access-"


def _without_token_volume_name(spec):
    """``spec`` with the ServiceAccount token volume's generated name replaced by its prefix, in
    ``volumes`` and in every container's ``volumeMounts`` (a copy: ``spec`` is left as it is). Only
    a projected volume of that prefix counts; any other volume keeps its name."""
    if not isinstance(spec, dict):
        return spec
    volumes = spec.get("volumes")
    if not isinstance(volumes, list):
        return spec
    generated = {v["name"] for v in volumes
                 if isinstance(v, dict) and isinstance(v.get("name"), str)
                 and v["name"].startswith(TOKEN_VOLUME_PREFIX) and "projected" in v}
    if len(generated) != 1:  # none, or several: nothing is known to be the admission's
        return spec
    (name,) = generated

    def renamed(item):
        if isinstance(item, dict) and item.get("name") == name:
            return {**item, "name": TOKEN_VOLUME_PREFIX}
        return item

    out = {**spec, "volumes": [renamed(v) for v in volumes]}
    for field_name in ("initContainers", "containers", "ephemeralContainers"):
        containers = spec.get(field_name)
        if not isinstance(containers, list):
            continue
        out[field_name] = [
            {**c, "volumeMounts": [renamed(m) for m in c["volumeMounts"]]}
            if isinstance(c, dict) and isinstance(c.get("volumeMounts"), list) else c
            for c in containers]
    return out


def claim_refs(pod: dict, snapshot: Snapshot) -> list[str]:
    """The pod's ResourceClaims as reasons name them (``namespace/name``), longest first so one
    name that starts another is never replaced inside it."""
    md = pod.get("metadata") or {}
    ns = md.get("namespace", "")
    names = [claim_name_for(pod, rc.get("name")) for rc in (pod.get("spec") or {}).get("resourceClaims") or []
             if isinstance(rc, dict)]
    return sorted((f"{ns}/{n}" for n in names if n), key=len, reverse=True)


def generic_reason(reason: str | list[str], refs: list[str]) -> str | list[str]:
    """A reason as kept in a memo: the pod's own claim names replaced by placeholders, so that it
    holds for the next pod of the shape (whose claims have other names)."""
    if not refs:
        return reason
    if isinstance(reason, list):
        return [generic_reason(r, refs) for r in reason]
    for i, ref in enumerate(refs):
        if ref in reason:
            reason = reason.replace(ref, f"\0{i}\0")
    return reason


def specific_reason(reason: str | list[str], refs: list[str]) -> str | list[str]:
    """A memo's reason told to a pod: the placeholders replaced by this pod's claim names."""
    if not refs:
        return reason
    if isinstance(reason, list):
        return [specific_reason(r, refs) for r in reason]
    if "\0" in reason:
        for i, ref in enumerate(refs):
            reason = reason.replace(f"\0{i}\0", ref)
    return reason


@dataclass
class ShapeMemo:
    """One shape's answers in one cycle, current up to position ``seen`` of
    ``Snapshot.node_changes`` and as long as ``Snapshot.shared_changes`` is still ``shared``."""

    seen: int
    shared: int
    #: nodes where the pod fits: the claims' allocation there (None for a pod without claims)
    fits: dict[str, ClaimAllocation | None] = field(default_factory=dict)
    #: nodes where it does not, with the reason(s)
    rejected: dict[str, str | list[str]] = field(default_factory=dict)
    #: node name -> weighted sum of the node-local plugins' scores, for nodes in ``fits``
    totals: dict[str, float] = field(default_factory=dict)
    #: nodes in ``fits`` not scored yet by the node-local plugins
    unscored: list[NodeInfo] = field(default_factory=list)
    #: (-total, node name) for every total ever set; entries no longer true are skipped when met
    heap: list[tuple[float, str]] = field(default_factory=list)
    #: the nodes of ``fits`` in the snapshot's order, rebuilt only when ``fits`` gains or loses one
    _feasible: list[NodeInfo] | None = None
    #: while decisions are recorded, who gave the answers above
    #: (:class:`kai_core.scheduler.explain.MemoNotes`); None otherwise
    explained: object | None = None
    #: while the pod fits nowhere: the unschedulable message ``rejected`` makes (pods without
    #: claims and without nodes left out beforehand), so the next pods of the shape are told it
    #: without a pass over every node; None once any answer changes
    summary: str | None = None

    def stale_nodes(self, snapshot: Snapshot) -> set[str]:
        """Names of the nodes changed since the memo was last brought up to date: every node when a
        pod placed or taken back since has required anti-affinity (it may repel this shape from
        every node of its topology domain)."""
        if any(changes_other_nodes(pod) for _sign, pod, _node in snapshot.pod_changes[self.seen:]):
            return set(snapshot.node_by_name)
        return set(snapshot.node_changes[self.seen:])

    def forget(self, names: set[str]) -> None:
        """Drop every answer about ``names`` (they are about to be asked again)."""
        if names:
            self.summary = None
        for name in names:
            self.rejected.pop(name, None)
            self.totals.pop(name, None)
            if self.fits.pop(name, False) is not False:
                self._feasible = None

    def fit(self, node: NodeInfo, allocation: ClaimAllocation | None) -> None:
        """Record that the pod fits ``node`` (with that allocation of its claims)."""
        if node.name not in self.fits:
            self._feasible = None
        self.fits[node.name] = allocation
        self.unscored.append(node)

    def feasible(self, nodes: list[NodeInfo]) -> list[NodeInfo]:
        """The nodes the pod fits, in the order of ``nodes`` (the candidates the memo is about:
        always the same list for one memo)."""
        if self._feasible is None:
            fits = self.fits
            self._feasible = nodes if len(fits) == len(nodes) else [n for n in nodes if n.name in fits]
        return self._feasible

    def set_total(self, name: str, total: float) -> None:
        """The node-local score sum of a node in ``fits``."""
        self.totals[name] = total
        heapq.heappush(self.heap, (-total if total == total else math.inf, name))  # NaN never wins

    def best(self) -> str | None:
        """The node in ``fits`` with the highest node-local total (ties: the first name)."""
        heap, totals = self.heap, self.totals
        while heap:
            neg, name = heap[0]
            total = totals.get(name)
            if total is not None and (-total if total == total else math.inf) == neg:
                return name
            heapq.heappop(heap)
        return None
