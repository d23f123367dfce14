"""The demo cluster shipped with the plugin, and NVIDIA's own demo specs, in the embedded cluster with
the plugin found through its entry point."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kai_core.api.resources import (
    RES_CLAIM_TEMPLATES,
    RES_CLAIMS,
    RES_DEVICE_CLASSES,
    RES_NODES,
    RES_PODS,
    RES_SLICES,
)
from kai_core.apiserver.manifests import read_manifests
from kai_core.cluster import EmbeddedCluster
from kai_core.dra.inventory import DraInventory
from kai_core.plugins import build_plugin_manager
from kai_dra_nvidia import demo_manifests_path
from kai_dra_nvidia.computedomain import RES_COMPUTE_DOMAINS

UPSTREAM = Path(__file__).resolve().parents[3].parent / "shared" / "upstream"
SEED_DOMAIN_UID = "83479f70-e292-43d6-aa67-dd4ba8adab8f"
NODES = [f"gb200-node-{i}" for i in range(1, 5)]


def upstream_file(name: str) -> Path:
    path = UPSTREAM / name
    if not path.is_file():
        pytest.skip(f"{path} not found: NVIDIA's upstream data is only in the project's workspace")
    return path


def new_cluster() -> EmbeddedCluster:
    pm = build_plugin_manager()
    assert pm.has_plugin("dra-nvidia"), (
        "the kai_scheduler.plugins entry point of kai-dra-nvidia was not found"
    )
    return EmbeddedCluster(pm)


@pytest.fixture
def demo() -> EmbeddedCluster:
    cluster = new_cluster()
    cluster.load(demo_manifests_path())
    return cluster


def names(cluster, resource) -> list[str]:
    return [o["metadata"]["name"] for o in cluster.store.list(resource)[0]]


def test_demo_is_a_directory_of_manifests():
    path = demo_manifests_path()
    assert path.is_dir()
    kinds = sorted({m.obj["kind"] for m in read_manifests(path)})
    assert kinds == ["ComputeDomain", "DeviceClass", "Node", "Pod", "ResourceSlice"]


def test_demo_loads_and_validates(demo):
    assert names(demo, RES_NODES) == NODES
    assert names(demo, RES_DEVICE_CLASSES) == [
        "compute-domain-daemon.nvidia.com",
        "compute-domain-default-channel.nvidia.com",
        "gpu.nvidia.com",
        "mig.nvidia.com",
    ]
    assert len(names(demo, RES_SLICES)) == 8
    assert names(demo, RES_COMPUTE_DOMAINS) == ["imex-domain"]
    pod = demo.store.get(RES_PODS, "gpu-imex-pod", "default")
    assert pod["spec"]["schedulerName"] == "kai-scheduler"
    ctr = pod["spec"]["containers"][0]
    assert ctr["image"] == "ubuntu:22.04"
    assert ctr["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert ctr["resources"]["claims"] == [{"name": "imex-channel-0"}]
    assert pod["spec"]["resourceClaims"] == [
        {"name": "imex-channel-0", "resourceClaimTemplateName": "imex-channel-0"}
    ]


def test_demo_nodes_are_gb200s_in_two_cliques(demo):
    cliques: dict[str, list[str]] = {}
    for node in demo.store.list(RES_NODES)[0]:
        status = node["status"]
        assert (
            status["allocatable"]
            == status["capacity"]
            == {"cpu": "72", "memory": "480Gi", "nvidia.com/gpu": "4", "pods": "110"}
        )
        assert {"type": "Ready", "status": "True"}.items() <= status["conditions"][0].items()
        cliques.setdefault(node["metadata"]["labels"]["nvidia.com/gpu.clique"], []).append(
            node["metadata"]["name"]
        )
    assert sorted(cliques.values()) == [NODES[:2], NODES[2:]]
    for clique in cliques:
        cluster_uuid, _, clique_id = clique.rpartition(".")
        assert len(cluster_uuid) == 36 and clique_id.isdigit()


def test_demo_slices_are_shaped_as_the_driver_publishes_them(demo):
    slices = demo.store.list(RES_SLICES)[0]
    inventory = DraInventory(slices, demo.store.list(RES_DEVICE_CLASSES)[0])
    assert inventory.problems == []
    for node in demo.store.list(RES_NODES)[0]:
        name = node["metadata"]["name"]
        devices = sorted((d.id.driver, d.id.pool, d.id.device) for d in inventory.devices_for_node(node))
        assert devices == [
            ("compute-domain.nvidia.com", name, "channel-0"),
            ("compute-domain.nvidia.com", name, "daemon-0"),
        ] + [("gpu.nvidia.com", name, f"gpu-{i}") for i in range(4)]
    for s in slices:
        spec = s["spec"]
        assert spec["pool"] == {"name": spec["nodeName"], "generation": 1, "resourceSliceCount": 1}
        if spec["driver"] == "compute-domain.nvidia.com":
            assert spec["devices"] == [
                {"name": "channel-0", "attributes": {"type": {"string": "channel"}, "id": {"int": 0}}},
                {"name": "daemon-0", "attributes": {"type": {"string": "daemon"}, "id": {"int": 0}}},
            ]
            continue
        for gpu in spec["devices"]:
            attrs = gpu["attributes"]
            assert attrs["type"] == {"string": "gpu"} and attrs["uuid"]["string"].startswith("GPU-")
            assert attrs["productName"] == {"string": "NVIDIA GB200"}
            assert attrs["architecture"] == {"string": "Blackwell"}
            assert attrs["cudaComputeCapability"] == {"version": "10.0.0"}
            assert attrs["driverVersion"] == {"version": "570.124.6"}
            assert attrs["cudaDriverVersion"] == {"version": "12.8.0"}
            assert {
                "brand",
                "resource.kubernetes.io/pcieRoot",
                "resource.kubernetes.io/pciBusID",
            } <= attrs.keys()
            assert gpu["capacity"] == {"memory": {"value": "189471Mi"}}
    uuids = [
        g["attributes"]["uuid"]["string"]
        for s in slices
        for g in s["spec"]["devices"]
        if g["name"] != "channel-0" and g["name"] != "daemon-0"
    ]
    assert len(uuids) == len(set(uuids)) == 16


def test_demo_claim_comes_from_the_domains_template(demo):
    demo.reconcile_controllers()  # the ComputeDomain controller creates the template
    demo.reconcile_controllers()  # the resourceclaim controller creates the pod's claim from it
    tmpl = demo.store.get(RES_CLAIM_TEMPLATES, "imex-channel-0", "default")
    assert tmpl["metadata"]["labels"]["resource.nvidia.com/computeDomain"] == SEED_DOMAIN_UID
    pod = demo.store.get(RES_PODS, "gpu-imex-pod", "default")
    [status] = pod["status"]["resourceClaimStatuses"]
    claim = demo.store.get(RES_CLAIMS, status["resourceClaimName"], "default")
    assert claim["spec"]["devices"]["config"][0]["opaque"]["parameters"] == {
        "apiVersion": "resource.nvidia.com/v1beta1",
        "kind": "ComputeDomainChannelConfig",
        "domainID": SEED_DOMAIN_UID,
    }


def test_demo_device_classes_match_nvidias():
    theirs = {
        d["metadata"]["name"]: d
        for d in yaml.safe_load_all(upstream_file("nvidia.deviceclasses.yaml").read_text())
        if d
    }
    for m in read_manifests(demo_manifests_path()):
        if m.obj["kind"] == "DeviceClass":
            name = m.obj["metadata"]["name"]
            assert m.obj["spec"] == theirs[name]["spec"], name


@pytest.mark.parametrize(
    ("demo_file", "mode"),
    [("nvidia.demo.channel-injection.yaml", None), ("nvidia.demo.channel-injection-all.yaml", "All")],
)
def test_nvidias_channel_injection_demo_loads_and_gets_its_template(demo_file, mode):
    cluster = new_cluster()
    cluster.load(upstream_file(demo_file))
    [cd] = cluster.store.list(RES_COMPUTE_DOMAINS)[0]
    cluster.reconcile_controllers()
    cluster.reconcile_controllers()
    name = cd["spec"]["channel"]["resourceClaimTemplate"]["name"]
    ns = cd["metadata"]["namespace"]
    params = cluster.store.get(RES_CLAIM_TEMPLATES, name, ns)["spec"]["spec"]["devices"]["config"][0][
        "opaque"
    ]["parameters"]
    assert params["domainID"] == cd["metadata"]["uid"]
    assert params.get("allocationMode") == mode
    [claim] = cluster.store.list(RES_CLAIMS)[0]  # the demo pod's claim, made from that template
    assert claim["spec"]["devices"]["config"][0]["opaque"]["parameters"] == params


def test_nvbandwidth_demo_domain_loads():
    docs = [
        d
        for d in yaml.safe_load_all(upstream_file("nvidia.demo.nvbandwidth-test-job-1.yaml").read_text())
        if d
    ]
    cluster = new_cluster()
    for doc in docs:
        if doc["kind"] == "ComputeDomain":
            cluster.store.restore(doc)
    cluster.reconcile_controllers()
    [cd] = cluster.store.list(RES_COMPUTE_DOMAINS)[0]
    assert cd["spec"]["numNodes"] == 2
    assert cluster.store.get(
        RES_CLAIM_TEMPLATES,
        cd["spec"]["channel"]["resourceClaimTemplate"]["name"],
        cd["metadata"]["namespace"],
    )
