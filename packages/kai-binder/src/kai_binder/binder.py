"""The binder: carries out the scheduler's decisions, one BindRequest at a time.

Order of one attempt: pre-bind (the pod's DRA claims first, then plugins' ``kai_binder_pre_bind``),
pods/binding, post-bind, then ``status.phase`` Succeeded. A failing attempt rolls back what it did,
in reverse, and ends ``Failed`` with the API's reason. Reconcile is idempotent: a Succeeded
request, or one whose pod is already bound to its node, changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kai_binder.claims import ClaimBindError, ClaimWrite, release_claim, reserve_claim
from kai_binder.hookspecs import BinderSpecs
from kai_core.errors import ApiError, Conflict, NotFound
from kai_core.features import FeatureGates, dra_disabled_message
from kai_core.objects import clone, ref
from kai_core.plugins import KaiPluginManager, PluginError
from kai_core.resources import RES_BIND_REQUESTS, RES_PODS
from kai_core.snapshot import claim_name_for

log = logging.getLogger("kai.binder")


class BindError(Exception):
    pass


@dataclass
class BinderResult:
    succeeded: int = 0
    failed: int = 0
    reasons: list[str] = field(default_factory=list)


def add_binder_hookspecs(pm: KaiPluginManager) -> None:
    if not hasattr(pm.hook, "kai_binder_pre_bind"):
        pm.add_hookspecs(BinderSpecs)


class Binder:
    def __init__(self, store, pm: KaiPluginManager | None = None, features: FeatureGates | None = None) -> None:
        self.store = store
        self.pm = pm
        if pm is not None:
            add_binder_hookspecs(pm)
        self.features = features or FeatureGates()

    def run_once(self) -> BinderResult:
        """Reconcile every BindRequest that has not reached a final phase."""
        result = BinderResult()
        items, _ = self.store.list(RES_BIND_REQUESTS)
        for br in items:
            if (br.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            if br["metadata"].get("deletionTimestamp"):
                continue
            phase, reason = self.reconcile(br)
            if phase == "Succeeded":
                result.succeeded += 1
            elif phase == "Failed":
                result.failed += 1
                result.reasons.append(reason)
        return result

    def reconcile(self, br: dict) -> tuple[str, str]:
        """Carry out one BindRequest; returns the phase reached and the reason for a failure."""
        spec = br.get("spec") or {}
        ns = br["metadata"]["namespace"]
        node = spec.get("selectedNode", "")
        try:
            pod = self.store.get(RES_PODS, spec.get("podName", ""), ns)
        except NotFound:
            return self._finish(br, "Failed", f'pod "{ns}/{spec.get("podName")}" not found')
        owner_uids = {o.get("uid") for o in br["metadata"].get("ownerReferences") or [] if o.get("kind") == "Pod"}
        if owner_uids and pod["metadata"]["uid"] not in owner_uids:
            return self._finish(br, "Failed", f"pod {ref(pod)} was replaced by a new pod of the same name")
        bound = pod["spec"].get("nodeName")
        if bound:
            if bound == node:
                return self._finish(br, "Succeeded", "")
            return self._finish(br, "Failed", f"pod {ref(pod)} is already bound to node {bound}")
        writes: list[ClaimWrite] = []
        plugins_ran = False
        try:
            self._bind_claims(br, pod, writes)
            plugins_ran = True
            self._call_plugins("kai_binder_pre_bind", br, pod, strict=True)
            try:
                self.store.bind(ns, pod["metadata"]["name"], node, pod["metadata"]["uid"])
            except Conflict:
                current = self.store.get(RES_PODS, pod["metadata"]["name"], ns)
                if current["spec"].get("nodeName") != node:
                    raise
        except (ApiError, ClaimBindError, BindError) as exc:
            reason = exc.message if isinstance(exc, ApiError) else str(exc)
            self._rollback(br, pod, writes, plugins_ran)
            return self._finish(br, "Failed", reason)
        self._call_plugins("kai_binder_post_bind", br, pod, strict=False)
        log.info("pod %s bound to node %s", ref(pod), node)
        return self._finish(br, "Succeeded", "")

    def _bind_claims(self, br: dict, pod: dict, writes: list[ClaimWrite]) -> None:
        entries = (br.get("spec") or {}).get("resourceClaimAllocations") or []
        if not entries:
            return
        if not self.features.dra:
            raise BindError(f"BindRequest has resource claim allocations but {dra_disabled_message()}")
        ns = pod["metadata"]["namespace"]
        for entry in entries:
            claim_name = claim_name_for(pod, entry.get("name"))
            if claim_name is None:
                raise BindError(f'pod {ref(pod)} has no ResourceClaim for its claim "{entry.get("name")}"')
            write = ClaimWrite(ns, claim_name)
            writes.append(write)
            reserve_claim(self.store, ns, claim_name, entry.get("allocation") or {}, pod, write)

    def _call_plugins(self, hook: str, br: dict, pod: dict, strict: bool) -> None:
        if self.pm is None:
            return
        for _plugin, res in self.pm.call_each(hook, bind_request=br, pod=pod, store=self.store):
            if isinstance(res, PluginError) and strict:
                raise BindError(str(res))

    def _rollback(self, br: dict, pod: dict, writes: list[ClaimWrite], plugins_ran: bool) -> None:
        if plugins_ran:
            self._call_plugins("kai_binder_rollback", br, pod, strict=False)
        for write in reversed(writes):
            try:
                release_claim(self.store, write, pod)
            except ApiError as exc:
                log.error("rollback of ResourceClaim %s/%s failed: %s", write.namespace, write.name, exc.message)

    def _finish(self, br: dict, phase: str, reason: str) -> tuple[str, str]:
        """Write the phase (re-reading on conflict); a request that is gone is left alone."""
        name, ns = br["metadata"]["name"], br["metadata"]["namespace"]
        for _ in range(5):
            status = br.get("status") or {}
            if status.get("phase") == phase and status.get("reason", "") == reason:
                return phase, reason
            new = clone(br)
            st = new.setdefault("status", {})
            st["phase"] = phase
            if reason:
                st["reason"] = reason
            else:
                st.pop("reason", None)
            limit = (br.get("spec") or {}).get("backoffLimit")
            if phase == "Failed" and limit is not None and st.get("failedAttempts", 0) < limit:
                st["failedAttempts"] = st.get("failedAttempts", 0) + 1
            try:
                self.store.update_status(new)
                if phase == "Failed":
                    log.warning("BindRequest %s/%s failed: %s", ns, name, reason)
                return phase, reason
            except Conflict:
                try:
                    br = self.store.get(RES_BIND_REQUESTS, name, ns)
                except NotFound:
                    return phase, reason
            except NotFound:
                return phase, reason
        return phase, reason
