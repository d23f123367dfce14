#!/usr/bin/env python3
"""kai against kube-scheduler on a real control plane, side by side (issue 18, part 3).

Run from the project root with the project's venv::

    .venv/bin/python benchmarks/bench_realcluster.py                       # both workloads, full size
    .venv/bin/python benchmarks/bench_realcluster.py --workload dra --scale 0.1   # a quick run

For each workload it starts one real control plane on 127.0.0.1 (etcd, kube-apiserver,
kube-controller-manager from ``test/controlplane``, built or reused), creates the nodes (and the
GPUs' ResourceSlices), then runs the same pods twice: once with kai (``kai-cli run scheduler`` and
``kai-cli run binder`` as two processes, DRA gate on, their defaults otherwise) and once with the
kube-scheduler built from the same release (DRA on, its default profile). Both get the same client
QPS and burst (``--qps``/``--burst``: kai's flags on the scheduler and on the binder, each with its
own client; kube-scheduler's ``clientConnection.qps/burst`` in a KubeSchedulerConfiguration).
Between the two runs the pods, claims, BindRequests and Events are deleted; nodes and slices stay.

Workloads (``--workload``, ``--scale`` makes them smaller):

* ``dra``: 500 nodes with 8 GPUs each, published in GB200-like ``gpu.nvidia.com`` ResourceSlices
  (product, architecture, memory capacity as NVIDIA's driver publishes them), and 4,000 pods,
  each with a claim from a ResourceClaimTemplate whose request has a CEL selector on the GPU's
  memory; the real resourceclaim controller makes the claims;
* ``plain``: 5,000 nodes and 10,000 plain pods (cpu, memory, ``nvidia.com/gpu``).

What it prints, per scheduler, and the ratio kai/kube-scheduler:

* pods bound per second, from the first pod created to the last one bound (creating the pods is
  in the window for both: ``--creators`` client threads create them while the scheduler runs);
* p50 and p99 of the time from a pod's creation (when this process sent its POST) to its binding
  (when a watch in this process saw ``spec.nodeName`` set), not creationTimestamp's 1 s steps;
* API writes per pod by the scheduler's own identities (kai: scheduler + binder), counted in the
  API server's audit log (create, update, patch, delete), and all their calls per pod (gets and
  lists too, watches aside; also printed by call); and every client's writes per pod from the API
  server's ``apiserver_request_total`` (scraped as the admin before and after: the controllers'
  writes included, this process's pod creations not);
* CPU seconds (user + system, from ``/proc``) of the scheduler's processes in that window (kai:
  scheduler + binder; kube-scheduler: its process), and of kube-apiserver for context;
* how busy the machine was in the window, and how much of that was processes outside the run
  (other work on the machine: noise in every figure above).

Fairness: each client has the same token bucket for its work and one for its reports, as
kube-scheduler has a clientset and an event client (each with ``clientConnection.qps/burst``): kai's
scheduler and binder each take their calls from ``--qps``/``--burst``, and their Events (the binder:
also the pod's PodBound condition, written after the BindRequest's status) from a second bucket of
the same size. Every scheduler identity is in ``system:masters`` (exempt from API Priority and
Fairness, like this process), the controller manager's client gets ``--kcm-qps`` (its default 20
would make the resourceclaim controller the bottleneck for both), and the machine runs everything:
etcd, the API server, the controllers, this process and the scheduler share its cores. Numbers are
wall-clock on whatever machine runs this; the tests run it at a tiny size and check only that it
ends with every pod bound and both schedulers' lines printed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import importlib.util
import json
import math
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONTROLPLANE_DIR = ROOT / "test" / "controlplane"
NAMESPACE = "bench"  # kai_cli.bench's namespace
KAI = "kai"
KUBE = "kube-scheduler"
KAI_SCHEDULER_NAME = "kai-scheduler"
KUBE_SCHEDULER_NAME = "default-scheduler"
#: the identities whose writes count as the scheduler's (client certificates, all in system:masters)
IDENTITIES = {KAI: ("kai-scheduler", "kai-binder"), KUBE: ("system:kube-scheduler",)}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
READ_VERBS = {"get", "list"}
METRIC_WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"}
GPU_DRIVER = "gpu.nvidia.com"
#: the GB200 GPU as NVIDIA's gpu-kubelet-plugin publishes it (as in kai_dra_nvidia's demo cluster)
GB200 = {"productName": "NVIDIA GB200", "architecture": "Blackwell", "cudaComputeCapability": "10.0.0",
         "driverVersion": "570.124.6", "cudaDriverVersion": "12.8.0", "memory": "189471Mi"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_controlplane():
    """test/controlplane's build.py and controlplane.py, loaded by path as its fixture does."""
    mods = []
    for name, filename in (("kai_controlplane_build", "build.py"), ("kai_controlplane", "controlplane.py")):
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, CONTROLPLANE_DIR / filename)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
        mods.append(sys.modules[name])
    return mods


# -- the workloads --------------------------------------------------------------------------------


@dataclass
class Workload:
    name: str
    title: str
    nodes: list[dict]
    slices: list[dict]
    others: list[dict]  # DeviceClass, ResourceClaimTemplate
    pods: list[dict]


def gb200_slice(sl: dict) -> dict:
    """kai_cli.bench's gpu.nvidia.com slice (kai_core.dra.testing.gpu_slice) with GB200 GPUs."""
    for d in sl["spec"]["devices"]:
        a = d["attributes"]
        a["productName"] = {"string": GB200["productName"]}
        a["architecture"] = {"string": GB200["architecture"]}
        a["cudaComputeCapability"] = {"version": GB200["cudaComputeCapability"]}
        a["driverVersion"] = {"version": GB200["driverVersion"]}
        a["cudaDriverVersion"] = {"version": GB200["cudaDriverVersion"]}
        d["capacity"] = {"memory": {"value": GB200["memory"]}}
    return sl


def build_workload(name: str, scale: float) -> Workload:
    """The embedded bench's scenario (kai_cli.bench.generate) at ``scale``, split by kind."""
    from kai_cli.bench import SCENARIOS, generate, sized

    sc = sized(SCENARIOS[name], scale)
    nodes, slices, others, pods = [], [], [], []
    for obj in generate(sc):
        kind = obj["kind"]
        if kind == "Node":
            nodes.append(obj)
        elif kind == "ResourceSlice":
            slices.append(gb200_slice(obj))
        elif kind == "Pod":
            pods.append(obj)
        elif kind != "Namespace":
            others.append(obj)
    if name == "dra":
        cel = next(o for o in others if o["kind"] == "ResourceClaimTemplate")
        sel = cel["spec"]["spec"]["devices"]["requests"][0]["exactly"]["selectors"][0]["cel"]["expression"]
        title = (f"{len(nodes)} nodes x 8 GB200-like GPUs in ResourceSlices, {len(pods)} pods with a claim "
                 f"from a ResourceClaimTemplate (CEL: {sel})")
    else:
        title = f"{len(nodes)} nodes, {len(pods)} plain pods (cpu, memory, nvidia.com/gpu)"
    return Workload(name, title, nodes, slices, others, pods)


# -- talking to the API server as the admin ----------------------------------------------------------


class Api:
    """Admin calls over one persistent HTTPS connection per thread (the control plane's own
    ``request()`` opens a connection per call: too slow for thousands of objects)."""

    def __init__(self, cp, workdir: Path) -> None:
        cfg = yaml.safe_load(Path(cp.kubeconfig).read_text())
        user = cfg["users"][0]["user"]
        crt, key = workdir / "admin.crt", workdir / "admin.key"
        crt.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        key.chmod(0o600)
        self.ctx = ssl.create_default_context(cafile=cp.ca_file)
        self.ctx.load_cert_chain(str(crt), str(key))
        u = urllib.parse.urlsplit(cp.server)
        self.host, self.port = u.hostname, u.port
        self._local = threading.local()

    def _conn(self, fresh: bool = False) -> http.client.HTTPSConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=120)
            self._local.conn = conn
        return conn

    def call(self, method: str, path: str, body=None, content_type: str = "application/json",
             ok=(200, 201, 202)) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in range(6):
            try:
                conn = self._conn(fresh=attempt > 0)
                conn.request(method, path, body=data, headers=headers)
                r = conn.getresponse()
                out = r.read()
            except (OSError, http.client.HTTPException):
                if attempt == 5:
                    raise
                time.sleep(0.2 * (attempt + 1))
                continue
            if r.status == 429 or r.status >= 500:
                time.sleep(0.2 * (attempt + 1))
                continue
            if ok and r.status not in ok:
                raise RuntimeError(f"{method} {path}: HTTP {r.status}: {out[:300].decode(errors='replace')}")
            return r.status, out
        raise RuntimeError(f"{method} {path}: HTTP {r.status} after retries")

    def json(self, method: str, path: str, body=None, **kw) -> dict:
        _, out = self.call(method, path, body, **kw)
        return json.loads(out) if out else {}

    def list_all(self, path: str) -> list[dict]:
        items, cont = [], ""
        while True:
            q = "?limit=500" + (f"&continue={urllib.parse.quote(cont)}" if cont else "")
            reply = self.json("GET", path + q)
            items += reply.get("items") or []
            cont = (reply.get("metadata") or {}).get("continue") or ""
            if not cont:
                return items

    def count(self, path: str) -> int:
        return len(self.list_all(path))


def in_threads(n: int, items: list, fn) -> None:
    """``fn(item)`` for every item on ``n`` threads; the first exception is raised after all end."""
    lock = threading.Lock()
    it = iter(items)
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                item = next(it, None)
            if item is None or errors:
                return
            try:
                fn(item)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)
                return

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


PATHS = {
    "Node": "/api/v1/nodes",
    "ResourceSlice": "/apis/resource.k8s.io/v1/resourceslices",
    "DeviceClass": "/apis/resource.k8s.io/v1/deviceclasses",
    "ResourceClaimTemplate": f"/apis/resource.k8s.io/v1/namespaces/{NAMESPACE}/resourceclaimtemplates",
    "CustomResourceDefinition": "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
}
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
CLAIMS = f"/apis/resource.k8s.io/v1/namespaces/{NAMESPACE}/resourceclaims"
BINDREQUESTS = f"/apis/scheduling.run.ai/v1alpha2/namespaces/{NAMESPACE}/bindrequests"
EVENTS = f"/api/v1/namespaces/{NAMESPACE}/events"


def add_node(api: Api, node: dict) -> None:
    """What ControlPlane.add_node does, in two calls instead of three: a kubelet creates its Node
    with its status; the not-ready taint the API server's admission adds is taken off (as the node
    lifecycle controller would, once the node is Ready)."""
    api.call("POST", PATHS["Node"], node, ok=(201, 409))
    name = urllib.parse.quote(node["metadata"]["name"])
    api.call("PATCH", f"{PATHS['Node']}/{name}", {"spec": {"taints": None}},
             content_type="application/merge-patch+json")


def set_up_cluster(cp, api: Api, wl: Workload, threads: int) -> None:
    cp.ensure_namespace(NAMESPACE)  # and its default ServiceAccount, which pods need
    for crd in sorted((ROOT / "deploy" / "crds").glob("*.yaml")):
        api.call("POST", PATHS["CustomResourceDefinition"], yaml.safe_load(crd.read_text()), ok=(201, 409))
    for obj in wl.others:
        api.call("POST", PATHS[obj["kind"]], obj, ok=(201, 409))
    t0 = time.monotonic()
    in_threads(threads, wl.nodes, lambda n: add_node(api, n))
    in_threads(threads, wl.slices, lambda s: api.call("POST", PATHS["ResourceSlice"], s, ok=(201, 409)))
    for crd in ("bindrequests.scheduling.run.ai", "podgroups.scheduling.run.ai"):
        cp.wait_for(lambda crd=crd: _crd_established(api, crd), 60, f"CRD {crd} established")
    log(f"cluster ready: {len(wl.nodes)} nodes, {len(wl.slices)} ResourceSlices in {time.monotonic() - t0:.1f}s")


def _crd_established(api: Api, name: str) -> bool:
    crd = api.json("GET", f"{PATHS['CustomResourceDefinition']}/{name}")
    return any(c.get("type") == "Established" and c.get("status") == "True"
               for c in (crd.get("status") or {}).get("conditions") or [])


def clean_up(cp, api: Api, timeout: float = 600.0) -> None:
    """Delete the run's pods (at once: there are no kubelets), claims, BindRequests and Events, and
    wait until they are gone; nodes and slices stay. A claim still held by its
    ``delete-protection`` finalizer after a minute gets it removed."""
    now = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0, "propagationPolicy": "Background"}
    t0 = time.monotonic()
    for path in (PODS, CLAIMS, BINDREQUESTS, EVENTS):
        api.call("DELETE", path, now, ok=(200, 404))
    stripped = False
    while True:
        left = {p: api.count(p) for p in (PODS, CLAIMS, BINDREQUESTS)}
        if not any(left.values()):
            break
        if time.monotonic() - t0 > 60 and left[CLAIMS] and not stripped:
            for c in api.list_all(CLAIMS):
                if c["metadata"].get("finalizers"):
                    api.call("PATCH", f"{CLAIMS}/{c['metadata']['name']}", {"metadata": {"finalizers": None}},
                             content_type="application/merge-patch+json", ok=(200, 404))
            stripped = True
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"clean-up: still there after {timeout:.0f}s: {left}")
        for path in (PODS, CLAIMS, BINDREQUESTS):
            if left[path]:
                api.call("DELETE", path, now, ok=(200, 404))
        time.sleep(1.0)
    log(f"cleaned up (pods, claims, BindRequests, Events) in {time.monotonic() - t0:.1f}s")


# -- measuring ------------------------------------------------------------------------------------


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (every core; not idle, not waiting for I/O)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def scrape_writes(api: Api) -> float:
    """All writes the API server has answered so far (apiserver_request_total, write verbs)."""
    _, text = api.call("GET", "/metrics")
    total = 0.0
    for line in text.decode().splitlines():
        if line.startswith("apiserver_request_total{"):
            labels, _, value = line.rpartition(" ")
            m = re.search(r'verb="([A-Z]+)"', labels)
            if m and m.group(1) in METRIC_WRITE_VERBS:
                total += float(value)
    return total


def audit_calls(cp, offset: int, users: tuple[str, ...]) -> Counter:
    """Calls (writes, gets and lists; not watches) by ``users`` in the API server's audit log from
    byte ``offset``: a Counter of "verb resource[/subresource]"."""
    counts: Counter = Counter()
    events, _ = cp.audit_events(offset)
    for ev in events:
        if ev.get("stage") != "ResponseComplete" or ev.get("verb") not in WRITE_VERBS | READ_VERBS:
            continue
        if (ev.get("user") or {}).get("username") not in users:
            continue
        ref = ev.get("objectRef") or {}
        what = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        counts[f"{ev['verb']} {what}"] += 1
    return counts


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class PodWatch:
    """A watch on the namespace's pods in this process: when each pod was first seen bound."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.bound: dict[str, float] = {}
        self.events = 0
        self._stop = threading.Event()
        self._conn = None
        reply = api.json("GET", f"{PODS}?limit=1")
        self.rv = reply["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, name="pod-watch", daemon=True)
        self.error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(2)
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch()
            except Exception as exc:  # a dropped watch: resume from the last resourceVersion
                if self._stop.is_set():
                    return
                self.error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.2)

    def _watch(self) -> None:
        conn = http.client.HTTPSConnection(self.api.host, self.api.port, context=self.api.ctx, timeout=600)
        self._conn = conn
        try:
            q = f"?watch=1&allowWatchBookmarks=true&timeoutSeconds=1800&resourceVersion={self.rv}"
            conn.request("GET", PODS + q, headers={"Accept": "application/json"})
            r = conn.getresponse()
            if r.status != 200:
                raise RuntimeError(f"watch pods: HTTP {r.status}")
            bound = self.bound
            while not self._stop.is_set():
                line = r.readline()
                if not line:
                    return
                now = time.monotonic()
                ev = json.loads(line)
                obj = ev.get("object") or {}
                if ev.get("type") == "ERROR":
                    raise RuntimeError(f"watch pods: {obj.get('message')}")
                self.events += 1
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if rv:
                    self.rv = rv
                if ev.get("type") in ("ADDED", "MODIFIED") and (obj.get("spec") or {}).get("nodeName"):
                    bound.setdefault(obj["metadata"]["name"], now)
        finally:
            self._conn = None
            conn.close()


@dataclass
class RunResult:
    scheduler: str
    pods: int
    bound: int = 0
    seconds: float = float("nan")
    latencies: list[float] = field(default_factory=list)
    calls: Counter = field(default_factory=Counter)  # "verb resource[/sub]" -> count
    all_writes: float = 0.0
    cpu: float = float("nan")
    cpu_parts: dict[str, float] = field(default_factory=dict)
    apiserver_cpu: float = float("nan")
    #: CPU seconds of the whole machine in the window, and of the processes not part of the run
    machine_cpu: float = float("nan")
    other_cpu: float = float("nan")
    create_seconds: float = float("nan")
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.bound / self.seconds if self.seconds > 0 else float("nan")

    @property
    def writes_per_pod(self) -> float:
        n = sum(v for k, v in self.calls.items() if k.split()[0] in WRITE_VERBS)
        return n / self.bound if self.bound else float("nan")

    @property
    def calls_per_pod(self) -> float:
        return sum(self.calls.values()) / self.bound if self.bound else float("nan")

    @property
    def all_writes_per_pod(self) -> float:
        return self.all_writes / self.bound if self.bound else float("nan")


# -- the schedulers ---------------------------------------------------------------------------------


def kai_cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from kai_cli.main import cli; cli()", *args]


def _get_ok(url: str) -> bool:
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=5)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    try:
        conn.request("GET", u.path)
        r = conn.getresponse()
        r.read()
        return r.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class KaiRun:
    """kai-cli run scheduler + kai-cli run binder, each a process with its own client certificate."""

    name = KAI
    scheduler_name = KAI_SCHEDULER_NAME

    def __init__(self, cp, cpmod, workdir: Path, qps: float, burst: int, extra_scheduler: list[str],
                 extra_binder: list[str]) -> None:
        self.cp, self.workdir = cp, workdir
        self.qps, self.burst = qps, burst
        self.extra = {"scheduler": extra_scheduler, "binder": extra_binder}
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports = dict(zip(("scheduler", "binder"), cpmod.free_ports(2), strict=True))
        self.logs: dict[str, Path] = {}

    def describe(self) -> str:
        extra = " ".join(self.extra["scheduler"] + self.extra["binder"])
        return (f"kai: kai-cli run scheduler + kai-cli run binder, --feature-gates=DynamicResourceAllocation=true "
                f"--qps {self.qps:g} --burst {self.burst} each" + (f", {extra}" if extra else "")
                + " (other flags at their defaults)")

    def start(self) -> None:
        for which in ("scheduler", "binder"):
            kubeconfig = self.cp.kubeconfig_for_user(f"kai-{which}", ["system:masters"])
            args = kai_cli("run", which, "--kubeconfig", kubeconfig, "--feature-gates=DynamicResourceAllocation=true",
                           "--qps", f"{self.qps:g}", "--burst", str(self.burst),
                           "--health-probe-bind-address", f"127.0.0.1:{self.ports[which]}", *self.extra[which])
            self.logs[which] = self.workdir / f"kai-{which}.log"
            with self.logs[which].open("ab") as out:
                self.procs[which] = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 180
        for which, port in self.ports.items():
            while not _get_ok(f"http://127.0.0.1:{port}/readyz"):
                p = self.procs[which]
                if p.poll() is not None:
                    raise RuntimeError(f"kai {which} exited with {p.returncode}; see {self.logs[which]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"kai {which} not ready after 180s; see {self.logs[which]}")
                time.sleep(0.2)

    def cpu(self) -> dict[str, float]:
        return {which: cpu_seconds(p.pid) for which, p in self.procs.items()}

    def alive(self) -> str | None:
        for which, p in self.procs.items():
            if p.poll() is not None:
                return f"kai {which} exited with {p.returncode}; see {self.logs[which]}"
        return None

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


class KubeRun:
    """The kube-scheduler built with the control plane, its default profile, with the QPS/burst."""

    name = KUBE
    scheduler_name = KUBE_SCHEDULER_NAME

    def __init__(self, cp, workdir: Path, qps: float, burst: int) -> None:
        self.cp, self.workdir, self.qps, self.burst = cp, workdir, qps, burst

    def describe(self) -> str:
        return (f"kube-scheduler {self.cp.version}: default profile, DRA on, KubeSchedulerConfiguration "
                f"clientConnection.qps {self.qps:g}, burst {self.burst}")

    def start(self) -> None:
        kubeconfig = self.cp.kubeconfig_for_user("system:kube-scheduler", ["system:masters"])
        config = {
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "clientConnection": {"kubeconfig": kubeconfig, "qps": self.qps, "burst": self.burst},
            "leaderElection": {"leaderElect": False},
        }
        path = self.workdir / "kube-scheduler-config.yaml"
        path.write_text(yaml.safe_dump(config))
        self.cp.start_scheduler([f"--config={path}"])
        port = self.cp.ports["scheduler"]
        deadline = time.monotonic() + 180
        while not _get_ok(f"https://127.0.0.1:{port}/readyz"):
            if self.alive():
                raise RuntimeError(self.alive())
            if time.monotonic() > deadline:
                raise RuntimeError(f"kube-scheduler not ready after 180s; see {self.cp.kube_scheduler.log}")
            time.sleep(0.2)

    def cpu(self) -> dict[str, float]:
        return {"kube-scheduler": cpu_seconds(self.cp.kube_scheduler.pid)}

    def alive(self) -> str | None:
        return self.cp.kube_scheduler.failed()

    def stop(self) -> None:
        self.cp.stop_scheduler()


def run_one(cp, api: Api, wl: Workload, sched, creators: int, timeout: float) -> RunResult:
    """One scheduler on the workload: start it, create the pods, wait until all are bound."""
    res = RunResult(sched.name, len(wl.pods))
    log(f"{sched.name}: starting")
    sched.start()
    time.sleep(1.0)  # let it settle after its first lists
    pods = []
    for p in wl.pods:
        p = json.loads(json.dumps(p))
        p["spec"]["schedulerName"] = sched.scheduler_name
        pods.append(p)
    watch = PodWatch(api)
    watch.start()
    audit_at = cp.audit_offset()
    writes_before = scrape_writes(api)
    ours = [cp.etcd.pid, cp.apiserver.pid, cp.controller_manager.pid]
    cpu_before = sched.cpu()
    api_cpu_before = cpu_seconds(cp.apiserver.pid)
    ours_before = sum(cpu_seconds(p) for p in ours) + sum(os.times()[:2])
    machine_before = machine_busy()
    sent: dict[str, float] = {}

    def create(pod: dict) -> None:
        sent[pod["metadata"]["name"]] = time.monotonic()
        api.call("POST", PODS, pod, ok=(201,))

    creating = threading.Thread(target=in_threads, args=(creators, pods, create), daemon=True)
    start = time.monotonic()
    creating.start()
    last_log = start
    try:
        while len(watch.bound) < len(pods):
            now = time.monotonic()
            if sched.alive():
                res.problems.append(sched.alive())
                break
            if now - start > timeout:
                res.problems.append(f"gave up after {timeout:.0f}s: {len(watch.bound)}/{len(pods)} bound")
                break
            if now - last_log >= 10:
                log(f"{sched.name}: {len(sent)} created, {len(watch.bound)} bound ({now - start:.0f}s)")
                last_log = now
            if not creating.is_alive() and math.isnan(res.create_seconds):
                res.create_seconds = max(sent.values()) - start if sent else 0.0
            time.sleep(0.05)
        creating.join()
        if math.isnan(res.create_seconds) and sent:
            res.create_seconds = max(sent.values()) - start
        cpu_after = sched.cpu()
        api_cpu_after = cpu_seconds(cp.apiserver.pid)
        ours_after = sum(cpu_seconds(p) for p in ours) + sum(os.times()[:2])
        machine_after = machine_busy()
        bound = dict(watch.bound)
    finally:
        sched.stop()
        watch.stop()
    first = min(sent.values()) if sent else start
    res.bound = len(bound)
    if bound:
        res.seconds = max(bound.values()) - first
    res.latencies = [t - sent[n] for n, t in bound.items() if n in sent]
    res.cpu_parts = {k: cpu_after[k] - cpu_before[k] for k in cpu_before}
    res.cpu = sum(res.cpu_parts.values())
    res.apiserver_cpu = api_cpu_after - api_cpu_before
    res.machine_cpu = machine_after - machine_before
    res.other_cpu = res.machine_cpu - (ours_after - ours_before) - res.cpu
    time.sleep(1.0)  # the last audit lines
    res.calls = audit_calls(cp, audit_at, IDENTITIES[sched.name])
    res.all_writes = scrape_writes(api) - writes_before - len(sent)  # without this process's pod creations
    res.problems += check_outcome(api, wl)
    log(f"{sched.name}: {res.bound}/{res.pods} bound in {res.seconds:.1f}s ({res.rate:.1f} pods/s); "
        f"pod creation took {res.create_seconds:.1f}s")
    return res


def check_outcome(api: Api, wl: Workload) -> list[str]:
    """Every pod bound; no device in two claims; each claim's devices on its pod's node."""
    problems = []
    pods = api.list_all(PODS)
    node_of = {p["metadata"]["name"]: (p.get("spec") or {}).get("nodeName") for p in pods}
    unbound = sorted(n for n, node in node_of.items() if not node)
    if unbound:
        problems.append(f"{len(unbound)} pod(s) not bound, e.g. {', '.join(unbound[:3])}")
    if wl.name != "dra":
        return problems
    seen: dict[tuple, str] = {}
    for c in api.list_all(CLAIMS):
        name = c["metadata"]["name"]
        alloc = (c.get("status") or {}).get("allocation") or {}
        pools = set()
        for r in (alloc.get("devices") or {}).get("results") or []:
            dev = (r.get("driver"), r.get("pool"), r.get("device"))
            pools.add(r.get("pool"))
            if seen.setdefault(dev, name) != name:
                problems.append(f"device {'/'.join(dev)} in claims {seen[dev]} and {name}")
        for ref in (c.get("status") or {}).get("reservedFor") or []:
            node = node_of.get(ref.get("name"))
            if node and pools and pools != {node}:
                problems.append(f"claim {name}: devices of {sorted(pools)} for a pod on {node}")
    return problems


# -- printing ---------------------------------------------------------------------------------------


def _fmt(v: float, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")


#: the table's columns: header, value of a run, format
COLUMNS = (
    ("SECONDS", lambda r: r.seconds, ".1f"),
    ("PODS/S", lambda r: r.rate, ".1f"),
    ("P50 S", lambda r: percentile(r.latencies, 0.5), ".2f"),
    ("P99 S", lambda r: percentile(r.latencies, 0.99), ".2f"),
    ("WRITES/POD", lambda r: r.writes_per_pod, ".2f"),
    ("CALLS/POD", lambda r: r.calls_per_pod, ".2f"),
    ("ALL WRITES/POD", lambda r: r.all_writes_per_pod, ".2f"),
    ("CPU S", lambda r: r.cpu, ".1f"),
    ("APISERVER CPU S", lambda r: r.apiserver_cpu, ".1f"),
)


def report(results: list[RunResult]) -> str:
    rows = [["SCHEDULER", "PODS", "BOUND", *(c[0] for c in COLUMNS)]]
    for r in results:
        rows.append([r.scheduler, str(r.pods), str(r.bound), *(_fmt(get(r), spec) for _, get, spec in COLUMNS)])
    by = {r.scheduler: r for r in results}
    if KAI in by and KUBE in by:
        rows.append(["kai/kube", "", "", *(_fmt(_ratio(get(by[KAI]), get(by[KUBE])), ".2f") for _, get, _ in COLUMNS)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)).rstrip()
             for r in rows]
    for r in results:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in r.cpu_parts.items())
        lines.append(f"{r.scheduler}: CPU s {parts}; pods created in {_fmt(r.create_seconds, '.1f')}s; machine busy "
                     f"{_fmt(r.machine_cpu, '.1f')} CPU s of {_fmt(r.seconds * (os.cpu_count() or 1), '.1f')}, "
                     f"{_fmt(r.other_cpu, '.1f')} of them in processes outside this run (noise)")
        top = ", ".join(f"{k} {v / max(r.bound, 1):.2f}" for k, v in sorted(r.calls.items(), key=lambda kv: -kv[1]))
        lines.append(f"{r.scheduler}: API calls/pod: {top or '-'}")
        for p in r.problems:
            lines.append(f"{r.scheduler}: PROBLEM: {p}")
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["dra", "plain", "all"], default="all")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the full size (e.g. 0.1 for a quick run)")
    ap.add_argument("--schedulers", default=f"{KAI},{KUBE}",
                    help=f"which schedulers, in this order (default {KAI},{KUBE})")
    ap.add_argument("--qps", type=float, default=200.0, help="client QPS of every scheduler client (default 200)")
    ap.add_argument("--burst", type=int, default=400, help="client burst of every scheduler client (default 400)")
    ap.add_argument("--kcm-qps", type=float, default=1000.0,
                    help="kube-controller-manager --kube-api-qps (burst twice that), the same for both runs")
    ap.add_argument("--creators", type=int, default=4, help="client threads creating the pods (default 4)")
    ap.add_argument("--setup-threads", type=int, default=8, help="client threads creating nodes and slices")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for one run's pods")
    ap.add_argument("--kai-scheduler-arg", action="append", default=[], help="extra flag for kai-cli run scheduler")
    ap.add_argument("--kai-binder-arg", action="append", default=[], help="extra flag for kai-cli run binder")
    ap.add_argument("--keep", action="store_true", help="keep the control plane's folder (logs, audit log)")
    args = ap.parse_args(argv)
    if args.scale <= 0:
        ap.error("--scale must be positive")
    order = [s.strip() for s in args.schedulers.split(",") if s.strip()]
    if not order or any(s not in (KAI, KUBE) for s in order):
        ap.error(f"--schedulers: a comma-separated list of {KAI} and {KUBE}")
    workloads = ["dra", "plain"] if args.workload == "all" else [args.workload]

    build, cpmod = load_controlplane()
    try:
        binaries = build.ensure_binaries()
    except build.BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = False
    for name in workloads:
        wl = build_workload(name, args.scale)
        workdir = Path(tempfile.mkdtemp(prefix=f"kai-bench-{name}-"))
        cp = cpmod.ControlPlane(
            binaries,
            audit=True,
            controller_manager_args=[f"--kube-api-qps={args.kcm_qps:g}", f"--kube-api-burst={int(2 * args.kcm_qps)}"],
            keep_dir=args.keep,
        )
        log(f"workload {name}: starting the control plane")
        cp.start()
        try:
            api = Api(cp, workdir)
            set_up_cluster(cp, api, wl, args.setup_threads)
            runs = {KAI: KaiRun(cp, cpmod, workdir, args.qps, args.burst, args.kai_scheduler_arg, args.kai_binder_arg),
                    KUBE: KubeRun(cp, workdir, args.qps, args.burst)}
            results = []
            for i, which in enumerate(order):
                if i:
                    clean_up(cp, api)
                results.append(run_one(cp, api, wl, runs[which], args.creators, args.timeout))
            print(f"\nworkload {name}: {wl.title}")
            print(f"control plane: Kubernetes {cp.version} on {cp.server}, one for both runs; "
                  f"kube-controller-manager --kube-api-qps={args.kcm_qps:g}; {os.cpu_count()} CPUs")
            print(f"client QPS {args.qps:g}, burst {args.burst} for both; pods created by {args.creators} client "
                  f"threads, counted in the window")
            for which in order:
                print(f"  {runs[which].describe()}")
            print(report(results))
            sys.stdout.flush()
            failed |= any(r.problems for r in results)
        finally:
            cp_dir = cp.dir
            cp.stop()
            if args.keep:
                log(f"kept: {cp_dir} (control plane logs, audit log) and {workdir} (kai logs)")
            else:
                import shutil

                shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
