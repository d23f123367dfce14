"""kube-scheduler's VolumeBinding as kai honours it, through the cycle on the embedded cluster:
bound claims follow their PersistentVolume's node affinity, WaitForFirstConsumer claims a static PV
that fits or their class's allowedTopologies, and a pod with a missing or unbound Immediate claim
stays pending with kube-scheduler's message. The embedded cluster has no PV controller: where one
would mark a PV Available or bind a claim, the test writes that state itself."""

from __future__ import annotations

import json

import pytest

from kai_core.api.errors import Invalid
from kai_core.api.resources import RES_NODES, RES_PVCS, RES_PVS, RES_STORAGE_CLASSES
from kai_core.api.volumes import ANN_STATIC_BINDINGS
from kai_core.scheduler.cycle import Scheduler, SchedulerConfig

ZONE = "topology.kubernetes.io/zone"


def storage_class(name: str, mode: str = "WaitForFirstConsumer", provisioner: str = "csi.example.com",
                  zones: list[str] | None = None) -> dict:
    sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
          "provisioner": provisioner, "volumeBindingMode": mode}
    if zones:
        sc["allowedTopologies"] = [{"matchLabelExpressions": [{"key": ZONE, "values": zones}]}]
    return sc


def pv(name: str, size: str = "10Gi", cls: str = "local", zone: str | None = None, node: str | None = None,
       phase: str = "Available", claim: dict | None = None) -> dict:
    spec: dict = {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "storageClassName": cls,
                  "hostPath": {"path": f"/data/{name}"}}
    key, value = (ZONE, zone) if zone else ("kubernetes.io/hostname", node)
    if value:
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": key, "operator": "In", "values": [value]}]}]}}
    if claim:
        spec["claimRef"] = {"kind": "PersistentVolumeClaim", "namespace": "default",
                            "name": claim["metadata"]["name"], "uid": claim["metadata"].get("uid", "")}
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name}, "spec": spec,
            "status": {"phase": phase}}


def pvc(name: str, size: str = "5Gi", cls: str | None = "local", volume: str | None = None, **meta) -> dict:
    spec: dict = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if cls is not None:
        spec["storageClassName"] = cls
    if volume:
        spec["volumeName"] = volume
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "default", **meta}, "spec": spec}


def mounting(pod: dict, *claims: str) -> dict:
    pod["spec"]["volumes"] = [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}}
                              for i, c in enumerate(claims)]
    return pod


def zoned(world, name: str, zone: str) -> dict:
    return world.node(name, labels={ZONE: zone, "kubernetes.io/hostname": name})


def test_a_bound_claim_takes_the_pod_to_its_volume_zone(world):
    claim = pvc("data", volume="pv-b")
    w = world(zoned(world, "n1", "a"), zoned(world, "n2", "b"), storage_class("local"), claim,
              mounting(world.pod("p"), "data"))
    stored = w.store.get(RES_PVCS, "data", "default")
    w.add(pv("pv-b", zone="b", phase="Bound", claim=stored))
    w.cycle()
    assert w.placed() == {"p": "n2"}  # binpack alone would take n1


def test_a_bound_claim_whose_volume_fits_no_node_gives_the_conflict_message(world):
    w = world(zoned(world, "n1", "a"), storage_class("local"), pvc("data", volume="pv-c"),
              mounting(world.pod("p"), "data"))
    w.add(pv("pv-c", zone="c", phase="Bound", claim=w.store.get(RES_PVCS, "data", "default")))
    w.cycle()
    assert w.placed() == {}
    assert w.message("p") == "0/1 nodes are available: 1 node(s) had volume node affinity conflict."


def test_a_claim_bound_to_a_missing_volume(world):
    claim = pvc("data", volume="gone", annotations={"pv.kubernetes.io/bind-completed": "yes"})
    w = world(zoned(world, "n1", "a"), storage_class("local"), claim, mounting(world.pod("p"), "data"))
    w.cycle()
    assert w.message("p") == ("0/1 nodes are available: 1 node(s) unavailable due to one or more pvc(s) bound to "
                              "non-existent pv(s).")


def test_wait_for_first_consumer_takes_a_node_with_a_static_volume_that_fits(world):
    w = world(zoned(world, "n1", "a"), zoned(world, "n2", "b"),
              storage_class("local", provisioner="kubernetes.io/no-provisioner"),
              pv("small", "1Gi", node="n1"), pv("big", "100Gi", node="n2"), pv("right", "20Gi", node="n2"),
              pvc("data", "5Gi"), mounting(world.pod("p"), "data"))
    w.cycle()
    assert w.placed() == {"p": "n2"}  # n1's volume is too small
    (br,) = w.bind_requests()
    # the smallest volume of the node that fits goes to the binder
    assert json.loads(br["metadata"]["annotations"][ANN_STATIC_BINDINGS]) == {"data": "right"}


def test_static_volumes_are_matched_by_class_access_modes_phase_and_selector(world):
    other_class = pv("other", node="n1", cls="fast")
    released = pv("released", node="n1", phase="Released")
    rwx_only = pv("rwx", node="n1")
    rwx_only["spec"]["accessModes"] = ["ReadWriteMany"]
    unlabelled = pv("nolabel", node="n1")
    good = pv("good", node="n2")
    good["metadata"]["labels"] = {"tier": "gold"}
    claim = pvc("data")
    claim["spec"]["selector"] = {"matchLabels": {"tier": "gold"}}
    w = world(zoned(world, "n1", "a"), zoned(world, "n2", "a"),
              storage_class("local", provisioner="kubernetes.io/no-provisioner"),
              other_class, released, rwx_only, unlabelled, good, claim, mounting(world.pod("p"), "data"))
    w.cycle()
    assert w.placed() == {"p": "n2"}


def test_two_claims_do_not_get_one_volume_in_a_cycle(world):
    w = world(zoned(world, "n1", "a"), storage_class("local", provisioner="kubernetes.io/no-provisioner"),
              pv("only", node="n1"), pvc("d1"), pvc("d2"),
              mounting(world.pod("p1"), "d1"), mounting(world.pod("p2"), "d2"))
    w.cycle()
    assert list(w.placed()) in (["p1"], ["p2"])
    waiting = "p2" if "p1" in w.placed() else "p1"
    assert w.message(waiting) == "0/1 nodes are available: 1 node(s) didn't find available persistent volumes to bind."
    w.cycle()  # the other's BindRequest is still in flight: its volume stays promised
    assert len(w.placed()) == 1


GANG = {"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
        "metadata": {"name": "g", "namespace": "default"}, "spec": {"minMember": 2}}


def test_members_of_a_gang_are_not_offered_one_volume(world):
    members = [mounting(world.pod(f"m{i}", meta={"annotations": {"pod-group-name": "g"}}), f"d{i}") for i in (1, 2)]
    w = world(GANG, zoned(world, "n1", "a"), storage_class("local", provisioner="kubernetes.io/no-provisioner"),
              pv("only", node="n1"), pvc("d1"), pvc("d2"), *members)
    w.cycle()
    assert w.placed() == {}  # one volume for two members: the gang waits whole
    w.add(pv("second", node="n1"))
    w.cycle()
    assert w.placed() == {"m1": "n1", "m2": "n1"}
    volumes = [json.loads(br["metadata"]["annotations"][ANN_STATIC_BINDINGS]) for br in w.bind_requests()]
    assert sorted(v for b in volumes for v in b.values()) == ["only", "second"]


def test_no_static_volume_and_no_provisioner(world):
    w = world(zoned(world, "n1", "a"), storage_class("local", provisioner="kubernetes.io/no-provisioner"),
              pvc("data"), mounting(world.pod("p"), "data"))
    w.cycle()
    assert w.message("p") == "0/1 nodes are available: 1 node(s) didn't find available persistent volumes to bind."


def test_dynamic_provisioning_follows_allowed_topologies(world):
    w = world(zoned(world, "n1", "a"), zoned(world, "n2", "b"), zoned(world, "n3", "c"),
              storage_class("zonal", zones=["c"]), pvc("data", cls="zonal"), mounting(world.pod("p"), "data"))
    w.cycle()
    assert w.placed() == {"p": "n3"}
    assert ANN_STATIC_BINDINGS not in (w.bind_requests()[0]["metadata"].get("annotations") or {})


def test_a_claim_given_a_node_fits_only_that_node(world):
    claim = pvc("data", cls="zonal", annotations={"volume.kubernetes.io/selected-node": "n2"})
    w = world(zoned(world, "n1", "a"), zoned(world, "n2", "a"), storage_class("zonal"), claim,
              mounting(world.pod("p"), "data"))
    w.cycle()
    assert w.placed() == {"p": "n2"}


def test_an_unbound_immediate_claim_keeps_the_pod_pending(world):
    w = world(zoned(world, "n1", "a"), storage_class("now", mode="Immediate"), pvc("data", cls="now"),
              mounting(world.pod("p"), "data"))
    w.cycle()
    assert w.placed() == {}
    # kube-scheduler's words for a PreFilter's rejection: every node, none counted
    assert w.message("p") == "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."
    # the PV controller (played here) binds it: the pod goes
    claim = w.store.get(RES_PVCS, "data", "default")
    w.add(pv("pv1", cls="now", zone="a", phase="Bound", claim=claim))
    claim["spec"]["volumeName"] = "pv1"
    claim["metadata"].setdefault("annotations", {})["pv.kubernetes.io/bind-completed"] = "yes"
    w.store.update(claim)
    w.cycle()
    assert w.placed() == {"p": "n1"}


def test_a_claim_without_a_class_object_is_immediate(world):
    w = world(zoned(world, "n1", "a"), pvc("data", cls="nowhere"), mounting(world.pod("p"), "data"))
    w.cycle()
    assert w.message("p") == "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."


def test_a_missing_claim(world):
    w = world(zoned(world, "n1", "a"), zoned(world, "n2", "b"), mounting(world.pod("p"), "nope"))
    w.cycle()
    assert w.message("p") == '0/2 nodes are available: persistentvolumeclaim "nope" not found.'


def test_a_generic_ephemeral_volume_waits_for_its_claim(world):
    pod = world.pod("p")
    pod["spec"]["volumes"] = [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {
        "accessModes": ["ReadWriteOnce"], "storageClassName": "zonal",
        "resources": {"requests": {"storage": "1Gi"}}}}}}]
    w = world(zoned(world, "n1", "a"), zoned(world, "n2", "b"), storage_class("zonal", zones=["b"]), pod)
    w.cycle()
    assert w.message("p") == ('0/2 nodes are available: waiting for ephemeral volume controller to create the '
                              'persistentvolumeclaim "p-scratch".')
    stored = w.get_pod("p")
    foreign = pvc("p-scratch", "1Gi", cls="zonal")
    w.add(foreign)
    w.cycle()
    assert w.message("p") == ("0/2 nodes are available: PVC default/p-scratch was not created for pod default/p "
                              "(pod is not owner).")
    owned = w.store.get(RES_PVCS, "p-scratch", "default")
    owned["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": "p",
                                             "uid": stored["metadata"]["uid"], "controller": True}]
    w.store.update(owned)
    w.cycle()
    assert w.placed() == {"p": "n2"}


def test_pods_without_claims_do_not_look_at_volumes(world):
    w = world(zoned(world, "n1", "a"), world.pod("p"))
    w.cycle()
    assert w.placed() == {"p": "n1"}


def test_the_scheduler_watches_volumes_only_with_the_plugin(world):
    assert {RES_PVS, RES_PVCS, RES_STORAGE_CLASSES} <= set(world().scheduler.cache.resources)
    w = world()
    w.pm.unregister(name="kai-core.volume-binding")
    w.pm.unregister(name="kai-core.volume-zone")
    without = Scheduler(w.store, w.pm, SchedulerConfig())
    assert not {RES_PVS, RES_PVCS, RES_STORAGE_CLASSES} & set(without.cache.resources)


@pytest.mark.parametrize(("obj", "problem"), [
    (pvc("x", size="0"), "spec.resources[storage]: Invalid value"),
    ({**pvc("x"), "spec": {"resources": {"requests": {"storage": "1Gi"}}}}, "spec.accessModes: Required value"),
    ({**pv("x"), "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}},
     "spec: Required value: must specify a volume type"),
    (storage_class("x", mode="Later"), "volumeBindingMode: Unsupported value"),
    ({**storage_class("x"), "provisioner": ""}, "provisioner: Required value"),
])
def test_the_api_server_refuses_malformed_volume_objects(world, obj, problem):
    w = world()
    with pytest.raises(Invalid, match=problem.replace("[", r"\[").replace("]", r"\]")):
        w.store.create(obj)


def test_a_claim_spec_is_immutable_but_may_be_bound(world):
    w = world(pvc("x"))
    claim = w.store.get(RES_PVCS, "x", "default")
    claim["spec"]["volumeName"] = "pv1"
    w.store.update(claim)
    claim = w.store.get(RES_PVCS, "x", "default")
    claim["spec"]["storageClassName"] = "other"
    with pytest.raises(Invalid, match="spec is immutable after creation"):
        w.store.update(claim)


# -- VolumeZone ---------------------------------------------------------------------------------

def zone_labelled(volume: dict, **labels: str) -> dict:
    volume["metadata"]["labels"] = labels
    del volume["spec"]["nodeAffinity"]  # the zone comes from the labels alone
    return volume


def test_a_bound_volume_labelled_with_zones_admits_nodes_of_those_zones(world):
    w = world(zoned(world, "n1", "a"), zoned(world, "n2", "b"), zoned(world, "n3", "c"), storage_class("local"),
              pvc("data", volume="pv1"), mounting(world.pod("p"), "data"))
    claim = w.store.get(RES_PVCS, "data", "default")
    w.add(zone_labelled(pv("pv1", zone="x", phase="Bound", claim=claim), **{ZONE: "b__c"}))
    w.cycle()
    assert w.placed()["p"] in ("n2", "n3")


def test_a_volume_zone_no_node_is_in_gives_volume_zones_message(world):
    w = world(zoned(world, "n1", "a"), storage_class("local"), pvc("data", volume="pv1"),
              mounting(world.pod("p"), "data"))
    claim = w.store.get(RES_PVCS, "data", "default")
    beta = "failure-domain.beta.kubernetes.io/zone"  # a beta label on the volume matches the node's GA one
    w.add(zone_labelled(pv("pv1", zone="x", phase="Bound", claim=claim), **{beta: "z"}))
    w.cycle()
    assert w.message("p") == "0/1 nodes are available: 1 node(s) had no available volume zone."
    node = w.store.get(RES_NODES, "n1")
    node["metadata"]["labels"][ZONE] = "z"
    w.store.update(node)
    w.cycle()
    assert w.placed() == {"p": "n1"}


def test_a_node_without_zone_labels_admits_any_volume_zone(world):
    w = world(world.node("plain"), storage_class("local"), pvc("data", volume="pv1"), mounting(world.pod("p"), "data"))
    claim = w.store.get(RES_PVCS, "data", "default")
    w.add(zone_labelled(pv("pv1", zone="x", phase="Bound", claim=claim), **{ZONE: "z"}))
    w.cycle()
    assert w.placed() == {"p": "plain"}
