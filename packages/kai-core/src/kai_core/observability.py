"""What a component running in a cluster shows the outside: Prometheus metrics, health and
readiness probes, and logs a log pipeline can parse.

* :class:`SchedulerMetrics` and :class:`BinderMetrics`: the metrics of each component, in seconds
  as Prometheus and kube-scheduler do, each on a registry of its own (so two components, or many
  tests, can live in one process);
* :func:`instrument_plugin_manager`: times every plugin hook call, per plugin and hook;
* :class:`ObservabilityServer`: one ``ThreadingHTTPServer`` serving ``/metrics``, ``/healthz``
  (and ``/livez``) and ``/readyz``, any subset of them, on one address;
* :class:`JsonFormatter` and :func:`configure_logging`: ``--log-format text|json``.

``prometheus_client`` is imported when metrics are built, not when this module is.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from kai_core.api.errors import redact_credentials  # noqa: F401 (its home before; kai-cli imports it here)

#: A probe check: returns None when fine, else a short reason.
Check = Callable[[], "str | None"]

CYCLE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                 120.0)
HOOK_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
BIND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


# -- metrics ----------------------------------------------------------------------------------------


class ComponentMetrics:
    """Metrics every component has, on a fresh registry:

    * ``kai_plugin_duration_seconds{plugin,hook}``: each plugin hook call (histogram);
    * ``kai_leader_election_master_status{name}``: 1 while this process holds the named Lease;
    * ``kai_apiserver_requests_total`` / ``kai_apiserver_request_retries_total``: HTTP requests the
      Kubernetes store sent, and how many were retries; ``kai_reflector_synced{resource}``: 1 once
      the kind's reflector listed (only with :meth:`watch_store`).
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.plugin_duration = Histogram(
            "kai_plugin_duration_seconds", "Time spent in one plugin hook call, by plugin and hook.",
            ["plugin", "hook"], buckets=HOOK_BUCKETS, registry=self.registry)
        self.leader = Gauge(
            "kai_leader_election_master_status",
            "1 while this process holds the leader Lease of the given name, else 0.",
            ["name"], registry=self.registry)

    def watch_store(self, store) -> None:
        """Export the request counters and reflector state of a Kubernetes store."""
        self.registry.register(_StoreCollector(store))

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition of every metric and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def set_leader(self, lease_name: str, leading: bool) -> None:
        self.leader.labels(name=lease_name).set(1 if leading else 0)


class SchedulerMetrics(ComponentMetrics):
    """The scheduler's metrics, besides :class:`ComponentMetrics`':

    * ``kai_scheduling_cycle_duration_seconds``: one scheduling cycle (histogram);
    * ``kai_pods_scheduled_total``: pods given a node (their BindRequest written);
    * ``kai_pods_unschedulable_total``: scheduling attempts that found no node (a pod that stays
      unschedulable counts once per cycle, as kube-scheduler's attempts do);
    * ``kai_scheduling_errors_total``: attempts whose decision could not be written, or that hit an
      internal error;
    * ``kai_queue_fair_share`` and ``kai_queue_allocated`` (labels ``queue``, ``resource``: ``gpu`` in
      devices, ``cpu`` in cores, ``memory`` in bytes) and ``kai_queue_pending_pods`` (``queue``), at
      the start of the last cycle, once any KAI Queue exists;
    * ``kai_pods_evicted_total`` (labels ``action``: ``consolidation``, ``reclaim``, ``preempt`` or
      ``stale-gang``; ``queue``: the evicted pod's queue): pods the scheduler evicted.
    """

    def __init__(self) -> None:
        super().__init__()
        from prometheus_client import Counter, Histogram

        self.cycle_duration = Histogram(
            "kai_scheduling_cycle_duration_seconds", "Time of one scheduling cycle over every pending pod.",
            buckets=CYCLE_BUCKETS, registry=self.registry)
        self.scheduled = Counter("kai_pods_scheduled", "Pods given a node (BindRequest written).",
                                 registry=self.registry)
        self.unschedulable = Counter("kai_pods_unschedulable", "Scheduling attempts that found no node.",
                                     registry=self.registry)
        self.errors = Counter("kai_scheduling_errors", "Scheduling attempts that failed with an error.",
                              registry=self.registry)
        from prometheus_client import Gauge

        self.queue_fair_share = Gauge("kai_queue_fair_share", "A KAI queue's fair share of a resource.",
                                      ["queue", "resource"], registry=self.registry)
        self.queue_allocated = Gauge("kai_queue_allocated", "What a KAI queue's workloads hold of a resource.",
                                     ["queue", "resource"], registry=self.registry)
        self.queue_pending = Gauge("kai_queue_pending_pods", "Pods of a KAI queue waiting to be scheduled.",
                                   ["queue"], registry=self.registry)
        self.evicted = Counter("kai_pods_evicted", "Pods the scheduler evicted, by action and by their queue.",
                               ["action", "queue"], registry=self.registry)

    def observe_cycle(self, result) -> None:
        """Record a :class:`kai_core.scheduler.cycle.CycleResult`."""
        self.cycle_duration.observe(result.seconds)
        if result.scheduled:
            self.scheduled.inc(result.scheduled)
        if result.unschedulable:
            self.unschedulable.inc(result.unschedulable)
        if result.errors:
            self.errors.inc(result.errors)
        for eviction in getattr(result, "evictions", None) or ():
            self.evicted.labels(eviction.action, eviction.queue).inc()
        self.observe_queues(getattr(result, "queues", None))

    def observe_queues(self, queues) -> None:
        """Set the queue gauges from a cycle's ``queues`` (queues gone since are dropped)."""
        for gauge in (self.queue_fair_share, self.queue_allocated, self.queue_pending):
            gauge.clear()
        for name, figures in (queues or {}).items():
            self.queue_pending.labels(name).set(figures.pending)
            for resource, scale in (("gpu", 1), ("cpu", 1000), ("memory", 1)):
                self.queue_fair_share.labels(name, resource).set(figures.fair_share.get(resource, 0.0) / scale)
                self.queue_allocated.labels(name, resource).set(figures.allocated.get(resource, 0.0) / scale)


class BinderMetrics(ComponentMetrics):
    """The binder's metrics, besides :class:`ComponentMetrics`':

    * ``kai_bind_latency_seconds{result}``: one BindRequest carried out (``succeeded``/``failed``);
    * ``kai_binds_total``: BindRequests that reached ``Succeeded``;
    * ``kai_bind_failures_total``: attempts that ended ``Failed``.
    """

    def __init__(self) -> None:
        super().__init__()
        from prometheus_client import Counter, Histogram

        self.bind_latency = Histogram(
            "kai_bind_latency_seconds", "Time to carry out one BindRequest (claims, binding, status).",
            ["result"], buckets=BIND_BUCKETS, registry=self.registry)
        self.binds = Counter("kai_binds", "BindRequests carried out (phase Succeeded).",
                             registry=self.registry)
        self.bind_failures = Counter("kai_bind_failures", "Bind attempts that ended Failed.",
                                     registry=self.registry)

    def observe_bind(self, phase: str, seconds: float) -> None:
        """Record one reconcile that reached ``phase`` (Succeeded, Failed; anything else is not a bind)."""
        if phase == "Succeeded":
            self.binds.inc()
            self.bind_latency.labels(result="succeeded").observe(seconds)
        elif phase == "Failed":
            self.bind_failures.inc()
            self.bind_latency.labels(result="failed").observe(seconds)


class _StoreCollector:
    """Reads a KubernetesStore's counters at scrape time (they are plain ints on the store)."""

    def __init__(self, store) -> None:
        self.store = store

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield CounterMetricFamily("kai_apiserver_requests", "HTTP requests sent to the API server.",
                                  value=getattr(self.store, "requests", 0))
        yield CounterMetricFamily("kai_apiserver_request_retries", "Requests that were retries.",
                                  value=getattr(self.store, "retries", 0))
        stats = getattr(self.store, "reflector_stats", None)
        if stats is not None:
            synced = GaugeMetricFamily("kai_reflector_synced", "1 once the kind's first list is done.",
                                       labels=["resource"])
            for resource, st in sorted(stats().items()):
                synced.add_metric([resource], 1 if st.get("synced") else 0)
            yield synced


def instrument_plugin_manager(pm, metrics: ComponentMetrics) -> None:
    """Time every hook implementation call of ``pm`` into ``metrics.plugin_duration``.

    Every hook call of the scheduler and the binder goes through ``pm.call_impl`` (``call_each``
    and ``call_first`` use it), so one wrapper on that instance sees them all. Costs about a
    microsecond per call. Calling it twice does nothing more.
    """
    if getattr(pm, "_kai_instrumented", False):
        return
    inner = pm.call_impl
    histogram = metrics.plugin_duration
    children: dict[tuple[str, str], object] = {}
    perf = time.perf_counter

    def call_impl(impl, hook: str, kwargs: dict):
        start = perf()
        try:
            return inner(impl, hook, kwargs)
        finally:
            key = (impl.plugin_name, hook)
            child = children.get(key)
            if child is None:
                child = children[key] = histogram.labels(plugin=impl.plugin_name, hook=hook)
            child.observe(perf() - start)

    pm.call_impl = call_impl
    pm._kai_instrumented = True


# -- the HTTP server ------------------------------------------------------------------------------


class BindAddressError(ValueError):
    """A ``--*-bind-address`` value that is not ``[host]:port``."""


def parse_bind_address(text: str) -> tuple[str, int] | None:
    """``":8080"`` -> ``("0.0.0.0", 8080)``, ``"127.0.0.1:0"`` (an ephemeral port), ``"[::]:8080"``;
    ``"0"`` or ``""`` -> None (off), as controller-runtime reads these flags."""
    text = (text or "").strip()
    if text in ("", "0"):
        return None
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise BindAddressError(f"{text!r}: expected [IPv6]:port")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise BindAddressError(f"{text!r}: expected [host]:port, e.g. :8080 or 127.0.0.1:8080")
        if ":" in host:
            raise BindAddressError(f"{text!r}: put an IPv6 address in brackets, e.g. [::1]:8080")
    if not port.isdigit() or int(port) > 65535:
        raise BindAddressError(f"{text!r}: the port must be a number from 0 to 65535")
    return host or "0.0.0.0", int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class ObservabilityServer:
    """Serve ``/metrics`` (when ``metrics`` is given), ``/healthz`` and ``/livez`` (when ``health``
    is given) and ``/readyz`` (when ``ready`` is given) on ``address`` (``[host]:port``).

    ``health`` and ``ready`` map a check name to a callable returning None when fine or a reason;
    a probe answers 200 ``ok`` when every check passes, else 500 listing the failed ones
    (``?verbose`` lists every check either way), as the Kubernetes components do. Other paths get
    404. :meth:`start` binds the port (raising OSError when it cannot) and serves on a daemon
    thread; :attr:`port` is the bound port (useful with port 0).
    """

    def __init__(
        self,
        address: str,
        *,
        metrics: ComponentMetrics | None = None,
        health: Mapping[str, Check] | None = None,
        ready: Mapping[str, Check] | None = None,
    ) -> None:
        parsed = parse_bind_address(address)
        if parsed is None:
            raise BindAddressError(f"{address!r}: no address to serve on")
        self.host, self._requested_port = parsed
        self.metrics = metrics
        self.health = dict(health) if health is not None else None
        self.ready = dict(ready) if ready is not None else None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def paths(self) -> list[str]:
        out = []
        if self.metrics is not None:
            out.append("/metrics")
        if self.health is not None:
            out += ["/healthz", "/livez"]
        if self.ready is not None:
            out.append("/readyz")
        return out

    def start(self) -> ObservabilityServer:
        cls = _Server6 if ":" in self.host else _Server
        httpd = cls((self.host, self._requested_port), _Handler)
        httpd.owner = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="kai-observability", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd = self._httpd
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._httpd = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not running: call start() first")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """``http://host:port`` of the bound socket (the loopback address when bound to all)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def __enter__(self) -> ObservabilityServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_checks(checks: Mapping[str, Check]) -> tuple[bool, list[str]]:
    """Run every check; returns (all passed, one ``[+]name ok`` / ``[-]name failed: why`` line each).
    A check that raises fails with the exception as its reason."""
    ok = True
    lines = []
    for name, check in checks.items():
        try:
            problem = check()
        except Exception as exc:  # a broken check is a failing check, never a 500 traceback
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            ok = False
            lines.append(f"[-]{name} failed: {problem}")
        else:
            lines.append(f"[+]{name} ok")
    return ok, lines


class _Handler(BaseHTTPRequestHandler):
    server_version = "kai"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        logging.getLogger("kai.observability").debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        owner: ObservabilityServer = self.server.owner  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        if url.path == "/metrics" and owner.metrics is not None:
            body, ctype = owner.metrics.exposition()
            self._send(200, body, ctype)
            return
        checks = None
        if url.path in ("/healthz", "/livez"):
            checks = owner.health
        elif url.path == "/readyz":
            checks = owner.ready
        if checks is None:
            self._send(404, b"404 page not found\n", "text/plain; charset=utf-8")
            return
        ok, lines = run_checks(checks)
        verbose = "verbose" in url.query
        if ok and not verbose:
            text = "ok"
        else:
            verdict = "passed" if ok else "failed"
            text = "\n".join(lines) + f"\n{url.path[1:]} check {verdict}"
        self._send(200 if ok else 500, (text + "\n").encode(), "text/plain; charset=utf-8")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)


# -- logs -------------------------------------------------------------------------------------------

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


# scheme://user:password@ in any text; the password part is what is redacted
class RedactingFormatter(logging.Formatter):
    """Formats with ``inner`` and redacts credentials of URLs (:func:`redact_credentials`): a server
    address in a kubeconfig may carry a password, and store errors name the server."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact_credentials(self.inner.format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``,
    ``msg``, ``error`` (the traceback, when there is one) and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        ts = _dt.datetime.fromtimestamp(record.created, _dt.UTC)
        doc: dict = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        elif record.stack_info:
            doc["error"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (not at creation), so a
    redirected stderr (a test runner's) is honoured and a closed one never written to."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(level: int, fmt: str = "text", stream=None) -> Callable[[], None]:
    """Make the root logger write ``text`` or ``json`` lines at ``level`` to ``stream`` (default:
    the current stderr).

    Handlers a previous call installed, and the plain stderr handler of ``logging.basicConfig``,
    are replaced; other handlers (a test runner's capture) are kept. Returns a function that puts
    the previous handlers and level back.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format {fmt!r}: expected text or json")
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(RedactingFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)))
    handler._kai_handler = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    for h in saved_handlers:
        if getattr(h, "_kai_handler", False) or (
                type(h) is logging.StreamHandler and h.stream in (sys.stderr, sys.__stderr__)):
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)

    def restore() -> None:
        root.removeHandler(handler)
        for h in saved_handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(saved_level)

    return restore
