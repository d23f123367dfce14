"""Dynamic Resource Allocation: resolve a pod's ResourceClaims, then allocate them per node.

Pre-filter refuses pods whose claims cannot be considered at all (a claim or template is
missing, a claim is being deleted or reserved by 256 pods, a request's DeviceClass does not exist
or asks for sub-requests with DRAPrioritizedList off, the last two in kube-scheduler's words); with
DynamicResourceAllocation off the scheduler itself says so (:mod:`kai_core.scheduler.decide`). The
allocation hook runs the structured allocator on every candidate node; it is registered
``trylast`` so a device plugin can answer first for pods it knows better. Devices of allocated
claims, of in-flight BindRequests and of this cycle's earlier decisions are never handed out
(``snapshot.devices_in_use``).

A node's reason is kai's detail: the pod's ``0/N nodes are available`` message counts it under
kube-scheduler's words (``cannot allocate all claims``, or ``resourceclaim not available on the
node`` for a node an allocated claim cannot be used on, once the other claims fit there, as
kube-scheduler checks them; :data:`kai_core.framework.plugins.DRA_NODE_REASONS`), and ``kai-cli
explain`` shows it whole. Reasons are made node-independent (``... 0 free on node n7 ...``
becomes ``... 0 free ...``) so the equivalence memo keeps one reason for nodes failing alike.
"""

from __future__ import annotations

import re

from kai_core.api.nodeaffinity import NodeSelectorError
from kai_core.dra.allocator import (
    Unallocatable,
    allocate,
    allocation_usable_on,
    candidate_devices,
    request_candidates,
)
from kai_core.dra.claims import ClaimAllocation, pod_claims
from kai_core.framework.hookspecs import hookimpl
from kai_core.framework.plugins import DRA_NODE_REASONS
from kai_core.framework.status import Status

#: kube-scheduler's reason for a node where a claim the pod shares is allocated to other devices
NOT_AVAILABLE = DRA_NODE_REASONS[1]


@hookimpl(tryfirst=True)
def kai_pre_filter(pod, snapshot):
    if not (pod.get("spec") or {}).get("resourceClaims"):
        return None
    if not snapshot.features.dra:
        return None  # the scheduler tells the pod its configuration is the problem (scheduler.decide)
    claims, reason = pod_claims(pod, snapshot)
    return reason or _unusable_request(claims, snapshot)


def _unusable_request(claims: list, snapshot) -> str | None:
    """What kube-scheduler's DynamicResources PreFilter finds wrong with a claim to allocate, for
    every node alike, in its words: a request's DeviceClass that does not exist, sub-requests
    (``firstAvailable``) with DRAPrioritizedList off. Malformed requests are left to the allocator,
    which names them."""
    for pc in claims:
        if pc.allocation is not None:
            continue
        devices = (pc.claim.get("spec") or {}).get("devices") if isinstance(pc.claim.get("spec"), dict) else None
        requests = devices.get("requests") if isinstance(devices, dict) else None
        for request in requests if isinstance(requests, list) else ():
            if not isinstance(request, dict):
                continue
            name, exactly, subs = request.get("name"), request.get("exactly"), request.get("firstAvailable")
            if isinstance(exactly, dict):
                missing = _missing_class(exactly, name, snapshot)
                if missing:
                    return missing
            elif isinstance(subs, list) and subs:
                if not snapshot.dra.features.prioritized_list:
                    return (f"resource claim {pc.key[0]}/{pc.key[1]}, request {name}: has subrequests, but the "
                            "DRAPrioritizedList feature is disabled")
                for sub in subs:
                    missing = _missing_class(sub, f"{name}/{sub.get('name')}", snapshot) if isinstance(
                        sub, dict) else None
                    if missing:
                        return missing
    return None


def _missing_class(body: dict, request: str, snapshot) -> str | None:
    class_name = body.get("deviceClassName")
    if isinstance(class_name, str) and class_name and snapshot.dra.device_class(class_name) is None:
        return f"request {request}: device class {class_name} does not exist"
    return None


def node_independent(reason: str, node_name: str) -> str:
    """``reason`` with this node's name taken out, so nodes failing alike share one reason."""
    if node_name not in reason:  # the common case; compiling the patterns costs far more
        return reason
    name = re.escape(node_name)
    end = r"(?=[\s:,;()]|$)"
    reason = re.sub(rf" on node {name}{end}", "", reason)
    return re.sub(rf"\bnode {name}{end}", "the node", reason)


@hookimpl(trylast=True)
def kai_allocate_claims(pod, claims, nodes, snapshot, rank_devices, filter_devices):
    to_allocate = [pc.claim for pc in claims if pc.allocation is None]
    out: dict[str, ClaimAllocation | str] = {}
    scores = excluded = None
    if to_allocate and filter_devices is not None:
        # one kai_filter_devices call per pod, over every request's candidate devices
        excluded = filter_devices(
            to_allocate, lambda: request_candidates(to_allocate, [n.obj for n in nodes], snapshot.dra))
        if isinstance(excluded, Status):
            return dict.fromkeys((n.name for n in nodes), excluded.message)
    if to_allocate and rank_devices is not None:
        # one kai_rank_devices call per pod, over every candidate device the filters left
        def devices() -> list:
            found = candidate_devices(to_allocate, [n.obj for n in nodes], snapshot.dra)
            return [d for d in found if d.id not in excluded] if excluded else found

        scores = rank_devices(to_allocate, devices)
        if isinstance(scores, Status):
            return dict.fromkeys((n.name for n in nodes), scores.message)
    for node in nodes:
        unavailable = None
        for pc in claims:
            if pc.allocation is None:
                continue
            try:
                usable = allocation_usable_on(pc.allocation, node.obj)
            except NodeSelectorError as exc:
                out[node.name] = (f'ResourceClaim "{pc.key[0]}/{pc.key[1]}" has an invalid allocation '
                                  f"nodeSelector: {exc}")
                break
            if not usable and unavailable is None:
                unavailable = (f'{NOT_AVAILABLE}: ResourceClaim "{pc.key[0]}/{pc.key[1]}" is already allocated to '
                               "devices not available on this node")
        if node.name in out:
            continue
        # kube-scheduler's order: the claims to allocate first, then the allocated ones' nodes
        try:
            new = allocate(to_allocate, node.obj, snapshot.dra, snapshot.devices_in_use,
                           namespaces=snapshot.namespaces, device_scores=scores,
                           excluded=excluded, consumed=lambda: snapshot.shared_capacity) if to_allocate else []
        except Unallocatable as exc:
            out[node.name] = node_independent(exc.reason, node.name)
            continue
        if unavailable is not None:
            out[node.name] = unavailable
            continue
        it = iter(new)
        out[node.name] = ClaimAllocation([pc.allocation if pc.allocation is not None else next(it)
                                          for pc in claims])
    return out
