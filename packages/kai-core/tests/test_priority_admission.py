"""The embedded API server's PriorityClass kind and Priority admission plugin: what a user creating
pods and classes sees (the values written into pods, and the refusals, worded as kube-apiserver's).
test/e2e/test_priority_admission.py puts the same requests to a real API server."""

from __future__ import annotations

import pytest

from kai_core.api.errors import AlreadyExists, Forbidden, Invalid
from kai_core.apiserver.manifests import apply_manifests, parse_documents, save_state
from kai_core.apiserver.store import EmbeddedStore

PC = "priorityclasses.scheduling.k8s.io"


@pytest.fixture
def store() -> EmbeddedStore:
    return EmbeddedStore()


def pc(name: str, value: int, **fields) -> dict:
    return {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
            "value": value, **fields}


def pod(name: str = "p", **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox:1"}], **spec}}


def test_the_system_classes_exist_and_cannot_be_deleted(store):
    classes = {o["metadata"]["name"]: o for o in store.list(PC)[0]}
    assert {n: (c["value"], c["preemptionPolicy"]) for n, c in classes.items()} == {
        "system-cluster-critical": (2000000000, "PreemptLowerPriority"),
        "system-node-critical": (2000001000, "PreemptLowerPriority")}
    with pytest.raises(Forbidden, match='"system-node-critical" is forbidden: this is a system priority class '
                                        "and cannot be deleted"):
        store.delete(PC, "system-node-critical")
    with pytest.raises(AlreadyExists):
        store.create(pc("system-cluster-critical", 2000000000))
    assert store.get("pc", "system-cluster-critical")["value"] == 2000000000  # kubectl's short name


def test_a_pods_class_gives_it_priority_and_preemption_policy(store):
    store.create(pc("train", 50))
    store.create(pc("polite", 80, preemptionPolicy="Never"))
    assert store.get(PC, "train")["preemptionPolicy"] == "PreemptLowerPriority"  # defaulted
    spec = store.create(pod("a", priorityClassName="train"))["spec"]
    assert (spec["priority"], spec["preemptionPolicy"]) == (50, "PreemptLowerPriority")
    spec = store.create(pod("b", priorityClassName="polite"))["spec"]
    assert (spec["priority"], spec["preemptionPolicy"]) == (80, "Never")
    spec = store.create(pod("c", priorityClassName="system-node-critical"))["spec"]
    assert spec["priority"] == 2000001000
    # what the class says may also be given, as long as it agrees
    assert store.create(pod("d", priorityClassName="train", priority=50))["spec"]["priority"] == 50


def test_a_pod_without_a_class_gets_the_global_default_or_zero(store):
    spec = store.create(pod("a"))["spec"]
    assert (spec["priority"], spec["preemptionPolicy"]) == (0, "PreemptLowerPriority")
    assert "priorityClassName" not in spec
    store.create(pc("low", 10, globalDefault=True, preemptionPolicy="Never"))
    spec = store.create(pod("b"))["spec"]
    assert (spec["priorityClassName"], spec["priority"], spec["preemptionPolicy"]) == ("low", 10, "Never")
    assert store.get("pods", "a")["spec"]["priority"] == 0  # pods that exist keep theirs


@pytest.mark.parametrize("spec, message", [
    ({"priorityClassName": "nope"}, 'pods "p" is forbidden: no PriorityClass with name nope was found'),
    ({"priorityClassName": "train", "priority": 1000},
     'pods "p" is forbidden: the integer value of priority (1000) must not be provided in pod spec; priority '
     "admission controller computed 50 from the given PriorityClass name"),
    ({"priority": 7}, 'pods "p" is forbidden: the integer value of priority (7) must not be provided in pod spec; '
                      "priority admission controller computed 0 from the given PriorityClass name"),
    ({"priorityClassName": "train", "preemptionPolicy": "Never"},
     'pods "p" is forbidden: the string value of PreemptionPolicy (Never) must not be provided in pod spec; '
     "priority admission controller computed PreemptLowerPriority from the given PriorityClass name"),
])
def test_pods_the_admission_plugin_refuses(store, spec, message):
    store.create(pc("train", 50))
    with pytest.raises(Forbidden) as exc:
        store.create(pod(**spec))
    assert exc.value.message == message and exc.value.code == 403
    assert store.list("pods")[0] == []


def test_a_pods_priority_cannot_change_and_an_update_without_it_keeps_it(store):
    store.create(pc("train", 50))
    p = store.create(pod(priorityClassName="train"))
    del p["spec"]["priority"], p["spec"]["preemptionPolicy"]
    p["metadata"]["labels"] = {"a": "b"}
    updated = store.update(p)
    assert (updated["spec"]["priority"], updated["metadata"]["labels"]) == (50, {"a": "b"})
    with pytest.raises(Invalid, match="pod updates may not change fields"):
        store.patch("pods", "p", "default", {"spec": {"priority": 51}})


@pytest.mark.parametrize("obj, message", [
    (pc("huge", 1_000_000_001),
     "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"),
    (pc("system-mine", 5), "metadata.name: Forbidden: priority class names with 'system-' prefix are reserved "
                           "for system use only. error: system-mine is not a known system priority class"),
    (pc("odd", 5, preemptionPolicy="Sometimes"),
     "preemptionPolicy: Unsupported value: \"Sometimes\": supported values: \"PreemptLowerPriority\", \"Never\""),
    (pc("big", 2**31), "value: must be a 32-bit integer, got 2147483648"),
])
def test_priority_class_validation(store, obj, message):
    with pytest.raises(Invalid) as exc:
        store.create(obj)
    assert exc.value.message == f'PriorityClass.scheduling.k8s.io "{obj["metadata"]["name"]}" is invalid: {message}'


def test_negative_values_are_allowed_and_value_and_policy_are_immutable(store):
    store.create(pc("scavenger", -100))
    with pytest.raises(Invalid, match='"scavenger" is invalid: value: Forbidden: may not be changed in an update'):
        store.patch(PC, "scavenger", None, {"value": -99})
    with pytest.raises(Invalid, match='preemptionPolicy: Invalid value: "Never": field is immutable'):
        store.patch(PC, "scavenger", None, {"preemptionPolicy": "Never"})
    assert store.patch(PC, "scavenger", None, {"description": "best effort"})["description"] == "best effort"


def test_only_one_class_may_be_the_global_default(store):
    store.create(pc("a", 1, globalDefault=True))
    store.create(pc("b", 2))
    refused = 'is forbidden: PriorityClass a is already marked as default. Only one default can exist'
    with pytest.raises(Forbidden, match=f'"c" {refused}'):
        store.create(pc("c", 3, globalDefault=True))
    with pytest.raises(Forbidden, match=f'"b" {refused}'):
        store.patch(PC, "b", None, {"globalDefault": True})
    assert store.patch(PC, "a", None, {"description": "the default"})["globalDefault"] is True
    store.delete(PC, "a")
    assert store.patch(PC, "b", None, {"globalDefault": True})["globalDefault"] is True


def test_manifests_apply_classes_before_the_pods_that_name_them(store, tmp_path):
    text = """
apiVersion: v1
kind: Pod
metadata: {name: trainer}
spec:
  priorityClassName: train
  containers: [{name: c, image: busybox:1}]
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: train}
value: 50
"""
    apply_manifests(store, parse_documents(text, "m.yaml"))
    assert store.get("pods", "trainer", "default")["spec"]["priority"] == 50
    with pytest.raises(Exception, match="no PriorityClass with name build was found"):
        apply_manifests(store, parse_documents(text.replace("trainer", "builder").replace(
            "priorityClassName: train", "priorityClassName: build"), "n.yaml"))
    # a saved state loads back: classes first, pods keep their priority
    save_state(store, tmp_path / "state.yaml")
    again = EmbeddedStore()
    apply_manifests(again, parse_documents((tmp_path / "state.yaml").read_text(), "state.yaml"))
    assert again.get("pods", "trainer", "default")["spec"]["priority"] == 50


def test_a_restored_pod_keeps_a_priority_it_carries_without_a_class(store):
    # saved states and fixtures of pods given a priority by some other cluster
    restored = store.restore(pod("old", priority=42, nodeName="n1"))
    assert restored["spec"]["priority"] == 42
