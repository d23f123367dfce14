"""A pod's ResourceClaims as the scheduler sees them: resolved from the pod, with their allocation.

:func:`pod_claims` resolves a pod's claim entries against a snapshot (any object with ``claims``,
``templates``, ``pending_consumers`` and ``allocation_of``), or says why they cannot be resolved
yet; :class:`PodClaim` and :class:`ClaimAllocation` are what the ``kai_allocate_claims`` hook
receives and returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from kai_core.api.claims import claim_name_for, reserved_for

#: how many pods one ResourceClaim may be reserved for (the API server's limit)
MAX_RESERVED_FOR = 256


def pod_claims(pod: dict, snapshot) -> tuple[list[PodClaim], str | None]:
    """The pod's claims as PodClaims, or a reason why they cannot be resolved yet."""
    ns = pod["metadata"].get("namespace", "")
    pod_name = pod["metadata"]["name"]
    uid = pod["metadata"].get("uid")
    out: list[PodClaim] = []
    for rc in (pod.get("spec") or {}).get("resourceClaims") or []:
        name = claim_name_for(pod, rc.get("name"))
        if name is None:
            template = rc.get("resourceClaimTemplateName")
            if template and (ns, template) not in snapshot.templates:
                return [], (
                    f'ResourceClaimTemplate "{ns}/{template}" not found (pod claim "{rc.get("name")}" '
                    f"of pod {ns}/{pod_name})"
                )
            return [], (
                f'waiting for the ResourceClaim of pod claim "{rc.get("name")}" to be created from '
                f'ResourceClaimTemplate "{ns}/{template}"'
            )
        claim = snapshot.claims.get((ns, name))
        if claim is None:
            return [], f'ResourceClaim "{ns}/{name}" not found (pod claim "{rc.get("name")}")'
        if claim["metadata"].get("deletionTimestamp"):
            return [], f'ResourceClaim "{ns}/{name}" is being deleted'
        if rc.get("resourceClaimTemplateName"):
            owners = claim["metadata"].get("ownerReferences") or []
            if not any(o.get("uid") == uid and o.get("controller") for o in owners):
                return [], f'ResourceClaim "{ns}/{name}" was not created for pod {ns}/{pod_name}'
        for part in ("spec", "status"):
            if not isinstance(claim.get(part) or {}, dict):
                return [], f'ResourceClaim "{ns}/{name}" is invalid: {part} is not a mapping'
        entries = reserved_for(claim)
        reserved = {r.get("uid") for r in entries if isinstance(r, dict)}
        if uid not in reserved:
            # pods of in-flight BindRequests and of this cycle will take places too
            coming = snapshot.pending_consumers.get((ns, name), set()) - reserved
            coming.discard(uid)
            if len(entries) + len(coming) >= MAX_RESERVED_FOR:
                return [], f'ResourceClaim "{ns}/{name}" is already reserved for {MAX_RESERVED_FOR} pods'
        allocation = snapshot.allocation_of((ns, name))
        if allocation is not None and not isinstance(allocation, dict):
            return [], f'ResourceClaim "{ns}/{name}" is invalid: status.allocation is not a mapping'
        out.append(PodClaim(rc["name"], claim, allocation))
    return out, None


@dataclass
class PodClaim:
    """One of a pod's resource claims: the pod's name for it and the ResourceClaim object.

    ``allocation`` is the claim's allocation if it already has one (or one assumed this cycle);
    such a claim is shared and only restricts where the pod can go.
    """

    name: str
    claim: dict
    allocation: dict | None = None

    @property
    def key(self) -> tuple[str, str]:
        md = self.claim["metadata"]
        return (md.get("namespace", ""), md["name"])


@dataclass
class ClaimAllocation:
    """Claim allocation on one node: one AllocationResult per PodClaim, in order."""

    allocations: list[dict]
