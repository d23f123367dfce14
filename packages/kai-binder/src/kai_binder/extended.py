"""Extended resources backed by DRA (KEP-5004): the pod's special ResourceClaim, as a BindRequest's
``spec.extendedResourceClaimAllocation`` describes it.

A pod asking for an extended resource (``nvidia.com/gpu: 1``) that a DeviceClass serves
(``spec.extendedResourceName``, or the implicit ``deviceclass.resource.kubernetes.io/<class>``) on
a node without a device plugin for it gets its devices through one ResourceClaim the scheduler side
makes for it. Kubernetes 1.34+ (kube-scheduler's DynamicResources PreBind) and KAI's binder do the
same, which is what this binder does before binding (see :class:`kai_binder.dra.DraClaimsPlugin`):

1. find the pod's special claim (a claim of its namespace with the annotation
   ``resource.kubernetes.io/extended-resource-claim: "true"`` whose controller owner is the pod: one
   an earlier attempt made), or create it: ``generateName: <pod>-extended-resources-``, the pod as
   controller owner (``blockOwnerDeletion`` too, as KAI's binder sets it), the
   ``delete-protection`` finalizer, and ``spec.devices.requests`` = the BindRequest's
   ``deviceRequests``;
2. allocate it as the BindRequest says and reserve it for the pod (one status update,
   :func:`kai_binder.claims.reserve_claim`);
3. set the pod's ``status.extendedResourceClaimStatus`` to ``{resourceClaimName, requestMappings:
   containerMappings}`` (a merge patch of ``pods/status``, skipped when it is there already): the
   kubelet reads it to hand the devices to the containers.

A failed attempt deletes the claim (released first, so its finalizer goes), as kube-scheduler's
Unreserve and KAI's binder do. The pod's ``extendedResourceClaimStatus`` is left naming it: the API
server (1.37) keeps that field when a write clears it (KAI's binder tries, to no effect), and the
next attempt's name replaces it.

Before anything is written, :func:`check_against_pod` checks that the request matches the pod: each
container mapping names a container of the pod that asks for exactly that many of the resource, a
device request of the claim, and a DeviceClass serving that resource; and every device request is
mapped. The allocation itself is checked like any claim's (:mod:`kai_binder.verify`).
"""

from __future__ import annotations

from dataclasses import dataclass

from kai_binder.claims import ClaimBindError, check_allocation, describe_api_error, is_transient, release_claim
from kai_core.api.claims import DELETE_PROTECTION_FINALIZER
from kai_core.api.errors import ApiError, NotFound
from kai_core.api.quantity import QuantityError, parse_quantity
from kai_core.api.resources import RES_CLAIMS, RES_PODS

#: the annotation that marks a pod's special claim for its extended resources
EXTENDED_CLAIM_ANNOTATION = "resource.kubernetes.io/extended-resource-claim"
#: an extended resource every DeviceClass serves without saying so: this prefix and its name
IMPLICIT_PREFIX = "deviceclass.resource.kubernetes.io/"
#: the pod claim name the binder's index files the devices of an extended allocation under
EXTENDED_ENTRY = "<extended-resources>"
FIELD = "spec.extendedResourceClaimAllocation"


@dataclass(frozen=True)
class Extended:
    """A BindRequest's extended-resource claim: its allocation, device requests and mappings."""

    allocation: dict
    device_requests: list[dict]
    mappings: list[dict]


def extended_of(br: dict) -> Extended | None:
    """The BindRequest's ``extendedResourceClaimAllocation``, None when it has none (or an empty
    one: nothing to carry out); ClaimBindError naming the field when it is malformed."""
    ext = (br.get("spec") or {}).get("extendedResourceClaimAllocation")
    if ext is None or ext == {}:
        return None
    if not isinstance(ext, dict):
        raise ClaimBindError(f"{FIELD} must be an object")
    allocation = check_allocation(ext.get("allocation"), f"{FIELD}.allocation")
    requests, mappings = ext.get("deviceRequests"), ext.get("containerMappings")
    if not isinstance(requests, list) or not requests or not all(
            isinstance(r, dict) and isinstance(r.get("name"), str) and r["name"] for r in requests):
        raise ClaimBindError(f"{FIELD}.deviceRequests: needs at least one device request, each with a name")
    if not isinstance(mappings, list) or not mappings or not all(
            isinstance(m, dict) and all(isinstance(m.get(k), str) and m[k]
                                        for k in ("containerName", "resourceName", "requestName"))
            for m in mappings):
        raise ClaimBindError(f"{FIELD}.containerMappings: needs at least one mapping, each with containerName, "
                             "resourceName and requestName")
    return Extended(allocation, requests, mappings)


def check_against_pod(pod: dict, ext: Extended, classes: dict[str, dict]) -> str | None:
    """Why ``ext`` does not match what ``pod`` asks for (see the module docstring), or None.
    ``classes``: DeviceClasses by name."""
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    containers = {c.get("name"): c for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
                  if isinstance(c, dict)}
    requests = {r["name"]: r for r in ext.device_requests}
    mapped: set[str] = set()
    for m in ext.mappings:
        container, resource, request = m["containerName"], m["resourceName"], m["requestName"]
        where = f"{FIELD}.containerMappings: container {container!r}, {resource}"
        if container not in containers:
            return f"{where}: the pod has no such container"
        wanted = ((containers[container].get("resources") or {}).get("requests") or {}).get(resource)
        try:
            count = parse_quantity(wanted) if wanted is not None else 0
        except QuantityError:
            count = 0
        if not count:
            return f"{where}: the container does not ask for it"
        exactly = (requests.get(request) or {}).get("exactly")
        if request not in requests or not isinstance(exactly, dict):
            return f"{where}: no device request {request!r} (with 'exactly') in deviceRequests"
        if request in mapped:
            return f"{where}: device request {request!r} is mapped twice"
        mapped.add(request)
        class_name = exactly.get("deviceClassName")
        cls = classes.get(class_name)
        if cls is None:
            return f"{where}: device request {request!r} names DeviceClass {class_name!r}, which does not exist"
        served = ((cls.get("spec") or {}).get("extendedResourceName"), IMPLICIT_PREFIX + str(class_name))
        if resource not in served:
            return f"{where}: DeviceClass {class_name!r} does not serve {resource}"
        mode = exactly.get("allocationMode") or "ExactCount"
        if mode != "ExactCount" or exactly.get("count", 1) != count:
            return (f"{where}: device request {request!r} asks for {exactly.get('count', 1)} ({mode}), "
                    f"the container for {wanted}")
    unmapped = sorted(set(requests) - mapped)
    if unmapped:
        return f"{FIELD}.deviceRequests: {', '.join(unmapped)} not mapped to any container"
    return None


def is_special_claim_of(claim: dict, pod_uid: str) -> bool:
    """Whether ``claim`` is the special extended-resource claim of the pod ``pod_uid``."""
    md = claim.get("metadata") or {}
    if (md.get("annotations") or {}).get(EXTENDED_CLAIM_ANNOTATION) != "true":
        return False
    return any(isinstance(o, dict) and o.get("uid") == pod_uid and o.get("controller")
               for o in md.get("ownerReferences") or [])


def special_claim(claims, pod: dict) -> dict | None:
    """The pod's special claim among ``claims``, not being deleted, or None."""
    uid = pod["metadata"].get("uid")
    for claim in claims:
        if is_special_claim_of(claim, uid) and not claim["metadata"].get("deletionTimestamp"):
            return claim
    return None


def new_claim(pod: dict, ext: Extended) -> dict:
    """The special claim to create for ``pod`` (see the module docstring)."""
    md = pod["metadata"]
    return {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {
            "generateName": f"{md['name']}-extended-resources-",
            "namespace": md["namespace"],
            "annotations": {EXTENDED_CLAIM_ANNOTATION: "true"},
            "finalizers": [DELETE_PROTECTION_FINALIZER],
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": md["name"], "uid": md["uid"],
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {"devices": {"requests": [dict(r) for r in ext.device_requests]}},
    }


def find_or_create(store, pod: dict, ext: Extended) -> str:
    """The name of the pod's special claim, created when there is none. The claim the pod's status
    names is read first; else the namespace's claims are listed (as kube-scheduler and KAI's binder
    look for it)."""
    md = pod["metadata"]
    ns = md["namespace"]
    named = ((pod.get("status") or {}).get("extendedResourceClaimStatus") or {}).get("resourceClaimName")
    try:
        found = None
        if named:
            try:
                found = special_claim([store.get(RES_CLAIMS, named, ns)], pod)
            except NotFound:
                found = None
        if found is None:
            found = special_claim(store.list(RES_CLAIMS, ns)[0], pod)
        if found is not None:
            return found["metadata"]["name"]
        return store.create(new_claim(pod, ext))["metadata"]["name"]
    except (ApiError, OSError) as exc:
        raise ClaimBindError(f"cannot find or create the extended-resource claim of pod {ns}/{md['name']}: "
                             f"{describe_api_error(exc)}", transient=is_transient(exc)) from None


def set_pod_status(store, pod: dict, claim_name: str, ext: Extended) -> None:
    """Record the claim in the pod's ``status.extendedResourceClaimStatus`` (nothing written when
    it is there already)."""
    want = {"resourceClaimName": claim_name, "requestMappings": [dict(m) for m in ext.mappings]}
    if (pod.get("status") or {}).get("extendedResourceClaimStatus") == want:
        return
    md = pod["metadata"]
    patch = {"metadata": {"uid": md["uid"]}, "status": {"extendedResourceClaimStatus": want}}
    try:
        store.patch(RES_PODS, md["name"], md["namespace"], patch, "status")
    except (ApiError, OSError) as exc:
        raise ClaimBindError(f"cannot set status.extendedResourceClaimStatus of pod {md['namespace']}/{md['name']}: "
                             f"{describe_api_error(exc)}", transient=is_transient(exc)) from None


def remove(store, pod: dict, lock) -> bool:
    """Undo what an attempt for ``pod`` wrote for its extended resources: its special claim is
    released (so its finalizer goes) and deleted. ``lock(namespace, name)`` is the claim's write
    lock. Whether there was a claim; ClaimBindError when the API did not let it finish (calling it
    again is safe)."""
    md = pod["metadata"]
    ns, uid = md["namespace"], md["uid"]
    try:
        claim = special_claim(store.list(RES_CLAIMS, ns)[0], pod)
        if claim is None:
            return False
        name = claim["metadata"]["name"]
        with lock(ns, name):
            release_claim(store, ns, name, uid)
            try:
                store.delete(RES_CLAIMS, name, ns)
            except NotFound:
                pass
    except (ApiError, OSError) as exc:
        raise ClaimBindError(f"cannot remove the extended-resource claim of pod {ns}/{md['name']}: "
                             f"{describe_api_error(exc)}", transient=True) from None
    return True
