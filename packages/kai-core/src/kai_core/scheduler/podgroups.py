"""What the scheduler reads of KAI's PodGroups besides the gang itself: the group's pod sets (KAI's
leaf sub-groups, each with its own minimum), the set each pod is in, the node pool the group is
labelled with, and the times KAI keeps in its annotations.

As KAI builds them (``pkg/scheduler/api/podgroup_info``, ``subgroup_info/factory.go``):

- without ``spec.subGroups`` a group has one pod set, ``default``, whose minimum is
  ``spec.minMember`` (1 when unset);
- with sub-groups, each sub-group that no other one names as its ``parent`` is a pod set with its
  own ``minMember`` (0 when unset); sub-groups with children only group other sub-groups;
- a pod is in the set its label ``kai.scheduler/subgroup-name`` names (``default`` without the
  label); a pod naming a set the group does not have is in none, and KAI leaves it out of the
  group's counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

from kai_core.framework.gang import POD_GROUP_ANNOTATION
from kai_core.framework.snapshot import Snapshot
from kai_core.scheduler.actions import _parse_time, parse_duration

PodKey = tuple[str, str]

#: the pod label naming the sub-group (pod set) a pod is in
SUBGROUP_LABEL = "kai.scheduler/subgroup-name"
#: the pod set of a group without sub-groups
DEFAULT_POD_SET = "default"
#: the PodGroup label naming its node pool (KAI's ``--nodepool-label-key`` default), and the pool
#: a group without it is in
NODE_POOL_LABEL = "kai.scheduler/node-pool"
DEFAULT_NODE_POOL = "default"


@dataclass
class GroupPods:
    """A PodGroup and the pods of this scheduler that name it (finished ones too)."""

    key: PodKey
    group: dict
    pods: list[dict] = field(default_factory=list)

    @cached_property
    def pod_sets(self) -> dict[str, int]:
        """Pod set name -> its minimum number of pods."""
        return pod_sets(self.group)

    def set_of(self, pod: Mapping) -> str | None:
        """The pod set ``pod`` is in, or None when it names one the group does not have."""
        name = ((pod.get("metadata") or {}).get("labels") or {}).get(SUBGROUP_LABEL) or DEFAULT_POD_SET
        return name if name in self.pod_sets else None


def pod_sets(group: Mapping) -> dict[str, int]:
    """The group's pod sets and their minimums (see the module docstring)."""
    spec = group.get("spec") if isinstance(group.get("spec"), Mapping) else {}
    subs = [s for s in spec.get("subGroups") or [] if isinstance(s, Mapping) and isinstance(s.get("name"), str)]
    if not subs:
        return {DEFAULT_POD_SET: _count(spec.get("minMember"), 1)}
    parents = {s["parent"].lower() for s in subs if isinstance(s.get("parent"), str)}
    return {s["name"]: _count(s.get("minMember"), 0) for s in subs if s["name"] not in parents}


def _count(value: object, unset: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return max(value, 0)
    return unset


def groups_of(snap: Snapshot) -> dict[PodKey, GroupPods]:
    """Every PodGroup the snapshot holds that pods of this scheduler name, with those pods."""
    out: dict[PodKey, GroupPods] = {}
    if not snap.pod_groups:
        return out
    for pod in snap.pods.values():
        md = pod["metadata"]
        name = (md.get("annotations") or {}).get(POD_GROUP_ANNOTATION)
        if not name or (pod.get("spec") or {}).get("schedulerName") != snap.scheduler_name:
            continue
        key = (md.get("namespace", ""), name)
        found = out.get(key)
        if found is None:
            group = snap.pod_groups.get(key)
            if group is None:
                continue
            found = out[key] = GroupPods(key, group)
        found.pods.append(pod)
    return out


def node_pool(group: Mapping) -> str:
    """The node pool the group is labelled with (KAI's ``GetNodePoolNameFromLabels``)."""
    labels = (group.get("metadata") or {}).get("labels") or {}
    return labels.get(NODE_POOL_LABEL) or DEFAULT_NODE_POOL


def annotation_time(group: Mapping, key: str) -> float | None:
    """The RFC 3339 time in the group's annotation ``key`` as Unix seconds, or None."""
    return _parse_time(((group.get("metadata") or {}).get("annotations") or {}).get(key))


def rfc3339(seconds: float) -> str:
    """Unix seconds as Kubernetes writes a time (UTC, to the second)."""
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def go_duration(text: object) -> float | None:
    """Go's ``time.ParseDuration`` (what a ``metav1.Duration`` holds: ``90s``, ``-1s``,
    ``1h30m``, ``0``) in seconds, or None when ``text`` is not one."""
    if not isinstance(text, str) or not text:
        return None
    sign, body = (-1.0, text[1:]) if text[0] == "-" else (1.0, text[1:] if text[0] == "+" else text)
    if body == "0":
        return 0.0
    seconds = parse_duration(body)
    return None if seconds is None else sign * seconds


def format_go_duration(seconds: float) -> str:
    """Seconds as Go prints a ``time.Duration`` (``5m0s``, ``1h0m0s``, ``1.5s``, ``0s``)."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        for unit, scale in (("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
            if seconds >= scale:
                return f"{sign}{seconds / scale:g}{unit}"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = f"{secs:g}s"
    if hours or minutes:
        out = f"{int(minutes)}m{out}"
    if hours:
        out = f"{int(hours)}h{out}"
    return sign + out
