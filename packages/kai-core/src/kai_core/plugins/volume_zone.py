"""Filter (kube-scheduler's VolumeZone): a pod's bound volumes must be in the node's zone and region.

A PersistentVolume labelled with a zone or region (``topology.kubernetes.io/zone`` and ``/region``,
or their deprecated ``failure-domain.beta.kubernetes.io`` forms; several zones as ``a__b``) admits
only nodes carrying the same label with one of those values; a beta label on the volume is also
matched against the node's GA label. A node with none of these labels admits every volume, as in
kube-scheduler. Claims not bound yet (no ``spec.volumeName``) are VolumeBinding's business, and so
are missing claims and volumes.
"""

from __future__ import annotations

from kai_core.api.resources import RES_PVCS, RES_PVS
from kai_core.api.volumes import claim_names
from kai_core.framework.hookspecs import hookimpl

#: the built-in kinds this plugin reads (watched only while it is registered)
KAI_WATCHES = (RES_PVS, RES_PVCS)

REASON = "node(s) had no available volume zone"

ZONE, REGION = "topology.kubernetes.io/zone", "topology.kubernetes.io/region"
BETA_ZONE, BETA_REGION = "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region"
TOPOLOGY_LABELS = (BETA_ZONE, BETA_REGION, ZONE, REGION)
_GA = {BETA_ZONE: ZONE, BETA_REGION: REGION}


def volume_topology(pod: dict, snapshot) -> list[tuple[str, set[str]]]:
    """``(label, allowed values)`` of the zone and region labels of the pod's bound volumes."""
    ns = pod["metadata"].get("namespace", "")
    pvcs, pvs = snapshot.objects(RES_PVCS), snapshot.objects(RES_PVS)
    out = []
    for name, _ephemeral in claim_names(pod):
        volume = ((pvcs.get((ns, name)) or {}).get("spec") or {}).get("volumeName")
        pv = pvs.get(("", volume)) if volume else None
        labels = (pv or {}).get("metadata", {}).get("labels") or {}
        out += [(key, set(str(labels[key]).split("__"))) for key in TOPOLOGY_LABELS if key in labels]
    return out


def admits(node_labels: dict, topology: list[tuple[str, set[str]]]) -> bool:
    if not any(key in node_labels for key in TOPOLOGY_LABELS):
        return True
    for key, values in topology:
        value = node_labels.get(key, node_labels.get(_GA.get(key, key)))
        if value is None or value not in values:
            return False
    return True


@hookimpl(tryfirst=True)
def kai_filter_nodes(pod, nodes, snapshot):
    if not claim_names(pod) or not snapshot.watches(RES_PVCS):
        return None
    topology = volume_topology(pod, snapshot)
    if not topology:
        return None
    return {n.name: REASON for n in nodes if not admits(n.labels, topology)}
