"""``kai-cli``: run the scheduler and binder, inspect and validate clusters, list plugins.

Every error a user can cause (a bad path, invalid YAML, an object failing its schema, an unknown
feature gate) ends the command with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys

import click

EXIT_USAGE = 2
log = logging.getLogger("kai.cli")


class CliError(click.ClickException):
    exit_code = EXIT_USAGE

    def show(self, file=None) -> None:
        click.echo(f"kai-cli: error: {self.format_message()}", err=True)


def friendly_errors(fn):
    """Turn every expected failure into a CliError (one line, exit 2)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from kai_core.errors import ApiError
        from kai_core.features import FeatureGateError
        from kai_core.manifests import ManifestError

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kai-cli")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """kai: a Kubernetes batch scheduler for GPU clusters, with DRA and NVIDIA ComputeDomains."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def _plugin_manager():
    from kai_binder.binder import add_binder_hookspecs
    from kai_core.plugins import build_plugin_manager

    pm = build_plugin_manager()
    add_binder_hookspecs(pm)
    return pm


def _embedded_cluster(pm, cluster_path: str | None):
    from kai_core.cluster import EmbeddedCluster

    cluster = EmbeddedCluster(pm)
    if cluster_path is not None:
        cluster.load(cluster_path)
    return cluster


# -- run -----------------------------------------------------------------------------------------


@cli.group()
def run() -> None:
    """Run a component (scheduler, with the binder in embedded mode)."""


@run.command("scheduler")
@click.option("--cluster", "cluster_path", type=click.Path(),
              help="Run an embedded cluster seeded from this manifest file or directory.")
@click.option("--kubeconfig", type=click.Path(), help="Run against the cluster of this kubeconfig.")
@click.option("--feature-gates", default="", help="e.g. DynamicResourceAllocation=true (off by default).")
@click.option("--scheduler-name", default="kai-scheduler", show_default=True,
              help="Schedule the pods whose spec.schedulerName is this.")
@click.option("--until-idle", is_flag=True, help="Exit once a full round writes nothing (embedded mode).")
@click.option("--save", "save_path", type=click.Path(dir_okay=False), help="Write the final state to this file.")
@click.option("--no-binder", is_flag=True, help="Do not run the binder in this process (embedded mode).")
@click.option("--period", default=1.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Seconds between rounds when not --until-idle.")
@click.option("--backoff-limit", default=None, type=click.IntRange(min=0),
              help="spec.backoffLimit written into each BindRequest.")
@friendly_errors
def run_scheduler(cluster_path, kubeconfig, feature_gates, scheduler_name, until_idle, save_path, no_binder,
                  period, backoff_limit) -> None:
    """Run the scheduler (and, in embedded mode, the embedded controllers and the binder).

    With neither --cluster nor --kubeconfig it runs the built-in demo cluster: NVIDIA GB200 nodes
    and the seed's pod asking for a GPU and an IMEX channel of a ComputeDomain.
    """
    from kai_binder.binder import Binder
    from kai_core.cycle import Scheduler, SchedulerConfig
    from kai_core.features import FeatureGates
    from kai_core.manifests import dump_objects, save_state

    gates = FeatureGates.parse(feature_gates)
    if kubeconfig:
        raise CliError("--kubeconfig: running against a real cluster is not yet supported "
                       "(use --cluster PATH or the built-in demo)")
    demo = cluster_path is None
    pm = _plugin_manager()
    if demo:
        from kai_dra_nvidia.demo import demo_manifests_path

        cluster_path = str(demo_manifests_path())
        click.echo(f"kai-cli: no --cluster or --kubeconfig given: running the built-in demo cluster ({cluster_path})")
    cluster = _embedded_cluster(pm, cluster_path)
    click.echo(f"kai-cli: scheduler {scheduler_name!r}, feature gates: {gates}")
    if not gates.dra:
        click.echo("kai-cli: DynamicResourceAllocation is off: pods with resource claims stay pending "
                   "(--feature-gates=DynamicResourceAllocation=true turns it on)")
    scheduler = Scheduler(cluster.store, pm, SchedulerConfig(scheduler_name, gates, backoff_limit=backoff_limit))
    binder = None if no_binder else Binder(cluster.store, pm, gates)
    from kai_cli.runner import run_embedded

    summary = run_embedded(cluster, scheduler, binder, until_idle=until_idle, period=period)
    _print_result(cluster.store, scheduler_name, show_bind_requests=demo, dump=dump_objects)
    click.echo(summary.line())
    if save_path:
        save_state(cluster.store, save_path)
        click.echo(f"state saved to {save_path}")


def _print_result(store, scheduler_name: str, show_bind_requests: bool, dump) -> None:
    from kai_core.resources import RES_BIND_REQUESTS, RES_PODS

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
    from kai_core.errors import NotFound
    from kai_core.manifests import dump_objects

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
        click.echo(render(rk, items, wide=output == "wide", all_namespaces=all_namespaces and rk.namespaced))


# -- plugins -------------------------------------------------------------------------------------


@cli.group()
def plugins() -> None:
    """Inspect installed plugins."""


@plugins.command("list")
@friendly_errors
def plugins_list() -> None:
    """Name, distribution and version, and hooks implemented, of every plugin."""
    pm = _plugin_manager()
    rows = [("NAME", "DISTRIBUTION", "VERSION", "HOOKS")]
    for info in pm.info():
        hooks = f"ERROR: {info.error}" if info.error else ", ".join(info.hooks) or "-"
        rows.append((info.name, info.distribution, info.version, hooks))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        click.echo("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3])


# -- validate ------------------------------------------------------------------------------------


@cli.command("validate")
@click.argument("path", type=click.Path())
@friendly_errors
def validate(path) -> None:
    """Load manifests as the embedded cluster does and report every problem (exit 2 if any)."""
    from kai_core.manifests import ManifestError, check_manifests, manifest_files, parse_documents

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


def main() -> None:  # pragma: no cover - console entry
    cli()


if __name__ == "__main__":  # pragma: no cover
    main()
