"""The binder honours the whole of KAI's BindRequest spec (:mod:`kai_binder.contract`): what it cannot
carry out fails the request naming the field, before anything is written; the pod annotations KAI's
binder writes arrive with the binding itself, in the same API call."""

from __future__ import annotations

import json

import pytest

from kai_binder.contract import (
    NUMA_PLACEMENT_ANNOTATION,
    RECEIVED_RESOURCE_TYPE_ANNOTATION,
    numa_placement,
    pod_annotations,
    unsupported,
)
from kai_core.api.resources import RES_BIND_REQUESTS


def decided(r, pod: str = "p", **spec) -> dict:
    """The scheduler's BindRequest for ``pod``, with ``spec`` fields set as KAI's scheduler might."""
    r.schedule()
    br = r.the_br(pod)
    br["spec"].update(spec)
    return r.store.update(br)


def writes_for(r, pod: str) -> list[tuple]:
    return [w for w in r.faulty.log if w[1] in ("Pod", "pods") and w[3] == pod]


def test_a_fraction_fails_naming_the_field_and_nothing_is_written(rig):
    r = rig(pods=[rig.pod("p")], backoff_limit=3)
    decided(r, receivedResourceType="Fraction", receivedGPU={"count": 1, "portion": "0.50"},
            selectedGPUGroups=["8f6b7a"])
    result = r.bind()
    assert result.failed == 1
    br = r.the_br("p")
    assert br["status"]["phase"] == "Failed"
    assert "spec.receivedResourceType: Fraction (GPU sharing) is not supported by this binder" in \
        br["status"]["reason"]
    assert br["status"]["failedAttempts"] == 3  # no retry can help: the scheduler decides again
    assert not r.node_of("p")
    assert writes_for(r, "p") == []
    assert r.binder.next_due() is None


@pytest.mark.parametrize("kind", ["Regular", "MigInstance", ""])
def test_types_that_need_only_the_annotation_are_bound_with_it(rig, kind):
    r = rig(pods=[rig.pod("p")])
    decided(r, receivedResourceType=kind)
    assert r.bind().succeeded == 1
    pod = r.get_pod("p")
    assert pod["spec"]["nodeName"] == "n1"
    assert pod["metadata"]["annotations"][RECEIVED_RESOURCE_TYPE_ANNOTATION] == kind
    assert NUMA_PLACEMENT_ANNOTATION not in pod["metadata"]["annotations"]
    # one write for the pod, the binding: the annotations cost no call of their own
    assert writes_for(r, "p") == [("bind", "Pod", "default", "p")]


def test_the_predicted_numa_placement_is_written_as_kais_binder_writes_it(rig):
    r = rig(pods=[rig.pod("p")])
    r.add({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "keep", "namespace": "default",
                                                            "annotations": {"mine": "stays"}},
           "spec": {"schedulerName": "kai-scheduler",
                    "containers": [{"name": "c", "image": "busybox:1", "resources": {"requests": {"cpu": "1"}}}]}})
    zones = [{"zone": "1", "amount": {"nvidia.com/gpu": 2, "memory": "2048Mi", "cpu": "4000m"}},
             {"zone": "0", "amount": {"cpu": "500m"}}]
    r.schedule()
    for name in ("p", "keep"):
        br = r.the_br(name)
        br["spec"]["predictedNUMAZones"] = zones
        r.store.update(br)
    assert r.bind().succeeded == 2
    for name in ("p", "keep"):
        annotations = r.get_pod(name)["metadata"]["annotations"]
        # Go's json.Marshal of []NUMAZonePlacement: struct order, sorted map keys, canonical quantities
        assert annotations[NUMA_PLACEMENT_ANNOTATION] == (
            '[{"zone":"1","amount":{"cpu":"4","memory":"2Gi","nvidia.com/gpu":"2"}},'
            '{"zone":"0","amount":{"cpu":"500m"}}]')
        assert annotations[RECEIVED_RESOURCE_TYPE_ANNOTATION] == "Regular"
    assert r.get_pod("keep")["metadata"]["annotations"]["mine"] == "stays"  # merged, not replaced


def test_an_annotation_the_pod_already_has_is_overwritten_as_a_merge_patch_would(rig):
    r = rig(pods=[])
    r.add({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "default",
                        "annotations": {RECEIVED_RESOURCE_TYPE_ANNOTATION: "Fraction"}},
           "spec": {"schedulerName": "kai-scheduler",
                    "containers": [{"name": "c", "image": "busybox:1", "resources": {"requests": {"cpu": "1"}}}]}})
    decided(r)
    assert r.bind().succeeded == 1
    assert r.get_pod("p")["metadata"]["annotations"][RECEIVED_RESOURCE_TYPE_ANNOTATION] == "Regular"


def test_a_binding_refused_leaves_no_annotation(rig):
    r = rig(pods=[rig.pod("p")])
    r.faulty.refuse_binds = True
    decided(r, predictedNUMAZones=[{"zone": "0", "amount": {"cpu": "1"}}])
    assert r.bind().failed == 1
    assert not (r.get_pod("p")["metadata"].get("annotations") or {})


def test_unsupported_names_each_field():
    assert unsupported({"podName": "p", "selectedNode": "n"}) is None
    assert unsupported({"receivedResourceType": "MigInstance"}) is None
    assert unsupported({"receivedResourceType": "Fraction"}).startswith("spec.receivedResourceType: Fraction")
    assert unsupported({"receivedResourceType": "Shared"}) == (
        "spec.receivedResourceType: 'Shared' is not supported by this binder (it carries out '', 'Regular', "
        "'MigInstance')")


def test_pod_annotations_always_carry_the_received_type():
    assert pod_annotations({}) == {RECEIVED_RESOURCE_TYPE_ANNOTATION: ""}
    assert pod_annotations({"receivedResourceType": "Regular", "predictedNUMAZones": []}) == {
        RECEIVED_RESOURCE_TYPE_ANNOTATION: "Regular"}
    placed = json.loads(numa_placement([{"zone": "0", "amount": {"cpu": "1.5"}}]))
    assert placed == [{"zone": "0", "amount": {"cpu": "1500m"}}]


def test_the_binder_reads_bind_requests_by_spec_pod_name_not_by_name(rig):
    """KAI names a BindRequest after its pod, the seed's form is ``<pod>-<random>``: neither binder
    nor scheduler depends on the form (KAI's keys by ``spec.podName`` too)."""
    r = rig(pods=[rig.pod("p"), rig.pod("q")])
    r.schedule()
    for pod, name in (("p", "p"), ("q", "not-the-pods-name")):
        br = r.the_br(pod)
        r.store.delete(RES_BIND_REQUESTS, br["metadata"]["name"], "default")
        md = {k: v for k, v in br["metadata"].items() if k in ("namespace", "labels", "ownerReferences")}
        r.store.create({**br, "metadata": {**md, "name": name}})
    r.settle()
    assert (r.node_of("p"), r.node_of("q")) == ("n1", "n1")
    assert sorted(b["metadata"]["name"] for b in r.brs()) == ["not-the-pods-name", "p"]
    assert r.scheduler.run_cycle().scheduled == 0  # each pod's request counted, none decided twice
