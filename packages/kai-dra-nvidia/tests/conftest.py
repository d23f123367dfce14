"""A GB200-like embedded cluster for scenario tests: nodes in NVLink cliques (label
``nvidia.com/gpu.clique``) with compute-domain and GPU slices shaped like NVIDIA's driver publishes
them, NVIDIA's DeviceClasses (the demo's copy), the plugin found through its entry point, a scheduler
with DRA on, and a stand-in for the binder (kai-binder is not a dependency of this package).

Tests get the class through the ``gb200`` fixture: ``c = gb200(cliques={"a": 2, "b": 2})``.
"""

from __future__ import annotations

import copy

import pytest

from kai_core.api.features import FeatureGates
from kai_core.api.resources import RES_BIND_REQUESTS, RES_CLAIMS, RES_EVENTS, RES_PODS
from kai_core.cluster import EmbeddedCluster
from kai_core.dra.testing import cd_slice, gpu_slice
from kai_core.framework.plugins import KaiPluginManager
from kai_core.plugins import build_plugin_manager
from kai_core.scheduler.cycle import Scheduler, SchedulerConfig
from kai_dra_nvidia import demo_manifests_path
from kai_dra_nvidia.computedomain import RES_COMPUTE_DOMAINS

CLUSTER_UUID = "4c6e2f58-1d0a-4f5e-9b7b-2f3c1a9d8e71"
DRA = FeatureGates.parse("DynamicResourceAllocation=true")


def domain_uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


class Gb200:
    """An embedded cluster plus a scheduler (see the module docstring)."""

    def __init__(self, cliques: dict[str, int] | None = None, *, gpus: int = 4, dra_gpus: bool = True,
                 plain: int = 0, pm: KaiPluginManager | None = None, score_weights: dict | None = None) -> None:
        if pm is None:
            pm = build_plugin_manager()
            assert pm.has_plugin("dra-nvidia"), "the kai_scheduler.plugins entry point of kai-dra-nvidia"
        self.pm = pm
        self.cluster = EmbeddedCluster(self.pm)
        self.store = self.cluster.store
        self.cluster.load(demo_manifests_path() / "00-deviceclasses.yaml")
        for clique, count in (cliques or {}).items():
            for i in range(1, count + 1):
                self.add_node(f"{clique}{i}", clique=clique, gpus=gpus, dra_gpus=dra_gpus)
        for i in range(1, plain + 1):
            self.add_node(f"plain{i}", gpus=gpus, dra_gpus=dra_gpus)
        config = SchedulerConfig(features=DRA, score_weights=score_weights or {})
        self.scheduler = Scheduler(self.store, self.pm, config)
        self._domains = 0

    # -- building ----------------------------------------------------------------------------------

    def add_node(self, name: str, clique: str | None = None, gpus: int = 4, dra_gpus: bool = True,
                 cpu: str = "72", slices: list[dict] | None = None) -> None:
        labels = {"kubernetes.io/hostname": name}
        if clique:
            labels["nvidia.com/gpu.clique"] = f"{CLUSTER_UUID}.{clique}"
        self.store.restore({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"cpu": cpu, "memory": "480Gi", "nvidia.com/gpu": str(gpus), "pods": "110"},
                       "addresses": [{"type": "InternalIP", "address": f"192.0.2.{len(self.nodes()) + 10}"}],
                       "conditions": [{"type": "Ready", "status": "True"}]},
        })
        self.store.restore(cd_slice(name))
        if slices is not None:
            for s in slices:
                self.store.restore(s)
        elif dra_gpus:
            self.store.restore(gpu_slice(name, count=gpus))

    def domain(self, name: str, num_nodes: int = 0, *, uid: str | None = None, namespace: str = "default") -> dict:
        """A ComputeDomain with a fixed uid; its channel template is ``<name>-channel``."""
        self._domains += 1
        return self.store.restore({
            "apiVersion": "resource.nvidia.com/v1beta1", "kind": "ComputeDomain",
            "metadata": {"name": name, "namespace": namespace, "uid": uid or domain_uid(self._domains)},
            "spec": {"numNodes": num_nodes, "channel": {"resourceClaimTemplate": {"name": f"{name}-channel"}}},
        })

    def pod(self, name: str, domain: str | None = None, *, gpus: int = 0, cpu: str = "1", labels: dict | None = None,
            annotations: dict | None = None, claims: dict[str, str] | None = None, node: str | None = None,
            priority: int | None = None) -> dict:
        """A pod of kai-scheduler: ``gpus`` whole GPUs of ``nvidia.com/gpu`` (device plugin), the
        channel of ComputeDomain ``domain``, and ``claims`` (pod claim name -> ResourceClaim name)."""
        resources: dict = {"requests": {"cpu": cpu}}
        if gpus:
            resources["limits"] = {"nvidia.com/gpu": str(gpus)}
        refs = []
        if domain:
            refs.append({"name": "channel", "resourceClaimTemplateName": f"{domain}-channel"})
        refs += [{"name": k, "resourceClaimName": v} for k, v in (claims or {}).items()]
        if refs:
            resources["claims"] = [{"name": r["name"]} for r in refs]
        spec: dict = {"schedulerName": "kai-scheduler",
                      "containers": [{"name": "c", "image": "busybox:1", "resources": resources}]}
        if refs:
            spec["resourceClaims"] = refs
        if node:
            spec["nodeName"] = node
        if priority is not None:
            spec["priority"] = priority
        md: dict = {"name": name, "namespace": "default", "labels": labels or {}}
        if annotations:
            md["annotations"] = annotations
        return self.store.restore({"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec})

    def add(self, *objs: dict) -> None:
        for obj in objs:
            self.store.restore(copy.deepcopy(obj))

    # -- running -------------------------------------------------------------------------------------

    def cycle(self):
        """Controllers until claims exist (ComputeDomain template, then the pods' claims), then one
        scheduling cycle."""
        for _ in range(3):
            self.cluster.reconcile_controllers()
        return self.scheduler.run_cycle()

    def bind(self) -> None:
        """What the binder would do for every new BindRequest: claims allocated and reserved, the pod
        bound and running, the request Succeeded."""
        for br in self.store.list(RES_BIND_REQUESTS)[0]:
            if (br.get("status") or {}).get("phase"):
                continue
            spec = br["spec"]
            pod = self.store.get(RES_PODS, spec["podName"], "default")
            names = {s["name"]: s["resourceClaimName"] for s in pod["status"].get("resourceClaimStatuses") or []}
            names.update({rc["name"]: rc["resourceClaimName"] for rc in pod["spec"].get("resourceClaims") or []
                          if rc.get("resourceClaimName")})
            for entry in spec.get("resourceClaimAllocations") or []:
                claim = self.store.get(RES_CLAIMS, names[entry["name"]], "default")
                claim.setdefault("status", {})
                claim["status"].setdefault("allocation", entry["allocation"])
                claim["status"]["reservedFor"] = [*(claim["status"].get("reservedFor") or []),
                                                  {"resource": "pods", "name": pod["metadata"]["name"],
                                                   "uid": pod["metadata"]["uid"]}]
                self.store.update_status(claim)
            self.store.bind("default", pod["metadata"]["name"], spec["selectedNode"], pod["metadata"]["uid"])
            pod = self.store.get(RES_PODS, spec["podName"], "default")
            pod["status"]["phase"] = "Running"
            self.store.update_status(pod)
            br["status"] = {"phase": "Succeeded"}
            self.store.update_status(br)

    # -- looking -------------------------------------------------------------------------------------

    def nodes(self) -> list[dict]:
        return self.store.list("nodes")[0]

    def placed(self) -> dict[str, str]:
        """pod name -> node, from the BindRequests written."""
        return {br["spec"]["podName"]: br["spec"]["selectedNode"] for br in self.store.list(RES_BIND_REQUESTS)[0]}

    def clique_of(self, node: str) -> str:
        labels = self.store.get("nodes", node)["metadata"]["labels"]
        return labels.get("nvidia.com/gpu.clique", "").rpartition(".")[2]

    def message(self, pod: str) -> str | None:
        for c in (self.store.get(RES_PODS, pod, "default").get("status") or {}).get("conditions") or []:
            if c["type"] == "PodScheduled":
                return c["message"]
        return None

    def events(self, pod: str) -> list[dict]:
        return [e for e in self.store.list(RES_EVENTS, "default")[0] if e["involvedObject"]["name"] == pod]

    def compute_domain(self, name: str) -> dict:
        return self.store.get(RES_COMPUTE_DOMAINS, name, "default")


@pytest.fixture
def gb200() -> type[Gb200]:
    return Gb200
