"""kai-core's built-in plugins, through the cycle and as a user sees them: node readiness and
cordon, resources fit, node selector and affinity, taints and tolerations, bin packing, and DRA
claim allocation."""

from __future__ import annotations

import pytest

from kai_core.api.features import FeatureGates
from kai_core.api.resources import RES_BIND_REQUESTS, RES_CLAIMS, RES_PODS, pod_requests
from kai_core.plugins.taints import toleration_matches
from kai_core.scheduler.cycle import Scheduler, SchedulerConfig

DRA_ON = SchedulerConfig(features=FeatureGates.parse("DynamicResourceAllocation=true"))

# -- node readiness and cordon ---------------------------------------------------------------


def test_not_ready_cordoned_and_full_nodes_are_each_named(world):
    w = world(
        world.node("sick", ready="False"),
        world.node("cordoned", unschedulable=True),
        world.node("full", cpu="1"),
        world.pod("p", "2"),
    )
    w.cycle()
    assert w.message("p") == ("0/3 nodes are available: 1 Insufficient cpu, 1 node(s) were not ready, "
                              "1 node(s) were unschedulable.")


def test_a_node_without_ready_condition_counts_as_ready(world):
    w = world(world.node("n1", ready=None), world.pod("p"))
    w.cycle()
    assert w.placed() == {"p": "n1"}


def test_ready_unknown_is_not_ready_unless_the_unreachable_taint_is_tolerated(world):
    unreachable = {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoSchedule"}
    w = world(world.node("n1", ready="Unknown"), world.pod("plain"), world.pod("tolerant", tolerations=[unreachable]))
    w.cycle()
    assert w.placed() == {"tolerant": "n1"}
    assert w.message("plain") == "0/1 nodes are available: 1 node(s) were not ready."


@pytest.mark.parametrize("toleration", [
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists"},
    {"operator": "Exists"},
])
def test_a_pod_tolerating_the_unschedulable_taint_may_use_a_cordoned_node(world, toleration):
    w = world(world.node("n1", unschedulable=True), world.pod("p", tolerations=[toleration]))
    w.cycle()
    assert w.placed() == {"p": "n1"}


# -- resources fit ---------------------------------------------------------------------------

GPU = "nvidia.com/gpu"


@pytest.mark.parametrize(("node_kw", "pod_kw", "reason"), [
    ({"cpu": "1"}, {"cpu": "1500m"}, "Insufficient cpu"),
    ({"memory": "1Gi"}, {"cpu": None, "memory": "2Gi"}, "Insufficient memory"),
    ({}, {"limits": {GPU: "1"}}, f"Insufficient {GPU}"),  # the node has no GPU at all
    ({"extra": {GPU: "2"}}, {"limits": {GPU: "4"}}, f"Insufficient {GPU}"),  # request from the limit
    ({"extra": {"example.com/fpga": "1"}}, {"limits": {"example.com/fpga": "2"}}, "Insufficient example.com/fpga"),
    ({"pods": "0"}, {}, "Too many pods"),
])
def test_resources_that_do_not_fit(world, node_kw, pod_kw, reason):
    w = world(world.node("n1", **node_kw), world.pod("p", **pod_kw))
    w.cycle()
    assert w.message("p") == f"0/1 nodes are available: 1 {reason}."


def test_every_missing_resource_of_a_node_is_counted(world):
    w = world(world.node("n1", cpu="1", memory="1Gi"), world.node("n2", memory="1Gi"),
              world.pod("p", "2", "2Gi"))
    w.cycle()
    assert w.message("p") == "0/2 nodes are available: 1 Insufficient cpu, 2 Insufficient memory."


def test_gpus_fit_where_there_are_enough(world):
    w = world(world.node("cpu-only"), world.node("gpu", extra={GPU: "8"}), world.pod("p", limits={GPU: "8"}))
    w.cycle()
    assert w.placed() == {"p": "gpu"}


def test_bound_pods_count_and_finished_pods_do_not(world):
    w = world(
        world.node("n1", cpu="3"),
        world.pod("running", "1", nodeName="n1"),
        world.pod("finished", "2", nodeName="n1", status={"phase": "Succeeded"}),
        world.pod("failed", "2", nodeName="n1", status={"phase": "Failed"}),
        world.pod("other-scheduler", "1", scheduler="default-scheduler", nodeName="n1"),
        world.pod("fits", "1"),
    )
    w.cycle()
    assert w.placed() == {"fits": "n1"}
    w.add(world.pod("too-big", "1"))
    w.cycle()  # 1 + 1 + 1 (in flight) of 3
    assert w.message("too-big") == "0/1 nodes are available: 1 Insufficient cpu."


def test_pods_per_node_limit_counts_in_flight_pods(world):
    w = world(world.node("n1", pods="2"), world.pod("a"), world.pod("b"), world.pod("c"))
    w.cycle()
    assert set(w.placed()) == {"a", "b"}
    assert w.message("c") == "0/1 nodes are available: 1 Too many pods."


def container(name: str, cpu: str, **more) -> dict:
    return {"name": name, "image": "busybox:1", "resources": {"requests": {"cpu": cpu}}, **more}


def test_init_containers_need_their_peak(world):
    w = world(world.node("n1", cpu="4"), world.pod("a-init", "1", initContainers=[container("i", "3500m")]),
              world.pod("b-after", "1"))
    w.cycle()
    assert w.placed() == {"a-init": "n1"}  # it holds 3.5 cpu, not 1
    assert w.message("b-after") == "0/1 nodes are available: 1 Insufficient cpu."


def test_pod_overhead_is_added(world):
    w = world(world.node("n1", cpu="4"), world.pod("p", "3", overhead={"cpu": "1500m"}))
    w.cycle()
    assert w.message("p") == "0/1 nodes are available: 1 Insufficient cpu."


def test_pod_requests_as_kube_scheduler_computes_them():
    pod = {"spec": {
        "containers": [container("a", "1"), container("b", "500m"),
                       {"name": "c", "image": "x", "resources": {"limits": {"memory": "1Gi", GPU: "2"}}}],
        "initContainers": [
            container("sidecar", "250m", restartPolicy="Always"),
            container("setup", "2"),  # runs next to the sidecar: 2.25 at its peak
        ],
        "overhead": {"cpu": "100m"},
    }}
    req = pod_requests(pod)
    assert req["cpu"] == 2250 + 100  # max(1.5 + 0.25 sidecar, 2 + 0.25) + overhead
    assert req["memory"] == 1024**3 * 1000
    assert req[GPU] == 2000
    assert "pods" not in req


def test_pod_level_resources_replace_the_containers_total():
    pod = {"spec": {"containers": [container("a", "1"), container("b", "1")],
                    "resources": {"requests": {"cpu": "3"}}}}
    assert pod_requests(pod) == {"cpu": 3000}


# -- node selector and affinity --------------------------------------------------------------


def required(*expressions: dict) -> dict:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": list(expressions)}]}}}


def test_node_selector_and_required_affinity_must_both_match(world):
    w = world(
        world.node("a-small", labels={"zone": "a", "size": "2"}),
        world.node("a-large", labels={"zone": "a", "size": "16"}),
        world.node("b-large", labels={"zone": "b", "size": "16"}),
        world.pod("p", nodeSelector={"zone": "a"},
                  affinity=required({"key": "size", "operator": "Gt", "values": ["8"]})),
        world.pod("q", affinity=required({"key": "zone", "operator": "NotIn", "values": ["a"]})),
        world.pod("nowhere", nodeSelector={"zone": "c"}),
    )
    w.cycle()
    assert w.placed() == {"p": "a-large", "q": "b-large"}
    assert w.message("nowhere") == "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."


def test_a_malformed_affinity_is_reported_not_silently_unmatched(world):
    w = world(world.node("n1"), world.pod("p", affinity=required({"key": "zone", "operator": "Near"})))
    w.cycle()
    message = w.message("p")
    assert message.startswith("0/1 nodes are available: invalid spec.affinity.nodeAffinity."
                              "requiredDuringSchedulingIgnoredDuringExecution: nodeSelectorTerms[0]: "
                              "matchExpressions[0]: operator 'Near'")
    assert w.bind_requests() == []


def by_name(*terms: list[str]) -> dict:
    """Required node affinity: one term per list, with a ``metadata.name In`` requirement per name
    of the list (one value each, as the API server wants): a term naming two nodes names none."""
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [name]} for name in names]}
        for names in terms]}}}


def test_node_names_no_term_can_meet_are_kube_schedulers_conflict(world):
    w = world(world.node("n1"), world.node("n2"), world.pod("p", affinity=by_name(["n1", "n2"], ["n2", "n1"])),
              world.pod("q", affinity=by_name(["n1", "n2"], ["n2"])))
    w.cycle()
    # NodeAffinity's PreFilter: no term can be met by any node name
    assert w.message("p") == "0/2 nodes are available: pod affinity terms conflict."
    assert w.placed() == {"q": "n2"}  # the second term can


def test_a_pod_naming_its_node_is_tried_there_only_and_the_others_counted_as_kube_scheduler_does(world):
    """A DaemonSet's pod names its node by ``metadata.name``: kube-scheduler's NodeAffinity PreFilter
    keeps the other nodes from every filter, each counted under its own reason."""
    w = world(world.node("full", cpu="1"), world.node("tainted", taints=[taint("gpu", "yes", "NoSchedule")]),
              world.node("free"), world.pod("daemon", cpu="2", affinity=by_name(["full"])),
              world.pod("other", cpu="2", affinity=by_name(["free"], ["tainted"])))
    w.cycle()
    assert w.message("daemon") == ("0/3 nodes are available: 1 Insufficient cpu, "
                                   "2 node(s) didn't satisfy plugin(s) [NodeAffinity].")
    assert w.placed() == {"other": "free"}
    w = world(world.node("n1"), world.pod("p", affinity=by_name(["gone"])))
    w.cycle()
    assert w.message("p") == "0/1 nodes are available: 1 node(s) didn't satisfy plugin(s) [NodeAffinity]."


# -- taints and tolerations ------------------------------------------------------------------


def taint(key: str, value: str | None, effect: str) -> dict:
    return {"key": key, **({"value": value} if value else {}), "effect": effect}


def test_untolerated_no_schedule_and_no_execute_taints_filter_prefer_no_schedule_does_not(world):
    w = world(
        world.node("gpu", taints=[taint("dedicated", "gpu", "NoSchedule")]),
        world.node("draining", taints=[taint("maintenance", None, "NoExecute")]),
        world.node("soft", cpu="1", taints=[taint("spot", "true", "PreferNoSchedule")]),
        world.pod("small", "1"),
        world.pod("big", "2"),
    )
    w.cycle()
    assert w.placed() == {"small": "soft"}
    # two nodes with different taints: one reason, as kube-scheduler counts them
    assert w.message("big") == "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint(s)."


def test_a_tolerating_pod_uses_the_tainted_node(world):
    w = world(world.node("gpu", taints=[taint("dedicated", "gpu", "NoSchedule")]),
              world.pod("p", tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu"}]))
    w.cycle()
    assert w.placed() == {"p": "gpu"}


@pytest.mark.parametrize(("toleration", "matches"), [
    ({"key": "k", "value": "v"}, True),  # operator defaults to Equal
    ({"key": "k", "operator": "Equal", "value": "other"}, False),
    ({"key": "k", "operator": "Exists"}, True),
    ({"key": "k", "operator": "Exists", "effect": "NoSchedule"}, True),
    ({"key": "k", "operator": "Exists", "effect": "NoExecute"}, False),
    ({"operator": "Exists"}, True),
    ({"key": "other", "operator": "Exists"}, False),
    ({"key": "k", "operator": "Gte", "value": "v"}, False),  # unknown operators match nothing
])
def test_toleration_matching(toleration, matches):
    assert toleration_matches(toleration, taint("k", "v", "NoSchedule")) is matches


# -- bin packing -----------------------------------------------------------------------------


def test_bin_packing_prefers_the_fuller_node(world):
    w = world(world.node("n1", cpu="8"), world.node("n2", cpu="8"), world.node("n3", cpu="8"),
              world.pod("running", "6", nodeName="n2"), world.pod("new", "1"))
    w.cycle()
    assert w.placed() == {"new": "n2"}


def test_bin_packing_fills_one_node_before_the_next(world):
    w = world(world.node("n1", cpu="4"), world.node("n2", cpu="4"),
              *[world.pod(f"p{i}", "1") for i in range(6)])
    w.cycle()
    placed = w.placed()
    assert sorted(placed.values()) == ["n1"] * 4 + ["n2"] * 2


def test_a_cpu_pod_keeps_off_an_idle_gpu_node(world):
    w = world(world.node("cpu", cpu="8"), world.node("gpu", cpu="8", extra={GPU: "8"}), world.pod("p", "2"))
    w.cycle()
    assert w.placed() == {"p": "cpu"}


# -- DRA -------------------------------------------------------------------------------------

DRIVER = "fpga.example.com"


def dra_world(world, nodes: int = 1, devices: int = 1, config: SchedulerConfig = DRA_ON):
    objs: list = [{
        "apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": DRIVER},
        "spec": {"selectors": [{"cel": {"expression": f"device.driver == '{DRIVER}'"}}]},
    }, {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate", "metadata": {"name": "one-fpga",
                                                                                          "namespace": "default"},
        "spec": {"spec": {"devices": {"requests": [{"name": "fpga", "exactly": {"deviceClassName": DRIVER}}]}}},
    }]
    for i in range(1, nodes + 1):
        objs.append(world.node(f"n{i}"))
        objs.append({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": f"n{i}-fpga"},
            "spec": {"driver": DRIVER, "nodeName": f"n{i}", "pool": {"name": f"n{i}", "generation": 1,
                                                                     "resourceSliceCount": 1},
                     "devices": [{"name": f"fpga-{d}"} for d in range(devices)]},
        })
    return world(*objs, config=config)


def fpga_pod(world, name: str, template: str = "one-fpga", claim: str | None = None) -> dict:
    source = {"resourceClaimName": claim} if claim else {"resourceClaimTemplateName": template}
    p = world.pod(name, resourceClaims=[{"name": "fpga", **source}])
    p["spec"]["containers"][0]["resources"]["claims"] = [{"name": "fpga"}]
    return p


def test_claims_are_allocated_per_node(world):
    w = dra_world(world, nodes=2)
    w.add(fpga_pod(world, "a"), fpga_pod(world, "b"))
    assert w.cycle().scheduled == 2
    by_pod = {br["spec"]["podName"]: br for br in w.bind_requests()}
    assert {br["spec"]["selectedNode"] for br in by_pod.values()} == {"n1", "n2"}
    for br in by_pod.values():
        [entry] = br["spec"]["resourceClaimAllocations"]
        assert entry["name"] == "fpga"  # the pod's name for the claim
        [result] = entry["allocation"]["devices"]["results"]
        assert (result["driver"], result["pool"], result["device"]) == (DRIVER, br["spec"]["selectedNode"], "fpga-0")


def test_a_claim_that_fits_nowhere_is_named_in_the_message(world):
    w = dra_world(world, nodes=2)
    w.add({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": "three-fpgas", "namespace": "default"},
        "spec": {"devices": {"requests": [{"name": "fpga", "exactly": {"deviceClassName": DRIVER, "count": 3}}]}},
    }, fpga_pod(world, "greedy", claim="three-fpgas"))
    w.explain()
    w.cycle()
    assert w.message("greedy") == "0/2 nodes are available: 2 cannot allocate all claims."
    detailed = w.detailed("greedy")  # what kai-cli explain says of each node
    assert detailed.startswith("0/2 nodes are available: 2 cannot allocate all claims: ")
    assert "default/three-fpgas" in detailed
    assert w.bind_requests() == []


def test_with_the_gate_off_the_message_says_how_to_turn_it_on(world):
    w = dra_world(world, config=SchedulerConfig())
    w.add(fpga_pod(world, "p"))
    w.cycle()
    message = w.message("p")
    assert "DynamicResourceAllocation feature gate is disabled" in message
    assert "--feature-gates=DynamicResourceAllocation=true" in message
    assert w.bind_requests() == []


def carry_out(w, br: dict) -> None:
    """What the binder does with a BindRequest: claim allocation and reservation, pods/binding,
    status Succeeded (kai-core's tests do not import the binder)."""
    pod = w.get_pod(br["spec"]["podName"])
    for entry in br["spec"]["resourceClaimAllocations"]:
        [st] = [s for s in pod["status"]["resourceClaimStatuses"] if s["name"] == entry["name"]]
        claim = w.store.get(RES_CLAIMS, st["resourceClaimName"], "default")
        claim["status"] = {"allocation": entry["allocation"], "reservedFor": [
            {"resource": "pods", "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}]}
        w.store.update_status(claim)
    w.store.bind("default", pod["metadata"]["name"], br["spec"]["selectedNode"])
    w.set_br_status(br, phase="Succeeded")


def test_a_device_of_an_in_flight_bind_request_is_not_handed_out_twice(world):
    w = dra_world(world)
    w.add(fpga_pod(world, "first"), fpga_pod(world, "second"))
    w.explain()
    w.cycle()
    assert set(w.placed()) == {"first"}
    assert "0 free" in w.detailed("second")

    # a restarted scheduler sees the decision only through the BindRequest in the store
    w.scheduler = Scheduler(w.store, w.pm, DRA_ON)
    w.cycle()
    assert len(w.bind_requests()) == 1

    [br] = w.bind_requests()
    carry_out(w, br)
    w.cycle()
    assert set(w.placed()) == {"first"}  # now the claim holds the device

    done = w.get_pod("first")
    done["status"]["phase"] = "Succeeded"
    w.store.update_status(done)
    w.cycle()  # the resourceclaim controller releases the finished pod's claim
    assert w.placed()["second"] == "n1"


def test_a_bound_pod_holds_its_devices_while_the_cache_does_not_show_its_claim_allocated(world):
    """The pods' watch may bring the binding before the claims' watch brings the allocation the
    binder wrote first (seen on the real control plane, test/e2e/test_red_team.py): the bound pod's
    BindRequest still holds the device."""
    w = dra_world(world)
    w.add(fpga_pod(world, "first"), fpga_pod(world, "second"))
    w.cycle()
    [br] = w.bind_requests()
    w.store.bind("default", "first", br["spec"]["selectedNode"])  # bound; its claim not allocated yet
    w.set_br_status(br, phase="Succeeded")
    w.cycle()
    assert set(w.placed()) == {"first"}
    assert w.message("second") == "0/1 nodes are available: 1 cannot allocate all claims."  # its one device

    done = w.get_pod("first")
    done["status"]["phase"] = "Succeeded"
    w.store.update_status(done)
    w.cycle()  # a finished pod holds nothing
    assert w.placed()["second"] == "n1"


def test_a_shared_claim_is_allocated_once_and_reused(world):
    w = dra_world(world, nodes=2)
    w.add({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": "shared", "namespace": "default"},
        "spec": {"devices": {"requests": [{"name": "fpga", "exactly": {"deviceClassName": DRIVER}}]}},
    }, fpga_pod(world, "a", claim="shared"), fpga_pod(world, "b", claim="shared"))
    assert w.cycle().scheduled == 2
    brs = w.bind_requests()
    assert len({br["spec"]["selectedNode"] for br in brs}) == 1  # where the shared device is
    allocations = [br["spec"]["resourceClaimAllocations"][0]["allocation"] for br in brs]
    assert allocations[0] == allocations[1]


def test_bind_requests_are_written_for_pods_only_once_claims_exist(world):
    w = dra_world(world)
    p = fpga_pod(world, "p", template="missing-template")
    w.add(p)
    w.cycle()
    assert 'ResourceClaimTemplate "default/missing-template" not found' in w.message("p")
    assert w.store.list(RES_BIND_REQUESTS)[0] == []
    assert w.store.get(RES_PODS, "p", "default")["spec"].get("nodeName") is None
