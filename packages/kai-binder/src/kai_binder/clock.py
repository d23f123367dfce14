"""A clock that moves only when told, for tests and for embedded runs that skip backoff waits."""

from __future__ import annotations


class ManualClock:
    """Pass ``clock=c.now`` and ``sleep=c.sleep`` to a Binder or Scheduler: time stands still until
    :meth:`advance`, :meth:`advance_to` or :meth:`sleep` moves it, so backoff delays cost nothing
    and tests never depend on wall time."""

    def __init__(self, start: float = 0.0) -> None:
        self.time = float(start)

    def now(self) -> float:
        """The current time in seconds."""
        return self.time

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` (negative values are refused)."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go back (advance by {seconds})")
        self.time += seconds

    def advance_to(self, when: float) -> None:
        """Move forward to ``when``; a time already past leaves the clock where it is."""
        self.time = max(self.time, float(when))

    def sleep(self, seconds: float) -> None:
        """What ``time.sleep`` would do, instantly: the clock moves on by ``seconds``."""
        self.time += max(0.0, seconds)
