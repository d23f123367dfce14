"""Faults while the scheduler and the binder run against a cluster (the fake API server): a cut
watch, a compacted history (410), bursts of 5xx and 429, and a binder leader that dies in the
middle of a bind while a standby waits. Every run must end consistent: each pod bound once, one
Succeeded BindRequest per pod, no node or device given out twice."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import yaml

from kai_core.api.resources import RES_BIND_REQUESTS, RES_CLAIMS, RES_PODS
from kai_core.framework.hookspecs import hookimpl

LEASES = "leases.coordination.k8s.io"
NODES = ["n1", "n2", "n3"]
CPU_PER_NODE = 8


def node(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"allocatable": {"cpu": str(CPU_PER_NODE), "memory": "16Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(name: str, claim_template: str | None = None) -> dict:
    p = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
         "spec": {"schedulerName": "kai-scheduler",
                  "containers": [{"name": "c", "image": "busybox:1",
                                  "resources": {"requests": {"cpu": "1"}}}]}}
    if claim_template:
        p["spec"]["containers"][0]["resources"]["claims"] = [{"name": "dev"}]
        p["spec"]["resourceClaims"] = [{"name": "dev", "resourceClaimTemplateName": claim_template}]
    return p


DRA_CLUSTER = """
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: fpga.example.com}
spec: {selectors: [{cel: {expression: "device.driver == 'fpga.example.com'"}}]}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: one-fpga, namespace: default}
spec: {spec: {devices: {requests: [{name: fpga, exactly: {deviceClassName: fpga.example.com}}]}}}
""" + "".join(f"""---
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {{name: {n}-fpga}}
spec:
  driver: fpga.example.com
  nodeName: {n}
  pool: {{name: {n}, generation: 1, resourceSliceCount: 1}}
  devices: [{{name: fpga-0}}, {{name: fpga-1}}, {{name: fpga-2}}]
""" for n in NODES)


@pytest.fixture
def cluster_files(tmp_path):
    def write(dra: bool = False):
        path = tmp_path / "cluster.yaml"
        docs = [node(n) for n in NODES]
        if dra:
            docs += [d for d in yaml.safe_load_all(DRA_CLUSTER) if d]
        path.write_text(yaml.safe_dump_all(docs))
        return path
    return write


def create_pods(lc, names, claim_template=None) -> None:
    for n in names:
        lc.store.create(pod(n, claim_template))


def all_bound(lc, names) -> bool:
    pods = {p["metadata"]["name"]: p for p in lc.store.list(RES_PODS, "default")[0]}
    brs = lc.store.list(RES_BIND_REQUESTS)[0]
    phases = Counter(b["spec"]["podName"] for b in brs if b.get("status", {}).get("phase") == "Succeeded")
    return all(pods[n]["spec"].get("nodeName") for n in names) and all(phases[n] == 1 for n in names) \
        and len(brs) == len(names)


def assert_consistent(lc, names) -> None:
    """Each pod on a node once, its one BindRequest Succeeded for that node, no node over capacity,
    and for DRA pods: the claim reserved for its pod alone, no device handed out twice."""
    pods = {p["metadata"]["name"]: p for p in lc.store.list(RES_PODS, "default")[0]}
    brs = lc.store.list(RES_BIND_REQUESTS)[0]
    assert sorted(b["spec"]["podName"] for b in brs) == sorted(names)
    for br in brs:
        assert br["status"] == {"phase": "Succeeded"}, br
        assert pods[br["spec"]["podName"]]["spec"]["nodeName"] == br["spec"]["selectedNode"]
    per_node = Counter(pods[n]["spec"]["nodeName"] for n in names)
    assert all(count <= CPU_PER_NODE for count in per_node.values()), per_node
    devices = []
    for n in names:
        statuses = (pods[n].get("status") or {}).get("resourceClaimStatuses") or []
        for st in statuses:
            claim = lc.store.get(RES_CLAIMS, st["resourceClaimName"], "default")
            assert claim["status"]["reservedFor"] == [{"resource": "pods", "name": n,
                                                       "uid": pods[n]["metadata"]["uid"]}]
            for r in claim["status"]["allocation"]["devices"]["results"]:
                devices.append((r["pool"], r["device"]))
                assert r["pool"] == pods[n]["spec"]["nodeName"]
    assert len(devices) == len(set(devices)), devices


def run_in_two_waves(lc, fault, first=("a", 8), second=("b", 8), claim_template=None, gates=""):
    scheduler = lc.start("scheduler", gates=gates)
    binder = lc.start("binder", gates=gates)
    wave1 = [f"{first[0]}{i}" for i in range(first[1])]
    wave2 = [f"{second[0]}{i}" for i in range(second[1])]
    create_pods(lc, wave1, claim_template)
    lc.wait_for(lambda: all_bound(lc, wave1), "the first wave to be bound")
    fault()
    create_pods(lc, wave2, claim_template)
    lc.wait_for(lambda: all_bound(lc, wave1 + wave2), "every pod to be bound after the fault")
    assert scheduler.stop() == 0 and binder.stop() == 0
    assert_consistent(lc, wave1 + wave2)
    return scheduler, binder


def test_cut_watches_mid_run_reconnect_and_end_consistent(live_cluster, cluster_files):
    lc = live_cluster(cluster_files())
    watches_before = {}

    def cut():
        watches_before.update(lc.running[0].component.store.reflector_stats())
        assert lc.server.cut_watches() > 0

    scheduler, _ = run_in_two_waves(lc, cut)
    after = scheduler.component.store.reflector_stats()
    assert after["pods"]["watches"] > watches_before["pods"]["watches"]  # it reconnected
    assert after["pods"]["lists"] == watches_before["pods"]["lists"]  # from where it was, no relist


def test_compacted_history_410_relists_and_ends_consistent(live_cluster, cluster_files):
    lc = live_cluster(cluster_files())
    lists_before = {}

    def compact():
        lists_before.update(lc.running[0].component.store.reflector_stats())
        lc.server.compact()

    scheduler, _ = run_in_two_waves(lc, compact)
    after = scheduler.component.store.reflector_stats()
    assert after["pods"]["lists"] > lists_before["pods"]["lists"]  # the 410 made it list again


def test_bursts_of_5xx_and_429_end_consistent(live_cluster, cluster_files):
    lc = live_cluster(cluster_files())

    def burst():
        lc.server.fail_next(6, 503)  # whatever comes next: watches, lists, writes
        lc.server.fail_next(2, 500, verb="create", resource=RES_BIND_REQUESTS)
        lc.server.fail_next(2, 500, verb="create", resource="pods")  # pods/binding
        lc.server.throttle_next(2, retry_after=0, verb="update")

    run_in_two_waves(lc, burst)
    assert lc.server.pending_faults() == 0  # every injected fault was served


def test_dra_pods_survive_faults(live_cluster, cluster_files):
    lc = live_cluster(cluster_files(dra=True))

    def faults():
        lc.server.cut_watches()
        lc.server.fail_next(3, 503)
        lc.server.fail_next(1, 500, verb="update", resource=RES_CLAIMS)

    run_in_two_waves(lc, faults, first=("a", 4), second=("b", 4), claim_template="one-fpga",
                     gates="DynamicResourceAllocation=true")


class Crash(BaseException):
    """A process dying: not an Exception, so nothing in the binder catches it or rolls back."""


class CrashOnThirdBind:
    """A binder plugin that kills its binder in the middle of the third bind: after the pod's
    claims were written, before pods/binding."""

    def __init__(self) -> None:
        self.calls = 0
        self.crashed_pod: str | None = None
        self._lock = threading.Lock()

    @hookimpl
    def kai_binder_pre_bind(self, bind_request, pod, store):
        with self._lock:  # the binder's workers call hooks concurrently
            self.calls += 1
            crash = self.calls == 3
            if crash:
                self.crashed_pod = pod["metadata"]["name"]
        if crash:
            raise Crash()


def test_binder_leader_dies_mid_bind_and_the_standby_finishes(live_cluster, cluster_files):
    from kai_binder.binder import add_binder_hookspecs
    from kai_core.plugins import build_plugin_manager

    lc = live_cluster(cluster_files(dra=True))
    crash = CrashOnThirdBind()
    pm_a = build_plugin_manager()
    add_binder_hookspecs(pm_a)
    pm_a.register(crash, name="crash-on-third-bind")
    election = dict(leader_elect=True, lease_duration=2, renew_deadline=1.0, retry_period=0.1)
    gates = "DynamicResourceAllocation=true"

    leader = lc.start("binder", gates=gates, pm=pm_a, identity="binder-a", **election)
    lc.wait_for(lambda: leader.component.elector and leader.component.elector.is_leader, "binder-a to lead")
    standby = lc.start("binder", gates=gates, identity="binder-b", **election)
    lc.wait_for(lambda: standby.component.elector and standby.component.elector.observed_holder == "binder-a",
                "binder-b to see binder-a leading")
    assert not standby.component.elector.leading.is_set()
    scheduler = lc.start("scheduler", gates=gates)
    names = [f"p{i}" for i in range(6)]
    create_pods(lc, names, "one-fpga")

    lc.wait_for(lambda: leader.done, "binder-a to die")
    assert isinstance(leader.error, Crash)
    # it died in the middle of a bind: the claim is allocated and reserved, the pod is not bound
    victim = lc.store.get(RES_PODS, crash.crashed_pod, "default")
    assert not victim["spec"].get("nodeName")
    claim_name = victim["status"]["resourceClaimStatuses"][0]["resourceClaimName"]
    claim = lc.store.get(RES_CLAIMS, claim_name, "default")
    assert claim["status"]["reservedFor"][0]["name"] == crash.crashed_pod and claim["status"]["allocation"]
    br = next(b for b in lc.store.list(RES_BIND_REQUESTS)[0] if b["spec"]["podName"] == crash.crashed_pod)
    assert not (br.get("status") or {}).get("phase")
    # a dead leader cannot release its Lease: the standby takes over once it expires, and finishes
    lc.wait_for(lambda: all_bound(lc, names), "binder-b to take over and bind every pod")
    lease = lc.store.get(LEASES, "kai-binder", "default")
    assert lease["spec"]["holderIdentity"] == "binder-b" and lease["spec"]["leaseTransitions"] >= 1
    assert scheduler.stop() == 0 and standby.stop() == 0
    assert_consistent(lc, names)


def test_a_lost_lease_stops_the_binder_with_exit_1(live_cluster, cluster_files):
    from kai_cli.kube import RunFailure
    from kai_core.client.leaderelection import micro_time

    lc = live_cluster(cluster_files())
    binder = lc.start("binder", gates="", identity="binder-a", leader_elect=True, lease_duration=2,
                      renew_deadline=1.0, retry_period=0.1)
    lc.wait_for(lambda: binder.component.elector.is_leader, "the binder to lead")
    lease = lc.store.get(LEASES, "kai-binder", "default")
    lease["spec"].update(holderIdentity="intruder", renewTime=micro_time(), leaseDurationSeconds=60)
    lc.store.update(lease)
    lc.wait_for(lambda: binder.done, "the binder to notice and stop")
    assert isinstance(binder.error, RunFailure)
    assert "lost the leader Lease default/kai-binder" in str(binder.error)
    assert lc.store.get(LEASES, "kai-binder", "default")["spec"]["holderIdentity"] == "intruder"  # untouched
