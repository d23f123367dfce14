"""The Kubernetes backend of the store interface: a real API server through the official client.

Every call goes through ``kubernetes.client.ApiClient`` as raw JSON (the responses are never turned
into the client's models: parsing a list into models is ten times slower, and the pods/binding
reply, a ``Status``, cannot be parsed as the ``V1Binding`` the generated method promises; here the
binding is judged by its HTTP status alone). Built-in kinds, ``resource.k8s.io`` and custom
resources share one path builder over :mod:`kai_core.api.kinds`, so a plugin's CRD needs no code.

Reads for the scheduler's cache come from **reflectors**, one per kind: a paginated list, then a
watch with bookmarks from the list's resourceVersion; a 410 Gone relists (and reports the
difference as events), a dropped or failed watch reconnects with capped exponential backoff, and a
``synced`` event is set after the first list. The reflectors feed one local, ordered event log
(a :class:`kai_core.api.eventlog.EventLog`, as the embedded store keeps), so this store offers the
cache's reads of the :class:`~kai_core.api.store.Store` protocol: :meth:`KubernetesStore.list_refs`,
:meth:`KubernetesStore.events_since` and :attr:`KubernetesStore.resource_version` count positions
in that log (a local sequence, not the server's resourceVersion, which is opaque and per-kind).
The :class:`kai_core.framework.cache.Cache` therefore works on both backends unchanged. Watch streams are read
line by line here rather than through the client's ``Watch`` helper, which leaves reconnection to
us only when given a timeout and, with ``deserialize=False``, fails on ERROR events (v37 raises
``KeyError: 'raw_object'`` instead of reporting the 410).

Writes send the object's ``metadata.resourceVersion`` as the precondition (a stale one gets 409
Conflict), and what the server returns is written through to the reflector's cache at once, so the
next scheduling cycle sees the BindRequest it just created even before the watch delivers it (a
late watch event never replaces a newer object; resourceVersions are compared as integers, which
is what etcd-backed servers hand out).

Every request (list pages, watch starts and retries included) first takes a token from a
client-side token bucket (``qps``, ``burst``; KAI's defaults are 50 and 300), since the client has
no rate limiter of its own. 429 is retried after ``Retry-After``; 5xx and connection failures are
retried for reads, and for writes only when the server sent ``Retry-After`` (a write whose outcome
is unknown is not repeated); retries are bounded, then the error surfaces as a
:mod:`kai_core.api.errors` exception. The ``kubernetes`` package is imported only when a store is built.
"""

from __future__ import annotations

import json
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from urllib.parse import quote

from kai_core.api.crds import builtin_crd_paths, load_crd
from kai_core.api.errors import (
    AlreadyExists,
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    MethodNotAllowed,
    NotFound,
    OutcomeUnknown,
    UnsupportedMediaType,
    redact_credentials,
)
from kai_core.api.eventlog import EventLog
from kai_core.api.kinds import KindRegistry, ResourceKind, builtin_kinds
from kai_core.api.objects import clone
from kai_core.api.store import Store, WatchEvent, select

log = logging.getLogger("kai.store.kubernetes")

_ERRORS: dict[int, type[ApiError]] = {
    400: BadRequest,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    410: Gone,
    415: UnsupportedMediaType,
    422: Invalid,
}
_MERGE_PATCH = "application/merge-patch+json"
_STRATEGIC_PATCH = "application/strategic-merge-patch+json"
_Key = tuple[str, str]


class KubeconfigError(Exception):
    """The kubeconfig (or the in-cluster service account) cannot be loaded; the message says why."""


class TokenBucket:
    """A token bucket like client-go's: ``qps`` tokens a second, at most ``burst`` kept.

    :meth:`acquire` reserves a token and sleeps until it is due, so concurrent callers queue fairly.
    ``qps <= 0`` turns limiting off. ``clock`` and ``sleep`` are injectable so tests can count waits
    instead of timing them; ``acquired``, ``waited`` (calls that had to wait) and ``waited_seconds``
    say what happened.
    """

    def __init__(
        self,
        qps: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if qps > 0 and (not isinstance(burst, int) or burst < 1):
            raise ValueError(f"burst must be a positive integer when qps is set, got {burst!r}")
        self.qps = float(qps)
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._last = clock()
        self.acquired = 0
        self.waited = 0
        self.waited_seconds = 0.0

    def acquire(self) -> float:
        """Take one token, sleeping until it is available; returns the seconds slept."""
        with self._lock:
            self.acquired += 1
            if self.qps <= 0:
                return 0.0
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
            self._last = now
            self._tokens -= 1.0
            wait = -self._tokens / self.qps if self._tokens < 0 else 0.0
            if wait > 0:
                self.waited += 1
                self.waited_seconds += wait
        if wait > 0:
            self._sleep(wait)
        return wait


def kind_from_crd(crd: Mapping) -> ResourceKind:
    """The kind a CustomResourceDefinition serves, at its storage version (no validation: the API
    server validates custom resources)."""
    spec = crd.get("spec") if isinstance(crd, Mapping) else None
    name = (crd.get("metadata") or {}).get("name") if isinstance(crd, Mapping) else None
    try:
        names = spec["names"]
        versions = spec["versions"]
        storage = next(v for v in versions if v.get("storage"))
        return ResourceKind(
            spec["group"],
            storage["name"],
            names["kind"],
            names["plural"],
            spec.get("scope", "Namespaced") == "Namespaced",
            has_status="status" in (storage.get("subresources") or {}),
            short_names=tuple(names.get("shortNames") or ()),
            singular=names.get("singular") or names["kind"].lower(),
            custom=True,
        )
    except (KeyError, TypeError, StopIteration, AttributeError) as exc:
        raise ValueError(
            f"CustomResourceDefinition {name!r}: needs spec.group, spec.names.kind/plural and a storage "
            f"version ({type(exc).__name__}: {exc})"
        ) from None


def default_kinds() -> list[ResourceKind]:
    """The built-in kinds plus the kinds of kai-core's own CRDs (BindRequest)."""
    return builtin_kinds() + [kind_from_crd(load_crd(p)) for p in builtin_crd_paths()]


def api_error(status: int, body: bytes | str | None, what: str) -> ApiError:
    """The :mod:`kai_core.api.errors` exception for an HTTP error reply (a ``Status`` body, ideally)."""
    status_obj: dict = {}
    if body:
        try:
            parsed = json.loads(body)
            if isinstance(parsed, dict):
                status_obj = parsed
        except ValueError:
            pass
    message = status_obj.get("message")
    text = _short(body)
    reason = status_obj.get("reason") or None
    if status == 401:
        return ApiError(f"{what}: unauthorized ({message or text or 'HTTP 401'}); check the kubeconfig credentials",
                        code=401, reason="Unauthorized")
    if status == 409 and reason == "AlreadyExists":
        return AlreadyExists(message or text, code=409)
    if not message and status_obj:  # a Status without a message
        message = f"{what}: HTTP {status}" + (f" {reason}" if reason else "")
    elif not message:  # no Status body: a proxy's page, or not a Kubernetes API server at all
        message = f"{what}: HTTP {status}" + (f" (not a Kubernetes API reply): {text}" if text else "")
    cls = _ERRORS.get(status, ApiError)
    return cls(message, code=status, reason=reason)


def _short(body) -> str:
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    return " ".join(text.split())[:200]  # one line: an HTML error page spans many


def _connection_problem(exc: Exception) -> str:
    """What went wrong with a connection, without urllib3's wrapping: ``Failed to establish a new
    connection: [Errno 111] Connection refused`` rather than the pool, the URL and the retry count."""
    reason = getattr(exc, "reason", None)  # MaxRetryError wraps the last connection error
    text = str(reason if isinstance(reason, BaseException) else exc)
    return re.sub(r"^\w+\(host=.*?\):\s*", "", text) or type(exc).__name__


def _never_sent(exc: Exception) -> bool:
    """Whether a failed call surely never reached the server: no connection could be made (refused,
    unresolvable, connect timeout, TLS handshake failure). Anything else may have gone out."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):  # the client's wrapper of a TLS failure, before any request
        return True
    reason = getattr(exc, "reason", None)  # MaxRetryError wraps the last connection error
    return any(isinstance(e, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
                          | urllib3.exceptions.SSLError | ConnectionRefusedError)
               for e in (exc, reason))


def _retry_after(headers) -> float | None:
    raw = headers.get("Retry-After") if headers is not None else None
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def _key(obj: dict) -> _Key:
    md = obj["metadata"]
    return (md.get("namespace", "") or "", md["name"])


def _rv_int(rv) -> int | None:
    return int(rv) if isinstance(rv, str) and rv.isdigit() else None


def _newer(a: dict, b: dict) -> bool:
    """Whether ``a`` is a later version than ``b`` of the same object (False when unknown)."""
    ra, rb = _rv_int(a["metadata"].get("resourceVersion")), _rv_int(b["metadata"].get("resourceVersion"))
    return ra is not None and rb is not None and ra > rb


def _same_version(a: dict, b: dict) -> bool:
    return a["metadata"].get("resourceVersion") == b["metadata"].get("resourceVersion")


class _Expired(Exception):
    """The watch's resourceVersion is too old (410): relist."""


class _Reflector:
    """List, then watch, one kind; keep its objects; feed the store's event log. One thread."""

    def __init__(self, store: KubernetesStore, kind: ResourceKind) -> None:
        self.store = store
        self.kind = kind
        self.objects: dict[_Key, dict] = {}
        self.tombstones: dict[_Key, int] = {}  # deleted by us at this resourceVersion
        self.rv = ""
        self.synced = threading.Event()
        self.lists = 0
        self.watches = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._resp = None
        self._thread = threading.Thread(target=self._run, name=f"kai-reflector-{kind.resource}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:
            _hang_up(resp)

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- loop ----------------------------------------------------------------------------------

    def _run(self) -> None:
        need_list = True
        failures = 0
        while not self._stop.is_set():
            try:
                if need_list:
                    self._relist()
                    need_list = False
                started = time.monotonic()
                if self._watch() == 0 and time.monotonic() - started < 1.0 and not self._stop.is_set():
                    # a watch that ends at once with nothing in it: back off, as client-go does
                    raise ApiError("very short watch: the server ended it at once without events",
                                   code=500, reason="ShortWatch")
                failures = 0
                self.last_error = None
            except _Expired:
                log.info("%s: watch resourceVersion %s is too old; relisting", self.kind.resource, self.rv)
                need_list = True
                failures = 0
                continue
            except Gone as exc:  # a list's continue token expired, or a relist raced a compaction
                log.info("%s: %s; relisting", self.kind.resource, exc.message)
                need_list = True
                failures += 1
                self.last_error = exc.message
            except ApiError as exc:
                failures += 1
                self.last_error = f"{exc.code} {exc.reason}: {exc.message}"
                log.warning("%s: list/watch failed (%s); retrying", self.kind.resource, self.last_error)
            except Exception as exc:  # a dropped connection, a malformed line: reconnect
                if self._stop.is_set():
                    break
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: watch broke (%s); reconnecting", self.kind.resource, self.last_error)
            if failures and not self._stop.is_set():
                self._stop.wait(self.store._backoff(failures))

    def _relist(self) -> None:
        items, rv = self.store._list_pages(self.kind)
        self.lists += 1
        with self.store._lock:
            new = {_key(o): o for o in items}
            events: list[tuple[str, dict]] = []
            for k, old in self.objects.items():
                if k not in new:
                    events.append(("DELETED", old))
            for k, obj in new.items():
                old = self.objects.get(k)
                if old is None:
                    events.append(("ADDED", obj))
                elif not _same_version(old, obj) and not _newer(old, obj):
                    events.append(("MODIFIED", obj))
                else:
                    new[k] = old  # what we wrote through is at least as new as the list
            self.objects = new
            self.tombstones.clear()
            self.rv = rv
            for typ, obj in events:
                self.store._emit(typ, self.kind.resource, obj)
        self.synced.set()

    def _watch(self) -> int:
        """One watch, until the server ends it; returns how many events (bookmarks too) came."""
        store = self.store
        timeout = store.watch_timeout * random.uniform(0.9, 1.1)
        query = {
            "watch": "true",
            "resourceVersion": self.rv,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(int(timeout)),
        }
        resp = store._request("GET", store._path(self.kind), query=query, stream=True,
                              timeout=(store.connect_timeout, timeout + 30),
                              what=f"watch {self.kind.resource}")
        self.watches += 1
        self._resp = resp
        received = 0
        try:
            if self._stop.is_set():
                return received
            for line in _lines(resp):
                if self._stop.is_set():
                    return received
                received += 1
                ev = json.loads(line)
                typ, obj = ev.get("type"), ev.get("object")
                if not isinstance(obj, dict):
                    raise ValueError(f"watch event without an object: {line[:200]}")
                if typ == "ERROR":
                    if obj.get("code") == 410:
                        raise _Expired()
                    what = f"watch {self.kind.resource}"
                    raise api_error(int(obj.get("code") or 500), json.dumps(obj), what)
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if typ == "BOOKMARK":
                    if rv:
                        self.rv = rv
                    continue
                if typ not in ("ADDED", "MODIFIED", "DELETED"):
                    raise ValueError(f"unknown watch event type {typ!r}")
                store._fill_type(self.kind, obj)
                with store._lock:
                    self.apply(typ, obj)
                    if rv:
                        self.rv = rv
            return received
        finally:
            self._resp = None
            _release(resp)

    # -- cache ---------------------------------------------------------------------------------

    def apply(self, typ: str, obj: dict) -> None:
        """Fold one event (from the watch, or a write of ours) into the cache; caller holds the lock.

        A version older than the cached one is ignored (a write-through got there first), and so is
        a late event for an object we deleted."""
        key = _key(obj)
        cur = self.objects.get(key)
        if typ == "DELETED":
            self.tombstones.pop(key, None)
            if cur is not None and not _newer(cur, obj):
                del self.objects[key]
                self.store._emit("DELETED", self.kind.resource, obj)
            return
        if cur is not None and (_same_version(cur, obj) or _newer(cur, obj)):
            return
        tomb = self.tombstones.get(key)
        rv = _rv_int(obj["metadata"].get("resourceVersion"))
        if tomb is not None and rv is not None and rv <= tomb:
            return
        self.objects[key] = obj
        self.store._emit("MODIFIED" if cur is not None else "ADDED", self.kind.resource, obj)

    def forget(self, obj: dict) -> None:
        """We deleted ``obj``: drop it now and ignore older events for it; caller holds the lock."""
        key = _key(obj)
        rv = _rv_int(obj["metadata"].get("resourceVersion"))
        if rv is not None:
            self.tombstones[key] = rv
        cur = self.objects.pop(key, None)
        if cur is not None:
            self.store._emit("DELETED", self.kind.resource, cur)


def _lines(resp) -> Iterator[str]:
    """The non-empty lines of a streamed (chunked) response, as they arrive."""
    buf = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield line.decode("utf-8")
    if buf.strip():
        yield buf.decode("utf-8")


def _hang_up(resp) -> None:
    """Unblock a thread reading ``resp`` by shutting its socket down."""
    conn = getattr(resp, "connection", None) or getattr(resp, "_connection", None)
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _release(resp) -> None:
    try:
        resp.close()
        resp.release_conn()
    except Exception:  # closing a broken connection may fail in many ways; it is gone either way
        pass


class ReportingStore:
    """:meth:`KubernetesStore.for_reports`: ``patch`` and ``create`` on the store's Events' token
    bucket; everything else as the store does it."""

    def __init__(self, store: KubernetesStore) -> None:
        self._store = store

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def patch(self, resource: str, name: str, namespace: str | None, patch: dict, subresource: str | None = None,
              *, strategic: bool = False) -> dict:
        return self._store.patch(resource, name, namespace, patch, subresource, strategic=strategic,
                                 limiter=self._store.event_limiter)

    def create(self, obj: dict) -> dict:
        return self._store.create(obj)  # an Event takes from the Events' bucket already


class KubernetesStore(Store):
    """The store on a real (or fake) API server. Build it from a ``kubernetes.client.Configuration``
    (:meth:`from_kubeconfig`, :meth:`in_cluster` do that for you).

    ``kinds`` are the kinds it can address (default: built-ins plus kai-core's CRDs; add a plugin's
    with :meth:`add_kind` or :meth:`add_crd`). ``qps``/``burst`` set the client-side rate limit
    (``qps=0`` turns it off); ``page_size`` is the list page; ``watch_timeout`` the server-side watch
    timeout in seconds; ``max_retries`` bounds retries of one call; ``sync_timeout`` is how long
    :meth:`list_refs` waits for a reflector's first list; ``history`` bounds the local event log.
    ``sleep`` is what retry waits and the rate limiter call (tests pass a recorder).
    """

    def __init__(
        self,
        configuration,
        *,
        kinds: Iterable[ResourceKind] | None = None,
        qps: float = 50.0,
        burst: int = 300,
        page_size: int = 500,
        watch_timeout: float = 300.0,
        connect_timeout: float = 10.0,
        request_timeout: float = 60.0,
        max_retries: int = 5,
        max_retry_wait: float = 30.0,
        backoff_base: float = 0.2,
        backoff_cap: float = 10.0,
        sync_timeout: float = 60.0,
        history: int = 100_000,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import copy

        import urllib3
        from kubernetes import client

        if page_size < 1 or max_retries < 0 or history < 1:
            raise ValueError("page_size and history must be positive and max_retries not negative")
        cfg = copy.deepcopy(configuration)
        # our own retry policy sees every status; urllib3 only retries connections never made
        cfg.retries = urllib3.Retry(total=3, connect=3, read=0, redirect=0, status=0, other=0,
                                    respect_retry_after_header=False, raise_on_status=False)
        cfg.connection_pool_maxsize = max(cfg.connection_pool_maxsize or 0, 32)
        self.configuration = cfg
        self.api = client.ApiClient(cfg)
        #: the server, as messages name it (a password in the URL is never printed)
        self.host = redact_credentials(cfg.host)
        self.kinds = KindRegistry(default_kinds() if kinds is None else kinds)
        self.limiter = TokenBucket(qps, burst, clock=clock, sleep=sleep)
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.sync_timeout = sync_timeout
        self._sleep = sleep
        #: called right before each write (not GET) is sent, after the rate limiter let it go; it
        #: raises to veto the write, which then surely was not sent (a leader's fence: a write that
        #: waited for a token, or for a paused process to resume, is checked again when it goes)
        self.write_guard: Callable[[], None] | None = None
        #: kinds whose get() is answered from their reflector's cache (see :meth:`read_from_cache`)
        self.cached_reads: set[str] = set()
        self._read_fresh: set[tuple[str, str, str]] = set()
        #: Events have a token bucket of their own (the same qps and burst), as client-go's event
        #: broadcaster has a client of its own: reporting does not slow down the work
        self.event_limiter = TokenBucket(qps, burst, clock=clock, sleep=sleep)
        #: how many HTTP requests were sent, and how many of them were retries
        self.requests = 0
        self.retries = 0
        self._lock = threading.RLock()
        self._reflectors: dict[str, _Reflector] = {}
        self._events = EventLog(history, unit="local event log position")
        self._closed = False

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_kubeconfig(
        cls, path: str | None = None, context: str | None = None, **kwargs
    ) -> KubernetesStore:
        """A store for the cluster of ``path`` (default: ``$KUBECONFIG`` or ``~/.kube/config``) and
        ``context`` (default: the current one). Raises KubeconfigError saying what is wrong."""
        from kubernetes import client, config

        cfg = client.Configuration()
        try:
            config.load_kube_config(config_file=path, context=context, client_configuration=cfg,
                                    persist_config=False)
        except Exception as exc:  # the loader raises ConfigException, OSError, YAML and key errors
            where = path or "the default kubeconfig ($KUBECONFIG or ~/.kube/config)"
            raise KubeconfigError(f"cannot load {where}: {type(exc).__name__}: {exc}") from exc
        return cls(cfg, **kwargs)

    @classmethod
    def in_cluster(cls, **kwargs) -> KubernetesStore:
        """A store for the cluster this pod runs in (its service account). Raises KubeconfigError."""
        from kubernetes import client, config

        cfg = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=cfg)
        except Exception as exc:
            raise KubeconfigError(f"not running in a cluster, or no service account: {exc}") from exc
        return cls(cfg, **kwargs)

    def add_kind(self, kind: ResourceKind) -> None:
        """Make ``kind`` addressable (a plugin's kind)."""
        self.kinds.add(kind)

    def add_crd(self, crd: Mapping) -> ResourceKind:
        """Make the kind of a CRD addressable; returns it."""
        kind = kind_from_crd(crd)
        self.kinds.add(kind)
        return kind

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, resources: Iterable[str]) -> None:
        """Start a reflector for each resource (those already running are left alone)."""
        for r in resources:
            self._reflector(r)

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        """Wait until every started reflector has listed once; returns whether they all did."""
        deadline = time.monotonic() + (self.sync_timeout if timeout is None else timeout)
        for refl in list(self._reflectors.values()):
            if not refl.synced.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    @property
    def synced(self) -> bool:
        """Whether every started reflector has listed once (what ``/readyz`` reports)."""
        return all(r.synced.is_set() for r in list(self._reflectors.values()))

    def reflector_stats(self) -> dict[str, dict]:
        """Per resource: lists done, watches opened, synced, last error."""
        return {
            r: {"lists": f.lists, "watches": f.watches, "synced": f.synced.is_set(),
                "last_error": f.last_error, "resource_version": f.rv}
            for r, f in list(self._reflectors.items())
        }

    def close(self) -> None:
        """Stop every reflector and close the connections."""
        self._closed = True
        refls = list(self._reflectors.values())
        for r in refls:
            r.stop()
        for r in refls:
            r.join(10)
        self.api.close()

    def __enter__(self) -> KubernetesStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _reflector(self, resource: str) -> _Reflector:
        kind = self.kinds.get(resource)
        with self._lock:
            if self._closed:
                raise RuntimeError("the Kubernetes store is closed")
            refl = self._reflectors.get(kind.resource)
            if refl is None:
                refl = self._reflectors[kind.resource] = _Reflector(self, kind)
                refl.start()
        return refl

    def read_from_cache(self, *resources: str) -> None:
        """Answer get() and list() of these kinds from their reflectors' caches (reflectors started
        here if they are not running yet), as controller-runtime's client reads from its
        informers. Until a kind has listed, and for an object not in the cache or whose last write
        here failed (a 409 or an unknown outcome: the cache may be behind), get() asks the server.
        Writes stay conditional on the resourceVersion read, so a stale copy costs a 409 and a
        fresh read, never a lost update."""
        for resource in resources:
            kind = self.kinds.get(resource)
            self.cached_reads.add(kind.resource)
            self._reflector(kind.resource)

    # -- the cache API (what kai_core.framework.cache.Cache uses) -------------------------------------------

    @property
    def resource_version(self) -> int:
        """The position of the latest event in the local log (not a server resourceVersion)."""
        return self._events.resource_version

    def list_refs(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict], str]:
        """The reflector's objects (not copies: do not mutate them) and the local log position they
        reflect. Starts the kind's reflector if needed and waits for its first list."""
        kind = self.kinds.get(resource)
        refl = self._reflector(kind.resource)
        if not refl.synced.wait(self.sync_timeout):
            raise ApiError(
                f"{kind.resource}: the first list did not complete within {self.sync_timeout:g}s "
                f"({refl.last_error or 'no error reported'})",
                code=504,
                reason="Timeout",
            )
        with self._lock:
            objs = list(refl.objects.values())
            seq = str(self._events.resource_version)
        return select(objs, kind.namespaced, namespace, label_selector, field_selector), seq

    def events_since(
        self, resource_version: int, resources: set[str] | None = None
    ) -> tuple[list[WatchEvent], int]:
        """Every reflected change after log position ``resource_version`` (Gone once the bounded
        log dropped it), and the current position."""
        with self._lock:
            return self._events.since(resource_version, resources)

    def _emit(self, typ: str, resource: str, obj: dict) -> None:
        """Append one event to the local log; caller holds the lock."""
        self._events.append(typ, resource, obj)

    def _write_through(self, kind: ResourceKind, obj: dict | None, deleted: bool = False) -> None:
        refl = self._reflectors.get(kind.resource)
        if refl is None or obj is None or not refl.synced.is_set():
            return
        if not isinstance(obj.get("metadata"), dict) or not obj["metadata"].get("name"):
            return
        self._fill_type(kind, obj)
        with self._lock:
            if deleted:
                refl.forget(obj)
            else:
                refl.apply("MODIFIED", obj)

    # -- HTTP ----------------------------------------------------------------------------------

    def _path(self, kind: ResourceKind, namespace: str | None = None, name: str | None = None,
              subresource: str | None = None) -> str:
        path = "/api/v1" if not kind.group else f"/apis/{kind.group}/{kind.version}"
        if kind.namespaced and namespace:
            path += f"/namespaces/{quote(namespace, safe='')}"
        path += f"/{kind.plural}"
        if name is not None:
            if not isinstance(name, str) or not name:
                raise BadRequest(f"{kind.resource}: a name is required")
            path += f"/{quote(name, safe='')}"
        if subresource:
            path += f"/{subresource}"
        return path

    def _backoff(self, attempt: int) -> float:
        base = min(self.backoff_cap, self.backoff_base * (2 ** max(0, attempt - 1)))
        return base * random.uniform(0.5, 1.0)

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        query: dict[str, str] | None = None,
        body=None,
        content_type: str = "application/json",
        stream: bool = False,
        timeout=None,
        limiter: TokenBucket | None = None,
    ):
        """Send one API call (rate-limited by ``limiter``, the store's own by default; retried as
        the module says). Returns the parsed JSON reply, or the open response when ``stream``;
        raises a kai_core.api.errors exception."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        attempt = 0
        limiter = limiter or self.limiter
        while True:
            limiter.acquire()
            headers = {"Accept": "application/json", "Content-Type": content_type}
            req = self.api.param_serialize(
                method=method,
                resource_path=path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            if method != "GET" and self.write_guard is not None:
                self.write_guard()
            with self._lock:
                self.requests += 1
            retry_after = None
            answered = False
            try:
                resp = self.api.call_api(*req, _request_timeout=timeout or (self.connect_timeout,
                                                                            self.request_timeout))
            except (urllib3.exceptions.HTTPError, OSError, ApiException) as exc:
                # ApiException here is the client's wrapper of a TLS failure (status 0)
                detail = exc.reason if isinstance(exc, ApiException) else _connection_problem(exc)
                message = f"{what}: cannot reach the API server at {self.host}: {detail}"
                if method != "GET" and not _never_sent(exc):
                    # the request went out and its reply was lost or timed out: it may have been applied
                    raise OutcomeUnknown(f"{what}: no reply from the API server at {self.host} after the "
                                         f"request was sent ({detail}); it may have been applied") from None
                err = ApiError(message, code=503, reason="ServiceUnavailable")
                retriable = method == "GET"
            else:
                raw = resp.response
                try:
                    if stream and 200 <= resp.status < 300:
                        return raw
                    data = resp.read()
                except (urllib3.exceptions.HTTPError, OSError) as exc:  # the reply was cut mid-way
                    _release(raw)
                    detail = f"the reply ({resp.status}) was cut: {_connection_problem(exc)}"
                    if method != "GET":
                        raise OutcomeUnknown(f"{what}: {detail}; the request may have been applied",
                                             code=503) from None
                    err = ApiError(f"{what}: {detail}", code=503, reason="ServiceUnavailable")
                    retriable = True
                else:
                    _release(raw)
                    answered = True  # the server replied with a status of its own
                    if 200 <= resp.status < 300:
                        try:
                            return json.loads(data) if data else None
                        except ValueError:
                            raise ApiError(f"{what}: the API server's reply is not JSON: {_short(data)}",
                                           code=500) from None
                    err = api_error(resp.status, data, what)
                    retry_after = _retry_after(resp.headers)
                    retriable = resp.status == 429 or (
                        resp.status >= 500 and (method == "GET" or retry_after is not None)
                    )
            if not retriable or attempt >= self.max_retries:
                if method != "GET" and err.code >= 500 and answered:
                    # a 5xx after the request was sent: the server may have applied it
                    raise OutcomeUnknown(err.message, code=err.code, reason=err.reason) from None
                raise err
            attempt += 1
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            delay = min(delay, self.max_retry_wait)
            with self._lock:
                self.retries += 1
            # debug, as client-go does: a retry that succeeds is no news, one that does not
            # surfaces as the error (and the reflectors warn about failed lists and watches)
            log.debug("%s (%s %s); retry %d/%d in %.1fs", err.message, err.code, err.reason, attempt,
                      self.max_retries, delay)
            self._sleep(delay)

    def _fill_type(self, kind: ResourceKind, obj: dict) -> dict:
        """List items of built-in kinds come without apiVersion and kind: put them back."""
        obj.setdefault("apiVersion", kind.api_version)
        obj.setdefault("kind", kind.kind)
        return obj

    def _list_pages(self, kind: ResourceKind, namespace: str | None = None, label_selector: str | None = None,
                    field_selector: str | None = None) -> tuple[list[dict], str]:
        """A consistent list in pages of ``page_size``; an expired continue token restarts the list
        once without paging, as client-go's pager does."""
        base: dict[str, str] = {}
        if label_selector:
            base["labelSelector"] = label_selector
        if field_selector:
            base["fieldSelector"] = field_selector
        path = self._path(kind, namespace)
        what = f"list {kind.resource}"
        items: list[dict] = []
        query = {**base, "limit": str(self.page_size)}
        while True:
            try:
                reply = self._request("GET", path, query=query, what=what)
            except Gone:
                if "continue" not in query:
                    raise
                log.info("%s: continue token expired; listing again without pages", kind.resource)
                items = []
                query = dict(base)
                continue
            if not isinstance(reply, dict) or not isinstance(reply.get("items", []), list):
                raise ApiError(f"{what}: the reply is not a list", code=500)
            for o in reply.get("items") or []:
                items.append(self._fill_type(kind, o))
            md = reply.get("metadata") or {}
            token = md.get("continue")
            if not token:
                return items, str(md.get("resourceVersion") or "")
            query = {**base, "limit": str(self.page_size), "continue": token}

    # -- the Store interface -------------------------------------------------------------------

    def get(self, resource: str, name: str, namespace: str | None = None, *, fresh: bool = False) -> dict:
        """From the watch cache for a kind of :meth:`read_from_cache` (unless ``fresh``), else from
        the server."""
        kind = self.kinds.get(resource)
        ns = (namespace or "default") if kind.namespaced else None
        key = (kind.resource, ns or "", name)
        if not fresh and kind.resource in self.cached_reads and key not in self._read_fresh:
            refl = self._reflectors.get(kind.resource)
            if refl is not None and refl.synced.is_set():
                with self._lock:
                    cached = refl.objects.get(key[1:])
                if cached is not None:
                    return clone(cached)
        obj = self._request("GET", self._path(kind, ns, name), what=f"get {kind.resource} {name}")
        self._read_fresh.discard(key)
        return self._fill_type(kind, obj)

    def _wrote(self, kind: ResourceKind, ns: str | None, name: str | None, call: Callable[[], dict]) -> dict:
        """``call()``, a write of one object; after a 409 or an unknown outcome, the next get() of
        that object asks the server (see ``cached_reads``)."""
        if kind.resource not in self.cached_reads or not name:
            return call()
        key = (kind.resource, ns or "", name)
        try:
            out = call()
        except (Conflict, OutcomeUnknown):
            self._read_fresh.add(key)
            raise
        self._read_fresh.discard(key)
        return out

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict], str]:
        """A fresh list from the server (paginated); the resourceVersion is the server's. For a kind
        read from the cache (:meth:`read_from_cache`) whose reflector has listed: copies of the
        cached objects, and the server resourceVersion the cache has reached."""
        kind = self.kinds.get(resource)
        refl = self._reflectors.get(kind.resource) if kind.resource in self.cached_reads else None
        if refl is not None and refl.synced.is_set():
            with self._lock:
                objs, rv = list(refl.objects.values()), refl.rv
            chosen = select(objs, kind.namespaced, namespace, label_selector, field_selector)
            return [clone(o) for o in chosen], rv
        return self._list_pages(kind, namespace if kind.namespaced else None, label_selector, field_selector)

    def create(self, obj: dict) -> dict:
        kind, obj = self._kind_of(obj)
        md = obj.setdefault("metadata", {})
        ns = (md.get("namespace") or "default") if kind.namespaced else None
        if ns:
            md["namespace"] = ns
        what = f"create {kind.kind} {md.get('name') or (md.get('generateName') or '') + '*'}"
        limiter = self.event_limiter if kind.kind == "Event" else self.limiter
        out = self._fill_type(kind, self._request("POST", self._path(kind, ns), body=obj, what=what,
                                                  limiter=limiter))
        self._write_through(kind, clone(out))
        return out

    def for_reports(self) -> ReportingStore:
        """This store as a component's reports use it (the binder's PodBound condition and Events):
        their calls take from the Events' token bucket, not from the one the work itself uses, as
        client-go's event recorder has a client of its own."""
        return ReportingStore(self)

    def update(self, obj: dict) -> dict:
        return self._put(obj, None)

    def update_status(self, obj: dict) -> dict:
        return self._put(obj, "status")

    def _put(self, obj: dict, subresource: str | None) -> dict:
        kind, obj = self._kind_of(obj)
        md = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        name = md.get("name")
        if not name:
            raise Invalid(f"{kind.kind}: metadata.name is required")
        if subresource == "status" and not kind.has_status:
            raise NotFound(f"the server could not find the requested resource ({kind.resource}/status)")
        ns = (md.get("namespace") or "default") if kind.namespaced else None
        path = self._path(kind, ns, name, subresource)
        what = f"update {kind.kind} {name}" + ("/status" if subresource else "")
        out = self._fill_type(kind, self._wrote(kind, ns, name,
                                                lambda: self._request("PUT", path, body=obj, what=what)))
        self._write_through(kind, clone(out))
        return out

    def patch(
        self,
        resource: str,
        name: str,
        namespace: str | None,
        patch: dict,
        subresource: str | None = None,
        *,
        strategic: bool = False,
        limiter: TokenBucket | None = None,
    ) -> dict:
        """A JSON merge patch, or with ``strategic`` a strategic merge patch (lists the Kubernetes
        types tag with a merge key, such as a pod's conditions, merge item by item). A strategic
        merge patch of a custom resource is refused here, unsent: the API server answers 415.
        ``limiter``: the token bucket the call takes from (the store's own by default; see
        :meth:`for_reports`)."""
        kind = self.kinds.get(resource)
        if not isinstance(patch, dict):
            raise BadRequest("a merge patch must be a JSON object")
        if subresource not in (None, "status"):
            raise NotFound(f"the server could not find the requested resource ({resource}/{subresource})")
        if strategic and kind.custom:
            raise UnsupportedMediaType(
                f'patch {kind.kind} "{name}": a strategic merge patch of a custom resource is refused by the '
                "API server; send a JSON merge patch")
        ns = (namespace or "default") if kind.namespaced else None
        path = self._path(kind, ns, name, subresource)
        ctype = _STRATEGIC_PATCH if strategic else _MERGE_PATCH
        what = f"patch {kind.kind} {name}" + ("/status" if subresource else "")
        out = self._wrote(kind, ns, name, lambda: self._request("PATCH", path, body=patch, content_type=ctype,
                                                                 what=what, limiter=limiter))
        out = self._fill_type(kind, out)
        self._write_through(kind, clone(out))
        return out

    def delete(self, resource: str, name: str, namespace: str | None = None, *, uid: str | None = None) -> None:
        kind = self.kinds.get(resource)
        ns = (namespace or "default") if kind.namespaced else None
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        path = self._path(kind, ns, name)
        out = self._request("DELETE", path, body=body, what=f"delete {kind.kind} {name}")
        if isinstance(out, dict) and out.get("kind") != "Status" and isinstance(out.get("metadata"), dict):
            out = self._fill_type(kind, out)
            gone = not out["metadata"].get("deletionTimestamp")
            self._write_through(kind, out, deleted=gone)

    def bind(self, namespace: str, pod_name: str, node_name: str, pod_uid: str | None = None, *,
             annotations: dict[str, str] | None = None) -> None:
        """POST pods/binding (the server merges its ``annotations`` into the pod's). The reply is a
        ``Status`` (201), judged by its HTTP status: the generated ``create_namespaced_pod_binding``
        would try to parse it as a ``V1Binding`` and fail after the bind succeeded."""
        if not isinstance(node_name, str) or not node_name:
            raise Invalid(f'Binding "{pod_name}" is invalid: target.name: Required value')
        ns = namespace or "default"
        md: dict = {"name": pod_name, "namespace": ns}
        if pod_uid:
            md["uid"] = pod_uid
        if annotations:
            md["annotations"] = dict(annotations)
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": md,
                "target": {"apiVersion": "v1", "kind": "Node", "name": node_name}}
        path = self._path(self.kinds.get("pods"), ns, pod_name, "binding")
        self._request("POST", path, body=body, what=f"bind pod {ns}/{pod_name} to {node_name}")

    def watch(
        self, resource: str, resource_version: str, timeout: float | None = None
    ) -> Iterator[WatchEvent]:
        """A direct watch on the server (no reflector): ADDED/MODIFIED/DELETED/BOOKMARK events
        after ``resource_version``, until ``timeout`` seconds (the server ends the stream) or the
        connection drops. Raises Gone for a compacted version."""
        kind = self.kinds.get(resource)
        query = {"watch": "true", "allowWatchBookmarks": "true"}
        if resource_version:
            query["resourceVersion"] = str(resource_version)
        read_timeout = None
        if timeout is not None:
            query["timeoutSeconds"] = str(max(1, int(timeout)))
            read_timeout = timeout + 30
        resp = self._request("GET", self._path(kind), query=query, stream=True, what=f"watch {kind.resource}",
                             timeout=(self.connect_timeout, read_timeout))
        return self._watch_events(kind, resp)

    def _watch_events(self, kind: ResourceKind, resp) -> Iterator[WatchEvent]:
        try:
            for line in _lines(resp):
                ev = json.loads(line)
                typ, obj = ev.get("type"), ev.get("object") or {}
                if typ == "ERROR":
                    raise api_error(int(obj.get("code") or 500), json.dumps(obj), f"watch {kind.resource}")
                if typ != "BOOKMARK":
                    self._fill_type(kind, obj)
                rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
                yield WatchEvent(typ, kind.resource, obj, rv)
        finally:
            _release(resp)

    # -- discovery -----------------------------------------------------------------------------

    def server_groups(self) -> dict[str, list[str]]:
        """The API groups the server serves and their versions, preferred first (``""`` is core)."""
        out: dict[str, list[str]] = {}
        core = self._request("GET", "/api", what="discover /api") or {}
        out[""] = list(core.get("versions") or [])
        groups = self._request("GET", "/apis", what="discover /apis") or {}
        for g in groups.get("groups") or []:
            versions = [v.get("version") for v in g.get("versions") or []]
            preferred = (g.get("preferredVersion") or {}).get("version")
            if preferred in versions:
                versions.remove(preferred)
                versions.insert(0, preferred)
            out[g.get("name", "")] = versions
        return out

    # -- helpers -------------------------------------------------------------------------------

    def _kind_of(self, obj) -> tuple[ResourceKind, dict]:
        """The kind of ``obj`` and a copy of it at the version the kind is addressed with (older
        ``resource.k8s.io`` versions converted as the embedded store does)."""
        if not isinstance(obj, dict):
            raise BadRequest(f"an object must be a mapping, got {type(obj).__name__}")
        kind = self.kinds.for_object(obj)
        obj = clone(obj)
        version = obj["apiVersion"].rpartition("/")[2]
        if version != kind.version:
            obj = kind.convert_from[version](obj)
            obj["apiVersion"] = kind.api_version
        return kind, obj
