"""CRD schema validation (kai_core.apiserver.schema) and our BindRequest CRD.

Upstream-data tests read KAI's BindRequest CRD from ../shared/upstream/ and the seed BindRequest from
../shared/seed/dra.md (relative to the project root) and skip when those files are absent.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kai_core.apiserver.schema import (
    CrdValidator,
    SchemaError,
    apply_defaults,
    builtin_crd_paths,
    crd_path,
    crd_to_jsonschema,
    crd_versions,
    load_crd,
)

PROJECT = Path(__file__).resolve().parents[3]
SHARED = PROJECT.parent / "shared"
KAI_BINDREQUEST_CRD = SHARED / "upstream" / "kai-scheduler.bindrequests.crd.yaml"
SEED = SHARED / "seed" / "dra.md"
PACKAGE_CRD = PROJECT / "packages/kai-core/src/kai_core/crds/scheduling.run.ai_bindrequests.yaml"
DEPLOY_CRD = PROJECT / "deploy/crds/scheduling.run.ai_bindrequests.yaml"


# --------------------------------------------------------------------------------------------------
# helpers and fixtures


def make_crd(spec_schema: dict[str, Any], *, status: dict[str, Any] | None = None, **version: Any) -> dict:
    """A minimal namespaced CRD ``widgets.example.com`` whose spec has ``spec_schema``."""
    props: dict[str, Any] = {"spec": spec_schema}
    if status is not None:
        props["status"] = status
    entry = {
        "name": "v1",
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": {"type": "object", "properties": props}},
        **version,
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets"},
            "scope": "Namespaced",
            "versions": [entry],
        },
    }


def widget(spec: Any, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": spec,
        **extra,
    }


def obj_schema(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


def seed_bindrequest() -> dict[str, Any]:
    """The BindRequest example from the seed document (the YAML inside its ```bash block)."""
    if not SEED.is_file():
        pytest.skip(f"seed document not found at {SEED}")
    text = SEED.read_text(encoding="utf-8")
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL):
        if "kind: BindRequest" in block:
            return yaml.safe_load(block[block.index("apiVersion:") :])
    pytest.fail(f"no BindRequest YAML block in {SEED}")


@pytest.fixture(scope="module")
def ours() -> CrdValidator:
    return CrdValidator(load_crd(crd_path("bindrequests.scheduling.run.ai")))


@pytest.fixture(scope="module")
def kai(upstream_dir: Path) -> CrdValidator:
    """KAI's own BindRequest CRD (skips, via the root conftest, when ../shared is absent)."""
    path = upstream_dir / KAI_BINDREQUEST_CRD.name
    if not path.is_file():
        pytest.skip(f"KAI's BindRequest CRD not found at {path}")
    return CrdValidator(load_crd(path))


@pytest.fixture()
def seed() -> dict[str, Any]:
    return seed_bindrequest()


# --------------------------------------------------------------------------------------------------
# validation semantics on small CRDs


def test_type_error_names_field_path_and_problem() -> None:
    v = CrdValidator(make_crd(obj_schema(receivedGPU=obj_schema(count={"type": "integer"}))))
    with pytest.raises(SchemaError) as info:
        v.validate(widget({"receivedGPU": {"count": "x"}}))
    assert str(info.value) == "spec.receivedGPU.count: 'x' is not of type 'integer'"
    assert info.value.errors == ["spec.receivedGPU.count: 'x' is not of type 'integer'"]
    assert info.value.ref == "Widget w"
    assert isinstance(info.value, ValueError)


def test_all_problems_are_reported_sorted_by_path_and_joined() -> None:
    schema = obj_schema(
        b={"type": "string"},
        a={"type": "integer", "minimum": 0},
        items={"type": "array", "items": obj_schema(n={"type": "integer"})},
    )
    schema["required"] = ["c"]
    schema["properties"]["c"] = {"type": "string"}
    v = CrdValidator(make_crd(schema))
    obj = widget({"b": 1, "a": -1, "items": [{"n": 1}] * 2 + [{"n": "x"}] * 9, "zz": 1})
    errors = v.errors(obj)
    assert errors[0] == "spec.a: -1 is less than the minimum of 0"
    assert errors[1] == "spec.b: 1 is not of type 'string'"
    assert errors[2] == "spec.c: required field is missing"
    # list indexes sort numerically: [2] before [10]
    assert errors[3] == "spec.items[2].n: 'x' is not of type 'integer'"
    assert errors[-2] == "spec.items[10].n: 'x' is not of type 'integer'"
    assert errors[-1] == "spec.zz: unknown field"
    with pytest.raises(SchemaError) as info:
        v.validate(obj)
    assert str(info.value) == "; ".join(errors)


def test_unknown_fields_are_refused_where_fields_are_not_preserved() -> None:
    schema = obj_schema(
        known={"type": "string"},
        free={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        freeWithProps={
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {"n": {"type": "integer"}, "inner": obj_schema(a={"type": "string"})},
        },
        empty={"type": "object"},
    )
    v = CrdValidator(make_crd(schema))
    ok = widget({"known": "a", "free": {"any": {"thing": [1]}}, "freeWithProps": {"n": 1, "extra": True}})
    assert v.errors(ok) == []
    assert v.errors(widget({"typo": 1})) == ["spec.typo: unknown field"]
    # a type-checked property inside a preserving object is still checked, and its own unknowns refused
    assert v.errors(widget({"freeWithProps": {"n": "1", "inner": {"b": 1}}})) == [
        "spec.freeWithProps.inner.b: unknown field",
        "spec.freeWithProps.n: '1' is not of type 'integer'",
    ]
    # an object schema with no properties and no preserve flag has no known fields at all
    assert v.errors(widget({"empty": {"x": 1}})) == ["spec.empty.x: unknown field"]
    assert v.errors(widget({}, surprise=1)) == ["surprise: unknown field"]


def test_root_metadata_apiversion_and_kind_are_always_allowed() -> None:
    crd = make_crd(obj_schema())
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert "metadata" not in root["properties"]
    v = CrdValidator(crd)
    obj = widget({}, metadata={"name": "w", "labels": {"a": "b"}, "anything": {"goes": 1}})
    assert v.errors(obj) == []
    # with metadata declared as a bare object (as controller-gen writes it) ObjectMeta fields pass too
    root["properties"]["metadata"] = {"type": "object"}
    assert CrdValidator(crd).errors(obj) == []


def test_apiversion_and_kind_must_name_this_resource() -> None:
    v = CrdValidator(make_crd(obj_schema()))
    assert v.errors(widget({}, apiVersion="example.com/v2", kind="Gadget")) == [
        "apiVersion: 'example.com/v2' does not match 'example.com/v1'",
        "kind: 'Gadget' does not match 'Widget'",
    ]
    assert v.errors({"spec": {}}) == []  # the API server fills them in from the URL


def test_an_object_that_is_not_a_mapping_is_refused_clearly() -> None:
    v = CrdValidator(make_crd(obj_schema()))
    assert v.errors(["a"]) == ["<root>: ['a'] is not of type 'object'"]
    with pytest.raises(SchemaError, match="<root>: 'nope' is not of type 'object'") as info:
        v.validate("nope")
    assert info.value.ref == "Widget <unnamed>"


def test_nullable_allows_null_and_non_nullable_does_not() -> None:
    schema = obj_schema(
        maybe={"type": "string", "nullable": True},
        mode={"type": "string", "nullable": True, "enum": ["A", "B"]},
        never={"type": "string"},
    )
    v = CrdValidator(make_crd(schema))
    assert v.errors(widget({"maybe": None, "mode": None})) == []
    assert v.errors(widget({"never": None})) == ["spec.never: None is not of type 'string'"]
    assert v.errors(widget({"mode": "C"})) == ["spec.mode: 'C' is not one of ['A', 'B', None]"]


def test_int_or_string() -> None:
    quantity = {"x-kubernetes-int-or-string": True, "pattern": "^[0-9]+(Mi|Gi)?$"}
    v = CrdValidator(make_crd(obj_schema(size=quantity, port={"x-kubernetes-int-or-string": True})))
    assert v.errors(widget({"size": 3, "port": "http"})) == []
    assert v.errors(widget({"size": "3Gi", "port": 8080})) == []
    assert v.errors(widget({"size": "lots"})) == ["spec.size: 'lots' does not match '^[0-9]+(Mi|Gi)?$'"]
    assert v.errors(widget({"port": 1.5, "size": True})) == [
        "spec.port: 1.5 is not an integer or a string",
        "spec.size: True is not an integer or a string",
    ]
    converted = crd_to_jsonschema(
        make_crd(obj_schema(p={"x-kubernetes-int-or-string": True}))["spec"]["versions"][0]["schema"][
            "openAPIV3Schema"
        ]
    )
    assert converted["properties"]["spec"]["properties"]["p"]["anyOf"] == [
        {"type": "integer"},
        {"type": "string"},
    ]


def test_int32_and_int64_ranges() -> None:
    v = CrdValidator(
        make_crd(
            obj_schema(a={"type": "integer", "format": "int32"}, b={"type": "integer", "format": "int64"})
        )
    )
    assert v.errors(widget({"a": 2**31 - 1, "b": -(2**63)})) == []
    assert v.errors(widget({"a": 2**31, "b": 2**63})) == [
        "spec.a: 2147483648 is out of range for int32",
        "spec.b: 9223372036854775808 is out of range for int64",
    ]
    assert v.errors(widget({"a": -(2**31) - 1})) == ["spec.a: -2147483649 is out of range for int32"]
    # integers are integers: no floats, no booleans
    assert v.errors(widget({"a": 1.0, "b": True})) == [
        "spec.a: 1.0 is not of type 'integer'",
        "spec.b: True is not of type 'integer'",
    ]


@pytest.mark.parametrize(
    ("prop", "value", "problem"),
    [
        ({"type": "string", "enum": ["Single", "All"]}, "Many", "'Many' is not one of ['Single', 'All']"),
        ({"type": "integer", "minimum": 0}, -1, "-1 is less than the minimum of 0"),
        ({"type": "integer", "maximum": 5}, 6, "6 is greater than the maximum of 5"),
        ({"type": "string", "maxLength": 3}, "abcd", "'abcd' is too long"),
        ({"type": "string", "minLength": 1}, "", "'' should be non-empty"),
        ({"type": "string", "pattern": "^[a-z]+$"}, "aB", "'aB' does not match '^[a-z]+$'"),
        ({"type": "array", "items": {"type": "string"}}, ["a", 1], None),
        ({"type": "array", "maxItems": 1, "items": {"type": "string"}}, ["a", "b"], "['a', 'b'] is too long"),
        ({"type": "boolean"}, "true", "'true' is not of type 'boolean'"),
        ({"type": "string", "format": "date-time"}, "2025-13-01T00:00:00Z", None),
    ],
)
def test_plain_json_schema_keywords(prop: dict[str, Any], value: Any, problem: str | None) -> None:
    v = CrdValidator(make_crd(obj_schema(f=prop)))
    errors = v.errors(widget({"f": value}))
    assert len(errors) == 1, errors
    assert errors[0].startswith("spec.f")
    if problem is not None:
        assert errors[0] == f"spec.f: {problem}"


def test_pattern_dollar_means_end_of_text_as_in_go() -> None:
    v = CrdValidator(make_crd(obj_schema(name={"type": "string", "pattern": "^[a-z]+$"})))
    assert v.errors(widget({"name": "abc"})) == []
    assert v.errors(widget({"name": "abc\n"})) == ["spec.name: 'abc\\n' does not match '^[a-z]+$'"]


def test_date_time_format() -> None:
    v = CrdValidator(make_crd(obj_schema(at={"type": "string", "format": "date-time"})))
    for good in ("2025-04-08T21:55:32Z", "2025-04-08T21:55:32.123456+02:00"):
        assert v.errors(widget({"at": good})) == [], good
    for bad in (
        "yesterday",
        "2025-04-08",
        "2025-02-30T00:00:00Z",
        "2025-04-08T25:00:00Z",
        "2025-04-08T21:55:32Z\n",
    ):
        assert v.errors(widget({"at": bad})) == [f"spec.at: {bad!r} is not an RFC 3339 date-time"]


def test_maps_validate_every_value_and_name_the_key() -> None:
    v = CrdValidator(
        make_crd(obj_schema(limits={"type": "object", "additionalProperties": {"type": "integer"}}))
    )
    assert v.errors(widget({"limits": {"cpu": 1, "nvidia.com/gpu": 2}})) == []
    assert v.errors(widget({"limits": {"nvidia.com/gpu": "2"}})) == [
        "spec.limits[nvidia.com/gpu]: '2' is not of type 'integer'"
    ]


def test_list_types_map_and_set_refuse_duplicates() -> None:
    schema = obj_schema(
        nodes={
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        },
        tags={"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        plain={"type": "array", "x-kubernetes-list-type": "atomic", "items": {"type": "string"}},
    )
    v = CrdValidator(make_crd(schema))
    assert (
        v.errors(widget({"nodes": [{"name": "a"}, {"name": "b"}], "tags": ["x", "y"], "plain": ["z", "z"]}))
        == []
    )
    assert v.errors(widget({"nodes": [{"name": "a"}, {"name": "b"}, {"name": "a"}], "tags": ["x", "x"]})) == [
        "spec.nodes[2]: duplicate entry (name='a')",
        "spec.tags[1]: duplicate entry ('x')",
    ]


def test_cel_rules_are_not_evaluated() -> None:
    schema = obj_schema(n={"type": "integer"})
    schema["x-kubernetes-validations"] = [{"rule": "self.n > 100", "message": "n must be large"}]
    assert CrdValidator(make_crd(schema)).errors(widget({"n": 1})) == []


def test_junctors_and_embedded_resources() -> None:
    schema = obj_schema(
        either={
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
            "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
        },
        template={
            "type": "object",
            "x-kubernetes-embedded-resource": True,
            "properties": {"spec": obj_schema(x={"type": "integer"})},
        },
    )
    v = CrdValidator(make_crd(schema))
    good = {"either": {"a": "1"}, "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}}
    assert v.errors(widget(good)) == []
    errors = v.errors(widget({"either": {"a": "1", "b": "2"}, "template": {"spec": {"y": 1}}}))
    assert errors[0].startswith("spec.either: ")
    assert errors[1] == "spec.template.spec.y: unknown field"


# --------------------------------------------------------------------------------------------------
# defaults


DEFAULTED = obj_schema(
    mode={"type": "string", "default": "Single"},
    count={"type": "integer", "default": 0},
    keep={"type": "string", "nullable": True, "default": "d"},
    gone={"type": "string"},
    channel=obj_schema(
        policy={"type": "string", "default": "Always"},
        nested={"type": "object", "default": {}, "properties": {"depth": {"type": "integer", "default": 2}}},
    ),
    tolerations={"type": "array", "items": obj_schema(operator={"type": "string", "default": "Equal"})},
    pools={"type": "object", "additionalProperties": obj_schema(size={"type": "integer", "default": 1})},
)


def test_defaults_fill_present_parents_only() -> None:
    v = CrdValidator(make_crd(DEFAULTED))
    obj = widget({"tolerations": [{"operator": "Exists"}, {}], "pools": {"a": {}, "b": {"size": 3}}})
    out = v.apply_defaults(obj)
    assert out["spec"] == {
        "mode": "Single",
        "count": 0,
        "keep": "d",
        "tolerations": [{"operator": "Exists"}, {"operator": "Equal"}],
        "pools": {"a": {"size": 1}, "b": {"size": 3}},
    }
    assert "channel" not in out["spec"]  # absent parents are not created
    assert out["metadata"] == {"name": "w"}
    assert v.errors(out) == []


def test_defaults_inside_defaults_and_existing_values_win() -> None:
    v = CrdValidator(make_crd(DEFAULTED))
    out = v.apply_defaults(widget({"mode": "All", "count": 5, "channel": {}}))
    assert out["spec"]["mode"] == "All" and out["spec"]["count"] == 5
    assert out["spec"]["channel"] == {"policy": "Always", "nested": {"depth": 2}}


def test_null_is_defaulted_or_pruned_unless_nullable() -> None:
    v = CrdValidator(make_crd(DEFAULTED))
    out = v.apply_defaults(widget({"mode": None, "keep": None, "gone": None}))
    assert out["spec"]["mode"] == "Single"  # non-nullable null with a default: defaulted
    assert out["spec"]["keep"] is None  # nullable null: kept
    assert "gone" not in out["spec"]  # non-nullable null without a default: pruned
    assert v.errors(out) == []


def test_apply_defaults_returns_a_copy_and_tolerates_bad_shapes() -> None:
    v = CrdValidator(make_crd(DEFAULTED))
    obj = widget({"tolerations": [{}], "channel": "not-an-object", "pools": []})
    before = copy.deepcopy(obj)
    out = v.apply_defaults(obj)
    assert obj == before
    assert out["spec"]["tolerations"] == [{"operator": "Equal"}]
    assert out["spec"]["channel"] == "not-an-object"
    schema = make_crd(DEFAULTED)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert apply_defaults(schema, obj) == out
    assert v.apply_defaults("scalar") == "scalar"


# --------------------------------------------------------------------------------------------------
# loading CRDs


def test_load_crd_accepts_paths_text_bytes_and_mappings(tmp_path: Path) -> None:
    text = yaml.safe_dump(make_crd(obj_schema()))
    path = tmp_path / "widgets.yaml"
    path.write_text("# a comment\n---\n" + text, encoding="utf-8")
    for source in (path, str(path), text, text.encode(), make_crd(obj_schema())):
        crd = load_crd(source)
        assert crd["metadata"]["name"] == "widgets.example.com"


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda c: c.update(kind="Deployment"), "not a CustomResourceDefinition"),
        (lambda c: c.update(apiVersion="apiextensions.k8s.io/v1beta1"), "not a CustomResourceDefinition"),
        (lambda c: c["spec"].pop("group"), "spec.group: required field is missing"),
        (lambda c: c["spec"]["names"].pop("plural"), "spec.names.plural: required field is missing"),
        (lambda c: c["spec"].update(scope="Galaxy"), "spec.scope: 'Galaxy' is not one of"),
        (lambda c: c["spec"].update(versions=[]), "spec.versions: at least one version is required"),
        (
            lambda c: c["spec"]["versions"][0].pop("schema"),
            "spec.versions[0].schema.openAPIV3Schema: required",
        ),
        (lambda c: c["spec"]["versions"][0].update(storage=False), "exactly one version must have storage"),
        (
            lambda c: c["metadata"].update(name="widgets"),
            "metadata.name: 'widgets' must be widgets.example.com",
        ),
    ],
)
def test_load_crd_refuses_what_is_not_a_usable_crd(mutate: Any, problem: str, tmp_path: Path) -> None:
    crd = make_crd(obj_schema())
    mutate(crd)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(crd), encoding="utf-8")
    with pytest.raises(SchemaError, match=re.escape(problem)) as info:
        load_crd(path)
    assert str(path) in str(info.value)
    with pytest.raises(SchemaError, match=re.escape(problem)):
        CrdValidator(crd)


def test_load_crd_reports_unreadable_and_malformed_input(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="missing.yaml: cannot read CRD file"):
        load_crd(tmp_path / "missing.yaml")
    with pytest.raises(SchemaError, match="invalid YAML"):
        load_crd("a: [b\nc: d\n")
    two = yaml.safe_dump(make_crd(obj_schema())) + "---\n" + yaml.safe_dump(make_crd(obj_schema()))
    with pytest.raises(SchemaError, match="expected exactly one YAML document, found 2"):
        load_crd(two)
    with pytest.raises(SchemaError, match="expected a mapping, got list"):
        load_crd("- a\n- b\n")


def test_invalid_openapi_schema_is_reported_with_the_crd_name() -> None:
    with pytest.raises(SchemaError, match=r"CRD widgets.example.com v1: invalid openAPIV3Schema at .*type"):
        CrdValidator(make_crd({"type": 5}))


def test_versions_served_and_storage() -> None:
    crd = make_crd(obj_schema(a={"type": "string"}))
    old = copy.deepcopy(crd["spec"]["versions"][0])
    old.update(name="v0", storage=False)
    gone = copy.deepcopy(old)
    gone.update(name="vgone", served=False)
    crd["spec"]["versions"] += [old, gone]
    assert crd_versions(crd) == ["v1", "v0"]
    assert CrdValidator(crd).version == "v1"
    v0 = CrdValidator(crd, "v0")
    assert (v0.version, v0.api_version, v0.versions) == ("v0", "example.com/v0", ["v1", "v0"])
    assert v0.errors(widget({"a": "x"}, apiVersion="example.com/v0")) == []
    with pytest.raises(SchemaError, match=r"version 'vgone' is not served \(served: v1, v0\)"):
        CrdValidator(crd, "vgone")
    with pytest.raises(SchemaError, match="version 'v9' is not served"):
        CrdValidator(crd, "v9")


# --------------------------------------------------------------------------------------------------
# our BindRequest CRD


def test_bindrequest_crd_names_and_shape(ours: CrdValidator) -> None:
    assert (ours.group, ours.kind, ours.plural, ours.singular) == (
        "scheduling.run.ai",
        "BindRequest",
        "bindrequests",
        "bindrequest",
    )
    assert ours.short_names == ["br"]
    assert ours.namespaced and ours.has_status
    assert ours.versions == ["v1alpha2"] and ours.version == "v1alpha2"
    assert [c["name"] for c in ours.printer_columns] == ["Pod", "Node", "Phase", "Age"]


def test_packaged_crds_are_found_and_load() -> None:
    paths = builtin_crd_paths()
    assert PACKAGE_CRD.resolve() in [p.resolve() for p in paths]
    for path in paths:
        CrdValidator(load_crd(path))
    assert crd_path("bindrequests.scheduling.run.ai") == crd_path("scheduling.run.ai_bindrequests")
    with pytest.raises(FileNotFoundError, match="no CRD 'gadgets.example.com' in kai_core"):
        crd_path("gadgets.example.com")
    assert builtin_crd_paths("json") == []  # a package without a crds folder


@pytest.mark.parametrize("name", ["scheduling.run.ai_bindrequests.yaml", "scheduling.run.ai_podgroups.yaml",
                                  "scheduling.run.ai_queues.yaml"])
def test_deploy_copy_is_identical_to_the_package_copy(name: str) -> None:
    package, deploy = PACKAGE_CRD.parent / name, DEPLOY_CRD.parent / name
    assert deploy.read_bytes() == package.read_bytes(), (
        f"{deploy} drifted from {package}; copy the package file over it"
    )


def test_every_packaged_crd_is_in_deploy() -> None:
    assert sorted(p.name for p in builtin_crd_paths()) == sorted(p.name for p in DEPLOY_CRD.parent.glob("*.yaml"))


def test_seed_bindrequest_is_accepted_by_ours_and_kais(
    ours: CrdValidator, kai: CrdValidator, seed: dict
) -> None:
    assert seed["kind"] == "BindRequest"
    ours.validate(seed)
    kai.validate(seed)
    ours.validate(ours.apply_defaults(seed))


def _allocation(**extra: Any) -> dict[str, Any]:
    result = {"request": "gpu", "driver": "gpu.nvidia.com", "pool": "node-1", "device": "gpu-0", **extra}
    return {
        "devices": {
            "results": [result],
            "config": [
                {
                    "source": "FromClass",
                    "opaque": {"driver": "gpu.nvidia.com", "parameters": {"a": {"b": [1]}}},
                },
                {
                    "source": "FromClaim",
                    "requests": ["gpu"],
                    "opaque": {"driver": "gpu.nvidia.com", "parameters": {}},
                },
            ],
        },
        "nodeSelector": {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-1"]}]},
                {"matchExpressions": [{"key": "nvidia.com/gpu.clique", "operator": "Exists"}]},
            ]
        },
        "allocationTimestamp": "2025-04-08T21:55:32Z",
    }


def _bindrequest(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj = {
        "apiVersion": "scheduling.run.ai/v1alpha2",
        "kind": "BindRequest",
        "metadata": {"name": "pod-a", "namespace": "team-a", "labels": {"selected-node": "node-1"}},
        "spec": {"podName": "pod-a", "selectedNode": "node-1", **spec},
    }
    if status is not None:
        obj["status"] = status
    return obj


ACCEPTED = {
    "minimal": _bindrequest({}),
    "whole-gpus": _bindrequest(
        {"receivedResourceType": "Regular", "receivedGPU": {"count": 2, "portion": "1.00"}}
    ),
    "fraction": _bindrequest(
        {
            "receivedResourceType": "Fraction",
            "receivedGPU": {"count": 1, "portion": "0.50"},
            "selectedGPUGroups": ["8c0b8a2e-0c7e-4a4f-9b1e-8e1f0c0d1a2b"],
        }
    ),
    "no-gpus": _bindrequest({"receivedResourceType": "", "receivedGPU": {"count": 0, "portion": "0.00"}}),
    "dra-full": _bindrequest(
        {
            "resourceClaimAllocations": [
                {
                    "name": "gpu",
                    "allocation": _allocation(
                        adminAccess=False,
                        shareID="3f1f7c42-5b3e-4a8c-9c55-0d9f0a4f9e11",
                        tolerations=[
                            {"key": "gpu.nvidia.com/xid", "operator": "Exists", "effect": "NoSchedule"},
                            {"key": "k", "value": "v", "effect": "NoExecute", "tolerationSeconds": 30},
                        ],
                        bindingConditions=["Attached"],
                        bindingFailureConditions=["AttachFailed"],
                        consumedCapacity={"memory": "40Gi", "cores": 4, "bandwidth": "1.5e3"},
                    ),
                },
                {"name": "shared-claim-already-allocated"},
            ],
            "backoffLimit": 3,
        }
    ),
    "succeeded": _bindrequest({}, {"phase": "Succeeded"}),
    "failed": _bindrequest(
        {"backoffLimit": 2}, {"phase": "Failed", "reason": "node gone", "failedAttempts": 1}
    ),
    "not-yet-attempted": _bindrequest({}, {"phase": "", "failedAttempts": 0}),
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_variants_accepted_by_ours_are_accepted_by_kais(
    name: str, ours: CrdValidator, kai: CrdValidator
) -> None:
    obj = ACCEPTED[name]
    assert ours.errors(obj) == []
    assert kai.errors(obj) == []
    assert ours.apply_defaults(obj) == kai.apply_defaults(obj)
    assert kai.errors(ours.apply_defaults(obj)) == []


def test_defaults_give_tolerations_the_equal_operator(ours: CrdValidator) -> None:
    obj = _bindrequest(
        {"resourceClaimAllocations": [{"name": "gpu", "allocation": _allocation(tolerations=[{"key": "k"}])}]}
    )
    out = ours.apply_defaults(obj)
    toleration = out["spec"]["resourceClaimAllocations"][0]["allocation"]["devices"]["results"][0][
        "tolerations"
    ][0]
    assert toleration == {"key": "k", "operator": "Equal"}


def _with(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``base`` (the dra-full variant) with ``value`` set at the dotted ``path`` (None deletes)."""
    obj = copy.deepcopy(base or ACCEPTED["dra-full"])
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = obj
    for part in parents:
        node = node[part]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return obj


ALLOC = "spec.resourceClaimAllocations.0.allocation"  # where _with() sets it
RA = "spec.resourceClaimAllocations[0].allocation"  # how errors name it
REFUSED = [
    # (object, the error our CRD reports, whether KAI's CRD refuses it too)
    (_with("spec.podSelector", "x"), "spec.podSelector: unknown field", True),
    (_with("spec.receivedGPU", {"count": "x"}), "spec.receivedGPU.count: 'x' is not of type 'integer'", True),
    (_with("spec.backoffLimit", 2**31), "spec.backoffLimit: 2147483648 is out of range for int32", True),
    (
        _with(f"{ALLOC}.devices.results.0.pool", None),
        "spec.resourceClaimAllocations[0].allocation.devices.results[0].pool: required field is missing",
        True,
    ),
    (
        _with(f"{ALLOC}.devices.results.0.gpuIndex", 0),
        "spec.resourceClaimAllocations[0].allocation.devices.results[0].gpuIndex: unknown field",
        True,
    ),
    (
        _with(f"{ALLOC}.devices.config.0.opaque", {"driver": "d"}),
        f"{RA}.devices.config[0].opaque.parameters: required field is missing",
        True,
    ),
    (
        _with(f"{ALLOC}.devices.results.0.consumedCapacity", {"memory": "lots"}),
        f"{RA}.devices.results[0].consumedCapacity.memory: 'lots' does not match",
        True,
    ),
    (
        _with(f"{ALLOC}.allocationTimestamp", "last tuesday"),
        f"{RA}.allocationTimestamp: 'last tuesday' is not an RFC 3339 date-time",
        True,
    ),
    (
        _with(f"{ALLOC}.nodeSelector", {}),
        f"{RA}.nodeSelector.nodeSelectorTerms: required field is missing",
        True,
    ),
    (
        _with("status", {"phase": "Succeeded", "failedAttempts": "1"}),
        "status.failedAttempts: '1' is not of type 'integer'",
        True,
    ),
    # stricter than KAI's CRD (ours must refuse; KAI's may accept)
    (_with("spec.podName", None), "spec.podName: required field is missing", False),
    (_with("spec.selectedNode", ""), "spec.selectedNode: '' should be non-empty", False),
    (_with("spec.backoffLimit", -1), "spec.backoffLimit: -1 is less than the minimum of 0", False),
    (_with("spec.receivedResourceType", "Whole"), "spec.receivedResourceType: 'Whole' is not one of", False),
    (
        _with("spec.receivedGPU", {"count": 1, "portion": "half"}),
        "spec.receivedGPU.portion: 'half' does not match",
        False,
    ),
    (
        _with(f"{ALLOC}.devices.config.0.source", "FromNowhere"),
        "spec.resourceClaimAllocations[0].allocation.devices.config[0].source: 'FromNowhere' is not one of",
        False,
    ),
    (
        _with("spec.resourceClaimAllocations.1", {"name": "gpu"}),
        "spec.resourceClaimAllocations[1]: duplicate entry (name='gpu')",
        False,
    ),
    (_with("status", {"phase": "Done"}), "status.phase: 'Done' is not one of", False),
]


@pytest.mark.parametrize(("obj", "problem", "kai_refuses"), REFUSED, ids=[r[1][:60] for r in REFUSED])
def test_ours_refuses_bad_bindrequests(
    obj: dict[str, Any], problem: str, kai_refuses: bool, ours: CrdValidator, kai: CrdValidator
) -> None:
    errors = ours.errors(obj)
    assert len(errors) == 1 and errors[0].startswith(problem), errors
    with pytest.raises(SchemaError, match=re.escape(problem)) as info:
        ours.validate(obj)
    assert info.value.ref == "BindRequest team-a/pod-a"
    if kai_refuses:
        assert kai.errors(obj), "KAI's CRD was expected to refuse this too"


def _narrower(ours: dict[str, Any], theirs: dict[str, Any], path: str) -> list[str]:
    """Ways in which schema ``ours`` could accept something ``theirs`` refuses (ignoring descriptions)."""
    problems: list[str] = []
    for key in ("type", "format", "x-kubernetes-int-or-string", "anyOf", "pattern", "nullable", "default"):
        if key in theirs and ours.get(key) != theirs[key]:
            problems.append(f"{path}: {key} {ours.get(key)!r} != {theirs[key]!r}")
    for key in ("minimum", "minLength", "minItems"):
        if key in theirs and not ours.get(key, float("-inf")) >= theirs[key]:
            problems.append(f"{path}: {key} looser")
    for key in ("maximum", "maxLength", "maxItems"):
        if key in theirs and not ours.get(key, float("inf")) <= theirs[key]:
            problems.append(f"{path}: {key} looser")
    if "enum" in theirs and not set(ours.get("enum", [object()])) <= set(theirs["enum"]):
        problems.append(f"{path}: enum looser")
    if not set(theirs.get("required", [])) <= set(ours.get("required", [])):
        problems.append(f"{path}: required {theirs.get('required')} not all required by ours")
    if ours.get("x-kubernetes-preserve-unknown-fields") and not theirs.get(
        "x-kubernetes-preserve-unknown-fields"
    ):
        problems.append(f"{path}: ours preserves unknown fields, theirs does not")
    if (
        "x-kubernetes-validations" in theirs
        and ours.get("x-kubernetes-validations") != theirs["x-kubernetes-validations"]
    ):
        problems.append(f"{path}: CEL rules differ")
    for name, sub in ours.get("properties", {}).items():
        if name not in theirs.get("properties", {}):
            if not (path == "" and name in ("apiVersion", "kind", "metadata")):
                problems.append(f"{path}.{name}: not in theirs")
            continue
        problems += _narrower(sub, theirs["properties"][name], f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(theirs.get(key), dict):
            if not isinstance(ours.get(key), dict):
                problems.append(f"{path}: {key} missing in ours")
            else:
                problems += _narrower(ours[key], theirs[key], f"{path}.{key}")
    return problems


def test_our_bindrequest_schema_is_a_subset_of_kais(ours: CrdValidator, kai: CrdValidator) -> None:
    """Why every object ours accepts is accepted by KAI's: field by field, ours is narrower."""
    assert _narrower(ours.schema, kai.schema, "") == []
    assert (ours.group, ours.kind, ours.plural, ours.version, ours.namespaced, ours.has_status) == (
        kai.group,
        kai.kind,
        kai.plural,
        kai.version,
        kai.namespaced,
        kai.has_status,
    )


# --------------------------------------------------------------------------------------------------
# the fast path agrees with jsonschema


_FIELD_NAMES = [
    "name",
    "podName",
    "selectedNode",
    "receivedGPU",
    "count",
    "portion",
    "devices",
    "results",
    "config",
    "source",
    "opaque",
    "parameters",
    "driver",
    "pool",
    "device",
    "request",
    "phase",
    "status",
    "spec",
    "x",
]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.sampled_from([2**31, 2**63, -1, 0, 1.0, 1.5]),
    st.text(max_size=4),
    st.sampled_from(
        [
            "",
            "Regular",
            "Fraction",
            "FromClass",
            "FromClaim",
            "1.00",
            "Exists",
            "In",
            "Equal",
            "40Gi",
            "2025-04-08T21:55:32Z",
            "abc\n",
            "Failed",
        ]
    ),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(_FIELD_NAMES), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_path_agrees_with_jsonschema(data: st.DataObject) -> None:
    if not KAI_BINDREQUEST_CRD.is_file():
        pytest.skip(f"KAI's BindRequest CRD not found at {KAI_BINDREQUEST_CRD}")
    validators = _fast_path_validators()
    obj = copy.deepcopy(ACCEPTED["dra-full"])
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(obj)))
        action = data.draw(st.sampled_from(["replace", "add", "delete"]))
        target: Any = obj
        for part in path[:-1]:
            target = target[part]
        if not path:
            if action == "replace":
                obj = data.draw(_JSON)
            continue
        if action == "delete":
            del target[path[-1]]
        elif action == "add" and isinstance(target[path[-1]], dict):
            target[path[-1]][data.draw(st.sampled_from(_FIELD_NAMES))] = data.draw(_JSON)
        else:
            target[path[-1]] = data.draw(_JSON)
    for v in validators:
        fast = v._fast(obj)
        slow = next(iter(v._validator.iter_errors(obj)), None) is None
        assert fast == slow, (v, obj)


_VALIDATOR_CACHE: list[CrdValidator] = []


def _fast_path_validators() -> list[CrdValidator]:
    if not _VALIDATOR_CACHE:
        _VALIDATOR_CACHE.append(CrdValidator(load_crd(crd_path("bindrequests.scheduling.run.ai"))))
        _VALIDATOR_CACHE.append(CrdValidator(load_crd(KAI_BINDREQUEST_CRD)))
        for v in _VALIDATOR_CACHE:
            assert v._fast is not None, f"{v} has no fast path"
    return _VALIDATOR_CACHE
