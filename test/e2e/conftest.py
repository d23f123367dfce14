"""Fixtures for end-to-end tests on the real control plane (the session ``controlplane`` of
test/controlplane): kai installed as the Helm chart installs it, its components as processes
authorized by the chart's RBAC, a namespace and nodes per test.

- ``kube``: the admin's API calls (``create``, ``apply``, ``get``, ``list``, ``delete``...) on any
  kind, by apiVersion and kind.
- ``kai_install`` (session): the CRDs of ``deploy/crds`` and the chart's ServiceAccounts, ClusterRoles,
  Roles and bindings, rendered by the Helm engine the chart tests use, with the seed's ``--set``
  flags (DRA on). Nothing else of the chart: without kubelets its Deployments cannot run.
- ``nvidia`` (session): NVIDIA's DeviceClasses and ComputeDomain CRD from ``../shared/upstream``;
  ``nvidia.play_compute_domain_controller(ns)`` creates the ComputeDomains' channel claim templates.
- ``namespace``: a fresh namespace; afterwards its pods are force-deleted (no kubelet would finish
  a graceful deletion) and the namespace is deleted (checked to be gone at the end of the session).
- ``nodes``: ``nodes.add(...)`` / ``nodes.add_gb200(n)``: Nodes (``ControlPlane.add_node``) and
  their ResourceSlices, deleted afterwards.
- ``kai``: ``kai.start("scheduler"|"binder", *more_args)`` runs ``kai-cli run <component>`` with the
  chart's own command line (``--kubeconfig`` for ``--in-cluster``, loopback ports), as the
  component's ServiceAccount with a token from the TokenRequest API; ``kai.wait_for(...)`` and
  ``kai.wait_bound(ns, pod)`` fail early, with the components' logs, when one exits. Afterwards
  the components are stopped, and every request of kai's ServiceAccounts the API server answered
  403 fails the test, named by verb and resource (from the API server's audit log);
  ``kai.rejected_writes()`` lists every write it refused.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "kai-scheduler"
KAI_CRDS = ROOT / "deploy" / "crds"
RELEASE = "kai"
KAI_NAMESPACE = "kai-system"
DRA_GATE = "--feature-gates=DynamicResourceAllocation=true"
#: the helm flags of shared/seed/dra.md, verbatim
SEED_HELM_FLAGS = (
    f"--set scheduler.additionalArgs[0]={DRA_GATE} --set binder.additionalArgs[0]={DRA_GATE}"
)
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
CLUSTER_SCOPED = {
    "Namespace", "Node", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "DeviceClass", "ResourceSlice",
}  # fmt: skip
COMPONENTS = ("scheduler", "binder")
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


# -- the admin's API calls --------------------------------------------------------------------------


class KubeError(AssertionError):
    def __init__(self, method: str, path: str, status: int, body: bytes):
        self.status = status
        super().__init__(f"{method} {path}: HTTP {status}: {body.decode(errors='replace')[:500]}")


class Kube:
    """The admin's calls to the API server, by apiVersion and kind (plural: the kind in lower case
    plus "s", or "es" after an "s")."""

    def __init__(self, controlplane):
        self.cp = controlplane

    @staticmethod
    def path(api_version: str, kind: str, name: str = "", namespace: str = "", sub: str = "") -> str:
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        plural = kind.lower() + ("es" if kind.endswith("s") else "s")
        p = base + (f"/namespaces/{namespace}" if namespace and kind not in CLUSTER_SCOPED else "") + f"/{plural}"
        return p + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")

    def call(self, method: str, path: str, body: Any = None, ok: Iterable[int] = (200, 201), **kw) -> dict:
        status, data = self.cp.request(method, path, body, **kw)
        if status not in tuple(ok):
            raise KubeError(method, path, status, data)
        return json.loads(data) if data else {}

    def _obj_path(self, obj: dict, namespace: str = "", sub: str = "", named: bool = True) -> str:
        md = obj["metadata"]
        ns = md.get("namespace") or namespace
        return self.path(obj["apiVersion"], obj["kind"], md["name"] if named else "", ns, sub)

    def create(self, obj: dict, namespace: str = "") -> dict:
        return self.call("POST", self._obj_path(obj, namespace, named=False), obj)

    def apply(self, obj: dict, namespace: str = "") -> dict:
        """Create, or replace what is there (as ``kubectl apply`` ends up)."""
        try:
            return self.create(obj, namespace)
        except KubeError as e:
            if e.status != 409:
                raise
        current = self.call("GET", self._obj_path(obj, namespace))
        new = {**obj, "metadata": {**obj["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}}
        return self.call("PUT", self._obj_path(obj, namespace), new)

    def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> dict | None:
        status, data = self.cp.request("GET", self.path(api_version, kind, name, namespace))
        if status == 404:
            return None
        if status != 200:
            raise KubeError("GET", self.path(api_version, kind, name, namespace), status, data)
        return json.loads(data)

    def list(self, api_version: str, kind: str, namespace: str = "", label_selector: str = "") -> list[dict]:
        q = f"?labelSelector={urllib.parse.quote(label_selector)}" if label_selector else ""
        return self.call("GET", self.path(api_version, kind, "", namespace) + q)["items"]

    def delete(self, api_version: str, kind: str, name: str, namespace: str = "", grace: int | None = None) -> None:
        body = None if grace is None else {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": grace}
        self.call("DELETE", self.path(api_version, kind, name, namespace), body, ok=(200, 202, 404))

    def pod_claim(self, pod: dict, claim_name: str) -> dict:
        """The ResourceClaim made for the pod's claim ``claim_name`` from its template: the one
        ``pod.status.resourceClaimStatuses`` names, checked to be the resourceclaim controller's
        (owned by the pod, annotated with the pod's claim name)."""
        md = pod["metadata"]
        [status] = [s for s in pod["status"].get("resourceClaimStatuses") or [] if s["name"] == claim_name]
        claim = self.get("resource.k8s.io/v1", "ResourceClaim", status["resourceClaimName"], md["namespace"])
        assert claim["metadata"]["name"].startswith(f"{md['name']}-{claim_name}-")
        assert claim["metadata"]["annotations"]["resource.kubernetes.io/pod-claim-name"] == claim_name
        assert [(o["kind"], o["uid"], o.get("controller")) for o in claim["metadata"]["ownerReferences"]] == [
            ("Pod", md["uid"], True)]
        return claim

    def wait_established(self, crd_name: str, timeout: float = 60) -> None:
        """Until the CRD is Established and its kind is served (a list answers 200)."""

        def served() -> bool:
            crd = self.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd_name)
            conds = {c["type"]: c["status"] for c in ((crd or {}).get("status") or {}).get("conditions") or []}
            if conds.get("Established") != "True":
                return False
            spec = crd["spec"]
            version = next(v["name"] for v in spec["versions"] if v.get("served"))
            path = f"/apis/{spec['group']}/{version}/{spec['names']['plural']}"
            return self.cp.request("GET", path)[0] == 200

        self.cp.wait_for(served, timeout, f"CRD {crd_name} to be served")


def load_yaml(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="session")
def kube(controlplane) -> Kube:
    return Kube(controlplane)


# -- kai installed as the chart installs it --------------------------------------------------------------


@dataclass
class KaiInstall:
    release: str
    namespace: str
    #: the rendered objects applied (ServiceAccounts, roles, bindings)
    objects: list[dict]
    _args: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def args(self, component: str, helm_flags: str = "") -> list[str]:
        """The component's container args as the chart renders them with the seed's ``--set``
        flags and then ``helm_flags`` (e.g. ``--set scheduler.schedulerName=x``)."""
        if helm_flags not in self._args:
            objects = render_chart(f"{SEED_HELM_FLAGS} {helm_flags}", self.release, self.namespace)
            self._args[helm_flags] = {
                o["metadata"]["labels"]["app.kubernetes.io/component"]:
                    o["spec"]["template"]["spec"]["containers"][0]["args"]
                for o in objects if o["kind"] == "Deployment"
            }
        return list(self._args[helm_flags][component])

    def service_account(self, component: str) -> str:
        return f"{self.release}-{component}"

    def username(self, component: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account(component)}"


def render_chart(flags: str, release: str = RELEASE, namespace: str = KAI_NAMESPACE) -> list[dict]:
    """Every object the chart's templates render with ``--set`` flags (as in test_helm_chart.py)."""
    try:
        import helm_python as helm
    except ImportError:
        pytest.fail("helm-python-sdk is not installed (tox.ini's chart_deps): the chart cannot be rendered",
                    pytrace=False)
    exprs = re.findall(r"--set[= ](\S+)", flags)
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(helm.parse_set_string(",".join(exprs)), name=release, namespace=namespace)
    return [o for path in sorted(rendered) if path.endswith(".yaml") for o in yaml.safe_load_all(rendered[path]) if o]


@pytest.fixture(scope="session")
def kai_install(controlplane, kube) -> KaiInstall:
    for path in sorted(KAI_CRDS.glob("*.yaml")):
        for crd in load_yaml(path):
            kube.apply(crd)
            kube.wait_established(crd["metadata"]["name"])
    objects = render_chart(SEED_HELM_FLAGS)
    controlplane.ensure_namespace(KAI_NAMESPACE)
    applied = [o for o in objects if o["kind"] in RBAC_KINDS]
    for obj in applied:
        kube.apply(obj, KAI_NAMESPACE)
    return KaiInstall(RELEASE, KAI_NAMESPACE, applied)


# -- a namespace and nodes per test ------------------------------------------------------------------


@pytest.fixture(scope="session")
def _deleted_namespaces(controlplane, kube) -> list[str]:
    """Namespaces the tests deleted; at the end of the session each must be gone (the namespace
    controller takes about 5 s per namespace: waited for once, not after every test)."""
    names: list[str] = []
    yield names
    deadline = time.monotonic() + 60
    while (left := [n for n in names if kube.get("v1", "Namespace", n)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        status = {n: (kube.get("v1", "Namespace", n) or {}).get("status") for n in left}
        pytest.fail(f"namespaces not deleted after 60s: {status}", pytrace=False)


@pytest.fixture
def namespace(request, controlplane, kube, _deleted_namespaces) -> str:
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"e2e-{stem}-{secrets.token_hex(3)}"
    controlplane.ensure_namespace(name)
    yield name
    for pod in kube.list("v1", "Pod", name):
        kube.delete("v1", "Pod", pod["metadata"]["name"], name, grace=0)
    kube.delete("v1", "Namespace", name)
    _deleted_namespaces.append(name)


@dataclass
class Nodes:
    """Nodes a test adds (with their ResourceSlices); all deleted after the test."""

    controlplane: Any
    kube: Kube
    prefix: str
    names: list[str] = field(default_factory=list)
    slices: list[str] = field(default_factory=list)

    def add(self, name: str, *, labels: dict | None = None, capacity: dict | None = None,
            slices: Iterable[dict] = ()) -> dict:
        node = self.controlplane.add_node(name, labels=labels, capacity=capacity)
        self.names.append(name)
        owner = {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"]["uid"]}
        for s in slices:  # owned by the node, as the kubelet's are
            s = {**s, "metadata": {**s["metadata"], "ownerReferences": [owner]}}
            self.kube.create(s)
            self.slices.append(s["metadata"]["name"])
        return node

    def add_gb200(self, count: int = 4) -> list[str]:
        """GB200 nodes as kai's embedded demo has them (kai_dra_nvidia/demo: labels, 72 CPUs, four
        GPUs, two per NVLink clique) with the two ResourceSlices NVIDIA's driver publishes per node
        (``gpu.nvidia.com``: four GPUs; ``compute-domain.nvidia.com``: IMEX channel 0 and the
        daemon), renamed ``<prefix>-gb200-<i>``."""
        from kai_dra_nvidia.demo import demo_manifests_path

        demo = demo_manifests_path()
        nodes = load_yaml(demo / "10-nodes.yaml")
        slices = load_yaml(demo / "20-resourceslices.yaml")
        names = []
        for i in range(count):
            demo_node = nodes[i % len(nodes)]
            demo_name, name = demo_node["metadata"]["name"], f"{self.prefix}-gb200-{i + 1}"
            labels = {**demo_node["metadata"]["labels"], "kubernetes.io/hostname": name}
            mine = []
            for s in slices:
                if s["spec"]["nodeName"] == demo_name:
                    text = yaml.safe_dump(s).replace(demo_name, name)
                    mine.append(yaml.safe_load(text))
            self.add(name, labels=labels, capacity=demo_node["status"]["capacity"], slices=mine)
            names.append(name)
        return names

    def cleanup(self) -> None:
        for s in self.slices:
            self.kube.delete("resource.k8s.io/v1", "ResourceSlice", s)
        for n in self.names:
            self.kube.delete("v1", "Node", n)


@pytest.fixture
def nodes(controlplane, kube, namespace) -> Nodes:
    ns = Nodes(controlplane, kube, prefix=namespace)
    yield ns
    ns.cleanup()


# -- kai's components as processes, each as its own ServiceAccount ----------------------------------------


@dataclass
class Component:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (as the kubelet does), then SIGKILL after ``timeout``; the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode


def local_command(args: list[str], kubeconfig: str) -> list[str]:
    """A Deployment's ``kai-cli`` args as a local command: ``--kubeconfig`` for ``--in-cluster``,
    the servers on free loopback ports."""
    out = [sys.executable, "-c", "from kai_cli.main import cli; cli()"]
    for arg in args:
        if arg == "--in-cluster":
            out.append(f"--kubeconfig={kubeconfig}")
        elif arg.startswith(("--metrics-bind-address=", "--health-probe-bind-address=")):
            out.append(arg.split("=", 1)[0] + "=127.0.0.1:0")
        else:
            out.append(arg)
    return out


class Kai:
    """kai's components of one test; see the module docstring."""

    def __init__(self, controlplane, kube: Kube, install: KaiInstall, workdir: Path):
        self.cp, self.kube, self.install, self.workdir = controlplane, kube, install, workdir
        self.components: list[Component] = []
        self.audit_start = controlplane.audit_offset()

    def start(self, component: str, *more_args: str, helm_flags: str = "", as_component: str = "") -> Component:
        """``kai-cli run <component>`` with the args the chart renders (with the seed's flags, then
        ``helm_flags``), then ``more_args``; as the component's ServiceAccount (or ``as_component``'s)."""
        sa = self.install.service_account(as_component or component)
        kubeconfig = self.cp.kubeconfig_for_serviceaccount(
            self.install.namespace, sa, self.workdir / f"{sa}-{len(self.components)}.kubeconfig")
        cmd = local_command(self.install.args(component, helm_flags), kubeconfig)
        log = self.workdir / f"{component}-{len(self.components)}.log"
        env = {"POD_NAME": f"{sa}-e2e-{len(self.components)}", "POD_NAMESPACE": self.install.namespace}
        with log.open("wb") as out:
            popen = subprocess.Popen([*cmd, *more_args], stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env={**os.environ, **env})
        c = Component(component, popen, log)
        self.components.append(c)
        return c

    def logs(self) -> str:
        return "\n".join(f"--- {c.name} (pid {c.popen.pid}, {c.log}):\n{c.tail()}" for c in self.components)

    def wait_for(self, cond: Callable[[], Any], what: str, timeout: float = 60, interval: float = 0.1) -> Any:
        """Poll ``cond`` until truthy; fail at once, with the logs, when a component exits."""
        deadline = time.monotonic() + timeout
        while True:
            v = cond()
            if v:
                return v
            dead = [c for c in self.components if c.popen.poll() is not None]
            if dead:
                pytest.fail(f"waiting for {what}: {dead[0].name} exited with {dead[0].popen.returncode}\n"
                            + self.logs(), pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n" + self.logs(), pytrace=False)
            time.sleep(interval)

    def wait_bound(self, namespace: str, pod_name: str, timeout: float = 60) -> tuple[dict, dict]:
        """(pod, BindRequest) once the pod is bound, its only BindRequest is ``Succeeded`` and the
        binder has reported it on the pod: the PodBound condition comes last, after the request's
        status, as KAI's binder writes them (so the request is read before the pod)."""

        def bound():
            brs = self.kube.list("scheduling.run.ai/v1alpha2", "BindRequest", namespace)
            brs = [b for b in brs if b["spec"].get("podName") == pod_name]
            pod = self.kube.get("v1", "Pod", pod_name, namespace)
            reported = any(c.get("type") == "PodBound" for c in (pod.get("status") or {}).get("conditions") or [])
            if (pod["spec"].get("nodeName") and reported
                    and [(b.get("status") or {}).get("phase") for b in brs] == ["Succeeded"]):
                return pod, brs[0]
            return None

        return self.wait_for(bound, f"pod {namespace}/{pod_name} to be bound", timeout)

    def assert_carried_out(self, pod: dict, br: dict) -> list[dict]:
        """The pod is on the BindRequest's node with the binder's PodBound condition, and each of
        its claims (made by the real resourceclaim controller) is allocated as the request says,
        reserved for the pod and protected from deletion while allocated. Returns the claims."""
        node = pod["spec"]["nodeName"]
        assert br["spec"]["selectedNode"] == node and br["metadata"]["labels"]["selected-node"] == node
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
        assert conditions.get("PodScheduled") == conditions.get("PodBound") == "True", conditions
        claims = []
        for entry in br["spec"].get("resourceClaimAllocations") or []:
            claim = self.kube.pod_claim(pod, entry["name"])
            assert claim["status"]["allocation"] == entry["allocation"]
            assert claim["status"]["reservedFor"] == [
                {"resource": "pods", "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}]
            assert "resource.kubernetes.io/delete-protection" in claim["metadata"]["finalizers"]
            claims.append(claim)
        return claims

    def stop(self) -> dict[str, int]:
        """Stop every component (SIGTERM); their exit codes by ``<component>-<index>``."""
        return {f"{c.name}-{i}": c.stop() for i, c in enumerate(self.components)}

    def assert_clean_stop(self) -> None:
        """Every component stops on SIGTERM with 0, and the API server refused none of their
        requests for lack of permission and none of their writes."""
        codes = self.stop()
        assert set(codes.values()) == {0}, f"exit codes {codes}\n{self.logs()}"
        self.assert_no_forbidden()
        assert self.rejected_writes() == []

    def requests(self, min_code: int = 0) -> list[dict]:
        """Audit events of kai's ServiceAccounts since this fixture began, answered ``min_code`` or above."""
        users = {self.install.username(c) for c in COMPONENTS}
        events, _ = self.cp.audit_events(self.audit_start)
        # (an event may name no user: a request cut before it was authenticated, test_red_team.py)
        return [e for e in events if (e.get("user") or {}).get("username") in users
                and (e.get("responseStatus") or {}).get("code", 0) >= min_code]

    @staticmethod
    def describe(event: dict) -> str:
        ref = event.get("objectRef") or {}
        what = ref.get("resource", event.get("requestURI", ""))
        if ref.get("subresource"):
            what += "/" + ref["subresource"]
        if ref.get("apiGroup"):
            what += "." + ref["apiGroup"]
        where = f" in {ref['namespace']}" if ref.get("namespace") else ""
        user = event["user"]["username"].rsplit(":", 1)[-1]
        return f"{event['verb']} {what}{where} ({user}: {event['responseStatus']['code']})"

    def forbidden(self) -> list[str]:
        """Every request of kai's ServiceAccounts the API server refused with 403 (verb, resource,
        subresource), once each; not a create refused because its namespace is being deleted
        (:func:`namespace_going`)."""
        return sorted({self.describe(e) for e in self.requests(403) if e["responseStatus"]["code"] == 403
                       and not namespace_going(e)})

    def rejected_writes(self) -> list[str]:
        """Every write (create, update, patch, delete) of kai's ServiceAccounts the API server
        refused: its validation, admission or RBAC. Not 409 Conflict: a write from a stale
        resourceVersion (another writer came first, e.g. the resourceclaim controller on the pod's
        status) is how optimistic concurrency works, and kai reads again and retries."""
        return [self.describe(e) for e in self.requests(400)
                if e["verb"] in WRITE_VERBS and e["responseStatus"]["code"] != 409 and not namespace_going(e)]

    def assert_no_forbidden(self) -> None:
        denied = self.forbidden()
        assert not denied, "the chart's RBAC does not allow: " + "; ".join(denied)

    def take_forbidden(self) -> list[str]:
        """``forbidden()``, for a test that expects refusals: they are not checked again after it."""
        denied = self.forbidden()
        self.audit_start = self.cp.audit_offset()
        return denied


def namespace_going(event: dict) -> bool:
    """Whether the API server refused a create because its namespace is being deleted
    (NamespaceLifecycle's 403): an earlier test's namespace may still hold pods while it goes (a
    ReplicaSet's, made again until its controller stops), which a scheduler started meanwhile tries
    to place. No RBAC rule is missing and no write of kai's is malformed."""
    return "because it is being terminated" in ((event.get("responseStatus") or {}).get("message") or "")


@pytest.fixture
def kai(controlplane, kube, kai_install, namespace, nodes, tmp_path) -> Kai:
    # (after the test's namespace and nodes: the components stop before those are deleted)
    k = Kai(controlplane, kube, kai_install, tmp_path)
    yield k
    k.stop()
    denied = k.forbidden()
    if denied:
        pytest.fail("the chart's RBAC does not allow: " + "; ".join(denied), pytrace=False)


# -- NVIDIA's compute-domain-controller, played by the test ------------------------------------------------

COMPUTE_DOMAIN_LABEL = "resource.nvidia.com/computeDomain"


def nvidia_channel_template(domain: dict) -> dict:
    """The ResourceClaimTemplate NVIDIA's compute-domain-controller creates for a ComputeDomain's
    workload pods (k8s-dra-driver-gpu, ``spec.channel.resourceClaimTemplate.name`` in the domain's
    namespace): one request ``channel`` of the default-channel DeviceClass, configured with
    ``ComputeDomainChannelConfig{domainID: <domain uid>}``. (The controller's finalizer is left
    out: nothing here would remove it.)"""
    md = domain["metadata"]
    params = {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "ComputeDomainChannelConfig",
              "domainID": md["uid"]}
    if domain["spec"]["channel"].get("allocationMode") == "All":
        params["allocationMode"] = "All"
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {
            "name": domain["spec"]["channel"]["resourceClaimTemplate"]["name"],
            "namespace": md["namespace"],
            "labels": {COMPUTE_DOMAIN_LABEL: md["uid"], "resource.nvidia.com/computeDomainTarget": "Workload"},
        },
        "spec": {"spec": {"devices": {
            "requests": [{"name": "channel", "exactly": {
                "deviceClassName": "compute-domain-default-channel.nvidia.com",
                "allocationMode": "ExactCount", "count": 1}}],
            "config": [{"requests": ["channel"],
                        "opaque": {"driver": "compute-domain.nvidia.com", "parameters": params}}],
        }}},
    }


class Nvidia:
    """NVIDIA's DRA driver as far as the API server sees it: its DeviceClasses and ComputeDomain CRD
    (installed once per session), and its compute-domain-controller, played by the test."""

    def __init__(self, kube: Kube):
        self.kube = kube

    def play_compute_domain_controller(self, namespace: str) -> list[dict]:
        """What NVIDIA's controller does for the ComputeDomains of ``namespace`` that kai relies on:
        create each one's channel ResourceClaimTemplate once. Returns the templates created."""
        created = []
        for domain in self.kube.list("resource.nvidia.com/v1beta1", "ComputeDomain", namespace):
            template = nvidia_channel_template(domain)
            name = template["metadata"]["name"]
            if self.kube.get("resource.k8s.io/v1", "ResourceClaimTemplate", name, namespace) is None:
                created.append(self.kube.create(template))
        return created


@pytest.fixture(scope="session")
def nvidia(kube, upstream_dir) -> Nvidia:
    """NVIDIA's DeviceClasses and ComputeDomain CRD from ../shared/upstream, as its DRA driver's
    chart installs them (skipped, saying so, where ../shared is absent)."""
    [crd] = load_yaml(upstream_dir / "nvidia.computedomains.crd.yaml")
    kube.apply(crd)
    kube.wait_established(crd["metadata"]["name"])
    for dc in load_yaml(upstream_dir / "nvidia.deviceclasses.yaml"):
        kube.apply(dc)
    return Nvidia(kube)
