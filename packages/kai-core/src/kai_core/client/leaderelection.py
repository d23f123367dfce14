"""Leader election on a ``coordination.k8s.io/v1`` Lease, through the store interface.

Several replicas of a component may run; only the one holding the Lease works. The algorithm is
client-go's (``k8s.io/client-go/tools/leaderelection``), so a kai replica and any other client-go
style candidate agree on who leads:

* a candidate reads the Lease; one held by someone else counts as held until ``leaseDurationSeconds``
  (the holder's own value) have passed *on the candidate's clock* since the candidate last saw the
  record change. Clocks of different machines are never compared, only renewals observed;
* taking or renewing the Lease is an update carrying the resourceVersion just read (a create when
  there is none), so of two candidates racing for an expired Lease exactly one wins, the other
  gets 409 Conflict;
* the leader renews every ``retry_period``; when no renewal has succeeded for ``renew_deadline``
  seconds, or the Lease shows another holder, leadership is lost. ``renew_deadline`` is shorter
  than ``lease_duration``, so a leader that cannot renew stops before anyone else may start;
* a leader that stops cleanly releases the Lease (empty holder, one-second duration) so a standby
  takes over at its next retry instead of waiting for expiry. A crashed one cannot; the Lease then
  expires.

Why not the client's ``kubernetes.leaderelection``: it reads the global default ``ApiClient``,
calls ``sys.exit`` on bad timings, and cannot run on the embedded store, so it can be tested
neither against the fake API server nor in-process. This module only needs ``get``, ``create`` and
``update`` of a store.
"""

from __future__ import annotations

import datetime as _dt
import logging
import random
import threading
import time
from collections.abc import Callable

from kai_core.api.errors import ApiError, Conflict, NotFound
from kai_core.api.objects import clone

log = logging.getLogger("kai.leaderelection")

RES_LEASES = "leases.coordination.k8s.io"
#: client-go's defaults, also KAI's and this project's (seconds)
DEFAULT_LEASE_DURATION = 15.0
DEFAULT_RENEW_DEADLINE = 10.0
DEFAULT_RETRY_PERIOD = 2.0
#: client-go requires renew_deadline > JITTER_FACTOR * retry_period
JITTER_FACTOR = 1.2


def micro_time(when: _dt.datetime | None = None) -> str:
    """A ``MicroTime`` string (what Lease ``acquireTime``/``renewTime`` hold)."""
    when = when or _dt.datetime.now(_dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_timings(lease_duration: float, renew_deadline: float, retry_period: float) -> None:
    """Raise ValueError, naming the values, unless lease_duration > renew_deadline >
    1.2 * retry_period > 0 and lease_duration is a whole number of seconds (the Lease stores an
    integer)."""
    if retry_period <= 0 or renew_deadline <= 0 or lease_duration <= 0:
        raise ValueError("leader election: lease duration, renew deadline and retry period must be positive "
                         f"(got {lease_duration:g}, {renew_deadline:g}, {retry_period:g})")
    if lease_duration != int(lease_duration):
        raise ValueError(f"leader election: the lease duration must be whole seconds, got {lease_duration:g}")
    if not lease_duration > renew_deadline:
        raise ValueError(f"leader election: the lease duration ({lease_duration:g}s) must be longer than the "
                         f"renew deadline ({renew_deadline:g}s)")
    if not renew_deadline > JITTER_FACTOR * retry_period:
        raise ValueError(f"leader election: the renew deadline ({renew_deadline:g}s) must be longer than "
                         f"{JITTER_FACTOR:g} x the retry period ({retry_period:g}s)")


class LeaderElector:
    """Campaign for, hold and release one Lease (``namespace/name``) as ``identity``.

    Use :meth:`start` (a background thread) and :meth:`stop`, or call :meth:`run` yourself.
    :attr:`leading` is set while this candidate leads; :attr:`lost` is set once leadership was
    held and then lost (it is never regained: a component that loses the Lease exits, as
    client-go components do, so that no half-finished in-memory state outlives the lease).
    Callbacks run on the elector's thread: ``on_started_leading()``, ``on_stopped_leading()``
    (after a loss, not after a clean :meth:`stop`) and ``on_new_leader(identity)`` whenever the
    observed holder changes.

    ``clock`` is a monotonic clock (injectable for tests); it measures how long a record has
    stayed unchanged, never compared with the timestamps inside the Lease.
    """

    def __init__(
        self,
        store,
        name: str,
        namespace: str,
        identity: str,
        *,
        lease_duration: float = DEFAULT_LEASE_DURATION,
        renew_deadline: float = DEFAULT_RENEW_DEADLINE,
        retry_period: float = DEFAULT_RETRY_PERIOD,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        on_new_leader: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_timings(lease_duration, renew_deadline, retry_period)
        if not name or not namespace or not identity:
            raise ValueError("leader election needs a lease name, a namespace and an identity")
        self.store = store
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = float(lease_duration)
        self.renew_deadline = float(renew_deadline)
        self.retry_period = float(retry_period)
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.on_new_leader = on_new_leader
        self._clock = clock
        self.leading = threading.Event()
        self.lost = threading.Event()
        #: the holder seen in the Lease at the last look ("" when free, None before the first)
        self.observed_holder: str | None = None
        self._observed_record: tuple | None = None
        self._observed_time = 0.0
        self._last_renew = 0.0
        self._lease: dict | None = None  # the Lease as last written or read by us
        self._stop = threading.Event()
        self._release_on_stop = True
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def lease_ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def is_leader(self) -> bool:
        """Whether this candidate holds the Lease now (and has renewed it within the deadline)."""
        return (self.leading.is_set() and not self.lost.is_set()
                and self._clock() - self._last_renew <= self.renew_deadline)

    # -- one attempt -----------------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """One attempt to take or renew the Lease; returns whether this candidate holds it now.

        API errors (a 5xx, a conflict with a concurrent writer) count as a failed attempt; they
        are logged, never raised. A successful attempt counts as a renewal from when it started,
        not from when its reply came: a process paused (or a reply delayed) in between must not come
        back believing it holds a Lease that expired meanwhile and another candidate took (it would
        write as a leader until the renew deadline passed again)."""
        with self._lock:
            started = self._clock()
            try:
                if self._try_acquire_or_renew():
                    self._last_renew = started
                    return True
                return False
            except Conflict:
                log.debug("lease %s: conflicting write, someone else got there first", self.lease_ref)
                return False
            except ApiError as exc:
                log.warning("lease %s: %s %s: %s", self.lease_ref, exc.code, exc.reason, exc.message)
                return False

    def _try_acquire_or_renew(self) -> bool:
        now_wall = micro_time()
        try:
            lease = self.store.get(RES_LEASES, self.name, self.namespace)
        except NotFound:
            lease = None
        if lease is None:
            new = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now_wall, now_wall, 0),
            }
            self._lease = self.store.create(new)
            self._observe(self._lease)
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        self._observe(lease)
        duration = _int(spec.get("leaseDurationSeconds"), int(self.lease_duration))
        held_by_other = holder and holder != self.identity and \
            self._observed_time + duration > self._clock()
        if held_by_other:
            return False
        transitions = _int(spec.get("leaseTransitions"), 0)
        if holder == self.identity:
            acquire = spec.get("acquireTime") or now_wall
        else:  # taken over (from an expired holder, or a released Lease): one more transition
            acquire = now_wall
            transitions += 1
        new = clone(lease)
        new["spec"] = {**spec, **self._spec(acquire, now_wall, transitions)}
        self._lease = self.store.update(new)  # carries the resourceVersion read: 409 if it changed
        self._observe(self._lease)
        return True

    def _spec(self, acquire: str, renew: str, transitions: int) -> dict:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "acquireTime": acquire,
            "renewTime": renew,
            "leaseTransitions": transitions,
        }

    def _observe(self, lease: dict) -> None:
        """Note the record and, when it changed, the local time it was first seen so."""
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity") or "", spec.get("renewTime"), spec.get("acquireTime"),
                  spec.get("leaseDurationSeconds"), spec.get("leaseTransitions"))
        if record != self._observed_record:
            self._observed_record = record
            self._observed_time = self._clock()
        holder = record[0]
        if holder != self.observed_holder:
            self.observed_holder = holder
            if holder:
                log.info("lease %s: the leader is now %s", self.lease_ref, holder)
            if self.on_new_leader is not None and holder:
                self._callback(self.on_new_leader, holder)

    # -- the loop ----------------------------------------------------------------------------------

    def run(self) -> None:
        """Campaign until leading, then renew until leadership is lost or :meth:`stop` is called
        (each renewal counting from when its attempt started: :meth:`try_acquire_or_renew`)."""
        if not self._acquire():
            return
        self.leading.set()
        log.info("lease %s: acquired as %s", self.lease_ref, self.identity)
        if self.on_started_leading is not None:
            self._callback(self.on_started_leading)
        self._renew()
        if self._stop.is_set() and not self.lost.is_set():
            self.leading.clear()
            if self._release_on_stop:
                self.release()
            return
        self.leading.clear()
        self.lost.set()
        if self.observed_holder and self.observed_holder != self.identity:
            log.error("lease %s: leadership lost: the Lease is held by %s", self.lease_ref,
                      self.observed_holder)
        else:
            log.error("lease %s: leadership lost: no renewal succeeded for %gs", self.lease_ref,
                      self.renew_deadline)
        if self.on_stopped_leading is not None:
            self._callback(self.on_stopped_leading)

    def _acquire(self) -> bool:
        announced = False
        while not self._stop.is_set():
            if self.try_acquire_or_renew():
                return True
            if not announced and self.observed_holder:
                log.info("lease %s: held by %s; waiting as a standby", self.lease_ref, self.observed_holder)
                announced = True
            self._stop.wait(self.retry_period * random.uniform(1.0, JITTER_FACTOR))
        return False

    def _renew(self) -> None:
        while not self._stop.wait(self.retry_period):
            if self.try_acquire_or_renew():
                continue
            if self.observed_holder and self.observed_holder != self.identity:
                return  # someone else holds it now: there is nothing left to wait for
            if self._clock() - self._last_renew > self.renew_deadline:
                return

    def release(self) -> bool:
        """Give the Lease up if this candidate holds it (empty holder, 1 s duration), so a standby
        takes over at once; returns whether it did."""
        with self._lock:
            lease = self._lease
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return False
            new = clone(lease)
            now_wall = micro_time()
            new["spec"] = {**(lease.get("spec") or {}), "holderIdentity": "", "leaseDurationSeconds": 1,
                           "renewTime": now_wall}
            try:
                self._lease = self.store.update(new)
            except ApiError as exc:
                log.warning("lease %s: could not release it (%s); it expires in %gs", self.lease_ref,
                            exc.message, self.lease_duration)
                return False
        log.info("lease %s: released", self.lease_ref)
        return True

    def start(self) -> LeaderElector:
        """Run :meth:`run` on a daemon thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("this leader elector was already started")
        self._thread = threading.Thread(target=self.run, name=f"kai-leader-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, release: bool = True, timeout: float = 10.0) -> None:
        """Stop campaigning or renewing; with ``release`` a held Lease is given up (a crash
        would not, and the Lease would expire instead)."""
        self._release_on_stop = release
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wait_until_leading(self, stop: threading.Event, poll: float = 0.05) -> bool:
        """Block until this candidate leads (True), or until ``stop`` or a loss (False)."""
        while not stop.is_set() and not self.lost.is_set() and not self._stop.is_set():
            if self.leading.wait(poll):
                return True
        return False

    def _callback(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # a failing callback must not stop the renewals
            log.exception("lease %s: callback %s failed", self.lease_ref, getattr(fn, "__name__", fn))


def _int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
