"""The binder: carries out the scheduler's decisions, one BindRequest at a time.

**One attempt** (:meth:`Binder.reconcile`): read the pod (and, with ``check_node``, the node;
from the store's watch cache where it keeps them, a pod that would fail or refuse the request read
again from the server first, see :func:`kai_binder.verify.read_pod`); the checks of
:mod:`kai_binder.verify` (next paragraph); the
binder plugins' ``kai_binder_pre_bind`` (the built-in DRA claim step first, see
:mod:`kai_binder.dra`); ``pods/binding`` with the pod's uid as precondition, carrying the pod
annotations KAI's binder writes (:func:`kai_binder.contract.pod_annotations`, merged by the API
server in the same write); ``kai_binder_post_bind``;
then, with ``report``, the pod's ``PodBound`` condition (one strategic merge patch of
``pods/status``, compared first with the pod already read, never read again) and an Event; last
the BindRequest's ``status.phase: Succeeded``. An attempt that fails runs ``kai_binder_rollback`` of every plugin in
reverse order, reports ``PodBound=False`` / ``BindingError`` with the reason, and ends ``Failed``
with that reason (the API's own message for an API error).

**Checks before any write.** A BindRequest asking for something this binder cannot carry out
(:func:`kai_binder.contract.unsupported`: GPU sharing, an unknown ``receivedResourceType``, an
extended-resource claim with DRA off) ends ``Failed`` with the field named and no retry left,
before the pod is read. It is carried out only if it is one the scheduler could have written: its
pod belongs to a scheduler this binder serves (``scheduler_names``), no other live BindRequest is
there for the pod, the node exists and, with DRA, every allocation is one the allocator could have
given the claim on that node from devices nobody else holds (see :mod:`kai_binder.verify`; the
checks read a :class:`kai_binder.index.BinderIndex` kept from the store's events, so they cost no
API call). A failed check ends the attempt ``Failed`` with ``verification failed: <the check>`` and
writes nothing else: no rollback (nothing was written), no condition or Event on the pod (it may
not be ours). A check that may pass later (a lost race) counts as one failed attempt; one that
cannot sets ``failedAttempts`` to ``backoffLimit``.

**Retries** follow KAI: a failed attempt increments ``status.failedAttempts`` while it is below
``spec.backoffLimit``, and the request is tried again after ``base_delay * 2**(failedAttempts-1)``
seconds (at most ``max_delay``) while ``failedAttempts < backoffLimit``. A request without
``backoffLimit`` is tried once. Past that the scheduler deletes it and schedules the pod again.

**Crash safety.** Every step reads the cluster and skips what is already done, so a binder killed
after any single write and started again finishes the job with the same writes, none twice: a
claim already reserved for the pod is not written again, a pod found bound to its node goes
straight to reporting, a condition already there is not rewritten, and Events carry names derived
from the BindRequest so a second create is refused by the API rather than duplicated. The status
is written last, so a request still not ``Succeeded`` or ``Failed`` is simply attempted again.
Rollback works from what it finds, not from memory (see :mod:`kai_binder.claims`).

**Uncertain outcomes.** When the API leaves the outcome unknown (the bind timed out and the pod
cannot be read back, a rollback could not finish, the status could not be written), the request is
left as it is and attempted again later, with a per-request exponential delay; nothing is counted
and nothing is reported, since nothing is known.

**Concurrency.** :meth:`Binder.run_once` lists the BindRequests and works through those that are
due on a pool of ``workers`` threads, never two attempts for the same pod at once, and returns
when they are all done: a pass, what an embedded run and the tests step through.
:meth:`Binder.dispatch` is the long-running process's way, as KAI's workqueue: it queues the
requests due now on the same pool and returns at once, so a request written while others are
being carried out starts as soon as a worker is free, not after the slowest attempt of a pass.
Every API call takes a token from a client-side token bucket (``qps``, ``burst``; KAI's 50 and
300; ``qps=0`` turns it off).

**Waiting without blocking.** ``run_once`` never sleeps for a backoff: it only works on what is
due and :meth:`Binder.next_due` says when the next delayed retry is, on the binder's ``clock``. An
embedded ``--until-idle`` runner can therefore stop when nothing is written and nothing is due, or
move a :class:`kai_binder.clock.ManualClock` forward instead of sleeping.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from kai_binder.claims import describe_api_error, is_transient
from kai_binder.contract import pod_annotations, unsupported
from kai_binder.events import EventRecorder
from kai_binder.hooks import BinderHooks, NotReady, add_binder_hookspecs  # noqa: F401 (add_binder_hookspecs: its old home)
from kai_binder.index import BinderIndex, is_actionable  # noqa: F401 (is_actionable: its old home)
from kai_binder.verify import DEFAULT_SCHEDULER_NAMES, VerificationFailed, Verifier, get_fresh, read_pod
from kai_core.api.bindrequest import failed_attempts, is_count
from kai_core.api.errors import ApiError, Conflict, NotFound, OutcomeUnknown
from kai_core.api.events import pod_event
from kai_core.api.features import FeatureGates
from kai_core.api.objects import clone, now_rfc3339
from kai_core.api.resources import RES_BIND_REQUESTS, RES_NODES, RES_PODS
from kai_core.client.store import TokenBucket
from kai_core.framework.plugins import KaiPluginManager

log = logging.getLogger("kai.binder")

COMPONENT = "kai-binder"
#: the pod condition KAI's binder writes (True/Bound, False/BindingError)
POD_BOUND_CONDITION = "PodBound"
REASON_BOUND = "Bound"
REASON_BINDING_ERROR = "BindingError"

DEFAULT_WORKERS = 1
DEFAULT_QPS = 50.0
DEFAULT_BURST = 300
DEFAULT_BASE_DELAY = 1.0
DEFAULT_MAX_DELAY = 60.0
#: what a deployed binder should run with (``Binder(store, pm, gates, **RECOMMENDED_OPTIONS)``):
#: KAI's 10 concurrent reconciles, the PodBound condition and Events, and the node check. The
#: constructor's own defaults keep the leanest wire footprint (one worker, no reporting calls),
#: which tests of the API traffic pin.
RECOMMENDED_OPTIONS = {"workers": 10, "report": True, "check_node": True}
#: writes of one object retried on 409 (each after reading it again)
CONFLICT_RETRIES = 5

_Key = tuple[str, str, str]

PENDING = "Pending"  # returned by reconcile when the attempt was left for later; never written


class BindError(Exception):
    """A BindRequest the binder cannot carry out as written (kept for callers of earlier versions)."""


class _Deferred(Exception):
    """The attempt's outcome is not known (or not recorded); try it again later, count nothing."""


@dataclass
class BinderResult:
    """What one :meth:`Binder.run_once` did: attempts that ended ``Succeeded`` or ``Failed`` (with
    their reasons), and attempts ``deferred`` because the API left their outcome unknown."""

    succeeded: int = 0
    failed: int = 0
    deferred: int = 0
    reasons: list[str] = field(default_factory=list)


class RateLimitedStore:
    """A store whose every API call first takes a token from ``limiter``; anything else (the
    store's cache API, ``kinds``, ...) passes straight through."""

    def __init__(self, store, limiter: TokenBucket) -> None:
        self._store = store
        self.limiter = limiter

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def get(self, resource, name, namespace=None, *, fresh=False):
        self.limiter.acquire()
        return self._store.get(resource, name, namespace, fresh=fresh)

    def list(self, resource, namespace=None, label_selector=None, field_selector=None):
        self.limiter.acquire()
        return self._store.list(resource, namespace, label_selector, field_selector)

    def create(self, obj):
        self.limiter.acquire()
        return self._store.create(obj)

    def update(self, obj):
        self.limiter.acquire()
        return self._store.update(obj)

    def update_status(self, obj):
        self.limiter.acquire()
        return self._store.update_status(obj)

    def patch(self, resource, name, namespace, patch, subresource=None, *, strategic=False):
        self.limiter.acquire()
        return self._store.patch(resource, name, namespace, patch, subresource, strategic=strategic)

    def delete(self, resource, name, namespace=None, *, uid=None):
        self.limiter.acquire()
        return self._store.delete(resource, name, namespace, uid=uid)

    def bind(self, namespace, pod_name, node_name, pod_uid=None, *, annotations=None):
        self.limiter.acquire()
        return self._store.bind(namespace, pod_name, node_name, pod_uid, annotations=annotations)


def _failed_attempts(status: dict) -> int:
    return failed_attempts({"status": status})


def _key(br: dict) -> _Key:
    md = br["metadata"]
    return (md.get("namespace") or "default", md["name"], md.get("uid") or "")


def _br_ref(br: dict) -> str:
    md = br["metadata"]
    return f'BindRequest "{md.get("namespace") or "default"}/{md["name"]}"'


def _owner_uid(br: dict) -> str | None:
    for o in br["metadata"].get("ownerReferences") or []:
        if o.get("kind") == "Pod" and o.get("uid"):
            return o["uid"]
    return None


def _stub(namespace: str, name: str, uid: str | None) -> dict:
    """What the hooks get for a pod that is gone: its identity, no spec."""
    return {"metadata": {"name": name, "namespace": namespace, "uid": uid}}


def _spec_problem(spec: object) -> str | None:
    if not isinstance(spec, dict):
        return "spec must be an object"
    for f in ("podName", "selectedNode"):
        if not isinstance(spec.get(f), str) or not spec[f]:
            return f"spec.{f} must be a non-empty string, got {spec.get(f)!r}"
    return None


def _pod_ref(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def event_name(pod_name: str, br: dict, what: str) -> str:
    """A name for the Event reporting ``what`` about one BindRequest: derived from the request's
    uid, so reporting it again after a restart is refused by the API (409) instead of repeated."""
    md = br["metadata"]
    tag = (md.get("uid") or md["name"]).replace("-", "")[:12]
    suffix = f".{tag}.{what}"
    return pod_name[: 253 - len(suffix)].rstrip(".-") + suffix


class Binder:
    """Reconciles BindRequests against ``store``; see the module docstring for what an attempt does.

    ``pm`` is the plugin manager (the binder's hooks and built-in plugins are added to it; without
    one the binder uses its own with only the built-ins); the hooks are called through
    :attr:`hooks`, a :class:`kai_binder.hooks.BinderHooks`. ``features`` are the feature gates
    (DRA claims need ``DynamicResourceAllocation``).

    Keyword arguments (see :data:`RECOMMENDED_OPTIONS` for a deployment's values): ``workers``
    threads work on due requests (1: in the calling thread, the default);
    ``qps``/``burst`` rate-limit every API call (0: off); ``base_delay``/``max_delay`` bound the
    exponential retry delays in seconds; ``report`` writes the pod's ``PodBound`` condition and
    an Event for every outcome, as KAI does; ``check_node`` reads the selected node before any
    write and fails the request when it is gone (the API server would accept a binding to a
    missing node); ``clock``/``sleep`` are the time source and the rate limiter's wait (a
    :class:`kai_binder.clock.ManualClock` in tests); ``scheduler_names`` are the schedulers whose
    pods it binds (``spec.schedulerName``; a pod without one is the ``default-scheduler``'s).
    """

    def __init__(
        self,
        store,
        pm: KaiPluginManager | None = None,
        features: FeatureGates | None = None,
        *,
        workers: int = DEFAULT_WORKERS,
        qps: float = DEFAULT_QPS,
        burst: int = DEFAULT_BURST,
        base_delay: float = DEFAULT_BASE_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
        report: bool = False,
        check_node: bool = False,
        scheduler_names: Iterable[str] = DEFAULT_SCHEDULER_NAMES,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        names = [scheduler_names] if isinstance(scheduler_names, str) else list(scheduler_names or ())
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"Binder: scheduler_names must be non-empty scheduler names, got {scheduler_names!r}")
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"Binder: workers must be a positive integer, got {workers!r}")
        if not isinstance(qps, int | float) or qps < 0:
            raise ValueError(f"Binder: qps must be a number >= 0 (0 turns rate limiting off), got {qps!r}")
        if not isinstance(base_delay, int | float) or base_delay <= 0:
            raise ValueError(f"Binder: base_delay must be a positive number of seconds, got {base_delay!r}")
        if not isinstance(max_delay, int | float) or max_delay < base_delay:
            raise ValueError(
                f"Binder: max_delay must be at least base_delay ({base_delay}), got {max_delay!r}")
        try:
            self.limiter = TokenBucket(qps, burst, clock=clock, sleep=sleep)
        except ValueError as exc:
            raise ValueError(f"Binder: {exc}") from None
        self.store = store
        self.api = RateLimitedStore(store, self.limiter) if qps > 0 else store
        if pm is None:
            pm = KaiPluginManager()
        self.pm = pm
        self.features = features or FeatureGates()
        self.hooks = BinderHooks(pm, self.api, self.features)
        self.scheduler_names = frozenset(names)
        self.index = BinderIndex(store, self.features.dra, self.features.dra_features)
        self.verifier = Verifier(self.api, self.index, self.features, self.scheduler_names)
        self.workers = workers
        self.base_delay = float(base_delay)
        self.max_delay = float(max_delay)
        self.report = report
        self.check_node = check_node
        self.clock = clock
        self._lock = threading.Lock()
        self._not_before: dict[_Key, float] = {}
        self._uncertain: dict[_Key, int] = {}
        self._busy: set[tuple[str, str]] = set()
        self._pool: ThreadPoolExecutor | None = None
        #: reports (PodBound, Events): written in the attempt by run_once(); queued off the workers'
        #: path by dispatch(), after the request's status, on the store's reporting client if it has one
        reporting = getattr(self.api, "for_reports", None)
        self.reports_api = reporting() if reporting is not None else self.api
        # a report thread per worker: each report is two API calls in a row (condition, Event)
        self.events = EventRecorder(self.reports_api, writers=max(workers, 1))
        self._dispatching = False
        #: dispatch(): pod -> the attempt key queued or running for it on the pool
        self._queued: dict[tuple[str, str], _Key] = {}
        #: dispatch(): an exception that ended a worker (not an Exception: a stop, a crash), raised
        #: by the next dispatch() in the caller's thread
        self._crash: BaseException | None = None

    # -- the loop ------------------------------------------------------------------------------

    def run_once(self) -> BinderResult:
        """Attempt every BindRequest that is due now (at most one per pod), on the worker pool.

        Never waits for a backoff: see :meth:`next_due`. An exception that is not an ``Exception``
        (a crash, KeyboardInterrupt) still propagates, after the other workers finished.
        """
        result = BinderResult()
        try:
            items, _ = self._list_bind_requests()
        except (ApiError, OSError) as exc:
            log.warning("cannot list BindRequests: %s", describe_api_error(exc))
            return result
        due, live = self._select(items)
        self.verifier.start_pass(live)
        for phase, reason in self._run_all([clone(br) for br in due]):
            if phase == "Succeeded":
                result.succeeded += 1
            elif phase == "Failed":
                result.failed += 1
                result.reasons.append(reason)
            else:
                result.deferred += 1
        return result

    def dispatch(self) -> int:
        """Queue an attempt, on the pool of ``workers`` threads, for every BindRequest due now whose
        pod has none queued or running, and return without waiting (the number queued). For a
        long-running binder (``kai-cli run binder``): call it whenever the BindRequests may have
        changed; :meth:`close` waits for the attempts under way. An exception that ended a worker
        and is not an ``Exception`` (a stop raised by a wrapped ``reconcile``) is raised here, by
        the next call."""
        self._raise_crash()
        self._dispatching = True
        with self._lock:
            running = dict(self._queued)
        index = self.index
        queued = {key[:2] for key in running.values()}
        try:
            with index.lock:  # the requests still to carry out, as the index follows them
                index.sync()
                # those queued already are left out before anything is computed for them: with a
                # backlog of thousands, every call would otherwise go through them all again
                items = [br for name, br in index.actionable.items() if name not in queued]
        except (ApiError, OSError) as exc:
            log.warning("cannot read the BindRequests: %s", describe_api_error(exc))
            return 0
        # the attempts queued or under way stay live whatever the index shows: their devices are held
        due, live = self._select(items, running, live=set(running.values()))
        self.verifier.start_pass(live)
        if not due:
            return 0
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="kai-binder")
        for br in due:
            key = _key(br)
            pod_key = (key[0], str((br.get("spec") or {}).get("podName")))
            with self._lock:
                self._queued[pod_key] = key
            future = self._pool.submit(self._dispatched, clone(br))
            future.add_done_callback(lambda f, pod_key=pod_key: self._dispatch_done(pod_key, f))
        return len(due)

    def in_progress(self) -> int:
        """Attempts queued by :meth:`dispatch` and not finished yet."""
        with self._lock:
            return len(self._queued)

    def _dispatched(self, br: dict) -> tuple[str, str]:
        """A worker's attempt at a queued request: read again first (it may have been carried out,
        deleted or replaced while it waited in the queue)."""
        md = br["metadata"]
        try:
            current = self.api.get(RES_BIND_REQUESTS, md["name"], md.get("namespace"))
        except NotFound:
            return PENDING, "gone"
        except (ApiError, OSError):
            current = br  # the attempt reads what it needs itself, and writes only on its resourceVersion
        if not is_actionable(current) or current["metadata"].get("uid") != md.get("uid"):
            return PENDING, "no longer actionable"
        return self._reconcile_isolated(current)

    def _dispatch_done(self, pod_key: tuple[str, str], future) -> None:
        with self._lock:
            self._queued.pop(pod_key, None)
        exc = future.exception() if not future.cancelled() else None
        if exc is not None and self._crash is None:
            self._crash = exc

    def _raise_crash(self) -> None:
        with self._lock:
            crash, self._crash = self._crash, None
        if crash is not None:
            raise crash

    def _select(self, items: list[dict], running: dict[tuple[str, str], _Key] | None = None,
                live: set[_Key] | None = None) -> tuple[list[dict], set[_Key]]:
        """Of ``items``, the BindRequests due now, oldest first, at most one per pod and none for a
        pod in ``running``; and the keys of every live (actionable) request: those of ``items`` and
        ``live``. ``items`` may be a store's own objects (not copies): callers copy what they hand
        on."""
        now = self.clock()
        due: list[dict] = []
        live = set() if live is None else live
        pods: set[tuple[str, str]] = set(running or ())
        actionable = sorted((b for b in items if is_actionable(b)),
                            key=lambda b: (str(b["metadata"].get("creationTimestamp") or ""), _key(b)))
        with self._lock:
            for br in actionable:
                key = _key(br)
                live.add(key)
                if self._not_before.get(key, now) > now:
                    continue
                pod_key = (key[0], str((br.get("spec") or {}).get("podName")))
                if pod_key in pods or pod_key in self._busy:
                    if running is None or running.get(pod_key) != key:
                        self._not_before[key] = now  # due, but its pod has an attempt in progress
                    continue
                pods.add(pod_key)
                due.append(br)
            for stale in [k for k in self._not_before if k not in live]:
                del self._not_before[stale]
            for stale in [k for k in self._uncertain if k not in live]:
                del self._uncertain[stale]
        return due, live

    def _list_bind_requests(self) -> tuple[list[dict], str]:
        """Every BindRequest, without copying them where the store can: an embedded store's own
        objects, or the watch cache of a Kubernetes store that reads BindRequests from it (a
        Kubernetes store that does not lists them from the server, as a pass always did)."""
        cached = getattr(self.store, "cached_reads", None)
        list_refs = getattr(self.store, "list_refs", None)
        if list_refs is not None and (cached is None or RES_BIND_REQUESTS in cached):
            return list_refs(RES_BIND_REQUESTS)
        return self.api.list(RES_BIND_REQUESTS)

    def next_due(self) -> float | None:
        """When (on the binder's ``clock``) the earliest delayed attempt becomes due, or None when
        no attempt is waiting. New BindRequests are not counted: the next ``run_once`` sees them."""
        with self._lock:
            return min(self._not_before.values(), default=None)

    def close(self) -> None:
        """Stop the worker threads: attempts under way finish (each is idempotent and short),
        attempts queued by :meth:`dispatch` and not started are dropped (their requests stay as
        they are, for the next run or leader); queued Events are written for up to 2 s."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.events.close()

    def _run_all(self, due: list[dict]) -> list[tuple[str, str]]:
        if self.workers == 1 or len(due) <= 1:
            return [self._reconcile_isolated(br) for br in due]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="kai-binder")
        futures = [self._pool.submit(self._reconcile_isolated, br) for br in due]
        out: list[tuple[str, str]] = []
        crash: BaseException | None = None
        for f in futures:
            try:
                out.append(f.result())
            except BaseException as exc:  # noqa: BLE001 - re-raised below, once every worker is done
                crash = crash or exc
        if crash is not None:
            raise crash
        return out

    def _reconcile_isolated(self, br: dict) -> tuple[str, str]:
        """``reconcile``, with a bug of ours on one request logged and retried later rather than
        stopping the other requests."""
        try:
            return self.reconcile(br)
        except Exception as exc:  # a bug on one request must not stop the others
            log.exception("%s: internal binder error", _br_ref(br))
            self._defer(_key(br))
            return PENDING, f"internal binder error: {type(exc).__name__}: {exc}"

    # -- one attempt ---------------------------------------------------------------------------

    def reconcile(self, br: dict) -> tuple[str, str]:
        """One attempt at ``br``. Returns the phase reached (``Succeeded``, ``Failed``, or
        ``Pending`` when the attempt was left for later) and the reason of a failure."""
        key = _key(br)
        pod_key = (key[0], str((br.get("spec") or {}).get("podName")))
        with self._lock:
            if pod_key in self._busy:
                return PENDING, f"an attempt for pod {_pod_ref(*pod_key)} is in progress"
            self._busy.add(pod_key)
        try:
            outcome = self._attempt(br)
        except (_Deferred, NotReady) as exc:  # NotReady: a pre-bind plugin waits on the cluster
            log.info("%s: left for later: %s", _br_ref(br), exc)
            self.verifier.finish(key, known=False)
            self._defer(key)
            return PENDING, str(exc)
        finally:
            with self._lock:
                self._busy.discard(pod_key)
        self.verifier.finish(key, known=True)
        return outcome

    def _attempt(self, br: dict) -> tuple[str, str]:
        ns = br["metadata"].get("namespace") or "default"
        spec = br.get("spec")
        problem = _spec_problem(spec)
        if problem:
            return self._finish(br, "Failed", f"{_br_ref(br)}: {problem}")
        problem = unsupported(spec, self.features.dra)
        if problem:  # no retry can carry it out: nothing is written, the scheduler decides again
            return self._finish(br, "Failed", f"{_br_ref(br)}: {problem}", give_up=True)
        pod_name, node = spec["podName"], spec["selectedNode"]
        owner_uid = _owner_uid(br)
        try:
            pod = read_pod(self.api, ns, pod_name, lambda p: self._would_refuse(p, owner_uid, node))
        except NotFound:
            return self._fail(br, _stub(ns, pod_name, owner_uid), node,
                              f'pod "{_pod_ref(ns, pod_name)}" not found', pod_exists=False)
        except (ApiError, OSError) as exc:
            why = f"cannot read pod {_pod_ref(ns, pod_name)}: {describe_api_error(exc)}"
            if is_transient(exc):
                raise _Deferred(why) from None
            return self._finish(br, "Failed", why)
        uid = pod["metadata"].get("uid")
        if owner_uid and uid != owner_uid:
            return self._fail(br, _stub(ns, pod_name, owner_uid), node,
                              f"pod {_pod_ref(ns, pod_name)} was replaced by a new pod of the same name",
                              pod_exists=False)
        try:
            self.verifier.check_scheduler(pod)
        except VerificationFailed as exc:
            return self._refuse_unverified(br, exc)
        bound = (pod.get("spec") or {}).get("nodeName")
        if bound == node:
            return self._succeed(br, pod, node)
        if bound:
            return self._refuse(br, pod, node,
                                f"pod {_pod_ref(ns, pod_name)} is already bound to node {bound}")
        if pod["metadata"].get("deletionTimestamp"):
            return self._fail(br, pod, node, f"pod {_pod_ref(ns, pod_name)} is being deleted")
        node_obj = None
        if self.check_node:
            try:
                node_obj = self.api.get(RES_NODES, node)
            except NotFound:
                return self._fail(br, pod, node, f'node "{node}" not found')
            except (ApiError, OSError) as exc:
                if is_transient(exc):
                    raise _Deferred(f'cannot read node "{node}": {describe_api_error(exc)}') from None
                return self._fail(br, pod, node, f'cannot read node "{node}": {describe_api_error(exc)}')
        try:
            self.verifier.verify(br, _key(br), pod, node, node_obj)
        except VerificationFailed as exc:
            return self._refuse_unverified(br, exc)
        status = self.hooks.pre_bind(br, pod, node)
        if not status.ok:
            return self._fail(br, pod, node, status.message)
        try:
            # KAI's pod annotations go in the binding itself: merged in the write that binds
            self.api.bind(ns, pod_name, node, uid, annotations=pod_annotations(spec))
        except (ApiError, OSError) as exc:
            return self._after_bind_error(br, pod, node, exc)
        log.info("pod %s bound to node %s", _pod_ref(ns, pod_name), node)
        self.hooks.post_bind(br, pod, node)
        return self._succeed(br, pod, node)

    def _would_refuse(self, pod: dict | None, owner_uid: str | None, node: str) -> bool:
        """Whether the attempt would end at once with this copy of the pod (None: not found) other
        than in success: then a copy from a watch cache is read again from the server."""
        if pod is None or (owner_uid and pod["metadata"].get("uid") != owner_uid):
            return True
        try:
            self.verifier.check_scheduler(pod)
        except VerificationFailed:
            return True
        bound = (pod.get("spec") or {}).get("nodeName")
        return (bool(bound) and bound != node) or (not bound and bool(pod["metadata"].get("deletionTimestamp")))

    def _after_bind_error(self, br: dict, pod: dict, node: str, exc: BaseException) -> tuple[str, str]:
        """The binding call failed: read the pod back, since a timeout or a 409 may hide a bind
        that went through, and only then decide."""
        md = pod["metadata"]
        ns, name = md["namespace"], md["name"]
        what = f"binding pod {_pod_ref(ns, name)} to node {node}: {describe_api_error(exc)}"
        try:
            current = get_fresh(self.api, RES_PODS, name, ns)  # a watch cache may not show it yet
        except NotFound:
            return self._fail(br, _stub(ns, name, md.get("uid")), node, what, pod_exists=False)
        except (ApiError, OSError) as exc2:
            raise _Deferred(f"{what}; cannot read the pod back to see whether it was bound: "
                            f"{describe_api_error(exc2)}") from None
        if current["metadata"].get("uid") != md.get("uid"):
            return self._fail(br, _stub(ns, name, md.get("uid")), node, what, pod_exists=False)
        bound = (current.get("spec") or {}).get("nodeName")
        if bound == node:
            log.info("pod %s bound to node %s (the binding call failed but went through)",
                     _pod_ref(ns, name), node)
            self.hooks.post_bind(br, current, node)
            return self._succeed(br, current, node)
        if bound:
            return self._refuse(br, current, node, f"{what}; the pod is bound to node {bound}")
        return self._fail(br, current, node, what)

    # -- outcomes ------------------------------------------------------------------------------

    def _succeed(self, br: dict, pod: dict, node: str) -> tuple[str, str]:
        """``pod`` is the pod as last read (before the bind, or read back after it): what the
        PodBound condition is compared with, no read again."""
        self.verifier.mark_written(_key(br))
        if self.report and self._dispatching:
            return self._finish_then_report(br, pod, node, "Succeeded", "")
        if self.report:
            md = pod["metadata"]
            self._report(br, pod, md["namespace"], md["name"], node, None)
        return self._finish(br, "Succeeded", "")

    def _finish_then_report(self, br: dict, pod: dict, node: str, phase: str, reason: str) -> tuple[str, str]:
        """A long-running binder's way, as KAI's: the request's status first, then the pod's
        PodBound condition and Event queued as one report, off the worker's path (see
        :mod:`kai_binder.events`)."""
        outcome = self._finish(br, phase, reason)
        md = pod["metadata"]
        ns, name = md["namespace"], md["name"]
        self.events.submit(lambda: self._report(br, pod, ns, name, node, reason or None, api=self.reports_api),
                           f"the PodBound condition and event for pod {ns}/{name}")
        return outcome

    def _fail(self, br: dict, pod: dict, node: str, reason: str, pod_exists: bool = True) -> tuple[str, str]:
        """Roll back, report, and end the attempt ``Failed`` with ``reason``."""
        if pod["metadata"].get("uid") and not self.hooks.rollback(br, pod, node):
            raise _Deferred(f"{reason}; the rollback could not finish and will be tried again")
        if self.report and pod_exists and self._dispatching:
            return self._finish_then_report(br, pod, node, "Failed", reason)
        if self.report and pod_exists:
            md = pod["metadata"]
            self._report(br, pod, md["namespace"], md["name"], node, reason)
        return self._finish(br, "Failed", reason)

    def _refuse(self, br: dict, pod: dict, node: str, reason: str) -> tuple[str, str]:
        """Fail without rolling back or reporting on the pod: it is bound elsewhere, what its
        claims hold now may be what that binding needs, and a ``PodBound=False`` on a bound pod
        would not be true."""
        self.verifier.mark_written(_key(br))
        return self._finish(br, "Failed", reason)

    def _refuse_unverified(self, br: dict, exc: VerificationFailed) -> tuple[str, str]:
        """A check of :mod:`kai_binder.verify` failed: end ``Failed`` with its reason and write
        nothing else (nothing to roll back; no condition or Event on a pod that may not be ours). A
        failure no retry can fix uses up the request's attempts."""
        log.warning("%s: %s", _br_ref(br), exc.reason)
        return self._finish(br, "Failed", exc.reason, give_up=not exc.retry)

    def _finish(self, br: dict, phase: str, reason: str, give_up: bool = False) -> tuple[str, str]:
        """Write the phase (re-reading on 409), then schedule a retry if one is left. A request that
        is gone is left alone; a status that cannot be written defers the attempt. ``give_up``: a
        failure that no retry can fix sets ``failedAttempts`` to ``backoffLimit`` (no retry left,
        so the scheduler deletes the request and places the pod again at once)."""
        key = _key(br)
        name, ns = key[1], key[0]
        for _ in range(CONFLICT_RETRIES):
            status = br.get("status") or {}
            new_status = dict(status)
            new_status["phase"] = phase
            if reason:
                new_status["reason"] = reason
            else:
                new_status.pop("reason", None)
            limit = (br.get("spec") or {}).get("backoffLimit")
            attempts = _failed_attempts(status)
            if phase == "Failed" and is_count(limit) and attempts < limit:
                attempts = limit if give_up else attempts + 1
                new_status["failedAttempts"] = attempts
            if new_status != status:
                new = {**br, "status": new_status}  # a store copies what it is given
                try:
                    br = self.api.update_status(new)
                except OutcomeUnknown as exc:
                    # the reply was lost: read it back, and count the write only if it is there
                    try:
                        current = self.api.get(RES_BIND_REQUESTS, name, ns)
                    except NotFound:
                        return self._done(key, phase, reason, retry_after=None)
                    except (ApiError, OSError):
                        raise _Deferred(f"cannot write the status of {_br_ref(br)} ({phase}): "
                                        f"{describe_api_error(exc)}") from None
                    if (current.get("status") or {}) != new_status:
                        br = current
                        continue
                    br = current
                    # read, not written here: no event of ours tells the checks of this pass
                    self.verifier.observe(RES_BIND_REQUESTS, br)
                except Conflict:
                    try:
                        br = self.api.get(RES_BIND_REQUESTS, name, ns)
                    except NotFound:
                        return self._done(key, phase, reason, retry_after=None)
                    except (ApiError, OSError) as exc:
                        raise _Deferred(
                            f"cannot read {_br_ref(br)} again: {describe_api_error(exc)}") from None
                    continue
                except NotFound:
                    return self._done(key, phase, reason, retry_after=None)
                except (ApiError, OSError) as exc:
                    raise _Deferred(f"cannot write the status of {_br_ref(br)} ({phase}): "
                                    f"{describe_api_error(exc)}") from None
                # a write answered needs no observe: its event is in the store's log at once (the
                # embedded store's own, a Kubernetes store's write-through), and every check syncs
                if phase == "Failed":
                    log.warning("%s failed (attempt %d): %s", _br_ref(br), max(attempts, 1), reason)
            retry = phase == "Failed" and is_count(limit) and attempts < limit
            return self._done(key, phase, reason, retry_after=self._delay(attempts) if retry else None)
        raise _Deferred(f"{_br_ref(br)}: status kept conflicting")

    def _done(self, key: _Key, phase: str, reason: str, retry_after: float | None) -> tuple[str, str]:
        with self._lock:
            self._uncertain.pop(key, None)
            if retry_after is None:
                self._not_before.pop(key, None)
            else:
                self._not_before[key] = self.clock() + retry_after
        return phase, reason

    def _delay(self, n: int) -> float:
        return min(self.base_delay * 2 ** max(n - 1, 0), self.max_delay)

    def _defer(self, key: _Key) -> None:
        with self._lock:
            n = self._uncertain.get(key, 0) + 1
            self._uncertain[key] = n
            self._not_before[key] = self.clock() + self._delay(n)

    # -- reporting -----------------------------------------------------------------------------

    def _report(self, br: dict, pod: dict, ns: str, name: str, node: str, reason: str | None,
                api=None) -> None:
        """PodBound condition and an Event: True/Bound after a bind, False/BindingError with the
        reason after a failed attempt (``br`` as it was before this attempt's status). Best effort:
        an API error here is logged, never fatal. ``api``: the store to write through (the
        binder's own by default)."""
        if reason is None:
            status, why, ev_type = "True", REASON_BOUND, "Normal"
            message = f"Pod bound successfully to node {node}"
            ev_name = event_name(name, br, "bound")
        else:
            status, why, ev_type = "False", REASON_BINDING_ERROR, "Warning"
            message = f"Failed to bind pod {_pod_ref(ns, name)} to node {node}: {reason}"
            attempt = _failed_attempts(br.get("status") or {}) + 1
            ev_name = event_name(name, br, f"failed-{attempt}")
        cond = {"type": POD_BOUND_CONDITION, "status": status, "reason": why, "message": message}
        uid = self._set_pod_condition(pod, ns, name, cond, api)
        if uid is not None:
            self._record_event(ev_name, ns, name, uid, ev_type, why, message)

    def _set_pod_condition(self, pod: dict, ns: str, name: str, cond: dict, api=None) -> str | None:
        """Write ``cond`` unless ``pod`` (as this attempt last read it) already has it; returns the
        pod's uid, None when the pod is gone or was replaced.

        One strategic merge patch of ``pods/status`` holding just this condition, as KAI's binder
        sends: conditions merge by ``type``, so there is no read first and no 409 to retry, and the
        other conditions (the kubelet's, PodScheduled) are left as they are. Its
        ``lastTransitionTime`` is kept when the status does not change. The pod's uid in the patch
        is a precondition: a new pod of the same name is refused the patch (409 here, or 422 from
        an API server that reports the uid as immutable) and gets nothing."""
        uid = pod["metadata"].get("uid")
        held = next((c for c in (pod.get("status") or {}).get("conditions") or []
                     if c.get("type") == POD_BOUND_CONDITION), None)
        if held is not None and all(held.get(k) == v for k, v in cond.items()):
            return uid
        same = held is not None and held.get("status") == cond["status"]
        ts = (held or {}).get("lastTransitionTime") if same else None
        patch: dict = {"status": {"conditions": [
            {**cond, "lastProbeTime": None, "lastTransitionTime": ts or now_rfc3339()}]}}
        if uid:
            patch["metadata"] = {"uid": uid}
        try:
            (api or self.api).patch(RES_PODS, name, ns, patch, "status", strategic=True)
        except (NotFound, Conflict):
            return None
        except (ApiError, OSError) as exc:
            log.warning("cannot set the %s condition of pod %s: %s", POD_BOUND_CONDITION,
                        _pod_ref(ns, name), describe_api_error(exc))
        return uid

    def _record_event(self, ev_name: str, ns: str, pod_name: str, uid: str, type_: str, reason: str,
                      message: str) -> None:
        event = pod_event({"name": pod_name, "namespace": ns, "uid": uid}, type_, reason, message, COMPONENT,
                          name=ev_name)
        self.events.write(event)  # a long-running binder is on a report thread here already
