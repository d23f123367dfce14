"""Score: pack pods onto the nodes already most used (cpu, memory and GPUs), keeping whole nodes
free for large jobs, as KAI's default ``binpack`` placement strategy does."""

from __future__ import annotations

from kai_core.hookspecs import hookimpl
from kai_core.resources import GPU_RESOURCE, pod_requests

_RESOURCES = ("cpu", "memory", GPU_RESOURCE)


@hookimpl
def kai_score_nodes(pod, nodes):
    req = pod_requests(pod)
    scores = {}
    for n in nodes:
        fractions = []
        for r in _RESOURCES:
            cap = n.allocatable.get(r, 0)
            if cap > 0:
                fractions.append(min(1.0, (n.requested.get(r, 0) + req.get(r, 0)) / cap))
        scores[n.name] = 100.0 * sum(fractions) / len(fractions) if fractions else 0.0
    return scores
