"""What a pod that cannot be placed is told: ``PodScheduled=False`` / ``Unschedulable`` with the
reason, and a ``FailedScheduling`` Event, written only when the message changes (no write storm
on every cycle)."""

from __future__ import annotations

import logging

from kai_core.api.errors import ApiError, Conflict, NotFound
from kai_core.api.events import pod_event
from kai_core.api.objects import clone, now_rfc3339, ref
from kai_core.api.store import Store

log = logging.getLogger("kai.scheduler")

COMPONENT = "kai-scheduler"


def report_unschedulable(store: Store, pod: dict, message: str) -> None:
    """Set the pod's condition and record an Event, unless it already says ``message``."""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if (cond.get("type") == "PodScheduled" and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable" and cond.get("message") == message):
            log.debug("pod %s still unschedulable: %s", ref(pod), message)
            return
    new = clone(pod)
    conds = [c for c in new.setdefault("status", {}).get("conditions") or [] if c.get("type") != "PodScheduled"]
    conds.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                  "lastProbeTime": None, "lastTransitionTime": now_rfc3339()})
    new["status"]["conditions"] = conds
    try:
        store.update_status(new)
    except (Conflict, NotFound):
        return  # the pod changed or went; the next cycle looks again
    except ApiError as exc:
        log.warning("cannot update the status of pod %s: %s", ref(pod), exc.message)
        return
    log.info("pod %s unschedulable: %s", ref(pod), message)
    try:
        store.create(pod_event(pod["metadata"], "Warning", "FailedScheduling", message, COMPONENT))
    except ApiError as exc:
        log.warning("cannot record event for pod %s: %s", ref(pod), exc.message)
