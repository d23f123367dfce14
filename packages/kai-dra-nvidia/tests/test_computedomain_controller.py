"""The embedded ComputeDomain controller: the workload ResourceClaimTemplate it creates, what it leaves
alone, idempotence, status, and clean-up when a domain goes."""

from __future__ import annotations

import logging

import pytest

from kai_core.api.errors import Invalid, NotFound
from kai_core.api.resources import RES_CLAIM_TEMPLATES, RES_CLAIMS, RES_PODS
from kai_core.apiserver.store import EmbeddedStore
from kai_dra_nvidia import compute_domain_crd
from kai_dra_nvidia.computedomain import RES_COMPUTE_DOMAINS, ComputeDomainController

UID_LABEL = "resource.nvidia.com/computeDomain"
FINALIZER = "resource.nvidia.com/computeDomain"
CLIQUE = "4c6e2f58-1d0a-4f5e-9b7b-2f3c1a9d8e71.1"


@pytest.fixture
def store() -> EmbeddedStore:
    s = EmbeddedStore()
    s.restore(compute_domain_crd())
    return s


def add_domain(store, name="imex-domain", template="imex-channel-0", namespace="default", **channel) -> dict:
    return store.create(
        {
            "apiVersion": "resource.nvidia.com/v1beta1",
            "kind": "ComputeDomain",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "numNodes": channel.pop("num_nodes", 0),
                "channel": {"resourceClaimTemplate": {"name": template}, **channel},
            },
        }
    )


def domain(store, name="imex-domain") -> dict:
    return store.get(RES_COMPUTE_DOMAINS, name, "default")


def template(store, name="imex-channel-0") -> dict:
    return store.get(RES_CLAIM_TEMPLATES, name, "default")


def test_creates_the_workload_template_nvidia_creates(store):
    cd = add_domain(store)
    ComputeDomainController().reconcile(store)

    t = template(store)
    uid = cd["metadata"]["uid"]
    assert t["metadata"]["labels"] == {UID_LABEL: uid, "resource.nvidia.com/computeDomainTarget": "Workload"}
    assert t["metadata"]["finalizers"] == [FINALIZER]
    assert "ownerReferences" not in t["metadata"]
    assert t["spec"] == {
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": "channel",
                        "exactly": {
                            "deviceClassName": "compute-domain-default-channel.nvidia.com",
                            "allocationMode": "ExactCount",
                            "count": 1,
                        },
                    }
                ],
                "config": [
                    {
                        "requests": ["channel"],
                        "opaque": {
                            "driver": "compute-domain.nvidia.com",
                            "parameters": {
                                "apiVersion": "resource.nvidia.com/v1beta1",
                                "kind": "ComputeDomainChannelConfig",
                                "domainID": uid,
                            },
                        },
                    }
                ],
            }
        }
    }
    assert FINALIZER in domain(store)["metadata"]["finalizers"]


def test_all_channels_mode_is_passed_to_the_driver(store):
    add_domain(store, allocationMode="All")
    ComputeDomainController().reconcile(store)
    params = template(store)["spec"]["spec"]["devices"]["config"][0]["opaque"]["parameters"]
    assert params["allocationMode"] == "All"


def test_template_goes_to_the_domains_namespace(store):
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    add_domain(store, namespace="team-a", template="chan")
    ComputeDomainController().reconcile(store)
    assert store.get(RES_CLAIM_TEMPLATES, "chan", "team-a")
    with pytest.raises(NotFound):
        template(store, "chan")


def test_second_reconcile_writes_nothing(store):
    add_domain(store)
    add_domain(store, name="other", template="other-channel", num_nodes=2)
    controller = ComputeDomainController()
    controller.reconcile(store)
    rv = store.resource_version
    controller.reconcile(store)
    controller.reconcile(store)
    assert store.resource_version == rv
    # a fresh controller (a restarted process) finds everything in place as well
    ComputeDomainController().reconcile(store)
    assert store.resource_version == rv


def test_existing_template_of_that_name_is_left_alone(store, caplog):
    mine = store.create(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaimTemplate",
            "metadata": {"name": "imex-channel-0", "namespace": "default"},
            "spec": {
                "spec": {
                    "devices": {
                        "requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com"}}]
                    }
                }
            },
        }
    )
    add_domain(store)
    controller = ComputeDomainController()
    with caplog.at_level(logging.WARNING, logger="kai.nvidia.computedomain"):
        controller.reconcile(store)
        controller.reconcile(store)
    assert template(store) == mine
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # said once, not every round
    assert "default/imex-channel-0 already exists" in warnings[0]
    assert "ComputeDomain default/imex-domain" in warnings[0]


def test_a_template_deleted_by_hand_is_not_recreated_while_terminating(store):
    # NVIDIA's finalizer keeps the template until its domain goes; the controller does not fight it
    add_domain(store)
    controller = ComputeDomainController()
    controller.reconcile(store)
    store.delete(RES_CLAIM_TEMPLATES, "imex-channel-0", "default")
    controller.reconcile(store)
    assert template(store)["metadata"].get("deletionTimestamp")


def test_deleting_the_domain_removes_its_template(store):
    add_domain(store)
    add_domain(store, name="keep", template="keep-channel")
    controller = ComputeDomainController()
    controller.reconcile(store)

    store.delete(RES_COMPUTE_DOMAINS, "imex-domain", "default")
    assert domain(store)["metadata"]["deletionTimestamp"]  # held by the finalizer until cleaned up
    controller.reconcile(store)

    with pytest.raises(NotFound):
        domain(store)
    with pytest.raises(NotFound):
        template(store)
    assert template(store, "keep-channel")
    rv = store.resource_version
    controller.reconcile(store)
    assert store.resource_version == rv


def test_templates_of_a_domain_that_is_gone_are_cleaned_up(store):
    add_domain(store)
    controller = ComputeDomainController()
    controller.reconcile(store)
    # the domain vanishes without the controller seeing it terminate
    cd = domain(store)
    cd["metadata"]["finalizers"] = []
    store.update(cd)
    store.delete(RES_COMPUTE_DOMAINS, "imex-domain", "default")
    controller.reconcile(store)
    with pytest.raises(NotFound):
        template(store)


def test_without_the_crd_there_is_nothing_to_do():
    store = EmbeddedStore()
    rv = store.resource_version
    ComputeDomainController().reconcile(store)
    assert store.resource_version == rv


def test_status_ready_once_num_nodes_have_joined(store):
    cd = add_domain(store, num_nodes=1)
    controller = ComputeDomainController()
    controller.reconcile(store)
    assert domain(store)["status"] == {"status": "NotReady"}

    store.create(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "gb200-node-1", "labels": {"nvidia.com/gpu.clique": CLIQUE}},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.11"}]},
        }
    )
    pod = store.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "worker", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }
    )
    claim = store.create(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": "worker-channel", "namespace": "default"},
            "spec": template(store)["spec"]["spec"],
        }
    )
    claim["status"] = {
        "allocation": {
            "devices": {
                "results": [
                    {
                        "request": "channel",
                        "driver": "compute-domain.nvidia.com",
                        "pool": "gb200-node-1",
                        "device": "channel-0",
                    }
                ],
                "config": [
                    {
                        "source": "FromClaim",
                        "requests": ["channel"],
                        "opaque": claim["spec"]["devices"]["config"][0]["opaque"],
                    }
                ],
            }
        },
        "reservedFor": [{"resource": "pods", "name": "worker", "uid": pod["metadata"]["uid"]}],
    }
    store.update_status(claim)
    controller.reconcile(store)
    assert domain(store)["status"] == {"status": "NotReady"}  # reserved, but the pod is not on a node yet

    store.bind("default", "worker", "gb200-node-1")
    controller.reconcile(store)
    assert domain(store)["status"] == {
        "status": "Ready",
        "nodes": [
            {
                "name": "gb200-node-1",
                "ipAddress": "192.0.2.11",
                "cliqueID": CLIQUE,
                "index": 0,
                "status": "Ready",
            }
        ],
    }
    assert cd["metadata"]["uid"] == claim["spec"]["devices"]["config"][0]["opaque"]["parameters"]["domainID"]

    store.delete(RES_PODS, "worker", "default")
    store.delete(RES_CLAIMS, "worker-channel", "default")
    controller.reconcile(store)
    assert domain(store)["status"] == {"status": "NotReady"}


def test_a_failing_write_is_logged_once_and_does_not_stop_other_domains(store, monkeypatch, caplog):
    add_domain(store, name="a-first", template="broken")
    add_domain(store, name="b-second", template="fine")
    real_create = store.create

    def create(obj):
        if obj["metadata"].get("name") == "broken":
            raise Invalid('ResourceClaimTemplate "broken": refused by a test')
        return real_create(obj)

    monkeypatch.setattr(store, "create", create)
    controller = ComputeDomainController()
    with caplog.at_level(logging.WARNING, logger="kai.nvidia.computedomain"):
        controller.reconcile(store)
        controller.reconcile(store)
    assert template(store, "fine")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        'ComputeDomain default/a-first: ResourceClaimTemplate "broken": refused by a test '
        '(retried every round)'
    ]
