"""Filter: a node's ``NoSchedule`` and ``NoExecute`` taints must be tolerated by the pod
(``PreferNoSchedule`` is a preference and does not filter)."""

from __future__ import annotations

from kai_core.framework.hookspecs import hookimpl

FILTERING_EFFECTS = ("NoSchedule", "NoExecute")


def toleration_matches(tol: dict, taint: dict) -> bool:
    """Kubernetes' ``Toleration.ToleratesTaint``: an empty effect matches every effect, an empty
    key with ``Exists`` matches every taint, ``Equal`` (the default) also compares the value, and
    an unknown operator matches nothing."""
    if not isinstance(tol, dict):
        return False
    if tol.get("effect") and tol["effect"] != taint.get("effect"):
        return False
    if tol.get("key") and tol["key"] != taint.get("key"):
        return False
    op = tol.get("operator") or "Equal"
    if op == "Exists":
        return True
    if op == "Equal":
        return bool(tol.get("key")) and (tol.get("value") or "") == (taint.get("value") or "")
    return False


def tolerates(tolerations: list[dict], taint: dict) -> bool:
    """Whether any of ``tolerations`` tolerates ``taint``."""
    return any(toleration_matches(t, taint) for t in tolerations)


#: kube-scheduler's reason (1.34 to 1.37): the taint itself is named only in its log, at level 4,
#: so nodes with different taints count as one reason in ``0/N nodes are available: ...``
UNTOLERATED = "node(s) had untolerated taint(s)"


def untolerated_reason(taint: dict) -> str:
    """kube-scheduler's reason for a node with a taint the pod does not tolerate."""
    return UNTOLERATED


def _tolerations(pod: dict):
    """The pod's tolerations, or None when they are not a list of mappings."""
    spec = pod.get("spec")
    tolerations = (spec.get("tolerations") if isinstance(spec, dict) else None) or []
    if isinstance(tolerations, list) and all(isinstance(t, dict) for t in tolerations):
        return tolerations
    return None


@hookimpl(tryfirst=True)
def kai_pre_filter(pod):
    if _tolerations(pod) is None:
        return "invalid spec.tolerations: must be a list of tolerations (key, operator, value, effect)"
    return None


@hookimpl(tryfirst=True)
def kai_filter_nodes(pod, nodes):
    tolerations = _tolerations(pod) or []
    out = {}
    for n in nodes:
        for taint in n.taints:
            if not isinstance(taint, dict):
                out[n.name] = f"node {n.name} is invalid: spec.taints is not a list of taints"
                break
            if taint.get("effect") in FILTERING_EFFECTS and not tolerates(tolerations, taint):
                out[n.name] = untolerated_reason(taint)
                break
    return out
