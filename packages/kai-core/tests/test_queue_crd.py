"""Our Queue CRD (``scheduling.run.ai/v2``, cluster-scoped) against KAI's own
(``../shared/upstream/kai-scheduler.queues.crd.yaml``, skipped when absent): Queues KAI's chart and
queue controller write are accepted by ours, what ours accepts is accepted by KAI's, and both refuse
the same mistakes. Only the printer columns may differ (ours add some)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from kai_core.apiserver.schema import CrdValidator, crd_path, load_crd


@pytest.fixture(scope="module")
def ours() -> CrdValidator:
    return CrdValidator(load_crd(crd_path("queues.scheduling.run.ai")))


@pytest.fixture(scope="module")
def kai(upstream_dir: Path) -> CrdValidator:
    path = upstream_dir / "kai-scheduler.queues.crd.yaml"
    if not path.is_file():
        pytest.skip(f"KAI's Queue CRD not found at {path}")
    return CrdValidator(load_crd(path))


def queue(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None,
          name: str = "team-a") -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "scheduling.run.ai/v2", "kind": "Queue",
                           "metadata": {"name": name}, "spec": spec or {}}
    if status is not None:
        obj["status"] = status
    return obj


UNLIMITED = {"quota": -1, "overQuotaWeight": 1, "limit": -1}
USAGE = {"cpu": "4500m", "memory": "2Gi", "nvidia.com/gpu": "1.5", "pods": 3}

#: Queues as KAI's chart, its documentation and its queue controller write them
KAI_MADE = {
    "empty": queue(),
    # KAI's Helm chart: default-parent-queue, and default-queue under it
    "chart-parent": queue({"resources": {"gpu": UNLIMITED, "cpu": UNLIMITED, "memory": UNLIMITED}},
                          name="default-parent-queue"),
    "chart-default": queue({"parentQueue": "default-parent-queue", "resources": {
        r: {"quota": 0, "overQuotaWeight": 1, "limit": -1} for r in ("gpu", "cpu", "memory")}},
        name="default-queue"),
    "docs-hierarchical": queue({"displayName": "ML Team", "parentQueue": "research-team", "priority": 200,
                                "resources": {"cpu": {"quota": 500, "overQuotaWeight": 2},
                                              "gpu": {"quota": 1, "overQuotaWeight": 1}}}),
    "fractions": queue({"resources": {"gpu": {"quota": 0.5, "overQuotaWeight": 2.5, "limit": 1.75},
                                      "memory": {"quota": 4096, "limit": 8192}}}),
    "min-runtimes": queue({"preemptMinRuntime": "10m", "reclaimMinRuntime": "1h30m", "priority": -5}),
    "status": queue({"resources": {"gpu": {"quota": 2}}}, {
        "childQueues": ["a", "b"], "allocated": USAGE, "allocatedNonPreemptible": {"cpu": 0},
        "requested": USAGE,
        "conditions": [{"type": "OverQuota", "status": "False", "reason": "UnderQuota", "message": "x",
                        "lastProbeTime": "2025-04-08T21:55:32Z",
                        "lastTransitionTime": "2025-04-08T21:55:32Z"}]}),
}

#: mistakes, with the field both CRDs name
REFUSED = {
    "quota-not-a-number": (queue({"resources": {"gpu": {"quota": "2"}}}), "spec.resources.gpu.quota"),
    "weight-not-a-number": (queue({"resources": {"cpu": {"overQuotaWeight": True}}}),
                            "spec.resources.cpu.overQuotaWeight"),
    "priority-not-an-integer": (queue({"priority": 1.5}), "spec.priority"),
    "parent-not-a-string": (queue({"parentQueue": 3}), "spec.parentQueue"),
    "resources-not-an-object": (queue({"resources": [1]}), "spec.resources"),
    "bad-quantity": (queue({}, {"allocated": {"cpu": "lots"}}), "status.allocated"),
    "children-not-strings": (queue({}, {"childQueues": [1]}), "status.childQueues[0]"),
    "condition-without-status": (queue({}, {"conditions": [{"type": "OverQuota"}]}), "status.conditions[0]"),
    "bad-time": (queue({}, {"conditions": [{"type": "OverQuota", "status": "True",
                                            "lastTransitionTime": "yesterday"}]}), "status.conditions[0]"),
}


CASES = {**{name: (obj, None) for name, obj in KAI_MADE.items()}, **REFUSED}


@pytest.mark.parametrize("name", sorted(CASES))
def test_ours_and_kais_agree_on(name: str, ours: CrdValidator, kai: CrdValidator):
    """KAI-made queues are accepted by both; each mistake is refused by both, ours naming the field."""
    obj, where = CASES[name]
    mine, theirs = ours.errors(obj), kai.errors(obj)
    if where is None:
        assert (mine, theirs) == ([], [])
    else:
        assert theirs, "KAI's CRD accepts it: then ours should too"
        assert mine and mine[0].startswith(where), mine


def _differences(ours: dict[str, Any], theirs: dict[str, Any], path: str) -> list[str]:
    """Where schema ``ours`` checks a field differently from ``theirs`` (descriptions ignored)."""
    problems = []
    for key in ("type", "format", "pattern", "enum", "x-kubernetes-int-or-string", "anyOf", "nullable",
                "x-kubernetes-preserve-unknown-fields", "minimum", "maximum", "minLength", "required"):
        if ours.get(key) != theirs.get(key) and not (key == "required" and
                                                    set(ours.get(key, [])) == set(theirs.get(key, []))):
            problems.append(f"{path}: {key} {ours.get(key)!r} != {theirs.get(key)!r}")
    mine, other = ours.get("properties") or {}, theirs.get("properties") or {}
    problems += [f"{path}.{n}: only in one of them" for n in sorted(set(mine) ^ set(other))]
    for name in sorted(set(mine) & set(other)):
        problems += _differences(mine[name], other[name], f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(theirs.get(key), dict) or isinstance(ours.get(key), dict):
            problems += _differences(ours.get(key) or {}, theirs.get(key) or {}, f"{path}.{key}")
    return problems


def test_ours_accepts_exactly_what_kais_accepts(ours: CrdValidator, kai: CrdValidator):
    """Field by field the two schemas check the same things: whatever one accepts, so does the other."""
    assert _differences(ours.schema, kai.schema, "") == []
    assert (ours.group, ours.kind, ours.plural, ours.versions, ours.namespaced, ours.has_status,
            ours.short_names) == (kai.group, kai.kind, kai.plural, kai.versions, kai.namespaced, kai.has_status,
                                  kai.short_names)


def test_our_columns_start_with_kais(ours: CrdValidator, kai: CrdValidator):
    mine = [(c["name"], c["jsonPath"]) for c in ours.printer_columns]
    theirs = [(c["name"], c["jsonPath"]) for c in kai.printer_columns]
    assert mine[:len(theirs)] == theirs
    assert [name for name, _ in mine[len(theirs):]] == ["GPU-Quota", "GPU-Limit", "Age"]


def test_no_defaults_are_written(ours: CrdValidator):
    """Unset fields keep KAI's meaning (priority 100, quota/weight/limit 0): nothing is filled in."""
    obj = copy.deepcopy(KAI_MADE["docs-hierarchical"])
    assert ours.api_version == "scheduling.run.ai/v2" and not ours.namespaced
    assert ours.apply_defaults(obj) == obj
