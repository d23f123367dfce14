"""``kai-cli get computedomains`` shows where a ComputeDomain runs once its pods are bound: the
embedded ComputeDomain controller fills ``status.status`` and ``status.nodes`` as NVIDIA's does, on
the demo's GB200 nodes (two NVLink cliques of two nodes)."""

from __future__ import annotations

import shutil

import yaml
from click.testing import CliRunner

from kai_cli.main import cli

DRA = "--feature-gates=DynamicResourceAllocation=true"
CLUSTER_UUID = "4c6e2f58-1d0a-4f5e-9b7b-2f3c1a9d8e71"


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def domain(name: str, num_nodes: int) -> dict:
    return {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "ComputeDomain",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"numNodes": num_nodes, "channel": {"resourceClaimTemplate": {"name": f"{name}-channel"}}}}


def worker(name: str, domain_name: str) -> dict:
    """A pod with all 4 GPUs of a node (device plugin) and the IMEX channel of ``domain_name``."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"schedulerName": "kai-scheduler",
                     "containers": [{"name": "c", "image": "busybox:1",
                                     "resources": {"limits": {"nvidia.com/gpu": "4"},
                                                   "claims": [{"name": "channel"}]}}],
                     "resourceClaims": [{"name": "channel", "resourceClaimTemplateName": f"{domain_name}-channel"}]}}


def run_and_save(tmp_path, demo_path) -> tuple:
    """The demo's nodes, slices and classes, a 2-node domain that fits a clique and a 3-node one that
    fits none; ``kai-cli run scheduler --until-idle --save``; returns (result, saved state path)."""
    cluster = tmp_path / "cluster"
    cluster.mkdir()
    for name in ("00-deviceclasses.yaml", "10-nodes.yaml", "20-resourceslices.yaml"):
        shutil.copy(demo_path / name, cluster / name)
    objs = [domain("pair", 2), worker("pair-0", "pair"), worker("pair-1", "pair"),
            domain("trio", 3), *[worker(f"trio-{i}", "trio") for i in range(3)]]
    (cluster / "30-workloads.yaml").write_text(yaml.safe_dump_all(objs))
    state = tmp_path / "state.yaml"
    result = invoke("run", "scheduler", "--cluster", str(cluster), DRA, "--until-idle", "--save", str(state))
    return result, state


def test_get_computedomains_shows_status_and_nodes_once_the_pods_are_bound(tmp_path, demo_path):
    result, state = run_and_save(tmp_path, demo_path)
    assert result.exit_code == 0, result.output
    assert "pods bound: 2, pending: 3" in result.output
    assert "fits no single clique" in result.output

    table = invoke("get", "computedomains", "--cluster", str(state))
    assert table.exit_code == 0, table.output
    rows = {line.split()[0]: line.split() for line in table.output.strip().splitlines()}
    assert rows["NAME"][:2] == ["NAME", "STATUS"]
    assert rows["pair"][1] == "Ready"
    assert rows["trio"][1] == "NotReady"

    wide = invoke("get", "computedomains", "--cluster", str(state), "-o", "wide")
    rows = {line.split()[0]: line.split() for line in wide.output.strip().splitlines()}
    assert rows["NAME"][:3] == ["NAME", "STATUS", "NODES"]
    assert rows["pair"][2] in ("gb200-node-1,gb200-node-2", "gb200-node-3,gb200-node-4")  # one clique

    pair = yaml.safe_load(invoke("get", "computedomains", "pair", "--cluster", str(state), "-o", "yaml").output)
    status = pair["status"]
    assert status["status"] == "Ready"
    assert [n["name"] for n in status["nodes"]] == rows["pair"][2].split(",")
    [clique] = {n["cliqueID"] for n in status["nodes"]}
    assert clique in (f"{CLUSTER_UUID}.1", f"{CLUSTER_UUID}.2")
    assert sorted(n["index"] for n in status["nodes"]) == [0, 1]
    assert all(n["status"] == "Ready" and n["ipAddress"] for n in status["nodes"])

    trio = yaml.safe_load(invoke("get", "computedomains", "trio", "--cluster", str(state), "-o", "yaml").output)
    assert trio["status"] == {"status": "NotReady"}  # no pod placed, no node joined
