"""Evictions carried out against the API, as KAI's scheduler carries them out
(``pkg/scheduler/cache/evictor``, ``status_updater``):

1. the pod gets the condition ``DisruptionTarget=True`` with reason ``PreemptionByScheduler`` and the
   eviction's message (KAI writes it only with ``--update-pod-eviction-condition``; kai always does,
   since it is how ``kubectl describe pod`` and a Job's pod failure policy learn why the pod went);
2. the pod is deleted: a plain DELETE with its default grace period (not the Eviction API: a
   PodDisruptionBudget does not stop the scheduler, as in KAI), with the pod's uid as a
   precondition, so a pod created again under the same name is never the one deleted;
3. an Event ``Evict`` is recorded on the pod, and on its PodGroup when it has one, the latter with
   KAI's annotations (``num-evicted-pods``, ``evictor-action-type``,
   ``evictor-pod-group-name``/``-namespace``);
4. the PodGroup is annotated ``kai.scheduler/last-eviction-timestamp`` (the time, to the second; one
   write for a gang evicted within the same second): its ``spec.preemptionDelay`` counts again
   from then.

The claims' reservations are not touched here: Kubernetes releases them (the resource claim
controller drops a pod from ``reservedFor`` once the pod is gone or finished, and deallocates a claim
nobody reserves), and until then they hold their devices; the scheduler counts a terminating pod's
resources and devices as used, so nothing is bound into capacity a terminating pod still holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kai_core.api.errors import ApiError, Conflict, NotFound
from kai_core.api.events import pod_event
from kai_core.api.objects import now_rfc3339, ref
from kai_core.api.resources import RES_POD_GROUPS, RES_PODS
from kai_core.api.store import Store
from kai_core.scheduler.conditions import COMPONENT

log = logging.getLogger("kai.scheduler.evictions")

#: the pod condition an eviction sets, and its reason (Kubernetes' ``PodReasonPreemptionByScheduler``)
DISRUPTION_TARGET = "DisruptionTarget"
PREEMPTION_BY_SCHEDULER = "PreemptionByScheduler"
#: KAI's annotations on the PodGroup's ``Evict`` Event
EVICTED_PODS_ANNOTATION = "num-evicted-pods"
ACTION_ANNOTATION = "evictor-action-type"
PREEMPTOR_NAME_ANNOTATION = "evictor-pod-group-name"
PREEMPTOR_NAMESPACE_ANNOTATION = "evictor-pod-group-namespace"
#: the PodGroup annotation saying when its pods were last evicted (KAI's ``LastEvictionTimeStamp``)
LAST_EVICTION_ANNOTATION = "kai.scheduler/last-eviction-timestamp"


@dataclass(frozen=True)
class Eviction:
    """One pod to evict: why (``action``: ``reclaim``, ``preempt``, ``consolidation`` or
    ``stale-gang``), the message the pod and its Events carry, the queue it was running in, the
    workload it makes room for (namespace, name; None for a stale gang) and that workload's queue,
    and how many pods the same plan evicts."""

    pod: dict
    action: str
    message: str
    queue: str
    preemptor: tuple[str, str] | None = None
    preemptor_queue: str | None = None
    gang_size: int = 1
    pod_group: dict | None = None


class Evictor:
    """Carries out :class:`Eviction` s against ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        #: PodGroup -> the last-eviction time last written on it
        self._stamped: dict[tuple[str, str], str] = {}

    def evict(self, eviction: Eviction) -> bool:
        """Mark, delete and report one pod; True when it is deleted (or was already gone), False
        when it could not be (the pod was replaced by another of the same name, or the API refused:
        logged). Never raises an API error."""
        pod = eviction.pod
        md = pod["metadata"]
        ns, name, uid = md.get("namespace", "default"), md["name"], md.get("uid")
        condition = {"type": DISRUPTION_TARGET, "status": "True", "reason": PREEMPTION_BY_SCHEDULER,
                     "message": eviction.message, "lastTransitionTime": now_rfc3339()}
        try:
            self.store.patch(RES_PODS, name, ns, {"status": {"conditions": [condition]}}, "status", strategic=True)
        except NotFound:
            return True  # gone already: nothing to free
        except ApiError as exc:  # the condition is informative; the eviction itself still goes on
            log.warning("pod %s: cannot set the %s condition: %s", ref(pod), DISRUPTION_TARGET, exc.message)
        try:
            self.store.delete(RES_PODS, name, ns, uid=uid)
        except NotFound:
            return True
        except Conflict as exc:
            log.info("pod %s not evicted: %s", ref(pod), exc.message)
            return False
        except ApiError as exc:
            log.warning("pod %s: cannot evict: %s", ref(pod), exc.message)
            return False
        log.info("pod %s evicted (%s): %s", ref(pod), eviction.action, eviction.message.splitlines()[0])
        self._record(eviction)
        if eviction.pod_group is not None:
            self._stamp(eviction.pod_group)
        return True

    def _stamp(self, group: dict) -> None:
        md = group["metadata"]
        key, now = (md.get("namespace", ""), md["name"]), now_rfc3339()
        if self._stamped.get(key) == now:
            return
        if len(self._stamped) > 1024:  # only the latest few matter (the same second)
            self._stamped.clear()
        self._stamped[key] = now
        patch = {"metadata": {"annotations": {LAST_EVICTION_ANNOTATION: now}}}
        try:
            self.store.patch(RES_POD_GROUPS, key[1], key[0], patch)
        except ApiError as exc:  # the delay then counts from the group's creation, as before
            log.warning("PodGroup %s/%s: cannot set %s: %s", *key, LAST_EVICTION_ANNOTATION, exc.message)

    def _record(self, eviction: Eviction) -> None:
        md = eviction.pod["metadata"]
        events = [pod_event(md, "Normal", "Evict", eviction.message, COMPONENT)]
        group = eviction.pod_group
        if group is not None:
            gmd = group["metadata"]
            event = pod_event(gmd, "Normal", "Evict", eviction.message, COMPONENT)
            event["involvedObject"].update(apiVersion=group.get("apiVersion", "scheduling.run.ai/v2alpha2"),
                                           kind="PodGroup")
            annotations = {EVICTED_PODS_ANNOTATION: str(eviction.gang_size), ACTION_ANNOTATION: eviction.action}
            if eviction.preemptor is not None:
                annotations[PREEMPTOR_NAMESPACE_ANNOTATION], annotations[PREEMPTOR_NAME_ANNOTATION] = \
                    eviction.preemptor
            event["metadata"]["annotations"] = annotations
            events.append(event)
        for event in events:
            try:
                self.store.create(event)
            except ApiError as exc:
                log.warning("cannot record the eviction event of pod %s: %s", ref(eviction.pod), exc.message)


def eviction_message(action: str, victim: dict, preemptor: tuple[str, str]) -> str:
    """KAI's words for an eviction (``pkg/scheduler/api/unschedule_info.go``): the first line of
    the pod's condition and of its Events."""
    md = victim["metadata"]
    pod = f"{md.get('namespace', 'default')}/{md['name']}"
    workload = f"{preemptor[0]}/{preemptor[1]}"
    if action == "preempt":
        return f"Pod {pod} was preempted by higher priority workload {workload}"
    if action == "consolidation":
        return f"Pod {pod} was preempted and rescheduled due to bin packing (resource consolidation) procedure"
    return f"Pod {pod} was preempted by workload {workload}."
