"""How a pod names its ResourceClaims, and how a claim's reservation for a pod is read and released.

Pure functions over Kubernetes JSON dicts, shared by the scheduler, the binder and the embedded
resourceclaim controller, so each rule is written once.
"""

from __future__ import annotations


def claim_name_for(pod: dict, pod_claim_name: str | None) -> str | None:
    """The ResourceClaim object name behind a pod's claim entry, or None while not yet created."""
    for rc in (pod.get("spec") or {}).get("resourceClaims") or []:
        if rc.get("name") != pod_claim_name:
            continue
        if rc.get("resourceClaimName"):
            return rc["resourceClaimName"]
        for st in (pod.get("status") or {}).get("resourceClaimStatuses") or []:
            if st.get("name") == pod_claim_name:
                return st.get("resourceClaimName")
        return None
    return None


# -- reservations --------------------------------------------------------------------------------

#: The finalizer the scheduler (here: the binder) adds before it allocates a claim, so the claim
#: cannot go while devices are allocated to it; the resourceclaim controller removes it.
DELETE_PROTECTION_FINALIZER = "resource.kubernetes.io/delete-protection"


def reserved_for(claim: dict) -> list[dict]:
    """The claim's consumers (``status.reservedFor``); [] when it has none."""
    status = claim.get("status")
    reserved = status.get("reservedFor") if isinstance(status, dict) else None
    return reserved if isinstance(reserved, list) else []


def is_reserved_for(claim: dict, uid: str) -> bool:
    """Whether the claim is reserved for the consumer with this uid."""
    return any(isinstance(r, dict) and r.get("uid") == uid for r in reserved_for(claim))


def is_free(claim: dict) -> bool:
    """Whether the claim is neither allocated nor reserved: its delete-protection finalizer (if any)
    protects nothing any more."""
    status = claim.get("status") or {}
    return not status.get("allocation") and not status.get("reservedFor")


def with_consumers(status: dict, keep: list[dict]) -> dict:
    """A new claim status reserved for ``keep`` only (``status`` is not changed).

    With no consumer left the allocation goes too, as the resourceclaim controller deallocates a
    claim whose last consumer stopped using it: a claim allocated for nobody would hold its devices
    forever. (Upstream deallocates only a claim that carries :data:`DELETE_PROTECTION_FINALIZER`,
    which every claim a scheduler allocated does; here also one written without it.)
    """
    new = dict(status)
    if keep:
        new["reservedFor"] = list(keep)
    else:
        new.pop("reservedFor", None)
        new.pop("allocation", None)
    return new


def without_consumer(status: dict, uid: str) -> dict | None:
    """:func:`with_consumers` without the entry of ``uid``; None when the claim is not reserved
    for it (nothing to release)."""
    reserved = status.get("reservedFor") or []
    keep = [r for r in reserved if r.get("uid") != uid]
    return with_consumers(status, keep) if len(keep) < len(reserved) else None


def without_protection(claim: dict) -> list[str]:
    """The claim's finalizers without :data:`DELETE_PROTECTION_FINALIZER`."""
    return [f for f in claim["metadata"].get("finalizers") or [] if f != DELETE_PROTECTION_FINALIZER]


def is_protected(claim: dict) -> bool:
    """Whether the claim carries :data:`DELETE_PROTECTION_FINALIZER`."""
    return DELETE_PROTECTION_FINALIZER in (claim["metadata"].get("finalizers") or [])
