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
