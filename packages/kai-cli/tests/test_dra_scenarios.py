"""kai's DRA scenarios end to end, each body run twice (the ``backend`` fixture of backends.py): on
the fake cluster (the embedded one behind the fake API server) and on the real control plane
(kube-apiserver v1.37 with its own DRA validation, kube-controller-manager's resourceclaim
controller making the claims of templates). The scheduler and the binder run as in production,
against a kubeconfig; the API server judges every status they write: a claim allocation, a
``reservedFor``, a BindRequest phase, a pod condition or Event it refused would leave a pod unbound
or a BindRequest Failed, which each test checks.

Covered: allocation modes (ExactCount, All), constraints (matchAttribute, distinctAttribute), a
prioritized list (firstAvailable), device taints and tolerations, a claim shared by several pods,
admin access (and the namespace label it needs), partitionable devices (MIG profiles sharing a
GPU's counters), the 256 consumers a claim can be reserved for.
"""

from __future__ import annotations

import pytest

from kai_core.api.resources import RES_BIND_REQUESTS, RES_CLAIMS, RES_EVENTS, RES_PODS
from kai_core.dra.testing import (
    GPU,
    claim,
    device_class,
    gpu_device,
    gpu_slice,
    mig_counter_slice,
    mig_devices,
    request,
    resource_slice,
    sub_request,
)

pytest.importorskip("kubernetes", reason="the kubernetes client is not installed")

EX = "gpu.example.com"
GPU_CLASS = device_class(EX, f"device.driver == '{GPU}'")
PCIE_ROOT = "resource.kubernetes.io/pcieRoot"
BROKEN = {"key": "example.com/broken", "value": "xid-79", "effect": "NoSchedule"}
#: how long a scenario may take on either cluster (a bound; they take seconds)
TIMEOUT = 90.0


def template(name: str, *requests: dict, constraints: list | None = None) -> dict:
    spec = claim(name, *requests, constraints=constraints)["spec"]
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate", "metadata": {"name": name},
            "spec": {"spec": spec}}


def claim_pod(cl, name: str, *, template_name: str | None = None, claim_name: str | None = None,
              cpu: str = "100m") -> dict:
    pod = cl.pod(name, cpu=cpu)
    ref = {"resourceClaimTemplateName": template_name} if template_name else {"resourceClaimName": claim_name}
    pod["spec"]["resourceClaims"] = [{"name": "gpus", **ref}]
    pod["spec"]["containers"][0]["resources"]["claims"] = [{"name": "gpus"}]
    return pod


def node_of(cl, pod_name: str) -> str | None:
    return (cl.get(RES_PODS, pod_name).get("spec") or {}).get("nodeName")


def claim_of(cl, pod_name: str) -> dict:
    pod = cl.get(RES_PODS, pod_name)
    [status] = pod["status"]["resourceClaimStatuses"] if pod["spec"]["resourceClaims"][0].get(
        "resourceClaimTemplateName") else [{"resourceClaimName": pod["spec"]["resourceClaims"][0]["resourceClaimName"]}]
    return cl.get(RES_CLAIMS, status["resourceClaimName"])


def results(cl, pod_name: str) -> list[dict]:
    return claim_of(cl, pod_name)["status"]["allocation"]["devices"]["results"]


def unschedulable_message(cl, pod_name: str) -> str | None:
    for cond in (cl.get(RES_PODS, pod_name).get("status") or {}).get("conditions") or []:
        if cond["type"] == "PodScheduled" and cond["status"] == "False" and cond.get("reason") == "Unschedulable":
            return cond["message"]
    return None


def run_until(cl, bound: list[str], pending: list[str] = (), timeout: float = TIMEOUT):
    """Start the scheduler and the binder; wait until every pod of ``bound`` is bound and every pod
    of ``pending`` was told why it cannot be (its PodScheduled condition and a FailedScheduling
    Event, both written by the scheduler and accepted by the server)."""
    scheduler = cl.start("scheduler")
    binder = cl.start("binder")
    cl.wait_for(lambda: all(node_of(cl, p) for p in bound), f"{len(bound)} pods bound", timeout)
    cl.wait_for(lambda: all(unschedulable_message(cl, p) for p in pending), f"{list(pending)} reported unschedulable",
                timeout)
    if pending:
        reasons = {(e["involvedObject"]["name"], e["reason"]) for e in cl.list(RES_EVENTS)}
        assert {(p, "FailedScheduling") for p in pending} <= reasons
    return scheduler, binder


def finish(cl, scheduler, binder, bound: list[str]) -> None:
    """Stop the components and check what they left: one Succeeded BindRequest per bound pod (no
    attempt failed: a status the server refused would fail one), and no invariant broken."""
    assert scheduler.stop() == 0 and binder.stop() == 0
    brs = cl.list(RES_BIND_REQUESTS)
    phases = {b["spec"]["podName"]: (b.get("status") or {}).get("phase") for b in brs}
    assert {p: phases.get(p) for p in bound} == dict.fromkeys(bound, "Succeeded"), brs
    assert binder.component.failed == 0, [b.get("status") for b in brs]
    assert cl.violations() == []


def devices(res: list[dict]) -> set[tuple[str, str]]:
    return {(r["pool"], r["device"]) for r in res}


# -- allocation modes ---------------------------------------------------------------------------------


def test_exact_count_gives_each_pod_devices_of_its_own(backend):
    cl = backend
    cl.create(GPU_CLASS, cl.node("n1"), cl.node("n2"), gpu_slice("n1", count=4), gpu_slice("n2", count=4),
              template("two-gpus", request("gpu", EX, 2)))
    pods = [f"p{i}" for i in range(5)]
    cl.create(*(claim_pod(cl, p, template_name="two-gpus") for p in pods))
    scheduler, binder = run_until(cl, [], [])
    cl.wait_for(lambda: sum(1 for p in pods if node_of(cl, p)) == 4 and sum(
        1 for p in pods if unschedulable_message(cl, p)) == 1, "4 pods bound and 1 unschedulable", TIMEOUT)
    bound = [p for p in pods if node_of(cl, p)]
    [late] = [p for p in pods if p not in bound]
    assert unschedulable_message(cl, late) == "0/2 nodes are available: 2 cannot allocate all claims."
    taken = []
    for p in bound:
        res = results(cl, p)
        assert len(res) == 2 and {r["pool"] for r in res} == {node_of(cl, p)}
        assert {r["request"] for r in res} == {"gpu"}
        taken += devices(res)
    assert len(taken) == len(set(taken)) == 8
    finish(cl, scheduler, binder, bound)


def test_allocation_mode_all_takes_every_device_of_the_node(backend):
    cl = backend
    cl.create(GPU_CLASS, cl.node("n1"), cl.node("n2"), gpu_slice("n1", count=4), gpu_slice("n2", count=3),
              template("all-gpus", request("gpu", EX, allocationMode="All")))
    cl.create(claim_pod(cl, "a", template_name="all-gpus"), claim_pod(cl, "b", template_name="all-gpus"))
    scheduler, binder = run_until(cl, ["a", "b"])
    assert {node_of(cl, "a"), node_of(cl, "b")} == {"n1", "n2"}
    for p in ("a", "b"):
        node = node_of(cl, p)
        assert devices(results(cl, p)) == {(node, f"gpu-{i}") for i in range(4 if node == "n1" else 3)}
    cl.create(claim_pod(cl, "c", template_name="all-gpus"))
    cl.wait_for(lambda: unschedulable_message(cl, "c"), "c to be reported unschedulable", TIMEOUT)
    finish(cl, scheduler, binder, ["a", "b"])


# -- constraints --------------------------------------------------------------------------------------


def test_match_and_distinct_attribute_constraints(backend):
    cl = backend
    cl.create(GPU_CLASS, cl.node("split"), cl.node("paired"),
              gpu_slice("split", devices=[gpu_device(0), gpu_device(4)]),  # two PCIe roots
              gpu_slice("paired", devices=[gpu_device(0), gpu_device(1)]),  # one PCIe root
              template("same-root", request("a", EX), request("b", EX), constraints=[{"matchAttribute": PCIE_ROOT}]),
              template("two-roots", request("a", EX), request("b", EX),
                       constraints=[{"distinctAttribute": PCIE_ROOT, "requests": ["a", "b"]}]))
    cl.create(claim_pod(cl, "together", template_name="same-root"), claim_pod(cl, "apart", template_name="two-roots"))
    scheduler, binder = run_until(cl, ["together", "apart"])
    assert node_of(cl, "together") == "paired" and node_of(cl, "apart") == "split"
    assert devices(results(cl, "together")) == {("paired", "gpu-0"), ("paired", "gpu-1")}
    assert devices(results(cl, "apart")) == {("split", "gpu-0"), ("split", "gpu-4")}
    finish(cl, scheduler, binder, ["together", "apart"])


# -- prioritized list ---------------------------------------------------------------------------------


def test_first_available_takes_the_first_subrequest_that_fits(backend):
    cl = backend
    cl.create(GPU_CLASS, cl.node("n1"), gpu_slice("n1", count=3),
              template("two-or-one", {"name": "gpu", "firstAvailable": [sub_request("two", EX, 2),
                                                                         sub_request("one", EX, 1)]}))
    cl.create(claim_pod(cl, "p0", template_name="two-or-one"))
    scheduler, binder = run_until(cl, ["p0"])
    assert [r["request"] for r in results(cl, "p0")] == ["gpu/two", "gpu/two"]
    cl.create(claim_pod(cl, "p1", template_name="two-or-one"))  # one GPU left: the second choice
    cl.wait_for(lambda: node_of(cl, "p1"), "p1 bound", TIMEOUT)
    assert [r["request"] for r in results(cl, "p1")] == ["gpu/one"]
    assert len(devices(results(cl, "p0")) | devices(results(cl, "p1"))) == 3
    cl.create(claim_pod(cl, "p2", template_name="two-or-one"))
    cl.wait_for(lambda: unschedulable_message(cl, "p2"), "p2 reported unschedulable", TIMEOUT)
    finish(cl, scheduler, binder, ["p0", "p1"])


# -- device taints and tolerations ------------------------------------------------------------------


def test_a_tainted_device_goes_only_to_a_claim_that_tolerates_it(backend):
    cl = backend
    toleration = {"key": BROKEN["key"], "operator": "Exists", "effect": "NoSchedule"}
    cl.create(GPU_CLASS, cl.node("n1"), gpu_slice("n1", devices=[gpu_device(0, taints=[BROKEN]), gpu_device(1)]),
              template("one", request("gpu", EX, 1)),
              template("tolerant", request("gpu", EX, 1, tolerations=[toleration])))
    cl.create(claim_pod(cl, "plain", template_name="one"))
    scheduler, binder = run_until(cl, ["plain"])
    assert devices(results(cl, "plain")) == {("n1", "gpu-1")}
    cl.create(claim_pod(cl, "blocked", template_name="one"), claim_pod(cl, "tolerant", template_name="tolerant"))
    cl.wait_for(lambda: node_of(cl, "tolerant") and unschedulable_message(cl, "blocked"),
                "the tolerant pod bound and the other reported unschedulable", TIMEOUT)
    assert devices(results(cl, "tolerant")) == {("n1", "gpu-0")}
    assert unschedulable_message(cl, "blocked") == "0/1 nodes are available: 1 cannot allocate all claims."
    finish(cl, scheduler, binder, ["plain", "tolerant"])


# -- shared claims -----------------------------------------------------------------------------------


def test_pods_sharing_a_claim_go_where_its_device_is_and_are_all_reserved(backend):
    cl = backend
    cl.create(GPU_CLASS, cl.node("n1"), cl.node("n2"), gpu_slice("n1", count=1), gpu_slice("n2", count=1),
              claim("shared", request("gpu", EX, 1)))
    pods = ["s0", "s1", "s2"]
    cl.create(*(claim_pod(cl, p, claim_name="shared") for p in pods))
    scheduler, binder = run_until(cl, pods)
    shared = cl.get(RES_CLAIMS, "shared")
    [result] = shared["status"]["allocation"]["devices"]["results"]
    assert {node_of(cl, p) for p in pods} == {result["pool"]}
    uids = {cl.get(RES_PODS, p)["metadata"]["uid"] for p in pods}
    assert {r["uid"] for r in shared["status"]["reservedFor"]} == uids
    finish(cl, scheduler, binder, pods)


# -- admin access -------------------------------------------------------------------------------------


def test_admin_access_needs_the_namespace_label_and_shares_a_device_in_use(backend):
    from kai_core.api.errors import Invalid

    cl = backend
    monitor = claim("monitor", request("gpu", EX, 1, adminAccess=True))
    cl.create(GPU_CLASS, cl.node("n1"), gpu_slice("n1", count=1), template("one", request("gpu", EX, 1)))
    with pytest.raises(Invalid, match="admin access to devices requires the `resource.kubernetes.io/admin-access: "
                                      "true` label on the containing namespace"):
        cl.create(monitor)
    cl.label_namespace({"resource.kubernetes.io/admin-access": "true"})
    cl.create(monitor)
    cl.create(claim_pod(cl, "worker", template_name="one"))
    scheduler, binder = run_until(cl, ["worker"])
    cl.create(claim_pod(cl, "watcher", claim_name="monitor"))  # the only GPU is in use: admin access still gets it
    cl.wait_for(lambda: node_of(cl, "watcher"), "the admin-access pod bound", TIMEOUT)
    [admin] = results(cl, "watcher")
    assert admin["adminAccess"] is True and (admin["pool"], admin["device"]) == ("n1", "gpu-0")
    assert devices(results(cl, "worker")) == {("n1", "gpu-0")}
    finish(cl, scheduler, binder, ["worker", "watcher"])


# -- partitionable devices ---------------------------------------------------------------------------


def test_mig_partitions_share_the_counters_of_their_gpu(backend):
    cl = backend
    profile = f"device.attributes['{GPU}'].type == 'mig' && device.attributes['{GPU}'].profile == '3g.40gb'"
    whole = f"device.attributes['{GPU}'].type == 'gpu'"
    cl.create(GPU_CLASS, cl.node("n1"), mig_counter_slice("n1", gpus=1),
              resource_slice(f"n1-{GPU}", GPU, "n1", mig_devices(0, [("3g.40gb", 0), ("3g.40gb", 4)]), node_name="n1",
                             slice_count=2),
              template("half", request("gpu", EX, 1, profile)), template("whole", request("gpu", EX, 1, whole)))
    cl.create(claim_pod(cl, "m0", template_name="half"), claim_pod(cl, "m1", template_name="half"))
    scheduler, binder = run_until(cl, ["m0", "m1"])
    assert devices(results(cl, "m0")) | devices(results(cl, "m1")) == {
        ("n1", "gpu-0-mig-3g40gb-0"), ("n1", "gpu-0-mig-3g40gb-4")}
    cl.create(claim_pod(cl, "full", template_name="whole"))  # its counters are taken by the two halves
    cl.wait_for(lambda: unschedulable_message(cl, "full"), "the whole-GPU pod reported unschedulable", TIMEOUT)
    finish(cl, scheduler, binder, ["m0", "m1"])


# -- the 256-consumer limit ---------------------------------------------------------------------------


def test_a_claim_is_reserved_for_256_pods_at_most(backend):
    cl = backend
    everywhere = resource_slice("net-everywhere", GPU, "net", [gpu_device(0)], all_nodes=True)
    cl.create(GPU_CLASS, cl.node("n1", cpu="64", pods="300"), everywhere, claim("popular", request("gpu", EX, 1)))
    pods = [f"p{i:03d}" for i in range(257)]
    cl.create(*(claim_pod(cl, p, claim_name="popular", cpu="10m") for p in pods))
    # some 2,000 requests: not at the client's default 50 per second (the limit is not what is tested)
    scheduler = cl.start("scheduler", qps=0)
    binder = cl.start("binder", qps=0)
    cl.wait_for(lambda: len(cl.get(RES_CLAIMS, "popular").get("status", {}).get("reservedFor") or []) == 256,
                "the claim reserved for 256 pods", 240)
    cl.wait_for(lambda: sum(1 for p in cl.list(RES_PODS) if p["spec"].get("nodeName")) == 256, "256 pods bound", 120)
    by_name = {p["metadata"]["name"]: p for p in cl.list(RES_PODS)}
    [late] = [n for n, p in by_name.items() if not p["spec"].get("nodeName")]
    cl.wait_for(lambda: unschedulable_message(cl, late), f"{late} reported unschedulable", TIMEOUT)
    message = unschedulable_message(cl, late)
    assert message.startswith('0/1 nodes are available: ResourceClaim "'), message  # a pre-filter's reason
    assert message.endswith('/popular" is already reserved for 256 pods.'), message
    assert scheduler.stop() == 0 and binder.stop() == 0
    brs = cl.list(RES_BIND_REQUESTS)
    assert sorted(b["spec"]["podName"] for b in brs if (b.get("status") or {}).get("phase") == "Succeeded") == sorted(
        n for n in by_name if n != late)
    assert cl.violations() == []
