"""Running the scheduler or the binder against a real cluster (``--kubeconfig FILE`` or
``--in-cluster``), one component per process, as the Helm chart deploys them.

A component's life:

1. connect (kubeconfig or service account) and :func:`kai_core.client.discovery.discover` what the
   cluster serves: a missing BindRequest CRD or DRA API ends it at once with one error saying
   what to install (:class:`SetupError`, exit 2); a missing PodGroup CRD only makes the scheduler
   warn once and run without PodGroups (gang scheduling by PodGroup off, plugin groups still on);
2. start the observability server(s) if asked (``/metrics``, ``/healthz``, ``/readyz``), then one
   reflector per watched kind, and wait for their first lists (``/readyz`` turns ready then);
3. with leader election, campaign for the component's own Lease and wait as a standby (reflectors
   warm) until leading;
4. work: the scheduler runs a cycle whenever its reflectors saw a change, at least every
   ``period`` seconds; the binder carries out pending BindRequests the same way;
5. stop on :meth:`Component.stop` (SIGTERM/SIGINT in the CLI), releasing the Lease so a standby
   takes over at once; or exit 1 on a lost Lease, without touching the cluster again.

Nothing of the embedded cluster runs here: the cluster's own controllers (the resourceclaim
controller, NVIDIA's ComputeDomain controller) do that work.
"""

from __future__ import annotations

import inspect
import logging
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from kai_core.api.features import FeatureGates
from kai_core.framework.plugins import KaiPluginManager

log = logging.getLogger("kai.cli.kube")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_SETUP = 2
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
#: threads writing the scheduler's BindRequests while it decides the next pods (as kube-scheduler
#: binds in goroutines): a round trip to the API server per pod would otherwise add up in the cycle
BIND_REQUEST_WRITERS = 16


class SetupError(Exception):
    """The component cannot start (bad kubeconfig, missing API, port in use); ``exit_code`` 2."""

    exit_code = EXIT_SETUP


class RunFailure(Exception):
    """The component started but had to stop (lost Lease, reflectors never synced); exit 1."""

    exit_code = EXIT_FAILURE


class _NotLeading(BaseException):
    """Raised inside a pass when the Lease was lost meanwhile: stop before the next write. A
    BaseException, so that nothing meant to isolate one failing request (the binder's workers
    log and retry an ``Exception``) swallows it."""


@dataclass
class ClusterOptions:
    """Everything ``kai-cli run scheduler|binder`` takes besides the component's own flags."""

    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False
    qps: float = 50.0
    burst: int = 300
    leader_elect: bool = False
    lease_name: str | None = None
    lease_namespace: str | None = None
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    identity: str | None = None
    metrics_address: str | None = None
    probe_address: str | None = None
    #: the longest wait between two passes when nothing changes (seconds)
    period: float = 1.0
    #: how long the first lists may take before giving up (seconds)
    sync_timeout: float = 120.0
    #: extra KubernetesStore arguments (tests shorten backoffs)
    store_kwargs: dict = field(default_factory=dict)


def connect(opts: ClusterOptions):
    """A :class:`~kai_core.client.discovery.ServedVersionStore` for the cluster of ``opts``; raises
    SetupError saying what is wrong with the kubeconfig or the service account."""
    from kai_core.client.discovery import ServedVersionStore
    from kai_core.client.store import KubeconfigError

    kwargs = {"qps": opts.qps, "burst": opts.burst, **opts.store_kwargs}
    try:
        if opts.in_cluster:
            return ServedVersionStore.in_cluster(**kwargs)
        return ServedVersionStore.from_kubeconfig(opts.kubeconfig, context=opts.context, **kwargs)
    except KubeconfigError as exc:
        where = "--in-cluster" if opts.in_cluster else f"--kubeconfig {opts.kubeconfig}"
        raise SetupError(f"{where}: {exc}") from None
    except ValueError as exc:  # qps/burst out of range
        raise SetupError(str(exc)) from None


def lease_namespace(opts: ClusterOptions) -> str:
    """Where the Lease lives: ``--leader-elect-resource-namespace``, else the pod's own namespace
    (in-cluster), else the kubeconfig context's namespace, else ``default``."""
    if opts.lease_namespace:
        return opts.lease_namespace
    if opts.in_cluster:
        try:
            with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as f:
                ns = f.read().strip()
            if ns:
                return ns
        except OSError:
            pass
    elif opts.kubeconfig:
        try:
            from kubernetes import config

            _contexts, active = config.list_kube_config_contexts(opts.kubeconfig)
            if opts.context:
                active = next((c for c in _contexts if c.get("name") == opts.context), active)
            ns = ((active or {}).get("context") or {}).get("namespace")
            if ns:
                return ns
        except Exception:  # the kubeconfig was already loaded once; a context without namespace is fine
            pass
    return "default"


def default_identity() -> str:
    """``<hostname>_<random>``: unique per process, and the pod name shows in the Lease."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def plugin_crds(pm: KaiPluginManager) -> list[tuple[str, dict]]:
    """(plugin name, CRD) for every kind the plugins declare through ``kai_resource_kinds``."""
    return [(plugin, crd) for plugin, crd in pm.resource_kinds() if isinstance(crd, dict)]


class Component:
    """One component's process against a real cluster; see the module docstring.

    :meth:`run` blocks until :meth:`stop` (then returns 0); it raises SetupError for what keeps
    it from starting (exit 2) and RunFailure for what makes it stop (a lost Lease, kinds that
    cannot be listed; exit 1). A component that raises anything else (a crash) leaves its Lease
    to expire, as a dead process would. ``announce`` receives the few
    lines a user should see at start (the CLI prints them). :attr:`started` is set once the
    servers listen and the reflectors run; :attr:`servers` then holds the observability servers.
    """

    name = "component"
    lease_default = "kai-component"

    def __init__(self, opts: ClusterOptions, features: FeatureGates, pm: KaiPluginManager,
                 announce: Callable[[str], None] | None = None, store_factory=None) -> None:
        self.opts = opts
        self.features = features
        self.pm = pm
        from kai_core.observability import redact_credentials

        say = announce or (lambda line: log.info("%s", line))
        # a server address may carry a password (https://user:pass@host): never printed
        self.announce = lambda line: say(redact_credentials(line))
        self._store_factory = store_factory or (lambda: connect(opts))
        self.store = None
        self.elector = None
        self.metrics = None
        self.servers: list = []
        self.started = threading.Event()
        self.passes = 0
        self.heartbeat = time.monotonic()
        self._stop = threading.Event()
        self._lost = False
        self._lease_client = None

    # -- what subclasses provide -------------------------------------------------------------------

    def _make_metrics(self):
        raise NotImplementedError

    def _resources(self, apis) -> list[str]:
        raise NotImplementedError

    def _build(self) -> None:
        """Build the scheduler or binder once the caches are warm (and the Lease held)."""
        raise NotImplementedError

    def _pass(self) -> None:
        raise NotImplementedError

    def _close_work(self) -> None:
        """Release what :meth:`_build` made (worker threads)."""

    def _next_due(self) -> float | None:
        """When (``time.monotonic``) the component wants its next pass at the latest, besides
        changes and ``period``; None for no wish."""
        return None

    def _work_position(self) -> int:
        """A number that changes when there may be new work: by default every change the store saw."""
        return self.store.resource_version

    def _periodic(self) -> bool:
        """Whether a pass is due ``period`` seconds after the last one even if nothing changed."""
        return True

    def summary(self) -> str:
        return f"{self.name} stopped after {self.passes} passes"

    # -- life ------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to return (it releases the Lease on its way out)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> int:
        crashed = True
        try:
            code = self._run()
            crashed = False
            return code
        finally:
            self._shutdown(release=not crashed and not self._lost)

    def _run(self) -> int:
        from kai_core.api.errors import ApiError
        from kai_core.client.discovery import MissingApiError, discover
        from kai_core.client.leaderelection import check_timings
        from kai_core.observability import redact_credentials

        if self.opts.leader_elect:
            try:
                check_timings(self.opts.lease_duration, self.opts.renew_deadline, self.opts.retry_period)
            except ValueError as exc:
                raise SetupError(str(exc)) from None
        self.store = self._store_factory()
        self.announce(f"{self.name}: API server {self.store.host}, feature gates: {self.features}")
        try:
            apis = discover(self.store, dra=self.features.dra, plugin_crds=plugin_crds(self.pm))
        except MissingApiError as exc:
            raise SetupError(str(exc)) from None
        except ApiError as exc:
            where = redact_credentials(self.store.host)
            raise SetupError(redact_credentials(f"cannot discover the APIs of {where}: {exc.message}")) from None
        if apis.dra_version:
            self.announce(f"{self.name}: DRA API resource.k8s.io/{apis.dra_version}")
        for plugin, kind in apis.unserved_plugin_kinds:
            self.announce(f"{self.name}: plugin {plugin}: {kind.kind} ({kind.api_version}) is not served by "
                          "the cluster; not watched (install its CRD to use it)")
        self.metrics = self._make_metrics()
        self.metrics.watch_store(self.store)
        from kai_core.observability import instrument_plugin_manager

        instrument_plugin_manager(self.pm, self.metrics)
        self._start_servers()
        resources = self._resources(apis)
        self.store.start(resources)
        self.started.set()
        self._wait_for_sync()
        if self._stop.is_set():
            return EXIT_OK
        if self.opts.leader_elect:
            self._campaign()
            if not self.elector.wait_until_leading(self._stop):
                return self._exit_code()
        self._build()
        self.announce(f"{self.name}: running")
        self._loop()
        return self._exit_code()

    def _exit_code(self) -> int:
        if self._lost:
            raise RunFailure(f"lost the leader Lease {self.elector.lease_ref}: exiting so that a standby "
                             "takes over (the process is restarted as a standby)")
        return EXIT_OK

    def _start_servers(self) -> None:
        from kai_core.observability import BindAddressError, ObservabilityServer, parse_bind_address

        opts = self.opts
        try:
            metrics_at = parse_bind_address(opts.metrics_address or "")
            probes_at = parse_bind_address(opts.probe_address or "")
        except BindAddressError as exc:
            raise SetupError(f"bind address {exc}") from None
        health = {"ping": lambda: None, "loop": self._loop_alive}
        ready = {"reflectors-synced": self._reflectors_synced}
        wanted: list[tuple[str, dict]] = []
        if metrics_at is not None and metrics_at == probes_at:
            wanted.append((opts.metrics_address, {"metrics": self.metrics, "health": health, "ready": ready}))
        else:
            if metrics_at is not None:
                wanted.append((opts.metrics_address, {"metrics": self.metrics}))
            if probes_at is not None:
                wanted.append((opts.probe_address, {"health": health, "ready": ready}))
        for address, kw in wanted:
            server = ObservabilityServer(address, **kw)
            try:
                server.start()
            except OSError as exc:
                raise SetupError(f"cannot listen on {address}: {exc.strerror or exc}") from None
            self.servers.append(server)
            self.announce(f"{self.name}: serving {', '.join(server.paths)} at {server.url}")

    def _reflectors_synced(self) -> str | None:
        if self.store is None:
            return "not connected"
        stats = self.store.reflector_stats()
        waiting = sorted(r for r, st in stats.items() if not st["synced"])
        if not stats:
            return "no reflector started"
        return f"waiting for the first list of {', '.join(waiting)}" if waiting else None

    def _loop_alive(self) -> str | None:
        stale_after = max(3 * self.opts.period, 60.0)
        age = time.monotonic() - self.heartbeat
        if age > stale_after:
            return f"the {self.name} loop has not moved for {age:.0f}s"
        if self.elector is not None and self.elector.leading.is_set() and not self.elector.is_leader:
            return "the leader Lease is not being renewed"
        return None

    def _wait_for_sync(self) -> None:
        deadline = time.monotonic() + self.opts.sync_timeout
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            if self.store.wait_for_sync(timeout=0.1):
                return
            if time.monotonic() > deadline:
                stats = self.store.reflector_stats()
                bad = [f"{r} ({st['last_error'] or 'no answer'})" for r, st in sorted(stats.items())
                       if not st["synced"]]
                raise RunFailure(f"could not list {', '.join(bad)} within {self.opts.sync_timeout:g}s; "
                                 "check the API server and the RBAC rules of this identity")

    def _campaign(self) -> None:
        from kai_core.client.leaderelection import LeaderElector

        opts = self.opts
        name = opts.lease_name or self.lease_default
        try:
            self.elector = LeaderElector(
                self._lease_store(), name, lease_namespace(opts), opts.identity or default_identity(),
                lease_duration=opts.lease_duration, renew_deadline=opts.renew_deadline,
                retry_period=opts.retry_period,
                on_started_leading=lambda: self.metrics.set_leader(name, True),
                on_stopped_leading=self._on_lost,
            )
        except ValueError as exc:
            raise SetupError(str(exc)) from None
        self.metrics.set_leader(name, False)
        self.announce(f"{self.name}: leader election on Lease {self.elector.lease_ref} as "
                      f"{self.elector.identity}")
        self.elector.start()

    def _lease_store(self):
        """A client of its own for the Lease, as kube-scheduler has: no rate limit shared with the
        work (a busy binder must not starve its renewals), one attempt per call, and timeouts
        within the renew deadline, so a hung API server costs the lead in time."""
        from kai_core.client.store import KubernetesStore

        if not isinstance(self.store, KubernetesStore):
            return self.store
        deadline = self.opts.renew_deadline
        self._lease_client = KubernetesStore(self.store.configuration, qps=0, burst=1, max_retries=0,
                                             connect_timeout=min(10.0, deadline),
                                             request_timeout=max(1.0, deadline))
        return self._lease_client

    def _on_lost(self) -> None:
        self._lost = True
        if self.metrics is not None and self.elector is not None:
            self.metrics.set_leader(self.elector.name, False)
        self._stop.set()

    def _leading(self) -> bool:
        return self.elector is None or self.elector.is_leader

    def _write_fence(self) -> str | None:
        """Checked before every write of a pass: why this process must not write now (it is
        stopping, or it does not hold the Lease with margin: renewed within the renew deadline,
        which is shorter than the Lease), or None."""
        if self._stop.is_set():
            return "the process is stopping"
        if not self._leading():
            return f"the leader Lease {self.elector.lease_ref} is not held (not renewed within the renew deadline)"
        return None

    def _loop(self) -> None:
        poll = min(0.05, self.opts.period)
        seen = -1
        due = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            self.heartbeat = now
            if not self._leading():
                self._on_lost()  # renewals are failing or someone else holds the Lease: no more writes
                break
            position = self._work_position()
            wanted = self._next_due()
            if position == seen and now < due and (wanted is None or now < wanted):
                self._stop.wait(poll)
                continue
            seen = position
            due = now + self.opts.period if self._periodic() else math.inf
            try:
                self._pass()
            except _NotLeading:
                if not self._stop.is_set():  # a stop asked for ends the pass cleanly, not as a loss
                    self._on_lost()
                break
            except Exception:  # one failing pass (an API outage) must not end the component
                log.exception("%s: pass failed; trying again", self.name)
            self.passes += 1

    def _shutdown(self, release: bool) -> None:
        self._close_work()
        if self.elector is not None:
            self.elector.stop(release=release)
        if self._lease_client is not None:
            self._lease_client.close()
        for server in self.servers:
            server.stop()
        if self.store is not None:
            self.store.close()


class SchedulerComponent(Component):
    """``kai-cli run scheduler`` against a cluster. ``backoff_limit`` is written into each
    BindRequest (None, the default: left unset, as KAI does; ``--backoff-limit N`` sets it). Pods
    backing off after failed bindings wake a pass when they are due."""

    name = "scheduler"
    lease_default = "kai-scheduler"

    def __init__(self, opts: ClusterOptions, features: FeatureGates, pm: KaiPluginManager, *,
                 scheduler_name: str = "kai-scheduler", backoff_limit: int | None = None,
                 score_weights: dict[str, float] | None = None, actions=None, **kw) -> None:
        super().__init__(opts, features, pm, **kw)
        self.scheduler_name = scheduler_name
        #: the eviction actions' ActionsConfig (None: KAI's defaults)
        self.actions = actions
        self.backoff_limit = backoff_limit
        self.score_weights = dict(score_weights or {})
        self.lease_default = scheduler_name
        self.scheduler = None
        self.queue_status = None
        self.last_result = None
        self.scheduled = 0
        #: the kinds watched, as :meth:`_resources` chose them from what the cluster serves
        self.watched: list[str] = []

    def _make_metrics(self):
        from kai_core.observability import SchedulerMetrics

        return SchedulerMetrics()

    def _resources(self, apis) -> list[str]:
        """The built-in kinds (PodGroups only when served: a reflector on an unserved kind would
        never sync), the DRA kinds with the gate on, and the served plugin kinds."""
        from kai_core.api.resources import RES_QUEUES
        from kai_core.client.discovery import pod_groups_missing_message
        from kai_core.scheduler.cycle import plugin_watches, watched_resources

        if not apis.pod_groups:
            log.warning("%s: %s", self.name, pod_groups_missing_message())
        self.watched = watched_resources(self.features.dra, pod_groups=apis.pod_groups)
        if apis.queues:  # KAI's Queues: a pod's queue is checked and queues take turns by fair share
            self.watched.append(RES_QUEUES)
        # built-in kinds a plugin reads (VolumeBinding's PVs, claims and classes): always served
        self.watched += [r for r in plugin_watches(self.pm) if r not in self.watched]
        self.watched += [k.resource for _p, k in apis.plugin_kinds if k.resource not in self.watched]
        return self.watched

    def _build(self) -> None:
        from kai_core.scheduler.cycle import Scheduler, SchedulerConfig

        config = SchedulerConfig(self.scheduler_name, self.features, backoff_limit=self.backoff_limit,
                                 score_weights=self.score_weights, bind_request_writers=BIND_REQUEST_WRITERS)
        if self.actions is not None:
            config.actions = self.actions
        self.scheduler = Scheduler(self.store, self.pm, config, resources=list(self.watched),
                                   may_write=self._write_fence)
        # KAI's queue controller, run by the scheduler on its own caches: Queue status after each cycle
        from kai_core.api.resources import RES_QUEUES
        from kai_core.plugins.queues import QueueStatusController

        self.queue_status = (QueueStatusController(self.scheduler_name, self.pm.device_gpu_worth, set(self.watched))
                             if RES_QUEUES in self.watched else None)
        # each write is fenced again when it is sent: BindRequests queued for the writer threads may
        # wait for the rate limiter (or a paused process) after the scheduler's own check
        if hasattr(self.store, "write_guard"):
            self.store.write_guard = self.scheduler.bind_requests.fence

    def _close_work(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()

    def _next_due(self) -> float | None:
        return self.scheduler.next_due() if self.scheduler is not None else None

    def _work_position(self) -> int:
        # only changes that may give the scheduler work: no empty cycles while the binder works
        return self.scheduler.work_position()

    def _periodic(self) -> bool:
        # nothing is retried on a timer unless the last cycle could not write everything
        result = self.last_result
        return result is None or result.errors > 0

    def _pass(self) -> None:
        from kai_core.scheduler.cycle import WritesStopped

        try:
            result = self.scheduler.run_cycle()
        except WritesStopped as exc:
            log.info("%s: cycle stopped before its next write: %s", self.name, exc)
            raise _NotLeading() from None
        self.last_result = result
        self.metrics.observe_cycle(result)
        if self.queue_status is not None:
            try:
                self.queue_status.reconcile(self.store)
            except Exception:  # Queue status is a report: a failure to write it must not stop scheduling
                log.exception("%s: Queue status not written", self.name)
        self.scheduled += result.scheduled
        if result.scheduled or result.errors:
            log.info("cycle: %d scheduled, %d unschedulable, %d errors in %.3fs", result.scheduled,
                     result.unschedulable, result.errors, result.seconds)

    def summary(self) -> str:
        return f"scheduler stopped: {self.passes} cycles, {self.scheduled} pods scheduled"


class BinderComponent(Component):
    """``kai-cli run binder`` against a cluster.

    The Binder runs with its :data:`~kai_binder.binder.RECOMMENDED_OPTIONS` (parallel workers, the
    pods' ``PodBound`` condition and Events, the node check) and without a rate limit of its own
    (``qps=0``): the component's API client already limits every request to ``opts.qps`` and
    ``opts.burst``, and two buckets in a row would halve what the flags promise. ``binder_kwargs``
    override any of these (``workers`` from ``--workers``)."""

    name = "binder"
    lease_default = "kai-binder"

    def __init__(self, opts: ClusterOptions, features: FeatureGates, pm: KaiPluginManager, *,
                 binder_kwargs: dict | None = None, **kw) -> None:
        super().__init__(opts, features, pm, **kw)
        self.binder_kwargs = dict(binder_kwargs or {})
        self.binder = None
        self.succeeded = 0
        self.failed = 0
        self._count_lock = threading.Lock()

    def _make_metrics(self):
        from kai_core.observability import BinderMetrics

        return BinderMetrics()

    def _resources(self, apis) -> list[str]:
        """What the binder's checks read from its index (:class:`kai_binder.index.BinderIndex`):
        BindRequests (also the wake-up signal) and Nodes, and the DRA kinds with the gate on."""
        from kai_binder.index import index_resources

        return index_resources(self.features.dra)

    def binder_options(self) -> dict:
        """The keyword arguments the Binder is built with (see the class docstring)."""
        from kai_binder.binder import RECOMMENDED_OPTIONS

        return {**RECOMMENDED_OPTIONS, "qps": 0, **self.binder_kwargs}

    def _build(self) -> None:
        from kai_binder.binder import Binder

        if hasattr(self.store, "read_from_cache"):
            # BindRequests, nodes, pods and claims read from the watch cache, as KAI's binder reads
            # them from its informers: no list of every BindRequest per pass, no GET of the pod, the
            # node, nor a DRA pod's claim (the binder's writes are conditional on the resourceVersion
            # read or the pod's uid, and a pod that would fail a request is read again first)
            self.store.read_from_cache(*binder_cached_reads(self.features.dra))
        self.binder = Binder(self.store, self.pm, self.features, **self.binder_options())
        reconcile = self.binder.reconcile
        metrics = self.metrics

        def timed_reconcile(br, *args, **kwargs):
            if self._write_fence() is not None:  # no new attempt once stopping or not leading
                raise _NotLeading()
            start = time.perf_counter()
            phase, reason = reconcile(br, *args, **kwargs)
            metrics.observe_bind(phase, time.perf_counter() - start)
            with self._count_lock:  # the binder's workers call this concurrently
                if phase == "Succeeded":
                    self.succeeded += 1
                elif phase == "Failed":
                    self.failed += 1
            return phase, reason

        self.binder.reconcile = timed_reconcile  # run_once (and workers) call self.reconcile

    def _pass(self) -> None:
        # queue what is due and return: attempts run on the worker pool while the loop watches for
        # more (KAI's workqueue), instead of each pass waiting for its slowest attempt
        self.binder.dispatch()

    def _next_due(self) -> float | None:
        # delayed retries of failed attempts, on the binder's clock (time.monotonic, as the loop's)
        return self.binder.next_due() if self.binder is not None else None

    def _close_work(self) -> None:
        if self.binder is not None:
            self.binder.close()

    def summary(self) -> str:
        return (f"binder stopped: {self.passes} passes, {self.succeeded} BindRequests succeeded, "
                f"{self.failed} failed")


def binder_cached_reads(dra: bool) -> list[str]:
    """The kinds ``kai-cli run binder`` reads from its watch cache (the chart's RBAC lets it list
    and watch them): BindRequests, Nodes (the node check) and ResourceClaims with DRA on, which
    it watches for its checks anyway; and Pods, as KAI's binder reads them from its informer (a
    copy that would fail or refuse an attempt is read again from the server first, see
    :func:`kai_binder.verify.read_pod`)."""
    from kai_core.api.resources import RES_BIND_REQUESTS, RES_CLAIMS, RES_NODES, RES_PODS

    return [RES_BIND_REQUESTS, RES_NODES, RES_PODS, *([RES_CLAIMS] if dra else [])]


def supported_binder_kwargs(wanted: dict) -> tuple[dict, list[str]]:
    """Split ``wanted`` (None values dropped) into what ``Binder.__init__`` accepts and the names
    it does not. Kept for callers written when the binder did not take ``workers``/``qps``/``burst``
    yet; kai-cli itself now passes them straight on."""
    from kai_binder.binder import Binder

    params = inspect.signature(Binder.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted, ignored = {}, []
    for key, value in wanted.items():
        if value is None:
            continue
        if takes_any or key in params:
            accepted[key] = value
        else:
            ignored.append(key)
    return accepted, ignored
