"""The user's own scenario (shared/seed/dra.md): a pod asking for one GPU and an IMEX channel of a
ComputeDomain is scheduled, its BindRequest matches the seed's, and the binder carries it out."""

from __future__ import annotations

import re

import pytest
import yaml

from kai_core.api.resources import RES_BIND_REQUESTS, RES_CLAIMS, RES_PODS
from kai_core.apiserver.schema import CrdValidator, load_crd

CD_RESOURCE = "computedomains.resource.nvidia.com"


def seed_bind_request(shared_dir) -> dict:
    text = (shared_dir / "seed" / "dra.md").read_text()
    block = re.search(r"(apiVersion: scheduling\.run\.ai/v1alpha2.*?)```", text, re.S).group(1)
    return yaml.safe_load(block)


def _only(items):
    assert len(items) == 1, items
    return items[0]


def test_seed_bind_request_reproduced(scenario, demo_path, shared_dir, upstream_dir):
    sc = scenario(demo_path)
    summary = sc.run()
    assert summary.bound == 1 and summary.pending == 0

    pod = sc.get(RES_PODS, "gpu-imex-pod")
    br = _only(sc.list(RES_BIND_REQUESTS))
    cd = _only(sc.list(CD_RESOURCE))
    node = pod["spec"]["nodeName"]
    assert node and br["spec"]["selectedNode"] == node

    want = seed_bind_request(shared_dir)
    text = yaml.safe_dump(want).replace("NODE_NAME", node)
    text = text.replace("83479f70-e292-43d6-aa67-dd4ba8adab8f", cd["metadata"]["uid"])
    want = yaml.safe_load(text)

    assert br["apiVersion"] == want["apiVersion"] and br["kind"] == want["kind"]
    assert br["spec"] == want["spec"]
    assert br["status"] == want["status"] == {"phase": "Succeeded"}
    md = br["metadata"]
    assert md["labels"] == want["metadata"]["labels"]
    assert md["namespace"] == "default"
    assert re.fullmatch(r"gpu-imex-pod-[a-z0-9]{10}", md["name"])
    assert md["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": "gpu-imex-pod",
                                      "uid": pod["metadata"]["uid"]}]

    # the binder wrote the claim: allocated as the BindRequest says, reserved for the pod, protected
    claim_name = pod["status"]["resourceClaimStatuses"][0]["resourceClaimName"]
    assert claim_name.startswith("gpu-imex-pod-imex-channel-0-")
    claim = sc.get(RES_CLAIMS, claim_name)
    assert claim["status"]["allocation"] == br["spec"]["resourceClaimAllocations"][0]["allocation"]
    assert claim["status"]["reservedFor"] == [{"resource": "pods", "name": "gpu-imex-pod",
                                               "uid": pod["metadata"]["uid"]}]
    assert "resource.kubernetes.io/delete-protection" in claim["metadata"]["finalizers"]

    # what we wrote is accepted by KAI's own CRD
    kai = CrdValidator(load_crd(upstream_dir / "kai-scheduler.bindrequests.crd.yaml"))
    assert kai.errors(br) == []


def test_dra_gate_off_leaves_pod_pending_with_reason(scenario, demo_path):
    sc = scenario(demo_path, gates="")
    summary = sc.run()
    assert summary.bound == 0 and summary.unschedulable == 1
    pod = sc.get(RES_PODS, "gpu-imex-pod")
    cond = _only([c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"])
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
    assert "DynamicResourceAllocation" in cond["message"]
    assert "--feature-gates=DynamicResourceAllocation=true" in cond["message"]
    assert sc.list(RES_BIND_REQUESTS) == []
    events = [e for e in sc.list("events") if e["involvedObject"]["name"] == "gpu-imex-pod"]
    assert [e["reason"] for e in events] == ["FailedScheduling"]


def test_nvidia_channel_injection_demo_runs_unchanged(scenario, demo_path, upstream_dir, tmp_path):
    # the demo cluster's nodes, slices and classes, without its own pod and ComputeDomain
    infra = tmp_path / "infra.yaml"
    docs = []
    for f in sorted(demo_path.rglob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d and d["kind"] not in ("Pod", "ComputeDomain")]
    infra.write_text(yaml.safe_dump_all(docs))
    sc = scenario(infra, upstream_dir / "nvidia.demo.channel-injection.yaml", scheduler_name="default-scheduler")
    summary = sc.run()
    assert summary.bound == 1
    cd = sc.get(CD_RESOURCE, "imex-channel-injection")
    br = _only(sc.list(RES_BIND_REQUESTS))
    [entry] = br["spec"]["resourceClaimAllocations"]
    assert entry["name"] == "imex-channel-0"
    [config] = entry["allocation"]["devices"]["config"]
    assert config["opaque"]["parameters"]["domainID"] == cd["metadata"]["uid"]
    assert br["status"]["phase"] == "Succeeded"


@pytest.mark.parametrize("missing", ["template"])
def test_missing_claim_template_is_named(scenario, tmp_path, missing):
    (tmp_path / "c.yaml").write_text("""
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {allocatable: {cpu: "4", memory: 8Gi, pods: "10"}}
---
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  schedulerName: kai-scheduler
  containers: [{name: c, image: busybox:1, resources: {claims: [{name: gpu}]}}]
  resourceClaims: [{name: gpu, resourceClaimTemplateName: no-such-template}]
""")
    sc = scenario(tmp_path)
    sc.run()
    pod = sc.get(RES_PODS, "p")
    [cond] = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert 'ResourceClaimTemplate "default/no-such-template" not found' in cond["message"]
