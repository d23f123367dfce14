"""The ordered, bounded log of watch events behind a store's ``events_since`` and ``watch``.

Both store backends keep one: the embedded store logs its own writes, the Kubernetes store what
its reflectors see. Every event sits at a position (its ``resource_version``) above the one
before; :attr:`EventLog.resource_version` is the position of the latest event. The log keeps the
last ``history`` events: reading from a position older than the oldest one kept raises Gone (410),
and the reader relists.

Not thread-safe: the store holds its lock around every call.
"""

from __future__ import annotations

from collections import deque

from kai_core.api.errors import Gone
from kai_core.api.store import WatchEvent


class EventLog:
    """The last ``history`` events, in order; ``unit`` names a position in the Gone message."""

    def __init__(self, history: int, unit: str = "resource version") -> None:
        if not isinstance(history, int) or history < 1:
            raise ValueError(f"history must be a positive number of events, got {history!r}")
        self._events: deque[WatchEvent] = deque(maxlen=history)
        self._unit = unit
        #: the position of the latest event (0 before any)
        self.resource_version = 0
        #: reading from a position below this one raises Gone
        self.compacted = 0

    @property
    def next_version(self) -> int:
        """The position the next event gets unless it is given a higher one."""
        return self.resource_version + 1

    def append(self, type: str, resource: str, obj: dict, resource_version: int | None = None) -> WatchEvent:
        """Log one event at ``resource_version`` (default: :attr:`next_version`), which must be
        above the latest; the oldest event is dropped once ``history`` are kept."""
        at = self.next_version if resource_version is None else resource_version
        if at <= self.resource_version:
            raise ValueError(f"event at {at} is not after the latest one ({self.resource_version})")
        if len(self._events) == self._events.maxlen:
            self.compacted = int(self._events[0].resource_version)
        ev = WatchEvent(type, resource, obj, str(at))
        self._events.append(ev)
        self.resource_version = at
        return ev

    def since(self, resource_version: int, resources: set[str] | None = None) -> tuple[list[WatchEvent], int]:
        """The events after ``resource_version`` (of ``resources`` only, when given), oldest first,
        and the latest position, from which the next call goes on. Gone when events after
        ``resource_version`` were dropped."""
        if resource_version < self.compacted:
            raise Gone(f"too old {self._unit}: {resource_version} (the oldest kept is {self.compacted})")
        out = []
        for ev in reversed(self._events):
            if int(ev.resource_version) <= resource_version:
                break
            if resources is None or ev.resource in resources:
                out.append(ev)
        out.reverse()
        return out, self.resource_version
