"""A pending pod's DRA GPUs in its queue (issue 13): the GPUs of the allocation it would get count in
the queue's ``requested`` (Queue status, the fair-share demand) and against the queue's GPU limit, as
``nvidia.com/gpu`` does; a claim shared by pending pods counts once, a MIG device as its fraction of
the parent GPU (or what a device plugin says)."""

from __future__ import annotations

import gc
import weakref

from kai_core.api.features import FeatureGates
from kai_core.api.resources import RES_QUEUES
from kai_core.dra.testing import GPU, claim, device_class, gpu_device, gpu_slice, request
from kai_core.framework.hookspecs import hookimpl
from kai_core.framework.queue_order import snapshot_standing
from kai_core.framework.queue_usage import _indexed_usage, _walked_usage
from kai_core.framework.queues import tree_from_objects
from kai_core.plugins import build_plugin_manager
from kai_core.scheduler.cycle import SchedulerConfig

DRA = SchedulerConfig(features=FeatureGates.parse("DynamicResourceAllocation=true"))


def mig_device(gpu: int, start: int) -> dict:
    """A 1g.10gb MIG device of ``gpu-<gpu>`` (80Gi): an eighth of its memory."""
    attributes = dict(gpu_device(gpu)["attributes"])
    attributes.update({"type": {"string": "mig"}, "uuid": {"string": f"MIG-{gpu}-{start}"},
                       "parentUUID": {"string": f"GPU-0000000{gpu}"}, "profile": {"string": "1g.10gb"}})
    return {"name": f"gpu-{gpu}-mig-1g10gb-{start}", "attributes": attributes,
            "capacity": {"memory": {"value": "10Gi"}}}


def dra_cluster(world, gpus: int = 4, migs: int = 0, cpu: str = "16") -> list[dict]:
    """A node with ``gpus`` DRA GPUs (and ``migs`` MIG devices of a further GPU), and the classes
    ``gpu.nvidia.com`` (whole GPUs) and ``mig.nvidia.com``."""
    devices = [gpu_device(i) for i in range(gpus)]
    if migs:
        devices += [gpu_device(gpus)] + [mig_device(gpus, s) for s in range(migs)]
    return [world.node("dra-node", cpu=cpu), gpu_slice("dra-node", devices=devices),
            device_class("gpu.nvidia.com", f"device.driver == '{GPU}'",
                         f"device.attributes['{GPU}'].type == 'gpu'"),
            device_class("mig.nvidia.com", f"device.driver == '{GPU}'",
                         f"device.attributes['{GPU}'].type == 'mig'")]


def dra_pod(world, name: str, queue_name: str, *claims: str, cpu: str = "1",
            created: str = "2026-01-01T00:00:00Z") -> dict:
    return world.pod(name, cpu, meta={"labels": {"kai.scheduler/queue": queue_name}, "creationTimestamp": created},
                     resourceClaims=[{"name": f"c{i}", "resourceClaimName": c} for i, c in enumerate(claims)])


def waiting_demand(world) -> list[dict]:
    """team-a's pending pods (too big for the node's 16 cores, so they stay pending): one asking for
    two GPUs, one for a MIG device, and two sharing a claim of one GPU."""
    return [world.queue("team-a"),
            claim("two", request("gpu", "gpu.nvidia.com", 2)), claim("mig", request("mig", "mig.nvidia.com")),
            claim("shared", request("gpu", "gpu.nvidia.com")),
            dra_pod(world, "two", "team-a", "two", cpu="32"), dra_pod(world, "mig", "team-a", "mig", cpu="32"),
            dra_pod(world, "s1", "team-a", "shared", cpu="32"), dra_pod(world, "s2", "team-a", "shared", cpu="32")]


def test_a_queues_requested_holds_the_gpus_its_pending_dra_pods_would_get(world):
    w = world(*dra_cluster(world, migs=2), *waiting_demand(world), config=DRA)
    w.cluster.reconcile_controllers()
    # 2 GPUs, an eighth of a GPU, and the shared claim's GPU once
    assert w.store.get(RES_QUEUES, "team-a")["status"]["requested"] == {"nvidia.com/gpu": "3125m", "cpu": "128"}
    w.cycle()
    assert w.placed() == {}
    snapshot = w.scheduler.last_snapshot
    _tree, usage, _shares = snapshot_standing(snapshot)
    assert usage["team-a"].requested["gpu"] == 3.125 and usage["team-a"].allocated["gpu"] == 0
    # the cache's index and a walk over every pod agree
    tree = tree_from_objects(snapshot.objects(RES_QUEUES).values())
    assert _walked_usage(snapshot, tree, None).usage["team-a"].requested["gpu"] == 3.125
    assert _indexed_usage(snapshot, tree, None, snapshot._cache.pod_index.usage).pending == {
        ("default", "two"): 2.0, ("default", "mig"): 0.125, ("default", "s1"): 1.0, ("default", "s2"): 0.0}


class QuarterMigs:
    """A plugin that says a MIG device is a quarter of a GPU, and leaves other devices to kai's rule."""

    @hookimpl
    def kai_device_gpu_worth(self, driver, device, pool_devices):
        mig = device and (device.get("attributes") or {}).get("type") == {"string": "mig"}
        return 0.25 if mig else None


def test_a_device_plugin_says_what_the_devices_a_pending_pod_would_get_are_worth(world):
    pm = build_plugin_manager(load_external=False)
    pm.register(QuarterMigs(), name="quarter-migs")
    w = world(*dra_cluster(world, migs=2), *waiting_demand(world), config=DRA, pm=pm)
    w.cluster.reconcile_controllers()
    assert w.store.get(RES_QUEUES, "team-a")["status"]["requested"]["nvidia.com/gpu"] == "3250m"
    result = w.cycle()
    assert result.queues["team-a"].fair_share["gpu"] == 3.25  # all it asks for: the node has 5 GPUs


def test_a_pending_dra_pod_over_its_queues_gpu_limit_waits_with_the_limit_reason(world):
    limited = world.queue("team-a", limit=2)
    w = world(*dra_cluster(world), limited,
              claim("big", request("gpu", "gpu.nvidia.com", 3)), claim("small", request("gpu", "gpu.nvidia.com", 2)),
              claim("more", request("gpu", "gpu.nvidia.com")),
              dra_pod(world, "big", "team-a", "big"),
              dra_pod(world, "small", "team-a", "small", created="2026-01-02T00:00:00Z"),
              dra_pod(world, "more", "team-a", "more", created="2026-01-03T00:00:00Z"), config=DRA)
    w.cycle()
    assert w.placed() == {"small": "dra-node"}
    assert w.message("big") == ("OverLimit: team-a quota has reached the allowable limit of GPUs. Limit is 2 GPUs, "
                                "currently 0 GPUs allocated and workload requested 3 GPUs")
    assert w.message("more") == ("OverLimit: team-a quota has reached the allowable limit of GPUs. Limit is 2 GPUs, "
                                 "currently 2 GPUs allocated and workload requested 1 GPUs")


def test_a_gang_of_dra_pods_counts_its_members_against_the_limit(world):
    """Two members of a gang of minMember 2, each asking for 2 DRA GPUs, in a queue limited to 3: the
    gang's 4 GPUs are over the limit, so neither member is placed."""
    group = {"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
             "metadata": {"name": "g", "namespace": "default"}, "spec": {"minMember": 2, "queue": "team-a"}}
    members = []
    for i in range(2):
        pod = dra_pod(world, f"m{i}", "team-a", f"m{i}")
        pod["metadata"]["annotations"] = {"pod-group-name": "g"}
        members += [claim(f"m{i}", request("gpu", "gpu.nvidia.com", 2)), pod]
    w = world(*dra_cluster(world), world.queue("team-a", limit=3), group, *members, config=DRA)
    w.cycle()
    assert w.placed() == {}
    assert "Limit is 3 GPUs, currently 0 GPUs allocated and workload requested 4 GPUs" in w.message("m0")


def test_a_queue_whose_only_demand_is_a_pending_dra_pod_gets_its_fair_share(world):
    """team-a asks for 2 DRA GPUs, team-b for 6 device-plugin GPUs of the 8 the cluster has: team-a's
    fair share is the 2 it asks for (it was 0 while its demand was not known), team-b's the rest."""
    gpu_node = world.node("n1", cpu="16", extra={"nvidia.com/gpu": "4"})
    b_pods = [world.pod(f"b{i}", "1", meta={"labels": {"kai.scheduler/queue": "team-b"}},
                        limits={"nvidia.com/gpu": "2"}) for i in range(3)]
    w = world(*dra_cluster(world), gpu_node, world.queue("team-a"), world.queue("team-b"),
              claim("two", request("gpu", "gpu.nvidia.com", 2)), dra_pod(world, "a", "team-a", "two"), *b_pods,
              config=DRA)
    result = w.cycle()
    assert result.queues["team-a"].fair_share["gpu"] == 2
    assert result.queues["team-b"].fair_share["gpu"] == 6
    assert w.placed()["a"] == "dra-node"


def test_a_cycles_snapshot_is_let_go_once_the_next_cycle_has_run(world):
    """What the queue checks keep for a cycle (pending GPUs, the limits' ledger) does not keep that
    cycle's snapshot, and so every pod of it, alive in a long-running scheduler."""
    w = world(*dra_cluster(world, migs=2), *waiting_demand(world), config=DRA)
    w.cycle()
    first = weakref.ref(w.scheduler.last_snapshot)
    w.cycle()
    gc.collect()
    assert first() is None
