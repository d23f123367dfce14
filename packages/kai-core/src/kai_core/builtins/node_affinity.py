"""Filter: the pod's ``nodeSelector`` and required node affinity."""

from __future__ import annotations

from kai_core.hookspecs import hookimpl
from kai_core.nodeaffinity import match_node_selector

REASON = "node(s) didn't match Pod's node affinity/selector"


@hookimpl
def kai_filter_nodes(pod, nodes):
    spec = pod.get("spec") or {}
    selector = spec.get("nodeSelector") or {}
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if not selector and not required:
        return None
    out = {}
    for n in nodes:
        if any(n.labels.get(k) != v for k, v in selector.items()):
            out[n.name] = REASON
        elif required and not match_node_selector(required, n.obj):
            out[n.name] = REASON
    return out
