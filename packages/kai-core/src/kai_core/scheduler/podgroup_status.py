"""Why a PodGroup waits, on the PodGroup: ``status.schedulingConditions``, written at the end of a
cycle as KAI's status updater writes it (``pkg/scheduler/cache/status_updater``).

For each PodGroup with pods of this scheduler:

- **pods waiting** (no node, not finished, gated ones included): when every pod set has at least its
  minimum of pods that could run (KAI's ``IsReadyForScheduling``; a group still short of pods gets
  nothing), none of the group's pods holds a node (KAI keeps the condition off a group that
  already runs, RUN-20673), and this cycle said why its pods wait, the group gets one condition of
  type ``UnschedulableOnNodePool`` for its node pool (label ``kai.scheduler/node-pool``, else
  ``default``), ``status: "True"``, ``reason: Unschedulable``, the reasons as
  ``reasons: [{reason, message}]`` (``QueueDoesNotExist``, ``OverLimit``,
  ``NonPreemptibleOverQuota``, ``PreemptionDelayNotElapsed``, else ``PodSchedulingErrors``) and
  a ``message`` joining them as KAI's ``JobFitErrorsToMessage`` does; ``transitionID`` is the last
  condition's plus one, ``lastTransitionTime`` now. A condition equal to the group's last one (type,
  node pool, reason, message, status) is not written again: a group waiting for the same reason
  costs no write per cycle. Conditions of other node pools are kept, this pool's replaced (and put
  last, where KAI's readers look);
- **no pod waiting**: the conditions are removed, once none of its pods waits for its binding any
  more (a failed binding still finds the explanation there).

Writes go to the PodGroup's ``status`` subresource as a merge patch (only ``schedulingConditions``
changes). A write the scheduler's cache does not show yet is remembered, so a slow watch does not
cause the same write twice.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping

from kai_core.api.errors import ApiError
from kai_core.api.resources import RES_POD_GROUPS
from kai_core.framework.gang import POD_GROUP_ANNOTATION
from kai_core.framework.snapshot import Snapshot
from kai_core.scheduler.actions import parse_duration, preemption_delay_end
from kai_core.scheduler.podgroups import CycleGroups, GroupPods, format_go_duration, node_pool, rfc3339

log = logging.getLogger("kai.scheduler.podgroup_status")

PodKey = tuple[str, str]

#: seconds after which groups whose pods wait for their binding are looked at again, doubled at
#: each look that finds the same groups waiting, at most :data:`RECHECKS` times (1 s ... 32 s): a
#: binding that takes longer leaves the condition to the next cycle that runs for another reason
RECHECK_SECONDS = 1.0
RECHECKS = 6

UNSCHEDULABLE_ON_NODE_POOL = "UnschedulableOnNodePool"
UNSCHEDULABLE = "Unschedulable"
#: KAI's reason of a pod's own scheduling failure, and the condition's reason with several
POD_SCHEDULING_ERRORS = "PodSchedulingErrors"
DEFAULT_PODGROUP_ERROR = "Unable to schedule podgroup"
PREEMPTION_DELAY_NOT_ELAPSED = "PreemptionDelayNotElapsed"
QUEUE_DOES_NOT_EXIST = "QueueDoesNotExist"
#: reasons a message names itself with (``OverLimit: ...``)
NAMED_REASONS = (QUEUE_DOES_NOT_EXIST, "OverLimit", "NonPreemptibleOverQuota", PREEMPTION_DELAY_NOT_ELAPSED)
#: the queue plugin's words for a queue that does not exist or whose parent does not
#: (:func:`kai_core.framework.queues.why_not_schedulable`; KAI's ``QueueDoesNotExist``)
_MISSING_QUEUE = re.compile(r"Queue '[^']*' does not exist$|queue '[^']*' is left out of scheduling: ")


class PodGroupStatus:
    """Writes the PodGroups' scheduling conditions at the end of each cycle."""

    def __init__(self, store, wall_clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.wall_clock = wall_clock
        #: group -> (resourceVersion it had, conditions written): until the cache shows the write
        self._sent: dict[PodKey, tuple[str | None, list]] = {}
        #: a group keeps its conditions only until its pods are bound: the binding is no news to
        #: the scheduler (no cycle for it), so it looks again at this wall time (None: no need)
        self.recheck_at: float | None = None
        self._awaiting: set[PodKey] = set()
        self._rechecks = 0

    def write(self, snap: Snapshot, groups: CycleGroups, reports: Mapping[PodKey, tuple[dict, str]],
              evictions_on: bool = True) -> int:
        """Update the groups of this cycle's ``reports`` (pod key -> (pod, why it waits)) and those
        with conditions; ``evictions_on``: the eviction actions ran, so a preemption delay holds a
        group back. Returns the number of groups written."""
        now = self.wall_clock()
        awaiting: set[PodKey] = set()
        keys: dict[PodKey, None] = {}
        for pod, _ in reports.values():
            md = pod["metadata"]
            name = (md.get("annotations") or {}).get(POD_GROUP_ANNOTATION)
            if name:
                keys[(md.get("namespace", ""), name)] = None
        for key, group in snap.pod_groups.items():
            if (group.get("status") or {}).get("schedulingConditions") or key in self._sent:
                keys[key] = None
        for key in [k for k in self._sent if k not in snap.pod_groups]:
            del self._sent[key]
        written = 0
        for key in keys:
            if key not in snap.pod_groups:
                continue
            gp = groups.alive(key)
            if not gp.pods and groups.others(key):
                continue  # another scheduler's group: its conditions are that scheduler's to write
            current = self._current(gp)
            wanted = self._wanted(gp, snap, reports, current, now, evictions_on)
            if wanted is not None and wanted != current:
                written += self._patch(gp, wanted)
            elif wanted is None and current and _binding(gp, snap):
                awaiting.add(key)
        self._schedule_recheck(awaiting, now)
        return written

    def _schedule_recheck(self, awaiting: set[PodKey], now: float) -> None:
        self._rechecks = self._rechecks + 1 if awaiting and awaiting == self._awaiting else 0
        self._awaiting = awaiting
        self.recheck_at = (now + RECHECK_SECONDS * 2 ** self._rechecks
                           if awaiting and self._rechecks < RECHECKS else None)

    def next_due(self, clock: Callable[[], float]) -> float | None:
        """When, on ``clock``, to look again at groups waiting for their pods' binding (or None)."""
        if self.recheck_at is None:
            return None
        return clock() + (self.recheck_at - self.wall_clock())  # in the past once due: a loop comparing sees it

    def _current(self, gp: GroupPods) -> list:
        rv = gp.group["metadata"].get("resourceVersion")
        sent = self._sent.get(gp.key)
        if sent is not None:
            if sent[0] == rv:  # the cache does not show our write yet
                return sent[1]
            del self._sent[gp.key]
        conditions = (gp.group.get("status") or {}).get("schedulingConditions")
        return conditions if isinstance(conditions, list) else []

    def _wanted(self, gp: GroupPods, snap: Snapshot, reports: Mapping[PodKey, tuple[dict, str]],
                current: list, now: float, evictions_on: bool) -> list | None:
        """The conditions the group should have, or None to leave them as they are."""
        alive = [p for p in gp.pods if gp.set_of(p) is not None and _alive(p, snap)]
        waiting = [p for p in alive if snap.node_of(p) is None]
        if not waiting:
            if _binding(gp, snap):
                return None  # decided, not bound yet: keep the explanation until it is
            return [] if current else None
        if not _ready(gp, alive) or len(waiting) < len(alive):
            return None
        messages = list(dict.fromkeys(
            reports[k][1] for k in ((p["metadata"].get("namespace", ""), p["metadata"]["name"]) for p in waiting)
            if k in reports))
        if not messages:
            return None  # not tried this cycle (backing off): what was said stays
        reasons = [_explanation(m) for m in messages]
        end = preemption_delay_end(gp.group) if evictions_on else None
        if end is not None and now < end:
            delay = format_go_duration(parse_duration(gp.group["spec"]["preemptionDelay"]) or 0.0)
            reasons.append({"reason": PREEMPTION_DELAY_NOT_ELAPSED, "message": (
                f"Workload is within its preemption delay window ({delay}) and may not trigger evictions "
                f"before {rfc3339(end)}")})
        condition = {"type": UNSCHEDULABLE_ON_NODE_POOL, "nodePool": node_pool(gp.group), "reason": UNSCHEDULABLE,
                     "message": fit_errors_message(reasons), "status": "True", "reasons": reasons}
        last = current[-1] if current and isinstance(current[-1], dict) else None
        if last is not None and all(last.get(f) == condition[f] for f in ("type", "nodePool", "reason", "message",
                                                                           "status")):
            return None
        condition["lastTransitionTime"] = rfc3339(now)
        condition["transitionID"] = str(_transition_id(last) + 1)
        others = [c for c in current if isinstance(c, dict) and c.get("nodePool") != condition["nodePool"]]
        return others + [condition]

    def _patch(self, gp: GroupPods, conditions: list) -> int:
        patch = {"status": {"schedulingConditions": conditions or None}}
        try:
            self.store.patch(RES_POD_GROUPS, gp.key[1], gp.key[0], patch, "status")
        except ApiError as exc:  # said again next cycle
            log.warning("PodGroup %s/%s: cannot update its scheduling conditions: %s", *gp.key, exc.message)
            return 0
        self._sent[gp.key] = (gp.group["metadata"].get("resourceVersion"), conditions)
        return 1


def _alive(pod: dict, snap: Snapshot) -> bool:
    """Not evicted this cycle (the group's pods are KAI's alive ones: not finished nor being deleted)."""
    md = pod["metadata"]
    return (md.get("namespace", ""), md["name"]) not in snap.evicted


def _binding(gp: GroupPods, snap: Snapshot) -> bool:
    """Whether pods of the group hold a node they are not bound to yet (decided, in flight)."""
    return any(not (p.get("spec") or {}).get("nodeName") and snap.node_of(p) is not None
               and _alive(p, snap) for p in gp.pods)


def _ready(gp: GroupPods, alive: list[dict]) -> bool:
    """Whether every pod set has its minimum of pods that may run (gated ones do not)."""
    count = dict.fromkeys(gp.pod_sets, 0)
    for pod in alive:
        if not (pod.get("spec") or {}).get("schedulingGates"):
            count[gp.set_of(pod)] += 1
    return all(count[name] >= minimum for name, minimum in gp.pod_sets.items())


def _explanation(message: str) -> dict[str, str]:
    head, sep, rest = message.partition(": ")
    if sep and head in NAMED_REASONS:
        return {"reason": head, "message": rest}
    if _MISSING_QUEUE.match(message):
        return {"reason": QUEUE_DOES_NOT_EXIST, "message": message}
    return {"reason": POD_SCHEDULING_ERRORS, "message": message}


def fit_errors_message(reasons: list[dict[str, str]]) -> str:
    """KAI's ``JobFitErrorsToMessage``: the one reason (else ``Unable to schedule podgroup``),
    then the messages, sorted."""
    head = reasons[0]["reason"] if len(reasons) == 1 else DEFAULT_PODGROUP_ERROR
    texts = sorted(r["message"].rstrip(".") for r in reasons if r["message"])
    return head + ": " + ". \n".join(texts) + "." if texts else head


def _transition_id(condition: Mapping | None) -> int:
    try:
        value = int((condition or {}).get("transitionID", 0))
    except (TypeError, ValueError):
        return 0
    return max(value, 0)

