"""The binder's built-in DRA step, a binder plugin like any other (registered, never an entry point).

Pre-bind: for each ``spec.resourceClaimAllocations`` entry of the BindRequest, in order, resolve
the pod's claim (``resourceClaimName``, or ``status.resourceClaimStatuses`` for a template) and
reserve it with :func:`kai_binder.claims.reserve_claim`; then the special claim of
``spec.extendedResourceClaimAllocation`` (:mod:`kai_binder.extended`). Rollback: remove the
special claim, and release every other claim for the pod with :func:`kai_binder.claims.release_claim`,
in reverse order; when the pod is gone (a stub with no spec) the claims are found by the pod's uid
instead (the special claim among them: its owner, the pod, being gone, it is garbage-collected).
"""

from __future__ import annotations

import threading

from kai_binder import extended
from kai_binder.binding_conditions import BindingConditionsWait
from kai_binder.claims import ClaimBindError, check_allocation, claims_left_by, release_claim, reserve_claim
from kai_core.api.claims import claim_name_for
from kai_core.api.errors import ApiError
from kai_core.api.features import FeatureGates, dra_disabled_message
from kai_core.api.objects import ref
from kai_core.framework.hookspecs import hookimpl

PLUGIN_NAME = "kai-binder.dra-claims"


def _br_ref(br: dict) -> str:
    md = br.get("metadata") or {}
    return f'BindRequest "{md.get("namespace", "default")}/{md.get("name", "?")}"'


#: the entries of the BindRequests last read (id -> (request, entries)): the binder's check and
#: its DRA step read the same request object in one attempt
_ENTRIES: dict[int, tuple[dict, list[tuple[str, dict]]]] = {}
_ENTRIES_KEPT = 64


def claim_entries(br: dict) -> list[tuple[str, dict]]:
    """``(pod claim name, allocation)`` of each ``spec.resourceClaimAllocations`` entry; raises
    ClaimBindError naming the BindRequest and the entry when one is malformed."""
    hit = _ENTRIES.get(id(br))
    if hit is not None and hit[0] is br:
        return hit[1]
    out = _claim_entries(br)
    if len(_ENTRIES) >= _ENTRIES_KEPT:
        _ENTRIES.clear()
    _ENTRIES[id(br)] = (br, out)
    return out


def _claim_entries(br: dict) -> list[tuple[str, dict]]:
    entries = (br.get("spec") or {}).get("resourceClaimAllocations") or []
    if not isinstance(entries, list):
        raise ClaimBindError(f"{_br_ref(br)}: spec.resourceClaimAllocations must be a list")
    out = []
    for i, entry in enumerate(entries):
        where = f"{_br_ref(br)}: spec.resourceClaimAllocations[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ClaimBindError(f"{where}: needs the pod's claim name in 'name'")
        out.append((entry["name"], check_allocation(entry.get("allocation"), where)))
    return out


_CLAIM_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_CLAIM_LOCKS_GUARD = threading.Lock()


def claim_lock(namespace: str, name: str) -> threading.Lock:
    """The lock the binder's workers take to write one claim: pods sharing a claim (up to 256)
    are bound in parallel, and each write of their reservation is conditional on the claim's
    resourceVersion, so concurrent workers would mostly lose to each other with 409s and fail
    attempts; one at a time, each reads the claim its predecessor wrote and succeeds. (Another
    process's write still conflicts, and is handled by reading again.)"""
    with _CLAIM_LOCKS_GUARD:
        lock = _CLAIM_LOCKS.get((namespace, name))
        if lock is None:
            if len(_CLAIM_LOCKS) >= 4096:  # locks of claims long done: drop the ones nobody holds
                for key in [k for k, v in _CLAIM_LOCKS.items() if not v.locked()]:
                    del _CLAIM_LOCKS[key]
            lock = _CLAIM_LOCKS[(namespace, name)] = threading.Lock()
        return lock


class DraClaimsPlugin:
    """Reserves the pod's claims before the bind (then waits for their devices' binding conditions,
    :mod:`kai_binder.binding_conditions`), releases them when the attempt fails."""

    def __init__(self) -> None:
        self.binding = BindingConditionsWait()

    @hookimpl(tryfirst=True)
    def kai_binder_pre_bind(self, bind_request, pod, store, features: FeatureGates):
        entries = claim_entries(bind_request)
        ext = extended.extended_of(bind_request)
        if not entries and ext is None:
            return None
        if not features.dra:
            raise ClaimBindError(f"{_br_ref(bind_request)} has resource claim allocations but "
                                 f"{dra_disabled_message()}")
        ns = pod["metadata"]["namespace"]
        written: list[tuple[str, dict]] = []
        for pod_claim, allocation in entries:
            name = claim_name_for(pod, pod_claim)
            if name is None:
                raise ClaimBindError(f'pod {ref(pod)} has no ResourceClaim for its claim "{pod_claim}" '
                                     "(not in spec.resourceClaims, or not created from its template yet)")
            with claim_lock(ns, name):
                reserve_claim(store, ns, name, allocation, pod)
            written.append((name, allocation))
        if ext is not None:
            name = extended.find_or_create(store, pod, ext)
            with claim_lock(ns, name):
                reserve_claim(store, ns, name, ext.allocation, pod)
            extended.set_pod_status(store, pod, name, ext)
            written.append((name, ext.allocation))
        return self.binding.check(store, bind_request, ns, written)

    @hookimpl(tryfirst=True)
    def kai_binder_rollback(self, bind_request, pod, store, features: FeatureGates):
        self.binding.forget(bind_request)
        if not features.dra:
            return None  # with the gate off the binder never wrote a claim
        try:
            entries = claim_entries(bind_request)
            ext = extended.extended_of(bind_request)
        except ClaimBindError:
            return None  # a malformed request never got as far as writing claims
        if not entries and ext is None:
            return None
        md = pod["metadata"]
        ns = md.get("namespace") or "default"
        errors = []
        if "spec" in pod:
            if ext is not None:
                try:
                    extended.remove(store, pod, claim_lock)
                except ClaimBindError as exc:
                    errors.append(exc)
            names = [n for n in (claim_name_for(pod, pc) for pc, _ in entries) if n]
        else:
            try:
                names = claims_left_by(store, ns, md["uid"])
            except (ApiError, OSError) as exc:
                raise ClaimBindError(f"cannot list the ResourceClaims of namespace {ns}: {exc}",
                                     transient=True) from None
        for name in reversed(names):
            try:
                with claim_lock(ns, name):
                    release_claim(store, ns, name, md["uid"])
            except ClaimBindError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return None
