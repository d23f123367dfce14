"""The clusters kai's components run against in these tests, and the ``backend`` fixture that gives
the same test body each of them.

- :class:`LiveCluster`: kai's embedded cluster behind the fake API server
  (:class:`kai_core.testing.FakeApiServer`), its controllers (the resourceclaim controller, the
  plugins') on a thread of their own, as a control plane runs them.
- :class:`RealCluster`: the session control plane of ``test/controlplane`` (etcd, kube-apiserver with
  RBAC, kube-controller-manager with the resourceclaim, garbage-collector and namespace
  controllers, built from their Go modules): a namespace of its own per test, the cluster-scoped
  objects it made (nodes, ResourceSlices, DeviceClasses) deleted afterwards.

Both run kai's scheduler and binder as threads (:class:`kai_cli.kube.SchedulerComponent`,
``BinderComponent``) that reach the cluster over HTTP through a kubeconfig, and both offer the same
calls to a test: ``create``, ``get``, ``list``, ``pod``/``node`` builders, ``start``, ``wait_for``,
``violations`` (:func:`kai_binder.testing.invariant_violations` over the test's own objects).

The ``backend`` fixture (re-exported by conftest.py) is parametrized ``fake`` and ``real``; the
``real`` variants carry the ``realcluster`` mark: ``tox -e e2e`` runs them, the other environments
deselect them (``-m "not realcluster"``). The real control plane comes from the source checkout's
``test/controlplane/fixture.py``; without it the ``real`` variants fail saying so.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest
import yaml

# the clusters and components are the plugin authors' test kit's (kai_cli.testing); conftest.py
# re-exports them from here
from kai_cli.testing import WAIT, Components, LiveCluster, Running, wait_for  # noqa: F401
from kai_core.api.resources import RES_NAMESPACES, RES_NODES, RES_PODS

ROOT = Path(__file__).resolve().parents[3]
CONTROLPLANE_FIXTURE = ROOT / "test" / "controlplane" / "fixture.py"
KAI_CRDS = ROOT / "deploy" / "crds"

# -- one test body, two clusters ----------------------------------------------------------------------


class Backend(Components):
    """What a scenario test sees of its cluster, whichever it is: a namespace of its own
    (:attr:`ns`), the admin's reads and writes (:attr:`store`, and the shorthands below, which put
    namespaced objects in :attr:`ns`), builders, kai's components (:meth:`start`) and the
    invariants (:meth:`violations`)."""

    name = ""
    scheduler_name = "kai-scheduler"
    store = None
    ns = ""

    def pod(self, name: str, cpu: str = "100m", **spec) -> dict:
        """A one-container Pod of kai's scheduler requesting ``cpu``; keyword arguments go into its spec."""
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": self.ns},
                "spec": {"schedulerName": self.scheduler_name,
                         "containers": [{"name": "c", "image": "busybox:1",
                                         "resources": {"requests": {"cpu": cpu}}}], **spec}}

    @staticmethod
    def node(name: str, cpu: str = "8", memory: str = "32Gi", pods: str = "110", labels: dict | None = None) -> dict:
        """A Ready Node with that much allocatable."""
        alloc = {"cpu": cpu, "memory": memory, "pods": pods}
        return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": dict(labels or {})},
                "status": {"capacity": dict(alloc), "allocatable": alloc,
                           "conditions": [{"type": "Ready", "status": "True"}]}}

    def create(self, *objs: dict) -> list[dict]:
        """Create each object (namespaced ones in :attr:`ns`); returns them as stored."""
        out = []
        for obj in objs:
            obj = json.loads(json.dumps(obj))
            kind = self.store.kinds.for_object(obj)
            if kind.namespaced:
                obj.setdefault("metadata", {})["namespace"] = self.ns
            out.append(self._create(kind, obj))
        return out

    def _create(self, kind, obj: dict) -> dict:
        return self.store.create(obj)

    def get(self, resource: str, name: str) -> dict:
        return self.store.get(resource, name, self.ns)

    def list(self, resource: str) -> list[dict]:
        """The objects of ``resource`` in :attr:`ns` (cluster-scoped kinds: all of them)."""
        kind = self.store.kinds.get(resource)
        return self.store.list(resource, self.ns if kind.namespaced else None)[0]

    def label_namespace(self, labels: dict) -> None:
        self.store.patch(RES_NAMESPACES, self.ns, None, {"metadata": {"labels": labels}})

    def violations(self) -> list[str]:
        """:func:`kai_binder.testing.invariant_violations` over this test's objects: its namespace,
        and the nodes it made."""
        from kai_binder.testing import invariant_violations

        return invariant_violations(_OwnObjects(self), [self.scheduler_name])

    def own_nodes(self) -> set[str] | None:
        """The nodes this test made (None: every node is the test's)."""
        return None

    def close(self) -> None:
        raise NotImplementedError


class _OwnObjects:
    """A read view of a backend's store limited to the test's namespace and nodes."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.kinds = backend.store.kinds

    def list(self, resource: str, namespace=None, label_selector=None, field_selector=None):
        kind = self.kinds.get(resource)
        items, rv = self.backend.store.list(resource, self.backend.ns if kind.namespaced else None,
                                            label_selector, field_selector)
        own = self.backend.own_nodes()
        if kind.resource == RES_NODES and own is not None:
            items = [n for n in items if n["metadata"]["name"] in own]
        return items, rv

    def get(self, resource: str, name: str, namespace=None):
        return self.backend.store.get(resource, name, namespace or self.backend.ns)


class FakeBackend(Backend):
    """A :class:`LiveCluster` (embedded cluster, fake API server) with a namespace for the test."""

    name = "fake"

    def __init__(self, tmp_path: Path, ns: str) -> None:
        self.live = LiveCluster(tmp_path)
        self.store = self.live.store
        self.kubeconfig = self.live.kubeconfig
        self.running = self.live.running
        self.ns = ns
        self.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    def close(self) -> None:
        self.live.close()


class RealCluster(Backend):
    """The real control plane (a ``ControlPlane`` of test/controlplane) with a namespace of its own
    for the test. Nodes are made as ``ControlPlane.add_node`` makes them (Ready, without the
    not-ready taint admission gives them); cluster-scoped objects the test creates are deleted by
    :meth:`close`, with the namespace, after its pods are deleted at once (no kubelet would finish a
    graceful deletion)."""

    name = "real"
    _crds_installed = False

    def __init__(self, controlplane, tmp_path: Path, ns: str) -> None:
        from kai_core.client.store import KubernetesStore

        self.cp = controlplane
        self.ns = ns
        self.running: list[Running] = []
        self._cluster_objects: list[tuple[str, str]] = []
        self._install_crds()
        controlplane.ensure_namespace(ns)
        # the admin's kubeconfig, its context in the test's namespace (Leases go there)
        config = yaml.safe_load(Path(controlplane.kubeconfig).read_text())
        for ctx in config["contexts"]:
            ctx["context"]["namespace"] = ns
        self.kubeconfig = tmp_path / "real.kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.store = KubernetesStore.from_kubeconfig(str(self.kubeconfig), qps=0)

    def _install_crds(self) -> None:
        """kai's CRDs (BindRequest, PodGroup), once per session, as ``kubectl apply`` would."""
        if RealCluster._crds_installed:
            return
        cp = self.cp
        for path in sorted(KAI_CRDS.glob("*.yaml")):
            for crd in yaml.safe_load_all(path.read_text()):
                base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
                status, _ = cp.request("POST", base, crd)
                if status == 409:
                    current = cp.request_json("GET", f"{base}/{crd['metadata']['name']}")
                    crd["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                    cp.request_json("PUT", f"{base}/{crd['metadata']['name']}", crd)
                spec = crd["spec"]
                version = next(v["name"] for v in spec["versions"] if v.get("served"))
                path_ = f"/apis/{spec['group']}/{version}/{spec['names']['plural']}"
                cp.wait_for(lambda p=path_: cp.request("GET", p)[0] == 200, 60, f"CRD {crd['metadata']['name']}")
        RealCluster._crds_installed = True

    def _create(self, kind, obj: dict) -> dict:
        from kai_core.api.errors import AlreadyExists

        md = obj["metadata"]
        if kind.resource == RES_NODES:
            status = obj.get("status") or {}
            node = self.cp.add_node(md["name"], labels=md.get("labels"), capacity=status.get("capacity"),
                                    allocatable=status.get("allocatable"),
                                    taints=(obj.get("spec") or {}).get("taints") or ())
            self._cluster_objects.append((kind.resource, md["name"]))
            return node
        if kind.namespaced:
            return self.store.create(obj)
        try:
            out = self.store.create(obj)
        except AlreadyExists:  # left by a test that could not clean up: take it over
            current = self.store.get(kind.resource, md["name"])
            md["resourceVersion"] = current["metadata"]["resourceVersion"]
            out = self.store.update(obj)
        self._cluster_objects.append((kind.resource, md["name"]))
        return out

    def own_nodes(self) -> set[str]:
        return {name for resource, name in self._cluster_objects if resource == RES_NODES}

    def close(self) -> None:
        from kai_core.api.errors import ApiError

        self.stop_components()
        cp, ns = self.cp, self.ns
        try:
            for pod in self.store.list(RES_PODS, ns)[0]:
                cp.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}",
                           {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})
            cp.request("DELETE", f"/api/v1/namespaces/{ns}")
            for resource, name in reversed(self._cluster_objects):
                try:
                    self.store.delete(resource, name)
                except ApiError:
                    pass
        finally:
            self.store.close()


def load_controlplane_fixtures() -> dict:
    """``controlplane`` and ``controlplane_binaries`` from test/controlplane/fixture.py (loaded by
    path, under the name test/conftest.py uses), or one ``controlplane`` fixture that fails saying
    why when this is not a source checkout."""
    if not CONTROLPLANE_FIXTURE.is_file():
        @pytest.fixture(scope="session")
        def controlplane():
            pytest.fail(f"the real control plane needs a source checkout of kai: {CONTROLPLANE_FIXTURE} is absent",
                        pytrace=False)

        return {"controlplane": controlplane}
    import importlib.util
    import sys

    name = "kai_controlplane_fixture"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, CONTROLPLANE_FIXTURE)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    mod = sys.modules[name]
    return {"controlplane": mod.controlplane, "controlplane_binaries": mod.controlplane_binaries}


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.realcluster)])
def backend(request, tmp_path) -> Backend:
    """The test's cluster: ``fake`` (:class:`FakeBackend`) or ``real`` (:class:`RealCluster`), with
    a fresh namespace; closed after the test."""
    pytest.importorskip("kubernetes", reason="the kubernetes client is not installed")
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.originalname.lower().removeprefix("test_")).strip("-")[:40]
    ns = f"{stem.strip('-')}-{secrets.token_hex(3)}"
    if request.param == "fake":
        cluster: Backend = FakeBackend(tmp_path, ns)
    else:
        cluster = RealCluster(request.getfixturevalue("controlplane"), tmp_path, ns)
    try:
        yield cluster
    finally:
        cluster.close()
