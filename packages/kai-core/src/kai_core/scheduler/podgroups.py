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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

from kai_core.api.resources import is_active_pod
from kai_core.framework.gang import POD_GROUP_ANNOTATION
from kai_core.framework.queue_usage import indexed_pods
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


def groups_of(snap: Snapshot, only: Iterable[PodKey] | None = None) -> dict[PodKey, GroupPods]:
    """Every PodGroup the snapshot holds that pods of this scheduler name (or those of ``only``),
    with all those pods, finished and terminating ones too: one walk over every pod."""
    out: dict[PodKey, GroupPods] = {}
    wanted = set(only) if only is not None else None
    if not snap.pod_groups or wanted == set():
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
            if group is None or (wanted is not None and key not in wanted):
                continue
            found = out[key] = GroupPods(key, group)
        found.pods.append(pod)
    return out


class CycleGroups:
    """This cycle's PodGroups and their pods, read from the cache's pod index
    (:func:`~kai_core.framework.queue_usage.indexed_pods`) when the snapshot has one, so that a
    cycle on a big cluster does not walk every pod: the index holds each group's pods that may run
    (not finished, not being deleted) and how many of them are bound. Without an index every pod is
    walked once."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self._index = indexed_pods(snap)
        self._walked: dict[PodKey, GroupPods] | None = None

    def _walk(self) -> dict[PodKey, GroupPods]:
        if self._walked is None:
            self._walked = groups_of(self.snap)
        return self._walked

    def alive(self, key: PodKey) -> GroupPods:
        """The group with its pods of this scheduler that are not finished nor being deleted."""
        group = self.snap.pod_groups[key]
        if self._index is None:
            found = self._walk().get(key)
            pods = [p for p in found.pods if _alive(p)] if found is not None else []
        else:
            mine = self.snap.scheduler_name
            pods = [p for p in (self._index.usage.groups.get(key) or {}).values()
                    if p["spec"]["schedulerName"] == mine]
        return GroupPods(key, group, pods)

    def others(self, key: PodKey) -> bool:
        """Whether pods of other schedulers that may run name the group (known from the index only)."""
        if self._index is None:
            return False
        mine = self.snap.scheduler_name
        return any(p["spec"]["schedulerName"] != mine for p in (self._index.usage.groups.get(key) or {}).values())

    def holding_nodes(self) -> dict[PodKey, int]:
        """Group -> how many of its pods of this scheduler hold a node (bound, in flight to the
        binder or decided this cycle) and are neither finished nor being deleted."""
        counts: dict[PodKey, int] = {}
        snap = self.snap
        if self._index is None:
            for key, gp in self._walk().items():
                counts[key] = sum(1 for p in gp.pods if _alive(p) and snap.node_of(p) is not None)
            return counts
        mine = snap.scheduler_name
        for (scheduler, namespace, group, _label, _high, bound), sums in self._index.usage.buckets.items():
            if bound and group is not None and scheduler == mine:
                counts[(namespace, group)] = counts.get((namespace, group), 0) + sums[0]
        for key in snap.in_flight:
            pod = snap.pods.get(key)
            spec = (pod or {}).get("spec") or {}
            if spec.get("schedulerName") != mine or spec.get("nodeName") or not _alive(pod):
                continue  # a bound pod is counted already (a consolidation's simulated move is not a pod)
            name = (pod["metadata"].get("annotations") or {}).get(POD_GROUP_ANNOTATION)
            if name:
                counts[(key[0], name)] = counts.get((key[0], name), 0) + 1
        return counts

    def complete(self, keys: Iterable[PodKey]) -> dict[PodKey, GroupPods]:
        """These groups with every pod of this scheduler naming them, finished and terminating ones
        too (one walk over the pods, unless already done)."""
        if self._walked is not None:
            return {k: self._walked[k] for k in keys if k in self._walked}
        return groups_of(self.snap, keys)


def _alive(pod: Mapping) -> bool:
    return is_active_pod(pod) and not pod["metadata"].get("deletionTimestamp")


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
