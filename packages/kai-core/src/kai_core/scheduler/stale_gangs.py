"""Stale gangs: a PodGroup that keeps running below its minimum, and is evicted after a grace period
(KAI's ``stalegangeviction`` action, the last of a cycle).

A group is **stale** (KAI's ``PodGroupInfo.IsStale``) when none of its pods has Succeeded, at least
one is active, and one of its pod sets (:mod:`kai_core.scheduler.podgroups`) has fewer active pods
than its minimum. A pod is active from the moment it has a node (decided in this cycle, in flight
to the binder, bound) until it has finished, terminating ones included: a gang that lost a pod to
a failure or a deletion is stale, one whose pods are being bound is not.

When a group first shows stale, the time is kept in its annotation
``kai.scheduler/stale-podgroup-timestamp`` (as KAI does, so a restarted scheduler keeps counting
from it), and a ``StaleJob`` Event says so; the annotation goes once the group is no longer stale.
Once the group has been stale for its ``spec.stalenessGracePeriod`` (a duration; else the
scheduler's default, 60s; a negative one: never), every pod of it that holds a node and is not
already terminating is evicted (:class:`~kai_core.scheduler.evictions.Evictor`, action
``stale-gang``), each with KAI's message: the rest of the gang cannot do its work, and its
resources go back to the waiting workloads. No simulation is needed: nothing is placed instead.

A grace period that is not a Go duration is logged and the group is left running: an unreadable
setting never costs running work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kai_core.api.errors import ApiError
from kai_core.api.events import pod_event
from kai_core.api.objects import ref
from kai_core.api.resources import POD_GROUP_API_VERSION, RES_POD_GROUPS, is_active_pod
from kai_core.framework.queues import pod_queue
from kai_core.framework.snapshot import Snapshot
from kai_core.scheduler.conditions import COMPONENT
from kai_core.scheduler.evictions import Eviction, Evictor
from kai_core.scheduler.podgroups import (
    DEFAULT_POD_SET,
    CycleGroups,
    GroupPods,
    annotation_time,
    go_duration,
    pod_sets,
    rfc3339,
)

log = logging.getLogger("kai.scheduler.stale_gangs")

#: the PodGroup annotation holding when the group became stale (KAI's ``StalePodgroupTimeStamp``)
STALE_SINCE_ANNOTATION = "kai.scheduler/stale-podgroup-timestamp"
#: the ``action`` of a stale gang's evictions
STALE_GANG = "stale-gang"


@dataclass
class StaleGangConfig:
    """Stale gang eviction (KAI's ``stalegangeviction`` action)."""

    enabled: bool = True
    #: seconds a group may stay stale when its ``spec.stalenessGracePeriod`` is unset (KAI's
    #: ``--default-staleness-grace-period``); negative: stale groups are never evicted
    default_grace_period: float = 60.0


class StaleGangEviction:
    """Finds stale gangs at the end of a cycle and evicts those past their grace period."""

    def __init__(self, store, evictor: Evictor, config: StaleGangConfig | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.evictor = evictor
        self.config = config or StaleGangConfig()
        self.wall_clock = wall_clock
        #: the wall time at which the next stale group's grace period ends (None: none waits)
        self.next_deadline: float | None = None
        #: group -> a pod of it seen Succeeded (a group with one is done, never stale)
        self._succeeded: dict[tuple[str, str], str] = {}
        #: group -> (the object read, its pod sets)
        self._sets: dict[tuple[str, str], tuple[dict, dict[str, int]]] = {}
        #: group -> the unreadable grace period already logged
        self._warned: dict[tuple[str, str], object] = {}

    def run(self, snap: Snapshot, groups: CycleGroups, result) -> list[Eviction]:
        """Check every group; evictions carried out go into ``result.evictions`` too."""
        self.next_deadline = None
        if not self.config.enabled or not snap.pod_groups:
            return []
        now = self.wall_clock()
        done: list[Eviction] = []
        for gp in self._candidates(snap, groups):
            since = annotation_time(gp.group, STALE_SINCE_ANNOTATION)
            missing = stale_sets(gp, snap)
            if missing is None:
                if _annotated(gp.group):
                    self._stamp(gp, None)
                continue
            if since is None:
                since = now
                self._stamp(gp, rfc3339(now))
                self._event(gp, missing)
            grace = self._grace(gp)
            if grace is None or grace < 0:
                continue
            if now < since + grace:
                end = since + grace
                self.next_deadline = end if self.next_deadline is None else min(self.next_deadline, end)
                continue
            done += self._evict(gp, snap)
        result.evictions.extend(done)
        return done

    def _candidates(self, snap: Snapshot, groups: CycleGroups) -> list[GroupPods]:
        """The groups that may be stale, with all their pods. Most are settled from counts alone: a
        group without sub-groups with at least its minimum of pods holding nodes is not stale (its
        annotation, if any, goes), nor is one with none (pods on their way out aside, which could
        not be evicted anyway); a group with a pod known to have Succeeded is done."""
        for key in [k for k in self._succeeded if k not in snap.pod_groups]:
            del self._succeeded[key]
        if len(self._sets) > len(snap.pod_groups):  # groups were deleted
            self._sets = {k: v for k, v in self._sets.items() if k in snap.pod_groups}
        holding = groups.holding_nodes()
        maybe = []
        for key, group in snap.pod_groups.items():
            n = holding.get(key, 0)
            annotated = _annotated(group)
            if n == 0 and not annotated:
                continue
            sets = self._pod_sets(key, group)
            if self._done(snap, key) or (
                    n >= sum(sets.values()) and (_one_set(sets) or _satisfied(groups.alive(key), sets, snap))):
                if annotated:
                    self._stamp(GroupPods(key, group), None)
                continue
            maybe.append(key)
        found = groups.complete(maybe)
        out = []
        for key in maybe:
            gp = found.get(key) or GroupPods(key, snap.pod_groups[key])
            succeeded = next((p for p in gp.pods if (p.get("status") or {}).get("phase") == "Succeeded"), None)
            if succeeded is not None:
                self._succeeded[key] = succeeded["metadata"]["name"]
            out.append(gp)
        return out

    def _pod_sets(self, key: tuple[str, str], group: dict) -> dict[str, int]:
        """:func:`pod_sets` of the group, read again only when the group changed."""
        found = self._sets.get(key)
        if found is None or found[0] is not group:
            found = self._sets[key] = (group, pod_sets(group))
        return found[1]

    def _done(self, snap: Snapshot, key: tuple[str, str]) -> bool:
        """Whether a pod of the group seen Succeeded is still there (so no walk is needed)."""
        name = self._succeeded.get(key)
        if name is None:
            return False
        pod = snap.pods.get((key[0], name))
        if pod is not None and (pod.get("status") or {}).get("phase") == "Succeeded":
            return True
        del self._succeeded[key]
        return False

    def next_due(self, clock: Callable[[], float]) -> float | None:
        """When, on ``clock``, the next stale group's grace period ends (None: none is waiting)."""
        if self.next_deadline is None:
            return None
        return clock() + (self.next_deadline - self.wall_clock())  # in the past once due: a loop comparing sees it

    def _grace(self, gp: GroupPods) -> float | None:
        spec = gp.group.get("spec") if isinstance(gp.group.get("spec"), dict) else {}
        text = spec.get("stalenessGracePeriod")
        if text is None:
            return self.config.default_grace_period
        seconds = go_duration(text)
        if seconds is None and self._warned.get(gp.key) != text:
            self._warned[gp.key] = text
            log.warning("PodGroup %s/%s: spec.stalenessGracePeriod %r is not a duration (such as 60s or -1s); "
                        "the stale group is not evicted", *gp.key, text)
        return seconds

    def _evict(self, gp: GroupPods, snap: Snapshot) -> list[Eviction]:
        victims = [p for p in gp.pods if gp.set_of(p) is not None and _evictable(p, snap)]
        done = []
        for pod in victims:
            eviction = Eviction(pod=pod, action=STALE_GANG, message=stale_gang_message(gp, pod),
                                queue=pod_queue(pod, gp.group), gang_size=len(victims),
                                pod_group=gp.group)
            if self.evictor.evict(eviction):
                done.append(eviction)
        if done:
            log.info("stale gang: evicted %d pod(s) of PodGroup %s/%s", len(done), *gp.key)
        return done

    def _stamp(self, gp: GroupPods, value: str | None) -> None:
        """Set (or, with None, remove) the stale-since annotation, with a merge patch: only the
        annotation changes, whatever else was written meanwhile."""
        patch = {"metadata": {"annotations": {STALE_SINCE_ANNOTATION: value}}}
        try:
            self.store.patch(RES_POD_GROUPS, gp.key[1], gp.key[0], patch)
        except ApiError as exc:  # tried again next cycle: the group is still (or no longer) stale
            log.warning("PodGroup %s/%s: cannot update %s: %s", *gp.key, STALE_SINCE_ANNOTATION, exc.message)

    def _event(self, gp: GroupPods, missing: list[tuple[str, int, int]]) -> None:
        md = gp.group["metadata"]
        event = pod_event(md, "Normal", "StaleJob", stale_job_message(gp, missing), COMPONENT)
        event["involvedObject"].update(apiVersion=gp.group.get("apiVersion", POD_GROUP_API_VERSION),
                                       kind="PodGroup")
        try:
            self.store.create(event)
        except ApiError as exc:
            log.warning("PodGroup %s/%s: cannot record the StaleJob event: %s", *gp.key, exc.message)


def wall_time_following(clock: Callable[[], float]) -> Callable[[], float]:
    """Unix time that advances as the scheduler's ``clock`` does: the wall clock itself for a
    real clock, a simulated one for a simulated clock (an until-idle run that moves its clock past
    a grace period sees the group due, as a real run would after that long)."""
    if clock is time.monotonic:
        return time.time
    offset = time.time() - clock()
    return lambda: offset + clock()


def stale_sets(gp: GroupPods, snap: Snapshot) -> list[tuple[str, int, int]] | None:
    """None when the group is not stale; else every pod set as ``(name, minimum, active pods)``."""
    active = dict.fromkeys(gp.pod_sets, 0)
    for pod in gp.pods:
        name = gp.set_of(pod)
        if name is None:
            continue
        if (pod.get("status") or {}).get("phase") == "Succeeded":
            return None
        if is_active_pod(pod) and snap.node_of(pod) is not None:
            active[name] += 1
    if not any(active.values()):
        return None
    sets = [(name, minimum, active[name]) for name, minimum in gp.pod_sets.items()]
    return sets if any(n < minimum for _, minimum, n in sets) else None


def _satisfied(gp: GroupPods, sets: Mapping[str, int], snap: Snapshot) -> bool:
    """Whether each pod set has its minimum of pods holding a node among ``gp.pods`` (pods that
    may run; terminating ones would only add to them)."""
    count = dict.fromkeys(sets, 0)
    for pod in gp.pods:
        name = gp.set_of(pod)
        if name is not None and snap.node_of(pod) is not None:
            count[name] += 1
    return all(count[name] >= minimum for name, minimum in sets.items())


def _one_set(sets: Mapping[str, int]) -> bool:
    """A group without sub-groups: all its pods are in one set, so their count says it all."""
    return len(sets) == 1 and DEFAULT_POD_SET in sets


def _evictable(pod: dict, snap: Snapshot) -> bool:
    """Whether the pod holds a node and is not already on its way out."""
    md = pod["metadata"]
    return (is_active_pod(pod) and snap.node_of(pod) is not None and not md.get("deletionTimestamp")
            and (md.get("namespace", ""), md["name"]) not in snap.evicted)


def _annotated(group: Mapping) -> bool:
    annotations = group["metadata"].get("annotations")
    return annotations is not None and STALE_SINCE_ANNOTATION in annotations


def stale_gang_message(gp: GroupPods, pod: Mapping) -> str:
    """KAI's words for a stale gang's eviction (``GetGangEvictionMessage``)."""
    who = ref(pod)
    name = gp.set_of(pod) or DEFAULT_POD_SET
    minimum = gp.pod_sets.get(name, 0)
    if list(gp.pod_sets) == [DEFAULT_POD_SET]:
        return f"Workload doesn't meet the minimum required number of pods ({minimum}), evicting remaining pod: {who}"
    return (f"Workload doesn't meet the minimum required number of pods ({minimum}) in sub-group {name}, "
            f"evicting remaining pod: {who}")


def stale_job_message(gp: GroupPods, sets: list[tuple[str, int, int]]) -> str:
    """KAI's ``StaleJob`` Event message: active pods and minimum in all, then each short sub-group."""
    message = f"Job is stale. {sum(n for *_, n in sets)} pods are active, minMember is {sum(m for _, m, _ in sets)}"
    for name, minimum, n in sets:
        if n < minimum and name != DEFAULT_POD_SET:
            message += f", subGroup {name} minMember is {minimum} and {n} pods are active"
    return message
