"""Which pods carry constraints about other pods (inter-pod affinity, topology spread), read from
the pod alone: what the equivalence memo needs to know to stay correct
(:mod:`kai_core.scheduler.equivalence`) and what the plugins enforcing them check first, so a pod
without such constraints costs them one look at its spec."""

from __future__ import annotations

REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"


def pod_affinity_parts(pod: dict) -> tuple[object, object]:
    """The pod's ``spec.affinity.podAffinity`` and ``podAntiAffinity`` (None when absent)."""
    spec = pod.get("spec")
    affinity = spec.get("affinity") if isinstance(spec, dict) else None
    if not isinstance(affinity, dict):
        return None, None
    return affinity.get("podAffinity"), affinity.get("podAntiAffinity")


def has_required_terms(pod: dict) -> bool:
    """Whether the pod has required pod affinity or anti-affinity terms (its filter answers for a
    node then depend on the pods of other nodes of the domain)."""
    return any(isinstance(part, dict) and part.get(REQUIRED) for part in pod_affinity_parts(pod))


def has_required_anti_affinity(pod: dict) -> bool:
    """Whether the pod has required anti-affinity terms (placing it may repel other pods from every
    node of its topology domain)."""
    anti = pod_affinity_parts(pod)[1]
    return isinstance(anti, dict) and bool(anti.get(REQUIRED))


def spread_constraints(pod: dict) -> list:
    """The pod's ``spec.topologySpreadConstraints`` (empty when absent or not a list)."""
    spec = pod.get("spec")
    constraints = spec.get("topologySpreadConstraints") if isinstance(spec, dict) else None
    return constraints if isinstance(constraints, list) else []


def has_hard_spread(pod: dict) -> bool:
    """Whether the pod has ``DoNotSchedule`` topology spread constraints of its own."""
    return any(isinstance(c, dict) and c.get("whenUnsatisfiable") == "DoNotSchedule"
               for c in spread_constraints(pod))
