"""Filter: nodes that are not Ready, or cordoned (``spec.unschedulable``), take no new pods."""

from __future__ import annotations

from kai_core.builtins.taints import tolerates
from kai_core.hookspecs import hookimpl

_UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}


@hookimpl
def kai_filter_nodes(pod, nodes):
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    out = {}
    for n in nodes:
        if n.ready is False:
            out[n.name] = "node(s) were not ready"
        elif n.unschedulable and not tolerates(tolerations, _UNSCHEDULABLE_TAINT):
            out[n.name] = "node(s) were unschedulable"
    return out
