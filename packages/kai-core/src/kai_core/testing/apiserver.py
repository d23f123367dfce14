"""A fake Kubernetes API server: an :class:`~kai_core.apiserver.store.EmbeddedStore` served over HTTP.

It speaks the REST conventions the official ``kubernetes`` client, ``kubectl`` and our Kubernetes
store backend use, so code that talks to a real cluster can be tested on a laptop without one:

* paths ``/api/v1/...`` and ``/apis/<group>/<version>/...``, cluster-scoped and namespaced, with
  the ``status`` and (for pods) ``binding`` subresources; discovery (``/api``, ``/apis``,
  ``/apis/<group>``, ``/api/v1``, ``/apis/<group>/<version>``) and ``/version``;
* list with ``resourceVersion``, label and field selectors, and pagination (``limit`` and
  ``continue``, served from a consistent snapshot as etcd does); items of built-in kinds carry no
  ``kind``/``apiVersion``, as on a real server;
* watch (``?watch=1``) streaming JSON lines, from a ``resourceVersion`` (or from "now" with an ADDED
  event per object), with ``allowWatchBookmarks`` and ``timeoutSeconds``; a version older than the
  kept history gets an ERROR event carrying a 410 Status;
* create (201), update with the ``resourceVersion`` precondition (409), merge patch, JSON patch,
  delete with preconditions; errors are ``Status`` bodies with the store's codes (404, 409, 410,
  422, ...); ``pods/binding`` answers 201 with a ``Status``, as the real server does (the reply the
  ``kubernetes`` client cannot parse as a ``V1Binding``).

Faults can be injected: :meth:`FakeApiServer.fail_next` (5xx, or 429 with ``Retry-After``),
:meth:`FakeApiServer.cut_replies` (the request is carried out, then its reply is cut: before the
headers, after them, or mid-body, as a proxy or load balancer resetting connections does),
:meth:`FakeApiServer.cut_watches` (connections dropped mid-stream), :meth:`FakeApiServer.compact`
(every resourceVersion handed out so far becomes too old: watches get 410, continue tokens expire).
Every request is recorded in :attr:`FakeApiServer.requests` with its RBAC-style verb, so tests can
count API calls.

What it leaves out: authentication and authorization (any credentials are accepted), server-side
apply, most of strategic merge patch (a strategic merge patch of a built-in kind merges the lists
of :data:`kai_core.apiserver.store.STRATEGIC_MERGE_KEYS` by key, pod and node conditions by
``type``, and replaces any other list; ``$patch`` and similar keys are refused),
``deletecollection``, protobuf, Table output, OpenAPI documents, and API versions other than the
one each kind is stored in.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from kai_core.api.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Gone,
    Invalid,
    MethodNotAllowed,
    NotFound,
    UnsupportedMediaType,
)
from kai_core.api.kinds import ResourceKind, builtin_kinds
from kai_core.api.objects import clone, parse_field_selector, parse_label_selector
from kai_core.apiserver.store import CRD_RESOURCE, EmbeddedStore

log = logging.getLogger("kai.testing.apiserver")

#: What ``/version`` reports.
SERVER_VERSION = {
    "major": "1",
    "minor": "36",
    "gitVersion": "v1.36.0-kai-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_OBJECT_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
_STATUS_VERBS = ["get", "patch", "update"]
_MERGE_PATCH = "application/merge-patch+json"
_STRATEGIC_PATCH = "application/strategic-merge-patch+json"
_JSON_PATCH = "application/json-patch+json"
_STRATEGIC_DIRECTIVES = ("$patch", "$retainKeys", "$deleteFromPrimitiveList", "$setElementOrder")
_REASONS = {500: "InternalError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "Timeout",
            429: "TooManyRequests"}
_BUILTIN_RESOURCES = frozenset([k.resource for k in builtin_kinds()] + [CRD_RESOURCE])
#: kinds whose delete answers with the deleted object (``ReturnDeletedObject`` in kube-apiserver's
#: registry); any other kind answers a ``Status`` of ``Success`` once the object is gone
_RETURN_DELETED_OBJECT = frozenset({
    "namespaces", "persistentvolumes", "persistentvolumeclaims", "pods", "podtemplates", "resourcequotas",
    "services", "serviceaccounts", "deviceclasses.resource.k8s.io", "resourceclaims.resource.k8s.io",
    "resourceclaimtemplates.resource.k8s.io", "resourceslices.resource.k8s.io",
    "resourcepoolstatusrequests.resource.k8s.io", "csidrivers.storage.k8s.io", "csinodes.storage.k8s.io",
    "storageclasses.storage.k8s.io", "volumeattachments.storage.k8s.io",
    "volumeattributesclasses.storage.k8s.io",
})
#: The marker object :meth:`FakeApiServer.compact` writes to move the resourceVersion on.
COMPACTION_MARKER = ("kube-system", "kai-fake-apiserver-compaction")


class _Timeout(ApiError):
    code = 504
    reason = "Timeout"


@dataclass(frozen=True)
class RequestRecord:
    """One request the server answered.

    ``verb`` is the RBAC verb (get, list, watch, create, update, patch, delete), or ``""`` for
    discovery and other non-resource paths; ``resource`` is the resource string (``pods``,
    ``bindrequests.scheduling.run.ai``); ``subresource`` is ``status``, ``binding`` or ``""``.
    """

    method: str
    path: str
    query: dict[str, str]
    status: int
    verb: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def call(self) -> str:
        """``verb resource[/subresource]``, e.g. ``create pods/binding``; the path for non-resource calls."""
        if not self.verb:
            return f"{self.method} {self.path}"
        sub = f"/{self.subresource}" if self.subresource else ""
        return f"{self.verb} {self.resource}{sub}"


@dataclass
class _Fault:
    status: int
    remaining: int
    retry_after: int | None
    verb: str | None
    resource: str | None
    method: str | None
    message: str

    def matches(self, method: str, verb: str, resource: str) -> bool:
        return (
            (self.method is None or self.method == method)
            and (self.verb is None or self.verb == verb)
            and (self.resource is None or self.resource == resource)
        )


#: how :meth:`FakeApiServer.cut_replies` cuts a reply
CUT_MODES = ("before-headers", "after-headers", "mid-body")


@dataclass
class _Cut:
    mode: str
    remaining: int
    verb: str | None
    resource: str | None
    method: str | None

    def matches(self, method: str, verb: str, resource: str) -> bool:
        return (
            (self.method is None or self.method == method)
            and (self.verb is None or self.verb == verb)
            and (self.resource is None or self.resource == resource)
        )


@dataclass(eq=False)
class _WatchStream:
    resource: str
    cut: threading.Event = field(default_factory=threading.Event)
    bookmark: threading.Event = field(default_factory=threading.Event)
    wake: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Route:
    """What a resource path names."""

    kind: ResourceKind
    namespace: str | None
    name: str | None
    subresource: str


class _ClientGone(Exception):
    """The client closed the connection; nothing more to write."""


class FakeApiServer:
    """Serve ``store`` (a fresh :class:`EmbeddedStore` when None) on ``host`` and an ephemeral port.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. ``bookmark_interval`` is how
    often watches that allow bookmarks get one (seconds); :meth:`send_bookmarks` sends one at once.
    ``poll_interval`` is how often an idle watch looks for new events.
    """

    def __init__(
        self,
        store: EmbeddedStore | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bookmark_interval: float = 5.0,
        poll_interval: float = 0.02,
        max_snapshots: int = 64,
    ) -> None:
        if bookmark_interval <= 0 or poll_interval <= 0:
            raise ValueError("bookmark_interval and poll_interval must be positive numbers of seconds")
        self.store = store if store is not None else EmbeddedStore()
        self.host = host
        self.bookmark_interval = bookmark_interval
        self.poll_interval = poll_interval
        self.requests: list[RequestRecord] = []
        self._requested_port = port
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._cuts: list[_Cut] = []
        self._watches: set[_WatchStream] = set()
        self._connections: set[socket.socket] = set()
        self._snapshots: OrderedDict[str, tuple[list[dict], str]] = OrderedDict()
        self._max_snapshots = max_snapshots
        self._compacted_rv = 0
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeApiServer:
        """Bind the port and serve in a background thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("the fake API server is already running")
        self._stopping.clear()
        httpd = ThreadingHTTPServer((self.host, self._requested_port), _Handler)
        httpd.daemon_threads = True
        httpd.fake = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="kai-fake-apiserver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """End every watch and connection and release the port."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        with self._lock:
            for w in self._watches:
                w.wake.set()
            conns = list(self._connections)
        httpd.shutdown()
        for conn in conns:
            _shutdown_socket(conn)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the fake API server is not running: call start() first")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{self.host}:{self.port}"

    # -- clients -------------------------------------------------------------------------------

    def client_configuration(self):
        """A ``kubernetes.client.Configuration`` pointed at this server (no proxy, no TLS)."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        cfg.proxy = None
        cfg.api_key = {"authorization": "fake-token"}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return cfg

    def api_client(self):
        """A ``kubernetes.client.ApiClient`` for this server; close it when done."""
        from kubernetes import client

        return client.ApiClient(self.client_configuration())

    def write_kubeconfig(self, path: str | os.PathLike, namespace: str = "default") -> Path:
        """Write a kubeconfig whose current context points at this server; returns its path."""
        import yaml

        path = Path(path)
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kai-fake", "cluster": {"server": self.url}}],
            "users": [{"name": "kai-fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "kai-fake", "context": {"cluster": "kai-fake", "user": "kai-fake",
                                                          "namespace": namespace}}],
            "current-context": "kai-fake",
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    # -- request log ---------------------------------------------------------------------------

    def calls(self, *, include_discovery: bool = False) -> list[str]:
        """The recorded requests as ``verb resource[/subresource]`` strings, in order."""
        with self._lock:
            records = list(self.requests)
        return [r.call for r in records if include_discovery or r.verb]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self.requests.append(rec)

    # -- faults --------------------------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        *,
        retry_after: int | None = None,
        verb: str | None = None,
        resource: str | None = None,
        method: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``count`` matching requests with ``status`` and a Status body, without
        touching the store. Match on the RBAC ``verb``, the ``resource`` string and/or the HTTP
        ``method`` (each None matches anything). ``retry_after`` adds a ``Retry-After`` header."""
        if count < 1 or not 400 <= status <= 599:
            raise ValueError(
                f"fail_next needs count >= 1 and an error status, got count={count}, status={status}"
            )
        reason = _REASONS.get(status, "InternalError")
        fault = _Fault(status, count, retry_after, verb, resource, method.upper() if method else None,
                       message or f"injected fault: {status} {reason}")
        with self._lock:
            self._faults.append(fault)

    def throttle_next(self, count: int = 1, retry_after: int = 1, **match) -> None:
        """Answer the next ``count`` matching requests with 429 Too Many Requests and ``Retry-After``."""
        self.fail_next(count, 429, retry_after=retry_after,
                       message="injected fault: too many requests, please try again later", **match)

    def cut_replies(self, count: int = 1, mode: str = "after-headers", *, verb: str | None = None,
                    resource: str | None = None, method: str | None = None) -> None:
        """Carry out the next ``count`` matching requests, then cut their replies: ``before-headers``
        (the connection closes with nothing sent), ``after-headers`` (status and headers, no body)
        or ``mid-body`` (half the body). The client cannot tell whether its write was applied, and
        it was. Matching as :meth:`fail_next` (watches are never cut this way: see
        :meth:`cut_watches`)."""
        if count < 1 or mode not in CUT_MODES:
            raise ValueError(f"cut_replies needs count >= 1 and a mode of {CUT_MODES}, got {count}, {mode!r}")
        with self._lock:
            self._cuts.append(_Cut(mode, count, verb, resource, method.upper() if method else None))

    def _take_cut(self, method: str, verb: str, resource: str) -> str | None:
        with self._lock:
            for c in self._cuts:
                if c.matches(method, verb, resource):
                    c.remaining -= 1
                    if c.remaining <= 0:
                        self._cuts.remove(c)
                    return c.mode
        return None

    def clear_faults(self) -> None:
        """Drop every injected failure and cut not yet served."""
        with self._lock:
            self._faults.clear()
            self._cuts.clear()

    def pending_faults(self) -> int:
        """How many injected failures and cuts are still to be served."""
        with self._lock:
            return sum(f.remaining for f in self._faults) + sum(c.remaining for c in self._cuts)

    def _take_fault(self, method: str, verb: str, resource: str) -> _Fault | None:
        with self._lock:
            for f in self._faults:
                if f.matches(method, verb, resource):
                    f.remaining -= 1
                    if f.remaining <= 0:
                        self._faults.remove(f)
                    return f
        return None

    def cut_watches(self, resource: str | None = None) -> int:
        """Drop open watch connections (of ``resource``, or all) without ending the stream cleanly,
        as a failing load balancer does; returns how many were cut."""
        n = 0
        with self._lock:
            for w in self._watches:
                if resource is None or w.resource == resource:
                    w.cut.set()
                    w.wake.set()
                    n += 1
        return n

    def open_watches(self, resource: str | None = None) -> int:
        """How many watch streams are open (of ``resource``, or all)."""
        with self._lock:
            return sum(1 for w in self._watches if resource is None or w.resource == resource)

    def send_bookmarks(self) -> None:
        """Make every open watch that allows bookmarks send one now."""
        with self._lock:
            for w in self._watches:
                w.bookmark.set()
                w.wake.set()

    def compact(self, cut_watches: bool = True) -> str:
        """Forget the history: every resourceVersion handed out so far becomes too old.

        Watches from such a version get a 410 ERROR event, and continue tokens expire (410). To make
        the next list return a version that is not too old, a marker ConfigMap
        (``kube-system/kai-fake-apiserver-compaction``) is written first. Open watches are cut
        unless ``cut_watches`` is False. Returns the oldest resourceVersion still served.
        """
        self._write_compaction_marker()
        with self._lock:
            self._compacted_rv = self.store.resource_version
            self._snapshots.clear()
        if cut_watches:
            self.cut_watches()
        return str(self._compacted_rv)

    def _write_compaction_marker(self) -> None:
        if "configmaps" not in self.store.kinds:
            return
        ns, name = COMPACTION_MARKER
        stamp = uuid.uuid4().hex
        try:
            self.store.patch("configmaps", name, ns, {"data": {"compaction": stamp}})
        except NotFound:
            self.store.create({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": name, "namespace": ns}, "data": {"compaction": stamp}})

    # -- snapshots for paginated lists ---------------------------------------------------------

    def _save_snapshot(self, items: list[dict], rv: str) -> str:
        key = uuid.uuid4().hex
        with self._lock:
            self._snapshots[key] = (items, rv)
            while len(self._snapshots) > self._max_snapshots:
                self._snapshots.popitem(last=False)
        return key

    def _snapshot(self, key: str) -> tuple[list[dict], str] | None:
        with self._lock:
            return self._snapshots.get(key)


def _shutdown_socket(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _status_body(err: ApiError, details: dict | None = None) -> dict:
    body = err.status()
    if details:
        body["details"] = details
    return body


def _group_versions(kinds) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k in kinds:
        versions = out.setdefault(k.group, [])
        if k.version not in versions:
            versions.append(k.version)
    return out


def _strip_type_meta(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _encode_continue(snapshot: str, offset: int, rv: str) -> str:
    raw = json.dumps({"snapshot": snapshot, "offset": offset, "rv": rv}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[str, int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(data["snapshot"]), int(data["offset"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BadRequest(f"continue key is not valid: {token[:40]!r}") from None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kai-fake-apiserver"

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def fake(self) -> FakeApiServer:
        return self.server.fake  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        with self.fake._lock:
            self.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.fake._lock:
            self.fake._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self):
        """The request body parsed as JSON (None when empty); read from the socket once, at dispatch."""
        raw = self._raw_body
        if not raw:
            return None
        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        if not (ctype.endswith("json") or ctype.endswith("+json")):
            raise UnsupportedMediaType(
                f"the fake API server reads JSON request bodies only, not {ctype} (protobuf and YAML are "
                "not implemented)"
            )
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise BadRequest(f"the request body is not valid JSON: {exc}") from None

    def _log_request(self, status: int) -> None:
        """Record this request, before its reply leaves: a client that got the reply finds it logged."""
        rec, self._rec = self._rec, None
        if rec is not None:
            self.fake._record(RequestRecord(status=status, **rec))

    def _send_json(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self._log_request(status)
        cut = getattr(self, "_cut", None)
        if cut == "before-headers":
            self._hang_up()
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self._headers_sent = True
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if cut == "after-headers":
            self._hang_up()
            return
        if cut == "mid-body":
            self.wfile.write(data[: len(data) // 2])
            self._hang_up()
            return
        self.wfile.write(data)

    def _hang_up(self) -> None:
        """Close the connection here, whatever was sent so far, and write nothing more."""
        self._cut = None
        try:
            self.wfile.flush()
        except OSError:
            pass
        _shutdown_socket(self.connection)
        self.close_connection = True
        raise _ClientGone()

    # -- dispatch ------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        segs = [unquote(s) for s in path.split("/") if s]
        rec = {"method": method, "path": path, "query": query}
        self._rec: dict | None = rec
        status = 500
        self._headers_sent = False
        self._cut = None
        length = int(self.headers.get("Content-Length") or 0)
        self._raw_body = self.rfile.read(length) if length > 0 else b""
        try:
            route = self._route(segs)
            if route is None:
                verb = ""
                resource = ""
            else:
                verb = self._verb(method, route, query)
                resource = route.kind.resource
                rec.update(verb=verb, resource=resource, subresource=route.subresource,
                           namespace=route.namespace or "", name=route.name or "")
            fault = self.fake._take_fault(method, verb, resource)
            if fault is not None:
                status = self._send_fault(fault)
                return
            self._cut = self.fake._take_cut(method, verb, resource) if verb != "watch" else None
            if route is None:
                status = self._non_resource(method, segs)
            else:
                status = self._resource(method, route, verb, query)
        except ApiError as err:
            status = err.code
            self._send_error(err)
        except _ClientGone:
            status = 499
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            status = 499
            self.close_connection = True
        except Exception as exc:  # a bug in the fake must show as a 500, not a dropped connection
            log.exception("fake API server failed on %s %s", method, self.path)
            status = 500
            self._send_error(ApiError(f"fake API server error: {type(exc).__name__}: {exc}"))
        finally:
            self._log_request(status)  # if no reply went out

    def _send_error(self, err: ApiError, details: dict | None = None) -> None:
        if self._headers_sent:  # a watch stream already started: all that can be done is to hang up
            self.close_connection = True
            return
        try:
            self._send_json(err.code, _status_body(err, details))
        except OSError:
            self.close_connection = True

    def _send_fault(self, fault: _Fault) -> int:
        err = ApiError(fault.message, code=fault.status, reason=_REASONS.get(fault.status, "InternalError"))
        details = headers = None
        if fault.retry_after is not None:
            details = {"retryAfterSeconds": fault.retry_after}
            headers = {"Retry-After": str(fault.retry_after)}
        body = _status_body(err, details)
        self._send_json(fault.status, body, headers)
        return fault.status

    def _route(self, segs: list[str]) -> _Route | None:
        """The resource a path names, None for non-resource paths; NotFound for unknown resources."""
        if segs[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", segs[2:]
        elif len(segs) >= 3 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            return None
        if not rest:
            return None  # the group-version's discovery document
        kinds = self.fake.store.kinds
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else "")
        if len(rest) > 3:
            raise NotFound("the server could not find the requested resource")
        resource = f"{plural}.{group}" if group else plural
        if resource not in kinds:
            raise NotFound(f"the server could not find the requested resource ({resource})")
        kind = kinds.get(resource)
        if kind.version != version:
            raise NotFound(
                f"the server could not find the requested resource: {resource} is served as "
                f"{kind.api_version}, not {group + '/' if group else ''}{version}"
            )
        if namespace is not None and not kind.namespaced:
            raise NotFound(f"the server could not find the requested resource: {resource} is cluster-scoped")
        if sub and sub not in ("status", "binding"):
            raise NotFound(f"the server could not find the requested resource ({resource}/{sub})")
        if sub == "status" and not kind.has_status:
            raise NotFound(f"the server could not find the requested resource ({resource}/status)")
        if sub == "binding" and resource != "pods":
            raise NotFound(f"the server could not find the requested resource ({resource}/binding)")
        return _Route(kind, namespace, name, sub)

    @staticmethod
    def _verb(method: str, route: _Route, query: dict[str, str]) -> str:
        if method == "GET":
            if route.name is not None:
                return "get"
            return "watch" if query.get("watch") in ("1", "true", "True") else "list"
        return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]

    # -- non-resource paths --------------------------------------------------------------------

    def _non_resource(self, method: str, segs: list[str]) -> int:
        if method != "GET":
            raise MethodNotAllowed(f"{method} is not supported on /{'/'.join(segs)}")
        kinds = list(self.fake.store.kinds)
        gvs = _group_versions(kinds)
        if segs in (["healthz"], ["readyz"], ["livez"]):
            data = b"ok"
            self._log_request(200)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return 200
        if segs == ["version"]:
            body = dict(SERVER_VERSION)
        elif segs == ["api"]:
            body = {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.fake.host}:{self.fake.port}"}]}
        elif segs == ["apis"]:
            body = {"kind": "APIGroupList", "apiVersion": "v1",
                    "groups": [self._api_group(g, vs) for g, vs in sorted(gvs.items()) if g]}
        elif len(segs) == 2 and segs[0] == "apis" and segs[1] in gvs and segs[1]:
            body = {"kind": "APIGroup", "apiVersion": "v1", **self._api_group(segs[1], gvs[segs[1]])}
        elif segs == ["api", "v1"] or (len(segs) == 3 and segs[0] == "apis"
                                       and segs[2] in gvs.get(segs[1], ())):
            group, version = ("", "v1") if segs[0] == "api" else (segs[1], segs[2])
            body = self._resource_list(group, version, kinds)
        else:
            raise NotFound("the server could not find the requested resource")
        self._send_json(200, body)
        return 200

    @staticmethod
    def _api_group(group: str, versions: list[str]) -> dict:
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}

    @staticmethod
    def _resource_list(group: str, version: str, kinds: list[ResourceKind]) -> dict:
        resources = []
        served = sorted((k for k in kinds if (k.group, k.version) == (group, version)),
                        key=lambda k: k.plural)
        for k in served:
            entry = {"name": k.plural, "singularName": k.singular or k.kind.lower(),
                     "namespaced": k.namespaced, "kind": k.kind, "verbs": list(_OBJECT_VERBS)}
            if k.short_names:
                entry["shortNames"] = list(k.short_names)
            resources.append(entry)
            if k.has_status:
                resources.append({"name": f"{k.plural}/status", "singularName": "",
                                  "namespaced": k.namespaced, "kind": k.kind, "verbs": list(_STATUS_VERBS)})
            if k.resource == "pods":
                resources.append({"name": "pods/binding", "singularName": "", "namespaced": True,
                                  "kind": "Binding", "verbs": ["create"]})
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    # -- resources -----------------------------------------------------------------------------

    def _resource(self, method: str, route: _Route, verb: str, query: dict[str, str]) -> int:
        if query.get("dryRun"):
            raise BadRequest("dryRun is not supported by the fake API server")
        kind = route.kind
        if verb == "list":
            return self._list(route, query)
        if verb == "watch":
            return self._watch(route, query)
        if route.name is None and verb != "create":
            raise MethodNotAllowed(f"{verb} is not supported on the {kind.resource} collection")
        if route.name is not None and verb == "create" and route.subresource != "binding":
            raise MethodNotAllowed(f"create is not supported on a single {kind.kind}; POST to the collection")
        if kind.namespaced and route.namespace is None:
            raise NotFound(
                f"the server could not find the requested resource: {kind.resource} are namespaced, "
                f"use /namespaces/<namespace>/{kind.plural}"
            )
        store = self.fake.store
        body = self._read_body()
        if verb == "get":
            obj = store.get(kind.resource, route.name, route.namespace)
            return self._reply(200, obj)
        if verb == "create" and route.subresource == "binding":
            return self._bind(route, body)
        if verb == "create":
            obj = self._body_object(kind, route, body)
            return self._reply(201, store.create(obj))
        if verb == "update":
            obj = self._body_object(kind, route, body)
            if route.subresource == "status":
                return self._reply(200, store.update_status(obj))
            return self._reply(200, store.update(obj))
        if verb == "patch":
            return self._patch(route, body)
        if verb == "delete":
            return self._delete(route, body)
        raise MethodNotAllowed(f"{method} is not supported here")  # pragma: no cover - all verbs handled

    def _reply(self, status: int, obj: dict) -> int:
        self._send_json(status, obj)
        return status

    def _body_object(self, kind: ResourceKind, route: _Route, body) -> dict:
        """The request body as an object of ``kind``, checked against the URL as the API server does."""
        if not isinstance(body, dict):
            raise BadRequest(f"the request body must be a {kind.kind} object")
        obj = body
        api_version = obj.setdefault("apiVersion", kind.api_version)
        obj_kind = obj.setdefault("kind", kind.kind)
        if api_version != kind.api_version or obj_kind != kind.kind:
            raise BadRequest(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({kind.api_version}), or the kind {obj_kind!r} is not {kind.kind!r}"
            )
        md = obj.setdefault("metadata", {})
        if not isinstance(md, dict):
            raise BadRequest(f"{kind.kind}: metadata must be an object")
        if kind.namespaced:
            ns = md.get("namespace")
            if ns and route.namespace and ns != route.namespace:
                raise BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            if route.namespace:
                md["namespace"] = route.namespace
            elif not ns:
                raise NotFound(f"{kind.resource}: a namespace is required (/namespaces/<ns>/{kind.plural})")
        if route.name is not None and md.get("name") != route.name:
            raise BadRequest(
                f"the name of the object ({md.get('name')}) does not match the name on the URL ({route.name})"
            )
        return obj

    def _bind(self, route: _Route, body) -> int:
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a Binding object")
        md = body.get("metadata") or {}
        if md.get("name") and md["name"] != route.name:
            raise BadRequest(
                f"the name of the Binding ({md['name']}) does not match the pod name ({route.name})"
            )
        target = body.get("target") or {}
        if not isinstance(target, dict):
            raise Invalid(f'Binding "{route.name}" is invalid: target must be an ObjectReference')
        node = target.get("name") or ""
        if not node:
            # the API server's binding validation errors are no StatusErrors: a 500 without a reason
            body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "target.name: Required value", "code": 500}
            return self._reply(500, body)
        annotations = md.get("annotations")
        if annotations is not None and not (isinstance(annotations, dict)
                                            and all(isinstance(v, str) for v in annotations.values())):
            raise BadRequest("metadata.annotations of a Binding must map strings to strings")
        self.fake.store.bind(route.namespace or "default", route.name, node, md.get("uid"),
                             annotations=annotations or None)
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
        return self._reply(201, status)

    def _patch(self, route: _Route, body) -> int:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        kind = route.kind
        sub = route.subresource or None
        store = self.fake.store
        if ctype == _MERGE_PATCH or (ctype == _STRATEGIC_PATCH and not self._is_custom(kind)):
            if not isinstance(body, dict):
                raise BadRequest("a merge patch must be a JSON object")
            if ctype == _STRATEGIC_PATCH and _has_directive(body):
                raise UnsupportedMediaType(
                    "the fake API server does not implement the directives of a strategic merge patch "
                    f"({', '.join(_STRATEGIC_DIRECTIVES)})"
                )
            return self._reply(200, store.patch(kind.resource, route.name, route.namespace, body, sub,
                                                strategic=ctype == _STRATEGIC_PATCH))
        if ctype == _JSON_PATCH:
            if not isinstance(body, list):
                raise BadRequest("a JSON patch must be a list of operations")
            for _attempt in range(5):
                current = store.get(kind.resource, route.name, route.namespace)
                new = _json_patch(current, body)
                md = new.get("metadata")
                if not isinstance(md, dict):
                    raise Invalid(f'{kind.resource} "{route.name}": metadata cannot be removed by a patch')
                own_precondition = md.get("resourceVersion") != current["metadata"].get("resourceVersion")
                try:
                    if sub == "status":
                        return self._reply(200, store.update_status(new))
                    return self._reply(200, store.update(new))
                except Conflict:
                    if own_precondition:
                        raise  # the patch's own resourceVersion is stale
                    # another write came between our read and write: read again, as the API server does
            raise Conflict(
                f'Operation cannot be fulfilled on {kind.resource} "{route.name}": too many concurrent writes'
            )
        accepted = f"{_JSON_PATCH}, {_MERGE_PATCH}"
        if not self._is_custom(kind):
            accepted += f", {_STRATEGIC_PATCH}"
        raise UnsupportedMediaType(
            f"the body of the request was in an unknown format ({ctype or 'no Content-Type'}) - accepted "
            f"media types include: {accepted} (server-side apply is not implemented by the fake API server)"
        )

    def _is_custom(self, kind: ResourceKind) -> bool:
        return kind.resource not in _BUILTIN_RESOURCES

    def _delete(self, route: _Route, body) -> int:
        kind = route.kind
        store = self.fake.store
        if route.subresource:
            raise MethodNotAllowed(f"delete is not supported on {kind.resource}/{route.subresource}")
        current = store.get(kind.resource, route.name, route.namespace)
        pre = (body or {}).get("preconditions") if isinstance(body, dict) else None
        if isinstance(pre, dict):
            md = current["metadata"]
            if pre.get("uid") and pre["uid"] != md.get("uid"):
                raise Conflict(
                    f'Operation cannot be fulfilled on {kind.resource} "{route.name}": Precondition failed: '
                    f"UID in precondition: {pre['uid']}, UID in object meta: {md.get('uid')}"
                )
            if pre.get("resourceVersion") and str(pre["resourceVersion"]) != md.get("resourceVersion"):
                raise Conflict(
                    f'Operation cannot be fulfilled on {kind.resource} "{route.name}": Precondition failed: '
                    f"ResourceVersion in precondition: {pre['resourceVersion']}, "
                    f"ResourceVersion in object meta: {md.get('resourceVersion')}"
                )
        before = store.resource_version
        store.delete(kind.resource, route.name, route.namespace)
        try:
            return self._reply(200, store.get(kind.resource, route.name, route.namespace))  # still finalizing
        except NotFound:
            pass
        md = current["metadata"]
        if kind.resource not in _RETURN_DELETED_OBJECT:
            # what the API server answers for kinds that do not return the deleted object
            details = {"name": md["name"], "group": kind.group, "kind": kind.plural, "uid": md.get("uid")}
            if not kind.group:
                del details["group"]  # omitted when empty, as Go's omitempty does
            return self._reply(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                     "details": details})
        try:  # the object as it was removed (a pod: with its deletionTimestamp)
            events = store.events_since(before, {kind.resource})[0]
        except Gone:
            events = []
        gone = next((ev.object for ev in reversed(events)
                     if ev.type == "DELETED" and _obj_key(ev.object) == _obj_key(current)), current)
        return self._reply(200, gone)

    # -- list ----------------------------------------------------------------------------------

    def _list(self, route: _Route, query: dict[str, str]) -> int:
        kind = route.kind
        fake = self.fake
        limit = _int_param(query, "limit")
        token = query.get("continue") or ""
        rv = query.get("resourceVersion") or ""
        rv_match = query.get("resourceVersionMatch") or ""
        if token:
            if rv or rv_match:
                raise BadRequest("specifying resource version is not allowed when using continue")
            key, offset = _decode_continue(token)
            snap = fake._snapshot(key)
            if snap is None:
                raise Gone(
                    "The provided continue parameter is too old to display a consistent list result. You can "
                    "start a new list without the continue parameter."
                )
            items, list_rv = snap
        else:
            offset = 0
            self._check_list_version(rv, rv_match)
            items, list_rv = fake.store.list_refs(
                kind.resource, route.namespace, query.get("labelSelector"), query.get("fieldSelector")
            )
        end = offset + limit if limit else len(items)
        page = items[offset:end]
        meta: dict = {"resourceVersion": list_rv}
        if end < len(items):
            key = key if token else fake._save_snapshot(items, list_rv)
            meta["continue"] = _encode_continue(key, end, list_rv)
            meta["remainingItemCount"] = len(items) - end
        custom = self._is_custom(kind)
        body = {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": meta,
            "items": page if custom else [_strip_type_meta(o) for o in page],
        }
        self._send_json(200, body)
        return 200

    def _check_list_version(self, rv: str, rv_match: str) -> None:
        if rv_match and rv_match not in ("NotOlderThan", "Exact"):
            raise BadRequest(f"resourceVersionMatch {rv_match!r}: must be NotOlderThan or Exact")
        if rv_match and not rv:
            raise BadRequest("resourceVersionMatch is forbidden unless resourceVersion is provided")
        if not rv:
            return
        if not rv.isdigit():
            raise BadRequest(f"invalid resourceVersion {rv!r}: an integer is expected")
        current = self.fake.store.resource_version
        if int(rv) > current:
            raise _Timeout(f"Too large resource version: {rv}, current: {current}")
        if rv_match == "Exact" and int(rv) != current:
            raise Gone(
                f"too old resource version: {rv} ({current}): the fake API server keeps no past states, "
                "only the current one can be listed exactly"
            )

    # -- watch ---------------------------------------------------------------------------------

    def _watch(self, route: _Route, query: dict[str, str]) -> int:
        kind = route.kind
        fake = self.fake
        store = fake.store
        labels_ok = parse_label_selector(query.get("labelSelector"))
        fields_ok = parse_field_selector(query.get("fieldSelector"), kind.selectable_fields())
        bookmarks = query.get("allowWatchBookmarks") in ("1", "true", "True")
        timeout = _int_param(query, "timeoutSeconds")
        request_timeout = _duration_param(query, "timeout")
        if request_timeout and (not timeout or request_timeout < timeout):
            timeout = request_timeout
        rv_param = query.get("resourceVersion") or ""
        if rv_param and not rv_param.isdigit():
            raise BadRequest(f"invalid resourceVersion {rv_param!r}: an integer is expected")

        selective = bool(query.get("labelSelector") or query.get("fieldSelector"))

        def in_namespace(o: dict) -> bool:
            return not route.namespace or o["metadata"].get("namespace") == route.namespace

        def selected(o: dict) -> bool:
            return labels_ok(o["metadata"].get("labels") or {}) and fields_ok(o)

        current, start_rv = store.list_refs(kind.resource)
        start = int(start_rv)
        initial = []
        gone: Gone | None = None
        touched: set[tuple[str, str]] = set()
        if rv_param in ("", "0"):
            initial = [o for o in current if in_namespace(o) and selected(o)]
        else:
            start = int(rv_param)
            if start < fake._compacted_rv:
                gone = Gone(f"too old resource version: {start} ({fake._compacted_rv})")
            else:
                try:
                    touched = {_obj_key(ev.object) for ev in store.events_since(start, {kind.resource})[0]}
                except Gone as exc:
                    gone = exc
        # whether each object matched the selector at the start; objects changed since are unknown
        matched = {_obj_key(o): selected(o) for o in current if _obj_key(o) not in touched}
        sel = _Selection(in_namespace, selected if selective else None, matched)
        stream = _WatchStream(kind.resource)
        self._log_request(200)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self._headers_sent = True
        self.end_headers()
        if gone is not None:
            self._chunk({"type": "ERROR", "object": gone.status()})
            self._end_chunks()
            return 200
        with fake._lock:
            fake._watches.add(stream)
        try:
            for o in initial:
                self._chunk({"type": "ADDED", "object": o})
            self._stream_events(kind, stream, start, sel, bookmarks, timeout)
        finally:
            with fake._lock:
                fake._watches.discard(stream)
        return 200

    def _stream_events(self, kind, stream: _WatchStream, rv: int, sel: _Selection, bookmarks: bool,
                       timeout: float) -> None:
        fake = self.fake
        deadline = time.monotonic() + timeout if timeout else None
        last_bookmark = time.monotonic()
        while True:
            try:
                events, now = fake.store.events_since(rv, {kind.resource})
                gone = None
            except Gone as exc:
                events, now, gone = [], rv, exc
            # checked after reading, so nothing written after a cut (or stop) reaches the client
            if fake._stopping.is_set():
                self._end_chunks()
                return
            if stream.cut.is_set():
                self.close_connection = True
                _shutdown_socket(self.connection)
                return
            if gone is not None:
                self._chunk({"type": "ERROR", "object": gone.status()})
                self._end_chunks()
                return
            for ev in events:
                out = sel.event_type(ev.type, ev.object)
                if out is not None:
                    self._chunk({"type": out, "object": ev.object})
            rv = now
            at = time.monotonic()
            if bookmarks and (stream.bookmark.is_set() or at - last_bookmark >= fake.bookmark_interval):
                stream.bookmark.clear()
                self._bookmark(kind, rv)
                last_bookmark = at
            if deadline is not None and at >= deadline:
                if bookmarks:
                    self._bookmark(kind, rv)
                self._end_chunks()
                return
            if not events:
                wait = fake.poll_interval
                if deadline is not None:
                    wait = max(0.0, min(wait, deadline - at))
                stream.wake.wait(wait)
                stream.wake.clear()

    def _bookmark(self, kind: ResourceKind, rv: int) -> None:
        self._chunk({"type": "BOOKMARK", "object": {"kind": kind.kind, "apiVersion": kind.api_version,
                                                    "metadata": {"resourceVersion": str(rv)}}})

    def _chunk(self, event: dict) -> None:
        data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except OSError:
            raise _ClientGone() from None

    def _end_chunks(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            raise _ClientGone() from None


def _obj_key(o: dict) -> tuple[str, str]:
    md = o["metadata"]
    return (md.get("namespace", ""), md["name"])


class _Selection:
    """Which events a watch with a namespace and selectors delivers, and as what.

    As on the API server, an object that starts matching the selectors is reported ADDED and one
    that stops matching DELETED. For an object changed between the watch's resourceVersion and its
    start, whether it matched then is unknown: a change that matches is reported MODIFIED, one that
    does not, DELETED (clients ignore deletes of objects they do not hold).
    """

    def __init__(self, in_namespace: Callable[[dict], bool], selected: Callable[[dict], bool] | None,
                 matched: dict[tuple[str, str], bool]) -> None:
        self.in_namespace = in_namespace
        self.selected = selected
        self.matched = matched

    def event_type(self, ev_type: str, obj: dict) -> str | None:
        if not self.in_namespace(obj):
            return None
        if self.selected is None:
            return ev_type
        key = _obj_key(obj)
        before = self.matched.get(key)
        if ev_type == "DELETED":
            self.matched.pop(key, None)
            if before is None:
                return "DELETED" if self.selected(obj) else None
            return "DELETED" if before else None
        now = self.selected(obj)
        self.matched[key] = now
        if ev_type == "ADDED":
            return "ADDED" if now else None
        if now:
            return "ADDED" if before is False else "MODIFIED"
        return None if before is False else "DELETED"


def _int_param(query: dict[str, str], name: str) -> int:
    raw = query.get(name) or ""
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: {raw!r} is not an integer") from None
    if value < 0:
        raise BadRequest(f"{name}: must not be negative, got {value}")
    return value


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration_param(query: dict[str, str], name: str) -> float:
    """A Go duration such as ``30s``, ``1m30s`` or ``500ms`` in seconds (0 when absent)."""
    raw = query.get(name) or ""
    if not raw:
        return 0.0
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", raw):
        total += float(number) * _DURATION_UNITS[unit]
    if not re.fullmatch(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))+", raw):
        raise BadRequest(f"{name}: {raw!r} is not a duration such as 30s or 1m")
    return total


def _has_directive(value) -> bool:
    if isinstance(value, dict):
        return any(k in _STRATEGIC_DIRECTIVES or k.startswith("$setElementOrder/") or _has_directive(v)
                   for k, v in value.items())
    if isinstance(value, list):
        return any(_has_directive(v) for v in value)
    return False


# -- RFC 6902 JSON patch (add, remove, replace, test, copy, move) -------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise BadRequest(f"JSON patch path {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc, parts: list[str], path: str):
    cur = doc
    for p in parts:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise Invalid(f"JSON patch: path {path!r} does not exist")
    return cur


def _json_patch(doc: dict, ops: list) -> dict:
    doc = clone(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise BadRequest(f"JSON patch operation {op!r} needs 'op' and 'path'")
        parts = _pointer(op["path"])
        if not parts:
            raise Invalid("JSON patch: replacing the whole object is not allowed")
        parent = _walk(doc, parts[:-1], op["path"])
        last = parts[-1]
        kind = op["op"]
        if kind in ("add", "replace", "copy", "move"):
            if kind in ("add", "replace"):
                if "value" not in op:
                    raise BadRequest(f"JSON patch operation {kind} at {op['path']!r} needs a 'value'")
                value = clone(op["value"])
            else:
                src = _pointer(str(op.get("from", "")))
                value = clone(_walk(doc, src, str(op.get("from"))))
                if kind == "move":
                    src_parent = _walk(doc, src[:-1], str(op.get("from")))
                    _remove(src_parent, src[-1], str(op.get("from")))
            if kind == "replace":
                _walk(doc, parts, op["path"])  # must exist
            if isinstance(parent, list):
                if last == "-":
                    parent.append(value)
                elif last.isdigit() and int(last) <= len(parent):
                    if kind == "replace":
                        parent[int(last)] = value
                    else:
                        parent.insert(int(last), value)
                else:
                    raise Invalid(f"JSON patch: bad array index in {op['path']!r}")
            elif isinstance(parent, dict):
                parent[last] = value
            else:
                raise Invalid(f"JSON patch: {op['path']!r} is not inside an object or array")
        elif kind == "remove":
            _remove(parent, last, op["path"])
        elif kind == "test":
            if _walk(doc, parts, op["path"]) != op.get("value"):
                raise Invalid(f"JSON patch: test failed at {op['path']!r}")
        else:
            raise BadRequest(f"JSON patch: unknown operation {kind!r}")
    return doc


def _remove(parent, last: str, path: str) -> None:
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    else:
        raise Invalid(f"JSON patch: path {path!r} does not exist")
