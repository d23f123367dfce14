"""Volume binding on the real control plane: kai's scheduler and binder (processes under the chart's
RBAC) with the real kube-controller-manager's PV binder controller completing the bindings.

- a WaitForFirstConsumer claim with a static local PV of one node: the pod goes to that node, the
  binder writes the PV's claimRef and the claim's volumeName, and the PV controller finishes the
  binding (``bind-completed``, both phases Bound);
- a claim to provision: the binder gives it the pod's node (``volume.kubernetes.io/selected-node``)
  and waits; the test plays the external provisioner (it creates the PV for the claim, as a CSI
  provisioner would), the PV controller binds the claim, and only then is the pod bound;
- an unbound Immediate claim keeps the pod pending with kube-scheduler's message.

No kubelet, no pvc-protection controller: at the end the test removes the protection finalizers
the API server's admission put on its claims and volumes (what those controllers would do once no
pod uses them) so that they can be deleted.
"""

from __future__ import annotations

import re

import pytest

HOST = "kubernetes.io/hostname"
SELECTED_NODE = "volume.kubernetes.io/selected-node"


class Volumes:
    """The test's StorageClasses, PVs and claims; deleted afterwards."""

    def __init__(self, kube, namespace: str):
        self.kube, self.ns = kube, namespace
        self.cluster_objects: list[tuple[str, str, str]] = []

    def storage_class(self, name: str, provisioner: str, mode: str = "WaitForFirstConsumer") -> str:
        name = f"{self.ns}-{name}"
        self.kube.create({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
                          "provisioner": provisioner, "volumeBindingMode": mode})
        self.cluster_objects.append(("storage.k8s.io/v1", "StorageClass", name))
        return name

    def pv(self, name: str, node: str, cls: str, claim: dict | None = None, annotations: dict | None = None) -> dict:
        spec = {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": cls,
                "persistentVolumeReclaimPolicy": "Retain", "local": {"path": f"/mnt/{name}"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": HOST, "operator": "In", "values": [node]}]}]}}}
        if claim is not None:
            md = claim["metadata"]
            spec["claimRef"] = {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": md["namespace"],
                                "name": md["name"], "uid": md["uid"]}
        name = f"{self.ns}-{name}"
        created = self.kube.create({"apiVersion": "v1", "kind": "PersistentVolume",
                                    "metadata": {"name": name, "annotations": annotations or {}}, "spec": spec})
        self.cluster_objects.append(("v1", "PersistentVolume", name))
        return created

    def claim(self, name: str, cls: str) -> dict:
        return self.kube.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                 "metadata": {"name": name, "namespace": self.ns},
                                 "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": cls,
                                          "resources": {"requests": {"storage": "1Gi"}}}})

    def get_claim(self, name: str) -> dict:
        return self.kube.get("v1", "PersistentVolumeClaim", name, self.ns)

    def cleanup(self) -> None:
        for pod in self.kube.list("v1", "Pod", self.ns):
            self.kube.delete("v1", "Pod", pod["metadata"]["name"], self.ns, grace=0)
        objs = [("v1", "PersistentVolumeClaim", c["metadata"]["name"], self.ns)
                for c in self.kube.list("v1", "PersistentVolumeClaim", self.ns)]
        objs += [(v, k, n, "") for v, k, n in self.cluster_objects]
        for api_version, kind, name, ns in objs:
            obj = self.kube.get(api_version, kind, name, ns)
            if obj is not None and obj["metadata"].get("finalizers"):
                path = self.kube.path(api_version, kind, name, ns)
                self.kube.call("PATCH", path, {"metadata": {"finalizers": None}},
                               content_type="application/merge-patch+json")
            self.kube.delete(api_version, kind, name, ns)


@pytest.fixture
def volumes(kube, namespace):
    v = Volumes(kube, namespace)
    yield v
    v.cleanup()


def hosts(nodes, namespace: str, count: int) -> list[str]:
    names = [f"{namespace}-n{i + 1}" for i in range(count)]
    for name in names:
        nodes.add(name, labels={HOST: name})
    return names


def pod_mounting(name: str, namespace: str, claim: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"schedulerName": "kai-scheduler",
                     "containers": [{"name": "c", "image": "busybox:1", "volumeMounts": [
                         {"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}}


def test_a_static_local_volume_takes_the_pod_to_its_node(kube, kai, nodes, namespace, volumes):
    _n1, n2 = hosts(nodes, namespace, 2)
    cls = volumes.storage_class("local", "kubernetes.io/no-provisioner")
    pv = volumes.pv("disk", n2, cls)["metadata"]["name"]
    volumes.claim("data", cls)
    kai.wait_for(lambda: (kube.get("v1", "PersistentVolume", pv).get("status") or {}).get("phase") == "Available",
                 "the PV controller to mark the volume Available")
    kai.start("scheduler")
    kai.start("binder")
    kube.create(pod_mounting("app", namespace, "data"))

    pod, br = kai.wait_bound(namespace, "app")
    assert pod["spec"]["nodeName"] == n2 and br["spec"]["selectedNode"] == n2

    def bound():
        claim = volumes.get_claim("data")
        return claim if (claim.get("status") or {}).get("phase") == "Bound" else None

    claim = kai.wait_for(bound, "the PV controller to complete the binding")
    assert claim["spec"]["volumeName"] == pv
    assert claim["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] == "yes"
    volume = kube.get("v1", "PersistentVolume", pv)
    assert volume["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
    assert volume["status"]["phase"] == "Bound"
    kai.assert_clean_stop()


def test_a_claim_to_provision_gets_the_pods_node_and_the_pod_waits_for_it(kube, kai, nodes, namespace, volumes):
    names = hosts(nodes, namespace, 2)
    cls = volumes.storage_class("fast", "csi.example.com")
    volumes.claim("data", cls)
    kai.start("scheduler")
    kai.start("binder")
    kube.create(pod_mounting("app", namespace, "data"))

    def selected():
        return (volumes.get_claim("data")["metadata"].get("annotations") or {}).get(SELECTED_NODE)

    node = kai.wait_for(selected, "the binder to give the claim a node")
    assert node in names
    assert kube.get("v1", "Pod", "app", namespace)["spec"].get("nodeName") is None  # waits for the volume
    # the external provisioner (played here) creates the volume for the claim on that node
    volumes.pv("provisioned", node, cls, claim=volumes.get_claim("data"),
               annotations={"pv.kubernetes.io/provisioned-by": "csi.example.com"})

    pod, br = kai.wait_bound(namespace, "app")
    assert pod["spec"]["nodeName"] == node == br["spec"]["selectedNode"]
    claim = volumes.get_claim("data")
    assert claim["spec"]["volumeName"] == f"{namespace}-provisioned"
    assert claim["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] == "yes"
    kai.assert_clean_stop()


def test_an_unbound_immediate_claim_keeps_the_pod_pending(kube, kai, nodes, namespace, volumes):
    hosts(nodes, namespace, 1)
    cls = volumes.storage_class("later", "csi.example.com", mode="Immediate")
    volumes.claim("data", cls)
    kai.start("scheduler")
    kube.create(pod_mounting("app", namespace, "data"))

    def reported():
        pod = kube.get("v1", "Pod", "app", namespace)
        return next((c for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] == "PodScheduled"),
                    None)

    cond = kai.wait_for(reported, "the pod to be reported unschedulable")
    assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")
    # kube-scheduler's words for a PreFilter's rejection (other tests' nodes may count too)
    assert re.fullmatch(r"0/\d+ nodes are available: pod has unbound immediate PersistentVolumeClaims\.",
                        cond["message"]), cond["message"]
    assert kube.list("scheduling.run.ai/v1alpha2", "BindRequest", namespace) == []
    kai.assert_clean_stop()
