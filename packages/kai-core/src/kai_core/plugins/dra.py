"""Dynamic Resource Allocation: resolve a pod's ResourceClaims, then allocate them per node.

Pre-filter refuses pods whose claims cannot be considered at all (the feature gate is off, a
claim or template is missing, a claim is being deleted or reserved by 256 pods). The allocation
hook runs the structured allocator on every candidate node; it is registered ``trylast`` so a
device plugin can answer first for pods it knows better. Devices of allocated claims, of in-flight
BindRequests and of this cycle's earlier decisions are never handed out (``snapshot.devices_in_use``).

Reasons are made node-independent (``... 0 free on node n7 ...`` becomes ``... 0 free ...``) so
the pod's ``0/N nodes are available`` message groups nodes failing for the same reason.
"""

from __future__ import annotations

import re

from kai_core.api.features import dra_disabled_message
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
from kai_core.framework.status import Status


@hookimpl(tryfirst=True)
def kai_pre_filter(pod, snapshot):
    if not (pod.get("spec") or {}).get("resourceClaims"):
        return None
    if not snapshot.features.dra:
        return f"pod has resource claims but {dra_disabled_message()}"
    _, reason = pod_claims(pod, snapshot)
    return reason


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
        reason = None
        for pc in claims:
            if pc.allocation is None:
                continue
            try:
                usable = allocation_usable_on(pc.allocation, node.obj)
            except NodeSelectorError as exc:
                reason = f'ResourceClaim "{pc.key[0]}/{pc.key[1]}" has an invalid allocation nodeSelector: {exc}'
                break
            if not usable:
                reason = (f'ResourceClaim "{pc.key[0]}/{pc.key[1]}" is already allocated to devices not '
                          "available on this node")
                break
        if reason is not None:
            out[node.name] = reason
            continue
        try:
            new = allocate(to_allocate, node.obj, snapshot.dra, snapshot.devices_in_use,
                           namespaces=snapshot.namespaces, device_scores=scores,
                           excluded=excluded, consumed=lambda: snapshot.shared_capacity) if to_allocate else []
        except Unallocatable as exc:
            out[node.name] = node_independent(exc.reason, node.name)
            continue
        it = iter(new)
        out[node.name] = ClaimAllocation([pc.allocation if pc.allocation is not None else next(it)
                                          for pc in claims])
    return out
