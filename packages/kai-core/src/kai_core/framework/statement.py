"""A Statement: decisions assumed on the snapshot that can be taken back together, after KAI's
``framework/statement.go``.

Placing a gang is a simulation: each member's decision is assumed so the next member sees its
node resources and devices taken, and only a plan in which the whole gang fits is kept. A
Statement records every :meth:`assume` in order; :meth:`checkpoint` marks a point and
:meth:`rollback` takes back, newest first, everything assumed since (the snapshot's ``unassume``
must undo in reverse order, since a later decision may reuse a claim an earlier one allocated).
What is kept is left assumed: the snapshot already counts it.

The eviction actions (reclaim, preempt, consolidation) also record :meth:`evict`: a running pod
counted as gone (:meth:`Snapshot.evict`), taken back by a rollback like a decision, in the same
newest-first order.

A rollback also gives the snapshot back its :attr:`~kai_core.framework.snapshot.Snapshot.state` of
the checkpoint: what was learnt of that state (a gang that does not fit) holds again.
"""

from __future__ import annotations

from dataclasses import dataclass

from kai_core.dra.claims import ClaimAllocation, PodClaim


@dataclass(frozen=True, slots=True)
class Assumed:
    """One decision assumed on the snapshot: the pod, its node, its claims and their allocation."""

    pod: dict
    node: str
    claims: list[PodClaim]
    allocation: ClaimAllocation | None


@dataclass(frozen=True, slots=True)
class Evicted:
    """One running pod counted as gone on the snapshot."""

    pod: dict


class Statement:
    """Assumed decisions on one snapshot, with checkpoints to roll back to."""

    def __init__(self, snapshot) -> None:
        self._snapshot = snapshot
        self._assumed: list[Assumed | Evicted] = []
        #: the snapshot's state before each entry of _assumed (None: not to be restored, see undo)
        self._before: list[int | None] = []

    def assume(self, pod: dict, node: str, claims: list[PodClaim], allocation: ClaimAllocation | None) -> None:
        """Assume a decision on the snapshot and remember it."""
        self._before.append(self._snapshot.state)
        self._snapshot.assume(pod, node, claims, allocation)
        self._assumed.append(Assumed(pod, node, claims, allocation))

    def evict(self, pod: dict) -> None:
        """Count a running pod as gone on the snapshot and remember it."""
        self._before.append(self._snapshot.state)
        self._snapshot.evict(pod)
        self._assumed.append(Evicted(pod))

    def checkpoint(self) -> int:
        """A mark to :meth:`rollback` to."""
        return len(self._assumed)

    def rollback(self, checkpoint: int = 0) -> None:
        """Take back, newest first, every decision assumed since ``checkpoint``."""
        if len(self._assumed) <= checkpoint:
            return
        before = self._before[checkpoint]
        while len(self._assumed) > checkpoint:
            a = self._assumed.pop()
            self._before.pop()
            if isinstance(a, Evicted):
                self._snapshot.unevict(a.pod)
            else:
                self._snapshot.unassume(a.pod, a.node, a.claims, a.allocation)
        if before is not None:
            self._snapshot.state = before

    def undo(self, pod: dict) -> None:
        """Take back the decision of ``pod`` alone (one whose BindRequest could not be written
        while later ones were): it must not have lent a claim to a later decision."""
        for i in range(len(self._assumed) - 1, -1, -1):
            a = self._assumed[i]
            if a.pod is pod and isinstance(a, Assumed):
                del self._assumed[i]
                del self._before[i]
                # states recorded after it included this decision: none of them comes back
                self._before[i:] = [None] * (len(self._before) - i)
                self._snapshot.unassume(a.pod, a.node, a.claims, a.allocation)
                return

    @property
    def decisions(self) -> list[Assumed]:
        """The decisions assumed and not taken back, in order."""
        return [a for a in self._assumed if isinstance(a, Assumed)]

    @property
    def evictions(self) -> list[dict]:
        """The pods counted as gone and not taken back, in order."""
        return [a.pod for a in self._assumed if isinstance(a, Evicted)]
