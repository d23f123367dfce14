"""KAI's PodGroups as gangs: pods annotated ``pod-group-name: <name>`` belong to the PodGroup of that
name in their namespace, and at least its ``spec.minMember`` pods are placed together or none is.

- ``kai_pod_groups`` declares one :class:`~kai_core.framework.gang.GroupSpec` per PodGroup with
  ``minMember`` of 2 or more that has pods. A ``minMember`` of 0 (KAI: no gang requirement) or 1
  (KAI's pod-grouper gives every plain pod such a group) asks for nothing a lone pod does not get,
  so those pods are scheduled one by one. ``subGroups`` and ``minSubGroup`` are not enforced:
  the group's own ``minMember`` is. ``queue``, ``priorityClassName``, ``preemptibility`` and the
  topology constraint are KAI's queueing and placement features, not read here (a plugin can
  place a gang by topology through ``kai_group_node_subsets``). This plugin writes nothing; the
  scheduler says why a gang waits on its pods and in the PodGroup's ``status.schedulingConditions``
  (:mod:`kai_core.scheduler.podgroup_status`).
- ``kai_pre_filter`` keeps a pod waiting while the PodGroup it names does not exist (KAI's
  pod-grouper creates the group right after the pod), so that no member of a gang is placed
  before the gang's size is known. When the scheduler does not watch PodGroups (their CRD is not
  installed), the annotation is ignored.
"""

from __future__ import annotations

from kai_core.api.resources import RES_POD_GROUPS
from kai_core.framework.gang import POD_GROUP_ANNOTATION, GroupSpec
from kai_core.framework.hookspecs import hookimpl


def _group_name(pod: dict) -> str | None:
    name = ((pod.get("metadata") or {}).get("annotations") or {}).get(POD_GROUP_ANNOTATION)
    return name if isinstance(name, str) and name else None


def min_member(pod_group: dict) -> int:
    """``spec.minMember`` of a PodGroup; 0 when unset or not a number (no gang requirement)."""
    spec = pod_group.get("spec")
    value = spec.get("minMember") if isinstance(spec, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@hookimpl(tryfirst=True)
def kai_pod_groups(pods, snapshot):
    if not snapshot.pod_groups:
        return None
    members: dict[tuple[str, str], list[dict]] = {}
    for pod in pods:
        name = _group_name(pod)
        if name is not None:
            members.setdefault((pod["metadata"].get("namespace", ""), name), []).append(pod)
    out = []
    for key, group_pods in members.items():
        pod_group = snapshot.pod_groups.get(key)
        if pod_group is None:
            continue
        minimum = min_member(pod_group)
        if minimum < 2:
            continue
        out.append(GroupSpec(f"PodGroup/{key[0]}/{key[1]}", group_pods, minimum,
                             f"PodGroup {key[0]}/{key[1]} (minMember {minimum})"))
    return out


@hookimpl(tryfirst=True)
def kai_pre_filter(pod, snapshot):
    name = _group_name(pod)
    if name is None or not snapshot.watches(RES_POD_GROUPS):
        return None
    namespace = pod["metadata"].get("namespace", "")
    if (namespace, name) not in snapshot.pod_groups:
        return (f'PodGroup "{namespace}/{name}" (annotation {POD_GROUP_ANNOTATION}) not found: the pod waits '
                "for its group to be created")
    return None
