"""Writing a DRA claim's allocation and reservation, and undoing exactly that.

Per claim, as kube-scheduler's PreBind does: add the ``resource.kubernetes.io/delete-protection``
finalizer with an update of the claim's metadata (a status write cannot change metadata), then one
status update that sets ``allocation`` if the claim has none and adds the pod to ``reservedFor``.
Each write is conditional on the resourceVersion just read; on 409 the claim is read again and
re-checked. A claim allocated differently meanwhile, or reserved by 256 pods, fails the attempt.
"""

from __future__ import annotations

from dataclasses import dataclass

from kai_core.dra.allocator import devices_of
from kai_core.errors import Conflict, NotFound
from kai_core.objects import clone
from kai_core.resources import RES_CLAIMS

FINALIZER = "resource.kubernetes.io/delete-protection"
MAX_RESERVED_FOR = 256
CONFLICT_RETRIES = 5


class ClaimBindError(Exception):
    pass


@dataclass
class ClaimWrite:
    """What one attempt changed on one claim, so a rollback undoes that and nothing else."""

    namespace: str
    name: str
    added_finalizer: bool = False
    set_allocation: bool = False
    reserved: bool = False


def consumer_ref(pod: dict) -> dict:
    return {"resource": "pods", "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}


def _same_devices(a: dict, b: dict) -> bool:
    return sorted(devices_of(a)) == sorted(devices_of(b))


def reserve_claim(store, namespace: str, name: str, allocation: dict, pod: dict, write: ClaimWrite) -> None:
    """Make the claim allocated (as ``allocation``) and reserved for ``pod``; records into ``write``."""
    uid = pod["metadata"]["uid"]
    for _ in range(CONFLICT_RETRIES):
        try:
            claim = store.get(RES_CLAIMS, name, namespace)
        except NotFound:
            raise ClaimBindError(f'ResourceClaim "{namespace}/{name}" not found') from None
        if claim["metadata"].get("deletionTimestamp"):
            raise ClaimBindError(f'ResourceClaim "{namespace}/{name}" is being deleted')
        status = claim.get("status") or {}
        current = status.get("allocation")
        if current and not _same_devices(current, allocation):
            raise ClaimBindError(
                f'ResourceClaim "{namespace}/{name}" was meanwhile allocated to other devices'
            )
        reserved = status.get("reservedFor") or []
        if any(r.get("uid") == uid for r in reserved) and current:
            return  # already done (a retried or restarted attempt)
        if len(reserved) >= MAX_RESERVED_FOR:
            raise ClaimBindError(f'ResourceClaim "{namespace}/{name}" is already reserved for {MAX_RESERVED_FOR} pods')
        try:
            finalizers = claim["metadata"].get("finalizers") or []
            if FINALIZER not in finalizers:
                new = clone(claim)
                new["metadata"]["finalizers"] = [*finalizers, FINALIZER]
                claim = store.update(new)
                write.added_finalizer = True
            new = clone(claim)
            new_status = new.setdefault("status", {})
            if not current:
                new_status["allocation"] = clone(allocation)
            if not any(r.get("uid") == uid for r in reserved):
                new_status["reservedFor"] = [*reserved, consumer_ref(pod)]
            store.update_status(new)
            write.set_allocation = write.set_allocation or not current
            write.reserved = True
            return
        except Conflict:
            continue
    raise ClaimBindError(f'ResourceClaim "{namespace}/{name}": gave up after {CONFLICT_RETRIES} conflicting writes')


def release_claim(store, write: ClaimWrite, pod: dict) -> None:
    """Undo ``write``: unreserve the pod, clear an allocation this attempt set if nobody else uses
    it, drop the finalizer this attempt added once the claim is free. Never touches other writers'
    changes."""
    uid = pod["metadata"]["uid"]
    for _ in range(CONFLICT_RETRIES):
        try:
            claim = store.get(RES_CLAIMS, write.name, write.namespace)
        except NotFound:
            return
        try:
            status = claim.get("status") or {}
            reserved = status.get("reservedFor") or []
            keep = [r for r in reserved if r.get("uid") != uid]
            if write.reserved and len(keep) != len(reserved) or (write.set_allocation and not keep
                                                                  and status.get("allocation")):
                new = clone(claim)
                st = new.setdefault("status", {})
                if keep:
                    st["reservedFor"] = keep
                else:
                    st.pop("reservedFor", None)
                    if write.set_allocation:
                        st.pop("allocation", None)
                claim = store.update_status(new)
            status = claim.get("status") or {}
            finalizers = claim["metadata"].get("finalizers") or []
            if (write.added_finalizer and FINALIZER in finalizers and not status.get("allocation")
                    and not status.get("reservedFor")):
                new = clone(claim)
                new["metadata"]["finalizers"] = [f for f in finalizers if f != FINALIZER]
                store.update(new)
            return
        except Conflict:
            continue
        except NotFound:
            return
