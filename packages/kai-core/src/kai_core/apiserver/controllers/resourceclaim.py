"""The resourceclaim controller, as kube-controller-manager runs it.

- Creates a pod's ResourceClaims from its ResourceClaimTemplates (``generateName:
  <pod>-<podClaimName>-``, Pod as controller owner, annotation
  ``resource.kubernetes.io/pod-claim-name``) and records their names in
  ``pod.status.resourceClaimStatuses``; an orphan claim the pod owns is reused.
- Drops ``reservedFor`` entries of pods that are gone, replaced (another uid under the name) or
  done (finished, or being deleted while unbound). When that leaves no consumer, the allocation
  is cleared and then the ``delete-protection`` finalizer removed. (Upstream clears only claims
  that carry the finalizer, which every scheduler-allocated claim does; here also those written
  without it, as simple test set-ups do.) A claim being deleted with no consumer loses its
  allocation and the finalizer, so it can go. The binder's rollback releases a claim through the
  same function, :func:`kai_core.api.claims.with_consumers`.

As upstream, deallocation is triggered only by that transition (a consumer pruned here) or by
deletion: a claim allocated for nobody is not touched, and neither is a free claim that carries
the finalizer (a scheduler or binder may be between its finalizer write and its allocation write).
Undoing a failed bind is the binder's job, not this controller's.
"""

from __future__ import annotations

import logging

from kai_core.api.claims import is_free, is_protected, reserved_for, with_consumers, without_protection
from kai_core.api.errors import ApiError, Conflict, NotFound
from kai_core.api.objects import clone, ref
from kai_core.api.resources import RES_CLAIM_TEMPLATES, RES_CLAIMS, RES_PODS, is_active_pod

log = logging.getLogger("kai.controllers.resourceclaim")

POD_CLAIM_NAME_ANNOTATION = "resource.kubernetes.io/pod-claim-name"
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


def pod_done(pod: dict) -> bool:
    """Whether none of the pod's containers runs or ever will: finished, or being deleted before
    it was bound (upstream's ``isPodDone``). Its claim reservations can go."""
    if not is_active_pod(pod):
        return True
    return bool(pod["metadata"].get("deletionTimestamp")) and not (pod.get("spec") or {}).get("nodeName")


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
        live = {p["metadata"]["uid"] for p in pods if not pod_done(p)}
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
                    template = store.get_ref(RES_CLAIM_TEMPLATES, template_name, ns)  # read, never changed
                except NotFound:
                    continue  # the scheduler reports the missing template on the pod
                existing = self._create_claim(store, pod, rc["name"], template)
                if existing is None:
                    continue
            new_statuses.append({"name": rc["name"], "resourceClaimName": existing["metadata"]["name"]})
        if not new_statuses:
            return
        # a status write takes the status and the preconditions from the request, the rest from the
        # stored pod: the whole pod need not be copied to send it
        md = pod["metadata"]
        status = dict(pod.get("status") or {})
        status["resourceClaimStatuses"] = list(status.get("resourceClaimStatuses") or []) + new_statuses
        updated = {"apiVersion": pod["apiVersion"], "kind": pod["kind"], "status": status,
                   "metadata": {"name": md["name"], "namespace": md["namespace"], "uid": md["uid"],
                                "resourceVersion": md["resourceVersion"]}}
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
        reserved = reserved_for(claim)
        keep = [r for r in reserved if r.get("resource") != "pods" or r.get("uid") in live_pods]
        deleting = bool(claim["metadata"].get("deletionTimestamp"))
        try:
            if len(keep) < len(reserved) or (deleting and not keep and status.get("allocation")):
                new = clone(claim)
                new["status"] = with_consumers(status, keep)
                claim = store.update_status(new)
            elif not (deleting and not keep and is_protected(claim)):
                return
            if is_protected(claim) and is_free(claim):
                new = clone(claim)
                new["metadata"]["finalizers"] = without_protection(claim)
                store.update(new)
        except (Conflict, NotFound):
            return
