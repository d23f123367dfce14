"""A small kit for scheduling tests: node and pod builders, and a ``World`` (an embedded cluster
with kai-core's built-in plugins and a scheduler). Tests get the class through the ``world``
fixture: ``w = world(world.node("n1"), world.pod("p"))``."""

from __future__ import annotations

import pytest

from kai_core.api.errors import NotFound
from kai_core.api.resources import RES_BIND_REQUESTS, RES_EVENTS, RES_PODS
from kai_core.apiserver.manifests import parse_documents
from kai_core.cluster import EmbeddedCluster
from kai_core.framework.plugins import KaiPluginManager
from kai_core.plugins import build_plugin_manager
from kai_core.scheduler.cycle import Scheduler, SchedulerConfig
from kai_core.scheduler.decide import unschedulable_message
from kai_core.scheduler.explain import DecisionRecorder


class World:
    """An embedded cluster plus a scheduler; objects are dicts or YAML text."""

    def __init__(self, *objs: dict | str, config: SchedulerConfig | None = None,
                 pm: KaiPluginManager | None = None) -> None:
        self.pm = pm or build_plugin_manager(load_external=False)
        self.cluster = EmbeddedCluster(self.pm)
        self.store = self.cluster.store
        self.add(*objs)
        self.scheduler = Scheduler(self.store, self.pm, config or SchedulerConfig())

    # -- builders ------------------------------------------------------------------------------

    @staticmethod
    def node(name: str, cpu: str = "4", memory: str = "16Gi", pods: str = "110", *,
             labels: dict | None = None, taints: list | None = None, ready: str | None = "True",
             unschedulable: bool = False, extra: dict | None = None) -> dict:
        """A Node; ``extra`` adds allocatable resources (``{"nvidia.com/gpu": "8"}``), ``ready``
        None leaves the Ready condition out."""
        spec: dict = {}
        if taints:
            spec["taints"] = taints
        if unschedulable:
            spec["unschedulable"] = True
        status: dict = {"allocatable": {"cpu": cpu, "memory": memory, "pods": pods, **(extra or {})}}
        if ready is not None:
            status["conditions"] = [{"type": "Ready", "status": ready}]
        return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}},
                "spec": spec, "status": status}

    @staticmethod
    def pod(name: str, cpu: str | None = "1", memory: str | None = None, *,
            scheduler: str = "kai-scheduler", limits: dict | None = None, meta: dict | None = None,
            status: dict | None = None, **spec) -> dict:
        """A one-container Pod requesting ``cpu``/``memory``; keyword arguments go into its spec."""
        requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
        resources: dict = {"requests": requests} if requests else {}
        if limits:
            resources["limits"] = limits
        obj: dict = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", **(meta or {})},
            "spec": {"schedulerName": scheduler,
                     "containers": [{"name": "c", "image": "busybox:1", "resources": resources}], **spec},
        }
        if status:
            obj["status"] = status
        return obj

    @staticmethod
    def queue(name: str, parent: str = "", quota: float = 0, weight: float = 1, limit: float = -1,
              **spec) -> dict:
        """A KAI Queue whose GPU terms are ``quota``/``weight``/``limit``, CPU and memory unlimited;
        keyword arguments go into its spec (``preemptMinRuntime="10m"``)."""
        if parent:
            spec["parentQueue"] = parent
        terms = {"quota": quota, "overQuotaWeight": weight, "limit": limit}
        unlimited = {"quota": -1, "overQuotaWeight": 1, "limit": -1}
        return {"apiVersion": "scheduling.run.ai/v2", "kind": "Queue", "metadata": {"name": name},
                "spec": {"resources": {"gpu": terms, "cpu": unlimited, "memory": dict(unlimited)}, **spec}}

    @staticmethod
    def gpu_node(name: str = "n1", gpus: int = 4) -> dict:
        """A 16-cpu Node with ``gpus`` ``nvidia.com/gpu``."""
        return World.node(name, cpu="16", extra={"nvidia.com/gpu": str(gpus)})

    @staticmethod
    def gpu_pod(name: str, queue_name: str | None = None, gpus: int = 1, *, priority: int = 0,
                group: str | None = None, started: str | None = None, finalizers: list | None = None,
                **spec) -> dict:
        """A pod asking ``gpus`` ``nvidia.com/gpu`` (and 1 cpu), in ``queue_name`` (its
        ``kai.scheduler/queue`` label) and PodGroup ``group``; running since ``started`` when
        ``nodeName`` is given."""
        meta: dict = {"creationTimestamp": "2026-01-01T00:00:00Z"}
        if queue_name:
            meta["labels"] = {"kai.scheduler/queue": queue_name}
        if group:
            meta["annotations"] = {"pod-group-name": group}
        if finalizers:
            meta["finalizers"] = finalizers
        status = {"phase": "Running", "startTime": started or "2026-01-01T00:00:00Z"} if spec.get("nodeName") else None
        return World.pod(name, "1", meta=meta, limits={"nvidia.com/gpu": str(gpus)}, priority=priority,
                         status=status, **spec)

    # -- actions and views ---------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        """Whether the pod of the default namespace still exists."""
        try:
            self.get_pod(name)
        except NotFound:
            return False
        return True

    def add(self, *objs: dict | str) -> None:
        for obj in objs:
            items = [m.obj for m in parse_documents(obj, "test")] if isinstance(obj, str) else [obj]
            for item in items:
                self.store.restore(item)

    def cycle(self):
        self.cluster.reconcile_controllers()
        return self.scheduler.run_cycle()

    def bind_requests(self) -> list[dict]:
        return self.store.list(RES_BIND_REQUESTS)[0]

    def placed(self) -> dict[str, str]:
        """pod name -> node chosen, from the BindRequests written."""
        return {br["spec"]["podName"]: br["spec"]["selectedNode"] for br in self.bind_requests()}

    def get_pod(self, name: str) -> dict:
        return self.store.get(RES_PODS, name, "default")

    def condition(self, name: str) -> dict | None:
        """The pod's PodScheduled condition, if any."""
        for c in (self.get_pod(name).get("status") or {}).get("conditions") or []:
            if c["type"] == "PodScheduled":
                return c
        return None

    def message(self, name: str) -> str | None:
        cond = self.condition(name)
        return cond["message"] if cond else None

    def explain(self) -> None:
        """Record every decision from now on, as ``kai-cli explain`` does (see :meth:`detailed`)."""
        self.scheduler.recorder = DecisionRecorder(keep_all=True)

    def detailed(self, name: str) -> str:
        """The pod's last decision summed up as its message is, but with each node's whole reason
        as ``kai-cli explain`` shows it (a claim allocator's detail after kube-scheduler's words);
        needs :meth:`explain` before the cycle."""
        ex = self.scheduler.recorder.last[f"default/{name}"]
        return unschedulable_message(len(ex.verdicts), {v.node: v.reason for v in ex.verdicts if not v.fits})

    def events(self, name: str) -> list[dict]:
        return [e for e in self.store.list(RES_EVENTS, "default")[0] if e["involvedObject"]["name"] == name]

    def set_br_status(self, br: dict, **status) -> None:
        br = self.store.get(RES_BIND_REQUESTS, br["metadata"]["name"], br["metadata"]["namespace"])
        br["status"] = status
        self.store.update_status(br)


@pytest.fixture
def world() -> type[World]:
    return World
