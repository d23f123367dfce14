"""``kai-cli explain pod NAME``: why the scheduler put a pod where it did, or left it pending.

The cluster (manifests or a saved state, as ``kai-cli run scheduler --cluster`` loads them) is run
until idle with the scheduler and the binder, the scheduler recording the decisions about that pod
as it makes them (:mod:`kai_core.scheduler.explain`); the last one is printed: every node's filter
verdict with the plugin that refused it, the scores of the top nodes per plugin with their weights
and totals, the devices chosen per claim request and what the device hooks removed or ranked.
Answers the equivalence memo gave (from an earlier pod of the same shape) are marked as such.

A pod already bound, or with its BindRequest in flight, in the loaded state was decided by an
earlier run, whose decision was not kept: nothing is decided for it now, and the command says so.
"""

from __future__ import annotations

import click


@click.group("explain")
def explain() -> None:
    """Explain the scheduler's decisions."""


@explain.command("pod")
@click.argument("name")
@click.option("-n", "--namespace", default="default", show_default=True, help="The pod's namespace.")
@click.option("--cluster", "cluster_path", type=click.Path(), required=True,
              help="Manifest file or directory, or a state saved with --save.")
@click.option("--feature-gates", default="", help="e.g. DynamicResourceAllocation=true (off by default).")
@click.option("--scheduler-name", default="kai-scheduler", show_default=True,
              help="The scheduler whose pods are scheduled.")
@click.option("--score-weight", "score_weights", multiple=True, metavar="PLUGIN=N",
              help="Weight of a plugin's node scores, as for run scheduler (repeatable).")
def explain_pod(name, namespace, cluster_path, feature_gates, scheduler_name, score_weights) -> None:
    """Schedule the cluster until idle and explain the last decision about pod NAME."""
    # kai_cli.main registers this command, so its helpers are imported when the command runs
    from kai_cli.main import friendly_errors

    friendly_errors(_explain_pod)(name, namespace, cluster_path, feature_gates, scheduler_name, score_weights)


def _explain_pod(name: str, namespace: str, cluster_path: str, feature_gates: str, scheduler_name: str,
                 score_weights: tuple[str, ...]) -> None:
    from kai_cli.main import CliError, _embedded_cluster, _plugin_manager, _score_weights
    from kai_cli.runner import binder_options, embedded_components, run_embedded
    from kai_core.api.errors import NotFound
    from kai_core.api.features import FeatureGates
    from kai_core.api.resources import RES_PODS
    from kai_core.scheduler.cycle import SchedulerConfig
    from kai_core.scheduler.explain import DecisionRecorder

    gates = FeatureGates.parse(feature_gates)
    pm = _plugin_manager()
    weights = _score_weights(score_weights, pm)
    cluster = _embedded_cluster(pm, cluster_path)
    try:
        pod = cluster.store.get(RES_PODS, name, namespace)
    except NotFound:
        raise CliError(f'pod "{name}" not found in namespace {namespace} of {cluster_path}') from None
    key = f"{namespace}/{name}"
    if pod["spec"].get("schedulerName") != scheduler_name:
        raise CliError(f"pod {key} is for scheduler {pod['spec'].get('schedulerName')!r}, not "
                       f"{scheduler_name!r} (--scheduler-name)")
    config = SchedulerConfig(scheduler_name, gates, score_weights=weights)
    scheduler, binder, clock = embedded_components(
        cluster, pm, gates, config, until_idle=True,
        binder=binder_options(embedded=True, scheduler_names=[scheduler_name]))
    recorder = scheduler.recorder = DecisionRecorder([key])
    try:
        run_embedded(cluster, scheduler, binder, until_idle=True, clock=clock)
    finally:
        if binder is not None:
            binder.close()
    explanation = recorder.last.get(key)
    if explanation is None:
        node = pod["spec"].get("nodeName")
        why = (f"it was bound to {node} before this run" if node else
               "it was not pending for this scheduler (its BindRequest is in flight, it is backing off, "
               "or it has finished)")
        raise CliError(f"pod {key}: no decision made in this run: {why}; its earlier decision was not recorded")
    if not gates.dra and (pod["spec"].get("resourceClaims")):
        click.echo("kai-cli: note: DynamicResourceAllocation is off (--feature-gates=DynamicResourceAllocation=true)",
                   err=True)
    click.echo(explanation.text())
