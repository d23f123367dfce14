"""A rig for binder tests: an embedded cluster with FPGA-like DRA devices, a scheduler and a binder
on a manual clock, optionally behind a :class:`kai_binder.testing.FaultyStore`.

Tests get the class through the ``rig`` fixture: ``r = rig(pods=[rig.pod("p1", claims=2)])``.
"""

from __future__ import annotations

import pytest

from kai_binder.binder import Binder, add_binder_hookspecs
from kai_binder.clock import ManualClock
from kai_binder.testing import FaultyStore, settle
from kai_core.api.features import FeatureGates
from kai_core.api.resources import RES_BIND_REQUESTS, RES_CLAIMS, RES_EVENTS, RES_PODS
from kai_core.apiserver.manifests import parse_documents
from kai_core.cluster import EmbeddedCluster
from kai_core.plugins import build_plugin_manager
from kai_core.scheduler.cycle import Scheduler, SchedulerConfig

DRA = FeatureGates.parse("DynamicResourceAllocation=true")
DRIVER = "fpga.example.com"


def node(name: str, cpu: str = "8", devices: int = 2) -> str:
    return f"""
apiVersion: v1
kind: Node
metadata: {{name: {name}}}
status:
  allocatable: {{cpu: "{cpu}", memory: 16Gi, pods: "110"}}
  conditions: [{{type: Ready, status: "True"}}]
---
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {{name: {name}-fpga}}
spec:
  driver: {DRIVER}
  nodeName: {name}
  pool: {{name: {name}, generation: 1, resourceSliceCount: 1}}
  devices: [{", ".join(f"{{name: fpga-{i}}}" for i in range(devices))}]
"""


CLASSES = f"""
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {{name: {DRIVER}}}
spec: {{selectors: [{{cel: {{expression: "device.driver == '{DRIVER}'"}}}}]}}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {{name: one-fpga, namespace: default}}
spec: {{spec: {{devices: {{requests: [{{name: fpga, exactly: {{deviceClassName: {DRIVER}}}}}]}}}}}}
"""


def shared_claim(name: str) -> str:
    return f"""
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {{name: {name}, namespace: default}}
spec: {{devices: {{requests: [{{name: fpga, exactly: {{deviceClassName: {DRIVER}}}}}]}}}}
"""


#: ``pod(priority=N)`` names the PriorityClass ``priority-N``, of value N
PRIORITY_CLASS_PREFIX = "priority-"


def pod(name: str, cpu: str = "1", claims: int = 0, shared: list[str] | tuple[str, ...] = (),
        priority: int | None = None) -> dict:
    """A pod of kai-scheduler asking for ``cpu``, ``claims`` devices from the one-fpga template
    (one claim each) and the named shared claims."""
    container = {"name": "c", "image": "busybox:1", "resources": {"requests": {"cpu": cpu}}}
    spec: dict = {"schedulerName": "kai-scheduler", "containers": [container]}
    rcs = [{"name": f"dev{i}", "resourceClaimTemplateName": "one-fpga"} for i in range(claims)]
    rcs += [{"name": f"shared-{s}", "resourceClaimName": s} for s in shared]
    if rcs:
        spec["resourceClaims"] = rcs
        spec["containers"][0]["resources"]["claims"] = [{"name": rc["name"]} for rc in rcs]
    if priority is not None:  # as on a real cluster, through a PriorityClass (the Rig creates it)
        spec["priorityClassName"] = f"{PRIORITY_CLASS_PREFIX}{priority}"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": spec}


class Rig:
    node = staticmethod(node)
    pod = staticmethod(pod)
    shared_claim = staticmethod(shared_claim)

    def __init__(self, nodes: tuple[str, ...] = ("n1",), devices: int = 2, pods: list[dict] = (),
                 extra: str = "", backoff_limit: int | None = None, faults: dict[int, str] | None = None,
                 seed: list[dict] | None = None, **binder_options) -> None:
        self.pm = build_plugin_manager(load_external=False)
        add_binder_hookspecs(self.pm)
        self.cluster = EmbeddedCluster(self.pm)
        self.store = self.cluster.store
        if seed is not None:
            for obj in seed:
                self.store.restore(obj)
        else:
            text = CLASSES + "".join("---" + node(n, devices=devices) for n in nodes)
            if extra:
                text += "---" + extra
            for m in parse_documents(text, "rig"):
                self.store.restore(m.obj)
            for p in pods:
                self._create(p)
        self.faulty = FaultyStore(self.store, faults)
        self.clock = ManualClock(1000.0)
        self.config = SchedulerConfig(features=DRA, backoff_limit=backoff_limit)
        self.binder_options = {"qps": 0, **binder_options}
        self.scheduler = self.new_scheduler()
        self.binder = self.new_binder()

    def new_scheduler(self) -> Scheduler:
        self.scheduler = Scheduler(self.faulty, self.pm, self.config, clock=self.clock.now)
        return self.scheduler

    def new_binder(self, **options) -> Binder:
        """A fresh binder (a restart): nothing carried over but the cluster."""
        self.binder = Binder(self.faulty, self.pm, DRA, clock=self.clock.now, sleep=self.clock.sleep,
                             **{**self.binder_options, **options})
        return self.binder

    def add(self, *objs: dict) -> None:
        for o in objs:
            self._create(o)

    def _create(self, obj: dict) -> None:
        """Create ``obj``, and first the PriorityClass a pod of :func:`pod` names."""
        name = (obj.get("spec") or {}).get("priorityClassName") or "" if obj.get("kind") == "Pod" else ""
        if name.startswith(PRIORITY_CLASS_PREFIX) and not self.store.list(
                "priorityclasses", field_selector=f"metadata.name={name}")[0]:
            self.store.create({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                               "metadata": {"name": name}, "value": int(name[len(PRIORITY_CLASS_PREFIX):])})
        self.store.create(obj)

    def schedule(self):
        self.cluster.reconcile_controllers()
        return self.scheduler.run_cycle()

    def bind(self):
        return self.binder.run_once()

    def settle(self, max_rounds: int = 300) -> int:
        return settle(self.cluster, self.scheduler, self.binder, self.clock, max_rounds)

    # -- views -----------------------------------------------------------------------------------

    def get_pod(self, name: str) -> dict:
        return self.store.get(RES_PODS, name, "default")

    def node_of(self, name: str) -> str | None:
        return self.get_pod(name)["spec"].get("nodeName")

    def claims_of(self, name: str) -> list[dict]:
        p = self.get_pod(name)
        out = []
        for rc in p["spec"].get("resourceClaims") or []:
            statuses = p["status"]["resourceClaimStatuses"]
            cn = rc.get("resourceClaimName") or next(
                s["resourceClaimName"] for s in statuses if s["name"] == rc["name"])
            out.append(self.store.get(RES_CLAIMS, cn, "default"))
        return out

    def claim(self, name: str) -> dict:
        return self.store.get(RES_CLAIMS, name, "default")

    def brs(self, pod_name: str | None = None) -> list[dict]:
        items = self.store.list(RES_BIND_REQUESTS)[0]
        return [b for b in items if pod_name is None or b["spec"]["podName"] == pod_name]

    def the_br(self, pod_name: str | None = None) -> dict:
        [br] = self.brs(pod_name)
        return br

    def condition(self, name: str, type_: str = "PodBound") -> dict | None:
        for c in (self.get_pod(name).get("status") or {}).get("conditions") or []:
            if c["type"] == type_:
                return c
        return None

    def events(self, name: str, component: str | None = "kai-binder") -> list[dict]:
        return [e for e in self.store.list(RES_EVENTS, "default")[0]
                if e["involvedObject"]["name"] == name
                and (component is None or e["source"]["component"] == component)]


@pytest.fixture
def rig() -> type[Rig]:
    return Rig
