"""Fair share: how much of each resource every queue is owed this cycle, as KAI's proportion plugin
divides it (``pkg/scheduler/plugins/proportion/resource_division`` at 72de64f).

The cluster's total of a resource is divided among the top-level queues; each queue's fair share is
then divided among its children, level by level down the tree. One level is divided in three steps:

1. **Deserved.** Every queue gets ``min(quota, requestable)`` first, where requestable is what its
   workloads ask for, capped by its limit. Quota ``-1`` means the whole amount of the level. Priority
   plays no part here, and the quotas of a level may add up to more than the level has: then nothing
   more is divided (the sum of the shares exceeds the total, as in KAI).
2. **Over quota.** What is left goes to queues of higher priority first. Within a priority, in rounds:
   each queue still short gets ``left * weight / (sum of the weights of the queues still short)``. A
   queue whose need fits its portion takes its need; a queue that needs more takes only the whole
   units of its portion (KAI hands out over-quota GPUs in whole devices) and the fraction is kept
   aside. Another round runs only when some queue needed less than its portion. Queues with weight 0
   get nothing over their quota.
3. **Leftovers.** The fractions kept aside, largest first (then the older queue, then the name), are
   given out one unit at a time while anything is left, priority by priority. Like KAI this step does
   not look at the request or the limit again, so a queue asking for fractional amounts can end a
   unit above its request here (never with whole-unit requests).

Amounts are plain floats in KAI's units: GPUs in devices, CPU in millicores, memory in bytes. Time-based
fairness (KAI's usage database with its ``kValue``) is not modelled: with no recorded usage, as in
KAI by default, it changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["UNLIMITED", "Claimant", "divide_level", "divide_tree"]

#: quota -1: the whole amount of the level; limit -1: no limit
UNLIMITED = -1.0


@dataclass
class Claimant:
    """One queue's terms for one resource at one level, and the fair share it is given."""

    name: str
    deserved: float = 0.0
    limit: float = 0.0
    weight: float = 0.0
    request: float = 0.0
    priority: int = 100
    #: sort key for ties among leftovers: older queues first (an RFC 3339 time sorts as text)
    created: str = ""
    fair_share: float = field(default=0.0, init=False)

    @property
    def requestable(self) -> float:
        return self.request if self.limit == UNLIMITED else min(self.limit, self.request)

    def need(self) -> float:
        return max(0.0, self.requestable - self.fair_share)

    def satisfied(self) -> bool:
        if self.request <= self.fair_share:
            return True
        return self.limit != UNLIMITED and self.limit <= self.fair_share


def divide_level(total: float, claimants: Sequence[Claimant]) -> float:
    """Set ``fair_share`` of every claimant of one level from ``total``; returns what is left undivided."""
    for c in claimants:
        c.fair_share = 0.0
    left = total
    for c in claimants:
        given = min(total if c.deserved == UNLIMITED else c.deserved, c.requestable)
        c.fair_share += given
        left -= given
    if left <= 0:
        return 0.0
    priorities = sorted({c.priority for c in claimants}, reverse=True)
    fractions: dict[int, dict[str, tuple[Claimant, float]]] = {}
    for p in priorities:
        left, fractions[p] = _divide_over_quota(left, [c for c in claimants if c.priority == p])
    for p in priorities:
        if left <= 0:
            break
        left = _give_leftovers(left, fractions[p].values())
    return left


def _divide_over_quota(left: float, queues: list[Claimant]) -> tuple[float, dict[str, tuple[Claimant, float]]]:
    """KAI's rounds within one priority; returns what is left and the fractions kept aside."""
    kept: dict[str, tuple[Claimant, float]] = {}
    while True:
        short = [q for q in queues if not q.satisfied()]
        weights = sum(q.weight for q in queues if q.need() > 0)
        if weights == 0:
            break
        portion_of_round = left
        another_round = False
        for q in short:
            if left == 0:
                break
            need = q.need()
            if q.weight == 0:
                continue
            portion = portion_of_round * q.weight / weights
            if need <= portion:
                given = need
                kept.pop(q.name, None)
            else:
                given = float(math.floor(portion))
                if portion - given > 0:
                    kept[q.name] = (q, portion - given)
            if given == 0:
                continue
            q.fair_share += given
            left -= given
            another_round = another_round or need < portion
        if not another_round or left == 0:
            break
    return left, kept


def _give_leftovers(left: float, kept: Iterable[tuple[Claimant, float]]) -> float:
    for q, _ in sorted(kept, key=lambda e: (-e[1], e[0].created, e[0].name)):
        if left == 0:
            break
        given = min(1.0, left)
        q.fair_share += given
        left -= given
    return left


def divide_tree(total: Mapping[str, float], children: Mapping[str, Sequence[str]],
                terms: Mapping[str, Mapping[str, Claimant]]) -> dict[str, dict[str, float]]:
    """Fair shares of a whole queue tree: ``{queue: {resource: share}}``.

    ``total`` is the cluster's amount of each resource, ``children`` maps each queue (and ``""``, the
    root) to its child queues, and ``terms[resource][queue]`` is the queue's :class:`Claimant` for that
    resource (its ``request`` already summed over its subtree, as KAI sums requests up the tree).
    """
    shares: dict[str, dict[str, float]] = {}
    for resource, amount in total.items():
        level = [(amount, list(children.get("", ())))]
        while level:
            budget, names = level.pop()
            claimants = [terms[resource][n] for n in names]
            divide_level(budget, claimants)
            for c in claimants:
                shares.setdefault(c.name, {})[resource] = c.fair_share
                if children.get(c.name):
                    level.append((c.fair_share, list(children[c.name])))
    return shares
