"""The binder's volume step (kube-scheduler's VolumeBinding PreBind, as KAI's binder runs it before
the pod is bound), a built-in binder plugin registered next to the DRA claim step.

For each PersistentVolumeClaim of the pod not bound yet:

* the scheduler chose a static PersistentVolume (the BindRequest's
  :data:`~kai_core.api.volumes.ANN_STATIC_BINDINGS` annotation): the PV gets the claim
  in ``spec.claimRef`` and ``pv.kubernetes.io/bound-by-controller: "yes"`` (what kube-scheduler's
  binder writes), then, once every claim of the pod is settled, the claim gets
  ``spec.volumeName`` (what the PV controller would write next; the API server never lets it be
  unset, so it is written last). The PV controller, where one runs, completes the binding
  (``bind-completed``, phases);
* otherwise the claim is provisioned: it gets ``volume.kubernetes.io/selected-node`` (the node the
  provisioner must create the volume for) and the step waits for the claim to be bound. Waiting
  does not hold a worker: the attempt is left for later (it returns :class:`kai_binder.hookspecs.NotReady`),
  nothing rolled back and no attempt counted, and is tried again with the binder's growing delay,
  for at most :data:`BIND_TIMEOUT_SECONDS` (kube-scheduler's default ``bindTimeoutSeconds``);
  past that, or when the provisioner gave up (it removes the annotation), the attempt fails.

Every volume the pod gets must admit the node by its ``nodeAffinity``. A failure names the claim
(``PersistentVolumeClaim "ns/name": ...``). Rollback undoes what it finds for the pod's claims on
this node: a ``claimRef`` this step wrote on a PV whose claim is not bound to it yet, and the
selected-node annotation of a claim not bound yet. A claim whose ``volumeName`` is set is left as
it is: the API cannot unbind it, and the scheduler places the pod again by that volume. When the
pod is gone (a stub), only the PVs named by the BindRequest are released.
"""

from __future__ import annotations

import time

from kai_binder.hookspecs import NotReady
from kai_core.api.errors import ApiError, NotFound
from kai_core.api.resources import RES_NODES, RES_PVCS, RES_PVS
from kai_core.api.volumes import (
    ANN_BOUND_BY_CONTROLLER,
    ANN_SELECTED_NODE,
    claim_names,
    claim_ref_names,
    node_affinity_admits,
    static_bindings,
)
from kai_core.framework.hookspecs import hookimpl

PLUGIN_NAME = "kai-binder.volumes"
#: how long a claim may take to be provisioned and bound before the attempt fails
BIND_TIMEOUT_SECONDS = 600.0


class VolumeBindError(Exception):
    """A claim of the pod cannot be bound for this attempt; the message names it."""


def _claim_ref(ns: str, name: str) -> str:
    return f'PersistentVolumeClaim "{ns}/{name}"'


class VolumeBindingPlugin:
    """Binds or provisions the pod's unbound claims before the bind; undoes that when it fails."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        #: (BindRequest uid, claim) -> when this process first saw the claim waiting
        self._waiting_since: dict[tuple[str, str], float] = {}

    # -- pre-bind ---------------------------------------------------------------------------

    @hookimpl
    def kai_binder_pre_bind(self, bind_request, pod, node_name, store):
        names = [name for name, _ephemeral in claim_names(pod)]
        if not names:
            return None
        ns = pod["metadata"]["namespace"]
        chosen = static_bindings(bind_request)
        labels = (store.get(RES_NODES, node_name).get("metadata") or {}).get("labels") or {}
        claims = {name: self._read_claim(store, ns, name) for name in names}
        to_name: list[tuple[dict, str]] = []
        waiting: list[str] = []
        for name, claim in claims.items():
            where = _claim_ref(ns, name)
            volume = (claim.get("spec") or {}).get("volumeName")
            if volume:
                self._check_volume(store, where, volume, node_name, labels)
            elif name in chosen:
                self._claim_volume(store, where, claim, chosen[name], node_name, labels)
                to_name.append((claim, chosen[name]))
            else:
                self._select_node(store, where, claim, node_name, bind_request)
                waiting.append(name)
        if waiting:
            return self._wait(bind_request, ns, waiting, node_name)
        for claim, volume in to_name:
            claim.setdefault("spec", {})["volumeName"] = volume
            self._write(store, _claim_ref(ns, claim["metadata"]["name"]), claim, f"setting spec.volumeName {volume}")
        return None

    def _read_claim(self, store, ns: str, name: str) -> dict:
        try:
            return store.get(RES_PVCS, name, ns, fresh=True)
        except NotFound:
            raise VolumeBindError(f"{_claim_ref(ns, name)} not found") from None

    def _check_volume(self, store, where: str, volume: str, node: str, labels: dict) -> None:
        """The claim's volume must exist and admit the node."""
        try:
            pv = store.get(RES_PVS, volume)
        except NotFound:
            raise VolumeBindError(f'{where}: bound to PersistentVolume "{volume}", which does not exist') from None
        if not node_affinity_admits(pv, labels):
            raise VolumeBindError(f'{where}: PersistentVolume "{volume}" node affinity doesn\'t match node "{node}"')

    def _claim_volume(self, store, where: str, claim: dict, volume: str, node: str, labels: dict) -> None:
        try:
            pv = store.get(RES_PVS, volume, fresh=True)
        except NotFound:
            raise VolumeBindError(f'{where}: PersistentVolume "{volume}" chosen for it does not exist') from None
        ref = (pv.get("spec") or {}).get("claimRef")
        if ref and not claim_ref_names(pv, claim):
            raise VolumeBindError(f'{where}: PersistentVolume "{volume}" chosen for it is taken by claim '
                                  f'"{ref.get("namespace")}/{ref.get("name")}"')
        if not node_affinity_admits(pv, labels):
            raise VolumeBindError(f'{where}: PersistentVolume "{volume}" node affinity doesn\'t match node "{node}"')
        if ref:
            return  # it names the claim already: an earlier attempt's write, or pre-bound by its user
        md = claim["metadata"]
        pv.setdefault("spec", {})["claimRef"] = {
            "kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": md["namespace"], "name": md["name"],
            "uid": md.get("uid", ""), "resourceVersion": md.get("resourceVersion", "")}
        pv["metadata"]["annotations"] = {**(pv["metadata"].get("annotations") or {}), ANN_BOUND_BY_CONTROLLER: "yes"}
        self._write(store, where, pv, f'binding PersistentVolume "{volume}" to it')

    def _select_node(self, store, where: str, claim: dict, node: str, bind_request: dict) -> None:
        annotations = claim["metadata"].get("annotations") or {}
        selected = annotations.get(ANN_SELECTED_NODE)
        key = (bind_request["metadata"].get("uid", ""), claim["metadata"]["name"])
        if selected == node:
            return
        if selected:
            raise VolumeBindError(f"{where}: selected for provisioning on node {selected!r}, not {node!r}")
        if key in self._waiting_since:  # this process set it: the provisioner took it away
            raise VolumeBindError(f"{where}: provisioning failed (the provisioner removed {ANN_SELECTED_NODE})")
        claim["metadata"]["annotations"] = {**annotations, ANN_SELECTED_NODE: node}
        self._write(store, where, claim, f"setting {ANN_SELECTED_NODE}")

    def _wait(self, bind_request: dict, ns: str, waiting: list[str], node: str) -> NotReady:
        uid = bind_request["metadata"].get("uid", "")
        now = self.clock()
        first = min(self._waiting_since.setdefault((uid, name), now) for name in waiting)
        names = ", ".join(_claim_ref(ns, n) for n in waiting)
        if now - first > BIND_TIMEOUT_SECONDS:
            for name in waiting:
                self._waiting_since.pop((uid, name), None)
            raise VolumeBindError(f"{names}: not bound {BIND_TIMEOUT_SECONDS:.0f}s after it was given node {node!r} "
                                  "to provision on")
        return NotReady(f"waiting for {names} to be provisioned and bound (node {node!r})")

    def _write(self, store, where: str, obj: dict, what: str) -> None:
        try:
            store.update(obj)
        except ApiError as exc:
            raise VolumeBindError(f"{where}: {what}: {exc}") from exc

    # -- after a bind, a check on volumes provisioned meanwhile -------------------------------

    @hookimpl
    def kai_binder_post_bind(self, bind_request):
        uid = bind_request["metadata"].get("uid", "")
        for key in [k for k in self._waiting_since if k[0] == uid]:
            del self._waiting_since[key]

    # -- rollback ---------------------------------------------------------------------------

    @hookimpl
    def kai_binder_rollback(self, bind_request, pod, node_name, store):
        uid = bind_request["metadata"].get("uid", "")
        for key in [k for k in self._waiting_since if k[0] == uid]:
            del self._waiting_since[key]
        md = pod["metadata"]
        ns = md.get("namespace") or "default"
        chosen = static_bindings(bind_request)
        names = [n for n, _e in claim_names(pod)] if "spec" in pod else list(chosen)
        for name in names:
            try:
                claim = store.get(RES_PVCS, name, ns, fresh=True)
            except NotFound:
                claim = None
            if claim is not None and (claim.get("spec") or {}).get("volumeName"):
                continue  # bound: the API cannot take that back
            if name in chosen:
                self._release_volume(store, chosen[name], ns, name)
            annotations = (claim or {}).get("metadata", {}).get("annotations") or {}
            if claim is not None and annotations.get(ANN_SELECTED_NODE) == node_name:
                claim["metadata"]["annotations"] = {k: v for k, v in annotations.items() if k != ANN_SELECTED_NODE}
                store.update(claim)

    def _release_volume(self, store, volume: str, ns: str, name: str) -> None:
        try:
            pv = store.get(RES_PVS, volume, fresh=True)
        except NotFound:
            return
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        annotations = pv["metadata"].get("annotations") or {}
        if ref.get("namespace") != ns or ref.get("name") != name or ANN_BOUND_BY_CONTROLLER not in annotations:
            return  # not bound by us (another claim's, or pre-bound by its user)
        del pv["spec"]["claimRef"]
        pv["metadata"]["annotations"] = {k: v for k, v in annotations.items() if k != ANN_BOUND_BY_CONTROLLER}
        store.update(pv)

