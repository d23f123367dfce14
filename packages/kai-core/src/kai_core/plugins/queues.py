"""KAI's queues at admission to a cycle: a pod whose queue cannot hold workloads waits, and says why.

A pod's queue is its PodGroup's ``spec.queue``, else its label ``kai.scheduler/queue``, else
``default-queue`` (:func:`kai_core.framework.queues.pod_queue`). KAI skips the workloads of a queue
that does not exist (``QueueDoesNotExist: Queue 'x' does not exist``), of a queue left out because its
parent is missing, and of a queue that is not a leaf; here such a pod stays pending with that reason
in its ``PodScheduled`` condition. So does a pod whose workload would take its queue or an ancestor
above a limit (``OverLimit``, :mod:`kai_core.framework.queue_limits`). When the scheduler does not
watch Queues (their CRD is not served) queues are not checked at all. The queue tree is read once
per cycle.

On the embedded cluster (:mod:`kai_core.cluster` runs it, with the plugins' ``kai_device_gpu_worth``),
:class:`QueueStatusController` plays KAI's queue controller: it writes each
Queue's ``status.allocated``, ``status.allocatedNonPreemptible``, ``status.requested``
(:mod:`kai_core.framework.queue_usage`; a pending pod's DRA GPUs are those of the allocation it would
get, :mod:`kai_core.framework.pending_gpus`) and ``status.childQueues``. Against a real cluster
``kai-cli run scheduler`` runs it after each cycle, on its own caches.
"""

from __future__ import annotations

import logging
import weakref
from fractions import Fraction

from kai_core.api.errors import ApiError
from kai_core.api.objects import clone
from kai_core.api.quantity import format_quantity
from kai_core.api.resources import RES_CLAIMS, RES_POD_GROUPS, RES_PODS, RES_QUEUES, RES_SLICES
from kai_core.framework.hookspecs import hookimpl
from kai_core.framework.pending_gpus import PendingDevices
from kai_core.framework.queue_limits import QueueLedger
from kai_core.framework.queue_usage import GPU_RESOURCE, QueueUsage, WorthFn, queue_usage
from kai_core.framework.queues import (
    QueueTree,
    pod_group_in,
    pod_queue_in,
    preemptible,
    tree_from_objects,
    why_not_schedulable,
)

log = logging.getLogger("kai.controllers.queues")

_trees: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ledgers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def queue_tree(snapshot) -> QueueTree:
    """The queue tree of this cycle's snapshot (Queues that cannot be read are left out)."""
    tree = _trees.get(snapshot)
    if tree is None:
        tree = _trees[snapshot] = tree_from_objects(snapshot.objects(RES_QUEUES).values())
    return tree


def queue_of(pod: dict, snapshot) -> str:
    return pod_queue_in(pod, snapshot.pod_groups)


def group_of(pod: dict, snapshot) -> dict | None:
    return pod_group_in(pod, snapshot.pod_groups)


@hookimpl(tryfirst=True)
def kai_pre_filter(pod, snapshot):
    if not snapshot.watches(RES_QUEUES):
        return None
    tree = queue_tree(snapshot)
    queue = queue_of(pod, snapshot)
    reason = why_not_schedulable(tree, queue)
    if reason is not None:
        return reason
    if snapshot not in _ledgers:  # None: no Queue object, only the assumed defaults: nothing to check
        checked = tree.from_objects
        # through a proxy: a ledger kept for a snapshot must not keep the snapshot alive
        view = weakref.proxy(snapshot)
        _ledgers[snapshot] = QueueLedger(snapshot, tree, lambda p: queue_of(p, view),
                                         lambda p: preemptible(p, group_of(p, view))) if checked else None
    ledger = _ledgers[snapshot]
    return ledger.over_capacity(pod, queue, snapshot) if ledger is not None else None


def _quantities(amounts: dict[str, float]) -> dict[str, str]:
    """Kubernetes quantities by resource name, as KAI's queue controller writes them."""
    exact = {GPU_RESOURCE: Fraction(amounts["gpu"]).limit_denominator(1000),
             "cpu": Fraction(round(amounts["cpu"]), 1000), "memory": Fraction(round(amounts["memory"]))}
    return {name: format_quantity(value) for name, value in exact.items() if value}


class QueueStatusController:
    """KAI's queue controller on the embedded cluster: usage and children of every Queue, written
    only when they change. Pods of other schedulers are not counted."""

    name = "queue-status"

    def __init__(self, scheduler_name: str = "kai-scheduler", worth: WorthFn | None = None,
                 kinds: set[str] | None = None) -> None:
        """``worth``: the plugins' say on what DRA devices are worth (``KaiPluginManager.device_gpu_worth``);
        ``kinds``: the kinds the store watches, when not every kind (a real cluster's scheduler):
        PodGroups, claims and slices are read only when watched."""
        self.scheduler_name = scheduler_name
        self.worth = worth
        self.kinds = kinds
        #: the store's position when the last round that wrote nothing started: nothing changed since
        self._seen: str | None = None

    def reconcile(self, store) -> None:
        queues, position = store.list_refs(RES_QUEUES)
        if not queues or position == self._seen:
            return
        tree = tree_from_objects(queues)
        pods, _ = store.list_refs(RES_PODS)
        groups, claims = _by_key(self._listed(store, RES_POD_GROUPS)), _by_key(self._listed(store, RES_CLAIMS))
        ours = [(p, pod_queue_in(p, groups)) for p in pods
                if (p.get("spec") or {}).get("schedulerName") == self.scheduler_name]
        # pending pods' claims are given to the allocator (nodes, slices, classes and namespaces
        # listed) only when there are any
        pending = (PendingDevices.of_objects(claims, lambda kind: self._listed(store, kind), self.worth)
                   if claims else None)
        usage = queue_usage(tree, ours, claims, self._listed(store, RES_SLICES),
                            non_preemptible=lambda p: not preemptible(p, pod_group_in(p, groups)), worth=self.worth,
                            pending=pending)
        wrote = False
        for obj in queues:
            name = obj["metadata"]["name"]
            wrote |= self._write(store, obj, usage.get(name), list(tree.children.get(name, ())))
        # after a write, look again next round (another writer may have come in between); a round that
        # wrote nothing saw everything up to its start
        self._seen = None if wrote else position

    def _listed(self, store, resource: str) -> list[dict]:
        if self.kinds is not None and resource not in self.kinds:
            return []
        try:
            return store.list_refs(resource)[0]
        except ApiError:  # a kind this cluster does not serve (DRA off)
            return []

    @staticmethod
    def _write(store, obj: dict, usage: QueueUsage | None, children: list[str]) -> bool:
        """Write the queue's status when it changed; whether it was written."""
        status = dict(obj.get("status") or {})
        for key, amounts in (("allocated", usage.allocated if usage else None),
                             ("allocatedNonPreemptible", usage.allocated_non_preemptible if usage else None),
                             ("requested", usage.requested if usage else None)):
            written = _quantities(amounts) if amounts else {}
            if written:
                status[key] = written
            else:
                status.pop(key, None)
        if children:
            status["childQueues"] = children
        else:
            status.pop("childQueues", None)
        if status == (obj.get("status") or {}):
            return False
        new = clone(obj)
        new["status"] = status
        try:
            store.update_status(new)
        except ApiError as exc:  # changed meanwhile, or gone: the next round reads it again
            log.debug("queue %s: status not written: %s", obj["metadata"]["name"], exc)
        return True


def _by_key(objs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objs}



