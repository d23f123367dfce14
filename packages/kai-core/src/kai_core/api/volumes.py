"""PersistentVolumes, their claims and StorageClasses as the scheduler and the binder read them:
the annotations the volume binding protocol uses, a pod's claims, which class a claim or volume is
of, whether a claim is bound, and whether a volume or a class admits a node.
"""

from __future__ import annotations

import json

from kai_core.api.nodeaffinity import NodeSelectorError, match_node_selector

ANN_SELECTED_NODE = "volume.kubernetes.io/selected-node"
ANN_BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
ANN_BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
ANN_BETA_CLASS = "volume.beta.kubernetes.io/storage-class"
#: BindRequest annotation: the static PV chosen for each unbound claim of the pod (JSON object)
ANN_STATIC_BINDINGS = "volume-binding.kai.scheduler/static-bindings"
NO_PROVISIONER = "kubernetes.io/no-provisioner"
WAIT_FOR_FIRST_CONSUMER = "WaitForFirstConsumer"


def claim_names(pod: dict) -> list[tuple[str, bool]]:
    """``(claim name, is generic ephemeral)`` of each of the pod's volumes backed by a claim."""
    spec = pod.get("spec")
    volumes = spec.get("volumes") if isinstance(spec, dict) else None
    if not volumes:
        return []
    out = []
    for vol in volumes:
        if not isinstance(vol, dict):
            continue
        pvc = vol.get("persistentVolumeClaim")
        if isinstance(pvc, dict) and pvc.get("claimName"):
            out.append((pvc["claimName"], False))
        elif vol.get("ephemeral") is not None and vol.get("name"):
            out.append((f'{pod["metadata"].get("name", "")}-{vol["name"]}', True))
    return out


def claim_class(claim: dict) -> str:
    """The claim's StorageClass name ("" for none), the beta annotation first as the API does."""
    ann = (claim.get("metadata") or {}).get("annotations") or {}
    if ANN_BETA_CLASS in ann:
        return ann[ANN_BETA_CLASS] or ""
    return (claim.get("spec") or {}).get("storageClassName") or ""


def volume_class(pv: dict) -> str:
    ann = (pv.get("metadata") or {}).get("annotations") or {}
    if ANN_BETA_CLASS in ann:
        return ann[ANN_BETA_CLASS] or ""
    return (pv.get("spec") or {}).get("storageClassName") or ""


def claim_ref_names(pv: dict, claim: dict) -> bool:
    """Whether the PV's ``claimRef`` points at this claim (by namespace and name; by uid when set)."""
    ref = (pv.get("spec") or {}).get("claimRef")
    if not isinstance(ref, dict):
        return False
    md = claim["metadata"]
    return (ref.get("name") == md.get("name") and ref.get("namespace") == md.get("namespace")
            and (not ref.get("uid") or ref.get("uid") == md.get("uid")))


def is_bound(claim: dict, pvs: dict) -> bool:
    name = (claim.get("spec") or {}).get("volumeName")
    if not name:
        return False
    if ANN_BIND_COMPLETED in ((claim.get("metadata") or {}).get("annotations") or {}):
        return True
    pv = pvs.get(("", name))
    return pv is not None and claim_ref_names(pv, claim)


def node_affinity_admits(pv: dict, labels: dict) -> bool:
    """A PV's required node affinity against a node's labels (kube matches labels only)."""
    affinity = (pv.get("spec") or {}).get("nodeAffinity")
    required = affinity.get("required") if isinstance(affinity, dict) else None
    if required is None:
        return True
    try:
        return match_node_selector(required, {"metadata": {"labels": labels}})
    except NodeSelectorError:
        return False


def topology_admits(storage_class: dict, labels: dict) -> bool:
    """A StorageClass's ``allowedTopologies`` (terms ORed, expressions ANDed) against node labels."""
    terms = storage_class.get("allowedTopologies")
    if not terms:
        return True
    return any(all(labels.get(e.get("key")) in (e.get("values") or []) for e in term.get("matchLabelExpressions") or [])
               for term in terms if isinstance(term, dict))


def static_bindings(br: dict) -> dict[str, str]:
    """The ``{claim: pv}`` a BindRequest carries (empty when absent or malformed)."""
    raw = ((br.get("metadata") or {}).get("annotations") or {}).get(ANN_STATIC_BINDINGS)
    try:
        got = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return {k: v for k, v in got.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(got, dict) else {}


def static_bindings_annotation(bindings: dict[str, str]) -> dict[str, str]:
    """The BindRequest annotation naming the static PV chosen for each claim."""
    return {ANN_STATIC_BINDINGS: json.dumps(bindings, sort_keys=True, separators=(",", ":"))}
