"""``kai-cli``: run the scheduler and binder, inspect and validate clusters, list plugins.

Every error a user can cause (a bad path, invalid YAML, an object failing its schema, an unknown
feature gate, a cluster missing an API) ends the command with one line on stderr and exit code 2,
never a traceback. A component that has to stop while running against a cluster (a lost leader
Lease) exits with 1.

Nothing heavy is imported at module level (``kubernetes``, ``prometheus_client``, the scheduler):
``kai-cli --help`` stays fast; each command imports what it needs. Plugins add commands through the
``kai_cli_commands`` hook; they are loaded only when a command name is not one of ours or the
commands are listed (see :class:`KaiGroup`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import sys
import threading

import click
from click.core import ParameterSource

EXIT_USAGE = 2
EXIT_FAILURE = 1
#: an error line longer than this is cut (values in messages are cut already; this is the net)
MAX_ERROR_CHARS = 2000
log = logging.getLogger("kai.cli")


class CliError(click.ClickException):
    exit_code = EXIT_USAGE

    def show(self, file=None) -> None:
        from kai_core.api.errors import shorten
        from kai_core.observability import redact_credentials

        # one line whatever the message holds (a YAML parser's error of a kubeconfig spans several),
        # without the password of a server URL, and cut if hostile input made it huge
        message = " ".join(part.strip() for part in self.format_message().splitlines() if part.strip())
        click.echo(f"kai-cli: error: {shorten(redact_credentials(message), MAX_ERROR_CHARS)}", err=True)


class CliFailure(CliError):
    """A component stopped for a reason found while running (one line, exit 1)."""

    exit_code = EXIT_FAILURE


def friendly_errors(fn):
    """Turn every expected failure into a CliError (one line, exit 2)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from kai_core.api.errors import ApiError
        from kai_core.api.features import FeatureGateError
        from kai_core.apiserver.manifests import ManifestError

        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except ManifestError as exc:
            raise CliError(str(exc)) from None
        except FeatureGateError as exc:
            raise CliError(f"--feature-gates: {exc}") from None
        except ApiError as exc:
            raise CliError(exc.message) from None
        except OSError as exc:
            raise CliError(f"{getattr(exc, 'filename', '') or ''}: {exc.strerror or exc}".lstrip(": ")) from None
        except Exception as exc:  # last resort: still one line; -v shows the traceback
            if log.isEnabledFor(logging.DEBUG):
                log.exception("unexpected error")
            raise CliError(f"unexpected error: {type(exc).__name__}: {exc}") from None

    return wrapper


class KaiGroup(click.Group):
    """The ``kai-cli`` group, with the commands plugins add through ``kai_cli_commands`` loaded
    lazily: building the plugin manager (:func:`_plugins_only`) imports every installed plugin and
    kai-core's built-ins, about three times what ``kai-cli`` itself costs to start, so it is done
    only when a command name is not one of ours, or when the commands are listed (``--help``, no
    command, shell completion). ``kai-cli run scheduler`` and the other built-in commands never
    pay for it.

    Plugins get a group of their own to add to (a copy of this one), called at most once per
    invocation; the commands they added are kept on the context. A built-in command always wins
    over a plugin command of the same name (logged), and a plugin that fails is logged and adds
    nothing; neither stops the CLI.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*self.commands, *_plugin_commands(self, ctx)])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None:
            cmd = _plugin_commands(self, ctx).get(cmd_name)
        return cmd


_PLUGIN_COMMANDS = "kai_cli.plugin_commands"


def _plugin_commands(group: click.Group, ctx: click.Context) -> dict[str, click.Command]:
    """The commands plugins add to ``group`` (by name), asked once per invocation."""
    found = ctx.meta.get(_PLUGIN_COMMANDS)
    if found is None:
        found = ctx.meta[_PLUGIN_COMMANDS] = _ask_plugins_for_commands(group)
    return found


def _ask_plugins_for_commands(group: click.Group) -> dict[str, click.Command]:
    try:
        pm = _plugins_only()
    except Exception as exc:  # the manager records a plugin that fails to load; this is a last resort
        log.error("cannot load the plugins, their commands are not available: %s: %s", type(exc).__name__, exc)
        return {}
    scratch = click.Group(group.name, commands=dict(group.commands))
    pm.cli_commands(scratch)  # each plugin on its own; one that raises is logged
    found: dict[str, click.Command] = {}
    for name, cmd in scratch.commands.items():
        if group.commands.get(name) is cmd:
            continue
        if name in group.commands:
            log.warning("a plugin's command %r is ignored: kai-cli has a command of that name", name)
        elif not isinstance(cmd, click.Command):
            log.warning("a plugin added %r as command %r, not a click command; ignored", cmd, name)
        else:
            found[name] = cmd
    return found


@click.group(cls=KaiGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kai-cli")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """kai: a Kubernetes batch scheduler for GPU clusters, with DRA and NVIDIA ComputeDomains."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    _redact_log_lines()
    if verbose < 2:
        # urllib3 warns at every connection retry it makes for the Kubernetes client; the store
        # reports what matters itself (an unreachable API server is one error line), -vv shows them
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def _redact_log_lines() -> None:
    """No log line shows the password of a server URL (``https://user:pass@host``): the stderr
    handler of ``basicConfig`` formats through :class:`kai_core.observability.RedactingFormatter`
    (the one ``configure_logging`` installs for components already does)."""
    from kai_core.observability import RedactingFormatter

    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and not isinstance(handler.formatter, RedactingFormatter):
            handler.setFormatter(RedactingFormatter(handler.formatter or logging.Formatter()))


def _check_save_path(save_path: str | None) -> None:
    """Refuse a --save path that cannot be written before the run rather than after it."""
    if not save_path:
        return
    parent = os.path.dirname(os.path.abspath(save_path))
    if not os.path.isdir(parent):
        raise CliError(f"--save {save_path}: directory {parent} does not exist")
    if os.path.isdir(save_path):
        raise CliError(f"--save {save_path}: is a directory")


def _save(store, save_path: str) -> None:
    """Write the final state (``--save``); a failed write is one error line naming the flag and path."""
    from kai_core.apiserver.manifests import save_state

    try:
        save_state(store, save_path)
    except OSError as exc:
        raise CliError(f"--save {save_path}: cannot write: {exc.strerror or exc}") from None
    click.echo(f"state saved to {save_path}")


def _plugins_only():
    """kai-core's built-in plugins and every installed one, without the binder's hooks: what
    ``kai_cli_commands`` is asked on (the binder's modules would import the Kubernetes store)."""
    from kai_core.plugins import build_plugin_manager

    return build_plugin_manager()


def _plugin_manager():
    from kai_binder.hooks import add_binder_hookspecs

    pm = _plugins_only()
    add_binder_hookspecs(pm)
    return pm


def _plugin_manager_requiring(names: tuple[str, ...]):
    """The plugin manager, refusing to go on (``--require-plugin``) when a plugin named is not loaded."""
    pm = _plugin_manager()
    missing = pm.missing(names)
    if missing:
        raise CliError(f"--require-plugin: {missing}")
    return pm


def _embedded_cluster(pm, cluster_path: str | None):
    from kai_core.cluster import EmbeddedCluster

    cluster = EmbeddedCluster(pm)
    if cluster_path is not None:
        cluster.load(cluster_path)
    return cluster


# -- run -----------------------------------------------------------------------------------------

#: flags that only mean something against a real cluster (name of the parameter: flag)
_REAL_ONLY = {
    "context": "--context",
    "leader_elect": "--leader-elect",
    "lease_duration": "--leader-elect-lease-duration",
    "renew_deadline": "--leader-elect-renew-deadline",
    "retry_period": "--leader-elect-retry-period",
    "lease_name": "--leader-elect-resource-name",
    "lease_namespace": "--leader-elect-resource-namespace",
    "identity": "--leader-elect-identity",
    "metrics_bind_address": "--metrics-bind-address",
    "health_probe_bind_address": "--health-probe-bind-address",
}
#: flags that only mean something for the embedded cluster
_EMBEDDED_ONLY = {"until_idle": "--until-idle", "save_path": "--save", "no_binder": "--no-binder",
                  "cluster_path": "--cluster"}


def _cluster_options(fn):
    """The flags ``run scheduler`` and ``run binder`` share for running against a real cluster."""
    options = [
        click.option("--kubeconfig", type=click.Path(dir_okay=False),
                     help="Run against the cluster of this kubeconfig file. $KUBECONFIG is not read: "
                          "touching a real cluster always takes this flag or --in-cluster."),
        click.option("--context", help="Kubeconfig context to use (default: its current context)."),
        click.option("--in-cluster", is_flag=True,
                     help="Run against the cluster this pod runs in, with its service account."),
        click.option("--leader-elect", is_flag=True,
                     help="Work only while holding this component's Lease; other replicas wait as standbys. "
                          "Exits 1 when the Lease is lost."),
        click.option("--leader-elect-lease-duration", "lease_duration", type=click.IntRange(min=1),
                     default=15, show_default=True,
                     help="Seconds a standby waits after the last renewal before taking over."),
        click.option("--leader-elect-renew-deadline", "renew_deadline",
                     type=click.FloatRange(min=0.0, min_open=True), default=10.0, show_default=True,
                     help="Seconds the leader keeps trying to renew before giving up the lead."),
        click.option("--leader-elect-retry-period", "retry_period",
                     type=click.FloatRange(min=0.0, min_open=True), default=2.0, show_default=True,
                     help="Seconds between attempts to acquire or renew."),
        click.option("--leader-elect-resource-name", "lease_name",
                     help="Name of the Lease (default: the scheduler name, or kai-binder)."),
        click.option("--leader-elect-resource-namespace", "lease_namespace",
                     help="Namespace of the Lease (default: the pod's namespace in a cluster, else the "
                          "kubeconfig context's, else default)."),
        click.option("--leader-elect-identity", "identity", hidden=True,
                     help="Identity in the Lease (default: <hostname>_<random>)."),
        click.option("--metrics-bind-address",
                     help="Serve Prometheus /metrics on this [host]:port, e.g. :8080 (off unless given)."),
        click.option("--health-probe-bind-address",
                     help="Serve /healthz and /readyz on this [host]:port, e.g. :8081 (off unless given)."),
        click.option("--qps", type=click.FloatRange(min=0.0), default=None,
                     help="Client-side limit of API requests per second (default 50; 0 turns it off)."),
        click.option("--burst", type=click.IntRange(min=1), default=None,
                     help="Requests allowed at once above --qps (default 300)."),
        click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
                     help="Log lines as text or as one JSON object each."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _check_mode(ctx: click.Context, real: bool, kubeconfig, in_cluster: bool) -> None:
    """One clear error for flags of the other mode."""
    if kubeconfig and in_cluster:
        raise CliError("--kubeconfig and --in-cluster exclude each other: pick one cluster")
    given = {name for name in ctx.params
             if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    if real:
        bad = [flag for name, flag in _EMBEDDED_ONLY.items() if name in given]
        if bad:
            raise CliError(
                f"{', '.join(bad)}: only for the embedded cluster, not with --kubeconfig/--in-cluster")
        return
    bad = [flag for name, flag in _REAL_ONLY.items() if name in given]
    if ctx.command.name == "scheduler":
        bad += [flag for name, flag in (("qps", "--qps"), ("burst", "--burst")) if name in given]
    if bad:
        raise CliError(f"{', '.join(bad)}: only against a real cluster (--kubeconfig FILE or --in-cluster)")
    if os.environ.get("KUBECONFIG"):
        click.echo("kai-cli: note: $KUBECONFIG is set but not used; pass --kubeconfig to run against that "
                   "cluster", err=True)


def _cluster_opts(params: dict, period: float):
    from kai_cli.kube import ClusterOptions
    from kai_core.observability import BindAddressError, parse_bind_address

    for name, flag in (("metrics_bind_address", "--metrics-bind-address"),
                       ("health_probe_bind_address", "--health-probe-bind-address")):
        try:  # checked before connecting, not after the API server has been asked
            parse_bind_address(params[name] or "")
        except BindAddressError as exc:
            raise CliError(f"{flag}: bind address {exc}") from None
    opts = ClusterOptions(
        kubeconfig=params["kubeconfig"], context=params["context"], in_cluster=params["in_cluster"],
        leader_elect=params["leader_elect"], lease_name=params["lease_name"],
        lease_namespace=params["lease_namespace"], lease_duration=float(params["lease_duration"]),
        renew_deadline=params["renew_deadline"], retry_period=params["retry_period"],
        identity=params["identity"], metrics_address=params["metrics_bind_address"],
        probe_address=params["health_probe_bind_address"], period=period,
    )
    if params["qps"] is not None:
        opts.qps = params["qps"]
    if params["burst"] is not None:
        opts.burst = params["burst"]
    return opts


@contextlib.contextmanager
def _on_signals(handler, signals=(signal.SIGTERM, signal.SIGINT)):
    """Call ``handler()`` on each of ``signals`` while the block runs (main thread only; elsewhere,
    as in tests driving the CLI from a thread, signals cannot be caught and nothing is installed)."""
    previous: dict = {}
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            previous[sig] = signal.signal(sig, lambda _signum, _frame: handler())
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _binder_options(workers: int | None = None, **overrides) -> dict:
    """See :func:`kai_cli.runner.binder_options`."""
    from kai_cli.runner import binder_options

    return binder_options(workers, **overrides)


def _run_component(component, log_format: str) -> None:
    """Run a cluster component in the foreground: info-level logs in ``log_format``, SIGTERM and
    SIGINT stop it cleanly (releasing its Lease); setup problems exit 2, a lost Lease exits 1."""
    from kai_cli.kube import RunFailure, SetupError
    from kai_core.observability import configure_logging
    from kai_core.runtime import tune_gc

    tune_gc()
    level = min(logging.getLogger().getEffectiveLevel(), logging.INFO)
    restore_logging = configure_logging(level, log_format)
    try:
        with _on_signals(component.stop):
            component.run()  # closes the binder's workers and releases the Lease on every way out
    except SetupError as exc:
        raise CliError(str(exc)) from None
    except RunFailure as exc:
        raise CliFailure(str(exc)) from None
    finally:
        restore_logging()
    click.echo(f"kai-cli: {component.summary()}")


@cli.group()
def run() -> None:
    """Run a component: the scheduler or the binder, against a cluster (--kubeconfig, --in-cluster)
    or the embedded one."""


@run.command("scheduler")
@click.option("--cluster", "cluster_path", type=click.Path(),
              help="Run an embedded cluster seeded from this manifest file or directory.")
@click.option("--feature-gates", default="", help="e.g. DynamicResourceAllocation=true (off by default).")
@click.option("--scheduler-name", default="kai-scheduler", show_default=True,
              help="Schedule the pods whose spec.schedulerName is this.")
@click.option("--until-idle", is_flag=True,
              help="Exit once a full round writes nothing and no retry is pending (embedded mode). Retry "
                   "waits are skipped on a simulated clock, at most 10 minutes of them; then it stops "
                   "with a warning naming the pods still not bound.")
@click.option("--save", "save_path", type=click.Path(dir_okay=False), help="Write the final state to this file.")
@click.option("--no-binder", is_flag=True, help="Do not run the binder in this process (embedded mode).")
@click.option("--period", default=1.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Seconds between rounds when not --until-idle; against a cluster, the longest wait "
                   "between cycles when nothing changes.")
@click.option("--backoff-limit", default=None, type=click.IntRange(min=0),
              help="spec.backoffLimit written into each BindRequest: the binder's attempts before the "
                   "pod is scheduled again. Unset by default, as KAI's own scheduler leaves it: one "
                   "attempt, then the pod is scheduled again.")
@click.option("--require-plugin", "require_plugins", multiple=True, metavar="NAME",
              help="Refuse to start unless this plugin is loaded (repeat for several); a plugin that "
                   "failed to load otherwise leaves the scheduler running without it.")
@click.option("--score-weight", "score_weights", multiple=True, metavar="PLUGIN=N",
              help="Multiply this plugin's node scores by N (a number >= 0; repeat for several "
                   "plugins). Default: kube-scheduler's default weight for kai-core's plugins doing "
                   "one of its plugins' work (kai-core.inter-pod-affinity and kai-core.topology-spread "
                   "2), else 1.")
@click.option("--actions", "actions", default=None, metavar="LIST",
              help="The eviction actions run after allocate, in this order: a comma-separated list of "
                   "consolidation, reclaim and preempt (\"\" for none). Default: all three, in KAI's order "
                   "consolidation,reclaim,preempt.")
@click.option("--max-consolidation-preemptees", "max_preemptees", default=None, metavar="N",
              help="The most running pods one consolidation may move (KAI's flag; default 16). 0 turns "
                   "consolidation off.")
@click.option("--actions-time-budget", "actions_budget", default=None, metavar="SECONDS",
              help="Seconds the eviction actions of one cycle may take together (default 0.5); what is "
                   "not tried by then waits for the next cycle.")
@_cluster_options
@click.pass_context
@friendly_errors
def run_scheduler(ctx, cluster_path, feature_gates, scheduler_name, until_idle, save_path, no_binder,
                  period, backoff_limit, require_plugins=(), score_weights=(), actions=None, max_preemptees=None,
                  actions_budget=None, **cluster) -> None:
    """Run the scheduler.

    Against a cluster (--kubeconfig FILE or --in-cluster) it runs alone; the binder is a separate
    process (kai-cli run binder). Otherwise it runs an embedded cluster with its controllers and
    the binder, in one process: with neither --cluster nor --kubeconfig, the built-in demo cluster
    (NVIDIA GB200 nodes and the seed's pod asking for a GPU and an IMEX channel of a
    ComputeDomain).
    """
    from kai_core.api.features import FeatureGates

    real = bool(cluster["kubeconfig"] or cluster["in_cluster"])
    _check_mode(ctx, real, cluster["kubeconfig"], cluster["in_cluster"])
    _check_save_path(save_path)
    gates = FeatureGates.parse(feature_gates)
    eviction_actions = _actions_config(actions, max_preemptees, actions_budget)
    pm = _plugin_manager_requiring(require_plugins)
    weights = _score_weights(score_weights, pm)
    if real:
        from kai_cli.kube import SchedulerComponent

        component = SchedulerComponent(
            _cluster_opts(cluster, period), gates, pm, scheduler_name=scheduler_name, score_weights=weights,
            actions=eviction_actions,
            backoff_limit=backoff_limit, announce=lambda line: click.echo(f"kai-cli: {line}"))
        if not gates.dra:
            click.echo("kai-cli: DynamicResourceAllocation is off: pods with resource claims stay pending "
                       "(--feature-gates=DynamicResourceAllocation=true turns it on)")
        _run_component(component, cluster["log_format"])
        return
    restore_logging = _embedded_logging(cluster["log_format"])
    try:
        _run_embedded_scheduler(gates, cluster_path, scheduler_name, until_idle, save_path, no_binder, period,
                                backoff_limit, pm=pm, score_weights=weights, actions=eviction_actions)
    finally:
        restore_logging()


def _actions_config(actions: str | None, max_preemptees: str | None, budget: str | None):
    """The eviction actions' ActionsConfig from ``--actions``, ``--max-consolidation-preemptees`` and
    ``--actions-time-budget``; a bad value is a one-line error."""
    from kai_cli.action_flags import ActionFlagError, actions_config

    try:
        return actions_config(actions, max_preemptees, budget)
    except ActionFlagError as exc:
        raise CliError(str(exc)) from None


def _score_weights(given: tuple[str, ...], pm) -> dict[str, float]:
    """``--score-weight PLUGIN=N`` values as ``{plugin: weight}``; a malformed one, a plugin that is
    not loaded or one that does not score nodes is a one-line error."""
    import math

    scorers = sorted({impl.plugin_name for impl in pm.implementations("kai_score_nodes")})
    weights: dict[str, float] = {}
    for value in given:
        name, sep, number = value.partition("=")
        name = name.strip()
        try:
            weight = float(number)
        except ValueError:
            weight = -1.0
        if not sep or not name or not math.isfinite(weight) or weight < 0:
            raise CliError(f"--score-weight {value!r}: expected PLUGIN=N with N a number >= 0 (e.g. "
                           "kai-core.binpack=2)")
        if name not in scorers:
            known = "is not loaded" if pm.get_plugin(name) is None else "does not score nodes (kai_score_nodes)"
            raise CliError(f"--score-weight {value!r}: plugin {name!r} {known}; plugins that score nodes: "
                           f"{', '.join(scorers) or 'none'}")
        weights[name] = weight
    return weights


def _embedded_logging(log_format: str):
    """Embedded mode keeps the logging ``-v`` set up, in JSON when asked."""
    if log_format != "json":
        return lambda: None
    from kai_core.observability import configure_logging

    return configure_logging(logging.getLogger().getEffectiveLevel(), "json")


def _run_embedded_scheduler(gates, cluster_path, scheduler_name, until_idle, save_path, no_binder, period,
                            backoff_limit, pm=None, score_weights=None, actions=None) -> None:
    from kai_cli.runner import binder_options, run_scheduler_embedded
    from kai_core.apiserver.manifests import dump_objects
    from kai_core.scheduler.cycle import SchedulerConfig

    demo = cluster_path is None
    pm = pm if pm is not None else _plugin_manager()
    if demo:
        from kai_dra_nvidia.demo import demo_manifests_path

        cluster_path = str(demo_manifests_path())
        click.echo(f"kai-cli: no --cluster or --kubeconfig given: running the built-in demo cluster ({cluster_path})")
    cluster = _embedded_cluster(pm, cluster_path)
    click.echo(f"kai-cli: scheduler {scheduler_name!r}, feature gates: {gates}")
    if not gates.dra:
        click.echo("kai-cli: DynamicResourceAllocation is off: pods with resource claims stay pending "
                   "(--feature-gates=DynamicResourceAllocation=true turns it on)")
    # --until-idle: scheduler and binder share a simulated clock, so retry waits cost nothing;
    # the periodic loop keeps real time
    from kai_core.runtime import tune_gc

    tune_gc()
    config = SchedulerConfig(scheduler_name, gates, backoff_limit=backoff_limit,
                             score_weights=dict(score_weights or {}))
    if actions is not None:
        config.actions = actions
    binder_kwargs = None if no_binder else binder_options(embedded=True, scheduler_names=[scheduler_name])
    stop = threading.Event()
    with _on_signals(stop.set, (signal.SIGTERM,)):  # Ctrl-C ends the loop as KeyboardInterrupt
        summary = run_scheduler_embedded(cluster, pm, gates, config, until_idle=until_idle, binder=binder_kwargs,
                                         period=period, stop=stop)
    for line in summary.eviction_lines():
        click.echo(line)
    _print_result(cluster.store, scheduler_name, show_bind_requests=demo, dump=dump_objects)
    click.echo(summary.line())
    click.echo(f"kai-cli: {summary.cost_line()}")
    if summary.gave_up:
        click.echo(f"kai-cli: warning: {summary.warning()}", err=True)
    if save_path:
        _save(cluster.store, save_path)


@run.command("binder")
@click.option("--cluster", "cluster_path", type=click.Path(),
              help="Embedded mode: carry out the pending BindRequests of this saved state (a file written "
                   "by run scheduler --no-binder --save) until nothing is left, then exit.")
@click.option("--save", "save_path", type=click.Path(dir_okay=False),
              help="Embedded mode: write the final state to this file.")
@click.option("--feature-gates", default="", help="e.g. DynamicResourceAllocation=true (off by default).")
@click.option("--period", default=1.0, show_default=True, type=click.FloatRange(min=0.0, min_open=True),
              help="Against a cluster, the longest wait between two passes over BindRequests.")
@click.option("--workers", type=click.IntRange(min=1),
              help="BindRequests carried out in parallel (default: 10 against a cluster, 1 in embedded mode, "
                   "where threads only compete for the interpreter).")
@click.option("--scheduler-name", "scheduler_names", multiple=True,
              help="Carry out BindRequests only for pods whose spec.schedulerName is this (repeat it, or "
                   "give a comma-separated list, for several schedulers). Default: kai-scheduler.")
@click.option("--require-plugin", "require_plugins", multiple=True, metavar="NAME",
              help="Refuse to start unless this plugin is loaded (repeat for several); a plugin that "
                   "failed to load otherwise leaves the binder binding pods without its binder hooks.")
@_cluster_options
@click.pass_context
@friendly_errors
def run_binder(ctx, cluster_path, save_path, feature_gates, period, workers, scheduler_names,
               require_plugins=(), **cluster) -> None:
    """Run the binder: it carries out the scheduler's BindRequests (claims, pods/binding, status).

    Against a cluster (--kubeconfig FILE or --in-cluster) it runs until stopped, next to a
    separately running scheduler. With --cluster PATH it carries out the pending BindRequests of a
    saved state once; the built-in demo runs its binder inside kai-cli run scheduler.
    """
    from kai_core.api.features import FeatureGates

    real = bool(cluster["kubeconfig"] or cluster["in_cluster"])
    _check_mode(ctx, real, cluster["kubeconfig"], cluster["in_cluster"])
    _check_save_path(save_path)
    gates = FeatureGates.parse(feature_gates)
    names = _scheduler_names(scheduler_names)
    pm = _plugin_manager_requiring(require_plugins)
    if real:
        from kai_cli.kube import BinderComponent

        # --qps/--burst limit the component's API client; the Binder itself adds no second limit
        component = BinderComponent(_cluster_opts(cluster, period), gates, pm,
                                    binder_kwargs=_binder_options(workers, scheduler_names=names),
                                    announce=lambda line: click.echo(f"kai-cli: {line}"))
        _run_component(component, cluster["log_format"])
        return
    if cluster_path is None:
        raise CliError("run binder needs a cluster: --kubeconfig FILE or --in-cluster for a real one, or "
                       "--cluster PATH to carry out the BindRequests of a saved state (the built-in demo "
                       "runs its binder inside `kai-cli run scheduler`)")
    restore_logging = _embedded_logging(cluster["log_format"])
    try:
        _run_embedded_binder(pm, gates, cluster_path, save_path,
                             _binder_options(workers, embedded=True, qps=cluster["qps"], burst=cluster["burst"],
                                             scheduler_names=names))
    finally:
        restore_logging()


def _scheduler_names(given: tuple[str, ...]) -> list[str] | None:
    """``--scheduler-name`` values (each may be a comma-separated list), or None when not given."""
    names = [n.strip() for value in given for n in value.split(",") if n.strip()]
    if given and not names:
        raise CliError("--scheduler-name: give at least one scheduler name")
    return list(dict.fromkeys(names)) or None


def _run_embedded_binder(pm, gates, cluster_path, save_path, binder_kwargs: dict) -> None:
    from kai_binder.binder import Binder
    from kai_cli.runner import MAX_SKIPPED_SECONDS, embedded_clock
    from kai_core.api.resources import RES_BIND_REQUESTS

    cluster = _embedded_cluster(pm, cluster_path)
    clock = embedded_clock()  # retries of failed attempts are waited for on a simulated clock
    binder = None
    try:
        binder = Binder(cluster.store, pm, gates, **binder_kwargs, clock=clock.now, sleep=clock.sleep)
        skipped = 0.0
        for _ in range(50):  # each pass carries out every request that is due
            before = cluster.store.resource_version
            binder.run_once()
            if cluster.store.resource_version != before:
                continue
            due = binder.next_due()
            wait = None if due is None else max(0.0, due - clock.now())
            if wait is None or skipped + wait > MAX_SKIPPED_SECONDS:
                break
            skipped += wait
            clock.advance(wait)
    finally:
        _close(binder)
    brs, _ = cluster.store.list(RES_BIND_REQUESTS)
    counts = {"Succeeded": 0, "Failed": 0, "pending": 0}
    for br in brs:
        md, spec, status = br["metadata"], br.get("spec") or {}, br.get("status") or {}
        phase = status.get("phase") or "pending"
        counts[phase if phase in counts else "pending"] += 1
        reason = f": {status['reason']}" if status.get("reason") else ""
        click.echo(f"bindrequest {md['namespace']}/{md['name']} (pod {spec.get('podName')} -> "
                   f"{spec.get('selectedNode')}): {phase}{reason}")
    click.echo(f"bind requests: {counts['Succeeded']} succeeded, {counts['Failed']} failed, "
               f"{counts['pending']} pending")
    if save_path:
        _save(cluster.store, save_path)


def _close(binder) -> None:
    """Stop the binder's worker threads, where it has any."""
    close = getattr(binder, "close", None)
    if close is not None:
        close()


def _print_result(store, scheduler_name: str, show_bind_requests: bool, dump) -> None:
    from kai_core.api.resources import RES_BIND_REQUESTS, RES_PODS

    pods, _ = store.list(RES_PODS)
    brs, _ = store.list(RES_BIND_REQUESTS)
    by_pod = {(b["metadata"]["namespace"], b["spec"].get("podName")): b for b in brs}
    for p in pods:
        if p["spec"].get("schedulerName") != scheduler_name:
            continue
        ns, name = p["metadata"]["namespace"], p["metadata"]["name"]
        br = by_pod.get((ns, name))
        if p["spec"].get("nodeName"):
            extra = f" (BindRequest {br['metadata']['name']} {br.get('status', {}).get('phase', '')})" if br else ""
            click.echo(f"pod {ns}/{name}: bound to {p['spec']['nodeName']}{extra}")
        else:
            msg = next((c.get("message") for c in (p.get("status") or {}).get("conditions") or []
                        if c.get("type") == "PodScheduled" and c.get("status") == "False"), "")
            click.echo(f"pod {ns}/{name}: pending{': ' + msg if msg else ''}")
    if show_bind_requests and brs:
        click.echo("---")
        click.echo(dump(brs).rstrip())
        click.echo("---")


# -- get -----------------------------------------------------------------------------------------


@cli.command("get")
@click.argument("kind")
@click.argument("name", required=False)
@click.option("--cluster", "cluster_path", type=click.Path(), required=True,
              help="Manifest file or directory (e.g. a state saved with --save).")
@click.option("-n", "--namespace", default=None, help="Namespace (default: default).")
@click.option("-A", "--all-namespaces", is_flag=True, help="All namespaces.")
@click.option("-o", "--output", type=click.Choice(["table", "wide", "yaml", "json", "name"]), default="table")
@friendly_errors
def get(kind, name, cluster_path, namespace, all_namespaces, output) -> None:
    """Show objects of KIND (kubectl-like): pods, nodes, bindrequests (br), resourceclaims, ..."""
    from kai_cli.table import render
    from kai_core.api.errors import NotFound
    from kai_core.apiserver.manifests import dump_objects

    cluster = _embedded_cluster(_plugin_manager(), cluster_path)
    rk = cluster.store.kinds.lookup(kind)
    ns = None if all_namespaces or not rk.namespaced else (namespace or "default")
    if name:
        try:
            items = [cluster.store.get(rk.resource, name, ns)]
        except NotFound:
            raise CliError(f'{rk.resource} "{name}" not found' + (f" in namespace {ns}" if ns else "")) from None
    else:
        items, _ = cluster.store.list(rk.resource, namespace=ns)
    if output == "yaml":
        click.echo(dump_objects(items).rstrip() if items else "")
    elif output == "json":
        doc = items[0] if name else {"apiVersion": "v1", "kind": "List", "items": items}
        click.echo(json.dumps(doc, indent=2))
    elif output == "name":
        for o in items:
            click.echo(f"{rk.singular or rk.kind.lower()}{'.' + rk.group if rk.group else ''}/{o['metadata']['name']}")
    else:
        if not items:
            click.echo("No resources found" + (f" in {ns} namespace." if ns else "."), err=True)
            return
        computed = None
        if rk.kind == "Queue":  # fair shares as the scheduler computes them now
            from kai_cli.queue_view import fair_share_columns

            computed = fair_share_columns(cluster)
        elif rk.kind == "Pod" and output == "wide":  # where each pod's binding stands
            from kai_cli.table import binding_columns
            from kai_core.api.resources import RES_BIND_REQUESTS

            computed = binding_columns(cluster.store.list(RES_BIND_REQUESTS, namespace=ns)[0])
        click.echo(render(rk, items, wide=output == "wide", all_namespaces=all_namespaces and rk.namespaced,
                          computed=computed))


# -- plugins -------------------------------------------------------------------------------------


@cli.group()
def plugins() -> None:
    """Inspect installed plugins."""


@plugins.command("list")
@click.pass_context
@friendly_errors
def plugins_list(ctx) -> None:
    """Name, distribution and version, and hooks implemented, of every plugin. Exits 1 when a
    plugin failed to load, naming each on stderr."""
    pm = _plugin_manager()
    rows = [("NAME", "DISTRIBUTION", "VERSION", "HOOKS")]
    for info in pm.info():
        hooks = f"ERROR: {info.error}" if info.error else ", ".join(info.hooks) or "-"
        rows.append((info.name, info.distribution, info.version, hooks))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        click.echo("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3])
    for err in pm.load_errors:
        click.echo(f"kai-cli: {err.error}", err=True)
    if pm.load_errors:
        ctx.exit(EXIT_FAILURE)


# -- validate ------------------------------------------------------------------------------------


@cli.command("validate")
@click.argument("path", type=click.Path())
@friendly_errors
def validate(path) -> None:
    """Load manifests as the embedded cluster does and report every problem (exit 2 if any)."""
    from kai_core.apiserver.manifests import ManifestError, check_manifests, manifest_files, parse_documents

    cluster = _embedded_cluster(_plugin_manager(), None)
    problems: list[str] = []
    manifests = []
    for f in manifest_files(path):
        try:
            manifests.extend(parse_documents(f.read_text(encoding="utf-8"), str(f)))
        except ManifestError as exc:
            problems.append(str(exc))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{f}: cannot read: {exc}")
    problems += check_manifests(cluster.store, manifests)
    for p in problems:
        click.echo(p, err=True)
    if problems:
        raise CliError(f"{len(problems)} problem(s) in {path}")
    click.echo(f"{path}: {len(manifests)} object(s) valid")


# The bench and explain commands live in modules of their own (explain uses this module's helpers).
from kai_cli.bench import bench  # noqa: E402
from kai_cli.explain import explain  # noqa: E402

cli.add_command(bench)
cli.add_command(explain)


def main() -> None:  # pragma: no cover - console entry
    cli()


if __name__ == "__main__":  # pragma: no cover
    main()

