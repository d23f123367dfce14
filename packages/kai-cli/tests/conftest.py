"""Scenario helpers: manifests in, embedded cluster, controllers + scheduler + binder until idle."""

from __future__ import annotations

from pathlib import Path

import pytest

from kai_binder.binder import Binder, add_binder_hookspecs
from kai_cli.runner import run_embedded
from kai_core.cluster import EmbeddedCluster
from kai_core.cycle import Scheduler, SchedulerConfig
from kai_core.features import FeatureGates
from kai_core.plugins import build_plugin_manager


class Scenario:
    def __init__(self, *paths: str | Path, gates: str = "DynamicResourceAllocation=true",
                 scheduler_name: str = "kai-scheduler", binder: bool = True) -> None:
        self.pm = build_plugin_manager()
        add_binder_hookspecs(self.pm)
        self.gates = FeatureGates.parse(gates)
        self.cluster = EmbeddedCluster(self.pm)
        for p in paths:
            self.cluster.load(p)
        self.store = self.cluster.store
        self.scheduler = Scheduler(self.store, self.pm, SchedulerConfig(scheduler_name, self.gates))
        self.binder = Binder(self.store, self.pm, self.gates) if binder else None

    def run(self, max_rounds: int = 50):
        return run_embedded(self.cluster, self.scheduler, self.binder, until_idle=True, max_rounds=max_rounds)

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
