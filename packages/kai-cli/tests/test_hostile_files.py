"""Hostile files given to ``kai-cli validate`` and ``kai-cli run scheduler --cluster F --until-idle``,
run as the real command (a subprocess each, with a timeout, all at once): every one ends at once with
exit 2 and one line naming the file and the object, never a traceback, a hang or a MemoryError.
``run`` prints that line as its only output; ``validate`` prints it and its one-line summary.

The kai-core corpus (packages/kai-core/tests/test_hostile_input.py) checks the exact lines of many
more cases in-process; these are the families' representatives, end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: each command gets this long at most (they take about a second: the bound catches a hang)
TIMEOUT = 60


def _laughs(levels: int = 9) -> str:
    lines = ["apiVersion: v1\nkind: Node\nmetadata: {name: bomb}\nspec:", "  a0: &a0 [lol, lol, lol, lol, lol]"]
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


_CRD = json.dumps({
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"}, "scope": "Namespaced",
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "properties": {"spec": {"type": "object", "properties": {
                     "name": {"type": "string", "pattern": "^(a+)+$"}}}}}}}]},
}) + "\n---\n" + json.dumps({"apiVersion": "example.com/v1", "kind": "Widget",
                             "metadata": {"name": "w1", "namespace": "default"}, "spec": {"name": "a" * 40 + "!"}})
_NODE = "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n"
_POD = "apiVersion: v1\nkind: Pod\nmetadata: {name: p1}\nspec:\n  containers: [{name: c, image: x}]\n"


def _slice(attribute: str) -> str:
    return json.dumps({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": "s1"},
                       "spec": {"driver": "gpu.example.com", "nodeName": "n1",
                                "pool": {"name": "n1", "generation": 1, "resourceSliceCount": 1},
                                "devices": [{"name": "gpu-0", "attributes": {"model": {"string": attribute}}}]}})


def _claim(expression: str) -> str:
    return json.dumps({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                       "metadata": {"name": "c", "namespace": "default"},
                       "spec": {"devices": {"requests": [{"name": "r", "exactly": {
                           "deviceClassName": "gpu.example.com",
                           "selectors": [{"cel": {"expression": expression}}]}}]}}})


#: file name -> (text, the problem part of the expected line, after "{path}")
CASES: dict[str, tuple[str, str]] = {
    "alias-bomb.yaml": (_laughs(), "#1 (Node bomb): line 8: document contains excessive aliasing (its aliases "
                                   "expand to 5,318 of 5,369 nodes)"),
    "backtracking-pattern.yaml": (_CRD, "#2 (Widget default/w1): Widget default/w1 is invalid: spec.name: "
                                        "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!' does not match '^(a+)+$'"),
    "attribute-of-1-mb.yaml": (_slice("x" * 1_000_000), "#1 (ResourceSlice s1): ResourceSlice s1 is invalid: "
                               "spec.devices[0].attributes['model'].string: Too long: may not be more than 64 bytes "
                               "(got 1,000,000)"),
    "cel-of-1-mb.yaml": (_claim("device.driver == '" + "a" * 1_000_000 + "'"),
                         "#1 (ResourceClaim default/c): ResourceClaim default/c is invalid: spec.devices.requests[0]."
                         "exactly.selectors[0].cel.expression: Too long: may not be more than 10240 bytes "
                         "(got 1,000,019)"),
    "node-taints-a-string.yaml": (_NODE + "spec: {taints: NoSchedule}\n",
                                  "#1 (Node n1): Node n1 is invalid: spec.taints: must be a list of taints, got "
                                  "'NoSchedule'"),
    "node-conditions-a-string.yaml": (_NODE + "status: {conditions: Ready}\n",
                                      "#1 (Node n1): Node n1 is invalid: status.conditions: must be a list of "
                                      "conditions, got 'Ready'"),
    "pod-status-a-string.yaml": (_POD + "status: Running\n",
                                 "#1 (Pod p1): Pod default/p1 is invalid: status: must be a mapping, got 'Running'"),
    "deep.yaml": (_NODE + "spec: {x: " + "[" * 500 + "]" * 500 + "}\n",
                  "#1 (Node n1): line 4: nesting deeper than 100 levels"),
    "deep.json": ('{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {"x": '
                  + "[" * 100_000 + "]" * 100_000 + "}}", ": invalid JSON: nesting deeper than 100 levels"),
    "huge-integer.yaml": (_NODE + "spec: {x: " + "9" * 5000 + "}\n",
                          "#1 (Node n1): line 4: an integer of 5000 characters is beyond the limit of 4300 digits"),
    "duplicate-key.yaml": (_NODE + "metadata: {name: n2}\n",
                           '#1 (Node n1): line 4: key "metadata" already set in map (first at line 3)'),
    "duplicate-object.yaml": (_NODE + "---\n" + _NODE,
                              "#2 (Node n1): line 5: duplicate object, also defined at {path}#1 line 1"),
}


def _kai(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kai_cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[tuple[str, str], tuple[int, str, str, Path]]:
    """(command, file) -> (exit code, stdout, stderr, path), every command started at once."""
    root = tmp_path_factory.mktemp("hostile")
    procs = {}
    for name, (text, _) in CASES.items():
        path = root / name
        path.write_text(text)
        procs[("validate", name)] = (_kai("validate", str(path)), path)
        procs[("run", name)] = (_kai("run", "scheduler", "--cluster", str(path), "--until-idle"), path)
    out = {}
    try:
        for key, (proc, path) in procs.items():
            try:
                stdout, stderr = proc.communicate(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                pytest.fail(f"kai-cli {key[0]} {key[1]} hung (killed after {TIMEOUT} s)")
            out[key] = (proc.returncode, stdout, stderr, path)
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_run_prints_one_line_and_exits_2(outcomes, name):
    code, stdout, stderr, path = outcomes[("run", name)]
    expected = f"kai-cli: error: {path}" + CASES[name][1].replace("{path}", str(path))
    assert (code, stdout, stderr.splitlines()) == (2, "", [expected]), stderr[-2000:]


@pytest.mark.parametrize("name", list(CASES))
def test_validate_names_the_problem_and_exits_2(outcomes, name):
    code, stdout, stderr, path = outcomes[("validate", name)]
    expected = f"{path}" + CASES[name][1].replace("{path}", str(path))
    assert (code, stdout) == (2, ""), stderr[-2000:]
    assert stderr.splitlines() == [expected, f"kai-cli: error: 1 problem(s) in {path}"]
