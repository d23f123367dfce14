"""NodeSelector matching on plain dicts, as the Kubernetes scheduler and DRA allocator apply it."""

from __future__ import annotations

import pytest

from kai_core.api.nodeaffinity import (
    NodeSelectorError,
    match_node_selector,
    match_node_selector_term,
    node_selector_for_node,
)


def node(name: str = "n1", **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": dict(labels)}}


def expr(key: str, operator: str, *values: str) -> dict:
    requirement = {"key": key, "operator": operator}
    if values:
        requirement["values"] = list(values)
    return requirement


def field(operator: str, *values: str) -> dict:
    return {"key": "metadata.name", "operator": operator, "values": list(values)}


GPU_NODE = node("gpu-1", zone="a", **{"nvidia.com/gpu.count": "8", "nvidia.com/gpu.product": "A100"})


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        pytest.param({"matchExpressions": [expr("zone", "In", "a", "b")]}, True, id="in"),
        pytest.param({"matchExpressions": [expr("zone", "In", "b")]}, False, id="in-other-value"),
        pytest.param({"matchExpressions": [expr("rack", "In", "r1")]}, False, id="in-missing-label"),
        pytest.param({"matchExpressions": [expr("zone", "NotIn", "b")]}, True, id="notin"),
        pytest.param({"matchExpressions": [expr("zone", "NotIn", "a")]}, False, id="notin-listed"),
        pytest.param({"matchExpressions": [expr("rack", "NotIn", "r1")]}, True, id="notin-missing-label"),
        pytest.param({"matchExpressions": [expr("zone", "Exists")]}, True, id="exists"),
        pytest.param({"matchExpressions": [expr("rack", "Exists")]}, False, id="exists-missing"),
        pytest.param({"matchExpressions": [expr("rack", "DoesNotExist")]}, True, id="doesnotexist"),
        pytest.param({"matchExpressions": [expr("zone", "DoesNotExist")]}, False, id="doesnotexist-present"),
        pytest.param({"matchExpressions": [expr("nvidia.com/gpu.count", "Gt", "4")]}, True, id="gt"),
        pytest.param({"matchExpressions": [expr("nvidia.com/gpu.count", "Gt", "8")]}, False, id="gt-equal"),
        pytest.param({"matchExpressions": [expr("nvidia.com/gpu.count", "Lt", "9")]}, True, id="lt"),
        pytest.param(
            {"matchExpressions": [expr("nvidia.com/gpu.count", "Lt", "-3")]}, False, id="lt-negative"
        ),
        pytest.param({"matchExpressions": [expr("zone", "Gt", "1")]}, False, id="gt-non-int-label"),
        pytest.param({"matchExpressions": [expr("rack", "Lt", "1")]}, False, id="lt-missing-label"),
        pytest.param({"matchFields": [field("In", "gpu-1")]}, True, id="field-in"),
        pytest.param({"matchFields": [field("In", "gpu-2")]}, False, id="field-in-other"),
        pytest.param({"matchFields": [field("NotIn", "gpu-2")]}, True, id="field-notin"),
        pytest.param({"matchFields": [field("NotIn", "gpu-1")]}, False, id="field-notin-self"),
        pytest.param(
            {"matchExpressions": [expr("zone", "In", "a")], "matchFields": [field("In", "gpu-1")]},
            True,
            id="and-both-true",
        ),
        pytest.param(
            {"matchExpressions": [expr("zone", "In", "a"), expr("nvidia.com/gpu.product", "In", "H100")]},
            False,
            id="and-one-false",
        ),
        pytest.param({}, False, id="empty-term-matches-nothing"),
        pytest.param({"matchExpressions": [], "matchFields": []}, False, id="empty-lists-match-nothing"),
    ],
)
def test_term(term: dict, expected: bool) -> None:
    assert match_node_selector_term(term, GPU_NODE) is expected


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        pytest.param(None, True, id="none-admits-every-node"),
        pytest.param({"nodeSelectorTerms": []}, False, id="no-terms-admits-nothing"),
        pytest.param(
            {"nodeSelectorTerms": [{"matchExpressions": [expr("zone", "In", "b")]}]}, False, id="one"
        ),
        pytest.param(
            {
                "nodeSelectorTerms": [
                    {"matchExpressions": [expr("zone", "In", "b")]},
                    {"matchExpressions": [expr("zone", "In", "a")]},
                ]
            },
            True,
            id="terms-are-ored",
        ),
        pytest.param(
            {"nodeSelectorTerms": [{}, {"matchFields": [field("In", "gpu-1")]}]}, True, id="empty+match"
        ),
    ],
)
def test_selector(selector: dict | None, expected: bool) -> None:
    assert match_node_selector(selector, GPU_NODE) is expected


def test_node_without_labels_or_metadata() -> None:
    assert match_node_selector_term({"matchExpressions": [expr("zone", "DoesNotExist")]}, {}) is True
    assert match_node_selector_term({"matchFields": [field("In", "n1")]}, {}) is False


def test_selector_for_node_admits_only_that_node() -> None:
    selector = node_selector_for_node("gpu-1")
    assert selector == {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gpu-1"]}]}
        ]
    }
    assert match_node_selector(selector, GPU_NODE)
    assert not match_node_selector(selector, node("gpu-2"))


@pytest.mark.parametrize(
    ("term", "message"),
    [
        pytest.param({"matchExpressions": [expr("zone", "Equals", "a")]}, "operator 'Equals'", id="operator"),
        pytest.param(
            {"matchExpressions": [expr("zone", "In")]}, "needs at least one value", id="in-no-values"
        ),
        pytest.param(
            {"matchExpressions": [expr("zone", "Exists", "a")]}, "takes no values", id="exists-values"
        ),
        pytest.param({"matchExpressions": [expr("n", "Gt", "x")]}, "exactly one integer", id="gt-not-int"),
        pytest.param({"matchExpressions": [expr("n", "Lt", "1", "2")]}, "exactly one integer", id="lt-two"),
        pytest.param({"matchExpressions": [{"operator": "Exists"}]}, "key is missing", id="no-key"),
        pytest.param(
            {"matchFields": [{"key": "spec.unschedulable", "operator": "In", "values": ["true"]}]},
            "only metadata.name",
            id="unsupported-field",
        ),
        pytest.param({"matchFields": [field("Exists")]}, "operator 'Exists'", id="field-operator"),
        pytest.param({"matchFields": [field("In", "a", "b")]}, "exactly one value", id="field-two-values"),
    ],
)
def test_malformed_requirements_raise_with_location(term: dict, message: str) -> None:
    with pytest.raises(NodeSelectorError, match=message):
        match_node_selector_term(term, GPU_NODE)
    # Through a selector the message also says which term is broken.
    with pytest.raises(NodeSelectorError, match=r"nodeSelectorTerms\[1\]"):
        match_node_selector({"nodeSelectorTerms": [{"matchFields": [field("In", "x")]}, term]}, GPU_NODE)


def test_malformed_requirement_is_reported_even_after_a_mismatch() -> None:
    term = {"matchExpressions": [expr("zone", "In", "b"), expr("zone", "Near", "a")]}
    with pytest.raises(NodeSelectorError, match=r"matchExpressions\[1\]"):
        match_node_selector_term(term, GPU_NODE)
