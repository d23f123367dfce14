"""Events written off the workers' path, as client-go's event broadcaster (which KAI's binder
records through) writes them: :meth:`EventRecorder.record` queues an Event and returns, and one
thread creates the queued Events. An Event is a report, not part of carrying out a BindRequest, so
a worker does not wait for its API call, and an Event that cannot be written is logged and
dropped, never retried by the attempt.

A binder stepping through passes (:meth:`kai_binder.binder.Binder.run_once`) writes its Events in
the attempt (:meth:`write`), so what it reports is there when the pass returns; a long-running
binder (:meth:`~kai_binder.binder.Binder.dispatch`) queues them (:meth:`record`), and :meth:`close`
writes what is left (for a bounded time) when it stops.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from kai_binder.claims import describe_api_error
from kai_core.api.errors import AlreadyExists, ApiError

log = logging.getLogger("kai.binder")

#: Events waiting to be written; past this, new ones are dropped (client-go keeps 1,000 too)
QUEUE_SIZE = 1000


class EventRecorder:
    """Creates Events through ``api`` on a thread of its own, started with the first Event."""

    def __init__(self, api, queue_size: int = QUEUE_SIZE) -> None:
        self.api = api
        self._queue: queue.Queue[dict | None] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: Events dropped because the queue was full
        self.dropped = 0

    def record(self, event: dict) -> None:
        """Queue ``event`` to be created; never blocks (a full queue drops it, with a warning)."""
        self._start()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            md = event.get("involvedObject") or {}
            log.warning("event queue full (%d): dropped the event for pod %s/%s", self._queue.maxsize,
                        md.get("namespace"), md.get("name"))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued Event was written (or given up on); False when ``timeout``
        seconds passed first."""
        if self._thread is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds), then stop the thread."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            if not self.flush(timeout):
                log.warning("stopping with %d event(s) not written", self._queue.qsize())
            self._thread = None
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            return  # the thread is a daemon: it ends with the process
        thread.join(timeout)

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kai-binder-events", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is None:
                    return
                self.write(event)
            finally:
                self._queue.task_done()

    def write(self, event: dict) -> None:
        """Create ``event`` now, in the caller's thread (an error is logged, never raised)."""
        try:
            self.api.create(event)
        except AlreadyExists:
            pass  # reported before this binder was restarted
        except (ApiError, OSError) as exc:
            md = event.get("involvedObject") or {}
            log.warning("cannot record event for pod %s/%s: %s", md.get("namespace"), md.get("name"),
                        describe_api_error(exc))
        except Exception:  # a bug here must not end the thread: later Events would pile up unwritten
            log.exception("cannot record an event")
