"""A corpus of hostile manifests: each is refused with one line naming the file (and the object),
quickly, never with a traceback, a hang or a gigabyte of memory.

Every case goes through what ``kai-cli validate`` and ``kai-cli run --cluster`` do: decode the
file (:func:`kai_core.apiserver.manifests.parse_documents`), then apply each object to an embedded
cluster (:func:`kai_core.apiserver.manifests.check_manifests`). The expected line is given whole,
``{f}`` standing for the file's path. The CLI-level twins are in kai-cli's tests.
"""

from __future__ import annotations

import json
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from kai_core.apiserver.manifests import ManifestError, check_manifests, parse_documents
from kai_core.cluster import EmbeddedCluster
from kai_core.plugins import build_plugin_manager

#: no case may take longer than this (the hostile ones used to hang or run for minutes)
SECONDS = 5.0


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    expected: list[str]
    suffix: str = ".yaml"


@contextmanager
def within(seconds: float):
    """Fail (rather than hang) when the block runs longer than ``seconds`` of Python code."""

    def expired(_signum, _frame):
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.perf_counter()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.perf_counter() - start < seconds


def problems(tmp_path, case: Case) -> list[str]:
    """What ``kai-cli validate`` reports for the case's file, one line per problem."""
    path = tmp_path / f"{case.id}{case.suffix}"
    path.write_text(case.text)
    cluster = EmbeddedCluster(build_plugin_manager(load_external=False))
    try:
        manifests = parse_documents(path.read_text(), str(path))
    except ManifestError as exc:
        return [str(exc)]
    return check_manifests(cluster.store, manifests)


def run_case(tmp_path, case: Case) -> None:
    with within(SECONDS):
        found = problems(tmp_path, case)
    f = str(tmp_path / f"{case.id}{case.suffix}")
    assert found == [line.replace("{f}", f) for line in case.expected]
    for line in found:
        assert "\n" not in line and len(line) < 1000, line


# -- generators ----------------------------------------------------------------------------------------


def laughs(levels: int, fanout: int = 10, kind: str = "ConfigMap") -> str:
    """The billion laughs: each level an anchored list of ``fanout`` aliases of the one before."""
    lines = [f"apiVersion: v1\nkind: {kind}\nmetadata: {{name: bomb, namespace: default}}\ndata:",
             "  a0: &a0 [" + ", ".join(["lol"] * fanout) + "]"]
    for level in range(1, levels + 1):
        lines.append(f"  a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * fanout) + "]")
    return "\n".join(lines) + "\n"


def node(name: str = "n1", spec: str = "", status: str = "") -> str:
    text = f"apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n"
    if spec:
        text += f"spec:\n{spec}"
    if status:
        text += f"status:\n{status}"
    return text


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


POD = """apiVersion: v1
kind: Pod
metadata: {name: p%s}
spec:
  containers: [{name: c, image: x}]
"""

# -- YAML and JSON decoding: the bounds of kai_core.api.decode --------------------------------------------

DECODING = [
    # 10^9 strings from 400 bytes; refused at the 4th alias of the 4th level, as go-yaml would
    Case("alias-bomb", laughs(9),
         ["{f}#1 (ConfigMap default/bomb): line 8: document contains excessive aliasing "
          "(its aliases expand to 6,204 of 6,260 nodes)"]),
    Case("alias-bomb-node", laughs(6, kind="Node"),
         ["{f}#1 (Node default/bomb): line 8: document contains excessive aliasing "
          "(its aliases expand to 6,204 of 6,260 nodes)"]),
    Case("recursive-anchor", node(spec="  x: &x [1, *x]\n"),
         ["{f}#1 (Node n1): line 6: an anchor's value contains itself (a recursive alias)"]),
    Case("recursive-anchor-map", node(spec="  x: &x {a: {b: *x}}\n"),
         ["{f}#1 (Node n1): line 6: an anchor's value contains itself (a recursive alias)"]),
    Case("deep-list", node(spec=f"  x: {nested(150)}\n"),
         ["{f}#1 (Node n1): line 6: nesting deeper than 100 levels"]),
    Case("deep-map", node(spec="  x: " + "{a: " * 150 + "1" + "}" * 150 + "\n"),
         ["{f}#1 (Node n1): line 6: nesting deeper than 100 levels"]),
    Case("deep-through-an-alias", node(spec=f"  a: &a {nested(60)}\n  b: {nested(50, '*a')}\n"),
         ["{f}#1 (Node n1): line 7: nesting deeper than 100 levels (aliases expanded)"]),
    Case("deep-beyond-libyaml", node(spec=f"  x: {nested(5000)}\n"),
         ["{f}:6: invalid YAML: exceeded maximum nesting depth"]),
    Case("deep-json", json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})[:-1]
         + ', "spec": {"x": ' + nested(100_000) + "}}",
         ["{f}: invalid JSON: nesting deeper than 100 levels"], ".json"),
    Case("deep-json-shallow-enough-for-the-parser",
         '{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {"x": ' + nested(300) + "}}",
         ["{f}#1 (Node n1): nesting deeper than 100 levels"], ".json"),
    Case("huge-int", node(spec="  x: " + "9" * 5000 + "\n"),
         ["{f}#1 (Node n1): line 6: an integer of 5000 characters is beyond the limit of 4300 digits"]),
    Case("huge-hex-int", node(spec="  x: 0x" + "f" * 4000 + "\n"),
         ["{f}#1 (Node n1): line 6: an integer of more than 4300 digits is beyond the limit"]),
    Case("huge-int-json",
         '{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {"x": ' + "9" * 5000 + "}}",
         ["{f}: invalid JSON: an integer of 5000 digits is beyond the limit of 4300 digits"], ".json"),
    Case("nan", node(spec="  x: .nan\n"),
         ["{f}#1 (Node n1): line 6: '.nan': NaN and infinities cannot be represented in JSON"]),
    Case("infinity-by-overflow", node(spec="  x: 1.0e+999\n"),
         ["{f}#1 (Node n1): line 6: '1.0e+999': NaN and infinities cannot be represented in JSON"]),
    Case("nan-json", '{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {"x": NaN}}',
         ["{f}: invalid JSON: NaN is not a JSON number (NaN and infinities cannot be represented)"], ".json"),
    Case("infinity-json",
         '{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {"x": 1e999}}',
         ["{f}: invalid JSON: '1e999' is beyond the range of a JSON number"], ".json"),
    Case("duplicate-key", "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nmetadata: {name: n2}\n",
         ['{f}#1 (Node n1): line 4: key "metadata" already set in map (first at line 3)']),
    Case("duplicate-nested-key", node(status="  allocatable: {cpu: '1', cpu: '64'}\n"),
         ['{f}#1 (Node n1): line 6: key "cpu" already set in map (first at line 6)']),
    Case("duplicate-key-json", '{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "kind": "Pod"}',
         ['{f}: invalid JSON: duplicate field "kind"'], ".json"),
    Case("object-over-3-mib", node(spec="  x: '" + "a" * (3 * 1024 * 1024) + "'\n"),
         ["{f}#1 (Node n1): line 1: an object of 3,145,789 characters: more than the API server accepts "
          "(3,145,728 bytes)"]),
    Case("bad-yaml", "apiVersion: v1\nkind: [Node\n", ["{f}:3: invalid YAML: did not find expected ',' or ']'"]),
]

# -- objects defined twice: both places named -------------------------------------------------------------

DUPLICATES = [
    Case("duplicate-node", node() + "---\n" + node(),
         ["{f}#2 (Node n1): line 6: duplicate object, also defined at {f}#1 line 1"]),
    Case("duplicate-pod-default-namespace", POD % "" + "---\n" + (POD % "").replace("{name: p}",
                                                                                    "{name: p, namespace: default}"),
         ["{f}#2 (Pod default/p): line 7: duplicate object, also defined at {f}#1 line 1"]),
    Case("same-name-other-namespace-is-fine",
         POD % "" + "---\n" + (POD % "").replace("{name: p}", "{name: p, namespace: other}"), []),
    Case("duplicate-in-a-list",
         "apiVersion: v1\nkind: List\nitems:\n- " + node().replace("\n", "\n  ").rstrip() + "\n- "
         + node().replace("\n", "\n  ").rstrip() + "\n",
         ["{f}#1.items[1] (Node n1): line 8: duplicate object, also defined at {f}#1.items[0] line 4"]),
]


@pytest.mark.parametrize("case", DECODING + DUPLICATES, ids=lambda c: c.id)
def test_hostile_file_is_refused_with_one_line(tmp_path, case):
    run_case(tmp_path, case)


def test_an_alias_bound_is_go_yamls():
    """go-yaml's CVE-2019-11253 bound, counted the same way: 3 levels of 10 (1,358 nodes decoded, 97 %
    of them through aliases) decode; a 4th level is refused once 99 % of 5,026 nodes come from aliases."""
    from kai_core.api.decode import DecodeError, load_yaml

    def bomb(levels):
        lines = ["a0: &a0 [" + ", ".join(["x"] * 10) + "]"]
        lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
        return "\n".join(lines)

    assert len(list(load_yaml(bomb(2)))) == 1
    with pytest.raises(DecodeError, match=r"excessive aliasing \(its aliases expand to 4,983 of 5,026 nodes\)"):
        list(load_yaml(bomb(3)))
    # aliases that are a small part of a large document are fine (shared, never copied)
    shared = "base: &b {cpu: '1', memory: 1Gi}\n" + "".join(f"n{i}: *b\n" for i in range(2000))
    [doc] = load_yaml(shared)
    assert doc.data["n1999"] == {"cpu": "1", "memory": "1Gi"}


def test_a_long_value_is_cut_in_the_message(tmp_path):
    name = "a" * 1_000_000
    [line] = problems(tmp_path, Case("long-name", node(name=name), []))
    label = f"{tmp_path / 'long-name.yaml'}#1 (Node {'a' * 200}... (1,000,000 characters))"
    assert line == (f'{label}: Node "{"a" * 200}... (1,000,000 characters)" is invalid: metadata.name must be '
                    "a lowercase RFC 1123 subdomain (at most 253 characters)")


# -- CRD patterns: RE2, as the API server's Go regexp ---------------------------------------------------


def crd(pattern: str) -> str:
    return f"""apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: widgets.example.com}}
spec:
  group: example.com
  names: {{kind: Widget, plural: widgets}}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              name: {{type: string, pattern: {json.dumps(pattern)}}}
"""


def widget(name: str, value: str) -> str:
    return f"---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: {name}, namespace: default}}\n" \
           f"spec: {{name: {json.dumps(value)}}}\n"


NOT_SERVED = ("{f}#%d (Widget default/%s): no matches for kind 'Widget' in version 'example.com/v1': nothing serves "
              "this kind (install its CRD or the plugin that provides it)")
PATTERNS = [
    # Python's re backtracks for ever on this; RE2 answers in linear time
    Case("catastrophic-backtracking", crd("^(a+)+$") + widget("w1", "a" * 40 + "!") + widget("w2", "aaaa"),
         ["{f}#2 (Widget default/w1): Widget default/w1 is invalid: spec.name: "
          "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!' does not match '^(a+)+$'"]),
    Case("nested-quantifiers-long-input", crd("^(a|aa)*$") + widget("w1", "a" * 5000 + "b"),
         ["{f}#2 (Widget default/w1): Widget default/w1 is invalid: spec.name: "
          f"{'a' * 80!r}... (5,001 characters) does not match '^(a|aa)*$'"]),
    Case("lookahead-is-not-re2", crd("(?=a)b") + widget("w1", "b"),
         ["{f}#1 (CustomResourceDefinition widgets.example.com): CustomResourceDefinition 'widgets.example.com' "
          "is invalid: CRD widgets.example.com v1: invalid openAPIV3Schema at "
          "properties.spec.properties.name.pattern: Invalid value: '(?=a)b': must be a valid regular expression, "
          "but isn't: invalid perl operator: (?=", NOT_SERVED % (2, "w1")]),
    Case("backreference-is-not-re2", crd(r"(a)\1"),
         ["{f}#1 (CustomResourceDefinition widgets.example.com): CustomResourceDefinition 'widgets.example.com' "
          "is invalid: CRD widgets.example.com v1: invalid openAPIV3Schema at "
          "properties.spec.properties.name.pattern: Invalid value: '(a)\\\\1': must be a valid regular "
          "expression, but isn't: invalid escape sequence: \\1"]),
    Case("repetition-over-1000", crd("a{1001}"),
         ["{f}#1 (CustomResourceDefinition widgets.example.com): CustomResourceDefinition 'widgets.example.com' "
          "is invalid: CRD widgets.example.com v1: invalid openAPIV3Schema at "
          "properties.spec.properties.name.pattern: Invalid value: 'a{1001}': must be a valid regular "
          "expression, but isn't: invalid repetition size: {1001}"]),
    # Go's syntax that Python's re refuses: accepted, and matched as Go does
    Case("unicode-class", crd(r"^\pL+$") + widget("w1", "héllo") + widget("w2", "h3llo"),
         ["{f}#3 (Widget default/w2): Widget default/w2 is invalid: spec.name: 'h3llo' does not match '^\\\\pL+$'"]),
    Case("dollar-is-end-of-text", crd("^[a-z]+$") + widget("w1", "abc\n"),
         ["{f}#2 (Widget default/w1): Widget default/w1 is invalid: spec.name: 'abc\\n' does not match '^[a-z]+$'"]),
    Case("digits-are-ascii", crd(r"^\d+$") + widget("w1", "١٢٣"),
         ["{f}#2 (Widget default/w1): Widget default/w1 is invalid: spec.name: '١٢٣' does not match '^\\\\d+$'"]),
]

# -- resource.k8s.io limits (Kubernetes 1.34, v1) ---------------------------------------------------------


def slice_(devices: list, **spec) -> str:
    return json.dumps({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": "s1"},
                       "spec": {"driver": "gpu.example.com", "nodeName": "n1",
                                "pool": {"name": "n1", "generation": 1, "resourceSliceCount": 1},
                                "devices": devices, **spec}})


def device(i: int = 0, **attributes) -> dict:
    return {"name": f"gpu-{i}", "attributes": attributes or {"model": {"string": "a100"}}}


def claim(*requests: dict) -> str:
    return json.dumps({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                       "metadata": {"name": "c", "namespace": "default"},
                       "spec": {"devices": {"requests": list(requests)}}})


def request(i: int = 0, *expressions: str, **fields) -> dict:
    exactly = {"deviceClassName": "gpu.example.com", **fields}
    if expressions:
        exactly["selectors"] = [{"cel": {"expression": e}} for e in expressions]
    return {"name": f"r{i}", "exactly": exactly}


SLICE = "{f}#1 (ResourceSlice s1): ResourceSlice s1 is invalid: "
CLAIM = "{f}#1 (ResourceClaim default/c): ResourceClaim default/c is invalid: "
DRA_LIMITS = [
    # the case: one CEL evaluation over it took 60 s and 3 GB
    Case("attribute-of-1-mb", slice_([device(model={"string": "x" * 1_000_000})]),
         [SLICE + "spec.devices[0].attributes['model'].string: Too long: may not be more than 64 bytes "
                  "(got 1,000,000)"]),
    Case("attribute-of-65-bytes", slice_([device(model={"string": "é" * 33})]),
         [SLICE + "spec.devices[0].attributes['model'].string: Too long: may not be more than 64 bytes (got 66)"]),
    Case("version-of-1-mb", slice_([device(v={"version": "1.0.0-" + "a" * 1_000_000})]),
         [SLICE + "spec.devices[0].attributes['v'].version: Too long: may not be more than 64 bytes "
                  "(got 1,000,006)"]),
    Case("version-not-semver", slice_([device(v={"version": "1.2"})]),
         [SLICE + "spec.devices[0].attributes['v'].version: Invalid value: '1.2': must be a string compatible "
                  "with semver.org spec 2.0.0"]),
    Case("129-devices", slice_([device(i) for i in range(129)]),
         [SLICE + "spec.devices: Too many: 129: must have at most 128 items"]),
    Case("33-attributes", slice_([{"name": "gpu-0", "attributes": {f"a{i}": {"int": i} for i in range(33)}}]),
         [SLICE + "spec.devices[0]: Invalid value: 33: the total number of attributes and capacities must not "
                  "exceed 32"]),
    Case("attribute-names", slice_([{"name": "gpu-0", "attributes": {
        "x/y/z": {"int": 1}, "d" * 64 + "/a": {"int": 1}, "n" * 33: {"bool": True}, "9x": {"int": 1}}}]),
         [SLICE + "spec.devices[0].attributes['x/y/z']: Invalid value: 'x/y/z': must not contain more than one "
                  "slash; spec.devices[0].attributes['" + "d" * 64 + "/a']: Invalid value: '" + "d" * 64
          + "': must be no more than 63 characters; spec.devices[0].attributes['" + "n" * 33 + "']: Too long: "
            "may not be more than 32 bytes (the name after the domain); spec.devices[0].attributes['9x']: "
            "Invalid value: '9x': a valid C identifier must start with alphabetic character or '_', followed by "
            "a string of alphanumeric characters or '_'"]),
    Case("two-values", slice_([device(v={"int": 1, "string": "a"})]),
         [SLICE + "spec.devices[0].attributes['v']: Invalid value: exactly one value must be specified (int, bool, "
                  "string or version)"]),
    Case("device-name", slice_([{"name": "GPU_0"}]),
         [SLICE + "spec.devices[0].name: Invalid value: 'GPU_0': must be a lowercase RFC 1123 label"]),
    Case("driver-of-70", slice_([device()], driver="d" * 70),
         [SLICE + f"spec.driver: Invalid value: '{'d' * 70}': must be no more than 63 characters"]),
    Case("5-device-taints", slice_([{"name": "gpu-0", "taints": [{"key": f"k{i}", "effect": "NoSchedule"}
                                                                 for i in range(5)]}]),
         [SLICE + "spec.devices[0].taints: Too many: 5: must have at most 4 items"]),
    Case("33-requests", claim(*[request(i) for i in range(33)]),
         [CLAIM + "spec.devices.requests: Too many: 33: must have at most 32 items"]),
    Case("33-selectors", claim(request(0, *["true"] * 33)),
         [CLAIM + "spec.devices.requests[0].exactly.selectors: Too many: 33: must have at most 32 items"]),
    # the case: echoed whole into the error line
    Case("cel-of-1-mb", claim(request(0, "device.driver == '" + "a" * 1_000_000 + "'")),
         [CLAIM + "spec.devices.requests[0].exactly.selectors[0].cel.expression: Too long: may not be more than "
                  "10240 bytes (got 1,000,019)"]),
    Case("cel-just-over-10-kib", claim(request(0, "'" + "a" * 10_239 + "' == ''")),
         [CLAIM + "spec.devices.requests[0].exactly.selectors[0].cel.expression: Too long: may not be more than "
                  "10240 bytes (got 10,247)"]),
    Case("9-subrequests", claim({"name": "r", "firstAvailable": [
        {"name": f"s{i}", "deviceClassName": "gpu.example.com"} for i in range(9)]}),
         [CLAIM + "spec.devices.requests[0].firstAvailable: Too many: 9: must have at most 8 items"]),
    Case("17-tolerations", claim(request(0, tolerations=[{"operator": "Exists"}] * 17)),
         [CLAIM + "spec.devices.requests[0].exactly.tolerations: Too many: 17: must have at most 16 items"]),
    Case("opaque-parameters-over-10-kib", json.dumps({
        "apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": "gpu.example.com"},
        "spec": {"config": [{"opaque": {"driver": "gpu.example.com", "parameters": {"x": "a" * 10_240}}}]}}),
         ["{f}#1 (DeviceClass gpu.example.com): DeviceClass gpu.example.com is invalid: spec.config[0].opaque."
          "parameters: Too long: may not be more than 10240 bytes (got 10,248)"]),
    Case("class-with-33-selectors", json.dumps({
        "apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": "gpu.example.com"},
        "spec": {"selectors": [{"cel": {"expression": "true"}}] * 33}}),
         ["{f}#1 (DeviceClass gpu.example.com): DeviceClass gpu.example.com is invalid: spec.selectors: Too many: "
          "33: must have at most 32 items"]),
]

# -- built-in kinds of the wrong structure: what the API server's typed decoding refuses ---------------

NODE = "{f}#1 (Node n1): Node n1 is invalid: "
STRUCTURE = [
    Case("node-taints-a-string", node(spec="  taints: NoSchedule\n"),
         [NODE + "spec.taints: must be a list of taints, got 'NoSchedule'"]),
    Case("node-conditions-a-string", node(status="  conditions: Ready\n"),
         [NODE + "status.conditions: must be a list of conditions, got 'Ready'"]),
    Case("node-status-a-list", node(status="  - Ready\n"), [NODE + "status: must be a mapping, got ['Ready']"]),
    Case("node-taint-fields", node(spec="  taints: [{key: a, effect: Sometimes}, NoSchedule, {key: a, effect: "
                                        "NoExecute}, {key: a, value: b, effect: NoExecute}]\n"
                                        "  unschedulable: 'yes'\n",
                                   status="  conditions: [{type: Ready, status: true}]\n"),
         [NODE + "spec.taints[0].effect: Unsupported value: 'Sometimes': supported values: \"NoSchedule\", "
                 "\"PreferNoSchedule\", \"NoExecute\"; spec.taints[1]: must be a mapping (key, value, effect), got "
                 "'NoSchedule'; spec.taints[3]: Duplicate value: taints must be unique by key and effect pair; "
                 "spec.unschedulable: must be a boolean, got 'yes'; status.conditions[0].status: Required value: "
                 "a string, got True"]),
    Case("pod-status-a-string", POD % "1" + "status: Running\n",
         ["{f}#1 (Pod p1): Pod default/p1 is invalid: status: must be a mapping, got 'Running'"]),
    Case("pod-fields", POD % "1" + "  tolerations: all\n  nodeSelector: {zone: 1}\n  priority: high\n"
                                   "status: {phase: 1, conditions: {a: b}}\n",
         ["{f}#1 (Pod p1): Pod default/p1 is invalid: spec.nodeSelector: must map label keys to strings, "
          "got {'zone': 1}; spec.tolerations: must be a list of tolerations, got 'all'; spec.priority: must be an "
          "integer, got 'high'; status.phase: must be a string, got 1; status.conditions: must be a list of "
          "conditions, got {'a': 'b'}"]),
    Case("pod-tolerations", POD % "1" + "  tolerations: [{operator: Equal, value: x}, {key: k, operator: Exists, "
                                        "value: v}, {key: k, operator: Maybe}, x]\n",
         ["{f}#1 (Pod p1): Pod default/p1 is invalid: spec.tolerations[0].operator: Invalid value: 'Equal': "
          "operator must be Exists when `key` is empty, which means \"match all values and all keys\"; "
          "spec.tolerations[1].value: Invalid value: 'v': value must be empty when `operator` is 'Exists'; "
          "spec.tolerations[2].operator: Unsupported value: 'Maybe': supported values: \"Equal\", \"Exists\"; "
          "spec.tolerations[3]: must be a mapping (key, operator, value, effect), got 'x'"]),
    Case("pod-spec-a-string", "apiVersion: v1\nkind: Pod\nmetadata: {name: p1}\nspec: run\n",
         ["{f}#1 (Pod p1): Pod default/p1 is invalid: spec: required"]),
]


@pytest.mark.parametrize("case", PATTERNS + DRA_LIMITS + STRUCTURE, ids=lambda c: c.id)
def test_hostile_object_is_refused_with_one_line(tmp_path, case):
    run_case(tmp_path, case)


# -- the CEL cost estimate holds: device data within the limits above --------------------------------

def test_a_device_with_a_huge_attribute_is_skipped_before_any_selector_sees_it():
    """The API server refuses string attributes over 64 bytes, and the CEL cost estimate counts on it;
    a device carrying one anyway (a slice from elsewhere) is left out, with the reason, instead of
    costing a selector a minute and gigabytes."""
    from kai_core.dra.inventory import DraInventory

    slice_obj = json.loads(slice_([device(0, model={"string": "x" * 1_000_000}), device(1)]))
    slice_obj["metadata"]["resourceVersion"] = "1"
    with within(SECONDS):
        inventory = DraInventory([slice_obj], [])
        node = {"metadata": {"name": "n1", "labels": {}}}
        names = [d.id.device for d in inventory.devices_for_node(node)]
        notes = inventory.notes_for_node(node)
    assert names == ["gpu-1"]
    assert len(notes) == 1 and "a string of 1,000,000 characters, more than the 64 the API allows" in notes[0]
    assert len(notes[0]) < 400


def test_the_cel_cost_estimate_assumes_the_limits_validation_enforces():
    """kai_core.dra.celcost bounds a selector's cost from the sizes device data may have; those sizes
    are the API limits the embedded API server now enforces (and the inventory re-checks)."""
    from kai_core.apiserver import validation
    from kai_core.dra import celcost

    assert celcost._MAX_STRING_ATTRIBUTE == validation.DEVICE_ATTRIBUTE_MAX_VALUE == 64
    assert celcost._MAX_ENTRIES == validation.DEVICE_MAX_ATTRIBUTES_AND_CAPACITIES == 32
    assert celcost._MAX_DRIVER_NAME == validation.DRIVER_NAME_MAX == 63
    assert celcost._DOMAIN_NAME == validation.DEVICE_MAX_DOMAIN == 63
    assert celcost._MAX_LIST_ATTRIBUTE >= validation.DEVICE_MAX_ATTRIBUTE_VALUES


@pytest.mark.parametrize("expression", [
    "cel.bind(p, device.attributes['gpu.example.com'].a0, p + p + p + p == '')",
    "device.attributes.all(d, device.attributes[d].all(k, k != ''))",
    "device.attributes['gpu.example.com'].a1.matches('^(a+)+$')",
    "device.attributes['gpu.example.com'].exists(k, device.attributes['gpu.example.com'][k] == 'x')",
])
def test_an_accepted_selector_is_fast_on_a_device_at_every_limit(expression):
    from kai_core.dra.cel import compile_selector, device_env

    attributes = {f"a{i}": {"string": "a" * 63 + "!"} for i in range(32)}
    env = device_env("gpu.example.com", attributes, None)
    selector = compile_selector(expression)
    start = time.perf_counter()
    selector.matches(env)
    assert time.perf_counter() - start < 0.5


# -- during a run: objects the embedded API server would refuse, as they may come from elsewhere ---------
# A real API server decodes built-in kinds into typed structs, so these cannot come from one; a CRD's
# lenient schema, a hand-made store or an older server may still hand the scheduler anything. One such
# object makes only its own pods wait, named in the reason; it never fails a plugin for every pod.


def unchecked(w, *kinds: str) -> None:
    """Let ``kinds`` be stored without validation (as if another server had accepted them)."""
    for kind in kinds:
        w.store.kinds.get(kind).validate = None
        w.store.kinds.get(kind).validate_update = None


def malformed_node(world, name: str, **fields) -> dict:
    obj = world.node(name)
    for path, value in fields.items():
        section, key = path.split("__")
        obj[section][key] = value
    return obj


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("spec__taints", "NoSchedule", "spec.taints is not a list of taints"),
    ("spec__taints", ["NoSchedule"], "spec.taints is not a list of taints"),
    ("status__conditions", "Ready", "status.conditions is not a list of conditions"),
    ("status__allocatable", ["cpu"], "status.allocatable is not a mapping"),
])
def test_a_malformed_node_takes_no_pods_and_the_others_do(world, field, value, reason):
    w = world(world.node("good"))
    unchecked(w, "nodes")
    w.add(malformed_node(world, "bad", **{field: value}), world.pod("p1"))
    with within(SECONDS):
        result = w.cycle()
    assert (result.scheduled, result.errors, w.placed()) == (1, 0, {"p1": "good"})
    w2 = world()
    unchecked(w2, "nodes")
    w2.add(malformed_node(world, "bad", **{field: value}), world.pod("p2"))
    result = w2.cycle()
    assert (result.unschedulable, result.errors) == (1, 0)
    assert w2.message("p2") == f"0/1 nodes are available: 1 node bad is invalid: {reason}."


def test_a_malformed_pod_waits_alone(world):
    w = world(world.node("n1"))
    unchecked(w, "pods")
    w.add(world.pod("tolerations", tolerations="all"), world.pod("selector", nodeSelector=["zone"]),
          world.pod("status", status="Running"), world.pod("fine"))
    with within(SECONDS):
        result = w.cycle()
    assert result.errors == 0
    assert w.placed() == {"fine": "n1", "status": "n1"}
    assert w.message("tolerations") == ("0/1 nodes are available: invalid spec.tolerations: must be a list of "
                                        "tolerations (key, operator, value, effect).")
    assert w.message("selector") == ("0/1 nodes are available: invalid spec.nodeSelector: must map label keys to "
                                     "string values.")


def test_a_malformed_pod_group_does_not_stop_the_cycle(world):
    pod_group = {"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
                 "metadata": {"name": "g", "namespace": "default"}, "spec": {"minMember": 2}}
    w = world(world.node("n1"), pod_group)
    unchecked(w, "podgroups.scheduling.run.ai")
    bad = w.store.get("podgroups.scheduling.run.ai", "g", "default")
    bad["spec"] = "two"
    w.store.update(bad)
    w.add(world.pod("a", meta={"annotations": {"pod-group-name": "g"}}), world.pod("b"))
    with within(SECONDS):
        result = w.cycle()
    assert result.errors == 0 and sorted(w.placed()) == ["a", "b"]


@pytest.mark.parametrize(("variant", "reason"), [
    ("claim-spec", '0/1 nodes are available: ResourceClaim "default/bad" is invalid: spec is not a mapping.'),
    ("claim-status", '0/1 nodes are available: ResourceClaim "default/bad" is invalid: status is not a mapping.'),
    ("claim-allocation", '0/1 nodes are available: ResourceClaim "default/bad" is invalid: status.allocation '
                         "is not a mapping."),
    # the message counts kube-scheduler's reason; kai-cli explain names the problem (below)
    ("claim-requests", "0/1 nodes are available: 1 cannot allocate all claims."),
])
def test_a_malformed_claim_makes_only_its_pods_wait(world, variant, reason):
    from kai_core.api.features import FeatureGates
    from kai_core.dra.testing import GPU, claim, device_class, gpu_slice, request
    from kai_core.scheduler.cycle import SchedulerConfig

    config = SchedulerConfig(features=FeatureGates.parse("DynamicResourceAllocation=true"))
    w = world(device_class("gpu.example.com", f"device.driver == '{GPU}'"), world.node("n1"),
              gpu_slice("n1", count=2), config=config)
    unchecked(w, "resourceclaims.resource.k8s.io")
    bad = claim("bad", request("gpu", "gpu.example.com", 1))
    if variant == "claim-spec":
        bad["spec"] = "one gpu"
    elif variant == "claim-status":
        bad["status"] = "allocated"
    elif variant == "claim-allocation":
        bad["status"] = {"allocation": "gpu-0"}
    else:
        bad["spec"]["devices"]["requests"] = "gpu"
    w.add(claim("good", request("gpu", "gpu.example.com", 1)), bad)
    for name, claim_name in (("uses-good", "good"), ("uses-bad", "bad")):
        pod = world.pod(name, resourceClaims=[{"name": "gpus", "resourceClaimName": claim_name}])
        pod["spec"]["containers"][0]["resources"]["claims"] = [{"name": "gpus"}]
        w.add(pod)
    w.explain()
    with within(SECONDS):
        result = w.cycle()
    assert (result.scheduled, result.unschedulable, result.errors) == (1, 1, 0)
    assert w.placed() == {"uses-good": "n1"}
    assert w.message("uses-bad") == reason
    if variant == "claim-requests":
        assert w.detailed("uses-bad") == ("0/1 nodes are available: 1 cannot allocate all claims: claim "
                                          "default/bad: spec.devices.requests must be a list.")
