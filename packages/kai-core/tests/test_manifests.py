"""Manifests load from files and directories into the embedded cluster, and bad ones are named."""

from __future__ import annotations

import json

import pytest
import yaml

from kai_core.apiserver.manifests import (
    ManifestError,
    apply_manifests,
    check_manifests,
    dump_objects,
    manifest_files,
    parse_documents,
    read_manifests,
    save_state,
)
from kai_core.apiserver.store import EmbeddedStore
from kai_core.cluster import EmbeddedCluster
from kai_core.plugins import build_plugin_manager

NODE = """
apiVersion: v1
kind: Node
metadata:
  name: n1
status:
  allocatable: {cpu: "8", memory: 32Gi}
"""

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
  - name: main
    image: busybox:1.36
"""


def pod_yaml(name: str) -> str:
    return POD.replace("{name}", name)


@pytest.fixture
def cluster() -> EmbeddedCluster:
    return EmbeddedCluster(build_plugin_manager(load_external=False))


def test_yaml_is_read_with_pyyamls_c_loader():
    from kai_core.apiserver import manifests

    if not hasattr(yaml, "CSafeLoader"):
        pytest.skip("PyYAML is built without libyaml here")
    assert issubclass(manifests._Loader, yaml.CSafeLoader)


def test_a_file_with_several_documents(tmp_path, cluster):
    f = tmp_path / "all.yaml"
    f.write_text("---\n" + NODE + "---\n" + pod_yaml("a") + "---\n" + pod_yaml("b") + "\n---\n")
    loaded = cluster.load(f)
    assert [(o["kind"], o["metadata"]["name"]) for o in loaded] == [
        ("Node", "n1"),
        ("Pod", "a"),
        ("Pod", "b"),
    ]
    assert cluster.store.get("pods", "a")["spec"]["schedulerName"] == "default-scheduler"


def test_a_directory_is_read_recursively_in_path_order(tmp_path, cluster):
    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes" / "n1.yml").write_text(NODE)
    (tmp_path / "b.yaml").write_text(pod_yaml("from-b"))
    (tmp_path / "a.json").write_text(json.dumps(yaml.safe_load(pod_yaml("from-json"))))
    (tmp_path / "notes.txt").write_text("not a manifest")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.yaml").write_text("this: [is not loaded")
    files = manifest_files(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a.json", "b.yaml", "nodes/n1.yml"]
    cluster.load(tmp_path)
    assert sorted(o["metadata"]["name"] for o in cluster.store.list("pods")[0]) == ["from-b", "from-json"]
    assert cluster.store.get("nodes", "n1")


def test_list_objects_are_flattened(tmp_path):
    f = tmp_path / "list.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [yaml.safe_load(pod_yaml("x")), yaml.safe_load(pod_yaml("y"))],
            }
        )
    )
    manifests = read_manifests(f)
    assert [m.obj["metadata"]["name"] for m in manifests] == ["x", "y"]
    assert manifests[1].source == f"{f}#1.items[1]"


def test_a_namespaced_object_without_namespace_goes_to_default(cluster):
    [obj] = apply_manifests(cluster.store, parse_documents(pod_yaml("p"), "p.yaml"))
    assert obj["metadata"]["namespace"] == "default"


def test_a_missing_namespace_is_created_on_load(cluster):
    text = pod_yaml("p").replace("name: p", "name: p\n  namespace: team-a")
    apply_manifests(cluster.store, parse_documents(text, "p.yaml"))
    assert cluster.store.get("pods", "p", "team-a")
    assert cluster.store.get("namespaces", "team-a")["status"]["phase"] == "Active"


def test_a_refused_object_does_not_leave_its_namespace_behind(cluster):
    text = "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: ghost}\nspec: {containers: []}\n"
    with pytest.raises(ManifestError, match="Pod ghost/bad"):
        apply_manifests(cluster.store, parse_documents(text, "bad.yaml"))
    assert "ghost" not in [ns["metadata"]["name"] for ns in cluster.store.list("namespaces")[0]]


def test_namespaces_and_crds_are_applied_before_what_needs_them(cluster):
    text = (
        pod_yaml("p").replace("name: p", "name: p\n  namespace: late")
        + "---\n"
        + ("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: late\n  labels: {team: x}\n")
    )
    apply_manifests(cluster.store, parse_documents(text, "x.yaml"))
    assert cluster.store.get("namespaces", "late")["metadata"]["labels"] == {"team": "x"}


def test_uids_resource_versions_and_status_given_in_a_manifest_are_kept(cluster):
    text = (
        pod_yaml("p").replace(
            "name: p", "name: p\n  uid: 0b9d7d9e-1111-4222-8333-444455556666\n  resourceVersion: '42'"
        )
        + "status:\n  phase: Running\n"
    )
    [obj] = apply_manifests(cluster.store, parse_documents(text, "p.yaml"))
    assert obj["metadata"]["uid"] == "0b9d7d9e-1111-4222-8333-444455556666"
    assert obj["metadata"]["resourceVersion"] == "42"
    assert obj["status"]["phase"] == "Running"


def test_timestamps_stay_strings(cluster):
    text = pod_yaml("p").replace(
        "name: p", "name: p\n  creationTimestamp: 2024-05-01T10:00:00Z\n  annotations: {at: 2024-05-01}"
    )
    [m] = parse_documents(text, "p.yaml")
    assert m.obj["metadata"]["creationTimestamp"] == "2024-05-01T10:00:00Z"
    [obj] = apply_manifests(cluster.store, [m])
    assert obj["metadata"]["annotations"] == {"at": "2024-05-01"}


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text(NODE + "---\nkind: Pod\nmetadata: {name: [unclosed\n")
    with pytest.raises(ManifestError) as err:
        read_manifests(f)
    message = str(err.value)
    assert message.startswith(f"{f}:") and "invalid YAML" in message
    line = int(message[len(str(f)) + 1 :].split(":")[0])
    assert line >= 10  # the error is in the second document, not at the top


def test_invalid_json_names_the_file_and_line(tmp_path):
    f = tmp_path / "broken.json"
    f.write_text('{\n  "apiVersion": "v1",\n  "kind": \n}\n')
    with pytest.raises(ManifestError, match=rf"{f}:4: invalid JSON"):
        read_manifests(f)


def test_a_document_that_is_not_a_mapping_is_named():
    with pytest.raises(ManifestError, match=r"x.yaml#2: a manifest must be a mapping, got list"):
        parse_documents(NODE + "---\n- a\n- b\n", "x.yaml")
    with pytest.raises(ManifestError, match=r"x.yaml#1.items\[0\]: a manifest must be a mapping"):
        parse_documents("apiVersion: v1\nkind: List\nitems: [3]\n", "x.yaml")


@pytest.mark.parametrize("field", ["apiVersion", "kind"])
def test_a_missing_api_version_or_kind_is_named(field):
    doc = yaml.safe_load(pod_yaml("nameless-" + field))
    del doc[field]
    text = NODE + "---\n" + yaml.safe_dump(doc)
    with pytest.raises(ManifestError) as err:
        parse_documents(text, "x.yaml")
    assert "x.yaml#2" in str(err.value) and f"nameless-{field}" in str(err.value)
    assert f"{field} is required" in str(err.value)


def test_an_object_the_cluster_refuses_is_named_with_the_reason(tmp_path, cluster):
    f = tmp_path / "objs.yaml"
    f.write_text(NODE + "---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\n")
    with pytest.raises(ManifestError) as err:
        cluster.load(f)
    message = str(err.value)
    assert f"{f}#2 (Widget w1)" in message and "Widget" in message and "nothing serves this kind" in message


def test_a_bad_cel_selector_in_a_manifest_is_named(tmp_path, cluster):
    f = tmp_path / "class.yaml"
    f.write_text(
        "apiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata: {name: broken}\n"
        "spec:\n  selectors:\n  - cel: {expression: 'device.driver =='}\n"
    )
    with pytest.raises(ManifestError) as err:
        cluster.load(f)
    assert "(DeviceClass broken)" in str(err.value) and "device.driver ==" in str(err.value)


def test_check_manifests_reports_every_refused_object():
    store = EmbeddedStore()
    text = (
        pod_yaml("ok") + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: no-containers}\nspec: {}\n"
        "---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"
    )
    problems = check_manifests(store, parse_documents(text, "x.yaml"))
    assert len(problems) == 2
    assert problems[0].startswith("x.yaml#2 (Pod no-containers)") and "spec.containers" in problems[0]
    assert problems[1].startswith("x.yaml#3 (Widget w)")
    assert store.get("pods", "ok")


def test_missing_path_and_empty_directory_are_named(tmp_path):
    with pytest.raises(ManifestError, match="no such file or directory"):
        read_manifests(tmp_path / "nope")
    with pytest.raises(ManifestError, match="no manifest files"):
        read_manifests(tmp_path)


def test_labels_of_unparseable_objects_never_fail():
    [m] = parse_documents("apiVersion: v1\nkind: Pod\nmetadata: not-a-mapping\n", "x.yaml")
    assert m.label() == "x.yaml#1 (Pod <unnamed>)"
    [m] = parse_documents(
        "apiVersion: v1\nkind: Pod\nmetadata: {generateName: w-, namespace: ns}\n", "x.yaml"
    )
    assert m.label() == "x.yaml#1 (Pod ns/w-*)"


def test_saved_state_is_one_document_per_object_and_reads_back(tmp_path, cluster):
    f = tmp_path / "in.yaml"
    f.write_text(NODE + "---\n" + pod_yaml("p"))
    cluster.load(f)
    state = tmp_path / "state.yaml"
    save_state(cluster.store, state)
    manifests = read_manifests(state)
    assert len(manifests) == len(cluster.store.all_objects())
    assert {m.obj["kind"] for m in manifests} >= {"CustomResourceDefinition", "Namespace", "Node", "Pod"}
    assert [m.obj for m in manifests] == cluster.store.all_objects()
    assert not (tmp_path / "state.yaml.tmp").exists()


def test_dump_puts_api_version_kind_and_metadata_first():
    text = dump_objects([{"spec": {}, "metadata": {"name": "x"}, "kind": "ConfigMap", "apiVersion": "v1"}])
    assert text.splitlines()[:3] == ["apiVersion: v1", "kind: ConfigMap", "metadata:"]
    quoted = dump_objects(
        [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "x"},
                "data": {"when": "2024-05-01T10:00:00Z", "n": "1", "yes": "on"},
            }
        ]
    )
    [m] = parse_documents(quoted, "q.yaml")
    assert m.obj["data"] == {"when": "2024-05-01T10:00:00Z", "n": "1", "yes": "on"}


def test_upstream_demo_specs_load(upstream_dir, cluster):
    from kai_core.apiserver.schema import load_crd

    cluster.store.restore(load_crd(upstream_dir / "nvidia.computedomains.crd.yaml"))
    cluster.load(upstream_dir / "nvidia.deviceclasses.yaml")
    for demo in ("nvidia.demo.channel-injection.yaml", "nvidia.demo.channel-injection-all.yaml"):
        for obj in cluster.load(upstream_dir / demo):
            assert obj["metadata"]["uid"]
    pods = cluster.store.list("pods")[0]
    assert pods and all(p["spec"]["schedulerName"] == "default-scheduler" for p in pods)
