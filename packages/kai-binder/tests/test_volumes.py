"""The binder's volume step on the embedded cluster: the PV the scheduler chose is bound to the
claim before the pod, a claim to provision gets its node and the attempt waits (without holding a
worker) until it is bound, and a failure rolls back what the step wrote and names the claim.

The embedded cluster runs no PV controller nor provisioner: where they would act (create the
provisioned volume and bind the claim to it) the test does it by hand."""

from __future__ import annotations

from kai_binder.volumes import BIND_TIMEOUT_SECONDS, PLUGIN_NAME
from kai_core.api.resources import RES_BIND_REQUESTS, RES_NODES, RES_PVCS, RES_PVS
from kai_core.api.volumes import ANN_BOUND_BY_CONTROLLER, ANN_SELECTED_NODE, ANN_STATIC_BINDINGS

HOST = "kubernetes.io/hostname"


def storage_class(name: str, provisioner: str) -> dict:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": provisioner, "volumeBindingMode": "WaitForFirstConsumer"}


def pv(name: str, node: str, cls: str = "local", claim: dict | None = None) -> dict:
    spec = {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": cls,
            "local": {"path": f"/mnt/{name}"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": HOST, "operator": "In", "values": [node]}]}]}}}
    if claim is not None:
        md = claim["metadata"]
        spec["claimRef"] = {"kind": "PersistentVolumeClaim", "namespace": md["namespace"], "name": md["name"],
                            "uid": md["uid"]}
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name}, "spec": spec,
            "status": {"phase": "Bound" if claim else "Available"}}


def pvc(name: str, cls: str = "local") -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": cls,
                     "resources": {"requests": {"storage": "1Gi"}}}}


def mounting(pod: dict, *claims: str) -> dict:
    pod["spec"]["volumes"] = [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}}
                              for i, c in enumerate(claims)]
    return pod


def volume_rig(rig, *objs: dict, pods: list[dict]):
    r = rig(nodes=("n1", "n2"))
    for name in ("n1", "n2"):  # nodes carry their hostname label, as the kubelet sets it
        node = r.store.get(RES_NODES, name)
        node["metadata"]["labels"] = {HOST: name}
        r.store.update(node)
    for obj in objs:
        r.store.restore(obj)
    r.add(*pods)
    return r


def test_the_chosen_volume_is_bound_to_the_claim_then_the_pod(rig):
    r = volume_rig(rig, storage_class("local", "kubernetes.io/no-provisioner"), pv("disk-2", "n2"), pvc("data"),
                   pods=[mounting(rig.pod("p"), "data")])
    r.schedule()
    assert r.the_br("p")["metadata"]["annotations"][ANN_STATIC_BINDINGS] == '{"data":"disk-2"}'
    r.bind()
    assert r.node_of("p") == "n2"
    claim = r.store.get(RES_PVCS, "data", "default")
    volume = r.store.get(RES_PVS, "disk-2")
    assert claim["spec"]["volumeName"] == "disk-2"
    ref = volume["spec"]["claimRef"]
    assert (ref["namespace"], ref["name"], ref["uid"]) == ("default", "data", claim["metadata"]["uid"])
    assert volume["metadata"]["annotations"][ANN_BOUND_BY_CONTROLLER] == "yes"
    # a second pod of the same claim now follows the bound volume
    r.add(mounting(rig.pod("q"), "data"))
    r.settle()
    assert r.node_of("q") == "n2"


def test_a_claim_to_provision_gets_its_node_and_the_pod_waits_for_the_binding(rig):
    r = volume_rig(rig, storage_class("fast", "csi.example.com"), pvc("data", cls="fast"),
                   pods=[mounting(rig.pod("p"), "data")])
    r.schedule()
    node = r.the_br("p")["spec"]["selectedNode"]
    result = r.bind()
    assert result.deferred == 1 and r.node_of("p") is None
    claim = r.store.get(RES_PVCS, "data", "default")
    assert claim["metadata"]["annotations"][ANN_SELECTED_NODE] == node
    assert (r.the_br("p").get("status") or {}).get("failedAttempts", 0) == 0  # waiting uses no attempt
    # the provisioner and the PV controller (played here) create the volume and bind the claim
    r.store.create(pv("pvc-1", node, cls="fast", claim=claim))
    claim["spec"]["volumeName"] = "pvc-1"
    claim["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] = "yes"
    r.store.update(claim)
    r.clock.advance(60)
    r.bind()
    assert r.node_of("p") == node


def test_a_claim_never_bound_fails_the_attempt_after_the_timeout_and_loses_its_node(rig):
    r = volume_rig(rig, storage_class("fast", "csi.example.com"), pvc("data", cls="fast"),
                   pods=[mounting(rig.pod("p"), "data")])
    r.pm.get_plugin(PLUGIN_NAME).clock = r.clock.now
    r.schedule()
    r.bind()
    assert ANN_SELECTED_NODE in r.store.get(RES_PVCS, "data", "default")["metadata"]["annotations"]
    r.clock.advance(BIND_TIMEOUT_SECONDS + 1)
    r.bind()
    br = r.the_br("p")
    assert br["status"]["phase"] == "Failed"
    assert 'PersistentVolumeClaim "default/data": not bound 600s after' in br["status"]["reason"]
    assert ANN_SELECTED_NODE not in (r.store.get(RES_PVCS, "data", "default")["metadata"].get("annotations") or {})
    assert r.node_of("p") is None


def test_a_failure_rolls_back_the_volumes_bound_and_names_the_claim(rig):
    r = volume_rig(rig, storage_class("local", "kubernetes.io/no-provisioner"), pv("a-disk", "n1"),
                   pv("b-disk", "n1"), pvc("a"), pvc("b"), pods=[mounting(rig.pod("p"), "a", "b")])
    r.schedule()
    assert r.the_br("p")["metadata"]["annotations"][ANN_STATIC_BINDINGS] == '{"a":"a-disk","b":"b-disk"}'
    # before the binder gets there, someone else's claim takes b's volume
    other = r.store.create(pvc("other"))
    taken = r.store.get(RES_PVS, "b-disk")
    taken["spec"]["claimRef"] = {"kind": "PersistentVolumeClaim", "namespace": "default", "name": "other",
                                 "uid": other["metadata"]["uid"]}
    r.store.update(taken)
    r.bind()
    br = r.store.get(RES_BIND_REQUESTS, r.the_br("p")["metadata"]["name"], "default")
    assert br["status"]["phase"] == "Failed"
    assert br["status"]["reason"] == ('PersistentVolumeClaim "default/b": PersistentVolume "b-disk" chosen for it '
                                      'is taken by claim "default/other"')
    first = r.store.get(RES_PVS, "a-disk")
    assert "claimRef" not in first["spec"]
    assert ANN_BOUND_BY_CONTROLLER not in (first["metadata"].get("annotations") or {})
    assert not r.store.get(RES_PVCS, "a", "default")["spec"].get("volumeName")
    assert r.store.get(RES_PVS, "b-disk")["spec"]["claimRef"]["name"] == "other"  # not ours: left alone
    assert r.node_of("p") is None


def test_a_missing_claim_fails_the_attempt_with_its_name(rig):
    r = volume_rig(rig, storage_class("local", "kubernetes.io/no-provisioner"), pv("disk", "n1"), pvc("data"),
                   pods=[mounting(rig.pod("p"), "data")])
    r.schedule()
    r.store.delete(RES_PVCS, "data", "default")
    r.bind()
    assert r.the_br("p")["status"]["reason"] == 'PersistentVolumeClaim "default/data" not found'
    assert "claimRef" not in r.store.get(RES_PVS, "disk")["spec"]
