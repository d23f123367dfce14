"""ComputeDomains placed right: a domain's pods as one gang, inside one NVLink clique, one domain per
node and one pod of a domain per node.

Which pods form a domain: a pod whose claim (or, while the claim is not created yet, the template
it comes from) carries a ``ComputeDomainChannelConfig`` belongs to the domain whose uid is that
config's ``domainID``. The group's size is the domain's ``spec.numNodes`` when it is above 0,
otherwise every pod of the domain that is present. A PodGroup over the same pods is merged with
the domain by the core, and both minimums must hold.

Where the pods go (:func:`node_subsets`): all of a domain's pods inside one NVLink clique, the
node label ``nvidia.com/gpu.clique`` that GPU Feature Discovery sets. A domain with pods already
placed (bound or in flight) stays in their clique. Otherwise the cliques with enough usable nodes
are proposed best fit first: the clique left with the fewest usable nodes once the whole group is
in, so that large free cliques stay whole for large domains. "Usable" is a cheap, optimistic
estimate (schedulable, no other domain there, room for the smallest pod's requests); the core checks
each proposal for real. A group that fits no single clique waits with a reason saying so, never a
partial placement.

Which nodes a domain pod may use (:func:`node_conflicts`): none already holding a pod of another
domain (channel 0 is exclusive and NVIDIA's kubelet plugin refuses a second domain on a node) and
none already holding a pod of its own domain (one pod per node per domain).

Who holds what comes from the claims' allocations: a stored allocation, an in-flight BindRequest's
or one decided earlier in the cycle, whose config names the domain and whose node selector names the
node. The view is built once per cycle and follows the cycle's decisions through
:attr:`Snapshot.allocation_log`.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

from kai_core.api.claims import claim_name_for
from kai_core.framework.gang import GroupSpec, NodeSubset
from kai_core.framework.snapshot import NodeInfo, Snapshot
from kai_dra_nvidia.computedomain import (
    CLIQUE_LABEL,
    COMPUTE_DOMAIN_LABEL,
    RES_COMPUTE_DOMAINS,
    channel_domain,
)
from kai_dra_nvidia.config import DRIVER, domain_of_devices

ANOTHER_DOMAIN = "node(s) already run a pod of another ComputeDomain (one ComputeDomain per node)"
SAME_DOMAIN = "node(s) already run a pod of this ComputeDomain (one pod per node per ComputeDomain)"

#: claim key (namespace, name)
ClaimKey = tuple[str, str]


def _claim_domain(claim: dict) -> str | None:
    uid = domain_of_devices((claim.get("spec") or {}).get("devices"))
    if uid is None:
        uid = ((claim.get("metadata") or {}).get("labels") or {}).get(COMPUTE_DOMAIN_LABEL)
    return uid if isinstance(uid, str) and uid else None


def allocation_node(allocation: dict) -> str | None:
    """The node a channel allocation is on: its node selector's single ``metadata.name``, else the
    pool of its compute-domain result (the driver names pools after nodes)."""
    selector = allocation.get("nodeSelector") if isinstance(allocation, dict) else None
    for term in (selector or {}).get("nodeSelectorTerms") or []:
        for req in (term or {}).get("matchFields") or []:
            values = (req or {}).get("values") or []
            if req.get("key") == "metadata.name" and req.get("operator") == "In" and len(values) == 1:
                return values[0]
    for result in ((allocation or {}).get("devices") or {}).get("results") or []:
        if isinstance(result, dict) and result.get("driver") == DRIVER and result.get("pool"):
            return result["pool"]
    return None


@dataclass
class DomainView:
    """What one cycle knows about ComputeDomains (see the module docstring)."""

    snapshot: Snapshot
    by_uid: dict[str, dict] = field(default_factory=dict)
    _pod_domain: dict[tuple[str, str], str | None] = field(default_factory=dict)
    _occupancy: dict[str, dict[ClaimKey, str]] | None = None
    _node_of_claim: dict[ClaimKey, str] = field(default_factory=dict)
    _log_pos: int = 0
    _clique_sizes: dict[str, int] | None = None
    _broken: dict[str, float] | None = None
    _broken_pos: int = -1

    def pod_domain(self, pod: dict) -> str | None:
        """The uid of the ComputeDomain a pod's channel claim belongs to, or None."""
        md = pod["metadata"]
        key = (md.get("namespace", ""), md["name"])
        if key in self._pod_domain:
            return self._pod_domain[key]
        uid = None
        snap = self.snapshot
        for rc in (pod.get("spec") or {}).get("resourceClaims") or []:
            if not isinstance(rc, dict):
                continue
            name = claim_name_for(pod, rc.get("name"))
            claim = snap.claims.get((key[0], name)) if name else None
            if claim is not None:
                uid = _claim_domain(claim)
            elif rc.get("resourceClaimTemplateName"):
                template = snap.templates.get((key[0], rc["resourceClaimTemplateName"]))
                if template is not None:
                    uid = domain_of_devices(((template.get("spec") or {}).get("spec") or {}).get("devices"))
                    if uid is None:
                        uid = ((template.get("metadata") or {}).get("labels") or {}).get(COMPUTE_DOMAIN_LABEL)
            if uid:
                break
        self._pod_domain[key] = uid or None
        return uid or None

    def pod_claim_keys(self, pod: dict) -> set[ClaimKey]:
        namespace = pod["metadata"].get("namespace", "")
        out = set()
        for rc in (pod.get("spec") or {}).get("resourceClaims") or []:
            name = claim_name_for(pod, rc.get("name")) if isinstance(rc, dict) else None
            if name:
                out.add((namespace, name))
        return out

    def describe(self, uid: str) -> str:
        cd = self.by_uid.get(uid)
        if cd is None:
            return f"ComputeDomain {uid}"
        md = cd["metadata"]
        return f"ComputeDomain {md.get('namespace', '')}/{md['name']}"

    def num_nodes(self, uid: str) -> int:
        cd = self.by_uid.get(uid)
        value = ((cd or {}).get("spec") or {}).get("numNodes")
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    def occupancy(self) -> dict[str, dict[ClaimKey, str]]:
        """node name -> {claim key: domain uid} of every channel allocation on it: stored, in
        flight, or decided this cycle. Kept up to date from :attr:`Snapshot.allocation_log`, so a
        call costs the decisions made since the last one."""
        snap = self.snapshot
        if self._occupancy is None:
            self._occupancy = {}
            for key, claim in snap.claims.items():
                allocation = (claim.get("status") or {}).get("allocation")
                if allocation and key not in snap.assumed_allocations:
                    self._add(key, allocation)
            for key, allocation in snap.assumed_allocations.items():
                self._add(key, allocation)
            self._log_pos = len(snap.allocation_log)
        log = snap.allocation_log
        while self._log_pos < len(log):
            added, key, allocation = log[self._log_pos]
            self._log_pos += 1
            if added:
                self._add(key, allocation)
            else:
                node = self._node_of_claim.pop(key, None)
                if node is not None:
                    self._occupancy.get(node, {}).pop(key, None)
        return self._occupancy

    def clique_sizes(self) -> dict[str, int]:
        """NVLink clique label -> how many nodes of the cluster carry it (computed once)."""
        if self._clique_sizes is None:
            sizes: dict[str, int] = {}
            for n in self.snapshot.nodes:
                label = n.labels.get(CLIQUE_LABEL)
                if label:
                    sizes[label] = sizes.get(label, 0) + 1
            self._clique_sizes = sizes
        return self._clique_sizes

    def broken_cliques(self) -> dict[str, float]:
        """NVLink clique label -> the share of its nodes holding some ComputeDomain's pod (cliques
        with none are left out)."""
        occupancy = self.occupancy()
        if self._broken is None or self._broken_pos != self._log_pos:
            sizes = self.clique_sizes()
            counts: dict[str, int] = {}
            for node, entries in occupancy.items():
                info = self.snapshot.node_by_name.get(node) if entries else None
                label = info.labels.get(CLIQUE_LABEL) if info is not None else None
                if label in sizes:
                    counts[label] = counts.get(label, 0) + 1
            self._broken = {label: count / sizes[label] for label, count in counts.items()}
            self._broken_pos = self._log_pos
        return self._broken

    def _add(self, key: ClaimKey, allocation: dict) -> None:
        if not isinstance(allocation, dict):
            return
        uid = channel_domain(allocation)
        node = allocation_node(allocation) if uid else None
        if uid and node:
            self._occupancy.setdefault(node, {})[key] = uid  # type: ignore[union-attr]
            self._node_of_claim[key] = node


_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def view(snapshot: Snapshot) -> DomainView:
    """The cycle's :class:`DomainView`, built on first use."""
    v = _VIEWS.get(snapshot)
    if v is None:
        # the view must not keep its snapshot alive: _VIEWS drops a view with its snapshot only
        # while nothing else holds the snapshot (a strong reference here would keep both forever)
        v = DomainView(weakref.proxy(snapshot))
        for cd in snapshot.objects(RES_COMPUTE_DOMAINS).values():
            uid = (cd.get("metadata") or {}).get("uid")
            if uid:
                v.by_uid[uid] = cd
        _VIEWS[snapshot] = v
    return v


# -- groups -----------------------------------------------------------------------------------------


def domain_groups(pods: list[dict], snapshot: Snapshot) -> list[GroupSpec]:
    """One group per ComputeDomain with a pod waiting: its ``numNodes`` when above 0, else all of
    its pods present."""
    v = view(snapshot)
    members: dict[str, list[dict]] = {}
    for pod in pods:
        if not (pod.get("spec") or {}).get("resourceClaims"):
            continue
        uid = v.pod_domain(pod)
        if uid:
            members.setdefault(uid, []).append(pod)
    out = []
    for uid, group in members.items():
        if all(snapshot.node_of(p) for p in group):
            continue
        num = v.num_nodes(uid)
        size = f"numNodes {num}" if num else f"{len(group)} pod(s)"
        out.append(GroupSpec(f"{DRIVER}/{uid}", group, num or None, f"{v.describe(uid)} ({size})"))
    return out


# -- where a domain pod may go ----------------------------------------------------------------------


def node_conflicts(pod: dict, nodes: list[NodeInfo], snapshot: Snapshot) -> dict[str, str] | None:
    """``{node: reason}`` for the nodes a domain pod may not use: another domain is there, or a pod
    of its own domain is. None for a pod of no domain."""
    v = view(snapshot)
    uid = v.pod_domain(pod)
    if uid is None:
        return None
    occupancy = v.occupancy()
    if not occupancy:
        return None
    own = v.pod_claim_keys(pod)
    out = {}
    for n in nodes:
        for claim_key, domain in (occupancy.get(n.name) or {}).items():
            if claim_key in own:
                continue
            out[n.name] = SAME_DOMAIN if domain == uid else ANOTHER_DOMAIN
            if domain != uid:
                break
    return out


@dataclass
class _Clique:
    name: str
    nodes: list[NodeInfo]
    usable: list[str] = field(default_factory=list)
    taken: int = 0  # nodes holding some domain's pod


def node_subsets(group, nodes: list[NodeInfo], snapshot: Snapshot) -> list[NodeSubset] | str | None:
    """The cliques a gang with domain pods may go into, best first, or why none can hold it (see the
    module docstring). None when the gang has no domain pod, or is one pod with no clique to keep."""
    v = view(snapshot)
    domains = {v.pod_domain(p) for p in group.pods} - {None}
    if not domains:
        return None
    occupancy = v.occupancy()
    what = group.description or " and ".join(sorted(v.describe(d) for d in domains))
    need, want = group.need, len(group.pods)
    smallest = _smallest_requests(group.pods, snapshot)
    cliques: dict[str, _Clique] = {}
    home: dict[str, int] = {}
    for n in nodes:
        label = n.labels.get(CLIQUE_LABEL)
        entries = occupancy.get(n.name) or {}
        ours = any(d in domains for d in entries.values())
        if ours and label:
            home[label] = home.get(label, 0) + 1
        if not label:
            continue
        clique = cliques.setdefault(label, _Clique(label, []))
        clique.nodes.append(n)
        if entries:
            clique.taken += 1
        elif _usable(n, smallest):
            clique.usable.append(n.name)
    for pod in group.placed:  # in flight without a channel allocation known yet, or bound elsewhere
        node = snapshot.node_by_name.get(snapshot.node_of(pod) or "")
        label = node.labels.get(CLIQUE_LABEL) if node is not None else None
        if label and label not in home:
            home[label] = 1
    if home:
        ordered = sorted(home, key=lambda c: (-home[c], c))
        fitting = [cliques[c] for c in ordered if c in cliques and len(cliques[c].usable) >= need]
        if not fitting:
            c = ordered[0]
            left = len(cliques[c].usable) if c in cliques else 0
            return (f"{what} already runs in NVLink clique {c} (node label {CLIQUE_LABEL}) and must stay there, "
                    f"but the clique has {left} usable node(s) for the {need} more pod(s) it needs")
        return [NodeSubset(f"NVLink clique {c.name} (where it runs)", c.usable) for c in fitting]
    if want <= 1 and need <= 1:
        return None  # a lone pod: any node; the score keeps free cliques whole
    if not cliques:
        return (f"{what} needs {need} pods placed inside one NVLink clique, but no node has the label "
                f"{CLIQUE_LABEL}")
    fitting = [c for c in cliques.values() if len(c.usable) >= need]
    if not fitting:
        largest = max(len(c.nodes) for c in cliques.values())
        if largest < need:
            return (f"{what} needs {need} nodes inside one NVLink clique (node label {CLIQUE_LABEL}) but the "
                    f"largest clique has {largest} node(s): it fits no single clique")
        best = max(cliques.values(), key=lambda c: (len(c.usable), c.name))
        return (f"{what} needs {need} free nodes inside one NVLink clique (node label {CLIQUE_LABEL}) but no "
                f"clique has that many: at most {len(best.usable)}, in clique {best.name}")

    def best_fit(c: _Clique) -> tuple:
        spare = len(c.usable) - want
        return (0 if spare >= 0 else 1, abs(spare), -c.taken, c.name)

    return [NodeSubset(f"NVLink clique {c.name}", c.usable) for c in sorted(fitting, key=best_fit)]


def lone_pod_scores(nodes: list[NodeInfo], v: DomainView) -> dict[str, float] | None:
    """Scores 0..100 for a domain pod placed without a clique subset (a one-pod domain): nodes of
    cliques already broken into by domains first, in proportion, then whole cliques last, so a
    one-node domain does not break a clique a larger one could use. None when every clique is
    whole and every node has one (nothing to tell apart)."""
    sizes = v.clique_sizes()
    broken = v.broken_cliques()
    if not sizes or (not broken and sum(sizes.values()) == len(v.snapshot.nodes)):
        return None
    return {n.name: 100.0 * broken.get(label, 0.0) if (label := n.labels.get(CLIQUE_LABEL)) else 100.0
            for n in nodes}


def _smallest_requests(pods: list[dict], snapshot: Snapshot) -> dict[str, int]:
    """Per resource, the least any of ``pods`` requests (0 when one does not request it)."""
    out: dict[str, int] | None = None
    for pod in pods:
        req = snapshot.requests_of(pod)
        if out is None:
            out = dict(req)
        else:
            out = {r: min(v, req[r]) for r, v in out.items() if r in req}
    return out or {}


def _usable(node: NodeInfo, smallest: dict[str, int]) -> bool:
    if node.unschedulable or node.ready is False:
        return False
    pods = node.allocatable.get("pods")
    if pods is not None and (node.pod_count + 1) * 1000 > pods:
        return False
    return all(node.free(r) >= amount for r, amount in smallest.items())
