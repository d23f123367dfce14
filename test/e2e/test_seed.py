"""The seed's scenario (shared/seed/dra.md) on the real control plane, under the chart's RBAC:
kai's scheduler and binder as two processes with their ServiceAccounts' tokens, the real
resourceclaim controller making the pods' claims from templates, the test playing NVIDIA's
compute-domain-controller (it creates the channel's ResourceClaimTemplate), and the real API
server's validation of everything kai writes."""

from __future__ import annotations

import copy
import re

import yaml

SEED_DOMAIN_UID = "83479f70-e292-43d6-aa67-dd4ba8adab8f"
CD = ("resource.nvidia.com/v1beta1", "ComputeDomain")


def seed_bind_request(shared_dir, node: str, domain_uid: str) -> dict:
    """The seed's BindRequest with this run's node and ComputeDomain uid. The chart sets no
    --backoff-limit, so none is written, as in the seed's (KAI's own scheduler leaves it unset)."""
    text = (shared_dir / "seed" / "dra.md").read_text()
    text = re.search(r"(apiVersion: scheduling\.run\.ai/v1alpha2.*?)```", text, re.S).group(1)
    want = yaml.safe_load(text.replace("NODE_NAME", node).replace(SEED_DOMAIN_UID, domain_uid))
    assert "backoffLimit" not in want["spec"]
    return want


def demo_objects(*files: str, namespace: str) -> list[dict]:
    """Objects of kai's embedded demo (kai_dra_nvidia/demo) as a user would write them: in
    ``namespace``, without the uids the demo fixes to reproduce the seed."""
    from kai_dra_nvidia.demo import demo_manifests_path

    out = []
    for f in files:
        for obj in yaml.safe_load_all((demo_manifests_path() / f).read_text()):
            if obj:
                obj["metadata"].pop("uid", None)
                obj["metadata"]["namespace"] = namespace
                out.append(obj)
    return out


def assert_bind_request(br: dict, want: dict, pod: dict) -> None:
    """``br`` is ``want`` field by field; its metadata holds what the seed's shows (the name, the
    labels, the pod as owner) and what the real API server adds to any object, nothing more."""
    assert (br["apiVersion"], br["kind"]) == (want["apiVersion"], want["kind"])
    for key in sorted(set(want["spec"]) | set(br["spec"])):
        assert br["spec"].get(key) == want["spec"].get(key), f"spec.{key}"
    assert br["status"] == want["status"] == {"phase": "Succeeded"}
    md, want_md = br["metadata"], want["metadata"]
    assert set(md) - {"managedFields"} == set(want_md)
    pod_name = pod["metadata"]["name"]
    assert md["labels"] == {**want_md["labels"], "pod-name": pod_name}
    assert md["generation"] == want_md["generation"] == 1  # status writes went to the subresource
    assert md["namespace"] == pod["metadata"]["namespace"]
    assert re.fullmatch(rf"{pod_name}-[a-z0-9]{{10}}", md["name"])
    assert md["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": pod_name,
                                      "uid": pod["metadata"]["uid"]}]


def test_seed_bind_request_under_the_charts_rbac(kube, kai, nodes, namespace, nvidia, shared_dir):
    """The seed's pod (one GPU and the IMEX channel of a ComputeDomain: kai's demo copy of the
    seed's gpu-imex-pod.yaml) and its ComputeDomain, scheduled and bound by kai's two processes,
    each allowed only what the chart gives its ServiceAccount: the BindRequest is the seed's."""
    names = nodes.add_gb200(4)
    kai.start("scheduler")
    kai.start("binder")
    domain, pod = demo_objects("30-computedomain.yaml", "40-gpu-imex-pod.yaml", namespace=namespace)
    domain = kube.create(domain)
    kube.create(pod)
    [template] = nvidia.play_compute_domain_controller(namespace)

    pod, br = kai.wait_bound(namespace, "gpu-imex-pod")
    assert pod["spec"]["nodeName"] in names
    # KAI's binder's pod annotation, sent in the Binding: the real API server merged it into the pod
    assert pod["metadata"]["annotations"]["received-resource-type"] == "Regular"
    assert_bind_request(br, seed_bind_request(shared_dir, pod["spec"]["nodeName"], domain["metadata"]["uid"]), pod)
    [claim] = kai.assert_carried_out(pod, br)
    [config] = claim["status"]["allocation"]["devices"]["config"]
    assert config["opaque"] == template["spec"]["spec"]["devices"]["config"][0]["opaque"]
    kai.assert_clean_stop()


def test_nvidias_channel_injection_demo_runs_unchanged(kube, kai, nodes, namespace, nvidia, shared_dir,
                                                       upstream_dir):
    """NVIDIA's IMEX channel-injection demo, applied as it is (a ComputeDomain and a pod of the
    default scheduler, created together as ``kubectl apply -f`` does, before the channel's template
    exists): kai installed as ``default-scheduler`` (``--set scheduler.schedulerName=...``) binds the
    pod with the domain's channel; the BindRequest is the seed's but for the pod and the GPU (this
    pod asks for none)."""
    nodes.add_gb200(2)
    helm_flags = "--set scheduler.schedulerName=default-scheduler"
    kai.start("scheduler", helm_flags=helm_flags)
    kai.start("binder", helm_flags=helm_flags)
    for obj in yaml.safe_load_all((upstream_dir / "nvidia.demo.channel-injection.yaml").read_text()):
        kube.create(obj, namespace)  # kubectl apply -n <namespace> -f
    nvidia.play_compute_domain_controller(namespace)

    pod, br = kai.wait_bound(namespace, "imex-channel-injection")
    assert pod["spec"]["schedulerName"] == "default-scheduler"
    domain = kube.get(*CD, "imex-channel-injection", namespace)
    want = seed_bind_request(shared_dir, pod["spec"]["nodeName"], domain["metadata"]["uid"])
    want = copy.deepcopy(want)
    want["spec"].update(podName="imex-channel-injection", receivedGPU={"count": 0, "portion": "0.00"})
    assert_bind_request(br, want, pod)
    kai.assert_carried_out(pod, br)
    kai.assert_clean_stop()
