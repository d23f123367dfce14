"""Fixtures for the example plugin's tests: the example cluster in kai's embedded cluster, run by
the real scheduler and binder until nothing changes.

These tests exercise the plugin as a user gets it, through its installed entry point, so they only
run where ``kai-plugin-fpga`` is installed (``tox -e example``, or ``pip install
./examples/kai-plugin-fpga``); elsewhere every test is skipped with a message saying so. They are
outside the main suite (``pytest.ini`` collects ``packages/`` only).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from pathlib import Path

import pytest

from kai_binder.binder import Binder, add_binder_hookspecs
from kai_cli.runner import run_embedded
from kai_core.cluster import EmbeddedCluster
from kai_core.cycle import Scheduler, SchedulerConfig
from kai_core.features import FeatureGates
from kai_core.manifests import apply_manifests, read_manifests
from kai_core.plugins import ENTRY_POINT_GROUP, KaiPluginManager

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
PLUGIN_NAME = "fpga-example"
DRA_ON = FeatureGates.parse("DynamicResourceAllocation=true")


def plugin_installed() -> bool:
    """Whether the entry point ``fpga-example`` is installed (what kai itself looks for)."""
    return any(ep.name == PLUGIN_NAME for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


@pytest.fixture(autouse=True)
def _require_installed_plugin() -> None:
    if not plugin_installed():
        pytest.skip("kai-plugin-fpga is not installed: run `tox -e example`, or "
                    "`pip install ./examples/kai-plugin-fpga` and then pytest examples/kai-plugin-fpga/tests")


class FpgaCluster:
    """The example's manifests (all, or all but its pods) in an embedded cluster run with ``pm``;
    ``score_weights`` as in the scheduler's config (plugin name -> weight, default 1)."""

    def __init__(self, pm: KaiPluginManager, with_example_pods: bool = True,
                 score_weights: dict[str, float] | None = None) -> None:
        add_binder_hookspecs(pm)
        self.cluster = EmbeddedCluster(pm)
        manifests = read_manifests(MANIFESTS)
        if not with_example_pods:
            manifests = [m for m in manifests if m.obj.get("kind") != "Pod"]
        apply_manifests(self.cluster.store, manifests)
        self.store = self.cluster.store
        config = SchedulerConfig("kai-scheduler", DRA_ON, score_weights=dict(score_weights or {}))
        self.scheduler = Scheduler(self.store, pm, config)
        self.binder = Binder(self.store, pm, DRA_ON)

    def create(self, *objs: dict) -> None:
        for obj in objs:
            self.store.create(obj)

    def run(self) -> dict[str, str | None]:
        """Controllers, scheduler and binder until a round writes nothing; ``{pod: node or None}``."""
        run_embedded(self.cluster, self.scheduler, self.binder, until_idle=True, max_rounds=20)
        pods = self.store.list("pods", "default")[0]
        return {p["metadata"]["name"]: p["spec"].get("nodeName") for p in pods}

    def pending_message(self, pod: str) -> str:
        """The message of the pod's ``PodScheduled=False`` condition (what ``kubectl describe`` shows)."""
        conditions = (self.store.get("pods", pod, "default").get("status") or {}).get("conditions") or []
        return next(c.get("message", "") for c in conditions
                    if c.get("type") == "PodScheduled" and c.get("status") == "False")

    def devices_of(self, pod: str) -> list[str]:
        """``pool/device`` of every device allocated to the pod's claims."""
        out = []
        for claim in self.store.list("resourceclaims.resource.k8s.io", "default")[0]:
            owners = [o.get("name") for o in claim["metadata"].get("ownerReferences") or []]
            if pod in owners:
                devices = ((claim.get("status") or {}).get("allocation") or {}).get("devices") or {}
                out += [f"{r['pool']}/{r['device']}" for r in devices.get("results", [])]
        return out


@pytest.fixture
def fpga_cluster() -> type[FpgaCluster]:
    """``fpga_cluster(pm, with_example_pods=True, score_weights=None)`` -> a loaded :class:`FpgaCluster`."""
    return FpgaCluster


@pytest.fixture
def fpga_pod() -> Callable[..., dict]:
    """``fpga_pod(name, shell=None, bitstream=None, template="one-fpga")`` -> a Pod asking for one
    FPGA through the ResourceClaimTemplate ``template``, annotated for the plugin when given
    ``shell``/``bitstream``."""

    def make(name: str, shell: str | None = None, bitstream: str | None = None,
             template: str = "one-fpga") -> dict:
        annotations = {}
        if shell is not None:
            annotations["fpga.example.com/shell"] = shell
        if bitstream is not None:
            annotations["fpga.example.com/bitstream"] = bitstream
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {
                "schedulerName": "kai-scheduler",
                "containers": [{"name": "ctr", "image": "registry.example.com/app:1",
                                "resources": {"requests": {"cpu": "1"}, "claims": [{"name": "fpga"}]}}],
                "resourceClaims": [{"name": "fpga", "resourceClaimTemplateName": template}],
            },
        }

    return make
