"""Filter and score (kube-scheduler's PodTopologySpread): ``topologySpreadConstraints``.

A constraint counts the pods its ``labelSelector`` (with ``matchLabelKeys`` merged in) selects in
the pod's namespace, per domain (value of ``topologyKey``), over the placed pods of
:mod:`kai_core.plugins.placed_pods` (bound, in flight, placed earlier in this cycle, gang members
included; pods being deleted do not count). Domains are the values of the nodes that have every
constraint's key and pass the inclusion policies: ``nodeAffinityPolicy`` (default ``Honor``: the
pod's nodeSelector and required node affinity) and ``nodeTaintsPolicy`` (default ``Ignore``;
``Honor``: the node's NoSchedule/NoExecute taints must be tolerated).

``DoNotSchedule`` (filter): placing the pod in a node's domain must keep ``count + 1 (if the pod
matches) - global minimum <= maxSkew``, where the global minimum is 0 while there are fewer
domains than ``minDomains``. Reasons, kube-scheduler's: ``node(s) didn't match pod topology spread
constraints`` and, for a node lacking a key, ``... (missing required label)``.

``ScheduleAnyway`` (score): a node scores ``sum(count * log(domains + 2) + maxSkew - 1)`` over the
constraints, normalised so the emptiest node scores 100.

Cluster-level defaults (kube-scheduler's ``defaultConstraints``) apply to a pod without
constraints of its own that a ReplicaSet, StatefulSet or ReplicationController controls; they count
the pods of the same controller. Configured by ``KAI_DEFAULT_SPREAD_CONSTRAINTS``
(:func:`kai_core.framework.pod_constraints.default_spread_constraints`): by default kube-scheduler's
system defaults (hostname maxSkew 3 and zone maxSkew 5, ``ScheduleAnyway``).

Cost: a pod with no constraints and no controller costs one look at its spec. Pods with
``DoNotSchedule`` constraints are decided without the equivalence memo (answers depend on other
nodes); scores are never reused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kai_core.api.nodeaffinity import NodeSelectorError, match_node_selector
from kai_core.framework.hookspecs import hookimpl
from kai_core.framework.pod_constraints import default_spread_constraints, spread_constraints, spread_owner
from kai_core.plugins.label_selectors import Selector, SelectorError, compile_selector
from kai_core.plugins.placed_pods import PlacedPods, placed_pods, pod_labels
from kai_core.plugins.taints import FILTERING_EFFECTS, tolerates

REASON = "node(s) didn't match pod topology spread constraints"
REASON_MISSING_LABEL = REASON + " (missing required label)"
HOSTNAME = "kubernetes.io/hostname"
MAX_SCORE = 100
ACTIONS = ("DoNotSchedule", "ScheduleAnyway")
POLICIES = ("Honor", "Ignore")


@dataclass(frozen=True)
class OwnerSelector:
    """The default constraints' selector: the pods of one controller (by uid)."""

    uid: str

    def matches_pod(self, pod: dict) -> bool:
        owners = pod["metadata"].get("ownerReferences")
        return isinstance(owners, list) and any(isinstance(o, dict) and o.get("uid") == self.uid for o in owners)

    def candidates(self, view: PlacedPods) -> dict:
        return view.index("controller-owners", _owner_keys).get(self.uid) or {}


def _owner_keys(pod: dict) -> list:
    owners = pod["metadata"].get("ownerReferences")
    return [o["uid"] for o in owners if isinstance(o, dict) and o.get("uid")] if isinstance(owners, list) else []


@dataclass(frozen=True)
class Constraint:
    """One spread constraint, compiled for the pod being scheduled."""

    max_skew: int
    key: str
    selector: Selector | OwnerSelector
    min_domains: int = 1
    honor_affinity: bool = True
    honor_taints: bool = False

    def selects(self, pod: dict) -> bool:
        if isinstance(self.selector, OwnerSelector):
            return self.selector.matches_pod(pod)
        return self.selector.matches(pod_labels(pod))

    def candidates(self, view: PlacedPods) -> dict:
        if isinstance(self.selector, OwnerSelector):
            return self.selector.candidates(view)
        return self.selector.candidates(view.by_label(), view.where)


def _parse(raw: list, pod: dict, action: str, where: str, owner: str | None = None) -> list[Constraint]:
    """The constraints of ``raw`` with ``whenUnsatisfiable: action``; SelectorError for a bad one."""
    out = []
    labels = pod_labels(pod)
    for i, c in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(c, dict):
            raise SelectorError(f"{at} must be a topology spread constraint")
        when = c.get("whenUnsatisfiable")
        if when not in ACTIONS:
            raise SelectorError(f"{at}.whenUnsatisfiable must be one of {', '.join(ACTIONS)}")
        skew = c.get("maxSkew")
        if not isinstance(skew, int) or isinstance(skew, bool) or skew < 1:
            raise SelectorError(f"{at}.maxSkew must be an integer of at least 1")
        key = c.get("topologyKey")
        if not isinstance(key, str) or not key:
            raise SelectorError(f"{at}.topologyKey must not be empty")
        min_domains = c.get("minDomains")
        if min_domains is not None:
            if not isinstance(min_domains, int) or isinstance(min_domains, bool) or min_domains < 1:
                raise SelectorError(f"{at}.minDomains must be an integer of at least 1")
            if when != "DoNotSchedule":
                raise SelectorError(f"{at}.minDomains may only be set with whenUnsatisfiable DoNotSchedule")
        policies = []
        for field_name, default in (("nodeAffinityPolicy", "Honor"), ("nodeTaintsPolicy", "Ignore")):
            value = c.get(field_name) or default
            if value not in POLICIES:
                raise SelectorError(f"{at}.{field_name} must be one of {', '.join(POLICIES)}")
            policies.append(value == "Honor")
        if owner is not None:
            selector: Selector | OwnerSelector = OwnerSelector(owner)
        else:
            selector = compile_selector(c.get("labelSelector"), labels, c.get("matchLabelKeys"), None,
                                        f"{at}.labelSelector")
        if when == action:
            out.append(Constraint(skew, key, selector, min_domains or 1, *policies))
    return out


def constraints_of(pod: dict, action: str) -> tuple[list[Constraint], bool]:
    """The pod's constraints with ``whenUnsatisfiable: action`` (its own, else the cluster's defaults
    when they apply) and whether they are kube-scheduler's system defaults. Raises SelectorError."""
    own = spread_constraints(pod)
    if own:
        return _parse(own, pod, action, "spec.topologySpreadConstraints"), False
    owner = spread_owner(pod)
    if owner is None:
        return [], False
    defaults, system, error = default_spread_constraints()
    if error:
        raise SelectorError(error)
    return _parse(list(defaults), pod, action, "default topology spread constraints", owner), system


def _raw_spread(pod: dict) -> bool:
    """Whether any constraint may apply (a look at the spec only)."""
    return bool(spread_constraints(pod)) or spread_owner(pod) is not None


def _affinity_matcher(pod: dict):
    spec = pod.get("spec") or {}
    selector = spec.get("nodeSelector") or {}
    affinity = spec.get("affinity") or {}
    required = ((affinity.get("nodeAffinity") or {}) if isinstance(affinity, dict) else {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")

    def matches(node) -> bool:
        if isinstance(selector, dict) and any(node.labels.get(k) != v for k, v in selector.items()):
            return False
        try:
            return required is None or match_node_selector(required, node.obj)
        except NodeSelectorError:
            return True  # kube-scheduler ignores a parse error here; the node affinity filter reports it
    return matches


def _taints_ok(pod: dict):
    spec = pod.get("spec") or {}
    tolerations = [t for t in spec.get("tolerations") or [] if isinstance(t, dict)]

    def ok(node) -> bool:
        return all(not isinstance(t, dict) or t.get("effect") not in FILTERING_EFFECTS or tolerates(tolerations, t)
                   for t in node.taints)
    return ok


def _eligible(pod: dict, constraints: list[Constraint], nodes, require_all: bool = True) -> list[dict[str, str]]:
    """Per constraint, ``{node name: domain}`` of the nodes whose pods count toward it."""
    affinity_ok = _affinity_matcher(pod) if any(c.honor_affinity for c in constraints) else None
    taints_ok = _taints_ok(pod) if any(c.honor_taints for c in constraints) else None
    out: list[dict[str, str]] = [{} for _ in constraints]
    keys = [c.key for c in constraints]
    for n in nodes:
        labels = n.labels
        if require_all and not all(k in labels for k in keys):
            continue
        aff = tnt = None
        for i, c in enumerate(constraints):
            value = labels.get(c.key)
            if value is None:
                continue
            if c.honor_affinity:
                aff = affinity_ok(n) if aff is None else aff
                if not aff:
                    continue
            if c.honor_taints:
                tnt = taints_ok(n) if tnt is None else tnt
                if not tnt:
                    continue
            out[i][n.name] = value
    return out


def _matching(pod: dict, c: Constraint, view: PlacedPods):
    """(pod key, node) of the placed pods ``c`` counts: in the pod's namespace, not being deleted."""
    ns = pod["metadata"].get("namespace", "")
    for key in list(c.candidates(view)):
        if key[0] != ns:
            continue
        other, node = view.where[key]
        if other["metadata"].get("deletionTimestamp") or not c.selects(other):
            continue
        yield key, node


@hookimpl(tryfirst=True)
def kai_pre_filter(pod):
    if not _raw_spread(pod):
        return None
    try:
        constraints_of(pod, "DoNotSchedule")
    except SelectorError as exc:
        return f"invalid {exc}"
    return None


@hookimpl(tryfirst=True)
def kai_filter_nodes(pod, nodes, snapshot):
    if not _raw_spread(pod):
        return None
    constraints, _system = constraints_of(pod, "DoNotSchedule")
    if not constraints:
        return None
    view = placed_pods(snapshot)
    eligible = _eligible(pod, constraints, snapshot.nodes)
    counts: list[dict[str, int]] = []
    for i, c in enumerate(constraints):
        domains = dict.fromkeys(eligible[i].values(), 0)
        for _key, node in _matching(pod, c, view):
            value = eligible[i].get(node)
            if value is not None:
                domains[value] += 1
        counts.append(domains)
    minimums = []
    for i, c in enumerate(constraints):
        domains = counts[i]
        low = min(domains.values()) if domains else math.inf
        minimums.append(0 if len(domains) < c.min_domains else low)
    self_match = [int(c.selects(pod)) for c in constraints]
    out = {}
    for n in nodes:
        labels = n.labels
        for i, c in enumerate(constraints):
            value = labels.get(c.key)
            if value is None:
                out[n.name] = REASON_MISSING_LABEL
                break
            if counts[i].get(value, 0) + self_match[i] - minimums[i] > c.max_skew:
                out[n.name] = REASON
                break
    return out


@hookimpl
def kai_score_nodes(pod, nodes, snapshot):
    if not _raw_spread(pod):
        return None
    try:
        constraints, system = constraints_of(pod, "ScheduleAnyway")
    except SelectorError:
        return None  # the pre-filter said so
    if not constraints:
        return None
    require_all = not system
    keys = [c.key for c in constraints]
    scored = [n for n in nodes if not require_all or all(k in n.labels for k in keys)]
    if not scored:
        return None
    weights = []
    for c in constraints:
        size = len(scored) if c.key == HOSTNAME else len({n.labels[c.key] for n in scored if c.key in n.labels})
        weights.append(math.log(size + 2))
    view = placed_pods(snapshot)
    eligible = _eligible(pod, constraints, snapshot.nodes, require_all)
    counts: list[dict[str, int]] = []
    for i, c in enumerate(constraints):
        wanted = {n.labels[c.key] for n in scored if c.key in n.labels}
        domains: dict[str, int] = {}
        for _key, node in _matching(pod, c, view):
            if c.key == HOSTNAME:  # per node, whatever the policies (as kube-scheduler counts it)
                domains[node] = domains.get(node, 0) + 1
                continue
            value = eligible[i].get(node)
            if value in wanted:
                domains[value] = domains.get(value, 0) + 1
        counts.append(domains)
    raw = {}
    for n in scored:
        total = 0.0
        for i, c in enumerate(constraints):
            value = n.labels.get(c.key)
            if value is None:
                continue
            count = counts[i].get(n.name if c.key == HOSTNAME else value, 0)
            total += count * weights[i] + c.max_skew - 1
        raw[n.name] = math.floor(total + 0.5)  # Go's math.Round: halves away from zero
    low, high = min(raw.values()), max(raw.values())
    if high == 0:
        return dict.fromkeys(raw, MAX_SCORE)
    return {name: MAX_SCORE * (high + low - s) // high for name, s in raw.items()}
