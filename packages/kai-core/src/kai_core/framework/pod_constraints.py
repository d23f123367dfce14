"""Which pods carry constraints about other pods (inter-pod affinity, topology spread), read from
the pod alone: what the equivalence memo needs to know to stay correct
(:mod:`kai_core.scheduler.equivalence`) and what the plugins enforcing them check first, so a pod
without such constraints costs them one look at its spec."""

from __future__ import annotations

import json
import os

REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"


def pod_affinity_parts(pod: dict) -> tuple[object, object]:
    """The pod's ``spec.affinity.podAffinity`` and ``podAntiAffinity`` (None when absent)."""
    spec = pod.get("spec")
    affinity = spec.get("affinity") if isinstance(spec, dict) else None
    if not isinstance(affinity, dict):
        return None, None
    return affinity.get("podAffinity"), affinity.get("podAntiAffinity")


def has_pod_affinity(pod: dict) -> bool:
    """Whether the pod has any pod affinity or anti-affinity (required or preferred)."""
    affinity, anti = pod_affinity_parts(pod)
    return bool(affinity or anti)


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


# -- cluster-level default spread constraints ------------------------------------------------

#: environment variable holding the cluster's default topology spread constraints (see
#: :func:`default_spread_constraints`)
DEFAULT_SPREAD_ENV = "KAI_DEFAULT_SPREAD_CONSTRAINTS"
#: kube-scheduler's system defaults (``defaultingType: System``)
SYSTEM_DEFAULT_SPREAD = (
    {"maxSkew": 3, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"},
    {"maxSkew": 5, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"},
)
#: owners whose pods the default constraints spread, as kube-scheduler's default selector takes
#: the selectors of the ReplicaSets, StatefulSets and ReplicationControllers selecting the pod
DEFAULT_SPREAD_OWNERS = ("ReplicaSet", "StatefulSet", "ReplicationController")

_parsed: dict[str | None, tuple[tuple, bool, str | None]] = {}


def default_spread_constraints() -> tuple[tuple, bool, str | None]:
    """The cluster's default constraints ``(constraints, system, error)`` from
    :data:`DEFAULT_SPREAD_ENV`: unset or ``system`` gives kube-scheduler's system defaults
    (``system`` True); ``none`` gives none; otherwise a JSON list of constraints without
    ``labelSelector`` (kube-scheduler's ``defaultingType: List``). A bad value gives no constraints
    and ``error`` saying why (``<variable>: <problem>``)."""
    raw = os.environ.get(DEFAULT_SPREAD_ENV)
    got = _parsed.get(raw)
    if got is not None:
        return got
    text = (raw or "system").strip()
    if text == "system":
        got = (SYSTEM_DEFAULT_SPREAD, True, None)
    elif text == "none":
        got = ((), False, None)
    else:
        try:
            value = json.loads(text)
        except ValueError as exc:
            value, err = None, f"not JSON ({exc})"
        else:
            err = None
        if err is None and not (isinstance(value, list) and all(isinstance(c, dict) for c in value)):
            err = "must be system, none, or a JSON list of topology spread constraints"
        if err is None and any("labelSelector" in c for c in value):
            err = "default constraints take no labelSelector (the pod's owner selects the pods)"
        got = ((), False, f"{DEFAULT_SPREAD_ENV}: {err}") if err else (tuple(value), False, None)
    _parsed[raw] = got
    return got


def spread_owner(pod: dict) -> str | None:
    """The uid of the pod's controller when it is one the default constraints apply to."""
    owners = pod["metadata"].get("ownerReferences")
    for o in owners if isinstance(owners, list) else ():
        if isinstance(o, dict) and o.get("controller") and o.get("kind") in DEFAULT_SPREAD_OWNERS and o.get("uid"):
            return o["uid"]
    return None


def has_hard_spread(pod: dict) -> bool:
    """Whether ``DoNotSchedule`` topology spread constraints apply to the pod: its own, or, when it
    has none, the cluster's defaults (for a pod of a ReplicaSet, StatefulSet or
    ReplicationController)."""
    own = spread_constraints(pod)
    if own:
        return any(isinstance(c, dict) and c.get("whenUnsatisfiable") == "DoNotSchedule" for c in own)
    if spread_owner(pod) is None:
        return False
    return any(c.get("whenUnsatisfiable") == "DoNotSchedule" for c in default_spread_constraints()[0])
