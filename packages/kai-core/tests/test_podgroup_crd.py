"""Our PodGroup CRD (``scheduling.run.ai/v2alpha2``) against KAI's own
(``../shared/upstream/kai-scheduler.podgroups.crd.yaml``, skipped when absent): PodGroups KAI makes
are accepted by ours, what ours accepts is accepted by KAI's, and both refuse the same mistakes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from kai_core.apiserver.schema import CrdValidator, crd_path, load_crd


@pytest.fixture(scope="module")
def ours() -> CrdValidator:
    return CrdValidator(load_crd(crd_path("podgroups.scheduling.run.ai")))


@pytest.fixture(scope="module")
def kai(upstream_dir: Path) -> CrdValidator:
    path = upstream_dir / "kai-scheduler.podgroups.crd.yaml"
    if not path.is_file():
        pytest.skip(f"KAI's PodGroup CRD not found at {path}")
    return CrdValidator(load_crd(path))


def pg(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
                           "metadata": {"name": "pg-train", "namespace": "team-a"}, "spec": spec or {}}
    if status is not None:
        obj["status"] = status
    return obj


QUANTITIES = {"cpu": "4500m", "memory": 2048, "nvidia.com/gpu": "1.5"}

#: PodGroups as KAI's pod-grouper and controllers write them (minimal to everything set)
KAI_MADE = {
    "minimal": pg({"minMember": 1, "queue": "default-queue"}),
    "job": pg({"minMember": 4, "queue": "team-a", "priorityClassName": "train", "preemptibility": "preemptible",
               "markUnschedulable": True, "schedulingBackoff": 1}),
    "elastic": pg({"minMember": 0, "queue": "inference"}),
    "topology": pg({"minMember": 8, "queue": "q", "topologyConstraint": {
        "topology": "gb200", "requiredTopologyLevel": "nvidia.com/gpu.clique", "preferredTopologyLevel": "rack"}}),
    "subgroups": pg({"minSubGroup": 2, "queue": "q", "subGroups": [
        {"name": "leaders", "minMember": 1},
        {"name": "workers", "minMember": 4, "parent": "leaders",
         "topologyConstraint": {"topology": "t", "requiredTopologyLevel": "rack"}},
        {"name": "nested", "minSubGroup": 1}]}),
    "timings": pg({"minMember": 2, "preemptionDelay": "5m", "stalenessGracePeriod": "-1s"}),
    "status": pg({"minMember": 2}, {
        "conditions": [{"type": "Unschedulable", "status": "True", "reason": "NotEnoughResources",
                        "message": "x", "lastTransitionTime": "2025-04-08T21:55:32Z", "transitionID": "3"}],
        "schedulingConditions": [{
            "type": "UnschedulableOnNodePool", "status": "True", "nodePool": "default", "reason": "OverLimit",
            "message": "queue over limit", "transitionID": "1", "lastTransitionTime": "2025-04-08T21:55:32Z",
            "reasons": [{"reason": "OverLimit", "message": "queue over limit", "details": {"queueDetails": {
                "name": "team-a", "podGroupRequestedResources": QUANTITIES,
                "podGroupRequestedNonPreemptibleResources": QUANTITIES, "queueAllocatedResources": QUANTITIES,
                "queueAllocatedNonPreemptibleResources": QUANTITIES, "queueDeservedResources": QUANTITIES,
                "queueRequestedResources": QUANTITIES, "queueResourceLimits": QUANTITIES}}}]}],
        "resourcesStatus": {"allocated": QUANTITIES, "allocatedNonPreemptible": {"cpu": 0},
                            "requested": QUANTITIES}}),
}

#: mistakes, with the field both CRDs name
REFUSED = {
    "negative-min-member": (pg({"minMember": -1}), "spec.minMember"),
    "min-member-not-a-number": (pg({"minMember": "4"}), "spec.minMember"),
    "min-member-too-large": (pg({"minMember": 2**31}), "spec.minMember"),
    "bad-preemptibility": (pg({"preemptibility": "sometimes"}), "spec.preemptibility"),
    "subgroup-without-name": (pg({"subGroups": [{"minMember": 1}]}), "spec.subGroups[0]"),
    "subgroup-name-not-a-dns-label": (pg({"subGroups": [{"name": "Workers"}]}), "spec.subGroups[0].name"),
    "unknown-field": (pg({"minMembers": 2}), "spec"),
    "bad-quantity": (pg({}, {"resourcesStatus": {"allocated": {"cpu": "lots"}}}), "status.resourcesStatus"),
    "bad-time": (pg({}, {"conditions": [{"lastTransitionTime": "yesterday"}]}), "status.conditions[0]"),
}


@pytest.mark.parametrize("name", sorted(KAI_MADE))
def test_podgroups_kai_makes_are_accepted_by_ours_and_kais(name: str, ours: CrdValidator, kai: CrdValidator):
    obj = KAI_MADE[name]
    assert kai.errors(obj) == [], "the sample itself must be valid for KAI"
    assert ours.errors(obj) == []


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_both_refuse_the_same_mistakes(name: str, ours: CrdValidator, kai: CrdValidator):
    obj, where = REFUSED[name]
    mine = ours.errors(obj)
    assert mine and mine[0].startswith(where), mine
    assert kai.errors(obj), "KAI's CRD accepts it: then ours should too"


def _looser(ours: dict[str, Any], theirs: dict[str, Any], path: str) -> list[str]:
    """Ways schema ``ours`` could accept what ``theirs`` refuses (descriptions ignored)."""
    problems = []
    for key in ("type", "format", "pattern", "enum", "x-kubernetes-int-or-string", "anyOf", "nullable",
                "x-kubernetes-preserve-unknown-fields", "minimum", "maximum", "minLength"):
        if key in theirs and ours.get(key) != theirs[key]:
            problems.append(f"{path}: {key} {ours.get(key)!r} != {theirs[key]!r}")
    if not set(theirs.get("required", [])) <= set(ours.get("required", [])):
        problems.append(f"{path}: required")
    for name, sub in (ours.get("properties") or {}).items():
        if name not in (theirs.get("properties") or {}):
            problems.append(f"{path}.{name}: not in theirs")
        else:
            problems += _looser(sub, theirs["properties"][name], f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(theirs.get(key), dict):
            problems += _looser(ours.get(key) or {}, theirs[key], f"{path}.{key}")
    return problems


def test_ours_accepts_exactly_what_kais_accepts(ours: CrdValidator, kai: CrdValidator):
    """Field by field, neither schema is looser than the other: whatever one accepts, so does the other."""
    assert _looser(ours.schema, kai.schema, "") == []
    assert _looser(kai.schema, ours.schema, "") == []
    assert (ours.group, ours.kind, ours.plural, ours.version, ours.namespaced, ours.has_status,
            ours.short_names) == (kai.group, kai.kind, kai.plural, kai.version, kai.namespaced, kai.has_status,
                                  kai.short_names)


def test_our_crd_names_and_columns(ours: CrdValidator):
    assert ours.api_version == "scheduling.run.ai/v2alpha2" and ours.short_names == ["pg"]
    assert [c["name"] for c in ours.printer_columns] == ["MinMember", "Queue", "Age"]
    obj = copy.deepcopy(KAI_MADE["job"])
    assert ours.apply_defaults(obj) == obj  # no defaults: minMember left unset means "no gang"
