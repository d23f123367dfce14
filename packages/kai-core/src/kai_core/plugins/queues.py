"""KAI's queues at admission to a cycle: a pod whose queue cannot hold workloads waits, and says why.

A pod's queue is its PodGroup's ``spec.queue``, else its label ``kai.scheduler/queue``, else
``default-queue`` (:func:`kai_core.framework.queues.pod_queue`). KAI skips the workloads of a queue
that does not exist (``QueueDoesNotExist: Queue 'x' does not exist``), of a queue left out because its
parent is missing, and of a queue that is not a leaf; here such a pod stays pending with that reason
in its ``PodScheduled`` condition. When the scheduler does not watch Queues (their CRD is not served)
queues are not checked at all. The queue tree is read once per cycle.
"""

from __future__ import annotations

import weakref

from kai_core.api.resources import RES_QUEUES
from kai_core.framework.gang import POD_GROUP_ANNOTATION
from kai_core.framework.hookspecs import hookimpl
from kai_core.framework.queues import (
    QueueError,
    QueueTree,
    build_tree,
    pod_queue,
    queue_from_object,
    why_not_schedulable,
)

_trees: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def queue_tree(snapshot) -> QueueTree:
    """The queue tree of this cycle's snapshot (Queues that cannot be read are left out)."""
    tree = _trees.get(snapshot)
    if tree is None:
        queues = []
        for obj in snapshot.objects(RES_QUEUES).values():
            try:
                queues.append(queue_from_object(obj))
            except QueueError:
                continue  # the CRD's schema refuses such a Queue; a store that does not validate must not stop us
        tree = _trees[snapshot] = build_tree(queues)
    return tree


def queue_of(pod: dict, snapshot) -> str:
    md = pod.get("metadata") or {}
    group = (md.get("annotations") or {}).get(POD_GROUP_ANNOTATION)
    pod_group = snapshot.pod_groups.get((md.get("namespace", ""), group)) if group else None
    return pod_queue(pod, pod_group)


@hookimpl(tryfirst=True)
def kai_pre_filter(pod, snapshot):
    if not snapshot.watches(RES_QUEUES):
        return None
    return why_not_schedulable(queue_tree(snapshot), queue_of(pod, snapshot))
