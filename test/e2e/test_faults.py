"""Faults on the real control plane, kai's scheduler and binder running as processes with the chart's
command lines, RBAC and leader election (the ``kai`` fixture of conftest.py):

- the binder killed with SIGKILL in the middle of 200 pods, then started again;
- etcd compacted under the components' watches, then the API server restarted: its new watch cache
  has no history, so every watch resumed from an older resourceVersion gets 410 Gone, and the
  components list again (the audit log shows the lists);
- the API server killed (SIGKILL) in the middle of a run, and started again;
- two replicas of each component with ``--leader-elect``, the leaders killed with SIGKILL in the
  middle of a run: the standbys take the Leases over and finish.

Each ends the same way: every pod bound, each with one Succeeded BindRequest for its node, every
claim allocated and reserved for its own pod alone, on that pod's node, no device allocated twice,
and no write of kai's refused by the API server (but 409 Conflicts, which kai reads again after).
The pods ask for one device each, from a ResourceClaimTemplate: the real resourceclaim controller
makes their claims.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

DRIVER = "gpu.faults.kai.example.com"
DEVICE_CLASS = "faults.kai.example.com"
BR = ("scheduling.run.ai/v1alpha2", "BindRequest")
CLAIM = ("resource.k8s.io/v1", "ResourceClaim")
#: Lease timings short enough that a standby takes over a dead leader's Lease within seconds
QUICK_LEASE = ("--leader-elect-lease-duration=4", "--leader-elect-renew-deadline=3", "--leader-elect-retry-period=0.5")
#: and long enough to ride out an API server that is down for a few seconds
LONG_LEASE = ("--leader-elect-lease-duration=60", "--leader-elect-renew-deadline=45", "--leader-elect-retry-period=2")


@pytest.fixture
def gpu_cluster(kube, nodes, namespace):
    """``gpu_cluster(n_nodes, gpus)``: that many nodes, each with a ResourceSlice of ``gpus`` devices
    of the test's driver (pool = node name), the DeviceClass, and the template ``one-gpu`` in the
    test's namespace. Returns the node names."""

    def make(count: int, gpus: int) -> list[str]:
        kube.apply({"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": DEVICE_CLASS},
                    "spec": {"selectors": [{"cel": {"expression": f"device.driver == '{DRIVER}'"}}]}})
        kube.create({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                     "metadata": {"name": "one-gpu", "namespace": namespace},
                     "spec": {"spec": {"devices": {"requests": [
                         {"name": "gpu", "exactly": {"deviceClassName": DEVICE_CLASS}}]}}}})
        names = []
        for i in range(count):
            name = f"{namespace[:40]}-n{i}"
            gpu_slice = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
                         "metadata": {"name": f"{name}-gpus"},
                         "spec": {"driver": DRIVER, "nodeName": name,
                                  "pool": {"name": name, "generation": 1, "resourceSliceCount": 1},
                                  "devices": [{"name": f"gpu-{j}"} for j in range(gpus)]}}
            nodes.add(name, capacity={"cpu": "64", "memory": "256Gi", "pods": "110"}, slices=[gpu_slice])
            names.append(name)
        return names

    return make


def create_pods(kube, namespace: str, names: list[str]) -> None:
    for n in names:
        kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": n, "namespace": namespace},
                     "spec": {"schedulerName": "kai-scheduler",
                              "containers": [{"name": "c", "image": "busybox:1",
                                              "resources": {"requests": {"cpu": "100m"}, "claims": [{"name": "gpu"}]}}],
                              "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}]}})


def bound(kube, namespace: str) -> int:
    return sum(1 for p in kube.list("v1", "Pod", namespace) if p["spec"].get("nodeName"))


def problems(kube, namespace: str, names: list[str]) -> list[str]:
    """What is not as every fault test must end (empty when all is well)."""
    out = []
    pods = {p["metadata"]["name"]: p for p in kube.list("v1", "Pod", namespace)}
    by_uid = {p["metadata"]["uid"]: p for p in pods.values()}
    for n in names:
        if not pods[n]["spec"].get("nodeName"):
            out.append(f"pod {n} is not bound")
    brs = kube.list(*BR, namespace)
    succeeded = Counter(b["spec"]["podName"] for b in brs if (b.get("status") or {}).get("phase") == "Succeeded")
    for n in names:
        if succeeded[n] != 1:
            out.append(f"pod {n} has {succeeded[n]} Succeeded BindRequests")
    for b in brs:
        phase = (b.get("status") or {}).get("phase")
        pod = pods.get(b["spec"]["podName"])
        if not phase:
            out.append(f"BindRequest {b['metadata']['name']} is still pending")
        elif phase == "Succeeded" and pod and b["spec"]["selectedNode"] != pod["spec"].get("nodeName"):
            out.append(f"BindRequest {b['metadata']['name']} Succeeded for node {b['spec']['selectedNode']}, but "
                       f"pod {pod['metadata']['name']} is on {pod['spec'].get('nodeName')}")
    devices: dict[tuple[str, str], str] = {}
    claims = kube.list(*CLAIM, namespace)
    for c in claims:
        name = c["metadata"]["name"]
        status = c.get("status") or {}
        reserved = status.get("reservedFor") or []
        alloc = status.get("allocation")
        for r in reserved:
            pod = by_uid.get(r.get("uid"))
            node = pod and pod["spec"].get("nodeName")
            if not node:
                out.append(f"claim {name} is reserved for {r.get('name')}, which is not bound")
            elif alloc and {d["pool"] for d in alloc["devices"]["results"]} != {node}:
                out.append(f"claim {name} is reserved for {r.get('name')} on {node}, but allocated elsewhere")
        if alloc and not reserved:
            out.append(f"claim {name} is allocated for no pod")
        for d in (alloc or {}).get("devices", {}).get("results", []):
            key = (d["pool"], d["device"])
            if key in devices:
                out.append(f"device {key} is allocated to claims {devices[key]} and {name}")
            devices[key] = name
    for n in names:  # each pod's claim is reserved for it
        statuses = pods[n].get("status", {}).get("resourceClaimStatuses") or []
        claim = next((c for c in claims if statuses and c["metadata"]["name"] == statuses[0].get("resourceClaimName")),
                     None)
        if claim is None or [r["uid"] for r in claim.get("status", {}).get("reservedFor") or []] != [
                pods[n]["metadata"]["uid"]]:
            out.append(f"pod {n}: its claim is not reserved for it alone")
    return out


def settle(kai, kube, namespace: str, names: list[str], timeout: float) -> None:
    """Wait until every pod is bound and nothing is left to do (no problem left), then check that
    the API server refused no write of kai's."""
    kai.wait_for(lambda: bound(kube, namespace) == len(names), f"all {len(names)} pods bound", timeout)
    kai.wait_for(lambda: not problems(kube, namespace, names), "a consistent end state", 60, interval=0.5)
    assert refused_writes(kai) == []


def stop(kai) -> None:
    """SIGTERM to every component still running: each exits 0 (a standby too)."""
    codes = kai.stop()
    assert set(codes.values()) == {0}, f"exit codes {codes}\n{kai.logs()}"


def refused_writes(kai) -> list[str]:
    """The writes of kai's the API server refused (4xx: validation, admission, RBAC), but 409
    Conflicts and 429s, which kai reads again or waits out. (A process killed in the middle of a
    write leaves a 504 in the audit log: the server gave up on a client that was gone.)"""
    return [kai.describe(e) for e in kai.requests(400)
            if e["verb"] in ("create", "update", "patch", "delete")
            and e["responseStatus"]["code"] < 500 and e["responseStatus"]["code"] not in (409, 429)]


def kill(kai, component) -> None:
    """SIGKILL, as an OOM kill or a node failure would end it; the fixture forgets it (its exit is
    wanted)."""
    component.popen.send_signal(signal.SIGKILL)
    component.popen.wait(10)
    kai.components.remove(component)


def test_binder_killed_in_the_middle_of_200_pods_then_restarted(kai, kube, namespace, gpu_cluster):
    gpu_cluster(10, 24)
    names = [f"p{i:03d}" for i in range(200)]
    kai.start("scheduler")
    # a slow binder (20 requests a second, two or three pods a second) behind a scheduler placing
    # pods faster: BindRequests wait for it, and it dies in the middle of one
    binder = kai.start("binder", *QUICK_LEASE, "--qps=20", "--burst=20")
    create_pods(kube, namespace, names)
    kai.wait_for(lambda: bound(kube, namespace) >= 50, "50 pods bound", 120)
    kill(kai, binder)
    assert bound(kube, namespace) < len(names), "every pod was bound before the binder was killed"
    pending = [b for b in kube.list(*BR, namespace) if not (b.get("status") or {}).get("phase")]
    assert pending, "no BindRequest was left to carry out when the binder was killed"
    time.sleep(2)  # the scheduler goes on placing pods meanwhile
    kai.start("binder", *QUICK_LEASE)
    settle(kai, kube, namespace, names, 240)
    stop(kai)


def restart_api_server(kai, controlplane, **kw) -> None:
    """``controlplane.restart_apiserver(**kw)``, and the 403s of its first moments set aside: a
    kube-apiserver that has just started answers requests before its RBAC authorizer has read the
    roles, and refuses them all (kai retries); the chart's RBAC is checked before and after."""
    assert refused_writes(kai) == []
    kai.assert_no_forbidden()
    controlplane.restart_apiserver(**kw)
    time.sleep(1.0)
    kai.take_forbidden()


def test_compaction_makes_watches_410_and_the_components_list_again(kai, kube, namespace, gpu_cluster, controlplane):
    gpu_cluster(3, 16)
    kai.start("scheduler", *LONG_LEASE)
    kai.start("binder", *LONG_LEASE)
    first = [f"a{i}" for i in range(16)]
    create_pods(kube, namespace, first)
    kai.wait_for(lambda: bound(kube, namespace) == len(first), "the first pods bound", 120)
    # writes of a kind kai does not watch move etcd's revision past every resourceVersion the
    # components hold; the compaction then takes the history they would resume from
    for i in range(3):
        kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": f"tick-{i}", "namespace": namespace}})
    controlplane.compact_etcd()
    mark = controlplane.audit_offset()
    # killed, so that no bookmark at shutdown moves the watches on; the new watch cache has no
    # history before its start either
    restart_api_server(kai, controlplane, sig=signal.SIGKILL)
    second = [f"b{i}" for i in range(16)]
    create_pods(kube, namespace, second)
    settle(kai, kube, namespace, first + second, 120)
    stop(kai)
    events, _ = controlplane.audit_events(mark)
    relists = {(e["user"]["username"].rsplit(":", 1)[-1], (e.get("objectRef") or {}).get("resource"))
               for e in events if e["verb"] == "list" and e["stage"] == "ResponseComplete"
               and e["user"]["username"] in {kai.install.username(c) for c in ("scheduler", "binder")}}
    assert ("kai-scheduler", "pods") in relists and ("kai-binder", "bindrequests") in relists, sorted(relists)


def test_api_server_killed_in_the_middle_of_a_run(kai, kube, namespace, gpu_cluster, controlplane):
    gpu_cluster(3, 24)
    names = [f"p{i:03d}" for i in range(60)]
    kai.start("scheduler", *LONG_LEASE)
    kai.start("binder", *LONG_LEASE, "--qps=20", "--burst=20")  # two or three pods a second
    create_pods(kube, namespace, names)
    kai.wait_for(lambda: bound(kube, namespace) >= 15, "15 pods bound", 120)
    assert bound(kube, namespace) < len(names), "every pod was bound before the API server went down"
    restart_api_server(kai, controlplane, sig=signal.SIGKILL, down_seconds=3)
    settle(kai, kube, namespace, names, 180)
    stop(kai)


def lease_holder(kube, kai, name: str) -> str:
    lease = kube.get("coordination.k8s.io/v1", "Lease", name, kai.install.namespace) or {}
    return (lease.get("spec") or {}).get("holderIdentity") or ""


def test_the_leaders_of_two_replicas_each_killed_in_the_middle_of_a_run(kai, kube, namespace, gpu_cluster):
    gpu_cluster(5, 24)
    replicas = {}
    for component in ("scheduler", "binder"):
        for i in range(2):
            identity = f"{component}-{i}"
            replicas[identity] = kai.start(component, *QUICK_LEASE, f"--leader-elect-identity={identity}")
    kai.wait_for(lambda: lease_holder(kube, kai, "kai-scheduler") and lease_holder(kube, kai, "kai-binder"),
                 "both Leases held")
    leaders = {lease_holder(kube, kai, "kai-scheduler"), lease_holder(kube, kai, "kai-binder")}
    names = [f"p{i:03d}" for i in range(100)]
    create_pods(kube, namespace, names)
    kai.wait_for(lambda: bound(kube, namespace) >= 20, "20 pods bound", 120)
    assert bound(kube, namespace) < len(names), "every pod was bound before the leaders were killed"
    for identity in leaders:
        kill(kai, replicas[identity])
    settle(kai, kube, namespace, names, 180)
    new = {lease_holder(kube, kai, "kai-scheduler"), lease_holder(kube, kai, "kai-binder")}
    assert new == {"scheduler-0", "scheduler-1", "binder-0", "binder-1"} - leaders
    stop(kai)
