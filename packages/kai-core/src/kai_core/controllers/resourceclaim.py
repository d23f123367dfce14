"""The resourceclaim controller, as kube-controller-manager runs it.

- Creates a pod's ResourceClaims from its ResourceClaimTemplates (``generateName:
  <pod>-<podClaimName>-``, Pod as controller owner, annotation
  ``resource.kubernetes.io/pod-claim-name``) and records their names in
  ``pod.status.resourceClaimStatuses``; an orphan claim the pod owns is reused.
- Drops ``reservedFor`` entries of pods that are gone or finished, clears the allocation once no
  consumer remains, and removes the ``delete-protection`` finalizer so the claim can go.
"""

from __future__ import annotations

import logging

from kai_core.errors import ApiError, Conflict, NotFound
from kai_core.objects import clone, ref
from kai_core.resources import RES_CLAIM_TEMPLATES, RES_CLAIMS, RES_PODS
from kai_core.snapshot import is_active_pod

log = logging.getLogger("kai.controllers.resourceclaim")

POD_CLAIM_NAME_ANNOTATION = "resource.kubernetes.io/pod-claim-name"
DELETE_PROTECTION_FINALIZER = "resource.kubernetes.io/delete-protection"
_MAX_BASE_LEN = 57  # leaves room for "-" and 5 random characters within 63


def claim_generate_name(pod_name: str, pod_claim_name: str) -> str:
    """``<pod>-<claim>-``, both parts shortened in proportion when too long (as upstream does)."""
    base = f"{pod_name}-{pod_claim_name}"
    if len(base) > _MAX_BASE_LEN:
        n = len(base)
        pod_part = pod_name[: len(pod_name) * _MAX_BASE_LEN // n]
        claim_part = pod_claim_name[: len(pod_claim_name) * _MAX_BASE_LEN // n]
        base = f"{pod_part}-{claim_part}"
    return base + "-"


class ResourceClaimController:
    name = "resourceclaim"

    def reconcile(self, store) -> None:
        pods, _ = store.list_refs(RES_PODS)
        claims, _ = store.list_refs(RES_CLAIMS)
        by_owner: dict[str, list[dict]] = {}
        for c in claims:
            for o in c["metadata"].get("ownerReferences") or []:
                if o.get("controller"):
                    by_owner.setdefault(o.get("uid"), []).append(c)
        for pod in pods:
            if pod["metadata"].get("deletionTimestamp") or not is_active_pod(pod):
                continue
            if any(rc.get("resourceClaimTemplateName") for rc in pod["spec"].get("resourceClaims") or []):
                self._ensure_claims(store, pod, by_owner.get(pod["metadata"]["uid"], []))
        live = {p["metadata"]["uid"] for p in pods if is_active_pod(p)}
        for claim in claims:
            self._release(store, claim, live)

    def _ensure_claims(self, store, pod: dict, owned: list[dict]) -> None:
        recorded = {s.get("name") for s in (pod.get("status") or {}).get("resourceClaimStatuses") or []}
        new_statuses = []
        for rc in pod["spec"].get("resourceClaims") or []:
            template_name = rc.get("resourceClaimTemplateName")
            if not template_name or rc["name"] in recorded:
                continue
            ns = pod["metadata"]["namespace"]
            existing = next((c for c in owned
                             if (c["metadata"].get("annotations") or {}).get(POD_CLAIM_NAME_ANNOTATION) == rc["name"]),
                            None)
            if existing is None:
                try:
                    template = store.get(RES_CLAIM_TEMPLATES, template_name, ns)
                except NotFound:
                    continue  # the scheduler reports the missing template on the pod
                existing = self._create_claim(store, pod, rc["name"], template)
                if existing is None:
                    continue
            new_statuses.append({"name": rc["name"], "resourceClaimName": existing["metadata"]["name"]})
        if not new_statuses:
            return
        updated = clone(pod)
        status = updated.setdefault("status", {})
        status["resourceClaimStatuses"] = list(status.get("resourceClaimStatuses") or []) + new_statuses
        try:
            store.update_status(updated)
        except (Conflict, NotFound):
            pass  # next round; the claim created now is found again as an owned orphan

    def _create_claim(self, store, pod: dict, pod_claim_name: str, template: dict) -> dict | None:
        tmeta = (template.get("spec") or {}).get("metadata") or {}
        md = pod["metadata"]
        claim = {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {
                "generateName": claim_generate_name(md["name"], pod_claim_name),
                "namespace": md["namespace"],
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": {**(tmeta.get("annotations") or {}), POD_CLAIM_NAME_ANNOTATION: pod_claim_name},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": md["name"], "uid": md["uid"],
                                     "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": clone((template.get("spec") or {}).get("spec") or {}),
        }
        if not claim["metadata"]["labels"]:
            del claim["metadata"]["labels"]
        try:
            return store.create(claim)
        except ApiError as exc:
            log.error("cannot create ResourceClaim for pod %s claim %s: %s", ref(pod), pod_claim_name, exc.message)
            return None

    def _release(self, store, claim: dict, live_pods: set[str]) -> None:
        status = claim.get("status") or {}
        reserved = status.get("reservedFor") or []
        keep = [r for r in reserved if r.get("resource") != "pods" or r.get("uid") in live_pods]
        allocation = status.get("allocation")
        deallocated = False
        try:
            if len(keep) != len(reserved) or (not keep and allocation):
                new = clone(claim)
                new_status = new.setdefault("status", {})
                if keep:
                    new_status["reservedFor"] = keep
                else:
                    new_status.pop("reservedFor", None)
                    new_status.pop("allocation", None)
                claim = store.update_status(new)
                deallocated = not keep
                allocation = (claim.get("status") or {}).get("allocation")
                keep = (claim.get("status") or {}).get("reservedFor") or []
            finalizers = claim["metadata"].get("finalizers") or []
            # the finalizer goes once the claim is free and either deallocated now or being deleted;
            # never in between a binder's finalizer write and its allocation write
            deleting = bool(claim["metadata"].get("deletionTimestamp"))
            if (not keep and not allocation and DELETE_PROTECTION_FINALIZER in finalizers
                    and (deallocated or deleting)):
                new = clone(claim)
                new["metadata"]["finalizers"] = [f for f in finalizers if f != DELETE_PROTECTION_FINALIZER]
                store.update(new)
        except (Conflict, NotFound):
            return
