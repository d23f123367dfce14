"""Filter (kube-scheduler's NodeName): a pod that names its node in ``spec.nodeName`` fits only there.

A pod created with ``spec.nodeName`` is bound already: kai never schedules it, and it counts on its
node like any bound pod (resources, host ports, inter-pod affinity, topology spread). The filter
matters for pods decided with a node name set, as kube-scheduler's does.
"""

from __future__ import annotations

from kai_core.framework.hookspecs import hookimpl

REASON = "node(s) didn't match the requested node name"


@hookimpl(tryfirst=True)
def kai_filter_nodes(pod, nodes):
    spec = pod.get("spec")
    wanted = spec.get("nodeName") if isinstance(spec, dict) else None
    if not wanted:
        return None
    return {n.name: REASON for n in nodes if n.name != wanted}
