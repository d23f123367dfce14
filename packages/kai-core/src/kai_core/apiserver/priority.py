"""Pod priority as the API server gives it: the ``scheduling.k8s.io/v1`` PriorityClass kind and the
Priority admission plugin.

On a real cluster nobody writes ``spec.priority`` by hand: the admission plugin resolves the pod's
``spec.priorityClassName`` to the class's ``value`` (and its ``preemptionPolicy``) when the pod is
created, and refuses a pod naming a class that does not exist or carrying a priority that disagrees
with its class. A pod without a class name gets the globalDefault class (its name written into the
pod), or priority 0 when there is none. The two system classes exist from the start and cannot be
deleted. Facts from kube-apiserver 1.34: plugin/pkg/admission/priority/admission.go,
pkg/apis/scheduling/validation, pkg/registry/scheduling/priorityclass.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from kai_core.api.errors import Forbidden, Invalid, short_repr, shorten

RESOURCE = "priorityclasses.scheduling.k8s.io"
API_VERSION = "scheduling.k8s.io/v1"
#: the largest value a class not named ``system-...`` may have
HIGHEST_USER_DEFINABLE_PRIORITY = 1_000_000_000
SYSTEM_CRITICAL_PRIORITY = 2 * HIGHEST_USER_DEFINABLE_PRIORITY
SYSTEM_PREFIX = "system-"
#: name -> (value, description) of the classes the API server creates when it starts
SYSTEM_CLASSES: dict[str, tuple[int, str]] = {
    "system-node-critical": (
        SYSTEM_CRITICAL_PRIORITY + 1000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    "system-cluster-critical": (
        SYSTEM_CRITICAL_PRIORITY,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if "
        "necessary.",
    ),
}
PREEMPT_LOWER_PRIORITY = "PreemptLowerPriority"
PREEMPTION_POLICIES = (PREEMPT_LOWER_PRIORITY, "Never")  # in the order the API server lists them
_INT32 = (-(2**31), 2**31 - 1)


def system_classes() -> list[dict]:
    """The PriorityClass objects every cluster has (created by the API server at start-up)."""
    return [
        {"apiVersion": API_VERSION, "kind": "PriorityClass", "metadata": {"name": name},
         "value": value, "description": description, "preemptionPolicy": PREEMPT_LOWER_PRIORITY}
        for name, (value, description) in SYSTEM_CLASSES.items()
    ]


# -- the PriorityClass kind ----------------------------------------------------------------------


def default_priority_class(obj: dict) -> dict:
    """API defaulting: ``preemptionPolicy: PreemptLowerPriority``. Returns ``obj``."""
    if obj.get("preemptionPolicy") is None:
        obj["preemptionPolicy"] = PREEMPT_LOWER_PRIORITY
    return obj


def _name(obj: dict) -> str:
    md = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    return str(md.get("name") or md.get("generateName") or "")


def _quoted(value) -> str:
    """A value as the API server's field errors print it: a string in double quotes."""
    return json.dumps(shorten(value)) if isinstance(value, str) else short_repr(value)


def _int32(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and _INT32[0] <= value <= _INT32[1]


def validate_priority_class(obj: dict) -> None:
    """The API server's PriorityClass validation: an int32 ``value`` of at most 1,000,000,000 unless
    the name is a system class's (``system-`` names are reserved, with their value and
    ``globalDefault: false``), a known ``preemptionPolicy``, a boolean ``globalDefault``."""
    name, value, default = _name(obj), obj.get("value", 0), obj.get("globalDefault", False)
    problems: list[str] = []
    if not _int32(value):
        problems.append(f"value: must be a 32-bit integer, got {short_repr(value)}")
    if not isinstance(default, bool):
        problems.append(f"globalDefault: must be a boolean, got {short_repr(default)}")
    if name.startswith(SYSTEM_PREFIX):
        known = SYSTEM_CLASSES.get(name)
        if known is None:
            why = f"{name} is not a known system priority class"
        elif value != known[0]:
            why = f"value of {name} PriorityClass must be {known[0]}"
        elif default is not False:
            why = f"globalDefault of {name} PriorityClass must be false"
        else:
            why = ""
        if why:
            problems.append(f"metadata.name: Forbidden: priority class names with '{SYSTEM_PREFIX}' prefix are "
                            f"reserved for system use only. error: {why}")
    elif _int32(value) and value > HIGHEST_USER_DEFINABLE_PRIORITY:
        problems.append("value: Forbidden: maximum allowed value of a user defined priority is "
                        f"{HIGHEST_USER_DEFINABLE_PRIORITY}")
    policy = obj.get("preemptionPolicy")
    if policy not in PREEMPTION_POLICIES:
        problems.append(f"preemptionPolicy: Unsupported value: {_quoted(policy)}: supported values: "
                        + ", ".join(f'"{p}"' for p in PREEMPTION_POLICIES))
    description = obj.get("description")
    if description is not None and not isinstance(description, str):
        problems.append(f"description: must be a string, got {short_repr(description)}")
    if problems:
        raise Invalid(f'PriorityClass.scheduling.k8s.io "{name}" is invalid: ' + "; ".join(problems))


def validate_priority_class_update(old: dict, new: dict) -> None:
    """``value`` and ``preemptionPolicy`` cannot change once the class exists."""
    problems = []
    if new.get("value", 0) != old.get("value", 0):
        problems.append("value: Forbidden: may not be changed in an update.")
    if new.get("preemptionPolicy") != old.get("preemptionPolicy"):
        problems.append(f"preemptionPolicy: Invalid value: {_quoted(new.get('preemptionPolicy'))}: "
                        "field is immutable")
    if problems:
        raise Invalid(f'PriorityClass.scheduling.k8s.io "{_name(new)}" is invalid: ' + "; ".join(problems))


def global_default(classes: Iterable[dict]) -> dict | None:
    """The class pods without a class name get: the globalDefault one (the lowest value should a
    race have left two), or None."""
    defaults = [c for c in classes if c.get("globalDefault") is True]
    return min(defaults, key=lambda c: (c.get("value", 0), _name(c))) if defaults else None


def admit_priority_class(obj: dict, classes: Iterable[dict]) -> None:
    """The admission plugin's check of a PriorityClass create or update: only one class may be
    ``globalDefault``."""
    if obj.get("globalDefault") is not True:
        return
    current = global_default(c for c in classes if _name(c) != _name(obj))
    if current is not None:
        raise Forbidden(f'priorityclasses.scheduling.k8s.io "{_name(obj)}" is forbidden: PriorityClass '
                        f"{_name(current)} is already marked as default. Only one default can exist")


def refuse_system_delete(name: str) -> None:
    """The system classes cannot be deleted."""
    if name in SYSTEM_CLASSES:
        raise Forbidden(f'priorityclasses.scheduling.k8s.io "{name}" is forbidden: this is a system priority '
                        "class and cannot be deleted")


# -- pods ----------------------------------------------------------------------------------------


def admit_pod(pod: dict, classes: Mapping[str, dict], *, keep_given: bool = False) -> None:
    """The Priority admission plugin on a pod's create: ``spec.priority`` and
    ``spec.preemptionPolicy`` from its class (``classes``: name -> PriorityClass), changed in place.

    ``keep_given``: a pod restored from a manifest or a saved state that carries a priority and no
    class name keeps it (saved objects keep what the API server once gave them). A field of the
    wrong type is left for validation to report."""
    spec = pod.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("priorityClassName", ""), str):
        return
    name = spec.get("priorityClassName") or ""
    given = spec.get("priority")
    if given is not None and (not isinstance(given, int) or isinstance(given, bool) or not name and keep_given):
        return
    where = f'pods "{_name(pod)}" is forbidden'
    if name:
        pc = classes.get(name)
        if pc is None:
            raise Forbidden(f"{where}: no PriorityClass with name {shorten(name)} was found")
    else:
        pc = global_default(classes.values())
        if pc is not None:
            spec["priorityClassName"] = _name(pc)
    value = pc.get("value", 0) if pc is not None else 0
    policy = pc.get("preemptionPolicy") if pc is not None else PREEMPT_LOWER_PRIORITY
    if given is not None and given != value:
        raise Forbidden(f"{where}: the integer value of priority ({given}) must not be provided in pod "
                        f"spec; priority admission controller computed {value} from the given PriorityClass name")
    spec["priority"] = value
    if policy is not None:
        if spec.get("preemptionPolicy") is not None and spec["preemptionPolicy"] != policy:
            raise Forbidden(f"{where}: the string value of PreemptionPolicy ({shorten(str(spec['preemptionPolicy']))}) "
                            f"must not be provided in pod spec; priority admission controller computed {policy} "
                            "from the given PriorityClass name")
        spec["preemptionPolicy"] = policy


def keep_pod_priority(old: dict, new: dict) -> None:
    """On a pod's update, a priority (and preemption policy) the request leaves out is the stored
    pod's, as the admission plugin keeps it; changing it is refused by the update validation."""
    old_spec, new_spec = old.get("spec"), new.get("spec")
    if isinstance(old_spec, dict) and isinstance(new_spec, dict):
        for f in ("priority", "preemptionPolicy"):
            if new_spec.get(f) is None and old_spec.get(f) is not None:
                new_spec[f] = old_spec[f]
