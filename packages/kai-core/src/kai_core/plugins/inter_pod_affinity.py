"""Filter and score (kube-scheduler's InterPodAffinity): ``podAffinity`` and ``podAntiAffinity``.

Pods that count are the placed pods of :mod:`kai_core.plugins.placed_pods` (bound, in flight, and
placed earlier in this cycle, gang members included). A term selects pods by ``labelSelector``
(with ``matchLabelKeys``/``mismatchLabelKeys`` merged in) in its namespaces: ``namespaces`` plus
those matching ``namespaceSelector`` (``{}``: all); neither given: the pod's own namespace. Its
topology domain is the value of ``topologyKey`` on the node of the pod.

Filter, per node, in kube-scheduler's order and words:

- required affinity: the node has every term's topology key, and for each term some pod matching
  *every* term runs in the node's domain; when no pod anywhere matches, a pod matching its own
  terms may go to any node with the keys (the first pod of a group that wants to be together):
  ``node(s) didn't match pod affinity rules``;
- required anti-affinity: no pod matching a term in the node's domain for that term:
  ``node(s) didn't match pod anti-affinity rules``;
- existing pods' required anti-affinity (symmetry): no placed pod whose term matches this pod has
  the node in its domain: ``node(s) didn't satisfy existing pods anti-affinity rules``.

Score: for each domain, the weights of this pod's preferred terms that placed pods there match
(anti-affinity subtracting), plus the placed pods' own terms that match this pod (required
affinity at weight 1, kube-scheduler's default ``hardPodAffinityWeight``; preferred affinity
adding and preferred anti-affinity subtracting their weight); a node scores the sum over its
domains, normalised to 0..100 between the lowest and the highest.

Cost: a pod without affinity terms returns at once while no pod of the cycle's snapshot has any
(one pass over the pods' specs per cycle tells); otherwise the placed-pods view and its index of
pods with affinity are built once per cycle and kept current. Answers depend on other nodes:
the equivalence memo does not reuse answers for pods with required terms and drops its answers
when a pod with required anti-affinity is placed (:mod:`kai_core.scheduler.equivalence`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kai_core.framework.hookspecs import hookimpl
from kai_core.framework.pod_constraints import (
    PREFERRED,
    REQUIRED,
    has_pod_affinity,
    has_required_anti_affinity,
    has_required_terms,
)
from kai_core.framework.pod_constraints import pod_affinity_parts as _pod_affinity
from kai_core.plugins.label_selectors import Selector, SelectorError, compile_selector
from kai_core.plugins.placed_pods import PlacedPods, any_pod, placed_pods, pod_labels

REASON_AFFINITY = "node(s) didn't match pod affinity rules"
REASON_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
REASON_EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
#: kube-scheduler's default weight of an existing pod's required affinity term in the score
HARD_POD_AFFINITY_WEIGHT = 1
MAX_SCORE = 100


Pair = tuple[str, str]


@dataclass(frozen=True)
class Term:
    """One pod affinity term, compiled for its owning pod."""

    topology_key: str
    selector: Selector
    namespaces: frozenset
    ns_selector: Selector | None
    weight: int = 0

    def matches(self, pod: dict, ns_labels: dict) -> bool:
        """Whether ``pod`` (whose namespace has ``ns_labels``) is one of the pods this term selects."""
        ns = pod["metadata"].get("namespace", "")
        if ns not in self.namespaces and not (self.ns_selector is not None and self.ns_selector.matches(ns_labels)):
            return False
        return self.selector.matches(pod_labels(pod))


@dataclass(frozen=True)
class PodTerms:
    """A pod's four lists of terms."""

    required_affinity: tuple[Term, ...] = ()
    required_anti: tuple[Term, ...] = ()
    preferred_affinity: tuple[Term, ...] = ()
    preferred_anti: tuple[Term, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.required_affinity or self.required_anti or self.preferred_affinity or self.preferred_anti)


NO_TERMS = PodTerms()


def parse_terms(pod: dict) -> PodTerms:
    """The pod's terms; raises SelectorError naming the field for a malformed one."""
    affinity, anti = _pod_affinity(pod)
    if affinity is None and anti is None:
        return NO_TERMS
    labels = pod_labels(pod)
    own_ns = pod["metadata"].get("namespace", "")
    out = {}
    for part_name, part in (("podAffinity", affinity), ("podAntiAffinity", anti)):
        if part is None:
            out[part_name] = ((), ())
            continue
        if not isinstance(part, dict):
            raise SelectorError(f"spec.affinity.{part_name} must be an object")
        lists = []
        for kind in (REQUIRED, PREFERRED):
            items = part.get(kind) or []
            where = f"spec.affinity.{part_name}.{kind}"
            if not isinstance(items, list):
                raise SelectorError(f"{where} must be a list")
            terms = []
            for i, item in enumerate(items):
                if kind == PREFERRED:
                    weight = item.get("weight") if isinstance(item, dict) else None
                    if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= 100:
                        raise SelectorError(f"{where}[{i}].weight must be an integer in 1..100")
                    terms.append(_term(item.get("podAffinityTerm"), labels, own_ns, f"{where}[{i}].podAffinityTerm",
                                       weight))
                else:
                    terms.append(_term(item, labels, own_ns, f"{where}[{i}]"))
            lists.append(tuple(terms))
        out[part_name] = tuple(lists)
    return PodTerms(out["podAffinity"][0], out["podAntiAffinity"][0], out["podAffinity"][1], out["podAntiAffinity"][1])


def _term(term, labels: dict, own_ns: str, where: str, weight: int = 0) -> Term:
    if not isinstance(term, dict):
        raise SelectorError(f"{where} must be a pod affinity term")
    key = term.get("topologyKey")
    if not isinstance(key, str) or not key:
        raise SelectorError(f"{where}.topologyKey must not be empty")
    selector = compile_selector(term.get("labelSelector"), labels, term.get("matchLabelKeys"),
                                term.get("mismatchLabelKeys"), f"{where}.labelSelector")
    namespaces = term.get("namespaces") or []
    if not isinstance(namespaces, list) or not all(isinstance(n, str) for n in namespaces):
        raise SelectorError(f"{where}.namespaces must be a list of namespace names")
    raw_ns_selector = term.get("namespaceSelector")
    ns_selector = None if raw_ns_selector is None else compile_selector(
        raw_ns_selector, where=f"{where}.namespaceSelector")
    if not namespaces and ns_selector is None:
        namespaces = [own_ns]
    return Term(key, selector, frozenset(namespaces), ns_selector, weight)


def _terms_of(view: PlacedPods, pod: dict) -> PodTerms:
    """A placed pod's terms, parsed once per cycle (a malformed one counts as none)."""
    cache = view.cache.setdefault("pod-affinity-terms", {})
    got = cache.get(id(pod))
    if got is None or got[0] is not pod:
        try:
            terms = parse_terms(pod)
        except SelectorError:
            terms = NO_TERMS
        got = cache[id(pod)] = (pod, terms)
    return got[1]


def _has_terms(pod: dict) -> tuple:
    return (True,) if has_pod_affinity(pod) else ()


def _has_required_anti(pod: dict) -> tuple:
    return (True,) if has_required_anti_affinity(pod) else ()


def _ns_labels(snapshot, namespace: str) -> dict:
    ns = snapshot.namespaces.get(namespace)
    labels = ((ns or {}).get("metadata") or {}).get("labels")
    return labels if isinstance(labels, dict) else {}


def _placed_matching(view: PlacedPods, snapshot, term: Term) -> Iterable[tuple[dict, str]]:
    """(pod, node) of the placed pods ``term`` selects."""
    candidates = term.selector.candidates(view.by_label(), view.where)
    for key in list(candidates):
        pod, node = view.where[key]
        if term.matches(pod, _ns_labels(snapshot, key[0])):
            yield pod, node


def _domain(snapshot, node: str, key: str) -> Pair | None:
    info = snapshot.node_by_name.get(node)
    value = info.labels.get(key) if info is not None else None
    return (key, value) if isinstance(value, str) else None


@hookimpl(tryfirst=True)
def kai_pre_filter(pod):
    try:
        parse_terms(pod)
    except SelectorError as exc:
        return f"invalid {exc}"
    return None


@hookimpl(tryfirst=True)
def kai_filter_nodes(pod, nodes, snapshot):
    required = has_required_terms(pod)
    if not required and not any_pod(snapshot, "required-anti-affinity", has_required_anti_affinity):
        return None
    view = placed_pods(snapshot)
    with_anti = view.index("required-anti-affinity", _has_required_anti).get(True)
    if not required and not with_anti:
        return None
    terms = parse_terms(pod) if required else NO_TERMS
    out: dict[str, str] = {}
    if terms.required_affinity:
        _filter_affinity(pod, terms.required_affinity, nodes, snapshot, view, out)
    if terms.required_anti:
        anti: set[Pair] = set()
        for term in terms.required_anti:
            for _other, node in _placed_matching(view, snapshot, term):
                pair = _domain(snapshot, node, term.topology_key)
                if pair:
                    anti.add(pair)
        if anti:
            for n in nodes:
                if n.name not in out and any((t.topology_key, n.labels.get(t.topology_key)) in anti
                                             for t in terms.required_anti):
                    out[n.name] = REASON_ANTI_AFFINITY
    if with_anti:
        forbidden = _existing_anti(pod, with_anti, snapshot, view)
        if forbidden:
            for n in nodes:
                if n.name not in out and any(n.labels.get(k) == v for k, v in forbidden):
                    out[n.name] = REASON_EXISTING_ANTI_AFFINITY
    return out


def _filter_affinity(pod: dict, terms: tuple[Term, ...], nodes, snapshot, view: PlacedPods, out: dict) -> None:
    counts: set[Pair] = set()
    ns_labels = _ns_labels(snapshot, pod["metadata"].get("namespace", ""))
    first, rest = terms[0], terms[1:]
    for other, node in _placed_matching(view, snapshot, first):
        other_ns = _ns_labels(snapshot, other["metadata"].get("namespace", ""))
        if all(t.matches(other, other_ns) for t in rest):
            for t in terms:
                pair = _domain(snapshot, node, t.topology_key)
                if pair:
                    counts.add(pair)
    first_of_group = not counts and all(t.matches(pod, ns_labels) for t in terms)
    for n in nodes:
        labels = n.labels
        ok = True
        for t in terms:
            value = labels.get(t.topology_key)
            if value is None:
                ok = False
                break
            if (t.topology_key, value) not in counts and not first_of_group:
                ok = False
        if not ok:
            out[n.name] = REASON_AFFINITY


def _existing_anti(pod: dict, with_anti: dict, snapshot, view: PlacedPods) -> set[Pair]:
    """Domains where a placed pod's required anti-affinity term selects ``pod``."""
    ns_labels = _ns_labels(snapshot, pod["metadata"].get("namespace", ""))
    out: set[Pair] = set()
    for key, other in with_anti.items():
        node = view.node_of(key)
        for term in _terms_of(view, other).required_anti:
            if term.matches(pod, ns_labels):
                pair = _domain(snapshot, node, term.topology_key)
                if pair:
                    out.add(pair)
    return out


@hookimpl
def kai_score_nodes(pod, nodes, snapshot):
    own = _pod_affinity(pod)
    preferred = any(isinstance(p, dict) and p.get(PREFERRED) for p in own)
    if not preferred and not any_pod(snapshot, "pod-affinity", has_pod_affinity):
        return None
    view = placed_pods(snapshot)
    with_terms = view.index("pod-affinity", _has_terms).get(True)
    if not with_terms and not preferred:
        return None
    try:
        terms = parse_terms(pod)
    except SelectorError:
        terms = NO_TERMS
    scores: dict[Pair, int] = {}

    def add(node: str, key: str, weight: int) -> None:
        pair = _domain(snapshot, node, key)
        if pair:
            scores[pair] = scores.get(pair, 0) + weight

    for sign, own_terms in ((1, terms.preferred_affinity), (-1, terms.preferred_anti)):
        for term in own_terms:
            for _other, node in _placed_matching(view, snapshot, term):
                add(node, term.topology_key, sign * term.weight)
    ns_labels = _ns_labels(snapshot, pod["metadata"].get("namespace", ""))
    for key, other in (with_terms or {}).items():
        node = view.node_of(key)
        theirs = _terms_of(view, other)
        for term in theirs.required_affinity:
            if term.matches(pod, ns_labels):
                add(node, term.topology_key, HARD_POD_AFFINITY_WEIGHT)
        for sign, their_terms in ((1, theirs.preferred_affinity), (-1, theirs.preferred_anti)):
            for term in their_terms:
                if term.matches(pod, ns_labels):
                    add(node, term.topology_key, sign * term.weight)
    if not any(scores.values()):
        return None
    by_key: dict[str, dict[str, int]] = {}
    for (k, v), s in scores.items():
        by_key.setdefault(k, {})[v] = s
    raw = {}
    for n in nodes:
        labels = n.labels
        raw[n.name] = sum(values.get(labels.get(k), 0) for k, values in by_key.items())
    low, high = min(raw.values()), max(raw.values())
    if high == low:
        return None
    return {name: int(MAX_SCORE * (s - low) / (high - low)) for name, s in raw.items()}
