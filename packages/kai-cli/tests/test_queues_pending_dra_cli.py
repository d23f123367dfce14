"""``kai-cli get queues`` with a pending pod whose DRA claim asks for GPUs: its queue's GPU-REQUESTED
and GPU-FAIR-SHARE include the GPUs of the allocation the pod would get (issue 13)."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from kai_cli.main import cli
from kai_core.dra.testing import GPU, claim, device_class, gpu_slice, request


def cluster_objects() -> list[dict]:
    """A node with 3 DRA GPUs, and team-a's only pod asking for 2 of them and more CPU than the node has."""
    unlimited = {"quota": -1, "overQuotaWeight": 1, "limit": -1}
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "dra-node"},
            "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}
    queue = {"apiVersion": "scheduling.run.ai/v2", "kind": "Queue", "metadata": {"name": "team-a"},
             "spec": {"resources": {"gpu": {"quota": 0, "overQuotaWeight": 1, "limit": -1}, "cpu": unlimited,
                                    "memory": unlimited}}}
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "train", "namespace": "default", "labels": {"kai.scheduler/queue": "team-a"}},
           "spec": {"schedulerName": "kai-scheduler",
                    "containers": [{"name": "c", "image": "busybox:1", "resources": {"requests": {"cpu": "32"}}}],
                    "resourceClaims": [{"name": "gpu", "resourceClaimName": "two"}]}}
    return [node, gpu_slice("dra-node", count=3), device_class("gpu.nvidia.com", f"device.driver == '{GPU}'"),
            queue, claim("two", request("gpu", "gpu.nvidia.com", 2)), pod]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_get_queues_counts_the_gpus_a_pending_pods_claim_would_get(tmp_path):
    cluster, state = tmp_path / "cluster.yaml", tmp_path / "state.yaml"
    cluster.write_text(yaml.safe_dump_all(cluster_objects()))
    run = invoke("run", "scheduler", "--cluster", str(cluster), "--feature-gates", "DynamicResourceAllocation=true",
                 "--until-idle", "--save", str(state))
    assert run.exit_code == 0, run.output
    assert "pod default/train: pending" in run.output
    table = invoke("get", "queues", "--cluster", str(state), "-o", "wide").output.splitlines()
    assert table[0].split()[5:8] == ["GPU-ALLOCATED", "GPU-REQUESTED", "GPU-FAIR-SHARE"]
    assert table[1].split()[:8] == ["team-a", "<none>", "100", "0", "-1", "0", "2", "2"]
