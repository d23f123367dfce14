"""Random workloads through the scheduler and the binder under random faults (409s, 500s, timeouts
that lose or apply the write, crashes of either process, pods deleted mid-way, pods whose binding a
plugin refuses, pods the scheduler preempts for higher-priority ones): the invariants hold after
every round (once the controllers had their turn), and once the faults stop and the cluster
settles, they still hold and every pod is bound or says why not.

The number of examples is ``KAI_PROPERTY_EXAMPLES`` (default 150); the examples are derandomized
so every run checks the same ones."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kai_binder.testing import FAULTS, Crash, invariant_violations
from kai_core.api.errors import NotFound
from kai_core.api.resources import RES_PODS
from kai_core.framework.hookspecs import hookimpl

EXAMPLES = int(os.environ.get("KAI_PROPERTY_EXAMPLES", "150"))
FAULT_ROUNDS = 12
SHARED = ("s1", "s2")


@st.composite
def workloads(draw):
    pods = []
    for i in range(draw(st.integers(1, 6))):
        pods.append({
            "name": f"p{i}",
            "cpu": str(draw(st.integers(1, 3))),
            "claims": draw(st.integers(0, 2)),
            "shared": draw(st.lists(st.sampled_from(SHARED), max_size=2, unique=True)),
            "priority": draw(st.integers(0, 2)),
        })
    return {
        "nodes": tuple(f"n{i}" for i in range(draw(st.integers(1, 3)))),
        "devices": draw(st.integers(1, 4)),
        "pods": pods,
        "backoff_limit": draw(st.sampled_from([None, 1, 3])),
        "faults": draw(st.dictionaries(st.integers(1, 30), st.sampled_from(FAULTS), max_size=12)),
        "deletions": draw(st.dictionaries(st.integers(0, FAULT_ROUNDS - 1), st.integers(0, 5), max_size=2)),
        "cursed": draw(st.sets(st.integers(0, 5), max_size=2)),
        "report": draw(st.booleans()),
        "check_node": draw(st.booleans()),
    }


class Curse:
    """A binder plugin refusing, in pre-bind, to let the named pods be bound (after the DRA step
    wrote their claims, so every refusal exercises the rollback)."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    @hookimpl
    def kai_binder_pre_bind(self, pod):
        if pod["metadata"]["name"] in self.names:
            raise RuntimeError("cursed")


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(w=workloads())
def test_random_workloads_with_faults_end_consistent(rig, w):
    extra = "---".join(rig.shared_claim(s) for s in SHARED)
    pods = [rig.pod(p["name"], cpu=p["cpu"], claims=p["claims"], shared=p["shared"], priority=p["priority"])
            for p in w["pods"]]
    r = rig(nodes=w["nodes"], devices=w["devices"], pods=pods, extra=extra, backoff_limit=w["backoff_limit"],
            faults=w["faults"], report=w["report"], check_node=w["check_node"])
    curse = Curse({f"p{i}" for i in w["cursed"]})
    r.pm.register(curse, name="curse")
    crashes = 0
    for rnd in range(FAULT_ROUNDS):
        if rnd in w["deletions"]:
            try:
                r.store.delete(RES_PODS, f"p{w['deletions'][rnd]}", "default")
            except NotFound:
                pass
        try:
            r.cluster.reconcile_controllers()
            r.scheduler.run_cycle()
        except Crash:
            crashes += 1
            r.new_scheduler()
        try:
            r.binder.run_once()
        except Crash:
            crashes += 1
            r.new_binder()
        # the controllers' turn: Kubernetes releases the claims of pods the scheduler evicted (as of
        # any deleted pod) once they are gone; until then a claim is reserved for a pod not there
        r.cluster.reconcile_controllers()
        assert invariant_violations(r.store, ["kai-scheduler"]) == [], f"after round {rnd}"
        due = [t for t in (r.scheduler.next_due(), r.binder.next_due()) if t is not None]
        r.clock.advance_to(min(due) if due else r.clock.now() + 1.0)
    served = sum(1 for n in w["faults"] if n <= r.faulty.writes)
    event(f"faults served: {min(served, 3)}{'+' if served >= 3 else ''}")
    event(f"crashes: {min(crashes, 2)}{'+' if crashes >= 2 else ''}")
    r.faulty.faults = {}
    curse.names.clear()
    r.settle()
    bound = sum(1 for p in r.store.list(RES_PODS)[0] if p["spec"].get("nodeName"))
    event(f"pods bound: {'all' if bound == len(r.store.list(RES_PODS)[0]) else 'some' if bound else 'none'}")
    assert invariant_violations(r.store, ["kai-scheduler"]) == []
    for p in r.store.list(RES_PODS)[0]:
        if p["spec"].get("nodeName"):
            continue
        [cond] = [c for c in p["status"]["conditions"] if c["type"] == "PodScheduled"]
        assert cond["reason"] == "Unschedulable" and cond["message"], p["metadata"]["name"]
