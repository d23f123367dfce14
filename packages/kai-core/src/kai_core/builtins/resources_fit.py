"""Filter: the pod's requests (cpu, memory, extended resources such as GPUs, one pod slot) fit in
what the node has left, counting bound pods and pods whose BindRequest is in flight."""

from __future__ import annotations

from kai_core.hookspecs import hookimpl
from kai_core.resources import pod_requests


@hookimpl
def kai_filter_nodes(pod, nodes):
    req = pod_requests(pod)
    out = {}
    for n in nodes:
        max_pods = n.allocatable.get("pods")
        if max_pods is not None and n.pod_count + 1 > max_pods // 1000:
            out[n.name] = "Too many pods"
            continue
        for name, amount in req.items():
            if amount > n.allocatable.get(name, 0) - n.requested.get(name, 0):
                out[n.name] = f"Insufficient {name}"
                break
    return out
