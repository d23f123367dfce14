"""ComputeDomains placed as gangs inside one NVLink clique: NVIDIA's nvbandwidth demo, groups too large
for any clique, one domain per node, one pod of a domain per node, best fit, and domains that already
run staying where they are."""

from __future__ import annotations

import pytest
import yaml

from kai_core.api.resources import RES_PODS
from kai_core.framework.hookspecs import hookimpl
from kai_core.plugins import build_plugin_manager
from kai_dra_nvidia import plugin

CLIQUE = "nvidia.com/gpu.clique"
CLUSTER_UUID = "4c6e2f58-1d0a-4f5e-9b7b-2f3c1a9d8e71"


def nvbandwidth(upstream_dir) -> tuple[dict, dict]:
    """NVIDIA's nvbandwidth-test-job-1: its ComputeDomain and its MPIJob's worker template."""
    path = upstream_dir / "nvidia.demo.nvbandwidth-test-job-1.yaml"
    if not path.is_file():
        pytest.skip(f"{path} not found: NVIDIA's demo specs are only in the project's workspace")
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    [cd] = [d for d in docs if d["kind"] == "ComputeDomain"]
    [job] = [d for d in docs if d["kind"] == "MPIJob"]
    worker = job["spec"]["mpiReplicaSpecs"]["Worker"]
    return cd, worker


def worker_pods(cd: dict, worker: dict, job: str = "nvbandwidth-test-1") -> list[dict]:
    """The pods the MPI operator makes from the worker template, handed to kai-scheduler."""
    pods = []
    for i in range(worker["replicas"]):
        template = yaml.safe_load(yaml.safe_dump(worker["template"]))
        spec = template["spec"]
        spec["schedulerName"] = "kai-scheduler"
        spec["containers"][0]["env"] = spec["containers"][0].get("env") or []
        pods.append({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": f"{job}-worker-{i}", "namespace": "default",
                                  "labels": template["metadata"]["labels"]},
                     "spec": spec})
    return pods


class WithoutCliques:
    """The NVIDIA plugin minus its clique placement: what a scheduler without it would do."""

    kai_resource_kinds = staticmethod(plugin.kai_resource_kinds)
    kai_embedded_controllers = staticmethod(plugin.kai_embedded_controllers)
    KAI_DRIVERS = plugin.KAI_DRIVERS
    kai_check_configs = staticmethod(plugin.kai_check_configs)


def test_nvbandwidth_job_goes_to_two_nodes_of_one_clique(gb200, upstream_dir):
    cd, worker = nvbandwidth(upstream_dir)
    pods = worker_pods(cd, worker)
    assert [p["spec"]["containers"][0]["resources"]["limits"] for p in pods] == [{"nvidia.com/gpu": 2}] * 2
    c = gb200({"a": 3, "b": 2}, dra_gpus=False)
    # clique a has one free node; a1 is half used, which plain bin packing likes best
    c.pod("half", gpus=2, node="a1")
    c.pod("full-2", gpus=4, node="a2")
    c.pod("full-3", gpus=4, node="a3")
    c.add(cd, *pods)
    result = c.cycle()
    assert result.scheduled == 2
    placed = c.placed()
    assert set(placed) == {"nvbandwidth-test-1-worker-0", "nvbandwidth-test-1-worker-1"}
    assert sorted(placed.values()) == ["b1", "b2"]


def test_without_clique_placement_the_same_job_would_be_split(gb200, upstream_dir):
    cd, worker = nvbandwidth(upstream_dir)
    pm = build_plugin_manager(blocked=["dra-nvidia"])
    pm.register(WithoutCliques(), name="nvidia-without-cliques")
    c = gb200({"a": 3, "b": 2}, dra_gpus=False, pm=pm)
    c.pod("half", gpus=2, node="a1")
    c.pod("full-2", gpus=4, node="a2")
    c.pod("full-3", gpus=4, node="a3")
    c.add(cd, *worker_pods(cd, worker))
    c.cycle()
    assert {c.clique_of(n) for n in c.placed().values()} == {"a", "b"}  # the case NVIDIA users report


def test_a_domain_larger_than_any_clique_waits_with_a_reason(gb200):
    c = gb200({"a": 2, "b": 2})
    c.domain("big", num_nodes=3)
    for i in range(3):
        c.pod(f"big-{i}", "big", gpus=1)
    result = c.cycle()
    assert result.scheduled == 0 and c.placed() == {}
    message = c.message("big-0")
    assert message == ("ComputeDomain default/big (numNodes 3) needs 3 nodes inside one NVLink clique (node label "
                       f"{CLIQUE}) but the largest clique has 2 node(s): it fits no single clique")
    assert {c.message(f"big-{i}") for i in range(3)} == {message}
    assert c.events("big-1")[0]["message"] == message


def test_a_domain_waits_when_no_clique_has_enough_free_nodes(gb200):
    c = gb200({"a": 2, "b": 2})
    c.pod("busy-a", gpus=4, node="a1")
    c.pod("busy-b", gpus=4, node="b2")
    c.domain("pair", num_nodes=2)
    c.pod("pair-0", "pair", gpus=4)
    c.pod("pair-1", "pair", gpus=4)
    c.cycle()
    assert c.placed() == {}
    assert c.message("pair-0") == (
        f"ComputeDomain default/pair (numNodes 2) needs 2 free nodes inside one NVLink clique (node label {CLIQUE}) "
        "but no clique has that many: at most 1, in clique 4c6e2f58-1d0a-4f5e-9b7b-2f3c1a9d8e71.b")


def test_cliques_the_estimate_accepts_are_checked_for_real(gb200):
    c = gb200({"a": 2, "b": 2}, gpus=4)
    for node in ("a1", "a2"):  # room for pair-1 only (cpu)
        c.pod(f"busy-{node}", gpus=2, cpu="70", node=node)
    for node in ("b1", "b2"):  # room for pair-0 only (GPUs)
        c.pod(f"busy-{node}", gpus=3, node=node)
    c.domain("pair", num_nodes=2)
    c.pod("pair-0", "pair", gpus=1, cpu="4")
    c.pod("pair-1", "pair", gpus=2, cpu="1")
    c.cycle()
    assert c.placed() == {}
    message = c.message("pair-0")
    assert message.startswith("ComputeDomain default/pair (numNodes 2): 2 pod(s) must be placed together inside "
                              "one node subset and none holds them: in NVLink clique ")
    assert "clique 4c6e2f58-1d0a-4f5e-9b7b-2f3c1a9d8e71.a: 1 fit (pod default/pair-0: 0/2 nodes are available: " \
           "2 Insufficient cpu.)" in message
    assert "clique 4c6e2f58-1d0a-4f5e-9b7b-2f3c1a9d8e71.b: 1 fit (pod default/pair-1: 0/2 nodes are available: " \
           "2 Insufficient nvidia.com/gpu.)" in message


def test_a_domain_waits_for_its_pods_before_any_is_placed(gb200):
    c = gb200({"a": 4})
    c.domain("four", num_nodes=4)
    for i in range(3):
        c.pod(f"four-{i}", "four", gpus=1)
    c.cycle()
    assert c.placed() == {}
    assert c.message("four-0") == ("ComputeDomain default/four (numNodes 4): waiting for pods: 4 must run "
                                   "together but only 3 are running or waiting to be scheduled (0 running)")
    c.pod("four-3", "four", gpus=1)
    assert c.cycle().scheduled == 4
    assert sorted(c.placed().values()) == ["a1", "a2", "a3", "a4"]


def test_two_domains_never_share_a_node(gb200):
    c = gb200({"a": 4})
    for name in ("x", "y"):
        c.domain(name, num_nodes=2)
        for i in range(2):
            c.pod(f"{name}-{i}", name, gpus=1)  # one GPU each: room for all four pods on one node
    assert c.cycle().scheduled == 4
    placed = c.placed()
    x = {placed["x-0"], placed["x-1"]}
    y = {placed["y-0"], placed["y-1"]}
    assert len(x) == 2 and len(y) == 2 and not x & y


def test_a_second_domain_waits_rather_than_share_a_node(gb200):
    c = gb200({"a": 3})
    c.domain("x", num_nodes=2)
    c.domain("y")  # numNodes 0: its two pods present form the group
    for name in ("x", "y"):
        for i in range(2):
            c.pod(f"{name}-{i}", name, gpus=1)
    c.cycle()
    assert sorted(c.placed()) == ["x-0", "x-1"]
    assert c.message("y-0") == (
        f"ComputeDomain default/y (2 pod(s)) needs 2 free nodes inside one NVLink clique (node label {CLIQUE}) "
        "but no clique has that many: at most 1, in clique 4c6e2f58-1d0a-4f5e-9b7b-2f3c1a9d8e71.a")
    # with one pod left, y fits on the free node; x's nodes stay x's
    c.bind()
    c.store.delete("pods", "y-1", "default")
    c.cycle()
    placed = c.placed()
    assert placed["y-0"] not in {placed["x-0"], placed["x-1"]}


def test_the_filter_names_the_domain_rule(gb200):
    c = gb200({"a": 2})
    c.domain("x", num_nodes=1)
    c.domain("y", num_nodes=1)
    c.pod("x-0", "x", gpus=1)
    c.cycle()
    c.bind()
    c.pod("x-1", "x", gpus=1, node=None)
    c.pod("y-0", "y", gpus=1)
    c.store.patch("nodes", "a2", None, {"spec": {"unschedulable": True}})
    c.cycle()
    assert c.message("y-0") == (
        "0/2 nodes are available: 1 node(s) already run a pod of another ComputeDomain (one ComputeDomain per "
        "node), 1 node(s) were unschedulable.")
    # x-1 waits for room in x's clique (the gang's reason); the filter itself refuses x-0's node too
    assert "already runs in NVLink clique" in c.message("x-1")
    snap = c.scheduler.last_snapshot
    x1 = snap.pods[("default", "x-1")]
    assert plugin.kai_filter_nodes(x1, snap.nodes, snap) == {
        "a1": "node(s) already run a pod of this ComputeDomain (one pod per node per ComputeDomain)"}


def test_one_pod_per_node_per_domain(gb200):
    c = gb200({"a": 2}, gpus=8)
    c.domain("d")
    c.pod("d-0", "d", gpus=1)
    c.pod("d-1", "d", gpus=1)
    assert c.cycle().scheduled == 2  # bin packing alone would put both on one node
    assert sorted(c.placed().values()) == ["a1", "a2"]
    c.bind()
    c.pod("d-2", "d", gpus=1)
    c.cycle()
    assert "d-2" not in c.placed()
    assert c.message("d-2") == (
        "ComputeDomain default/d (3 pod(s)) already runs in NVLink clique 4c6e2f58-1d0a-4f5e-9b7b-2f3c1a9d8e71.a "
        f"(node label {CLIQUE}) and must stay there, but the clique has 0 usable node(s) for the 1 more pod(s) "
        "it needs")


def test_the_clique_that_fits_best_is_chosen(gb200):
    c = gb200({"a": 4, "b": 3, "c": 2})
    c.domain("pair", num_nodes=2)
    c.pod("pair-0", "pair", gpus=4)
    c.pod("pair-1", "pair", gpus=4)
    c.cycle()
    assert sorted(c.placed().values()) == ["c1", "c2"]  # the larger cliques stay whole


def test_a_domain_that_runs_stays_in_its_clique(gb200):
    c = gb200({"a": 3, "b": 4})
    c.domain("d")  # numNodes 0: the pods present form the group
    c.pod("d-0", "d", gpus=4)
    c.pod("d-1", "d", gpus=4)
    c.cycle()
    c.bind()
    home = {c.clique_of(n) for n in c.placed().values()}
    assert home == {"a"}  # best fit: clique a leaves one node, b would leave two
    c.pod("d-2", "d", gpus=4)
    c.pod("other", gpus=4)  # no domain: any node
    c.cycle()
    assert c.clique_of(c.placed()["d-2"]) == "a"


def test_a_running_domain_stays_in_its_clique_when_another_would_fit_better(gb200):
    c = gb200({"a": 2, "b": 5})
    c.pod("block-1", gpus=4, node="a1")  # clique a is full when the domain starts
    c.pod("block-2", gpus=4, node="a2")
    c.domain("d")  # numNodes 0: the pods present form the group
    c.pod("d-0", "d", gpus=4)
    c.pod("d-1", "d", gpus=4)
    c.cycle()
    c.bind()
    assert {c.clique_of(n) for n in c.placed().values()} == {"b"}
    c.store.delete(RES_PODS, "block-1", "default")
    c.store.delete(RES_PODS, "block-2", "default")
    # two more pods: a fresh pair would go to clique a (2 free nodes, an exact fit; b has 3)
    c.pod("d-2", "d", gpus=4)
    c.pod("d-3", "d", gpus=4)
    assert c.cycle().scheduled == 2
    placed = c.placed()
    assert {c.clique_of(placed[p]) for p in ("d-2", "d-3")} == {"b"}
    assert len({placed[f"d-{i}"] for i in range(4)}) == 4  # one pod per node per domain


@pytest.mark.parametrize("bound", [True, False], ids=["bound", "in-flight"])
def test_a_running_domain_waits_rather_than_spill_into_another_clique(gb200, bound):
    c = gb200({"a": 2, "b": 3})
    c.domain("d")
    c.pod("d-0", "d", gpus=4)
    c.pod("d-1", "d", gpus=4)
    c.cycle()
    if bound:
        c.bind()
    assert sorted(c.placed().values()) == ["a1", "a2"]  # best fit: clique a is left with no spare node
    c.pod("d-2", "d", gpus=4)
    c.pod("other", gpus=4, priority=-1)  # clique b has room, as this pod shows
    result = c.cycle()
    assert (result.scheduled, result.unschedulable) == (1, 1)
    assert "d-2" not in c.placed() and c.clique_of(c.placed()["other"]) == "b"
    assert c.message("d-2") == (
        f"ComputeDomain default/d (3 pod(s)) already runs in NVLink clique {CLUSTER_UUID}.a (node label {CLIQUE}) "
        "and must stay there, but the clique has 0 usable node(s) for the 1 more pod(s) it needs")


def test_a_one_node_domain_goes_to_a_clique_already_broken_into(gb200):
    c = gb200({"a": 2, "b": 2})
    c.domain("first", num_nodes=1)
    c.pod("first-0", "first", gpus=1)
    c.cycle()
    c.bind()
    used = c.clique_of(c.placed()["first-0"])
    whole = "b" if used == "a" else "a"
    c.pod("filler", gpus=2, node=f"{whole}1")  # bin packing alone would now pick that node
    c.domain("second", num_nodes=1)
    c.pod("second-0", "second", gpus=1)
    c.cycle()
    assert c.clique_of(c.placed()["second-0"]) == used  # the other clique stays whole
    assert c.placed()["second-0"] != c.placed()["first-0"]


def test_domain_pods_with_a_podgroup_honour_both(gb200):
    c = gb200({"a": 2, "b": 3})
    c.store.restore({"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
                     "metadata": {"name": "job", "namespace": "default"}, "spec": {"minMember": 3}})
    c.domain("d")
    for i in range(3):
        c.pod(f"d-{i}", "d", gpus=4, annotations={"pod-group-name": "job"})
    assert c.cycle().scheduled == 3
    assert sorted(c.placed().values()) == ["b1", "b2", "b3"]


def test_the_controller_reports_where_a_placed_domain_runs(gb200):
    c = gb200({"a": 2, "b": 2})
    c.domain("d", num_nodes=2)
    c.pod("d-0", "d", gpus=4)
    c.pod("d-1", "d", gpus=4)
    c.cycle()
    assert c.compute_domain("d")["status"] == {"status": "NotReady"}
    c.bind()
    c.cluster.reconcile_controllers()
    status = c.compute_domain("d")["status"]
    assert status["status"] == "Ready"
    nodes = sorted(c.placed().values())
    assert [n["name"] for n in status["nodes"]] == nodes
    assert {n["cliqueID"] for n in status["nodes"]} == {f"4c6e2f58-1d0a-4f5e-9b7b-2f3c1a9d8e71.{c.clique_of(nodes[0])}"}
    assert sorted(n["index"] for n in status["nodes"]) == [0, 1]
    assert all(n["status"] == "Ready" and n["ipAddress"].startswith("192.0.2.") for n in status["nodes"])


def test_gang_hooks_are_called_once_per_cycle_and_once_per_gang(gb200):
    calls = {"kai_pod_groups": 0, "kai_group_node_subsets": 0}

    class Count:
        @hookimpl
        def kai_pod_groups(self):
            calls["kai_pod_groups"] += 1

        @hookimpl
        def kai_group_node_subsets(self):
            calls["kai_group_node_subsets"] += 1

    pm = build_plugin_manager()
    pm.register(Count(), name="count")
    c = gb200({"a": 4, "b": 4}, pm=pm)
    for name in ("x", "y"):
        c.domain(name, num_nodes=2)
        for i in range(2):
            c.pod(f"{name}-{i}", name, gpus=1)
    for i in range(5):
        c.pod(f"plain-{i}", gpus=1)
    assert c.cycle().scheduled == 9
    assert calls == {"kai_pod_groups": 1, "kai_group_node_subsets": 2}



def test_a_cycles_snapshot_is_freed_without_the_garbage_collector():
    """The plugin's per-cycle view must not keep the snapshot (the whole cluster) alive: with the
    collector tuned to run rarely (kai_core.runtime), a cycle would otherwise hold every snapshot."""
    import gc
    import weakref

    from kai_core.api.features import FeatureGates
    from kai_core.api.resources import RES_NODES, RES_PODS
    from kai_core.apiserver.store import EmbeddedStore
    from kai_core.framework.cache import Cache
    from kai_core.framework.snapshot import Snapshot
    from kai_dra_nvidia import domains

    cache = Cache(EmbeddedStore(), [RES_NODES, RES_PODS])
    cache.sync()
    snap = Snapshot(cache, "kai-scheduler", FeatureGates.parse("DynamicResourceAllocation=true"))
    domains.view(snap)
    ref = weakref.ref(snap)
    enabled = gc.isenabled()
    gc.disable()
    try:
        del snap
        assert ref() is None
    finally:
        if enabled:
            gc.enable()
