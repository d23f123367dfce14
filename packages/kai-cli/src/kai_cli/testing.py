"""A test kit for plugin authors: kai's scheduler and binder, with your plugin, on a cluster in the
test's process.

Two clusters, one set of reads (:class:`ClusterReads`):

- :class:`EmbeddedKaiCluster`: manifests in an embedded cluster, controllers, scheduler and binder
  run in rounds until nothing changes (what ``kai-cli run scheduler --until-idle`` does), on a
  simulated clock so retries cost no time. :meth:`EmbeddedKaiCluster.explain` says why a pod went
  where it went.
- :class:`LiveKaiCluster`: the same embedded cluster behind kai's fake Kubernetes API server
  (:class:`kai_core.testing.FakeApiServer`), its controllers on a thread as a control plane runs
  them, and kai's scheduler and binder components (what ``kai-cli run scheduler --kubeconfig`` and
  ``run binder --kubeconfig`` run) on threads of their own that reach it over HTTP only; or, with
  ``processes=True``, those two commands as processes (:class:`KaiProcess`), which see installed
  plugins only.

The pytest fixtures ``kai_cluster`` and ``kai_live_cluster`` (:mod:`kai_cli.pytest_plugin`, loaded
by pytest through kai-cli's ``pytest11`` entry point) make them and close them after the test.

Manifests are given as paths (a file or directory, as ``--cluster`` takes), YAML text (anything
with a line break) or object dicts; your plugins as ``{name: plugin object}`` (a module, a class
instance), registered next to kai's built-ins and every installed plugin.

The kit lives in kai-cli, not kai-core: running the binder and the components takes kai-binder and
kai-cli, and kai-core imports nothing of ours (see ``docs/writing-a-device-plugin.md``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

#: the most a live cluster's waits last (a bound, not an expectation)
WAIT = 30.0

#: what a test gives as a manifest: a path, YAML text, or an object
Manifest = str | os.PathLike | dict


def wait_for(predicate: Callable[[], object], what: str, timeout: float = WAIT, *,
             abort: Callable[[], str | None] | None = None, context: Callable[[], str] | None = None) -> None:
    """Poll ``predicate`` until it holds; fail the test naming ``what`` after ``timeout`` seconds.
    A predicate that raises (an object not there yet) counts as not yet. ``abort`` ends the wait
    at once when it returns a reason (a process that died); ``context`` adds to the timeout's
    message (the processes' stderr)."""
    import pytest

    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:  # an object not there yet reads as "not yet"
            pass
        reason = abort() if abort is not None else None
        if reason:
            pytest.fail(f"gave up waiting for {what}: {reason}")
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {timeout:g}s" + (context() if context else ""))
        time.sleep(0.02)


def plugin_manager(plugins: Mapping[str, object] | None = None, *, installed: bool = True):
    """kai-core's built-in plugins, every installed plugin (``installed``), the binder's hook specs,
    and ``plugins`` (name -> plugin object) registered. A plugin kai refuses (a misspelt hook)
    raises :class:`~kai_core.framework.plugins.PluginRefused` here, as the scheduler would."""
    from kai_binder.hooks import add_binder_hookspecs
    from kai_core.plugins import build_plugin_manager

    pm = build_plugin_manager(load_external=installed)
    add_binder_hookspecs(pm)
    for name, plugin in (plugins or {}).items():
        pm.register(plugin, name=name)
    return pm


def load_manifests(store, *manifests: Manifest) -> list[dict]:
    """Put ``manifests`` (paths, YAML text or dicts) into an embedded ``store``, as ``--cluster``
    loads them (statuses, uids and resourceVersions kept); returns the stored objects."""
    from kai_core.apiserver.manifests import Manifest as Doc
    from kai_core.apiserver.manifests import apply_manifests, parse_documents, read_manifests

    docs: list = []
    for i, m in enumerate(manifests):
        if isinstance(m, dict):
            docs.append(Doc(f"<object {i + 1}>", json.loads(json.dumps(m))))
        elif isinstance(m, str) and "\n" in m:
            docs += parse_documents(m, f"<manifest text {i + 1}>")
        else:
            docs += read_manifests(m)
    return apply_manifests(store, docs)


class ClusterReads:
    """What a test reads of its cluster (``store``: the cluster's own store, as an admin sees it).

    Kinds are named as ``kai-cli get`` takes them: the resource (``pods``,
    ``resourceclaims.resource.k8s.io``) or any short form (``resourceclaims``, ``pod``, ``po``,
    ``bindrequests``, ``br``). Namespaced kinds default to ``default``.
    """

    store = None

    def get(self, kind: str, name: str, namespace: str | None = "default") -> dict:
        """One object (NotFound if absent); ``namespace`` is ignored for cluster-scoped kinds."""
        rk = self.store.kinds.lookup(kind)
        return self.store.get(rk.resource, name, namespace if rk.namespaced else None)

    def list(self, kind: str, namespace: str | None = "default") -> list[dict]:
        """Every object of ``kind`` in ``namespace`` (None: all namespaces), sorted by namespace and name."""
        rk = self.store.kinds.lookup(kind)
        return self.store.list(rk.resource, namespace if rk.namespaced else None)[0]

    def placed(self, namespace: str = "default") -> dict[str, str]:
        """Pod name -> node, for the bound pods of ``namespace``."""
        return {p["metadata"]["name"]: p["spec"]["nodeName"]
                for p in self.list("pods", namespace) if p["spec"].get("nodeName")}

    def pending_message(self, pod: str, namespace: str = "default") -> str | None:
        """The message of the pod's ``PodScheduled=False`` condition (kube-scheduler's ``0/N nodes
        are available: ...``), None when it has none."""
        conditions = (self.get("pods", pod, namespace).get("status") or {}).get("conditions") or []
        return next((c.get("message", "") for c in conditions
                     if c.get("type") == "PodScheduled" and c.get("status") == "False"), None)

    def devices_of(self, pod: str, namespace: str = "default") -> dict[str, list[str]]:
        """The devices allocated to the pod's claims: request name (``request/subrequest`` for
        ``firstAvailable``) -> ``driver/pool/device`` of each device, from the claims' status."""
        obj = self.get("pods", pod, namespace)
        spec, status = obj["spec"], obj.get("status") or {}
        statuses = {s.get("name"): s.get("resourceClaimName") for s in status.get("resourceClaimStatuses") or []}
        out: dict[str, list[str]] = {}
        for rc in spec.get("resourceClaims") or []:
            claim_name = rc.get("resourceClaimName") or statuses.get(rc.get("name"))
            if not claim_name:
                continue
            claim = self.get("resourceclaims", claim_name, namespace)
            devices = ((claim.get("status") or {}).get("allocation") or {}).get("devices") or {}
            for r in devices.get("results") or []:
                out.setdefault(r["request"], []).append(f"{r['driver']}/{r['pool']}/{r['device']}")
        return out


class EmbeddedKaiCluster(ClusterReads):
    """Manifests in an embedded cluster with the scheduler and the binder, as ``kai-cli run scheduler
    --until-idle`` builds them (``gates`` as ``--feature-gates``, ``score_weights`` as
    ``--score-weight``, ``binder=False`` as ``--no-binder``), ``plugins`` registered."""

    def __init__(self, *manifests: Manifest, plugins: Mapping[str, object] | None = None,
                 gates: str = "DynamicResourceAllocation=true", scheduler_name: str = "kai-scheduler",
                 score_weights: Mapping[str, float] | None = None, binder: bool = True,
                 installed_plugins: bool = True) -> None:
        from kai_cli.runner import binder_options, embedded_components
        from kai_core.api.features import FeatureGates
        from kai_core.cluster import EmbeddedCluster
        from kai_core.scheduler.cycle import SchedulerConfig
        from kai_core.scheduler.explain import DecisionRecorder

        self.pm = plugin_manager(plugins, installed=installed_plugins)
        self.gates = FeatureGates.parse(gates)
        self.cluster = EmbeddedCluster(self.pm)
        self.store = self.cluster.store
        load_manifests(self.store, *manifests)
        config = SchedulerConfig(scheduler_name, self.gates, score_weights=dict(score_weights or {}))
        options = binder_options(embedded=True, scheduler_names=[scheduler_name]) if binder else None
        self.scheduler, self.binder, self.clock = embedded_components(
            self.cluster, self.pm, self.gates, config, until_idle=True, binder=options)
        self.scheduler.recorder = self._recorder = DecisionRecorder(keep_all=True)

    def add(self, *manifests: Manifest) -> list[dict]:
        """Put more objects into the cluster (before the next :meth:`run`)."""
        return load_manifests(self.store, *manifests)

    def run(self, max_rounds: int = 100):
        """Controllers, scheduler and binder until a round writes nothing and no retry is due;
        returns the :class:`~kai_cli.runner.RunSummary`."""
        from kai_cli.runner import run_embedded

        return run_embedded(self.cluster, self.scheduler, self.binder, until_idle=True, max_rounds=max_rounds,
                            clock=self.clock)

    def explain(self, pod: str, namespace: str = "default"):
        """The :class:`~kai_core.scheduler.explain.Explanation` of the scheduler's last decision
        about the pod (``.text()`` is what ``kai-cli explain pod`` prints); KeyError when it made none."""
        key = f"{namespace}/{pod}"
        try:
            return self._recorder.last[key]
        except KeyError:
            raise KeyError(f"no decision about pod {key} was made (not pending, or not run yet)") from None

    def close(self) -> None:
        if self.binder is not None:
            self.binder.close()


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


class KaiProcess:
    """``kai-cli run scheduler`` or ``kai-cli run binder`` (``which``) with ``args``, as a process of
    this Python (``python -m kai_cli.main``); its stdout and stderr go to files in ``directory``.

    It sees only installed plugins (entry points): one registered in the test's process cannot
    reach it. :meth:`stop` sends SIGTERM, waits, and kills what is still running."""

    #: stderr lines shown when a process is reported
    TAIL = 20

    def __init__(self, which: str, args: Iterable[str], directory: Path) -> None:
        self.name = which
        self.args = [sys.executable, "-m", "kai_cli.main", "run", which, *args]
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        n = sum(1 for _ in directory.glob(f"{which}-*.stderr"))
        self.stdout_path = directory / f"{which}-{n}.stdout"
        self.stderr_path = directory / f"{which}-{n}.stderr"
        self.killed = False
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # lines reach the files as they are written
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.popen = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)

    @property
    def code(self) -> int | None:
        """The exit code, None while it runs."""
        return self.popen.poll()

    @property
    def done(self) -> bool:
        return self.code is not None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def ended(self) -> str:
        code = self.code
        return f"was ended by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"

    def report(self, state: str | None = None) -> str:
        """How it ended (or that it runs; ``state`` says it instead), then the last lines of its stderr."""
        if state is None and self.killed:
            state = "did not stop on SIGTERM and was killed"
        elif state is None:
            state = "is running" if not self.done else self.ended()
        lines = self.stderr().rstrip().splitlines()
        first = f"kai-cli run {self.name} {state}"
        if not lines:
            return first + " (no stderr)"
        if len(lines) == 1:
            return f"{first}: {lines[0]}"
        return (f"{first}; its stderr (last {min(len(lines), self.TAIL)} lines):\n"
                + "\n".join(lines[-self.TAIL:]))

    def wait_started(self, timeout: float = WAIT) -> None:
        """Wait until it says it is running (its reflectors synced); fail the test with its stderr
        when it exits first (``--require-plugin`` naming a plugin that is not installed: exit 2)."""
        import pytest

        running = f"{self.name}: running"
        wait_for(lambda: running in self.stdout() or self.done, f"kai-cli run {self.name} to be running", timeout,
                 context=lambda: "\n" + self.report())
        if running not in self.stdout():
            pytest.fail(self.report(f"{self.ended()} before it was running"))

    def stop(self, timeout: float = WAIT) -> int:
        """SIGTERM (kai's components stop cleanly on it), wait up to ``timeout``, then kill;
        returns the exit code."""
        if not self.done:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.popen.kill()
                self.popen.wait(timeout)
        return self.popen.returncode


class Components:
    """kai's scheduler and binder on threads against the cluster of :attr:`kubeconfig`; each gets
    its own plugin manager from :meth:`new_plugin_manager` unless given one."""

    kubeconfig: Path | str
    running: list[Running]
    plugins: Mapping[str, object] | None = None

    def new_plugin_manager(self):
        """A component's plugins: the installed ones and :attr:`plugins`, with the binder's hook specs."""
        return plugin_manager(self.plugins)

    def options(self, **kw):
        """ClusterOptions for this cluster: short periods and backoffs, so tests stay quick."""
        from kai_cli.kube import ClusterOptions

        kw.setdefault("period", 0.2)
        kw.setdefault("sync_timeout", WAIT)
        kw.setdefault("store_kwargs", {"backoff_base": 0.01, "backoff_cap": 0.1, "sync_timeout": WAIT})
        return ClusterOptions(kubeconfig=str(self.kubeconfig), **kw)

    def start(self, which: str, gates: str = "DynamicResourceAllocation=true", pm=None, **kw) -> Running:
        """Run the ``scheduler`` or the ``binder`` on a thread; ``kw`` go to ClusterOptions, except
        the component's own (``scheduler_name``, ``backoff_limit``, ``score_weights``,
        ``binder_kwargs``, ``announce``)."""
        from kai_cli.kube import BinderComponent, SchedulerComponent
        from kai_core.api.features import FeatureGates

        own_keys = ("scheduler_name", "backoff_limit", "score_weights", "binder_kwargs", "announce")
        own = {k: kw.pop(k) for k in own_keys if k in kw}
        if pm is None:
            pm = self.new_plugin_manager()
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
    would, and kai's components reach it over HTTP only, through a kubeconfig written to
    ``directory``. ``manifests`` as :func:`load_manifests` takes them; with ``store`` given, that
    store is served instead (and no controllers run)."""

    def __init__(self, directory: Path, *manifests: Manifest, store=None, bookmark_interval: float = 0.2,
                 plugins: Mapping[str, object] | None = None) -> None:
        from kai_core.cluster import EmbeddedCluster
        from kai_core.testing import FakeApiServer

        self.plugins = plugins
        self.pm = self.new_plugin_manager()
        if store is None:
            self.cluster = EmbeddedCluster(self.pm)
            self.store = self.cluster.store
            load_manifests(self.store, *manifests)
        else:
            self.cluster = None
            self.store = store
        self.server = FakeApiServer(self.store, bookmark_interval=bookmark_interval).start()
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.kubeconfig = self.server.write_kubeconfig(Path(directory) / "kubeconfig")
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


class LiveKaiCluster(LiveCluster, ClusterReads):
    """A :class:`LiveCluster` for a plugin's tests: :meth:`start` runs the scheduler and the binder
    against it, :meth:`wait_bound` waits for pods to be bound.

    ``processes=True`` runs them as ``kai-cli run scheduler|binder --kubeconfig`` processes
    (:class:`KaiProcess`), as they are deployed: they load installed plugins only, so ``plugins``
    is refused then; install yours (``pip install -e .``) and name it in ``require_plugins``, which
    become ``--require-plugin`` flags, so a plugin that is not installed stops the test with the
    process's one-line error instead of a run without it. On threads, ``require_plugins`` is
    checked against the components' plugins the same way."""

    def __init__(self, directory: Path, *manifests: Manifest, processes: bool = False,
                 require_plugins: Iterable[str] = (), **kw) -> None:
        if processes and kw.get("plugins"):
            raise TypeError(f"plugins={sorted(kw['plugins'])!r} cannot reach the scheduler and binder processes: "
                            "install your plugin (pip install -e .) and name it in require_plugins=")
        self.processes = processes
        self.require_plugins = list(require_plugins)
        self.directory = Path(directory)
        self.started_processes: list[KaiProcess] = []
        super().__init__(directory, *manifests, **kw)

    def start(self, which: str | None = None, gates: str = "DynamicResourceAllocation=true", pm=None,
              **kw) -> Running | KaiProcess | list:
        """Without ``which``: the scheduler and the binder (``score_weights`` and
        ``scheduler_name`` go to the scheduler); else that one component (see
        :meth:`Components.start`). With ``processes``: see :meth:`start_process`."""
        if self.processes:
            if pm is not None:
                raise TypeError("pm= cannot reach a process: it loads the installed plugins")
            if which is not None:
                return self.start_process(which, gates, **kw)
            binder_kw = {k: kw[k] for k in ("scheduler_name", "period") if k in kw}
            return [self.start_process("scheduler", gates, **kw), self.start_process("binder", gates, **binder_kw)]
        if which is not None:
            return super().start(which, gates, pm, **kw)
        binder_kw = {"binder_kwargs": {"scheduler_names": [kw["scheduler_name"]]}} if "scheduler_name" in kw else {}
        return [super().start("scheduler", gates, pm, **kw), super().start("binder", gates, pm, **binder_kw)]

    def new_plugin_manager(self):
        pm = super().new_plugin_manager()
        # processes check for themselves (--require-plugin), and their own error is the one to show
        missing = None if self.processes else pm.missing(self.require_plugins)
        if missing:
            raise AssertionError(f"require_plugins: {missing}")
        return pm

    def start_process(self, which: str, gates: str = "DynamicResourceAllocation=true", *, period: float = 0.2,
                      scheduler_name: str | None = None, score_weights: Mapping[str, float] | None = None,
                      args: Iterable[str] = ()) -> KaiProcess:
        """``kai-cli run WHICH --kubeconfig <this cluster>`` with ``--feature-gates=gates``,
        ``--period``, ``--scheduler-name``, ``--score-weight PLUGIN=N`` (the scheduler's), a
        ``--require-plugin`` for each of :attr:`require_plugins` and ``args``; returns once it is
        running (the test fails with its stderr when it exits first)."""
        if which not in ("scheduler", "binder"):
            raise ValueError(f"which={which!r}: expected 'scheduler' or 'binder'")
        if score_weights and which != "scheduler":
            raise TypeError("score_weights= is the scheduler's")
        flags = ["--kubeconfig", str(self.kubeconfig), f"--feature-gates={gates}", "--period", f"{period:g}"]
        if scheduler_name is not None:
            flags += ["--scheduler-name", scheduler_name]
        for plugin, weight in (score_weights or {}).items():
            flags += ["--score-weight", f"{plugin}={weight:g}"]
        for plugin in self.require_plugins:
            flags += ["--require-plugin", plugin]
        process = KaiProcess(which, [*flags, *args], self.directory / "processes")
        self.started_processes.append(process)
        process.wait_started()
        return process

    def died(self) -> str | None:
        """The report of a started process that has exited, None while all run."""
        return next((p.report() for p in self.started_processes if p.done), None)

    def processes_report(self) -> str:
        return "".join("\n" + p.report() for p in self.started_processes)

    def wait_for(self, predicate, what: str, timeout: float = WAIT) -> None:
        """:func:`wait_for`, ended early by a process that exits; a failure shows the processes' stderr."""
        wait_for(predicate, what, timeout, abort=self.died, context=self.processes_report)

    def wait_bound(self, *pods: str, namespace: str = "default", timeout: float = WAIT) -> dict[str, str]:
        """Wait until every pod named is bound; returns pod name -> node for them."""
        self.wait_for(lambda: all(p in self.placed(namespace) for p in pods),
                      f"pods {', '.join(pods)} to be bound", timeout)
        placed = self.placed(namespace)
        return {p: placed[p] for p in pods}

    def wait_pending(self, pod: str, namespace: str = "default", timeout: float = WAIT) -> str:
        """Wait until the pod is reported unschedulable; returns the message."""
        self.wait_for(lambda: self.pending_message(pod, namespace), f"pod {pod} to be reported unschedulable",
                      timeout)
        return self.pending_message(pod, namespace) or ""

    def stop_components(self) -> None:
        """Stop the threads' components and the processes (SIGTERM, wait, kill); a process that had
        to be killed, or that was running and exited non-zero, is reported (AssertionError)."""
        super().stop_components()
        running = [p for p in self.started_processes if not p.done]
        for p in running:
            p.stop()
        bad = [p.report() for p in running if p.killed or p.code != 0]
        if bad:
            raise AssertionError("\n".join(bad))

    def close(self) -> None:
        try:
            self.stop_components()
        finally:  # the server and the control plane stop even when a process did not stop cleanly
            super().close()


def close_all(clusters: Iterable) -> None:
    """Close every cluster, even when one fails to (the first failure is raised afterwards)."""
    error: BaseException | None = None
    for c in clusters:
        try:
            c.close()
        except BaseException as exc:  # noqa: BLE001 - every cluster gets closed first
            error = error or exc
    if error is not None:
        raise error
