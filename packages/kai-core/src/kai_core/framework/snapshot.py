"""The snapshot: one consistent, typed view of the cluster for one scheduling cycle.

Built from the cache at the start of a cycle. Decisions written but not yet visible as bound pods
(BindRequests in flight) are counted as used: their pods take node resources and their claim
allocations take devices, so nothing is handed out twice while the binder works. Decisions of the
current cycle are added with :meth:`Snapshot.assume`, and taken back with :meth:`Snapshot.unassume`
when a gang does not fit as a whole (:attr:`Snapshot.generation` counts both).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

from kai_core.api.bindrequest import failed_for_good
from kai_core.api.claims import claim_name_for  # noqa: F401 (part of the snapshot API plugins use)
from kai_core.api.features import FeatureGates
from kai_core.api.resources import (
    RES_BIND_REQUESTS,
    RES_CLAIM_TEMPLATES,
    RES_CLAIMS,
    RES_DEVICE_CLASSES,
    RES_NAMESPACES,
    RES_NODES,
    RES_POD_GROUPS,
    RES_PODS,
    RES_SLICES,
    add_amounts,
    is_active_pod,
    node_allocatable,
    pod_requests,
    subtract_amounts,
)
from kai_core.dra.allocator import DraInventory, devices_of
from kai_core.dra.capacity import shared_consumption
from kai_core.dra.claims import ClaimAllocation, PodClaim

log = logging.getLogger("kai.snapshot")



@dataclass
class NodeInfo:
    """A node as the filters and scores see it. ``requested`` includes pods in flight."""

    name: str
    obj: dict
    labels: dict
    allocatable: dict[str, int]
    requested: dict[str, int] = field(default_factory=dict)
    pod_count: int = 0
    taints: list[dict] = field(default_factory=list)
    unschedulable: bool = False
    ready: bool | None = None  # None: the node reports no Ready condition
    #: why the Node object cannot be read (a field of the wrong type), or None; such a node takes
    #: no pods (the node-ready filter refuses it, naming the field) instead of failing a plugin
    problem: str | None = None

    def free(self, resource: str) -> int:
        return self.allocatable.get(resource, 0) - self.requested.get(resource, 0)


def _key(obj: dict) -> tuple[str, str]:
    md = obj["metadata"]
    return (md.get("namespace", ""), md["name"])


def _owned_by(br: dict, pod: dict) -> bool:
    """Whether a BindRequest belongs to this incarnation of the pod: a pod deleted and created
    again under the same name must not inherit the old pod's request (its ownerReference names
    the old uid; garbage collection removes it shortly)."""
    uid = pod["metadata"].get("uid")
    owners = [o for o in br["metadata"].get("ownerReferences") or [] if o.get("kind") == "Pod"]
    return not owners or not uid or any(o.get("uid") == uid for o in owners)


class Snapshot:
    """The cluster as one cycle sees it: pods, nodes (as :class:`NodeInfo` with usage counted),
    claims, templates, BindRequests, and the DRA inventory on demand.

    Plugins receive it as ``snapshot`` and must treat it as read-only; only the cycle calls
    :meth:`assume`.
    """

    def __init__(self, cache, scheduler_name: str, features: FeatureGates,
                 unconfirmed: Iterable[dict] = ()) -> None:
        """``unconfirmed`` are BindRequests this scheduler may have written (the reply was lost)
        that the cache does not show yet: they count as in flight like the cached ones."""
        self.scheduler_name = scheduler_name
        self.features = features
        self._cache = cache
        self.pods: dict[tuple[str, str], dict] = dict(cache.objects.get(RES_PODS, {}))
        self.namespaces: dict[str, dict] = {k[1]: v for k, v in cache.objects.get(RES_NAMESPACES, {}).items()}
        self.claims: dict[tuple[str, str], dict] = dict(cache.objects.get(RES_CLAIMS, {}))
        self.templates: dict[tuple[str, str], dict] = dict(cache.objects.get(RES_CLAIM_TEMPLATES, {}))
        self.bind_requests: dict[tuple[str, str], dict] = dict(cache.objects.get(RES_BIND_REQUESTS, {}))
        for br in unconfirmed:
            self.bind_requests.setdefault(_key(br), br)
        #: KAI PodGroups by (namespace, name); empty when the scheduler does not watch them
        self.pod_groups: dict[tuple[str, str], dict] = dict(cache.objects.get(RES_POD_GROUPS, {}))
        self.nodes: list[NodeInfo] = []
        self.node_by_name: dict[str, NodeInfo] = {}
        index = cache.pod_index
        self._index = index
        #: this cycle's unbound pods (a copy: the cache may sync while a snapshot is still in use)
        self._unbound: dict[tuple[str, str], dict] = dict(index.unbound)
        for obj in cache.objects.get(RES_NODES, {}).values():
            info = _node_info(obj)
            count = index.pod_count.get(info.name)
            if count:  # pods requesting nothing still take a pod slot
                info.requested = dict(index.requested[info.name])
                info.pod_count = count
            self.nodes.append(info)
            self.node_by_name[info.name] = info
        self.nodes.sort(key=lambda n: n.name)
        #: claims allocated by in-flight BindRequests or by this cycle's decisions
        self.assumed_allocations: dict[tuple[str, str], dict] = {}
        #: (namespace, pod name) -> live BindRequest for pods not yet bound
        self.in_flight: dict[tuple[str, str], dict] = {}
        #: claim -> uids of pods that will reserve it but are not in its ``reservedFor`` yet (pods
        #: of in-flight BindRequests and of this cycle's decisions): they count toward the 256 limit
        self.pending_consumers: dict[tuple[str, str], set[str]] = {}
        self._in_use: set | None = None
        self._requests: dict[tuple[str, str], dict[str, int]] = {}
        #: bumped by every assume() and unassume(): plugins caching views of this cycle's decisions
        #: (which node holds what) key them by it
        self.generation = 0
        #: names what is placed and evicted on the snapshot: a new number after every change, and
        #: the number it had before when a Statement rolls the changes back, so two equal states
        #: mean nothing differs (the converse need not hold). Outcomes known to follow from the
        #: snapshot alone (a gang that did not fit) are kept for as long as it stays the same.
        self.state = 0
        self._states = itertools.count(1)
        #: every change to :attr:`assumed_allocations` after the snapshot was built, in order:
        #: ``(added, claim key, allocation)``. A plugin keeping an index of allocations applies the
        #: entries past the position it last read, instead of rescanning (O(1) per decision).
        self.allocation_log: list[tuple[bool, tuple[str, str], dict]] = []
        #: the node of every assume() and unassume(), in order: what changed since a position
        #: (:mod:`kai_core.scheduler.equivalence` asks plugins again only about those nodes)
        self.node_changes: list[str] = []
        #: bumped when a decision takes or frees a device reaching more than one node
        self.shared_changes = 0
        #: every assume() as ``(1, pod, node)`` and unassume() as ``(-1, pod, node)``, in the order of
        #: :attr:`node_changes`: views of which pod is where (host ports, pod affinity, topology
        #: spread) replay the entries past the position they last read
        self.pod_changes: list[tuple[int, dict, str]] = []
        #: running pods an eviction action counts as gone (simulated: :meth:`evict`), by pod key
        self.evicted: dict[tuple[str, str], dict] = {}
        #: claims whose every consumer is in :attr:`evicted`: their allocation counts as released
        self.released: dict[tuple[str, str], dict] = {}
        self._count_pods()

    # -- building ------------------------------------------------------------------------------

    def _count_pods(self) -> None:
        """Count every active pod on its node: bound pods by ``spec.nodeName`` (summed as they
        came, in the cache's :class:`~kai_core.framework.cache.PodIndex`), unbound ones by their live
        BindRequest's ``selectedNode`` (and that request's claim allocations); a bound pod's
        request's claim allocations too, while the cache does not show them on the claims yet."""
        brs_by_pod: dict[tuple[str, str], dict] = {}
        for br in self.bind_requests.values():
            if failed_for_good(br):
                continue  # deleted by the scheduler this cycle; a Failed one with retries left stays live
            md = br["metadata"]
            brs_by_pod[(md.get("namespace", ""), (br.get("spec") or {}).get("podName", ""))] = br
        for key, pod in self._unbound.items():
            if not brs_by_pod or not is_active_pod(pod) or pod["metadata"].get("deletionTimestamp"):
                continue
            br = brs_by_pod.get(key)
            if br is None or not _owned_by(br, pod):
                continue
            self.in_flight[key] = br
            self._add_consumer(pod)
            node_name = br["spec"].get("selectedNode")
            for entry in br["spec"].get("resourceClaimAllocations") or []:
                claim_key = self._claim_key_for(pod, entry.get("name"))
                if claim_key and claim_key in self.claims and not self._stored_allocation(claim_key):
                    self.assumed_allocations[claim_key] = entry.get("allocation") or {}
            node = self.node_by_name.get(node_name)
            if node is not None:
                _add(node, self.requests_of(pod))
        # A bound pod whose claims the cache shows unallocated: the pods' watch brought the binding
        # before the claims' watch brought the allocation the binder wrote first. Its BindRequest's
        # allocations still hold the devices, or the next pod is given them (and the binder refuses
        # that request: a failed attempt, a pod scheduled again).
        for key, br in brs_by_pod.items():
            entries = (br.get("spec") or {}).get("resourceClaimAllocations")
            if not entries or not isinstance(entries, list) or key in self.in_flight:
                continue
            pod = self.pods.get(key)
            spec = (pod or {}).get("spec")
            if not isinstance(spec, dict) or not spec.get("nodeName") or not is_active_pod(pod) \
                    or not _owned_by(br, pod):
                continue
            for entry in entries:
                if not isinstance(entry, dict):
                    continue
                claim_key = self._claim_key_for(pod, entry.get("name"))
                if claim_key and claim_key in self.claims and not self._stored_allocation(claim_key):
                    self.assumed_allocations[claim_key] = entry.get("allocation") or {}

    def _stored_allocation(self, claim_key) -> dict | None:
        if claim_key in self.released:
            return None
        return _allocation((self.claims.get(claim_key) or {}).get("status"))

    def _claim_key_for(self, pod: dict, pod_claim_name: str | None) -> tuple[str, str] | None:
        name = claim_name_for(pod, pod_claim_name)
        return (pod["metadata"].get("namespace", ""), name) if name else None

    # -- queries -------------------------------------------------------------------------------

    def pending_pods(self) -> list[dict]:
        """Pods of this scheduler waiting for a node, in a stable order: highest
        ``spec.priority`` first, then oldest ``creationTimestamp``, then namespace and name.

        Left out: pods of other schedulers, bound pods, pods being deleted or finished, pods with
        a live BindRequest (their decision is in flight), and pods with ``schedulingGates``
        (kube-scheduler does not consider them until every gate is removed).
        """
        out = []
        for key, pod in self._unbound.items():
            spec = pod.get("spec")
            if not isinstance(spec, dict) or spec.get("schedulerName") != self.scheduler_name:
                continue
            if pod["metadata"].get("deletionTimestamp") or not is_active_pod(pod) or key in self.in_flight:
                continue
            if spec.get("schedulingGates"):
                continue
            out.append(pod)
        out.sort(key=_pod_order)
        return out

    def group_candidates(self) -> list[dict]:
        """Pods of this scheduler that are not finished nor being deleted, whatever their state
        (waiting, gated, in flight, bound): what ``kai_pod_groups`` is called with."""
        out = []
        for pod in self.pods.values():
            spec = pod.get("spec")
            if not isinstance(spec, dict) or spec.get("schedulerName") != self.scheduler_name:
                continue
            if pod["metadata"].get("deletionTimestamp") or not is_active_pod(pod):
                continue
            out.append(pod)
        return out

    def node_of(self, pod: dict) -> str | None:
        """The node a pod is bound to, in flight to (live BindRequest) or assumed on this cycle; None
        while it waits."""
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            return node
        br = self.in_flight.get(_key(pod))
        return ((br or {}).get("spec") or {}).get("selectedNode") or None

    def objects(self, resource: str) -> dict[tuple[str, str], dict]:
        """Every cached object of a watched kind (e.g. a plugin's ``fpgajobs.fpga.example.com``)
        by (namespace, name); empty for a kind the scheduler does not watch. Read-only: the cache's
        own map, not a copy."""
        return self._cache.objects.get(resource) or {}

    def watches(self, resource: str) -> bool:
        """Whether the scheduler watches ``resource`` (absent kinds are not served or not wanted)."""
        return resource in self._cache.objects

    def requests_of(self, pod: dict) -> dict[str, int]:
        """:func:`kai_core.api.resources.pod_requests` of a pod of this snapshot, computed once per
        cycle (the filters, the scores and the commit all need it). Read-only."""
        md = pod["metadata"]
        key = (md.get("namespace", ""), md.get("name", ""))
        if self.pods.get(key) is not pod:
            return pod_requests(pod)  # not one of ours: no caching
        req = self._index.requests_of(key, pod) or self._requests.get(key)
        if req is None:
            req = self._requests[key] = pod_requests(pod)
        return req

    def allocation_of(self, claim_key: tuple[str, str]) -> dict | None:
        """The claim's allocation: stored, else assumed (in flight or decided this cycle)."""
        return self._stored_allocation(claim_key) or self.assumed_allocations.get(claim_key)

    @cached_property
    def dra(self):
        """The cycle's DRA inventory (slices and classes), built on first use."""
        return DraInventory(
            list(self._cache.objects.get(RES_SLICES, {}).values()),
            list(self._cache.objects.get(RES_DEVICE_CLASSES, {}).values()),
            features=self.features.dra_features,
        )

    @property
    def devices_in_use(self) -> set:
        """Devices of every allocated claim, in-flight BindRequest and decision of this cycle.

        Admin-access results do not count (they do not take the device, as upstream). A malformed
        allocation is logged and skipped rather than stopping the cycle.
        """
        if self._in_use is None:
            used: set = set()
            for key, claim in self.claims.items():
                if key not in self.released:
                    self._use_devices(used, _allocation(claim.get("status")), key)
            for key, alloc in self.assumed_allocations.items():
                self._use_devices(used, alloc, key)
            self._in_use = used
        return self._in_use

    @property
    def shared_capacity(self) -> dict:
        """What the shared results (``shareID``, consumable capacity) of every allocated claim,
        in-flight BindRequest and decision of this cycle consume, per device; worked out only when
        a node with shared devices is tried, again after each decision."""
        hit = self.__dict__.get("_shared_capacity")
        if hit is None or hit[0] != self.generation:
            allocations = [_allocation(claim.get("status")) for key, claim in self.claims.items()
                           if key not in self.released]
            allocations += list(self.assumed_allocations.values())
            hit = self._shared_capacity = (self.generation, shared_consumption(allocations))
        return hit[1]

    @staticmethod
    def _use_devices(used: set, allocation: dict | None, claim_key: tuple[str, str]) -> None:
        if not allocation:
            return
        try:
            used.update(devices_of(allocation, exclusive_only=True))
        except (ValueError, AttributeError, TypeError) as exc:
            log.warning("ResourceClaim %s/%s: ignoring a malformed allocation: %s", *claim_key, exc)

    # -- decisions -----------------------------------------------------------------------------

    def assume(self, pod: dict, node_name: str, claims: list[PodClaim], allocation: ClaimAllocation | None) -> None:
        """Count a decision of this cycle as if it were already bound: the pod's requests go to
        the node, its new claim allocations to :attr:`assumed_allocations` and their devices to
        :attr:`devices_in_use`, and the pod is no longer pending."""
        node = self.node_by_name[node_name]
        _add(node, self.requests_of(pod))
        key = _key(pod)
        if allocation is not None:
            for pc, alloc in zip(claims, allocation.allocations, strict=True):
                if pc.allocation is None:
                    self.assumed_allocations[pc.key] = alloc
                    self.allocation_log.append((True, pc.key, alloc))
                    if self._in_use is not None:
                        self._use_devices(self._in_use, alloc, pc.key)
        self.in_flight[key] = {"spec": {"selectedNode": node_name}}
        self._add_consumer(pod)
        self._touched(1, pod, node_name, self._reaches_other_nodes(allocation))

    def _add_consumer(self, pod: dict, add: bool = True) -> None:
        uid = pod["metadata"].get("uid")
        if not uid:
            return
        for rc in (pod.get("spec") or {}).get("resourceClaims") or []:
            claim_key = self._claim_key_for(pod, rc.get("name")) if isinstance(rc, dict) else None
            if claim_key is None:
                continue
            if add:
                self.pending_consumers.setdefault(claim_key, set()).add(uid)
            else:
                self.pending_consumers.get(claim_key, set()).discard(uid)

    def unassume(self, pod: dict, node_name: str, claims: list[PodClaim],
                 allocation: ClaimAllocation | None) -> None:
        """Take back an :meth:`assume` with the same arguments: the node's requests, the claims it
        allocated and their devices are released and the pod waits again. Decisions assumed after
        it that reused its claims must be taken back first (undo in reverse order)."""
        node = self.node_by_name[node_name]
        subtract_amounts(node.requested, self.requests_of(pod))
        node.pod_count -= 1
        if allocation is not None:
            for pc, alloc in zip(claims, allocation.allocations, strict=True):
                if pc.allocation is None and self.assumed_allocations.get(pc.key) is alloc:
                    del self.assumed_allocations[pc.key]
                    self.allocation_log.append((False, pc.key, alloc))
                    if self._in_use is not None:
                        self._release_devices(self._in_use, alloc)
        self.in_flight.pop(_key(pod), None)
        self._add_consumer(pod, add=False)
        self._touched(-1, pod, node_name, self._reaches_other_nodes(allocation))

    # -- simulated evictions -------------------------------------------------------------------

    def evict(self, pod: dict) -> None:
        """Count a running pod as gone, as an eviction action simulates it: its requests leave its
        node, and each of its claims whose every consumer (``reservedFor`` and pods on the way) is
        evicted too has its allocation released (the devices are free for the simulation; on the
        cluster the resource claim controller releases them once the pod is gone)."""
        node_name = self.node_of(pod) or ""
        node = self.node_by_name.get(node_name)
        if node is not None:
            subtract_amounts(node.requested, self.requests_of(pod))
            node.pod_count -= 1
        self.evicted[_key(pod)] = pod
        shared = False
        for claim_key in self._claim_keys(pod):
            alloc = self.allocation_of(claim_key)
            if alloc is None or not self._consumers(claim_key) <= self._evicted_uids():
                continue
            self.released[claim_key] = alloc
            self.allocation_log.append((False, claim_key, alloc))
            if self._in_use is not None:
                self._release_devices(self._in_use, alloc)
            shared = shared or not self._node_local(alloc)
        self._touched(-1, pod, node_name, shared)

    def unevict(self, pod: dict) -> None:
        """Take back an :meth:`evict` (evictions are taken back newest first)."""
        key = _key(pod)
        if self.evicted.pop(key, None) is None:
            return
        node_name = self.node_of(pod) or ""
        node = self.node_by_name.get(node_name)
        if node is not None:
            _add(node, self.requests_of(pod))
        shared = False
        for claim_key in self._claim_keys(pod):
            alloc = self.released.pop(claim_key, None)
            if alloc is None:
                continue
            self.allocation_log.append((True, claim_key, alloc))
            if self._in_use is not None:
                self._use_devices(self._in_use, alloc, claim_key)
            shared = shared or not self._node_local(alloc)
        self._touched(1, pod, node_name, shared)

    def _claim_keys(self, pod: dict) -> list[tuple[str, str]]:
        out = []
        for rc in (pod.get("spec") or {}).get("resourceClaims") or []:
            claim_key = self._claim_key_for(pod, rc.get("name")) if isinstance(rc, dict) else None
            if claim_key is not None and claim_key in self.claims:
                out.append(claim_key)
        return out

    def _consumers(self, claim_key: tuple[str, str]) -> set[str]:
        status = (self.claims.get(claim_key) or {}).get("status")
        reserved = status.get("reservedFor") if isinstance(status, dict) else None
        uids = {r.get("uid") for r in reserved or [] if isinstance(r, dict) and r.get("uid")}
        return uids | self.pending_consumers.get(claim_key, set())

    def _evicted_uids(self) -> set[str]:
        return {p["metadata"].get("uid") for p in self.evicted.values()}

    def _node_local(self, allocation: dict) -> bool:
        for result in ((allocation or {}).get("devices") or {}).get("results") or []:
            if not isinstance(result, dict) or not self.dra.pool_is_node_local(result.get("driver"),
                                                                             result.get("pool")):
                return False
        return True

    def _touched(self, sign: int, pod: dict, node_name: str, shared: bool) -> None:
        """Log a pod placed (``sign`` 1) or taken off (-1) ``node_name``: in :attr:`pod_changes`
        and :attr:`node_changes`, with a new :attr:`generation` and :attr:`state`; ``shared`` when
        devices reaching other nodes were taken or freed (:attr:`shared_changes`)."""
        self.pod_changes.append((sign, pod, node_name))
        self.generation += 1
        self.state = next(self._states)
        self.node_changes.append(node_name)
        if shared:
            self.shared_changes += 1

    def _reaches_other_nodes(self, allocation: ClaimAllocation | None) -> bool:
        return allocation is not None and any(not self._node_local(a) for a in allocation.allocations)

    @staticmethod
    def _release_devices(used: set, allocation: dict) -> None:
        try:
            used.difference_update(devices_of(allocation, exclusive_only=True))
        except (ValueError, AttributeError, TypeError):
            pass  # it was never added (assume logged it)


def _allocation(status) -> dict | None:
    """A claim's ``status.allocation``; None when there is none or the status is not a mapping."""
    return status.get("allocation") if isinstance(status, dict) else None


def _pod_order(pod: dict) -> tuple:
    md = pod["metadata"]
    priority = (pod.get("spec") or {}).get("priority")
    return (
        -(priority if isinstance(priority, int) else 0),
        str(md.get("creationTimestamp") or ""),  # RFC 3339 in UTC: sorts as text
        md.get("namespace", ""),
        md["name"],
    )


def _add(node: NodeInfo, req: dict[str, int]) -> None:
    add_amounts(node.requested, req)
    node.pod_count += 1


def _node_problem(spec, status, labels) -> str | None:
    """What of a Node's fields the filters read has the wrong type (a hand-made object, or one of a
    server that does not check them): the first such field, or None."""
    if not isinstance(spec, dict):
        return "spec is not a mapping"
    if not isinstance(status, dict):
        return "status is not a mapping"
    if not isinstance(labels, dict):
        return "metadata.labels is not a mapping"
    taints = spec.get("taints") or []
    if not isinstance(taints, list) or not all(isinstance(t, dict) for t in taints):
        return "spec.taints is not a list of taints"
    conditions = status.get("conditions") or []
    if not isinstance(conditions, list) or not all(isinstance(c, dict) for c in conditions):
        return "status.conditions is not a list of conditions"
    for f in ("allocatable", "capacity"):
        if not isinstance(status.get(f) or {}, dict):
            return f"status.{f} is not a mapping"
    return None


def _node_info(obj: dict) -> NodeInfo:
    md = obj["metadata"]
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    labels = md.get("labels") or {}
    problem = _node_problem(spec, status, labels)
    if problem is not None:
        return NodeInfo(name=md["name"], obj=obj, labels={}, allocatable={}, problem=problem)
    ready = None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = cond.get("status") == "True"
    return NodeInfo(
        name=md["name"],
        obj=obj,
        labels=labels,
        allocatable=node_allocatable(obj),
        taints=list(spec.get("taints") or []),
        unschedulable=bool(spec.get("unschedulable")),
        ready=ready,
    )
