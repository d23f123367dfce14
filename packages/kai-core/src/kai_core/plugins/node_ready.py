"""Filter: nodes that are not Ready, or cordoned (``spec.unschedulable``), take no new pods.

A real control plane expresses both as taints (``node.kubernetes.io/not-ready``,
``node.kubernetes.io/unreachable``, ``node.kubernetes.io/unschedulable``, all ``NoSchedule``),
so a pod tolerating the matching taint may still go there, as DaemonSet pods do. A node without a
Ready condition (a hand-written manifest) counts as ready.
"""

from __future__ import annotations

from kai_core.framework.hookspecs import hookimpl
from kai_core.plugins.taints import tolerates

UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
NOT_READY_TAINT = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}
UNREACHABLE_TAINT = {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}

REASON_NOT_READY = "node(s) were not ready"
REASON_UNSCHEDULABLE = "node(s) were unschedulable"


def _ready_status(node: dict) -> str | None:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status")
    return None


@hookimpl(tryfirst=True)
def kai_filter_nodes(pod, nodes):
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    out = {}
    for n in nodes:
        if n.ready is False:
            taint = UNREACHABLE_TAINT if _ready_status(n.obj) == "Unknown" else NOT_READY_TAINT
            if not tolerates(tolerations, taint):
                out[n.name] = REASON_NOT_READY
                continue
        if n.unschedulable and not tolerates(tolerations, UNSCHEDULABLE_TAINT):
            out[n.name] = REASON_UNSCHEDULABLE
    return out
