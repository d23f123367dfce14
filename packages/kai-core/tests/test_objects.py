"""Object helpers: copies, selectors (string and LabelSelector forms), merge patch, messages."""

from __future__ import annotations

import pytest

from kai_core.api.errors import BadRequest
from kai_core.api.objects import (
    clone,
    describe,
    get_path,
    label_selector_matches,
    parse_field_selector,
    parse_label_selector,
    random_suffix,
    ref,
)
from kai_core.apiserver.store import merge_patch


def test_clone_is_deep_and_keeps_values():
    obj = {"a": [1, {"b": "c"}], "d": {"e": None, "f": True, "g": 1.5}}
    copy = clone(obj)
    assert copy == obj
    copy["a"][1]["b"] = "changed"
    copy["d"]["e"] = 1
    assert obj == {"a": [1, {"b": "c"}], "d": {"e": None, "f": True, "g": 1.5}}


def test_random_suffix_uses_the_kubernetes_alphabet():
    for _ in range(50):
        s = random_suffix()
        assert len(s) == 5 and set(s) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert len(random_suffix(10)) == 10


def test_ref_and_describe():
    pod = {"kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}}
    node = {"kind": "Node", "metadata": {"name": "n"}}
    assert ref(pod) == "ns/p" and ref(node) == "n"
    assert describe(pod) == "Pod ns/p" and describe({}) == "object <unnamed>"


def test_get_path():
    obj = {"spec": {"nodeName": "n1", "list": [1]}, "status": None}
    assert get_path(obj, "spec.nodeName") == "n1"
    assert get_path(obj, "spec.missing") is None
    assert get_path(obj, "status.phase") is None
    assert get_path(obj, "spec.list.x") is None


LABELS = {"app": "web", "tier": "front", "example.com/gpu": "a100", "empty": ""}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("app=web", True),
        ("app = web", True),
        ("app==web", True),
        ("app=db", False),
        ("app!=db", True),
        ("missing!=x", True),
        ("app in (web,db)", True),
        ("app in (db)", False),
        ("missing in (x)", False),
        ("app notin (db)", True),
        ("missing notin (x)", True),
        ("app notin (web)", False),
        ("tier", True),
        ("missing", False),
        ("!missing", True),
        ("!tier", False),
        ("example.com/gpu=a100", True),
        ("empty=", True),
        ("app=web, tier=front, !missing", True),
        ("app=web,tier=back", False),
        ("", True),
        (None, True),
    ],
)
def test_label_selector_strings(selector, matches):
    assert parse_label_selector(selector)(LABELS) is matches


@pytest.mark.parametrize("bad", ["app=web,", "app in web", "=web", "a=b c", ",", "app in (a"])
def test_label_selector_syntax_errors_are_400(bad):
    with pytest.raises(BadRequest, match="unable to parse label selector") as err:
        parse_label_selector(bad)
    assert err.value.code == 400


def test_a_label_selector_must_be_a_string():
    with pytest.raises(BadRequest):
        parse_label_selector({"app": "web"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ({}, True),
        ({"matchLabels": {"app": "web"}}, True),
        ({"matchLabels": {"app": "db"}}, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, False),
        ({"matchExpressions": [{"key": "missing", "operator": "NotIn", "values": ["x"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "Gt", "values": ["1"]}]}, False),
        ({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "x", "operator": "Exists"}]}, False),
    ],
)
def test_label_selector_objects(selector, matches):
    assert label_selector_matches(selector, LABELS) is matches


def test_a_null_label_selector_matches_nothing():
    assert label_selector_matches(None, LABELS) is False


POD = {
    "metadata": {"name": "p", "namespace": "ns"},
    "spec": {"nodeName": "n1", "hostNetwork": False},
    "status": {"phase": "Running"},
}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("spec.nodeName=n1", True),
        ("spec.nodeName==n1", True),
        ("spec.nodeName!=n1", False),
        ("status.phase=Running,metadata.namespace=ns", True),
        ("status.podIP=", True),
        ("spec.hostNetwork=false", True),
        ("metadata.name=q", False),
    ],
)
def test_field_selectors(selector, matches):
    assert parse_field_selector(selector)(POD) is matches


def test_field_selectors_limited_to_supported_fields():
    pred = parse_field_selector("spec.nodeName=n1", allowed=["metadata.name", "spec.nodeName"])
    assert pred(POD)
    with pytest.raises(BadRequest, match='field label not supported: "status.phase"'):
        parse_field_selector("status.phase=Running", allowed=["metadata.name"])


@pytest.mark.parametrize("bad", ["spec.nodeName", "a=b,,c=d", "spec nodeName=x"])
def test_field_selector_syntax_errors_are_400(bad):
    with pytest.raises(BadRequest):
        parse_field_selector(bad)


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_json_merge_patch_follows_rfc_7386(target, patch, result):
    before = clone(target)
    assert merge_patch(target, patch) == result
    assert target == before  # a new value, the target untouched
