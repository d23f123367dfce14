#!/usr/bin/env python3
"""A real Kubernetes control plane on 127.0.0.1 for kai's tests: etcd, kube-apiserver,
kube-controller-manager (and, on request, kube-scheduler), built from Go modules by ``build.py``.

    with ControlPlane(build.ensure_binaries()) as cp:
        cp.kubeconfig            # admin kubeconfig (client certificate, O=system:masters)
        cp.server                # https://127.0.0.1:PORT
        tok = cp.token_for("kai-system", "kai-scheduler")       # TokenRequest API
        path = cp.kubeconfig_for_token(tok)                       # RBAC applies to it
        cp.compact_etcd(); cp.restart_apiserver()

Everything runs in a temporary directory, on free ports, in process groups of their own; ``stop()``
(also on ``__exit__``, at interpreter exit and when starting fails) kills them all and removes the
directory. Only the Python standard library and PyYAML are used: no kubectl, no kubernetes client.

From a shell: ``python test/controlplane/controlplane.py up`` builds or reuses the binaries, starts the
control plane, prints the kubeconfig path and waits until Ctrl-C.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import http.client
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent


def _load_build():
    name = "kai_controlplane_build"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "build.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# DRA feature gates of the features kai supports. Each is turned on when the binary knows it as an
# alpha or beta gate (``--help`` lists it); GA gates are on already and some are locked, so they are
# left alone; gates a release does not have are skipped.
DRA_FEATURE_GATES = (
    "DynamicResourceAllocation",
    "DRAPrioritizedList",  # firstAvailable (prioritized list)
    "DRAAdminAccess",
    "DRADeviceTaints",
    "DRAPartitionableDevices",  # sharedCounters / consumesCounters
    "DRAConsumableCapacity",  # allowMultipleAllocations, capacity requests
    "DRAResourceClaimDeviceStatus",
    "DRADeviceBindingConditions",
)

# kube-controller-manager controllers a scheduler's world needs. No node lifecycle controller: there
# are no kubelets, tests create Node objects and their status themselves.
DEFAULT_CONTROLLERS = (
    "serviceaccount-controller",  # the "default" ServiceAccount the ServiceAccount admission plugin wants
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",  # kube-root-ca.crt ConfigMaps
    "clusterrole-aggregation-controller",  # admin/edit/view aggregated ClusterRoles
    "resourceclaim-controller",  # ResourceClaims from ResourceClaimTemplates
    "garbage-collector-controller",
    "namespace-controller",
    "persistentvolume-binder-controller",
    "replicaset-controller",  # creates an evicted replica again (consolidation moves pods that way)
)

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# the etcd key where kube-apiservers record the last compacted revision (k8s.io/apiserver storage/etcd3)
COMPACT_REV_KEY = b"compact_rev_key"

# The audit policy of ``ControlPlane(audit=True)``: every request at Metadata level (who, verb,
# resource, subresource, response code; no bodies), except the API server's own loopback calls and
# the health probes, which say nothing about a client.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "users": ["system:apiserver"]},
        {"level": "None", "nonResourceURLs": ["/healthz*", "/livez*", "/readyz*"]},
        {"level": "Metadata"},
    ],
}


class ControlPlaneError(RuntimeError):
    pass


# ---------------------------------------------------------------- small helpers


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if not openssl:
        raise ControlPlaneError("the control plane needs the 'openssl' command to make its certificates")
    proc = subprocess.run([openssl, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args[:2])} failed: {proc.stdout.strip().splitlines()[-1:]}")


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


_help_cache: dict[str, str] = {}


def _help(binary: Path) -> str:
    key = str(binary)
    if key not in _help_cache:
        proc = subprocess.run([key, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        _help_cache[key] = proc.stdout
    return _help_cache[key]


def settable_feature_gates(binary: Path) -> set[str]:
    """Alpha and beta feature gates the binary lists in --help (GA gates are not listed)."""
    # "  DRAAdminAccess=true|false (BETA - default=true)"; 1.37 prefixes the component: "kube:DRA..."
    return set(re.findall(r"^\s+(?:[a-z-]+:)?([A-Za-z0-9]+)=true\|false \((?:ALPHA|BETA)", _help(binary), re.M))


def known_controllers(kcm: Path) -> set[str]:
    text = _help(kcm)
    m = re.search(r"All controllers:(.*?)(?:Disabled-by-default controllers:|$)", text, re.S)
    if not m:
        return set()
    return {c.strip() for c in re.split(r"[,\s]+", m.group(1)) if c.strip() and re.match(r"^[a-z0-9-]+$", c.strip())}


def _binary_version(binary: Path) -> str:
    out = subprocess.run(
        [str(binary), "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60
    ).stdout
    m = re.search(r"v\d+\.\d+\.\d+\S*", out)
    return m.group(0) if m else out.strip()


def _pdeathsig() -> None:  # pragma: no cover - runs in the child
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class _Process:
    """One component, in a process group of its own, logging to a file."""

    def __init__(self, name: str, args: list[str], log: Path, env: Mapping[str, str] | None = None):
        self.name, self.args, self.log, self.env = name, args, log, env
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"\n==== {time.strftime('%H:%M:%S')} starting {' '.join(self.args)}\n".encode())
            out.flush()
            # the parent-death signal kills the component if the test process dies without cleaning up;
            # it is tied to the thread that forks, so only used from the main thread
            main = threading.current_thread() is threading.main_thread()
            self.popen = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_pdeathsig if main and sys.platform.startswith("linux") else None,
                env=dict(self.env) if self.env is not None else None,
            )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
        p = self.popen
        if p is None:
            return
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, sig)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        # (no signal to the group once the leader is reaped: its id may belong to someone else by then;
        # the components start no processes of their own)
        self.popen = None

    def failed(self) -> str | None:
        if self.popen is not None and self.popen.poll() is not None:
            return f"{self.name} exited with code {self.popen.returncode}; last lines of {self.log}:\n{_tail(self.log)}"
        return None


# ---------------------------------------------------------------- the control plane


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager (+ kube-scheduler) on 127.0.0.1."""

    def __init__(
        self,
        binaries: Mapping[str, str | Path] | None = None,
        *,
        feature_gates: Mapping[str, bool] | None = None,
        runtime_config: Iterable[str] = (),
        controllers: Iterable[str] = DEFAULT_CONTROLLERS,
        apiserver_args: Iterable[str] = (),
        controller_manager_args: Iterable[str] = (),
        scheduler: bool = False,
        scheduler_args: Iterable[str] = (),
        watch_cache: bool = True,
        audit: bool = False,
        workdir: str | Path | None = None,
        keep_dir: bool | None = None,
        verbosity: int | None = None,
        start_timeout: float = 180.0,
    ):
        if binaries is None:
            binaries = _load_build().ensure_binaries()
        self.binaries = {k: Path(v) for k, v in binaries.items()}
        for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
            if name not in self.binaries:
                raise ControlPlaneError(f"no {name} binary given")
        self._extra_gates = dict(feature_gates or {})
        env_gates = os.environ.get("KAI_CONTROLPLANE_FEATURE_GATES", "")
        for item in filter(None, (s.strip() for s in env_gates.split(","))):
            k, _, v = item.partition("=")
            self._extra_gates.setdefault(k, v.lower() != "false")
        self._runtime_config = ["resource.k8s.io/v1=true", *runtime_config]
        self._controllers = list(controllers)
        self._apiserver_args = list(apiserver_args)
        self._kcm_args = list(controller_manager_args)
        self._want_scheduler = scheduler
        self._scheduler_args = list(scheduler_args)
        self._watch_cache = watch_cache
        self._audit = audit
        self._workdir = Path(workdir) if workdir else None
        self.keep_dir = keep_dir if keep_dir is not None else os.environ.get("KAI_CONTROLPLANE_KEEP") == "1"
        self.verbosity = verbosity if verbosity is not None else int(os.environ.get("KAI_CONTROLPLANE_VERBOSITY", "1"))
        self.start_timeout = start_timeout

        self.dir: Path | None = None
        self.kubeconfig: str = ""
        self.server: str = ""
        self.ca_file: str = ""  # the API server's serving CA
        self.etcd_url: str = ""
        self.version: str = ""
        self.feature_gates: dict[str, bool] = {}
        self.enabled_controllers: list[str] = []
        self.ports: dict[str, int] = {}
        self.audit_log: Path | None = None  # with audit=True: the API server's audit log (JSON lines)
        self.etcd: _Process | None = None
        self.apiserver: _Process | None = None
        self.controller_manager: _Process | None = None
        self.kube_scheduler: _Process | None = None
        self._atexit = False

    # ---------------- lifecycle

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        if self.dir is not None:
            raise ControlPlaneError("this control plane is already started")
        if not self._atexit:
            atexit.register(self.stop)
            self._atexit = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if self._workdir:
            self._workdir.mkdir(parents=True, exist_ok=True)
            self.dir = Path(tempfile.mkdtemp(prefix="kai-controlplane-", dir=self._workdir))
        else:
            self.dir = Path(tempfile.mkdtemp(prefix="kai-controlplane-"))
        (self.dir / "logs").mkdir()
        etcd_client, etcd_peer, api, kcm, sched = free_ports(5)
        self.ports = {
            "etcd": etcd_client,
            "etcd-peer": etcd_peer,
            "apiserver": api,
            "controller-manager": kcm,
            "scheduler": sched,
        }
        self.etcd_url = f"http://127.0.0.1:{etcd_client}"
        self.server = f"https://127.0.0.1:{api}"
        self.version = _binary_version(self.binaries["kube-apiserver"])
        self._make_pki()
        if self._audit:
            (self.dir / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY, sort_keys=False))
            self.audit_log = self.dir / "logs" / "audit.log"
        self._compute_feature_gates()

        self.etcd = _Process("etcd", self._etcd_args(), self.dir / "logs" / "etcd.log")
        self.etcd.start()
        self._wait("etcd", self.etcd, self._etcd_healthy)

        self.apiserver = _Process(
            "kube-apiserver", self._apiserver_args_full(), self.dir / "logs" / "kube-apiserver.log"
        )
        self.start_apiserver()

        self._write_kubeconfigs()
        self.start_controller_manager()
        if self._want_scheduler:
            self.start_scheduler()

    def stop(self) -> None:
        """Kill every component (process groups) and remove the temporary directory."""
        for p in (self.kube_scheduler, self.controller_manager, self.apiserver, self.etcd):
            if p is not None:
                with contextlib.suppress(Exception):
                    p.stop()
        if self.dir is not None and not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    # ---------------- certificates and keys

    def _make_pki(self) -> None:
        pki = self.dir / "pki"
        pki.mkdir()
        _openssl("genrsa", "-out", "ca.key", "2048", cwd=pki)
        _openssl(
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=kai-controlplane-client-ca",
            "-days",
            "3650",
            "-out",
            "ca.crt",
            cwd=pki,
        )
        # service-account token signing key pair
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
        (pki / "client.ext").write_text(
            "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
        )
        self.client_ca = pki / "ca.crt"
        self.sa_key = pki / "sa.key"
        self.sa_pub = pki / "sa.pub"
        self._admin_crt, self._admin_key = self.client_certificate("kai-admin", ["system:masters"])

    def client_certificate(self, user: str, groups: Iterable[str] = ()) -> tuple[Path, Path]:
        """A client certificate (CN=user, O=each group) signed by the API server's client CA."""
        if any(c in s for s in (user, *groups) for c in "/,=+\\\n"):
            raise ValueError(f"unsupported character in user or group name: {user!r} {list(groups)!r}")
        pki = self.dir / "pki"
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", user)
        key, csr, crt = pki / f"{stem}.key", pki / f"{stem}.csr", pki / f"{stem}.crt"
        subj = "".join(f"/O={g}" for g in groups) + f"/CN={user}"
        _openssl("genrsa", "-out", key.name, "2048", cwd=pki)
        _openssl("req", "-new", "-key", key.name, "-subj", subj, "-out", csr.name, cwd=pki)
        _openssl(
            "x509", "-req", "-in", csr.name, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "3650", "-extfile", "client.ext", "-out", crt.name, cwd=pki,
        )  # fmt: skip
        return crt, key

    # ---------------- components

    def _compute_feature_gates(self) -> None:
        settable = settable_feature_gates(self.binaries["kube-apiserver"])
        gates = {g: True for g in DRA_FEATURE_GATES if g in settable}
        gates.update(self._extra_gates)
        self.feature_gates = gates
        # 1.34: DRADeviceTaints (alpha) also covers DeviceTaintRules, which kube-scheduler and the
        # controller manager then watch in resource.k8s.io/v1alpha3: serve it, or their informers never
        # sync. (1.35 and 1.36 have a separate DRADeviceTaintRules gate; 1.37 serves the rules in v1.)
        if gates.get("DRADeviceTaints") and "DRADeviceTaintRules" not in settable:
            if not any(rc.startswith("resource.k8s.io/v1alpha3") for rc in self._runtime_config):
                self._runtime_config.append("resource.k8s.io/v1alpha3=true")

    def _gates_flag(self, binary: Path) -> list[str]:
        # each component only accepts the gates it knows; all Kubernetes binaries share one gate list
        if not self.feature_gates:
            return []
        return [
            "--feature-gates="
            + ",".join(f"{k}={'true' if v else 'false'}" for k, v in sorted(self.feature_gates.items()))
        ]

    def _etcd_args(self) -> list[str]:
        d = self.dir
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        return [
            str(self.binaries["etcd"]),
            "--name=kai",
            f"--data-dir={d / 'etcd-data'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=kai={peer}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync=true",  # a test cluster: speed over durability across power loss
            "--quota-backend-bytes=8589934592",
            "--log-level=warn",
        ]

    def _apiserver_args_full(self) -> list[str]:
        d = self.dir
        args = [
            str(self.binaries["kube-apiserver"]),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports['apiserver']}",
            f"--cert-dir={d / 'apiserver-certs'}",  # self-signed serving certificate for 127.0.0.1
            f"--client-ca-file={self.client_ca}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={self.sa_pub}",
            f"--service-account-signing-key-file={self.sa_key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--endpoint-reconciler-type=none",  # no Endpoints for 127.0.0.1 (invalid for the "kubernetes" Service)
            "--allow-privileged=true",
            "--profiling=false",
            f"--runtime-config={','.join(self._runtime_config)}",
            f"--v={self.verbosity}",
        ]
        if not self._watch_cache:
            args.append("--watch-cache=false")
        if self.audit_log is not None:
            args += [
                f"--audit-policy-file={d / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",  # written before the reply: a test reads it right after
                "--audit-log-maxsize=0",  # no rotation: offsets into the file stay valid
            ]
        args += self._gates_flag(self.binaries["kube-apiserver"])
        return args + self._apiserver_args

    def start_apiserver(self) -> None:
        assert self.apiserver is not None
        self.apiserver.start()
        self.ca_file = str(self.dir / "apiserver-certs" / "apiserver.crt")
        self._wait("kube-apiserver", self.apiserver, self._apiserver_ready)

    def stop_apiserver(self, sig: int = signal.SIGTERM, grace: float = 5.0) -> None:
        """Stop kube-apiserver: ``sig`` (SIGTERM: graceful termination), then SIGKILL after ``grace``
        seconds. Within a second of SIGTERM it stops listening and has drained its short requests;
        it then waits up to 60s for clients holding watch connections, which ``grace`` cuts short."""
        assert self.apiserver is not None
        self.apiserver.stop(sig, timeout=grace)

    def restart_apiserver(self, sig: int = signal.SIGTERM, down_seconds: float = 0.0, grace: float = 5.0) -> None:
        """Stop kube-apiserver (see ``stop_apiserver``; ``sig=signal.SIGKILL`` for a crash), optionally
        stay down a while, start it again on the same port with the same certificates and wait until
        /readyz is ok."""
        self.stop_apiserver(sig, grace)
        if down_seconds:
            time.sleep(down_seconds)
        self.start_apiserver()

    def _component_kubeconfig(self, name: str, user: str, groups: Iterable[str] = ()) -> Path:
        crt, key = self.client_certificate(user, groups)
        return self._write_kubeconfig(
            self.dir / f"{name}.kubeconfig",
            user={"client-certificate-data": _b64(crt), "client-key-data": _b64(key)},
            user_name=user,
        )

    def start_controller_manager(self) -> None:
        d = self.dir
        if self.controller_manager is None:
            kcm = self.binaries["kube-controller-manager"]
            kubeconfig = self._component_kubeconfig("controller-manager", "system:kube-controller-manager")
            known = known_controllers(kcm)
            self.enabled_controllers = [c for c in self._controllers if not known or c in known]
            missing = [c for c in self._controllers if c not in self.enabled_controllers]
            if missing:
                print(
                    f"[kai-controlplane] kube-controller-manager {self.version} has no {', '.join(missing)}",
                    file=sys.stderr,
                )
            args = [
                str(kcm),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['controller-manager']}",
                f"--cert-dir={d / 'controller-manager-certs'}",
                f"--controllers={','.join(self.enabled_controllers)}",
                "--use-service-account-credentials=true",
                f"--root-ca-file={self.ca_file}",
                f"--service-account-private-key-file={self.sa_key}",
                "--leader-elect=false",
                f"--v={self.verbosity}",
                *self._gates_flag(kcm),
                *self._kcm_args,
            ]
            self.controller_manager = _Process(
                "kube-controller-manager", args, d / "logs" / "kube-controller-manager.log"
            )
        self.controller_manager.start()
        port = self.ports["controller-manager"]
        self._wait("kube-controller-manager", self.controller_manager, lambda: self._insecure_healthz(port))

    def start_scheduler(self, extra_args: Iterable[str] = ()) -> None:
        """Start the kube-scheduler that was built with the rest (its default profile)."""
        if "kube-scheduler" not in self.binaries:
            raise ControlPlaneError("no kube-scheduler binary given")
        d = self.dir
        if self.kube_scheduler is None or extra_args:
            sched = self.binaries["kube-scheduler"]
            kubeconfig = self._component_kubeconfig("scheduler", "system:kube-scheduler")
            args = [
                str(sched),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['scheduler']}",
                f"--cert-dir={d / 'scheduler-certs'}",
                "--leader-elect=false",
                f"--v={self.verbosity}",
                *self._gates_flag(sched),
                *self._scheduler_args,
                *extra_args,
            ]
            if self.kube_scheduler is not None:
                self.kube_scheduler.stop()
            self.kube_scheduler = _Process("kube-scheduler", args, d / "logs" / "kube-scheduler.log")
        self.kube_scheduler.start()
        port = self.ports["scheduler"]
        self._wait("kube-scheduler", self.kube_scheduler, lambda: self._insecure_healthz(port))

    def stop_scheduler(self) -> None:
        if self.kube_scheduler is not None:
            self.kube_scheduler.stop()

    # ---------------- readiness

    def _wait(self, name: str, proc: _Process, ready, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.start_timeout)
        last = ""
        while time.monotonic() < deadline:
            failure = proc.failed()
            if failure:
                raise ControlPlaneError(failure)
            try:
                ok, last = ready()
                if ok:
                    return
            except (OSError, http.client.HTTPException, ssl.SSLError) as e:
                last = str(e)
            time.sleep(0.25)
        raise ControlPlaneError(
            f"{name} not ready after {timeout or self.start_timeout:.0f}s ({last}); "
            f"last lines of {proc.log}:\n{_tail(proc.log)}"
        )

    def _etcd_healthy(self) -> tuple[bool, str]:
        status, body = self._etcd_call("GET", "/health")
        return status == 200 and b'"true"' in body, body.decode(errors="replace")[:200]

    def _admin_ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.load_cert_chain(self._admin_crt, self._admin_key)
        return ctx

    def _apiserver_ready(self) -> tuple[bool, str]:
        if not Path(self.ca_file).exists():
            return False, "no serving certificate yet"
        status, body = self.request("GET", "/readyz")
        return status == 200, body.decode(errors="replace")[-300:]

    def _insecure_healthz(self, port: int) -> tuple[bool, str]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
        try:
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            body = r.read()
            return r.status == 200, body.decode(errors="replace")[-300:]
        finally:
            conn.close()

    # ---------------- HTTP helpers (admin identity)

    def request(
        self, method: str, path: str, body: Any = None, *, content_type: str = "application/json", timeout: float = 30
    ) -> tuple[int, bytes]:
        """One call to the API server as the admin (system:masters); returns (status, body)."""
        port = self.ports["apiserver"]
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=self._admin_ssl(), timeout=timeout)
        try:
            data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
            headers = {"Accept": "application/json"}
            if data is not None:
                headers["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=headers)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def request_json(self, method: str, path: str, body: Any = None, *, ok: Iterable[int] = (200, 201)) -> dict:
        status, data = self.request(method, path, body)
        if status not in tuple(ok):
            raise ControlPlaneError(f"{method} {path}: HTTP {status}: {data.decode(errors='replace')[:500]}")
        return json.loads(data) if data else {}

    def _etcd_call(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.ports["etcd"], timeout=10)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    # ---------------- kubeconfigs and tokens

    def _write_kubeconfig(self, path: Path, *, user: dict, user_name: str, namespace: str | None = None) -> Path:
        context: dict[str, Any] = {"cluster": "kai-controlplane", "user": user_name}
        if namespace:
            context["namespace"] = namespace
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kai-controlplane",
                    "cluster": {"server": self.server, "certificate-authority-data": _b64(Path(self.ca_file))},
                }
            ],
            "users": [{"name": user_name, "user": user}],
            "contexts": [{"name": "kai-controlplane", "context": context}],
            "current-context": "kai-controlplane",
        }
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        path.chmod(0o600)
        return path

    def _write_kubeconfigs(self) -> None:
        admin = {"client-certificate-data": _b64(self._admin_crt), "client-key-data": _b64(self._admin_key)}
        self.kubeconfig = str(self._write_kubeconfig(self.dir / "admin.kubeconfig", user=admin, user_name="kai-admin"))

    def kubeconfig_for_user(self, user: str, groups: Iterable[str] = (), path: str | Path | None = None) -> str:
        """A kubeconfig authenticating as ``user`` (and ``groups``) by client certificate."""
        crt, key = self.client_certificate(user, groups)
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", user)
        out = Path(path) if path else self.dir / f"user-{stem}.kubeconfig"
        return str(
            self._write_kubeconfig(
                out, user={"client-certificate-data": _b64(crt), "client-key-data": _b64(key)}, user_name=user
            )
        )

    def token_for(
        self,
        namespace: str,
        serviceaccount: str,
        *,
        expiration_seconds: int = 24 * 3600,
        audiences: Iterable[str] = (),
        create: bool = False,
    ) -> str:
        """A token of the ServiceAccount from the TokenRequest API. ``create``: make the namespace and
        the ServiceAccount first if they are missing."""
        ns_q = urllib.parse.quote(namespace)
        sa_q = urllib.parse.quote(serviceaccount)
        if create:
            self.ensure_namespace(namespace, wait_default_sa=False)
            self.request_json(
                "POST",
                f"/api/v1/namespaces/{ns_q}/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": serviceaccount}},
                ok=(201, 409),
            )
        spec: dict[str, Any] = {"expirationSeconds": int(expiration_seconds)}
        if audiences:
            spec["audiences"] = list(audiences)
        tr = self.request_json(
            "POST",
            f"/api/v1/namespaces/{ns_q}/serviceaccounts/{sa_q}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        return tr["status"]["token"]

    def kubeconfig_for_token(
        self, token: str, path: str | Path | None = None, *, namespace: str | None = None, user_name: str = "kai-token"
    ) -> str:
        """A kubeconfig that authenticates with the bearer ``token`` (RBAC decides what it may do)."""
        if path is None:
            fd, name = tempfile.mkstemp(prefix="token-", suffix=".kubeconfig", dir=self.dir)
            os.close(fd)
            path = name
        return str(self._write_kubeconfig(Path(path), user={"token": token}, user_name=user_name, namespace=namespace))

    def kubeconfig_for_serviceaccount(
        self, namespace: str, serviceaccount: str, path: str | Path | None = None, *, create: bool = False
    ) -> str:
        tok = self.token_for(namespace, serviceaccount, create=create)
        return self.kubeconfig_for_token(
            tok, path, namespace=namespace, user_name=f"system:serviceaccount:{namespace}:{serviceaccount}"
        )

    def ensure_namespace(self, name: str, *, wait_default_sa: bool = True, timeout: float = 60) -> None:
        """Create the namespace if missing; by default wait for its "default" ServiceAccount (made by
        the serviceaccount controller), which the ServiceAccount admission plugin needs for pods."""
        self.request_json(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            ok=(201, 409),
        )
        if wait_default_sa:
            self.wait_for(
                lambda: (
                    self.request("GET", f"/api/v1/namespaces/{urllib.parse.quote(name)}/serviceaccounts/default")[0]
                    == 200
                ),
                timeout,
                f"ServiceAccount {name}/default",
            )

    def add_node(
        self,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        capacity: Mapping[str, str] | None = None,
        allocatable: Mapping[str, str] | None = None,
        taints: Iterable[Mapping[str, Any]] = (),
    ) -> dict:
        """Create a Node the way a kubelet and the node lifecycle controller would leave it: labels
        (``kubernetes.io/hostname`` by default), capacity/allocatable and a Ready condition in its
        status, and no ``node.kubernetes.io/not-ready`` taint (the API server's admission adds it at
        creation; without a node lifecycle controller nothing else removes it). Returns the Node."""
        cap = dict(capacity or {"cpu": "64", "memory": "512Gi", "pods": "110"})
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        }
        self.request_json("POST", "/api/v1/nodes", node, ok=(201,))
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "set by the test control plane (no kubelet)",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        status = {"status": {"capacity": cap, "allocatable": dict(allocatable or cap), "conditions": [ready]}}
        path = f"/api/v1/nodes/{urllib.parse.quote(name)}"
        code, data = self.request("PATCH", f"{path}/status", status, content_type="application/merge-patch+json")
        if code != 200:
            raise ControlPlaneError(f"PATCH {path}/status: HTTP {code}: {data[:300]!r}")
        spec = {"spec": {"taints": list(taints) or None}}
        code, data = self.request("PATCH", path, spec, content_type="application/merge-patch+json")
        if code != 200:
            raise ControlPlaneError(f"PATCH {path}: HTTP {code}: {data[:300]!r}")
        return json.loads(data)

    @staticmethod
    def wait_for(cond, timeout: float = 60, what: str = "condition", interval: float = 0.2):
        deadline = time.monotonic() + timeout
        while True:
            v = cond()
            if v:
                return v
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)

    def api_client(self, kubeconfig: str | None = None):
        """An ``kubernetes.client.ApiClient`` for the admin kubeconfig (or another one)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=kubeconfig or self.kubeconfig)

    # ---------------- audit log

    def audit_offset(self) -> int:
        """The audit log's current size: pass it to ``audit_events`` to read only later requests."""
        if self.audit_log is None:
            raise ControlPlaneError("this control plane runs without an audit log (ControlPlane(audit=True))")
        try:
            return self.audit_log.stat().st_size
        except FileNotFoundError:
            return 0

    def audit_events(self, offset: int = 0) -> tuple[list[dict], int]:
        """The audit events (``audit.k8s.io/v1`` Event objects) written from byte ``offset`` of the
        audit log, and the offset after the last complete line."""
        end = self.audit_offset()
        try:
            with self.audit_log.open("rb") as f:
                f.seek(offset)
                data = f.read(max(0, end - offset))
        except FileNotFoundError:
            return [], offset
        data = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
        return [json.loads(line) for line in data.splitlines() if line.strip()], offset + len(data)

    # ---------------- etcd

    def etcd_revision(self) -> int:
        status, body = self._etcd_call(
            "POST", "/v3/kv/range", {"key": base64.b64encode(b"/registry").decode(), "limit": 1, "keys_only": True}
        )
        if status != 200:
            raise ControlPlaneError(f"etcd range failed: HTTP {status}: {body[:200]!r}")
        return int(json.loads(body)["header"]["revision"])

    def compact_etcd(self, revision: int | None = None) -> int:
        """Compact etcd's history up to ``revision`` (default: the current one) the way kube-apiserver's
        own compactor does: record it under ``compact_rev_key`` (compare-and-swap on the key's version)
        and compact physically. Returns the revision.

        What then gets 410 Gone for a resourceVersion older than that (measured on 1.37):
        - a read that reaches etcd: at once with ``watch_cache=False``; with the watch cache on, a
          list of that exact resourceVersion once the cache has read ``compact_rev_key`` (it polls
          every 15s and drops its snapshots);
        - a watch: at once with ``watch_cache=False``. With the watch cache on (the default, as in a
          real cluster) the cache keeps serving watches from its own event history, compaction or
          not, until that history is too old; ``restart_apiserver()`` starts a fresh cache, after
          which every older watch gets 410 Gone.
        A watch that starts exactly at the compacted revision (resourceVersion = revision - 1) gets
        500 "etcd event received with PrevKv=nil" rather than 410: etcd still has that event, not the
        previous value the API server asks for.
        """
        key = base64.b64encode(COMPACT_REV_KEY).decode()
        for _ in range(10):
            status, body = self._etcd_call("POST", "/v3/kv/range", {"key": key})
            if status != 200:
                raise ControlPlaneError(f"etcd range failed: HTTP {status}: {body[:200]!r}")
            resp = json.loads(body)
            kvs = resp.get("kvs") or []
            version = int(kvs[0].get("version", 0)) if kvs else 0
            rev = revision if revision is not None else int(resp["header"]["revision"])
            txn = {
                "compare": [{"key": key, "target": "VERSION", "result": "EQUAL", "version": str(version)}],
                "success": [{"request_put": {"key": key, "value": base64.b64encode(str(rev).encode()).decode()}}],
            }
            status, body = self._etcd_call("POST", "/v3/kv/txn", txn)
            if status != 200:
                raise ControlPlaneError(f"etcd txn on compact_rev_key failed: HTTP {status}: {body[:300]!r}")
            if json.loads(body).get("succeeded"):
                break
        else:
            raise ControlPlaneError("could not record the compaction revision in etcd (compact_rev_key kept changing)")
        status, body = self._etcd_call("POST", "/v3/kv/compaction", {"revision": str(rev), "physical": True})
        if status != 200:
            raise ControlPlaneError(f"etcd compaction to {rev} failed: HTTP {status}: {body[:300]!r}")
        return rev

    # ---------------- description

    def describe(self) -> str:
        gates = ",".join(f"{k}={str(v).lower()}" for k, v in sorted(self.feature_gates.items())) or "(none)"
        return (
            f"Kubernetes {self.version} on {self.server} (etcd {self.etcd_url}), dir {self.dir}\n"
            f"  feature gates: {gates}\n"
            f"  runtime config: {','.join(self._runtime_config)}\n"
            f"  controllers: {','.join(self.enabled_controllers)}"
        )


# ---------------------------------------------------------------- shell entry


def _main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="controlplane.py",
        description="A local Kubernetes control plane for kai (etcd, kube-apiserver, kube-controller-manager).",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser(
        "up", help="build or reuse the binaries, start the control plane, print the kubeconfig, wait for Ctrl-C"
    )
    up.add_argument("--scheduler", action="store_true", help="also run kube-scheduler (default profile)")
    up.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, etcd data) on exit")
    up.add_argument("--kubeconfig-out", help="also copy the admin kubeconfig to this path")
    args = ap.parse_args(argv)

    build = _load_build()
    try:
        bins = build.ensure_binaries()
    except build.BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cp = ControlPlane(bins, scheduler=args.scheduler, keep_dir=args.keep)
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    try:
        cp.start()
    except ControlPlaneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        kubeconfig = cp.kubeconfig
        if args.kubeconfig_out:
            shutil.copyfile(cp.kubeconfig, args.kubeconfig_out)
            kubeconfig = str(Path(args.kubeconfig_out).resolve())
        print(cp.describe())
        print(f"logs: {cp.dir / 'logs'}")
        print(f"kubeconfig: {kubeconfig}")
        print(f"export KUBECONFIG={kubeconfig}")
        print(f"kai-cli run scheduler --kubeconfig {kubeconfig} --feature-gates=DynamicResourceAllocation=true")
        print("Ctrl-C to stop.", flush=True)
        while not stop.wait(1.0):
            for p in (cp.etcd, cp.apiserver, cp.controller_manager, cp.kube_scheduler):
                if p is not None and p.failed():
                    print(f"error: {p.failed()}", file=sys.stderr)
                    return 1
        return 0
    finally:
        cp.stop()


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
