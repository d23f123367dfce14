"""Writing a DRA claim's allocation and reservation for a pod, and taking that back.

Reserving, per claim, as kube-scheduler's PreBind does: first the ``resource.kubernetes.io/
delete-protection`` finalizer with an update of the claim's metadata (a status write cannot change
metadata), then one status update that sets ``allocation`` when the claim has none and adds the pod
to ``reservedFor``. Each write is conditional on the resourceVersion just read; on 409 the claim is
read again and checked again. A claim meanwhile allocated to other devices, being deleted, or
already reserved by 256 consumers fails the attempt instead of being overwritten.

The metadata update that adds the finalizer also records the pod's uid in the annotation
:data:`FINALIZER_OWNER_ANNOTATION`, in the same write. That is how a binder restarted after a crash
still knows the finalizer on a free claim is its own to remove, without any state of its own.

Releasing (the rollback) reads the claim and undoes only what this pod's binding left there:

- the pod's entry in ``reservedFor`` goes;
- when that leaves the claim without any consumer, its allocation is cleared, exactly as the
  resourceclaim controller deallocates a claim whose last consumer stops using it (a claim
  allocated for nobody would hold its devices forever): both release through
  :func:`kai_core.api.claims.with_consumers`;
- the finalizer goes once the claim is free (no allocation, no consumer) if this release cleared
  the allocation, or if the pod's binding added it (the annotation names the pod); the annotation
  goes with the finalizer, and alone when it names the pod and the finalizer is already gone.

Entries of other pods, an allocation other consumers still use, and a finalizer someone else added
to a claim this release did not free are never touched.
"""

from __future__ import annotations

import logging

from kai_core.api.claims import (
    DELETE_PROTECTION_FINALIZER,
    is_free,
    is_protected,
    is_reserved_for,
    reserved_for,
    without_consumer,
    without_protection,
)
from kai_core.api.errors import ApiError, Conflict, NotFound, OutcomeUnknown
from kai_core.api.objects import clone
from kai_core.api.resources import RES_CLAIMS
from kai_core.dra.allocator import devices_of

log = logging.getLogger("kai.binder.claims")

FINALIZER = DELETE_PROTECTION_FINALIZER
#: set together with the finalizer, to the uid of the pod whose binding added it
FINALIZER_OWNER_ANNOTATION = "binder.kai.scheduler/delete-protection-for"
MAX_RESERVED_FOR = 256
CONFLICT_RETRIES = 5


class ClaimBindError(Exception):
    """The claim cannot be written for this pod; the message names the claim and says why.

    ``transient`` is True when an API error caused it (the same attempt may work later); the
    binder counts both kinds as a failed attempt, but a rollback that fails transiently is retried.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def consumer_ref(pod: dict) -> dict:
    """The ``reservedFor`` entry of a pod."""
    return {"resource": "pods", "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}


def is_transient(exc: BaseException) -> bool:
    """Whether an API failure may go away by itself: 5xx, 429, timeouts and connection errors."""
    if isinstance(exc, ClaimBindError):
        return exc.transient
    if isinstance(exc, ApiError):
        return exc.code >= 500 or exc.code == 429
    return isinstance(exc, OSError)


def describe_api_error(exc: BaseException) -> str:
    """``Reason (code): message`` for an API error, the text of anything else."""
    if isinstance(exc, ApiError):
        return f"{exc.reason} ({exc.code}): {exc.message}"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc}"
    return str(exc)


def _claim_ref(namespace: str, name: str) -> str:
    return f'ResourceClaim "{namespace}/{name}"'


def _api_failure(namespace: str, name: str, what: str, exc: BaseException) -> ClaimBindError:
    return ClaimBindError(f"{_claim_ref(namespace, name)}: {what}: {describe_api_error(exc)}",
                          transient=is_transient(exc))


def same_devices(a: dict, b: dict) -> bool:
    """Whether two AllocationResults name the same devices (order and extra fields aside)."""
    return sorted(devices_of(a)) == sorted(devices_of(b))


def check_allocation(allocation: object, where: str) -> dict:
    """``allocation`` if it is an AllocationResult naming its devices properly; else a
    ClaimBindError naming ``where`` and the problem."""
    if not isinstance(allocation, dict) or not allocation:
        raise ClaimBindError(f"{where}: allocation must be an AllocationResult object, got {allocation!r}")
    try:
        devices_of(allocation)
    except (ValueError, AttributeError, TypeError) as exc:
        raise ClaimBindError(f"{where}: malformed allocation: {exc}") from None
    return allocation


def reserve_claim(store, namespace: str, name: str, allocation: dict, pod: dict) -> None:
    """Make the claim allocated (as ``allocation``) and reserved for ``pod``.

    Idempotent: a claim already allocated with these devices and reserved for the pod is left as it
    is (no write), and a restarted attempt skips the writes an earlier one made. Raises
    ClaimBindError.
    """
    uid = pod["metadata"]["uid"]
    for _ in range(CONFLICT_RETRIES):
        try:
            claim = store.get(RES_CLAIMS, name, namespace)
        except NotFound:
            raise ClaimBindError(f"{_claim_ref(namespace, name)} not found") from None
        except (ApiError, OSError) as exc:
            raise _api_failure(namespace, name, "cannot read it", exc) from None
        md = claim["metadata"]
        if md.get("deletionTimestamp"):
            raise ClaimBindError(f"{_claim_ref(namespace, name)} is being deleted")
        status = claim.get("status") or {}
        current = status.get("allocation")
        try:
            differs = bool(current) and not same_devices(current, allocation)
        except (ValueError, AttributeError, TypeError) as exc:
            raise ClaimBindError(f"{_claim_ref(namespace, name)} has a malformed allocation: {exc}") from None
        if differs:
            raise ClaimBindError(f"{_claim_ref(namespace, name)} was meanwhile allocated to other devices")
        reserved = reserved_for(claim)
        mine = is_reserved_for(claim, uid)
        if mine and current:
            return  # done already (an earlier, interrupted attempt)
        if not mine and len(reserved) >= MAX_RESERVED_FOR:
            raise ClaimBindError(
                f"{_claim_ref(namespace, name)} is already reserved for {MAX_RESERVED_FOR} consumers")
        try:
            # shallow copies with new parts where they change: a store copies what it is given
            if not is_protected(claim):
                new = {**claim, "metadata": {**md, "finalizers": [*(md.get("finalizers") or []), FINALIZER],
                                             "annotations": {**(md.get("annotations") or {}),
                                                             FINALIZER_OWNER_ANNOTATION: uid}}}
                claim = store.update(new)
            new_status = dict(claim.get("status") or {})
            if not current:
                new_status["allocation"] = clone(allocation)
            if not mine:
                new_status["reservedFor"] = [*reserved, consumer_ref(pod)]
            store.update_status({**claim, "status": new_status})
            return
        except (Conflict, OutcomeUnknown):
            # someone wrote in between, or the reply was lost: read again and check again (a
            # write that went through is then seen as done)
            continue
        except NotFound:
            raise ClaimBindError(f"{_claim_ref(namespace, name)} not found") from None
        except (ApiError, OSError) as exc:
            raise _api_failure(namespace, name, "cannot write it", exc) from None
    raise ClaimBindError(
        f"{_claim_ref(namespace, name)}: gave up after {CONFLICT_RETRIES} conflicting writes", transient=True)


def release_claim(store, namespace: str, name: str, pod_uid: str) -> bool:
    """Take back what the binding of pod ``pod_uid`` left on the claim (see the module docstring).

    Returns whether anything was written. Raises ClaimBindError (``transient``) when the API did
    not let the release finish; calling it again is safe.
    """
    wrote = False
    for _ in range(CONFLICT_RETRIES):
        try:
            claim = store.get(RES_CLAIMS, name, namespace)
        except NotFound:
            return wrote
        except (ApiError, OSError) as exc:
            raise _api_failure(namespace, name, "cannot read it to roll back", exc) from None
        try:
            status = claim.get("status") or {}
            released = without_consumer(status, pod_uid)
            # this release frees the claim: its allocation goes, and so may the finalizer
            deallocate = released is not None and bool(status.get("allocation")) and not released.get("allocation")
            if released is not None:
                new = clone(claim)
                new["status"] = released
                claim = store.update_status(new)
                wrote = True
            md = claim["metadata"]
            owner = (md.get("annotations") or {}).get(FINALIZER_OWNER_ANNOTATION)
            free = is_free(claim)
            drop_finalizer = free and is_protected(claim) and (deallocate or owner == pod_uid)
            # The annotation only describes the finalizer: it goes with it, whichever pod it names,
            # and on its own when it names this pod and the finalizer was already removed (by the
            # resourceclaim controller, say).
            stale_note = free and not is_protected(claim) and owner == pod_uid
            if drop_finalizer or stale_note:
                new = clone(claim)
                if drop_finalizer:
                    new["metadata"]["finalizers"] = without_protection(claim)
                if owner is not None:
                    annotations = new["metadata"].get("annotations") or {}
                    annotations.pop(FINALIZER_OWNER_ANNOTATION, None)
                    if not annotations:
                        new["metadata"].pop("annotations", None)
                store.update(new)
                wrote = True
            return wrote
        except OutcomeUnknown:
            wrote = True  # it may have been: read again, and a write that went through is seen done
            continue
        except Conflict:
            continue
        except NotFound:
            return wrote
        except (ApiError, OSError) as exc:
            raise _api_failure(namespace, name, "cannot roll it back", exc) from None
    raise ClaimBindError(
        f"{_claim_ref(namespace, name)}: rollback gave up after {CONFLICT_RETRIES} conflicting writes",
        transient=True)


def claims_left_by(store, namespace: str, pod_uid: str) -> list[str]:
    """Names of the claims in ``namespace`` that still name pod ``pod_uid`` (reserved for it, or
    protected by a finalizer its binding added): what to release when the pod itself is gone and
    its claim names cannot be resolved any more."""
    items, _ = store.list(RES_CLAIMS, namespace)
    out = []
    for claim in items:
        md = claim["metadata"]
        if (is_reserved_for(claim, pod_uid)
                or (md.get("annotations") or {}).get(FINALIZER_OWNER_ANNOTATION) == pod_uid):
            out.append(md["name"])
    return out
