"""What ``kai-cli get queues`` adds to the Queue objects: each queue's fair share right now, computed
as the scheduler computes it at the start of a cycle (:mod:`kai_core.framework.queue_order`)."""

from __future__ import annotations

from fractions import Fraction

from kai_core.api.features import DRA, FeatureGates
from kai_core.api.quantity import format_quantity
from kai_core.framework.cache import Cache
from kai_core.framework.queue_order import snapshot_standing
from kai_core.framework.snapshot import Snapshot
from kai_core.scheduler.cycle import DEFAULT_SCHEDULER_NAME, default_resources


def fair_share_columns(cluster, scheduler_name: str = DEFAULT_SCHEDULER_NAME) -> dict[str, dict[str, str]]:
    """``{queue: {column: value}}``: GPU fair share (devices), CPU (cores) and memory fair shares."""
    cache = Cache(cluster.store, default_resources(cluster.store, cluster.pm, dra=True))
    cache.sync()
    # the DRA kinds are read (as a scheduler with DRA on reads them): a pending pod's claims count in
    # its queue's demand as in its GPU-REQUESTED column
    snapshot = Snapshot(cache, scheduler_name, FeatureGates.parse(f"{DRA}=true"))
    _tree, _usage, shares = snapshot_standing(snapshot, cluster.pm.device_gpu_worth)
    out = {}
    for name, share in shares.items():
        gpu, cpu, memory = share.get("gpu", 0.0), share.get("cpu", 0.0), share.get("memory", 0.0)
        out[name] = {"GPU-FAIR-SHARE": f"{gpu:g}", "CPU-FAIR-SHARE": f"{cpu / 1000:g}",
                     "MEMORY-FAIR-SHARE": format_quantity(Fraction(round(memory)), binary=True)}
    return out
