"""Filter (kube-scheduler's VolumeBinding): a pod's PersistentVolumeClaims must be usable on the node.

A pod's claims are its ``persistentVolumeClaim`` volumes and its generic ephemeral volumes (the
claim ``<pod>-<volume>``, which must be owned by the pod). Before any node is looked at (as
kube-scheduler's PreFilter), a pod is unschedulable whatever the nodes when a claim is missing,
lost or being deleted, or when a claim is unbound and not ``WaitForFirstConsumer`` (it waits for
the PV controller): each with kube-scheduler's message.

Per node, as kube-scheduler's binder (``FindPodVolumes``):

* a bound claim's PersistentVolume must admit the node by its ``nodeAffinity`` (node labels);
* an unbound ``WaitForFirstConsumer`` claim needs, on that node, either an available static PV it
  can bind (same class, phase Available or pre-bound to the claim, enough capacity, the claim's
  access modes, volume mode and selector, node affinity; the smallest such PV wins, claims taken
  from the smallest request up, one PV per claim) or a class whose provisioner can provision
  there (a provisioner other than ``kubernetes.io/no-provisioner`` and the node inside the class's
  ``allowedTopologies``). A claim already given a node (the ``volume.kubernetes.io/selected-node``
  annotation) fits only that node.

A claim counts as bound once ``spec.volumeName`` is set and either the PV controller marked it
``pv.kubernetes.io/bind-completed`` or its PV's ``claimRef`` names it (both sides written, as kai's
binder leaves them; kube-scheduler waits for the controller's annotation alone).

The static PV chosen for each claim travels to the binder in the BindRequest's annotation
:data:`kai_core.api.volumes.ANN_STATIC_BINDINGS` (``{"<claim>": "<pv>"}``); a PV named there by a
BindRequest not yet finished, or chosen for a pod placed earlier in this cycle (a gang member
being tried included), is not offered to another claim. Not done: storage capacity
(CSIStorageCapacity), the capacity score, CSI migration, NodeVolumeLimits' checks.

Pods are read only through their ``spec.volumes``: a pod without claims costs a look at that list.
With PersistentVolumeClaims not watched (a cluster that does not serve them to kai), nothing is
checked.
"""

from __future__ import annotations

import weakref

from kai_core.api.quantity import QuantityError, parse_quantity
from kai_core.api.resources import RES_BIND_REQUESTS, RES_PVCS, RES_PVS, RES_STORAGE_CLASSES
from kai_core.api.volumes import (
    ANN_SELECTED_NODE,
    NO_PROVISIONER,
    WAIT_FOR_FIRST_CONSUMER,
    claim_class,
    claim_names,
    claim_ref_names,
    is_bound,
    node_affinity_admits,
    static_bindings,
    static_bindings_annotation,
    topology_admits,
    volume_class,
)
from kai_core.framework.hookspecs import hookimpl
from kai_core.plugins.label_selectors import NOTHING, SelectorError, compile_selector

#: the built-in kinds this plugin reads; the scheduler watches them only while it is registered
KAI_WATCHES = (RES_PVS, RES_PVCS, RES_STORAGE_CLASSES)

REASON_NODE_CONFLICT = "node(s) had volume node affinity conflict"
REASON_BIND_CONFLICT = "node(s) didn't find available persistent volumes to bind"
REASON_PV_MISSING = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"

def _storage(amounts) -> object:
    try:
        return parse_quantity((amounts or {}).get("storage", 0))
    except (QuantityError, AttributeError):
        return 0


def _requested(claim: dict) -> object:
    return _storage(((claim.get("spec") or {}).get("resources") or {}).get("requests"))


class PodClaims:
    """A pod's claims read from the snapshot: the problem that makes it unschedulable everywhere
    (or None), its bound claims and its unbound ``WaitForFirstConsumer`` claims."""

    def __init__(self, pod: dict, snapshot) -> None:
        self.problem: str | None = None
        self.bound: list[dict] = []
        self.delayed: list[dict] = []
        ns = pod["metadata"].get("namespace", "")
        pvcs, pvs = snapshot.objects(RES_PVCS), snapshot.objects(RES_PVS)
        classes = snapshot.objects(RES_STORAGE_CLASSES)
        immediate = False
        for name, ephemeral in claim_names(pod):
            claim = pvcs.get((ns, name))
            if claim is None:
                self.problem = (f'waiting for ephemeral volume controller to create the persistentvolumeclaim "{name}"'
                                if ephemeral else f'persistentvolumeclaim "{name}" not found')
                return
            spec, md = claim.get("spec") or {}, claim["metadata"]
            if (claim.get("status") or {}).get("phase") == "Lost":
                self.problem = (f'persistentvolumeclaim "{name}" bound to non-existent persistentvolume '
                                f'"{spec.get("volumeName", "")}"')
                return
            if md.get("deletionTimestamp"):
                self.problem = f'persistentvolumeclaim "{name}" is being deleted'
                return
            if ephemeral and not any(o.get("uid") == pod["metadata"].get("uid") and o.get("controller")
                                     for o in md.get("ownerReferences") or [] if isinstance(o, dict)):
                self.problem = (f"PVC {ns}/{name} was not created for pod {ns}/{pod['metadata'].get('name')} "
                                "(pod is not owner)")
                return
            if is_bound(claim, pvs):
                self.bound.append(claim)
                continue
            sc = classes.get(("", claim_class(claim)))
            if not spec.get("volumeName") and sc is not None and sc.get("volumeBindingMode") == WAIT_FOR_FIRST_CONSUMER:
                self.delayed.append(claim)
            else:
                immediate = True
        if immediate:
            self.problem = UNBOUND_IMMEDIATE


class _Promised:
    """PV name -> (namespace, claim) for the PVs promised to a claim: by a BindRequest not finished
    yet, or by a pod placed in this cycle (a committed pod, or a gang member assumed while its gang
    is tried; given back when it is unassumed), kept current from :attr:`Snapshot.pod_changes`."""

    def __init__(self, snapshot) -> None:
        self.snapshot = weakref.ref(snapshot)
        self.taken: dict[str, tuple[str, str]] = {}
        for (ns, _name), br in snapshot.objects(RES_BIND_REQUESTS).items():
            if (br.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                self.taken.update((pv, (ns, claim)) for claim, pv in static_bindings(br).items())
        #: pod uid -> (namespace, {claim: pv}) of the pods placed in this cycle
        self.placed: dict[str, tuple[str, dict[str, str]]] = {}
        self.read = 0

    def sync(self, snapshot) -> dict[str, tuple[str, str]]:
        changes = snapshot.pod_changes
        for sign, pod, node in changes[self.read:]:
            uid = pod["metadata"].get("uid") or ""
            if sign < 0:
                self.give_back(uid)
            elif uid not in self.placed:
                got = _CHOICES.get(uid)
                picked = got[1].get(node) if got is not None and got[0]() is snapshot else None
                if picked:
                    self.promise(uid, pod["metadata"].get("namespace", ""), picked)
        self.read = len(changes)
        return self.taken

    def promise(self, uid: str, ns: str, picked: dict[str, str]) -> None:
        self.placed[uid] = (ns, picked)
        self.taken.update((pv, (ns, claim)) for claim, pv in picked.items())

    def give_back(self, uid: str) -> None:
        ns, picked = self.placed.pop(uid, ("", {}))
        for claim, pv in picked.items():
            if self.taken.get(pv) == (ns, claim):
                del self.taken[pv]


def _promised(snapshot) -> _Promised:
    state = _STATE.get(snapshot)
    if state is None:
        state = _STATE[snapshot] = _Promised(snapshot)
    return state


_STATE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: pod uid -> (its snapshot, weakly; node -> {claim: pv}) of the pod's last filter pass, read by
#: kai_bind_request (which is not given the snapshot)
_CHOICES: dict[str, tuple[weakref.ref, dict[str, dict[str, str]]]] = {}
_CHOICES_KEPT = 4096


def _candidates(claim: dict, snapshot, taken: dict) -> list[dict]:
    """The PVs that could be bound to ``claim`` on some node (everything but node affinity),
    smallest first; a PV pre-bound to the claim comes alone."""
    spec, md = claim.get("spec") or {}, claim["metadata"]
    want = _requested(claim)
    cls = claim_class(claim)
    modes = set(spec.get("accessModes") or [])
    mode = spec.get("volumeMode") or "Filesystem"
    try:
        selector = compile_selector(spec["selector"]) if spec.get("selector") is not None else None
    except SelectorError:  # the API server refuses such a claim; it matches no PV here
        selector = NOTHING
    me = (md.get("namespace", ""), md.get("name"))
    out = []
    for pv in snapshot.objects(RES_PVS).values():
        pspec = pv.get("spec") or {}
        if pspec.get("claimRef") and not claim_ref_names(pv, claim):
            continue
        if taken.get(pv["metadata"]["name"], me) != me or pv["metadata"].get("deletionTimestamp"):
            continue
        size = _storage(pspec.get("capacity"))
        if size < want or (pspec.get("volumeMode") or "Filesystem") != mode:
            continue
        if pspec.get("claimRef"):
            return [pv]
        if ((pv.get("status") or {}).get("phase") != "Available" or volume_class(pv) != cls
                or not modes <= set(pspec.get("accessModes") or [])
                or (selector is not None and not selector.matches(pv["metadata"].get("labels") or {}))):
            continue
        out.append((size, pv["metadata"]["name"], pv))
    out.sort(key=lambda t: (t[0], t[1]))
    return [pv for _s, _n, pv in out]


def _place_claims(claims: PodClaims, snapshot, nodes) -> tuple[dict[str, object], dict[str, dict[str, str]]]:
    """``({node: reason}, {node: {claim: pv}})`` for the pod's claims on ``nodes``."""
    reasons: dict[str, object] = {}
    chosen: dict[str, dict[str, str]] = {}
    pvs, classes = snapshot.objects(RES_PVS), snapshot.objects(RES_STORAGE_CLASSES)
    bound_pvs = [pvs.get(("", c["spec"]["volumeName"])) for c in claims.bound]
    delayed = sorted(claims.delayed, key=_requested)
    taken = _promised(snapshot).sync(snapshot) if delayed else {}
    candidates = {id(c): _candidates(c, snapshot, taken) for c in delayed
                  if ANN_SELECTED_NODE not in (c["metadata"].get("annotations") or {})}
    for node in nodes:
        labels = node.labels
        why = []
        if None in bound_pvs:
            why.append(REASON_PV_MISSING)
        elif not all(node_affinity_admits(pv, labels) for pv in bound_pvs):
            why.append(REASON_NODE_CONFLICT)
        picked: dict[str, str] = {}
        fits = True
        for claim in delayed:
            selected = (claim["metadata"].get("annotations") or {}).get(ANN_SELECTED_NODE)
            if selected is not None and selected != node.name:
                fits = False
                break
            pv = next((p for p in candidates.get(id(claim), ())
                       if p["metadata"]["name"] not in picked.values() and node_affinity_admits(p, labels)), None)
            if pv is not None:
                picked[claim["metadata"]["name"]] = pv["metadata"]["name"]
                continue
            sc = classes.get(("", claim_class(claim))) or {}
            if sc.get("provisioner") in (None, "", NO_PROVISIONER) or not topology_admits(sc, labels):
                fits = False
                break
        if not fits:
            why.append(REASON_BIND_CONFLICT)
        if why:
            reasons[node.name] = why if len(why) > 1 else why[0]
        elif picked:
            chosen[node.name] = picked
    return reasons, chosen


def _watched(snapshot) -> bool:
    return snapshot.watches(RES_PVCS)


@hookimpl(tryfirst=True)
def kai_pre_filter(pod, snapshot):
    if not claim_names(pod) or not _watched(snapshot):
        return None
    return PodClaims(pod, snapshot).problem


@hookimpl(tryfirst=True)
def kai_filter_nodes(pod, nodes, snapshot):
    if not claim_names(pod) or not _watched(snapshot):
        return None
    claims = PodClaims(pod, snapshot)
    if claims.problem or not (claims.bound or claims.delayed):
        return None
    reasons, chosen = _place_claims(claims, snapshot, nodes)
    uid = pod["metadata"].get("uid") or ""
    if chosen:
        if len(_CHOICES) >= _CHOICES_KEPT:  # pods filtered but never committed, in cycles now over
            for key in [k for k, (ref, _c) in _CHOICES.items() if ref() is None]:
                del _CHOICES[key]
        _CHOICES[uid] = (weakref.ref(snapshot), chosen)
    else:
        _CHOICES.pop(uid, None)
    return reasons


@hookimpl
def kai_bind_request(pod, node):
    got = _CHOICES.pop(pod["metadata"].get("uid") or "", None)
    snapshot = got[0]() if got is not None else None
    picked = got[1].get(node.name) if got is not None else None
    if snapshot is None or not picked:
        return None
    _promised(snapshot).promise(pod["metadata"].get("uid") or "", pod["metadata"].get("namespace", ""), picked)
    return static_bindings_annotation(picked)
