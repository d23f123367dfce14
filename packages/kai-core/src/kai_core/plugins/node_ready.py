"""Filter: nodes that are not Ready, or cordoned (``spec.unschedulable``), take no new pods; nor do
nodes whose object cannot be read (a field of the wrong type, e.g. ``spec.taints`` a string): the
reason names the node and the field, and every other node stays usable.

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
    status = node.get("status")
    for cond in (status.get("conditions") if isinstance(status, dict) else None) or []:
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            return cond.get("status")
    return None


@hookimpl(tryfirst=True)
def kai_filter_nodes(pod, nodes):
    spec = pod.get("spec")
    tolerations = (spec.get("tolerations") if isinstance(spec, dict) else None) or []
    out = {}
    for n in nodes:
        problem = getattr(n, "problem", None)
        if problem:
            out[n.name] = f"node {n.name} is invalid: {problem}"
            continue
        if n.ready is False:
            taint = UNREACHABLE_TAINT if _ready_status(n.obj) == "Unknown" else NOT_READY_TAINT
            if not tolerates(tolerations, taint):
                out[n.name] = REASON_NOT_READY
                continue
        if n.unschedulable and not tolerates(tolerations, UNSCHEDULABLE_TAINT):
            out[n.name] = REASON_UNSCHEDULABLE
    return out
