"""The seed's own scenario (a GB200 pod asking for a GPU and an IMEX channel) through a binder whose
first bindings are refused: the request ends Failed with the API's reason, the pod says so, and
once the API lets it the pod is scheduled again and bound, with its claims reserved."""

from __future__ import annotations

import pytest

from kai_binder.binder import RECOMMENDED_OPTIONS, Binder, add_binder_hookspecs
from kai_binder.clock import ManualClock
from kai_binder.testing import FaultyStore, invariant_violations, settle
from kai_core.api.features import FeatureGates
from kai_core.api.resources import RES_BIND_REQUESTS, RES_CLAIMS, RES_EVENTS, RES_PODS
from kai_core.cluster import EmbeddedCluster
from kai_core.plugins import build_plugin_manager
from kai_core.scheduler.cycle import Scheduler, SchedulerConfig

POD = "gpu-imex-pod"


@pytest.fixture
def seed_cluster():
    demo = pytest.importorskip("kai_dra_nvidia.demo", reason="kai-dra-nvidia is not installed")

    def make(backoff_limit: int | None):
        pm = build_plugin_manager()
        add_binder_hookspecs(pm)
        cluster = EmbeddedCluster(pm)
        cluster.load(demo.demo_manifests_path())
        gates = FeatureGates.parse("DynamicResourceAllocation=true")
        clock = ManualClock()
        faulty = FaultyStore(cluster.store, refuse_binds=True)
        scheduler = Scheduler(faulty, pm, SchedulerConfig(features=gates, backoff_limit=backoff_limit),
                              clock=clock.now)
        binder = Binder(faulty, pm, gates, qps=0, clock=clock.now, sleep=clock.sleep, **RECOMMENDED_OPTIONS)
        return cluster, faulty, scheduler, binder, clock

    return make


def one_round(cluster, scheduler, binder) -> None:
    cluster.reconcile_controllers()
    scheduler.run_cycle()
    binder.run_once()


@pytest.mark.parametrize("backoff_limit, attempts", [(None, 1), (3, 3)])
def test_forced_bind_failure_ends_failed_then_the_pod_is_rescheduled_and_bound(seed_cluster, backoff_limit,
                                                                                attempts):
    cluster, faulty, scheduler, binder, clock = seed_cluster(backoff_limit)
    store = cluster.store
    first: list[dict] = []
    for _ in range(10):  # the channel's claim template and claims appear, then a decision
        one_round(cluster, scheduler, binder)
        first = [b for b in store.list(RES_BIND_REQUESTS)[0] if b["spec"]["podName"] == POD]
        if first:
            break
    [br] = first
    assert br["status"]["phase"] == "Failed"
    assert br["status"]["reason"] == (f"binding pod default/{POD} to node {br['spec']['selectedNode']}: "
                                      f'Conflict (409): pods/binding "{POD}" refused by the test')
    pod = store.get(RES_PODS, POD, "default")
    assert not pod["spec"].get("nodeName")
    [cond] = [c for c in pod["status"]["conditions"] if c["type"] == "PodBound"]
    assert (cond["status"], cond["reason"]) == ("False", "BindingError")
    assert br["status"]["reason"] in cond["message"]
    # a failed attempt holds nothing: the claims are free again
    for st in pod["status"]["resourceClaimStatuses"]:
        claim = store.get(RES_CLAIMS, st["resourceClaimName"], "default")
        assert not (claim.get("status") or {}).get("reservedFor")
    assert invariant_violations(store) == []

    # keep refusing until the request has used its attempts; then let the API bind
    while (br.get("status") or {}).get("failedAttempts", 0) < (backoff_limit or 0):
        clock.advance_to(binder.next_due())
        one_round(cluster, scheduler, binder)
        br = store.get(RES_BIND_REQUESTS, br["metadata"]["name"], "default")
    faulty.refuse_binds = False
    settle(cluster, scheduler, binder, clock)

    pod = store.get(RES_PODS, POD, "default")
    [now] = [b for b in store.list(RES_BIND_REQUESTS)[0] if b["spec"]["podName"] == POD]
    assert now["metadata"]["name"] != br["metadata"]["name"]  # a new decision
    assert now["status"] == {"phase": "Succeeded"}
    assert pod["spec"]["nodeName"] == now["spec"]["selectedNode"]
    [cond] = [c for c in pod["status"]["conditions"] if c["type"] == "PodBound"]
    assert (cond["status"], cond["reason"]) == ("True", "Bound")
    for st in pod["status"]["resourceClaimStatuses"]:
        claim = store.get(RES_CLAIMS, st["resourceClaimName"], "default")
        mine = {"resource": "pods", "name": POD, "uid": pod["metadata"]["uid"]}
        assert claim["status"]["reservedFor"] == [mine]
    events = [(e["type"], e["reason"]) for e in store.list(RES_EVENTS, "default")[0]
              if e["involvedObject"]["name"] == POD and e["source"]["component"] == "kai-binder"]
    assert sorted(events) == [("Normal", "Bound")] + [("Warning", "BindingError")] * attempts
    assert invariant_violations(store) == []
