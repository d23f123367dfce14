"""Score: pack pods onto the nodes already most used, keeping whole nodes free for large jobs, as
KAI's default ``binpack`` placement strategy does.

A node's score is its average fill, after placing the pod, over cpu, memory and ``nvidia.com/gpu``
(each resource the node has), scaled to 0..100. A node without GPUs is judged on cpu and memory
only, so a cpu-only pod prefers a full cpu node over an idle GPU node.
"""

from __future__ import annotations

from kai_core.api.resources import GPU_RESOURCE
from kai_core.framework.hookspecs import hookimpl

RESOURCES = ("cpu", "memory", GPU_RESOURCE)
#: a node's score depends only on the pod and on that node (see kai_core.scheduler.equivalence)
KAI_NODE_LOCAL = True


@hookimpl
def kai_score_nodes(pod, nodes, snapshot):
    req = snapshot.requests_of(pod)
    wanted = [(r, req.get(r, 0)) for r in RESOURCES]
    scores = {}
    for n in nodes:
        alloc = n.allocatable
        used = n.requested
        total = 0.0
        count = 0
        for r, amount in wanted:
            cap = alloc.get(r, 0)
            if cap > 0:
                fill = (used.get(r, 0) + amount) / cap
                total += fill if fill < 1.0 else 1.0
                count += 1
        scores[n.name] = 100.0 * total / count if count else 0.0
    return scores
