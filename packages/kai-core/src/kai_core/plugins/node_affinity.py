"""Filter: the pod's ``nodeSelector`` and required node affinity
(``requiredDuringSchedulingIgnoredDuringExecution``); both must match.

A malformed affinity (unknown operator, ``Gt`` with a non-integer...) makes the pod unschedulable
at pre-filter with a reason naming the bad requirement, instead of silently matching nothing; so do
``matchFields`` ``metadata.name`` requirements that no node name can meet, with kube-scheduler's
``pod affinity terms conflict``.
"""

from __future__ import annotations

from kai_core.api.nodeaffinity import (
    NodeSelectorError,
    match_node_selector,
    match_node_selector_term,
    named_nodes,
)
from kai_core.framework.hookspecs import hookimpl

REASON = "node(s) didn't match Pod's node affinity/selector"
#: kube-scheduler's PreFilter reason when the terms' ``metadata.name`` requirements leave no name
CONFLICT = "pod affinity terms conflict"
_AFFINITY_PATH = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
_PROBE_NODE: dict = {"metadata": {"name": "", "labels": {}}}


def _required(pod: dict):
    spec = pod.get("spec") or {}
    affinity = spec.get("affinity") or {}
    return ((affinity.get("nodeAffinity") or {}) if isinstance(affinity, dict) else {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )


@hookimpl(tryfirst=True)
def kai_pre_filter(pod):
    selector = (pod.get("spec") or {}).get("nodeSelector")
    if selector is not None and not (
        isinstance(selector, dict) and all(isinstance(v, str) for v in selector.values())
    ):
        return "invalid spec.nodeSelector: must map label keys to string values"
    required = _required(pod)
    if required is None:
        return None
    terms = required.get("nodeSelectorTerms") if isinstance(required, dict) else None
    if not isinstance(terms, list) or not terms:
        return f"invalid {_AFFINITY_PATH}: nodeSelectorTerms must be a non-empty list"
    for i, term in enumerate(terms):
        try:
            match_node_selector_term(term, _PROBE_NODE)  # validates every requirement of the term
        except NodeSelectorError as exc:
            return f"invalid {_AFFINITY_PATH}: nodeSelectorTerms[{i}]: {exc}"
    if named_nodes(terms) == set():
        return CONFLICT
    return None


@hookimpl(tryfirst=True)
def kai_filter_nodes(pod, nodes):
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    required = _required(pod)
    if not selector and not required:
        return None
    out = {}
    for n in nodes:
        labels = n.labels
        if any(labels.get(k) != v for k, v in selector.items()):
            out[n.name] = REASON
        elif required and not match_node_selector(required, n.obj):
            out[n.name] = REASON
    return out
