"""What the fake API server answers the way kube-apiserver v1.37 does, found by the conformance
test against the real one (test/e2e/test_conformance.py): delete replies, a pod's deletion events,
Event and Lease validation, and a binding to no node."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("kubernetes", reason="the kubernetes client is not installed")

from kai_core.api.errors import Invalid  # noqa: E402

pytest_plugins = ["kai_core.testing.fixtures"]

DELETE = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}


def call(api, method: str, path: str, body=None):
    req = api.param_serialize(method=method, resource_path=path, body=body,
                              header_params={"Content-Type": "application/json", "Accept": "application/json"})
    resp = api.call_api(*req, _request_timeout=10)
    data = resp.read()
    return resp.status, (json.loads(data) if data else None)


@pytest.fixture
def api(fake_apiserver):
    a = fake_apiserver.api_client()
    yield a
    a.close()


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}


def test_delete_answers_a_status_for_kinds_that_do_not_return_the_deleted_object(fake_apiserver, api):
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "l", "namespace": "default"}, "spec": {}}
    created = fake_apiserver.store.create(lease)
    status, body = call(api, "DELETE", "/apis/coordination.k8s.io/v1/namespaces/default/leases/l", DELETE)
    assert status == 200
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": "l", "group": "coordination.k8s.io", "kind": "leases",
                                "uid": created["metadata"]["uid"]}}


def test_a_deleted_pod_is_marked_then_removed_and_the_reply_is_the_marked_pod(fake_apiserver, api):
    store = fake_apiserver.store
    created = store.create(pod("p"))
    rv = int(created["metadata"]["resourceVersion"])
    status, body = call(api, "DELETE", "/api/v1/namespaces/default/pods/p", DELETE)
    assert status == 200 and body["kind"] == "Pod"
    assert body["metadata"]["deletionTimestamp"] and body["metadata"]["deletionGracePeriodSeconds"] == 0
    events = store.events_since(rv, {"pods"})[0]
    assert [e.type for e in events] == ["MODIFIED", "DELETED"]
    assert events[0].object["metadata"]["deletionTimestamp"] == body["metadata"]["deletionTimestamp"]


def test_an_object_kept_by_a_finalizer_is_the_reply_of_its_delete(fake_apiserver, api):
    store = fake_apiserver.store
    store.create({"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "c", "namespace": "default", "finalizers": ["example.com/hold"]}})
    status, body = call(api, "DELETE", "/api/v1/namespaces/default/configmaps/c", DELETE)
    assert status == 200 and body["kind"] == "ConfigMap" and body["metadata"]["deletionTimestamp"]


def test_an_event_lives_in_its_objects_namespace(fake_apiserver):
    store = fake_apiserver.store
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "team"},
             "involvedObject": {"kind": "Pod", "name": "p", "namespace": "other"}, "reason": "R", "type": "Normal"}
    with pytest.raises(Invalid, match="involvedObject.namespace.*does not match event.namespace"):
        store.create(event)
    event["involvedObject"]["namespace"] = "team"
    store.create(event)
    node_event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "n", "namespace": "team"},
                  "involvedObject": {"kind": "Node", "name": "n1"}, "reason": "R", "type": "Normal"}
    with pytest.raises(Invalid, match="does not match event.namespace"):
        store.create(node_event)  # an Event about a cluster-scoped object lives in "default"
    store.create({**node_event, "metadata": {"name": "n", "namespace": "default"}})


@pytest.mark.parametrize("spec, message", [
    ({"leaseDurationSeconds": 0}, "leaseDurationSeconds: Invalid value: 0: must be greater than 0"),
    ({"leaseDurationSeconds": -5}, "must be greater than 0"),
    ({"leaseTransitions": -1}, "leaseTransitions: Invalid value: -1: must be greater than or equal to 0"),
])
def test_a_lease_needs_a_positive_duration_and_no_negative_transitions(fake_apiserver, spec, message):
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "l", "namespace": "default"}, "spec": {"holderIdentity": "a", **spec}}
    with pytest.raises(Invalid, match=message):
        fake_apiserver.store.create(lease)
    ok = fake_apiserver.store.create({**lease, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})
    with pytest.raises(Invalid, match=message):  # updates are held to the same rules
        fake_apiserver.store.update({**ok, "spec": {**ok["spec"], **spec}})


def test_a_binding_to_no_node_is_a_500_without_a_reason_as_kube_apiserver_answers(fake_apiserver, api):
    fake_apiserver.store.create(pod("p"))
    body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": ""}}
    status, reply = call_allowing_errors(api, "POST", "/api/v1/namespaces/default/pods/p/binding", body)
    assert status == 500
    assert reply == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                     "message": "target.name: Required value", "code": 500}


def call_allowing_errors(api, method: str, path: str, body=None):
    from kubernetes.client.exceptions import ApiException

    try:
        return call(api, method, path, body)
    except ApiException as exc:
        return exc.status, json.loads(exc.body)


def test_admin_access_claims_need_the_namespace_label(fake_apiserver):
    store = fake_apiserver.store
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops"}})
    claim = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": "m", "namespace": "ops"},
             "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.example.com",
                                                                           "adminAccess": True}}]}}}
    template = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                "metadata": {"name": "m", "namespace": "ops"}, "spec": {"spec": claim["spec"]}}
    for obj in (claim, template):
        with pytest.raises(Invalid, match=r"spec.devices.requests\[0\].adminAccess: Forbidden: admin access to "
                                          "devices requires the `resource.kubernetes.io/admin-access: true` label"):
            store.create(obj)
    store.patch("namespaces", "ops", None, {"metadata": {"labels": {"resource.kubernetes.io/admin-access": "true"}}})
    store.create(claim)
    store.create(template)


def test_only_kinds_whose_strategy_sets_it_carry_a_generation(fake_apiserver):
    store = fake_apiserver.store
    node = store.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    claim = store.create({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                          "metadata": {"name": "c", "namespace": "default"},
                          "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "g"}}]}}})
    assert "generation" not in node["metadata"] and "generation" not in claim["metadata"]
    claim["metadata"]["finalizers"] = ["example.com/hold"]
    assert "generation" not in store.update(claim)["metadata"]
    assert store.create(pod("p"))["metadata"]["generation"] == 1
    dc = store.create({"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": "g"},
                       "spec": {}})
    assert dc["metadata"]["generation"] == 1


def test_counter_sets_and_counters_are_named_by_dns_labels(fake_apiserver):
    store = fake_apiserver.store
    shared = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": "c"},
              "spec": {"driver": "gpu.example.com", "nodeName": "n1",
                       "pool": {"name": "n1", "generation": 1, "resourceSliceCount": 2},
                       "sharedCounters": [{"name": "gpu-0", "counters": {"memorySlice0": {"value": "1"}}}]}}
    with pytest.raises(Invalid, match=r"spec.sharedCounters\[0\].counters.*memorySlice0"):
        store.create(shared)
    shared["spec"]["sharedCounters"][0]["counters"] = {"memory-slice-0": {"value": "1"}}
    store.create(shared)
    devices = {**shared, "metadata": {"name": "d"}, "spec": {
        **{k: v for k, v in shared["spec"].items() if k != "sharedCounters"},
        "devices": [{"name": "mig-0", "consumesCounters": [{"counterSet": "GPU_0",
                                                            "counters": {"memory-slice-0": {"value": "1"}}}]}]}}
    with pytest.raises(Invalid, match=r"spec.devices\[0\].consumesCounters\[0\].counterSet"):
        store.create(devices)


def claim_with(*requests, **devices) -> dict:
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": "c", "namespace": "default"},
            "spec": {"devices": {"requests": list(requests), **devices}}}


GPU_REQUEST = {"name": "gpu", "exactly": {"deviceClassName": "gpu.example.com"}}


def test_a_count_of_0_is_go_unset_and_defaulted_to_1(fake_apiserver):
    created = fake_apiserver.store.create(claim_with({"name": "gpu", "exactly": {"deviceClassName": "g", "count": 0}}))
    assert created["spec"]["devices"]["requests"][0]["exactly"] == {
        "deviceClassName": "g", "allocationMode": "ExactCount", "count": 1}


@pytest.mark.parametrize("request_, devices, problem", [
    ({**GPU_REQUEST, "exactly": {**GPU_REQUEST["exactly"], "tolerations": [{"key": "k", "operator": "Exists",
                                                                            "effect": "Bogus"}]}}, {},
     r"tolerations\[0\].effect: Unsupported value: 'Bogus'"),
    ({**GPU_REQUEST, "exactly": {**GPU_REQUEST["exactly"], "tolerations": [{"key": "k", "operator": "Exists",
                                                                            "value": "v"}]}}, {},
     r"tolerations\[0\].value: Invalid value: 'v': must be empty for operator `Exists`"),
    (GPU_REQUEST, {"constraints": [{"requests": ["gpu"]}]},
     r'constraints\[0\]: Required value: exactly one of "matchAttribute" or "distinctAttribute"'),
    (GPU_REQUEST, {"config": [{"requests": ["nope"], "opaque": {"driver": "d.example.com", "parameters": {}}}]},
     r"config\[0\].requests: Invalid value: 'nope': must be the name of a request"),
])
def test_device_requests_are_validated_as_the_api_server_does(fake_apiserver, request_, devices, problem):
    with pytest.raises(Invalid, match=problem):
        fake_apiserver.store.create(claim_with(request_, **devices))


def _status(store, status: dict):
    claim = store.get("resourceclaims.resource.k8s.io", "c", "default")
    return store.update_status({**claim, "status": status})


RESULT = {"request": "gpu", "driver": "d.example.com", "pool": "n1", "device": "gpu-0"}


@pytest.mark.parametrize("allocation, problem", [
    ({"devices": {"results": [{**RESULT, "request": "nope"}]}}, r"results\[0\].request: Invalid value: 'nope'"),
    ({"devices": {"results": [{**RESULT, "driver": "Bad_Driver"}]}}, r"results\[0\].driver"),
    ({"devices": {"results": [RESULT]}, "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
        {"key": "metadata.name", "operator": "Bogus", "values": ["n1"]}]}]}},
     r"nodeSelector.nodeSelectorTerms\[0\].matchFields\[0\].operator: Invalid value: 'Bogus'"),
    ({"devices": {"results": [{**RESULT, "adminAccess": True}]}},
     r"results\[0\].adminAccess: Forbidden: admin access to devices requires"),
])
def test_claim_statuses_are_validated_as_the_api_server_does(fake_apiserver, allocation, problem):
    store = fake_apiserver.store
    store.create(claim_with(GPU_REQUEST))
    with pytest.raises(Invalid, match=problem):
        _status(store, {"allocation": allocation})
    assert _status(store, {"allocation": {"devices": {"results": [RESULT]}}})["status"]["allocation"]
