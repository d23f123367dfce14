"""The binder's checks: a BindRequest is carried out only if it is one the scheduler could have
written, for a pod of a scheduler the binder serves, with devices nobody else holds.

:meth:`Verifier.verify` runs before the binder writes anything for a BindRequest, once the pod is
known to exist, to be the BindRequest's own (same uid) and not bound. It checks, in this order:

1. the pod's ``spec.schedulerName`` is one the binder serves (``scheduler_names``);
2. no other live BindRequest (neither ``Succeeded`` nor ``Failed``) is there for the pod;
3. the node exists;
4. with DRA on: ``resourceClaimAllocations`` names each of the pod's claims once and nothing else;
   each claim exists, is not being deleted, and (from a template) was created for this pod;
5. a claim that is already allocated is allocated exactly as requested, usable on the node;
   ``extendedResourceClaimAllocation`` matches the pod (:func:`kai_binder.extended.check_against_pod`)
   and its claim (the pod's special claim if an earlier attempt made it, else the claim it is to
   create, from its ``deviceRequests``) is checked as the pod's other claims are, here and below;
6. every other claim's allocation is one the allocator could have given it on the node
   (:func:`kai_core.dra.verify.verify_allocations`: the devices exist in a current
   ResourceSlice whose pool serves the node, request names, counts, classes and CEL
   selectors, taints, constraints, admin access, configs, node selector, shared counters);
7. none of those devices is used by another allocated claim, named by another live BindRequest
   (for another claim; the special claim is never shared), or being allocated by another attempt of
   this binder.

Everything is read from a :class:`~kai_binder.index.BinderIndex` (the API only for what it has
not seen yet, and to tell whether another BindRequest's pod shares the claim), so a check is one
pass over the pod's own claims. The index is synced at the start of each pass and by each check
(only the changes since the last sync: a few per attempt); the binder's own status writes go into
it at once. The index and the devices this binder is allocating right now are looked at under one
lock, and those devices are *held* (:class:`Hold`) from a passed check until the attempt's outcome
is known and what it wrote is in the index (read back from the API at the next pass if the watch
has not shown it: a lost reply): two attempts never both pass with the same device, however many
workers run.

A failed check raises :class:`VerificationFailed` with a reason that starts with ``verification
failed:`` and names the check. ``retry`` is True when the request may pass later as it is (a
device held by someone else, another live BindRequest for the pod, a claim allocated differently
meanwhile: a lost race); otherwise (a device that does not exist, a pod of another scheduler, a
result the claim does not allow) trying again cannot help.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kai_binder.claims import ClaimBindError, describe_api_error
from kai_binder.dra import claim_entries
from kai_binder.extended import EXTENDED_ENTRY, check_against_pod, extended_of, special_claim
from kai_binder.index import BinderIndex
from kai_core.api.claims import claim_name_for
from kai_core.api.errors import ApiError, NotFound
from kai_core.api.features import FeatureGates
from kai_core.api.nodeaffinity import NodeSelectorError
from kai_core.api.resources import RES_CLAIMS, RES_NAMESPACES, RES_NODES, RES_PODS
from kai_core.dra.allocator import allocation_usable_on, devices_of
from kai_core.dra.inventory import DeviceId
from kai_core.dra.verify import AllocationRefused, same_allocation, verify_allocations

log = logging.getLogger("kai.binder.verify")

PREFIX = "verification failed: "
#: the scheduler name a binder serves unless told otherwise
DEFAULT_SCHEDULER_NAMES = frozenset({"kai-scheduler"})
#: what the API server puts in a pod's ``spec.schedulerName`` when it is left out
DEFAULT_SCHEDULER = "default-scheduler"

_Key = tuple[str, str]


class VerificationFailed(Exception):
    """A check failed; ``reason`` (``verification failed: ...``) names it, ``retry`` says whether
    the same request may pass later."""

    def __init__(self, reason: str, *, retry: bool = False) -> None:
        super().__init__(PREFIX + reason)
        self.reason = PREFIX + reason
        self.retry = retry


@dataclass
class Hold:
    """The devices one attempt allocates, by claim: held from its passed check on."""

    br: tuple[str, str, str]
    claims: dict[_Key, tuple[DeviceId, ...]] = field(default_factory=dict)
    #: set when the attempt may leave claims allocated (it bound the pod, or left them as they were)
    written: bool = False


class _InUse:
    """The devices in use for the shared-counter check: by allocated claims, live BindRequests and
    this binder's other attempts."""

    def __init__(self, index: BinderIndex, holds: dict[DeviceId, tuple[_Key, tuple]], own: tuple,
                 own_key: _Key) -> None:
        self.index, self.holds, self.own, self.own_key = index, holds, own, own_key

    def __contains__(self, device: object) -> bool:
        if device in self.index.dev_claims:
            return True
        held = self.holds.get(device)  # type: ignore[arg-type]
        if held is not None and held[1] != self.own:
            return True
        brs = self.index.dev_brs.get(device)  # type: ignore[arg-type]
        return bool(brs) and any(k != self.own_key for k in brs)


class _Namespaces(Mapping):
    """Namespaces read when asked for (only admin-access requests need one)."""

    def __init__(self, api) -> None:
        self.api = api
        self._seen: dict[str, dict | None] = {}

    def forget(self) -> None:
        self._seen.clear()

    def __getitem__(self, name: str) -> dict:
        if name not in self._seen:
            try:
                self._seen[name] = self.api.get(RES_NAMESPACES, name)
            except NotFound:
                self._seen[name] = None
            except (ApiError, OSError) as exc:
                raise VerificationFailed(f"cannot read namespace {name}: {describe_api_error(exc)}",
                                         retry=True) from None
        found = self._seen[name]
        if found is None:
            raise KeyError(name)
        return found

    def __iter__(self):
        return iter(k for k, v in self._seen.items() if v is not None)

    def __len__(self) -> int:
        return sum(1 for v in self._seen.values() if v is not None)


def read_pod(api, namespace: str, name: str, doubtful: Callable[[dict | None], bool]) -> dict:
    """The pod, from ``api``'s watch cache where it reads pods from one (as KAI's binder reads
    them from its informer); read again from the API server when the cached copy (None: not
    found) is ``doubtful``, a copy on which a decision against the pod would be made: a cache may
    be behind (a pod just created, replaced or bound), the server is not. NotFound when gone."""
    cached = RES_PODS in getattr(api, "cached_reads", ())
    try:
        pod = api.get(RES_PODS, name, namespace)
    except NotFound:
        if not cached:
            raise
        pod = None
    if cached and doubtful(pod):
        return api.get(RES_PODS, name, namespace, fresh=True)
    return pod


def get_fresh(api, resource: str, name: str, namespace: str | None = None) -> dict:
    """``api.get`` answered by the API server itself: with ``fresh=True`` for a store that reads
    this kind from a watch cache; a store without one has nothing to bypass (and need not take the
    keyword)."""
    if resource in getattr(api, "cached_reads", ()):
        return api.get(resource, name, namespace, fresh=True)
    return api.get(resource, name, namespace)


class Verifier:
    """The checks of the module docstring over ``index``; ``api`` is the binder's (rate-limited)
    store, for what the index has not seen."""

    def __init__(self, api, index: BinderIndex, features: FeatureGates, scheduler_names) -> None:
        self.api = api
        self.index = index
        self.features = features
        self.scheduler_names = frozenset(scheduler_names)
        #: device -> (claim, attempt) for the devices of attempts that passed their check
        self._held: dict[DeviceId, tuple[_Key, tuple]] = {}
        self._holds: dict[tuple, Hold] = {}
        #: the holds of finished attempts that wrote, until the index shows what they wrote
        self._settling: dict[tuple, Hold] = {}
        self.dra = features.dra
        #: another BindRequest's claim, by (request, pod claim name): (the request object, claim)
        self._resolved: dict[tuple[_Key, str], tuple[dict, _Key | None]] = {}
        self._fingerprints: dict[int, tuple[dict, str]] = {}
        self._in_use = _InUse(index, self._held, (), ("", ""))
        self._namespaces = _Namespaces(api)

    # -- the pod -------------------------------------------------------------------------------

    def check_scheduler(self, pod: dict) -> None:
        spec = pod.get("spec")
        name = (spec.get("schedulerName") if isinstance(spec, dict) else None) or DEFAULT_SCHEDULER
        if name not in self.scheduler_names:
            md = pod["metadata"]
            raise VerificationFailed(
                f'pod {md.get("namespace")}/{md["name"]} has schedulerName "{name}", not one this binder '
                f"serves ({', '.join(sorted(self.scheduler_names))})")

    # -- the whole check -----------------------------------------------------------------------

    def verify(self, br: dict, key: tuple, pod: dict, node_name: str, node: dict | None = None) -> Hold | None:
        """Run the checks for ``br`` (attempt ``key``) placing ``pod`` on ``node_name`` (``node``:
        the Node if the caller just read it); on success hold its devices and return the
        :class:`Hold` (None when it holds none). Raises VerificationFailed."""
        ns, pod_name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        br_key = (key[0], key[1])
        index = self.index
        with index.lock:
            earlier = self._holds.get(tuple(key))
            if earlier is not None:
                earlier.written = True  # an earlier attempt left for later may have written its claims
            if index.sync() and self._settling:
                self._settle(fetch=False)
            live = index.pod_brs.get((ns, pod_name))
            if live and (len(live) > 1 or br_key not in live):
                other = min(k[1] for k in live if k != br_key)
                raise VerificationFailed(f'pod {ns}/{pod_name} has another live BindRequest: "{ns}/{other}"',
                                         retry=True)
            if node is None:
                node = index.nodes.get(node_name) or self._read_node(node_name)
            if not self.dra:
                return None
            try:
                entries = claim_entries(br)
            except ClaimBindError as exc:
                raise VerificationFailed(str(exc)) from None
            fresh = self._claims(pod, entries, node, node_name)
            special = self._extended(br, pod, node, node_name)
            if special is not None:
                fresh.append(special)
            if not fresh:
                return None
            pools: set[tuple[str, str]] = set()
            exclusive: list[tuple[DeviceId, ...]] = []
            for _, allocation, _ in fresh:
                ids, mine = _device_ids(allocation)
                pools.update((d.driver, d.pool) for d in ids)
                exclusive.append(mine)
            inventory = index.inventory(node_name, pools)
            own = tuple(key)
            in_use = self._in_use
            in_use.own, in_use.own_key = own, br_key  # one check at a time: under the index lock
            try:
                verify_allocations([c for _, _, c in fresh], [a for _, a, _ in fresh], node, inventory,
                                   in_use=in_use, namespaces=self._namespaces, prepared=index.prepared)
            except AllocationRefused as exc:
                raise VerificationFailed(exc.reason, retry=exc.conflict) from None
            hold = Hold(own)
            for (claim_key, allocation, claim), devices in zip(fresh, exclusive, strict=True):
                shareable = special is None or claim is not special[2]  # the special claim is the pod's alone
                for d in devices:
                    self._check_free(d, claim_key, own, br_key, allocation, shareable)
                hold.claims[claim_key] = devices
            self._hold(hold)
            return hold

    def _read_node(self, name: str) -> dict:
        try:
            return self.api.get(RES_NODES, name)
        except NotFound:
            raise VerificationFailed(f'node "{name}" not found') from None
        except (ApiError, OSError) as exc:
            raise VerificationFailed(f'cannot read node "{name}": {describe_api_error(exc)}', retry=True) from None

    def _claims(self, pod: dict, entries: list[tuple[str, dict]], node: dict,
                node_name: str) -> list[tuple[_Key, dict, dict]]:
        """The claims of the pod the entries allocate afresh, as (key, allocation, claim); checks
        steps 4 and 5 on the way."""
        md = pod["metadata"]
        ns, pod_name, uid = md["namespace"], md["name"], md.get("uid")
        spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
        pod_claims = {rc.get("name"): rc for rc in spec.get("resourceClaims") or [] if isinstance(rc, dict)}
        named = [n for n, _ in entries]
        for n in named:
            if n not in pod_claims:
                raise VerificationFailed(f'the BindRequest allocates claim "{n}", which pod {ns}/{pod_name} '
                                         "does not have")
            if named.count(n) > 1:
                raise VerificationFailed(f'the BindRequest allocates claim "{n}" of pod {ns}/{pod_name} twice')
        for n in pod_claims:
            if n not in named:
                raise VerificationFailed(f'pod {ns}/{pod_name} has claim "{n}", which the BindRequest does not '
                                         "allocate")
        fresh = []
        for pod_claim, allocation in entries:
            name = claim_name_for(pod, pod_claim)
            if name is None:
                raise VerificationFailed(f'pod {ns}/{pod_name} has no ResourceClaim for its claim "{pod_claim}" '
                                         "yet", retry=True)
            claim_key = (ns, name)
            claim = self.index.claims.get(claim_key) or self._read_claim(ns, name)
            ref = f"{ns}/{name}"
            if claim["metadata"].get("deletionTimestamp"):
                raise VerificationFailed(f"claim {ref} is being deleted")
            if pod_claims[pod_claim].get("resourceClaimTemplateName"):
                owners = claim["metadata"].get("ownerReferences") or []
                if not any(isinstance(o, dict) and o.get("uid") == uid and o.get("controller") for o in owners):
                    raise VerificationFailed(f"claim {ref} was not created for pod {ns}/{pod_name}")
            if not _allocated_as(claim, ref, allocation, node, node_name):
                fresh.append((claim_key, allocation, claim))
        return fresh

    def _extended(self, br: dict, pod: dict, node: dict, node_name: str) -> tuple[_Key, dict, dict] | None:
        """The BindRequest's extended-resource claim as ``(key, allocation, claim)`` when it is to
        be allocated afresh; None when there is none, or the pod's special claim is allocated so
        already (checked as for any claim). Before that, the request must match the pod
        (:func:`kai_binder.extended.check_against_pod`)."""
        try:
            ext = extended_of(br)
        except ClaimBindError as exc:
            raise VerificationFailed(str(exc)) from None
        if ext is None:
            return None
        problem = check_against_pod(pod, ext, self.index.classes)
        if problem:
            raise VerificationFailed(problem)
        md = pod["metadata"]
        ns = md["namespace"]
        existing = special_claim((c for (cns, _), c in self.index.claims.items() if cns == ns), pod)
        if existing is not None and _allocated_as(existing, f"{ns}/{existing['metadata']['name']}", ext.allocation,
                                                  node, node_name):
            return None
        key = (ns, existing["metadata"]["name"] if existing is not None else f"{EXTENDED_ENTRY} of pod {md['name']}")
        claim = {"metadata": {"namespace": ns, "name": key[1]}, "spec": {"devices": {"requests": ext.device_requests}}}
        return key, ext.allocation, claim

    def _read_claim(self, ns: str, name: str) -> dict:
        try:
            claim = self.api.get(RES_CLAIMS, name, ns)
        except NotFound:
            raise VerificationFailed(f"claim {ns}/{name} not found", retry=True) from None
        except (ApiError, OSError) as exc:
            raise VerificationFailed(f"cannot read claim {ns}/{name}: {describe_api_error(exc)}",
                                     retry=True) from None
        self.index.observe_claim((ns, name), claim)
        return claim

    def _check_free(self, device: DeviceId, claim_key: _Key, own: tuple, br_key: _Key, allocation: dict,
                    shareable: bool = True) -> None:
        """No one else holds ``device``: another claim, another attempt of this binder, or another
        live BindRequest (one for the same claim aside, unless the claim is not ``shareable``: a
        pod's special extended-resource claim; another BindRequest's special claim never is)."""
        ref = f"{claim_key[0]}/{claim_key[1]}"
        what = f"device {device} of claim {ref}"
        for other in sorted(self.index.dev_claims.get(device, ())):
            if other != claim_key:
                raise VerificationFailed(f"{what} is already allocated to claim {other[0]}/{other[1]}",
                                         retry=True)
        held = self._held.get(device)
        if held is not None and held[1] != own and held[0] != claim_key:
            raise VerificationFailed(f'{what} is being allocated to claim {held[0][0]}/{held[0][1]} '
                                     f'(BindRequest "{held[1][0]}/{held[1][1]}")', retry=True)
        others = self.index.dev_brs.get(device)
        if not others or (len(others) == 1 and br_key in others):
            return
        mine = None
        for other_br, pod_claim in sorted(others.items()):
            if other_br == br_key:
                continue
            if not shareable or pod_claim == EXTENDED_ENTRY:
                raise VerificationFailed(f'{what} is in BindRequest "{other_br[0]}/{other_br[1]}"', retry=True)
            # Pods sharing a claim carry the same allocation for it: taken as theirs, the same
            # claim (no API call, even for 256 of them). If it is another claim after all, the
            # first of the two to be carried out holds the device, and the other's check refuses it.
            theirs = self._entry_allocation(other_br, pod_claim)
            if mine is None:
                mine = _fingerprint(allocation)
            if theirs is not None and self._fingerprint_of(theirs) == mine:
                continue
            other_claim = self._claim_of(other_br, pod_claim)
            if other_claim is not None and other_claim != claim_key:
                raise VerificationFailed(f'{what} is in BindRequest "{other_br[0]}/{other_br[1]}" for claim '
                                         f"{other_claim[0]}/{other_claim[1]}", retry=True)

    def _entry_allocation(self, br_key: _Key, pod_claim: str) -> dict | None:
        br = self.index.brs.get(br_key)
        spec = br.get("spec") if br is not None else None
        for entry in (spec.get("resourceClaimAllocations") if isinstance(spec, dict) else None) or []:
            if isinstance(entry, dict) and entry.get("name") == pod_claim and isinstance(entry.get("allocation"), dict):
                return entry["allocation"]
        return None

    def _fingerprint_of(self, allocation: dict) -> str:
        """:func:`_fingerprint`, kept per allocation object (another BindRequest's, read again by
        each check of a pod sharing its claim)."""
        hit = self._fingerprints.get(id(allocation))
        if hit is not None and hit[0] is allocation:
            return hit[1]
        if len(self._fingerprints) >= 4096:
            self._fingerprints.clear()
        fp = _fingerprint(allocation)
        self._fingerprints[id(allocation)] = (allocation, fp)
        return fp

    def _claim_of(self, br_key: _Key, pod_claim: str) -> _Key | None:
        """The claim another live BindRequest allocates under the pod claim name ``pod_claim``
        (its pod read from the API once per request and claim name: only when it names a device of
        ours with another allocation); None when its pod is gone or is not its pod any more (the
        request is stale)."""
        br = self.index.brs.get(br_key)
        if br is None:
            return None
        cached = self._resolved.get((br_key, pod_claim), False)
        if cached is not False and cached[0] is br:
            return cached[1]
        found = self._resolve(br_key, br, pod_claim)
        if len(self._resolved) >= 4096:
            self._resolved.clear()
        self._resolved[(br_key, pod_claim)] = (br, found)
        return found

    def _resolve(self, br_key: _Key, br: dict, pod_claim: str) -> _Key | None:
        pod_name = (br.get("spec") or {}).get("podName")
        owners = [o.get("uid") for o in br["metadata"].get("ownerReferences") or []
                  if isinstance(o, dict) and o.get("kind") == "Pod"]

        def stale(pod: dict | None) -> bool:
            return pod is None or bool(owners and pod["metadata"].get("uid") not in owners)

        try:  # the request is only counted stale on the API server's word, not a cache's
            pod = read_pod(self.api, br_key[0], pod_name, stale)
        except NotFound:
            return None
        except (ApiError, OSError) as exc:
            raise VerificationFailed(f'cannot read the pod of BindRequest "{br_key[0]}/{br_key[1]}": '
                                     f"{describe_api_error(exc)}", retry=True) from None
        if stale(pod):
            return None
        name = claim_name_for(pod, pod_claim)
        return (br_key[0], name) if name else (br_key[0], f"<unresolved claim {pod_claim} of pod {pod_name}>")

    # -- holds -----------------------------------------------------------------------------------

    def _hold(self, hold: Hold) -> None:
        self._drop(hold.br)
        self._holds[hold.br] = hold
        for claim_key, devices in hold.claims.items():
            for d in devices:
                self._held[d] = (claim_key, hold.br)

    def _drop(self, key: tuple) -> None:
        self._settling.pop(key, None)
        hold = self._holds.pop(key, None)
        if hold is None:
            return
        for devices in hold.claims.values():
            for d in devices:
                if self._held.get(d, (None, None))[1] == key:
                    del self._held[d]

    def mark_written(self, key: tuple) -> None:
        """The attempt ``key`` may leave its claims allocated (it bound the pod, or found it bound
        elsewhere and left the claims as they were)."""
        with self.index.lock:
            hold = self._holds.get(key)
            if hold is not None:
                hold.written = True

    def finish(self, key: tuple, known: bool) -> None:
        """The attempt ``key`` ended; ``known``: its outcome is known (not left for later). An
        attempt that rolled back lets its devices go at once; one that wrote keeps them until the
        index shows its claims (:meth:`forget` reads them from the API if the index does not by
        the next pass: a lost reply hides a write from the watch); one whose outcome is unknown
        keeps them until it is attempted again, or its BindRequest goes."""
        if not known:
            return
        with self.index.lock:
            hold = self._holds.get(key)
            if hold is None:
                return
            if not hold.written or self._shown(hold):
                self._drop(key)
            else:
                self._settling[key] = hold

    def _shown(self, hold: Hold) -> bool:
        """Whether the index shows every claim of ``hold`` allocated with its devices."""
        claim_devs = self.index.claim_devs
        return all(set(devices) <= set(claim_devs.get(k, ())) for k, devices in hold.claims.items())

    def _settle(self, fetch: bool, keys=None) -> None:
        """Drop the holds (those of ``keys``, by default the settling ones) that the index now
        shows; with ``fetch``, read the claims it does not show from the API first."""
        for key in list(self._settling if keys is None else keys):
            hold = self._holds.get(key)
            if hold is None:
                self._settling.pop(key, None)
                continue
            shown = self._shown(hold)
            if not shown and fetch and not self._fetch(hold):
                continue
            if fetch or shown:
                self._drop(key)

    def _fetch(self, hold: Hold) -> bool:
        """Read the claims of ``hold`` the index does not show from the API server into the index
        (a list by name: never answered from a cache, which may be as far behind as the index);
        False when one cannot be read (the hold stays)."""
        index = self.index
        for claim_key, devices in hold.claims.items():
            if set(devices) <= set(index.claim_devs.get(claim_key, ())):
                continue
            try:
                found, _ = self.api.list(RES_CLAIMS, claim_key[0], field_selector=f"metadata.name={claim_key[1]}")
                index.observe_claim(claim_key, found[0] if found else None)
            except (ApiError, OSError) as exc:
                log.info("cannot read claim %s/%s back: %s; its devices stay held", claim_key[0], claim_key[1],
                         describe_api_error(exc))
                return False
        return True

    def start_pass(self, live: set[tuple]) -> None:
        """At the start of a pass, when no attempt runs (``live``: the attempts' keys of the live
        BindRequests): sync the index, and let go of the devices of finished attempts and of
        BindRequests no longer live, once the index shows (or the API tells) what they wrote."""
        with self.index.lock:
            self.index.sync()
            self._namespaces.forget()  # read again in this pass, if an admin-access claim asks
            if self._holds:
                self._settle(fetch=True, keys=[k for k in self._holds if k in self._settling or k not in live])

    def observe(self, resource: str, obj: dict) -> None:
        """An object the binder read back after a write whose reply was lost (a BindRequest's
        status): in the index at once, as no event of its own write may come."""
        with self.index.lock:
            self.index.observe(resource, obj)


def _allocated_as(claim: dict, ref: str, allocation: dict, node: dict, node_name: str) -> bool:
    """Whether ``claim`` is already allocated (False: to be allocated afresh); when it is, it must
    be allocated exactly as ``allocation``, usable on the node (else VerificationFailed)."""
    status = claim.get("status")
    existing = status.get("allocation") if isinstance(status, dict) else None
    if not existing:
        return False
    if not same_allocation(existing, allocation):
        raise VerificationFailed(_differs(ref, existing, allocation), retry=True)
    try:
        usable = allocation_usable_on(existing, node)
    except NodeSelectorError as exc:
        raise VerificationFailed(f"claim {ref}: its allocation has an invalid nodeSelector: {exc}") from None
    if not usable:
        raise VerificationFailed(f"claim {ref} is allocated to devices node {node_name} cannot use")
    return True


def _fingerprint(allocation: dict) -> str:
    """The allocation in a canonical form (results in any order), to compare two quickly."""
    devices = allocation.get("devices") or {}
    results = devices.get("results") if isinstance(devices, dict) else None
    return json.dumps([sorted(json.dumps(r, sort_keys=True) for r in results or [] if isinstance(r, dict)),
                       devices.get("config") if isinstance(devices, dict) else None,
                       allocation.get("nodeSelector")], sort_keys=True, default=str)


def _device_ids(allocation: dict) -> tuple[list[DeviceId], tuple[DeviceId, ...]]:
    """Every device an allocation names, and those it uses (admin access aside), in one pass over
    results :func:`kai_binder.dra.claim_entries` already checked."""
    ids, exclusive = [], []
    for result in (allocation.get("devices") or {}).get("results") or []:
        d = DeviceId(result["driver"], result["pool"], result["device"])
        ids.append(d)
        if not result.get("adminAccess"):
            exclusive.append(d)
    return ids, tuple(exclusive)


def _devices_text(allocation: object) -> str:
    try:
        return ", ".join(str(d) for d in devices_of(allocation)) or "none"  # type: ignore[arg-type]
    except (ValueError, AttributeError, TypeError):
        return "malformed results"


def _differs(ref: str, existing: object, requested: object) -> str:
    have, want = _devices_text(existing), _devices_text(requested)
    if have != want:
        return f"claim {ref} is already allocated to other devices ({have}) than the BindRequest's ({want})"
    return f"claim {ref} is already allocated to these devices, but with another config or nodeSelector"
