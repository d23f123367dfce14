"""Running the embedded cluster: controllers, scheduler and binder in rounds, in one process."""

from __future__ import annotations

import time
from dataclasses import dataclass

from kai_core.resources import RES_PODS


@dataclass
class RunSummary:
    bound: int
    pending: int
    unschedulable: int
    seconds: float
    rounds: int

    @property
    def pods_per_second(self) -> float:
        return self.bound / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"pods bound: {self.bound}, pending: {self.pending}, unschedulable: {self.unschedulable}, "
            f"{self.seconds:.3f}s, {self.pods_per_second:.1f} pods/s ({self.rounds} rounds)"
        )


def count_pods(store, scheduler_name: str) -> tuple[int, int, int]:
    """(bound, pending, unschedulable) among the pods of ``scheduler_name``."""
    bound = pending = unschedulable = 0
    pods, _ = store.list_refs(RES_PODS)
    for p in pods:
        if p["spec"].get("schedulerName") != scheduler_name:
            continue
        if p["spec"].get("nodeName"):
            bound += 1
            continue
        if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        pending += 1
        for c in (p.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable":
                unschedulable += 1
    return bound, pending, unschedulable


def run_embedded(cluster, scheduler, binder=None, until_idle: bool = False, period: float = 1.0,
                 max_rounds: int | None = None, on_round=None) -> RunSummary:
    """Run rounds of controllers -> scheduler -> binder.

    With ``until_idle`` it stops after the first full round that writes nothing to the store; no
    backoff wait keeps it running. Otherwise it runs every ``period`` seconds until interrupted
    (or ``max_rounds``).
    """
    store = cluster.store
    start = time.perf_counter()
    rounds = 0
    try:
        while max_rounds is None or rounds < max_rounds:
            before = store.resource_version
            cluster.reconcile_controllers()
            scheduler.run_cycle()
            if binder is not None:
                binder.run_once()
            rounds += 1
            if on_round is not None:
                on_round(rounds)
            if until_idle and store.resource_version == before:
                break
            if not until_idle:
                time.sleep(period)
    except KeyboardInterrupt:
        pass
    seconds = time.perf_counter() - start
    bound, pending, unschedulable = count_pods(store, scheduler.config.scheduler_name)
    return RunSummary(bound, pending, unschedulable, seconds, rounds)
