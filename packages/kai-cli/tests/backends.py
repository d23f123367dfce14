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
import threading
import time
from pathlib import Path

import pytest
import yaml

from kai_binder.binder import add_binder_hookspecs
from kai_core.api.features import FeatureGates
from kai_core.api.resources import RES_NAMESPACES, RES_NODES, RES_PODS
from kai_core.cluster import EmbeddedCluster
from kai_core.plugins import build_plugin_manager

ROOT = Path(__file__).resolve().parents[3]
CONTROLPLANE_FIXTURE = ROOT / "test" / "controlplane" / "fixture.py"
KAI_CRDS = ROOT / "deploy" / "crds"

#: the most any test waits for something to happen (a bound, not an expectation)
WAIT = 30.0


def wait_for(predicate, what: str, timeout: float = WAIT) -> None:
    """Poll ``predicate`` until it holds; fail the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:  # an object not there yet reads as "not yet"
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {timeout:g}s")
        time.sleep(0.02)


class Running:
    """A component (kai_cli.kube.Component) running :meth:`run` on a thread; what it returned or
    raised (any BaseException, so a simulated crash never escapes the thread) is kept."""

    def __init__(self, component) -> None:
        self.component = component
        self.code: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"test-{component.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.code = self.component.run()
        except BaseException as exc:  # noqa: BLE001 - recorded for the test to look at
            self.error = exc

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def wait_started(self) -> None:
        wait_for(lambda: self.component.started.is_set() or self.done, f"{self.component.name} to start")
        if self.error is not None:
            raise AssertionError(f"{self.component.name} failed to start: {self.error!r}")

    def stop(self, timeout: float = WAIT):
        """Stop it and wait for the thread; returns the exit code (or raises what it raised)."""
        self.component.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.component.name} did not stop within {timeout:g}s"
        return self.code

    def url(self, path: str) -> str:
        server = next(s for s in self.component.servers if path in s.paths)
        return server.url + path


class Components:
    """kai's scheduler and binder on threads against the cluster of :attr:`kubeconfig`."""

    kubeconfig: Path | str
    running: list[Running]

    def options(self, **kw):
        """ClusterOptions for this cluster: short periods and backoffs, so tests stay quick."""
        from kai_cli.kube import ClusterOptions

        kw.setdefault("period", 0.2)
        kw.setdefault("sync_timeout", WAIT)
        kw.setdefault("store_kwargs", {"backoff_base": 0.01, "backoff_cap": 0.1, "sync_timeout": WAIT})
        return ClusterOptions(kubeconfig=str(self.kubeconfig), **kw)

    def start(self, which: str, gates: str = "DynamicResourceAllocation=true", pm=None, **kw) -> Running:
        """Run the ``scheduler`` or the ``binder`` on a thread; ``kw`` go to ClusterOptions, except
        the component's own (``scheduler_name``, ``binder_kwargs``)."""
        from kai_cli.kube import BinderComponent, SchedulerComponent

        own_keys = ("scheduler_name", "backoff_limit", "binder_kwargs", "announce")
        own = {k: kw.pop(k) for k in own_keys if k in kw}
        if pm is None:
            pm = build_plugin_manager()
            add_binder_hookspecs(pm)
        cls = SchedulerComponent if which == "scheduler" else BinderComponent
        running = Running(cls(self.options(**kw), FeatureGates.parse(gates), pm, **own))
        self.running.append(running)
        running.wait_started()
        return running

    @staticmethod
    def wait_for(predicate, what: str, timeout: float = WAIT) -> None:
        wait_for(predicate, what, timeout)

    def stop_components(self) -> None:
        for r in self.running:
            if not r.done:
                r.component.stop()
        for r in self.running:
            r.thread.join(WAIT)


class LiveCluster(Components):
    """An embedded cluster behind the fake API server, playing a real cluster: its controllers
    (the resourceclaim controller, the plugins') run on a thread of their own, as a control plane
    would, and kai's components reach it over HTTP only, through a kubeconfig."""

    def __init__(self, tmp_path: Path, *paths, store=None, bookmark_interval: float = 0.2) -> None:
        from kai_core.testing import FakeApiServer

        self.pm = build_plugin_manager()
        add_binder_hookspecs(self.pm)
        if store is None:
            self.cluster = EmbeddedCluster(self.pm)
            for p in paths:
                self.cluster.load(p)
            self.store = self.cluster.store
        else:
            self.cluster = None
            self.store = store
        self.server = FakeApiServer(self.store, bookmark_interval=bookmark_interval).start()
        self.kubeconfig = self.server.write_kubeconfig(tmp_path / "kubeconfig")
        self.running: list[Running] = []
        self._stop = threading.Event()
        self._controllers = threading.Thread(target=self._control_plane, name="test-control-plane",
                                             daemon=True)
        self._controllers.start()

    def _control_plane(self) -> None:
        while not self._stop.wait(0.05):
            if self.cluster is not None:
                self.cluster.reconcile_controllers()

    def close(self) -> None:
        self.stop_components()
        self._stop.set()
        self._controllers.join(WAIT)
        self.server.stop()


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
