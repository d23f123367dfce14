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
                             scheduler_names=[scheduler_name],
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


# -- against a cluster: the fake API server (LiveCluster) or the real control plane (backend) -----
# (the clusters live in backends.py, loaded by path: with --import-mode=importlib a test folder is no
# package; the real control plane's fixtures come from test/controlplane/fixture.py)


def _load_backends():
    import importlib.util
    import sys

    name = "kai_cli_test_backends"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "backends.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


_backends = _load_backends()
WAIT = _backends.WAIT
wait_for = _backends.wait_for
Running = _backends.Running
LiveCluster = _backends.LiveCluster
backend = _backends.backend
_controlplane_fixtures = _backends.load_controlplane_fixtures()
controlplane = _controlplane_fixtures["controlplane"]
controlplane_binaries = _controlplane_fixtures.get("controlplane_binaries")


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
