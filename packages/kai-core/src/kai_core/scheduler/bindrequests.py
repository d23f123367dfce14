"""The scheduler's side of BindRequests: writing decisions, cleaning up the ones that are over,
and backing off pods whose bindings keep failing.

**Writing** (:class:`BindRequests`): a decision becomes KAI's BindRequest
(:func:`kai_core.api.bindrequest.build_bind_request`) with the annotations of ``kai_bind_request``,
and is created in the store. Every write is fenced first: while ``may_write()`` gives a reason
(the leader Lease is not held with margin, or the process is stopping) nothing is written and
:class:`WritesStopped` ends the cycle at once. A write either surely happened, surely did not, or
may have (:class:`~kai_core.api.errors.OutcomeUnknown`: a cut reply, a timeout after sending, a
5xx). A decision that may have been written is *unconfirmed*: it stays assumed, in this cycle and
the next ones (the snapshot counts it as an in-flight BindRequest), until the watch shows the
request or, at least ``grace`` seconds after the write, a read finds it does not exist. So a lost
reply never gives the same device or node to a second pod.

**Writers.** With ``writers`` > 1 a single pod's BindRequest can be written in the background
(:meth:`BindRequests.write_later`), as kube-scheduler binds in goroutines while it decides the next
pod: the cycle assumes the decision at once and goes on deciding, ``writers`` threads create the
requests, and :meth:`BindRequests.wait_written` (at the end of the cycle) gives each outcome. Every
write is still fenced, right before it is sent. Against a real API server this takes the round
trips out of the cycle; ``writers=1`` (the default) writes each request in the cycle, in order.

**Housekeeping**: BindRequests that failed for good (:func:`kai_core.api.bindrequest.failed_for_good`)
or whose node is gone are deleted, so their pods are scheduled again in the same cycle. A request
``Failed`` with retries left whose status has not changed for ``stuck_after`` seconds counts as
failed for good too: a binder that retries writes each failed attempt (ours counts
``failedAttempts``; KAI's and ours wait at most 60 s between attempts), but KAI's binder writes its
status only when the phase changes, so under a ``backoffLimit`` it leaves ``failedAttempts: 1``
forever while it retries; KAI's own scheduler, which never sets ``backoffLimit``, never meets this. A request
whose node is gone but whose pod still holds claim reservations is left to the binder, which rolls
them back and fails it. Succeeded ones stay until their pod goes (ownerReference GC). A pod never
has a new request while its old one may still exist: a pod whose old request could not be deleted
(or whose delete's reply was lost), and one whose request failed for good after the clean-up looked
(the cache brought up to date again in the same cycle shows it), wait for a later cycle, which the
scheduler asks for itself (:meth:`BindRequests.next_check`).

**Pod backoff** (:class:`PodBackoff`): a pod whose binding failed for good is scheduled again at
once the first time, since that is usually a lost race (a claim or a node taken meanwhile). From the
second failure on it waits ``initial * 2**(failures-2)`` seconds (at most ``maximum``;
kube-scheduler's defaults are 1 and 10), so a pod that can never be bound does not take the first
place and its resources in every cycle while others wait.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from kai_core.api.bindrequest import build_bind_request, failed_attempts, failed_for_good
from kai_core.api.errors import ApiError, NotFound, OutcomeUnknown
from kai_core.api.objects import ref
from kai_core.api.resources import RES_BIND_REQUESTS, RES_CLAIMS, RES_NODES, RES_PODS, is_active_pod
from kai_core.api.store import Store
from kai_core.framework.cache import Cache
from kai_core.framework.plugins import KaiPluginManager
from kai_core.framework.snapshot import Snapshot
from kai_core.framework.status import SUCCESS, Status
from kai_core.scheduler.decide import Decision

log = logging.getLogger("kai.scheduler")


#: seconds a Failed BindRequest with retries left may keep the same status before it counts as failed
#: for good: twice the longest wait between two attempts (KAI's binder and ours cap it at 60 s)
STUCK_AFTER = 120.0


class Written(enum.Enum):
    """What became of a BindRequest write."""

    YES = "written"
    NO = "not written"
    MAYBE = "maybe written"
    #: handed to the writer threads; :meth:`BindRequests.wait_written` gives the outcome
    QUEUED = "queued"


class WritesStopped(Exception):
    """Writing must stop now (the leader Lease is not held, or the process is stopping); the
    cycle ends at once, leaving nothing half-done (each BindRequest is one write)."""


#: seconds before a cycle tries again to delete a BindRequest whose delete failed
RECHECK_AFTER_FAILED_DELETE = 1.0


class BindRequests:
    """Builds and writes the BindRequests of decisions, and keeps those that may have been written
    until they are confirmed (see the module docstring)."""

    def __init__(self, store: Store, pm: KaiPluginManager, backoff_limit: int | None, *,
                 may_write: Callable[[], str | None] | None = None, grace: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, writers: int = 1,
                 stuck_after: float = STUCK_AFTER) -> None:
        if not isinstance(writers, int) or isinstance(writers, bool) or writers < 1:
            raise ValueError(f"BindRequests: writers must be a positive integer, got {writers!r}")
        self.store = store
        self.pm = pm
        self.backoff_limit = backoff_limit
        self.may_write = may_write
        self.grace = grace
        self.clock = clock
        #: threads writing BindRequests in the background (1: every write in the caller, in order)
        self.writers = writers
        #: (namespace, name) -> (BindRequest, when written) for writes whose outcome is unknown
        self.unconfirmed: dict[tuple[str, str], tuple[dict, float]] = {}
        self.stuck_after = stuck_after
        #: (namespace, name) -> (resourceVersion and failedAttempts, when first seen so) of the
        #: Failed BindRequests with retries left
        self._failed_since: dict[tuple[str, str], tuple[tuple, float]] = {}
        #: (namespace, pod name) of the pods whose BindRequest clean_up could not delete, or whose
        #: delete may or may not have been applied (a reply lost): not scheduled again this cycle, so a
        #: pod never has a new request while its old one may still exist
        self.held: set[tuple[str, str]] = set()
        #: (namespace, name) -> uid of the BindRequests clean_up deleted (or found gone) that the
        #: cache may still show: not deleted again, nor their failure counted again, until it does not
        self.deleted: dict[tuple[str, str], str | None] = {}
        #: when a cycle is wanted for pods kept waiting on an old request (see :meth:`next_check`)
        self._recheck: float | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._queued: list[tuple[dict, Future]] = []
        self._stopped: str | None = None

    def build(self, pod: dict, decision: Decision, snap: Snapshot) -> tuple[dict, Status]:
        """The BindRequest of a decision with the annotations of ``kai_bind_request``, or the
        failure of a plugin (the pod is tried again next cycle)."""
        pairs = []
        if decision.allocation is not None:
            allocs = decision.allocation.allocations
            pairs = [(pc.name, alloc) for pc, alloc in zip(decision.claims, allocs, strict=True)]
        br = build_bind_request(pod, decision.node, pairs, self.backoff_limit, requests=snap.requests_of(pod))
        annotations, status = self.pm.bind_request(pod, snap.node_by_name[decision.node], br)
        if not status.ok:
            return br, status
        if annotations:
            br["metadata"].setdefault("annotations", {}).update(annotations)
        return br, SUCCESS

    def fence(self) -> None:
        """Raise WritesStopped when ``may_write`` gives a reason not to write now."""
        if self.may_write is not None:
            why = self.may_write()
            if why:
                raise WritesStopped(why)

    def write(self, pod: dict, br: dict) -> Written:
        """Create the BindRequest, once the fence allows it (else raise WritesStopped)."""
        self.fence()
        try:
            self.store.create(br)
        except WritesStopped:  # the store's own fence (write_guard) stopped it before it was sent
            raise
        except ApiError as exc:
            log.error("cannot write BindRequest for pod %s: %s", ref(pod), exc.message)
            if isinstance(exc, OutcomeUnknown) or exc.code >= 500:
                return self._unconfirmed(br)
            return Written.NO
        except Exception as exc:  # an error no backend should raise: the request may have gone out
            log.error("cannot write BindRequest for pod %s: %s: %s", ref(pod), type(exc).__name__, exc)
            return self._unconfirmed(br)
        log.info("pod %s: node %s selected (BindRequest %s)", ref(pod), br["spec"]["selectedNode"],
                 br["metadata"]["name"])
        return Written.YES

    def write_later(self, pod: dict, br: dict) -> Written:
        """Hand the write to the writer threads and return ``Written.QUEUED`` (with one writer,
        write it now and return the outcome). The fence is checked now (WritesStopped) and again
        right before the write; :meth:`wait_written` gives the outcome."""
        if self.writers == 1:
            return self.write(pod, br)
        self.fence()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.writers, thread_name_prefix="kai-bindrequest-writer")
        self._queued.append((pod, self._pool.submit(self._write_queued, pod, br)))
        return Written.QUEUED

    def _write_queued(self, pod: dict, br: dict) -> Written:
        try:
            return self.write(pod, br)
        except WritesStopped as exc:
            self._stopped = str(exc)
            return Written.NO

    def wait_written(self) -> list[tuple[dict, Written]]:
        """Wait for every queued write; ``(pod, outcome)`` of each, in the order queued. When a
        writer found the fence closed (its write and those after it were not sent), raises
        WritesStopped once all are done."""
        queued, self._queued = self._queued, []
        out = [(pod, future.result()) for pod, future in queued]
        stopped, self._stopped = self._stopped, None
        if stopped:
            raise WritesStopped(stopped)
        return out

    def close(self) -> None:
        """Stop the writer threads (after :meth:`wait_written`)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _unconfirmed(self, br: dict) -> Written:
        md = br["metadata"]
        self.unconfirmed[(md["namespace"], md["name"])] = (br, self.clock())
        return Written.MAYBE

    def still_unconfirmed(self, cache: Cache) -> list[dict]:
        """The BindRequests that may have been written and are not confirmed yet: dropped once the
        cache has them (the watch confirmed them) or once a read, ``grace`` seconds after the
        write, finds they do not exist. What is left is counted as in flight by the snapshot."""
        if not self.unconfirmed:
            return []
        now = self.clock()
        seen = cache.objects.get(RES_BIND_REQUESTS, {})
        for key, (br, written_at) in list(self.unconfirmed.items()):
            if key in seen:
                del self.unconfirmed[key]
                continue
            if now - written_at < self.grace:
                continue
            try:
                self.store.get(RES_BIND_REQUESTS, key[1], key[0])
            except NotFound:
                del self.unconfirmed[key]
                log.info("BindRequest %s/%s was not written after all; pod %s will be scheduled again",
                         key[0], key[1], br["spec"].get("podName"))
            except Exception as exc:  # still unknown: keep counting it, and read again a grace later
                self.unconfirmed[key] = (br, now)
                log.warning("cannot check BindRequest %s/%s: %s", key[0], key[1], getattr(exc, "message", exc))
        return [br for br, _ in self.unconfirmed.values()]

    def next_check(self) -> float | None:
        """When (on ``clock``) the earliest unconfirmed write may be read back, or a Failed request
        with retries left would count as failed for good if its status stays as it is; None for
        neither."""
        due = [t + self.grace for _, t in self.unconfirmed.values()]
        due += [t + self.stuck_after for _, t in self._failed_since.values()]
        if self._recheck is not None:
            due.append(self._recheck)
        return min(due, default=None)

    def _stuck(self, key: tuple[str, str], br: dict, now: float, seen: dict) -> bool:
        """Whether a Failed request with retries left kept the same status for ``stuck_after``
        seconds (see the module docstring); records it in ``seen`` (the next ``_failed_since``)."""
        if (br.get("status") or {}).get("phase") != "Failed":
            return False
        mark = (br["metadata"].get("resourceVersion"), failed_attempts(br))
        since = self._failed_since.get(key)
        when = since[1] if since is not None and since[0] == mark else now
        seen[key] = (mark, when)
        return now - when >= self.stuck_after

    def clean_up(self, cache: Cache, on_failed: Callable[[str], None]) -> bool:
        """Delete BindRequests that failed for good or whose node is gone (see the module
        docstring); ``on_failed(pod_uid)`` is told of each binding that failed for good. True when
        something was deleted."""
        nodes = cache.objects.get(RES_NODES, {})
        deleted = False
        reserved: set[str] | None = None
        now = self.clock()
        failed_since: dict[tuple[str, str], tuple[tuple, float]] = {}
        held: set[tuple[str, str]] = set()
        self._recheck = None
        cached = cache.objects.get(RES_BIND_REQUESTS, {})
        self.deleted = {key: uid for key, uid in self.deleted.items()
                        if key in cached and cached[key]["metadata"].get("uid") == uid}
        for br in list(cached.values()):
            spec = br.get("spec") or {}
            md = br["metadata"]
            if (md.get("namespace", ""), md["name"]) in self.deleted:
                continue  # deleted already; the watch has not shown it yet
            phase = (br.get("status") or {}).get("phase")
            node_gone = ("", spec.get("selectedNode", "")) not in nodes and phase != "Succeeded"
            failed = failed_for_good(br)
            stuck = not failed and self._stuck((md.get("namespace", ""), md["name"]), br, now, failed_since)
            if not (failed or stuck or node_gone):
                continue
            uid = _pod_uid_of(cache, br)
            if node_gone and phase != "Failed":
                if reserved is None:
                    reserved = _reserved_pod_uids(cache)
                if uid in reserved:
                    log.info("BindRequest %s/%s: node %s is gone; left to the binder, which holds claims "
                             "for pod %s", md["namespace"], md["name"], spec.get("selectedNode"),
                             spec.get("podName"))
                    continue
            why = "its node is gone" if node_gone else f"it failed: {(br.get('status') or {}).get('reason')}"
            if stuck and not node_gone:
                why += (f"; {failed_attempts(br)} of {spec.get('backoffLimit')} attempts recorded and no "
                        f"change for {self.stuck_after:.0f}s")
            try:
                self.store.delete(RES_BIND_REQUESTS, md["name"], md["namespace"])
            except NotFound:
                why += "; it was gone already (an earlier delete whose reply was lost, or another's)"
            except (ApiError, OSError) as exc:
                log.warning("cannot delete BindRequest %s/%s: %s; pod %s is not scheduled again until it "
                            "is gone", md["namespace"], md["name"], getattr(exc, "message", exc),
                            spec.get("podName"))
                held.add((md.get("namespace", ""), str(spec.get("podName"))))
                self._recheck = now + RECHECK_AFTER_FAILED_DELETE  # nothing may change to wake a cycle
                continue
            deleted = True
            self.deleted[(md.get("namespace", ""), md["name"])] = md.get("uid")
            failed_since.pop((md.get("namespace", ""), md["name"]), None)
            if (failed or stuck) and not node_gone and uid:
                on_failed(uid)
            log.info("BindRequest %s/%s deleted (%s); pod %s will be scheduled again",
                     md["namespace"], md["name"], why, spec.get("podName"))
        self._failed_since = failed_since
        self.held = held
        return deleted

    def not_cleaned_up(self, bind_requests: Mapping[tuple[str, str], dict]) -> set[tuple[str, str]]:
        """(namespace, pod name) of the pods whose BindRequest failed for good but was not deleted by
        the last clean_up: it came in after (the cache brought up to date again once clean_up had
        deleted others). Such a pod waits for the next cycle's clean_up, so it never has a new
        request while the old one still exists."""
        out: set[tuple[str, str]] = set()
        for key, br in bind_requests.items():
            if key not in self.deleted and failed_for_good(br):
                out.add((key[0], str((br.get("spec") or {}).get("podName"))))
        if out:  # the cache shows it already: no change is coming to wake the next cycle
            self._recheck = self.clock()
        return out


def _pod_uid_of(cache: Cache, br: dict) -> str | None:
    """The uid of the pod a BindRequest is for: its Pod ownerReference, else the cached pod."""
    for o in br["metadata"].get("ownerReferences") or []:
        if o.get("kind") == "Pod" and o.get("uid"):
            return o["uid"]
    spec = br.get("spec") or {}
    pod = cache.get(RES_PODS, br["metadata"].get("namespace", ""), spec.get("podName", ""))
    return (pod or {}).get("metadata", {}).get("uid")


def _reserved_pod_uids(cache: Cache) -> set[str]:
    """Uids of the pods some cached claim is reserved for."""
    out = set()
    for claim in cache.objects.get(RES_CLAIMS, {}).values():
        for r in (claim.get("status") or {}).get("reservedFor") or []:
            if r.get("uid"):
                out.add(r["uid"])
    return out


class PodBackoff:
    """Failed bindings per pod, and when each such pod may be scheduled again (on ``clock``)."""

    def __init__(self, initial: float, maximum: float, clock: Callable[[], float]) -> None:
        self.initial = initial
        self.maximum = maximum
        self.clock = clock
        #: pod uid -> (failed bindings, not to be scheduled before this time)
        self._failures: dict[str, tuple[int, float]] = {}
        #: when a cycle last looked at the pods backing off: a wait that ended after it is still due
        self._checked = float("-inf")

    def record_failure(self, uid: str) -> None:
        failures = self._failures.get(uid, (0, 0.0))[0] + 1
        delay = 0.0
        if failures >= 2:
            delay = min(self.initial * 2 ** (failures - 2), self.maximum)
        self._failures[uid] = (failures, self.clock() + delay)
        if delay:
            log.info("pod %s: binding failed %d times; not scheduled again for %.1fs", uid, failures, delay)

    def waiting(self, pod: dict, now: float) -> bool:
        """Whether the pod is still backing off at ``now`` (a cycle's look at it)."""
        self._checked = max(self._checked, now)
        return self._failures.get(pod["metadata"].get("uid"), (0, now))[1] > now

    def forget_settled(self, snap: Snapshot) -> None:
        """Drop the failure counts of pods that are bound, finished or gone (once per cycle)."""
        self._checked = max(self._checked, self.clock())
        if not self._failures:
            return
        waiting = {p["metadata"].get("uid") for p in snap.pods.values()
                   if not (p.get("spec") or {}).get("nodeName") and is_active_pod(p)}
        for uid in [u for u in self._failures if u not in waiting]:
            del self._failures[uid]

    def next_due(self) -> float | None:
        """When the next pod backing off may be scheduled again, or None when none is waiting. A
        wait that ended since the last cycle looked stays due (a time already past) until a cycle
        has tried the pod: a loop that only woke for future times would otherwise miss it once its
        poll came late, and leave the pod pending until something else changed."""
        return min((t for _, t in self._failures.values() if t > self._checked), default=None)
