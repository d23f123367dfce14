"""Smoke tests of the real control plane (fixture ``controlplane``, see fixture.py): DRA objects and
the real resourceclaim controller, RBAC on ServiceAccount tokens, 410 Gone after etcd compaction,
an API server restart."""

from __future__ import annotations

import re
import sys
import time
import uuid

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

DRIVER = "gpu.smoke.kai.example.com"


@pytest.fixture(scope="module")
def api(controlplane):
    c = controlplane.api_client()
    yield c
    c.close()


@pytest.fixture(scope="module")
def namespace(controlplane):
    name = f"smoke-{uuid.uuid4().hex[:6]}"
    controlplane.ensure_namespace(name)
    return name


def wait_until(cond, timeout=60.0, what="condition", interval=0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def test_version_and_authorization_mode(controlplane, api):
    info = client.VersionApi(api).get_code()
    assert info.git_version == controlplane.version
    assert re.match(r"^v1\.\d+\.\d+$", info.git_version)
    args = controlplane.apiserver.args
    assert "--authorization-mode=Node,RBAC" in args
    assert any(a.startswith("--service-account-signing-key-file=") for a in args)
    # resource.k8s.io/v1 is served
    groups = {g.name: [v.version for v in g.versions] for g in client.ApisApi(api).get_api_versions().groups}
    assert "v1" in groups["resource.k8s.io"]


def test_resourceclaim_controller_makes_claims_from_templates(controlplane, api, namespace):
    core, res = client.CoreV1Api(api), client.ResourceV1Api(api)
    node = f"node-{uuid.uuid4().hex[:6]}"
    core.create_node(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}}}
    )
    # no kubelet: the test writes the node's status itself
    capacity = {"cpu": "16", "memory": "64Gi", "pods": "110"}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    core.patch_node_status(
        node,
        {
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "smoke",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
            }
        },
        _content_type="application/merge-patch+json",
    )
    st = core.read_node_status(node).status
    assert st.allocatable["cpu"] == "16"
    # the API server's admission taints a new node not-ready; only the node lifecycle controller (not
    # run here) would take it off: ControlPlane.add_node does
    assert [t.key for t in core.read_node(node).spec.taints] == ["node.kubernetes.io/not-ready"]
    assert [c.type for c in st.conditions] == ["Ready"]

    res.create_device_class(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "DeviceClass",
            "metadata": {"name": DRIVER},
            "spec": {"selectors": [{"cel": {"expression": f"device.driver == '{DRIVER}'"}}]},
        }
    )
    res.create_resource_slice(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {"name": f"{node}-gpus"},
            "spec": {
                "driver": DRIVER,
                "nodeName": node,
                "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                "devices": [
                    {"name": f"gpu-{i}", "attributes": {"index": {"int": i}}, "capacity": {"memory": {"value": "80Gi"}}}
                    for i in range(2)
                ],
            },
        }
    )
    res.create_namespaced_resource_claim_template(
        namespace,
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaimTemplate",
            "metadata": {"name": "one-gpu"},
            "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}]}}},
        },
    )
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "trainer"},
            "spec": {
                "schedulerName": "kai-scheduler",
                "containers": [
                    {"name": "main", "image": "registry.example/trainer:1", "resources": {"claims": [{"name": "gpu"}]}}
                ],
                "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}],
            },
        },
    )

    def claim_status():
        pod = core.read_namespaced_pod(name="trainer", namespace=namespace)
        return pod.status.resource_claim_statuses

    statuses = wait_until(claim_status, 60, "pod.status.resourceClaimStatuses from the resourceclaim controller")
    assert len(statuses) == 1 and statuses[0].name == "gpu"
    claim_name = statuses[0].resource_claim_name
    assert re.match(r"^trainer-gpu-[a-z0-9]{5}$", claim_name), claim_name
    claim = res.read_namespaced_resource_claim(claim_name, namespace)
    owner = claim.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("Pod", "trainer", True)
    assert claim.metadata.annotations["resource.kubernetes.io/pod-claim-name"] == "gpu"
    assert claim.spec.devices.requests[0].exactly.device_class_name == DRIVER
    assert claim.status is None or not claim.status.allocation

    # the garbage collector removes the claim with its (never scheduled) pod
    core.delete_namespaced_pod("trainer", namespace)

    def claim_gone():
        try:
            res.read_namespaced_resource_claim(claim_name, namespace)
            return False
        except ApiException as e:
            return e.status == 404

    wait_until(claim_gone, 60, f"the garbage collector to delete ResourceClaim {claim_name}")


def test_serviceaccount_token_is_subject_to_rbac(controlplane, api, namespace):
    audit_start = controlplane.audit_offset()
    token = controlplane.token_for(namespace, "limited", create=True)
    sa_api = controlplane.api_client(controlplane.kubeconfig_for_token(token, namespace=namespace))
    try:
        core = client.CoreV1Api(sa_api)
        with pytest.raises(ApiException) as exc:
            core.list_namespaced_pod(namespace)
        assert exc.value.status == 403
        assert f"system:serviceaccount:{namespace}:limited" in str(exc.value.body)

        rbac = client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(
            namespace,
            {
                "metadata": {"name": "pod-reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "limited-reads-pods"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "limited", "namespace": namespace}],
            },
        )

        def can_list():
            try:
                core.list_namespaced_pod(namespace)
                return True
            except ApiException as e:
                assert e.status == 403
                return False

        wait_until(can_list, 30, "the RoleBinding to take effect")
        # still forbidden: writes, and other namespaces
        with pytest.raises(ApiException) as exc:
            core.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})
        assert exc.value.status == 403
        with pytest.raises(ApiException) as exc:
            core.list_namespaced_pod("kube-system")
        assert exc.value.status == 403
    finally:
        sa_api.close()
    # the audit log (the fixture's ControlPlane(audit=True)) names every refused request
    events, _ = controlplane.audit_events(audit_start)
    refused = {(e["verb"], e["objectRef"]["resource"], e["objectRef"]["namespace"]) for e in events
               if e["user"]["username"] == f"system:serviceaccount:{namespace}:limited"
               and e["responseStatus"]["code"] == 403}
    assert refused == {
        ("list", "pods", namespace), ("create", "configmaps", namespace), ("list", "pods", "kube-system")}


def test_etcd_compaction_gives_410_on_old_resource_version(controlplane, api, namespace):
    core = client.CoreV1Api(api)
    cm = core.create_namespaced_config_map(namespace, {"metadata": {"name": "compacted"}, "data": {"n": "0"}})
    old_rv = cm.metadata.resource_version
    for i in range(1, 4):
        core.patch_namespaced_config_map("compacted", namespace, {"data": {"n": str(i)}})
    # before compaction, a watch from the old resourceVersion replays the updates
    events = list(
        watch.Watch().stream(core.list_namespaced_config_map, namespace, resource_version=old_rv, timeout_seconds=2)
    )
    assert [e["object"].data["n"] for e in events if e["object"].metadata.name == "compacted"][-1] == "3"

    rev = controlplane.compact_etcd()
    assert rev >= int(old_rv)

    # the watch cache reads compact_rev_key every 15s and drops its snapshots: then a list of exactly
    # the old resourceVersion reaches etcd and gets 410 Gone
    def list_gone():
        try:
            core.list_namespaced_config_map(namespace, resource_version=old_rv, resource_version_match="Exact")
            return False
        except ApiException as e:
            assert e.status == 410, e
            return True

    wait_until(list_gone, 60, "a list of a compacted resourceVersion to get 410 Gone", interval=1)
    # the watch cache serves watches from its own history; a restarted API server has a fresh cache,
    # so the old resourceVersion is gone for watches too
    controlplane.restart_apiserver()
    wait_until(lambda: _read_cm(core, namespace, "compacted"), 30, "the API server to answer again")
    with pytest.raises(ApiException) as exc:
        list(
            watch.Watch().stream(core.list_namespaced_config_map, namespace, resource_version=old_rv, timeout_seconds=2)
        )
    assert exc.value.status == 410
    # a watch from the current state works
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.patch_namespaced_config_map("compacted", namespace, {"data": {"n": "4"}})
    events = list(
        watch.Watch().stream(core.list_namespaced_config_map, namespace, resource_version=rv, timeout_seconds=2)
    )
    assert [e["object"].data["n"] for e in events] == ["4"]


def test_without_watch_cache_compaction_gives_410_on_watches_at_once(controlplane_binaries):
    cpmod = sys.modules["kai_controlplane"]
    with cpmod.ControlPlane(controlplane_binaries, watch_cache=False) as cp:
        assert "--watch-cache=false" in cp.apiserver.args
        api = cp.api_client()
        try:
            core = client.CoreV1Api(api)
            cp.ensure_namespace("compaction", wait_default_sa=False)
            old_rv = core.create_namespaced_config_map(
                "compaction", {"metadata": {"name": "c"}}
            ).metadata.resource_version
            for n in ("1", "2"):
                core.patch_namespaced_config_map("c", "compaction", {"data": {"n": n}})
            events = list(
                watch.Watch().stream(
                    core.list_namespaced_config_map, "compaction", resource_version=old_rv, timeout_seconds=1
                )
            )
            assert [e["object"].data for e in events if e["object"].metadata.name == "c"] == [{"n": "1"}, {"n": "2"}]
            # (compacting at the revision of the very next event would give 500 "PrevKv=nil" instead:
            # etcd has that event but no longer the previous value the API server asks for)
            cp.compact_etcd()
            with pytest.raises(ApiException) as exc:
                list(
                    watch.Watch().stream(
                        core.list_namespaced_config_map, "compaction", resource_version=old_rv, timeout_seconds=1
                    )
                )
            assert exc.value.status == 410, exc.value
        finally:
            api.close()


def test_restart_apiserver(controlplane, api, namespace):
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "survives"}, "data": {"k": "v"}})
    old_pid = controlplane.apiserver.pid
    controlplane.restart_apiserver()
    assert controlplane.apiserver.pid != old_pid
    # the same client (same port, same serving certificate) works again
    assert wait_until(lambda: _read_cm(core, namespace, "survives"), 30, "the API server to answer again").data == {
        "k": "v"
    }
    # and the controller manager still works: a new namespace gets its default ServiceAccount
    controlplane.ensure_namespace(f"{namespace}-after-restart", timeout=90)


def _read_cm(core, namespace, name):
    try:
        return core.read_namespaced_config_map(name, namespace)
    except (ApiException, OSError):
        return None


def test_kube_scheduler_allocates_and_binds(controlplane, api, namespace):
    """The kube-scheduler built with the rest (default profile, DRA on) schedules a pod with a claim:
    the real DRA plugin allocates a device and the pod is bound."""
    core, res = client.CoreV1Api(api), client.ResourceV1Api(api)
    driver, node = "sched.smoke.kai.example.com", f"sched-node-{uuid.uuid4().hex[:6]}"
    created = controlplane.add_node(node, capacity={"cpu": "8", "memory": "32Gi", "pods": "110"})
    assert "taints" not in created["spec"]  # the not-ready taint admission added is gone
    res.create_device_class(
        {"metadata": {"name": driver}, "spec": {"selectors": [{"cel": {"expression": f"device.driver == '{driver}'"}}]}}
    )
    res.create_resource_slice(
        {
            "metadata": {"name": f"{node}-devs"},
            "spec": {
                "driver": driver,
                "nodeName": node,
                "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                "devices": [{"name": "dev-0"}],
            },
        }
    )
    res.create_namespaced_resource_claim_template(
        namespace,
        {
            "metadata": {"name": "one-dev"},
            "spec": {"spec": {"devices": {"requests": [{"name": "dev", "exactly": {"deviceClassName": driver}}]}}},
        },
    )
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "kube-scheduled"},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "containers": [
                    {"name": "main", "image": "registry.example/app:1", "resources": {"claims": [{"name": "dev"}]}}
                ],
                "resourceClaims": [{"name": "dev", "resourceClaimTemplateName": "one-dev"}],
            },
        },
    )
    controlplane.start_scheduler()
    try:
        try:
            pod = wait_until(
                lambda: (p := core.read_namespaced_pod("kube-scheduled", namespace)).spec.node_name and p,
                90,
                "kube-scheduler to bind the pod",
            )
        except AssertionError as e:
            conditions = core.read_namespaced_pod("kube-scheduled", namespace).status.conditions
            raise AssertionError(f"{e}; pod conditions: {conditions}; log: {controlplane.kube_scheduler.log}") from None
        assert pod.spec.node_name == node
        claim = res.read_namespaced_resource_claim(pod.status.resource_claim_statuses[0].resource_claim_name, namespace)
        results = claim.status.allocation.devices.results
        assert [(r.driver, r.pool, r.device) for r in results] == [(driver, node, "dev-0")]
        assert [c.name for c in claim.status.reserved_for] == ["kube-scheduled"]
    finally:
        controlplane.stop_scheduler()
