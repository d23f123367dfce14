"""Validation as the API server does it: each refused object is named, with the field and the problem."""

from __future__ import annotations

import pytest

from kai_core.api.errors import Invalid
from kai_core.apiserver.defaults import normalize_quantity, qos_class
from kai_core.apiserver.store import EmbeddedStore
from kai_core.apiserver.validation import immutable_paths, transition_rule_validator

CLAIMS = "resourceclaims.resource.k8s.io"


@pytest.fixture
def store() -> EmbeddedStore:
    return EmbeddedStore()


def pod(name: str = "p", containers=None, **spec) -> dict:
    spec["containers"] = containers if containers is not None else [{"name": "main", "image": "x:1"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def with_resources(**resources) -> dict:
    return pod(containers=[{"name": "main", "image": "x:1", "resources": resources}])


def claim(*requests, constraints=None) -> dict:
    devices: dict = {"requests": list(requests)}
    if constraints is not None:
        devices["constraints"] = constraints
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "c"},
        "spec": {"devices": devices},
    }


def exact(name: str = "gpu", **fields) -> dict:
    fields.setdefault("deviceClassName", "gpu.example.com")
    return {"name": name, "exactly": fields}


def refused(store: EmbeddedStore, obj: dict) -> str:
    with pytest.raises(Invalid) as err:
        store.create(obj)
    assert err.value.code == 422
    return err.value.message


# ---------------------------------------------------------------------------------------------
# names and metadata


@pytest.mark.parametrize("name", ["Upper", "under_score", "-dash", "x" * 254, "dot."])
def test_invalid_object_names(store, name):
    assert "metadata.name must be a lowercase RFC 1123 subdomain" in refused(store, pod(name))


def test_namespace_names_are_dns_labels(store):
    message = refused(store, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}})
    assert 'Namespace "a.b"' in message and "RFC 1123 label" in message


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        ({"app": 3}, "must be a string"),
        ({"app": "x" * 64}, "at most 63 characters"),
        ({"app": "has space"}, "at most 63 characters"),
        ({"bad key": "x"}, "metadata.labels: key 'bad key'"),
        ({"Example.com/x": "y"}, "prefix must be a lowercase DNS subdomain"),
        ({"": "y"}, "non-empty string"),
        ("app=web", "metadata.labels: must be a mapping"),
    ],
)
def test_bad_labels_are_refused(store, labels, problem):
    obj = pod()
    obj["metadata"]["labels"] = labels
    message = refused(store, obj)
    assert message.startswith("Pod default/p is invalid") and problem in message


def test_good_labels_are_kept(store):
    obj = pod()
    obj["metadata"]["labels"] = {"example.com/gpu-model": "A100_80GB", "empty": "", "a.b-c_d": "x.y"}
    assert store.create(obj)["metadata"]["labels"]["example.com/gpu-model"] == "A100_80GB"


def test_bad_annotations_finalizers_and_owner_references(store):
    obj = pod()
    obj["metadata"]["annotations"] = {"count": 1}
    assert "metadata.annotations['count']: value must be a string" in refused(store, obj)
    obj = pod()
    obj["metadata"]["finalizers"] = ["not a name"]
    assert "metadata.finalizers[0]" in refused(store, obj)
    obj = pod()
    obj["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": "o"}]
    assert "metadata.ownerReferences[0].uid: required" in refused(store, obj)
    obj = pod()
    owner = {"apiVersion": "v1", "kind": "Node", "name": "o", "uid": "u", "controller": True}
    obj["metadata"]["ownerReferences"] = [owner, {**owner, "uid": "v"}]
    assert "only one reference can have controller set to true" in refused(store, obj)


def test_metadata_is_checked_on_updates_too(store):
    store.create(pod())
    p = store.get("pods", "p")
    p["metadata"]["labels"] = {"n": 1}
    with pytest.raises(Invalid, match="must be a string"):
        store.update(p)


# ---------------------------------------------------------------------------------------------
# pods


def test_a_pod_needs_containers(store):
    assert "spec.containers: at least one container is required" in refused(store, pod(containers=[]))
    assert "spec: required" in refused(store, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})


def test_container_names_are_required_and_unique(store):
    message = refused(store, pod(containers=[{"name": "a", "image": "x"}, {"name": "a", "image": "y"}, {}]))
    assert "spec.containers[1].name: duplicate value 'a'" in message
    assert "spec.containers[2].name: required" in message


def test_container_claims_must_name_pod_claims(store):
    obj = pod(containers=[{"name": "c", "image": "x", "resources": {"claims": [{"name": "gpu"}]}}])
    assert "spec.containers[0].resources.claims[0].name: 'gpu' must be one of" in refused(store, obj)
    obj = pod(resourceClaims=[{"name": "gpu"}, {"name": "gpu", "resourceClaimName": "a"}])
    message = refused(store, obj)
    assert "spec.resourceClaims[0]: exactly one of resourceClaimName or resourceClaimTemplateName" in message
    assert "spec.resourceClaims[1].name: duplicate value 'gpu'" in message


def test_requests_may_not_exceed_limits(store):
    message = refused(store, with_resources(requests={"cpu": "2"}, limits={"cpu": "1"}))
    assert (
        "spec.containers[0].resources.requests['cpu']: '2' must be less than or equal to the limit '1'"
        in message
    )


def test_extended_resources_are_whole_and_not_overcommitted(store):
    assert "must be an integer" in refused(store, with_resources(requests={"nvidia.com/gpu": "500m"}))
    message = refused(store, with_resources(requests={"nvidia.com/gpu": "1"}, limits={"nvidia.com/gpu": "2"}))
    assert "must be equal to the limit for the extended resource 'nvidia.com/gpu'" in message


def test_quantities_that_do_not_parse_are_named(store):
    message = refused(store, with_resources(limits={"memory": "lots"}))
    assert "spec.containers[0].resources.limits['memory']: invalid quantity 'lots'" in message
    assert "must be greater than or equal to 0" in refused(store, with_resources(requests={"cpu": "-1"}))
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n"},
        "status": {"capacity": {"cpu": "x"}},
    }
    assert "Node n is invalid: status.capacity['cpu']: invalid quantity 'x'" in refused(store, node)


def test_a_pods_spec_is_fixed_once_created(store):
    store.create(pod(tolerations=[]))
    p = store.get("pods", "p")
    p["spec"]["containers"].append({"name": "sidecar", "image": "x"})
    with pytest.raises(Invalid, match="pod updates may not change fields"):
        store.update(p)
    p = store.get("pods", "p")
    p["spec"]["tolerations"] = [{"key": "gpu", "operator": "Exists"}]
    p["spec"]["activeDeadlineSeconds"] = 60
    assert store.update(p)["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists"}]


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        (2, "2"),
        (0.5, "500m"),
        ("1000m", "1"),
        ("1024Mi", "1Gi"),
        ("1.5Gi", "1536Mi"),
        ("2k", "2k"),
        ("100Mi", "100Mi"),
        ("0.1", "100m"),
        ("lots", "lots"),
        (True, True),
        (None, None),
    ],
)
def test_quantity_canonical_form(value, canonical):
    assert normalize_quantity(value) == canonical


def test_qos_class_with_pod_level_resources():
    spec = {
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
        "containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}}}],
    }
    assert qos_class(spec) == "Guaranteed"


# ---------------------------------------------------------------------------------------------
# resource.k8s.io


def test_a_request_needs_exactly_one_of_exactly_or_first_available(store):
    neither = {"name": "gpu"}
    both = {
        "name": "both",
        "exactly": {"deviceClassName": "x"},
        "firstAvailable": [{"name": "a", "deviceClassName": "x"}],
    }
    message = refused(store, claim(neither, both))
    assert "spec.devices.requests[0]: exactly one of exactly or firstAvailable is required" in message
    assert "spec.devices.requests[1]: exactly one of exactly or firstAvailable is required" in message


@pytest.mark.parametrize(
    ("request_", "problem"),
    [
        (exact(deviceClassName=""), "spec.devices.requests[0].exactly.deviceClassName: required"),
        (exact(count=-1), "spec.devices.requests[0].exactly.count: must be a positive integer, got -1"),
        (exact(allocationMode="Some"), "allocationMode: unsupported value 'Some'"),
        (exact(allocationMode="All", count=2), "count: must not be set when allocationMode is All"),
        (exact(selectors=[{"cel": {}}]), "selectors[0].cel.expression: a CEL expression is required"),
        (exact(selectors=[{"notcel": 1}]), "selectors[0].cel: a CEL expression is required"),
        ({"name": "any", "firstAvailable": []}, "firstAvailable: must be a non-empty list"),
        ({"exactly": {}}, "spec.devices.requests[0].name: required"),
    ],
)
def test_bad_device_requests(store, request_, problem):
    message = refused(store, claim(request_))
    assert message.startswith("ResourceClaim default/c is invalid") and problem in message


def test_duplicate_requests_and_constraints_on_unknown_requests(store):
    message = refused(
        store, claim(exact(), exact(), constraints=[{"requests": ["gpu", "nic"], "matchAttribute": "x/y"}])
    )
    assert "spec.devices.requests[1].name: duplicate value 'gpu'" in message
    assert "spec.devices.constraints[0].requests: 'nic' is not a request of this claim" in message


def test_a_claim_status_with_duplicate_reservations_is_refused(store):
    c = store.create(claim(exact()))
    alloc = {"devices": {"results": [{"request": "gpu", "driver": "d", "pool": "p", "device": "g"}]}}
    entry = {"resource": "pods", "name": "p", "uid": "u"}
    c["status"] = {"allocation": alloc, "reservedFor": [entry, entry]}
    with pytest.raises(Invalid, match=r"status.reservedFor\[1\].uid: duplicate value 'u'"):
        store.update_status(c)


def test_a_claim_status_write_validates_the_status_not_the_stored_spec(store, monkeypatch):
    """As the API server's status strategy: the spec of a status write is the stored one (checked
    when it was written, immutable), so only the status is validated; a whole-object write checks
    the spec again."""
    from kai_core.apiserver import validation

    c = store.create(claim(exact()))
    monkeypatch.setattr(validation, "_claim_spec_problems", lambda spec, path: ["spec: checked again"])
    c["status"] = {"allocation": {"devices": {"results": [
        {"request": "gpu", "driver": "d", "pool": "p", "device": "g"}]}}}
    c = store.update_status(c)
    assert c["status"]["allocation"]["devices"]["results"][0]["device"] == "g"
    c["status"]["allocation"]["devices"]["results"][0]["request"] = "nic"
    with pytest.raises(Invalid, match="nic"):  # the status is still checked against the spec's requests
        store.update_status(c)
    c = store.get(CLAIMS, "c")
    c["metadata"]["labels"] = {"a": "b"}
    with pytest.raises(Invalid, match="spec: checked again"):
        store.update(c)


def test_a_pod_status_write_validates_the_status_not_the_stored_spec(store, monkeypatch):
    """pods/status, as the API server's status strategy: the status is checked (a condition
    without a type is refused, by the pod's name), the stored spec is not checked again; a
    whole-pod write checks it."""
    from kai_core.apiserver import validation

    store.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
                  "spec": {"containers": [{"name": "c", "image": "x"}]}})
    monkeypatch.setattr(validation, "_resources_problems", lambda res, path: [f"{path}: checked again"])
    pod = store.get("pods", "p", "default")
    pod["status"] = {"conditions": [{"type": "PodBound", "status": "True"}]}
    assert store.update_status(pod)["status"]["conditions"][0]["type"] == "PodBound"
    store.patch("pods", "p", "default", {"status": {"phase": "Running"}}, "status")
    pod = store.get("pods", "p", "default")
    pod["status"]["conditions"].append({"status": "True"})
    with pytest.raises(Invalid, match=r'[Pp]od.*"?p"?.*status.conditions\[1\]'):
        store.update_status(pod)
    pod = store.get("pods", "p", "default")
    pod["metadata"]["labels"] = {"a": "b"}
    with pytest.raises(Invalid, match="checked again"):
        store.update(pod)


def test_a_claim_being_deleted_cannot_be_allocated(store):
    c = claim(exact())
    c["metadata"]["finalizers"] = ["example.com/hold"]
    store.create(c)
    store.delete(CLAIMS, "c")
    c = store.get(CLAIMS, "c")
    c["status"] = {"allocation": {"devices": {"results": []}}}
    with pytest.raises(Invalid, match="being deleted cannot be allocated"):
        store.update_status(c)


def test_a_claim_templates_spec_is_immutable(store):
    template = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "t"},
        "spec": {"spec": claim(exact())["spec"]},
    }
    store.create(template)
    t = store.get("resourceclaimtemplates.resource.k8s.io", "t")
    t["spec"]["spec"]["devices"]["requests"][0]["exactly"]["count"] = 3
    with pytest.raises(Invalid, match="ResourceClaimTemplate default/t is invalid: spec: field is immutable"):
        store.update(t)


def test_resource_slices(store):
    base = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": "s"}}
    message = refused(store, {**base, "spec": {"pool": {}, "nodeName": "n1", "allNodes": True}})
    assert "spec.driver: required" in message and "spec.pool.name: required" in message
    assert "exactly one of nodeName, nodeSelector, allNodes, perDeviceNodeSelection" in message
    bad_capacity = {
        **base,
        "spec": {
            "driver": "d",
            "pool": {"name": "p"},
            "nodeName": "n1",
            "devices": [{"name": "g", "capacity": {"memory": {"value": "many"}}}],
        },
    }
    assert "spec.devices[0].capacity['memory'].value: invalid quantity 'many'" in refused(store, bad_capacity)


def test_device_class_selectors_must_be_a_list(store):
    dc = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": "d"},
        "spec": {"selectors": {"cel": {"expression": "true"}}},
    }
    assert "DeviceClass d is invalid: spec.selectors: must be a list" in refused(store, dc)


# ---------------------------------------------------------------------------------------------
# CRD transition rules


def test_immutable_paths_from_a_crd_schema():
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "x-kubernetes-validations": [{"rule": "self == oldSelf"}],
                "properties": {"a": {"type": "string"}},
            },
            "status": {
                "type": "object",
                "properties": {
                    "id": {
                        "type": "string",
                        "x-kubernetes-validations": [
                            {"rule": "self==oldSelf", "message": "id never changes"},
                            {"rule": "size(self) > 0"},
                        ],
                    }
                },
            },
        },
    }
    assert immutable_paths(schema) == [
        (("spec",), "field is immutable"),
        (("status", "id"), "id never changes"),
    ]
    check = transition_rule_validator(immutable_paths(schema))
    old = {"kind": "W", "metadata": {"name": "w"}, "spec": {"a": "1"}, "status": {}}
    check(old, {**old, "status": {"id": "new"}})  # set for the first time: allowed
    with pytest.raises(Invalid, match="W w is invalid: spec: Invalid value: field is immutable"):
        check(old, {**old, "spec": {"a": "2"}})
    assert transition_rule_validator([]) is None
