"""DRA inside a scheduling cycle: one reason per group of nodes for each kind of failure, and claims
that are already allocated or already reserved by many pods."""

from __future__ import annotations

from collections import Counter

from kai_core.api.features import FeatureGates
from kai_core.api.resources import RES_CLAIMS
from kai_core.dra.testing import (
    GPU,
    cd_slice,
    claim,
    device_class,
    gpu_device,
    gpu_slice,
    request,
    resource_slice,
)
from kai_core.scheduler.cycle import SchedulerConfig
from kai_core.scheduler.explain import DecisionRecorder

DRA_ON = SchedulerConfig(features=FeatureGates.parse("DynamicResourceAllocation=true"))
EX = "gpu.example.com"
GPU_CLASS = device_class(EX, f"device.driver == '{GPU}' && device.attributes['{GPU}'].type == 'gpu'")
XID = [{"key": "gpu.nvidia.com/xid", "value": "79", "effect": "NoSchedule"}]
PCIE_ROOT = "resource.kubernetes.io/pcieRoot"


def claim_pod(world, name: str, claim_name: str, cpu: str = "1") -> dict:
    pod = world.pod(name, cpu=cpu, resourceClaims=[{"name": "gpus", "resourceClaimName": claim_name}])
    pod["spec"]["containers"][0]["resources"]["claims"] = [{"name": "gpus"}]
    return pod


def test_each_kind_of_failure_is_named_once_per_group_of_nodes(world) -> None:
    w = world(
        GPU_CLASS,
        world.node("other"), cd_slice("other"),  # devices, none of the class
        world.node("small-1"), gpu_slice("small-1", count=1),  # one GPU where two are needed
        world.node("small-2"), gpu_slice("small-2", count=1),
        world.node("split"), gpu_slice("split", devices=[gpu_device(0), gpu_device(4)]),  # two PCIe roots
        world.node("partial"), gpu_slice("partial", count=2, slice_count=2),  # 1 of 2 slices published
        world.node("sick"), gpu_slice("sick", devices=[gpu_device(0, taints=XID), gpu_device(1, taints=XID)]),
        claim("pair", request("gpu", EX, 2), constraints=[{"matchAttribute": PCIE_ROOT}]),
        config=DRA_ON,
    )
    w.add(claim_pod(world, "p", "pair"))
    w.scheduler.recorder = recorder = DecisionRecorder(["default/p"])
    w.cycle()
    # the pod's message counts kube-scheduler's reason; kai-cli explain names each kind of failure
    assert w.message("p") == "0/6 nodes are available: 6 cannot allocate all claims."
    reasons = Counter(v.reason for v in recorder.last["default/p"].verdicts if not v.fits)
    prefix = "cannot allocate all claims: claim default/pair"
    expected = {
        "selector matched nothing": (1, f"{prefix} request gpu: no device of DeviceClass {EX} (the node has 2 "
                                        "devices)"),
        "not enough free": (2, f"{prefix} request gpu: needs 2 devices of DeviceClass {EX}, 1 free "
                               "(1 match, 0 in use)"),
        "constraint": (1, f"{prefix}: constraint #0 (matchAttribute {PCIE_ROOT} over all requests) cannot be "
                          "satisfied by the free devices"),
        "pool incomplete": (1, f"{prefix} request gpu: no ResourceSlice offers devices to the node; note: pool "
                               f"{GPU}/partial is incomplete (1 of 2 ResourceSlices at generation 1 are published)"),
        "taint": (1, f"{prefix} request gpu: needs 2 devices of DeviceClass {EX}, 0 free (2 match, 0 in use, "
                     "2 tainted gpu.nvidia.com/xid=79:NoSchedule without a toleration)"),
    }
    for what, (count, text) in expected.items():
        found = sum(n for reason, n in reasons.items() if reason.startswith(text))
        assert found == count, f"{what}: {text!r} not {count} time(s) in {reasons!r}"
    assert w.bind_requests() == []


def _allocated_on(node_name: str, device: str = "gpu-0") -> dict:
    return {
        "devices": {"results": [{"request": "gpu", "driver": GPU, "pool": node_name, "device": device}]},
        "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": [node_name]}]}]},
    }


def _with_status(w, name: str, **status) -> None:
    stored = w.store.get(RES_CLAIMS, name, "default")
    stored["status"] = status
    w.store.update_status(stored)


def test_a_pod_of_an_allocated_claim_goes_where_the_allocation_is_and_allocates_nothing(world) -> None:
    w = world(GPU_CLASS, *(world.node(n) for n in ("n1", "n2", "n3")),
              *(gpu_slice(n, count=1) for n in ("n1", "n2", "n3")), claim("shared", request("gpu", EX)),
              config=DRA_ON)
    _with_status(w, "shared", allocation=_allocated_on("n2"))
    w.add(claim_pod(world, "a", "shared"), claim_pod(world, "b", "shared"))
    assert w.cycle().scheduled == 2
    for br in w.bind_requests():
        assert br["spec"]["selectedNode"] == "n2"
        [entry] = br["spec"]["resourceClaimAllocations"]
        assert entry["allocation"] == _allocated_on("n2")  # the claim's own, nothing new
    # the device stays taken by the claim: a claim of its own for another pod gets n1 or n3
    w.add(claim("own", request("gpu", EX)), claim_pod(world, "c", "own"))
    w.cycle()
    assert w.placed()["c"] in {"n1", "n3"}


def test_an_allocated_claim_whose_node_is_full_makes_the_pod_wait_with_the_reason(world) -> None:
    w = world(GPU_CLASS, world.node("n1"), world.node("n2", cpu="1"), gpu_slice("n1", count=1),
              gpu_slice("n2", count=1), claim("shared", request("gpu", EX)), config=DRA_ON)
    _with_status(w, "shared", allocation=_allocated_on("n2"))
    w.add(claim_pod(world, "big", "shared", cpu="2"))
    w.cycle()
    # kube-scheduler's words for a node the allocated claim cannot be used on
    assert w.message("big") == "0/2 nodes are available: 1 Insufficient cpu, 1 resourceclaim not available on the node."
    assert w.bind_requests() == []


def test_an_allocated_claim_elsewhere_counts_as_not_available_only_where_the_other_claims_fit(world) -> None:
    """kube-scheduler allocates the pod's other claims on a node first: a node where they do not
    fit is ``cannot allocate all claims`` even when the allocated claim cannot be used there either."""
    w = world(GPU_CLASS, world.node("n1"), world.node("n2"), world.node("n3"), gpu_slice("n1", count=1),
              gpu_slice("n2", count=1), claim("shared", request("gpu", EX)), claim("own", request("gpu", EX)),
              config=DRA_ON)
    _with_status(w, "shared", allocation=_allocated_on("n2"))
    pod = world.pod("p", resourceClaims=[{"name": "a", "resourceClaimName": "shared"},
                                         {"name": "b", "resourceClaimName": "own"}])
    pod["spec"]["containers"][0]["resources"]["claims"] = [{"name": "a"}, {"name": "b"}]
    w.add(pod)
    w.scheduler.recorder = recorder = DecisionRecorder(["default/p"])
    w.cycle()
    # n2: the shared claim's GPU is its only one; n3: no GPU; n1: a GPU for "own", not "shared"'s
    assert w.message("p") == ("0/3 nodes are available: 1 resourceclaim not available on the node, "
                              "2 cannot allocate all claims.")
    verdicts = {v.node: v.reason for v in recorder.last["default/p"].verdicts}
    assert verdicts["n1"] == ('resourceclaim not available on the node: ResourceClaim "default/shared" is already '
                              "allocated to devices not available on this node")
    for name in ("n2", "n3"):
        assert verdicts[name].startswith("cannot allocate all claims: claim default/own request gpu: "), verdicts


def test_a_claim_reserved_by_256_pods_takes_no_more(world) -> None:
    w = world(GPU_CLASS, world.node("n1"), gpu_slice("n1", count=1), claim("popular", request("gpu", EX)),
              config=DRA_ON)
    _with_status(w, "popular", allocation=_allocated_on("n1"), reservedFor=[
        {"resource": "pods", "name": f"x{i}", "uid": f"00000000-0000-4000-8000-{i:012d}"} for i in range(256)])
    w.add(claim_pod(world, "late", "popular"))
    w.scheduler.run_cycle()  # no controller round: it would prune the 256 made-up consumers
    assert w.message("late") == ('0/1 nodes are available: ResourceClaim "default/popular" is already reserved '
                                 "for 256 pods.")
    assert w.bind_requests() == []


def test_one_cycle_never_commits_more_than_256_pods_to_one_claim(world) -> None:
    everywhere = resource_slice("net", GPU, "net", [gpu_device(0)], all_nodes=True)
    w = world(GPU_CLASS, world.node("n1", cpu="64", pods="300"), everywhere, claim("popular", request("gpu", EX)),
              config=DRA_ON)
    w.add(*(claim_pod(world, f"p{i:03d}", "popular", cpu="10m") for i in range(257)))
    w.cycle()
    assert len(w.bind_requests()) == 256


def test_a_request_of_a_device_class_that_does_not_exist_is_refused_for_every_node(world) -> None:
    subs = {"name": "gpu", "firstAvailable": [{"name": "big", "deviceClassName": "h100.example.com"},
                                              {"name": "any", "deviceClassName": EX}]}
    listed = claim("listed", request("gpu", EX))
    listed["spec"]["devices"]["requests"] = [subs]
    w = world(world.node("n1"), world.node("n2"), gpu_slice("n1", count=1), claim("plain", request("gpu", EX)),
              listed, config=DRA_ON)
    w.add(claim_pod(world, "p", "plain"), claim_pod(world, "q", "listed"))
    w.cycle()
    # kube-scheduler's DynamicResources PreFilter, in its words (the class of a sub-request by its full name)
    assert w.message("p") == "0/2 nodes are available: request gpu: device class gpu.example.com does not exist."
    assert w.message("q") == "0/2 nodes are available: request gpu/big: device class h100.example.com does not exist."
    w.add(GPU_CLASS)
    w.cycle()
    assert w.placed() == {"p": "n1"}
