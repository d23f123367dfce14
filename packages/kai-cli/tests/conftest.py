"""Scenario helpers: manifests in, embedded cluster, controllers + scheduler + binder until idle."""

from __future__ import annotations

from pathlib import Path

import pytest

from kai_binder.binder import RECOMMENDED_OPTIONS, Binder, add_binder_hookspecs
from kai_binder.clock import ManualClock
from kai_cli.runner import run_embedded
from kai_core.api.features import FeatureGates
from kai_core.cluster import EmbeddedCluster
from kai_core.plugins import build_plugin_manager
from kai_core.scheduler.cycle import Scheduler, SchedulerConfig


class Scenario:
    """What ``kai-cli run scheduler --cluster ... --until-idle`` builds: the binder with its
    recommended options and no rate limit, scheduler and binder on one simulated clock.
    ``backoff_limit`` is None (the seed's BindRequest) unless given; ``plugins`` (name -> object)
    are registered in-process next to the installed ones."""

    def __init__(self, *paths: str | Path, gates: str = "DynamicResourceAllocation=true",
                 scheduler_name: str = "kai-scheduler", binder: bool = True, backoff_limit: int | None = None,
                 plugins: dict | None = None) -> None:
        self.pm = build_plugin_manager()
        add_binder_hookspecs(self.pm)
        for name, plugin in (plugins or {}).items():
            self.pm.register(plugin, name=name)
        self.gates = FeatureGates.parse(gates)
        self.cluster = EmbeddedCluster(self.pm)
        for p in paths:
            self.cluster.load(p)
        self.store = self.cluster.store
        self.clock = ManualClock()
        config = SchedulerConfig(scheduler_name, self.gates, backoff_limit=backoff_limit)
        self.scheduler = Scheduler(self.store, self.pm, config, clock=self.clock.now)
        self.binder = Binder(self.store, self.pm, self.gates, **{**RECOMMENDED_OPTIONS, "qps": 0},
                             clock=self.clock.now, sleep=self.clock.sleep) if binder else None

    def run(self, max_rounds: int = 50, **kw):
        try:
            return run_embedded(self.cluster, self.scheduler, self.binder, until_idle=True,
                                max_rounds=max_rounds, clock=self.clock, **kw)
        finally:
            if self.binder is not None:
                self.binder.close()

    def get(self, resource: str, name: str, namespace: str | None = "default") -> dict:
        return self.store.get(resource, name, namespace)

    def list(self, resource: str, namespace: str | None = None) -> list[dict]:
        return self.store.list(resource, namespace)[0]


@pytest.fixture
def scenario():
    return Scenario


@pytest.fixture(scope="session")
def demo_path() -> Path:
    from kai_dra_nvidia.demo import demo_manifests_path

    return demo_manifests_path()


# -- against a cluster: the fake API server, the cluster's own controllers, components in threads --

#: the most any test waits for something to happen (a bound, not an expectation)
WAIT = 30.0


def wait_for(predicate, what: str, timeout: float = WAIT) -> None:
    """Poll ``predicate`` until it holds; fail the test naming ``what`` after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:  # an object not there yet reads as "not yet"
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {timeout:g}s")
        time.sleep(0.02)


class Running:
    """A component (kai_cli.kube.Component) running :meth:`run` on a thread; what it returned or
    raised (any BaseException, so a simulated crash never escapes the thread) is kept."""

    def __init__(self, component) -> None:
        import threading

        self.component = component
        self.code: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"test-{component.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.code = self.component.run()
        except BaseException as exc:  # noqa: BLE001 - recorded for the test to look at
            self.error = exc

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def wait_started(self) -> None:
        wait_for(lambda: self.component.started.is_set() or self.done, f"{self.component.name} to start")
        if self.error is not None:
            raise AssertionError(f"{self.component.name} failed to start: {self.error!r}")

    def stop(self, timeout: float = WAIT):
        """Stop it and wait for the thread; returns the exit code (or raises what it raised)."""
        self.component.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.component.name} did not stop within {timeout:g}s"
        return self.code

    def url(self, path: str) -> str:
        server = next(s for s in self.component.servers if path in s.paths)
        return server.url + path


class LiveCluster:
    """An embedded cluster behind the fake API server, playing a real cluster: its controllers
    (the resourceclaim controller, the plugins') run on a thread of their own, as a control plane
    would, and kai's components reach it over HTTP only, through a kubeconfig."""

    def __init__(self, tmp_path: Path, *paths, store=None, bookmark_interval: float = 0.2) -> None:
        import threading

        from kai_core.testing import FakeApiServer

        self.pm = build_plugin_manager()
        add_binder_hookspecs(self.pm)
        if store is None:
            self.cluster = EmbeddedCluster(self.pm)
            for p in paths:
                self.cluster.load(p)
            self.store = self.cluster.store
        else:
            self.cluster = None
            self.store = store
        self.server = FakeApiServer(self.store, bookmark_interval=bookmark_interval).start()
        self.kubeconfig = self.server.write_kubeconfig(tmp_path / "kubeconfig")
        self.running: list[Running] = []
        self._stop = threading.Event()
        self._controllers = threading.Thread(target=self._control_plane, name="test-control-plane",
                                             daemon=True)
        self._controllers.start()

    def _control_plane(self) -> None:
        while not self._stop.wait(0.05):
            if self.cluster is not None:
                self.cluster.reconcile_controllers()

    def options(self, **kw):
        """ClusterOptions for this cluster: short periods and backoffs, so tests stay quick."""
        from kai_cli.kube import ClusterOptions

        kw.setdefault("period", 0.2)
        kw.setdefault("sync_timeout", WAIT)
        kw.setdefault("store_kwargs", {"backoff_base": 0.01, "backoff_cap": 0.1, "sync_timeout": WAIT})
        return ClusterOptions(kubeconfig=str(self.kubeconfig), **kw)

    def start(self, which: str, gates: str = "DynamicResourceAllocation=true", pm=None, **kw) -> Running:
        """Run the ``scheduler`` or the ``binder`` on a thread; ``kw`` go to ClusterOptions, except
        the component's own (``scheduler_name``, ``binder_kwargs``)."""
        from kai_cli.kube import BinderComponent, SchedulerComponent

        own_keys = ("scheduler_name", "backoff_limit", "binder_kwargs", "announce")
        own = {k: kw.pop(k) for k in own_keys if k in kw}
        if pm is None:
            pm = build_plugin_manager()
            add_binder_hookspecs(pm)
        cls = SchedulerComponent if which == "scheduler" else BinderComponent
        running = Running(cls(self.options(**kw), FeatureGates.parse(gates), pm, **own))
        self.running.append(running)
        running.wait_started()
        return running

    @staticmethod
    def wait_for(predicate, what: str, timeout: float = WAIT) -> None:
        wait_for(predicate, what, timeout)

    def close(self) -> None:
        for r in self.running:
            if not r.done:
                r.component.stop()
        for r in self.running:
            r.thread.join(WAIT)
        self._stop.set()
        self._controllers.join(WAIT)
        self.server.stop()


@pytest.fixture
def live_cluster(tmp_path):
    """``live_cluster(*manifest_paths, store=None)`` -> a started :class:`LiveCluster`, closed after
    the test."""
    pytest.importorskip("kubernetes", reason="the kubernetes client is not installed")
    made: list[LiveCluster] = []

    def make(*paths, store=None, **kw) -> LiveCluster:
        made.append(LiveCluster(tmp_path, *paths, store=store, **kw))
        return made[-1]

    yield make
    for lc in made:
        lc.close()
