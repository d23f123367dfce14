"""Reports written off the workers' path, as client-go's event broadcaster (which KAI's binder
records through) writes Events: :meth:`EventRecorder.record` queues an Event (and
:meth:`EventRecorder.submit` any report: the binder's PodBound condition and Event) and returns,
and a few threads carry out what is queued. A report is not part of carrying out a BindRequest
(KAI writes the pod's condition and Event after the request's status), so a worker does not wait
for its API calls, and a report that cannot be written is logged and dropped, never retried.

A binder stepping through passes (:meth:`kai_binder.binder.Binder.run_once`) writes its reports in
the attempt (:meth:`EventRecorder.write`), so what it reports is there when the pass returns; a
long-running binder (:meth:`~kai_binder.binder.Binder.dispatch`) queues them, and
:meth:`EventRecorder.close` writes what is left (for a bounded time) when it stops.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from kai_binder.claims import describe_api_error
from kai_core.api.errors import AlreadyExists, ApiError

log = logging.getLogger("kai.binder")

#: Events waiting to be written; past this, new ones are dropped (client-go keeps 1,000 too)
QUEUE_SIZE = 1000
#: threads writing them: one API call at a time each (one alone falls behind a busy binder's workers)
WRITERS = 4


class EventRecorder:
    """Creates Events through ``api`` on ``writers`` threads of its own, started with the first
    Event (in the order queued, each thread one at a time; several threads may overlap)."""

    def __init__(self, api, queue_size: int = QUEUE_SIZE, writers: int = WRITERS) -> None:
        self.api = api
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=queue_size)
        self._writers = writers
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        #: Events dropped because the queue was full
        self.dropped = 0

    def record(self, event: dict) -> None:
        """Queue ``event`` to be created; never blocks (a full queue drops it, with a warning: the
        first drop and then one in a hundred, not one per Event)."""
        md = event.get("involvedObject") or {}
        self.submit(lambda: self.write(event), f"the event for pod {md.get('namespace')}/{md.get('name')}",
                    wait=False)

    def submit(self, report: Callable[[], None], what: str, wait: bool = True) -> None:
        """Queue ``report()`` (a report's API calls, which handle their own errors). When the queue
        is full, ``wait`` makes the caller wait for room (a report that must not be lost, such as a
        pod's condition: the workers then go no faster than their reports are written); without
        it the report is dropped with a warning, as client-go drops Events (``what`` names it)."""
        self._start()
        try:
            if wait:
                self._queue.put(report)
            else:
                self._queue.put_nowait(report)
        except queue.Full:
            with self._lock:
                self.dropped += 1
                dropped = self.dropped
            if dropped % 100 == 1:
                log.warning("event queue full (%d): dropped %s (%d dropped so far)",
                            self._queue.maxsize, what, dropped)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued Event was written (or given up on); False when ``timeout``
        seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds), then stop the threads."""
        with self._lock:
            threads, self._threads = self._threads, []
        if not threads:
            return
        deadline = time.monotonic() + timeout
        if not self.flush(timeout):
            log.warning("stopping with %d event(s) not written", self._queue.qsize())
        for _ in threads:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                return  # the threads are daemons: they end with the process
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _start(self) -> None:
        if self._threads:
            return
        with self._lock:
            if not self._threads:
                self._threads = [threading.Thread(target=self._run, name=f"kai-binder-events-{i}", daemon=True)
                                 for i in range(self._writers)]
                for t in self._threads:
                    t.start()

    def _run(self) -> None:
        while True:
            report = self._queue.get()
            try:
                if report is None:
                    return
                report()
            except Exception:  # a bug in one report must not end the thread: later ones would pile up
                log.exception("cannot write a report")
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
