"""The hook implementations of the ``fpga-example`` plugin (entry point
``fpga-example = "kai_plugin_fpga.plugin"`` in the ``kai_scheduler.plugins`` group).

kai calls each hook once per pod with the whole list of candidate nodes, so each function below
loops over the nodes itself and returns one answer for all of them. Every hook first checks
whether the pod concerns this plugin at all and returns None when it does not: a plugin that is
installed but not used changes nothing.

- :func:`kai_check_configs`: refuses a pod whose claims (or their DeviceClasses) carry an invalid
  ``fpga.example.com`` FpgaConfig, before any node is looked at (kai finds the configs).
- :func:`kai_filter_nodes`: refuses nodes whose cards run another shell than the one the pod's
  bitstream was built for (pod annotation and node label ``fpga.example.com/shell``).
- :func:`kai_score_nodes`: prefers nodes where a free card already holds the pod's bitstream
  (pod annotation ``fpga.example.com/bitstream``, slice attribute ``loadedBitstream``), since
  programming a card takes minutes.
- :func:`kai_rank_devices`: on the chosen node, prefers the card that holds it.
"""

from __future__ import annotations

from kai_core.dra.pod_devices import OpaqueConfig
from kai_core.hookspecs import hookimpl
from kai_core.snapshot import NodeInfo, Snapshot
from kai_plugin_fpga import (
    BITSTREAM_ANNOTATION,
    DRIVER,
    LOADED_BITSTREAM_ATTRIBUTE,
    SHELL_ANNOTATION,
    SHELL_LABEL,
)
from kai_plugin_fpga.config import parameters_problems

#: score of a node with a free card holding the pod's bitstream (others get 0); scores are 0..100
LOADED_SCORE = 100.0
#: the filter's reason for nodes without the shell label (nodes without cards, or not yet labelled)
NO_SHELL_REASON = "node(s) had no FPGA shell label"


def _annotations(pod: dict) -> dict:
    return (pod.get("metadata") or {}).get("annotations") or {}


#: the drivers whose opaque configs kai hands to :func:`kai_check_configs`
KAI_DRIVERS = (DRIVER,)


@hookimpl
def kai_check_configs(configs: list[OpaqueConfig]) -> dict[OpaqueConfig, list[str]] | None:
    """The problems of each ``fpga.example.com`` config of the pod's claims and of the
    DeviceClasses they use; None when all are valid.

    kai walks the claims, their requests and their classes, hands over only this driver's configs,
    and words the pod's reason with the config's place:
    ``pod claim "fpga" (ResourceClaim "default/hot-fpga-x7k2q"): spec.devices.config[0]
    (fpga.example.com FpgaConfig): parameters.clockMHz 900 is out of range (100..600)``.
    """
    problems = {config: parameters_problems(config.parameters) for config in configs}
    return {config: found for config, found in problems.items() if found} or None


@hookimpl
def kai_filter_nodes(pod: dict, nodes: list[NodeInfo]) -> dict[str, str] | None:
    """``{node: reason}`` for the nodes whose ``fpga.example.com/shell`` label differs from the
    pod's annotation of the same name; None for a pod without the annotation.

    Reasons are the same for every node refused for the same cause, so the pod's message reads
    ``0/3 nodes are available: 1 node(s) didn't have FPGA shell v3, ...``.
    """
    wanted = _annotations(pod).get(SHELL_ANNOTATION)
    if not wanted:
        return None
    rejected = {}
    for node in nodes:
        shell = node.labels.get(SHELL_LABEL)
        if shell is None:
            rejected[node.name] = NO_SHELL_REASON
        elif shell != wanted:
            rejected[node.name] = f"node(s) didn't have FPGA shell {wanted}"
    return rejected


@hookimpl
def kai_score_nodes(pod: dict, nodes: list[NodeInfo], snapshot: Snapshot) -> dict[str, float] | None:
    """``{node: 100}`` for the nodes where a card not yet taken already holds the bitstream named
    by the pod's ``fpga.example.com/bitstream`` annotation (others score 0); None for a pod
    without the annotation.

    "Taken" counts claims already allocated, decisions in flight and earlier decisions of this
    cycle (``snapshot.devices_in_use``), so two pods wanting the same bitstream do not both count
    on the same card.
    """
    wanted = _annotations(pod).get(BITSTREAM_ANNOTATION)
    if not wanted or not snapshot.features.dra:
        return None
    attribute = f"{DRIVER}/{LOADED_BITSTREAM_ATTRIBUTE}"  # the inventory keys attributes by full name
    in_use = snapshot.devices_in_use
    scores = {}
    for node in nodes:
        for device in snapshot.dra.devices_for_node(node.obj):
            if (device.id.driver == DRIVER and device.id not in in_use
                    and device.attributes.get(attribute) == ("string", wanted)):
                scores[node.name] = LOADED_SCORE
                break
    return scores


@hookimpl
def kai_rank_devices(pod: dict, devices: list) -> dict | None:
    """``{card: 100}`` for the cards holding the pod's bitstream, so that the allocator takes one
    of them on whichever node the pod goes to (others score 0); None for a pod without the
    annotation. Rankings of other plugins are added to this one."""
    wanted = _annotations(pod).get(BITSTREAM_ANNOTATION)
    if not wanted:
        return None
    attribute = f"{DRIVER}/{LOADED_BITSTREAM_ATTRIBUTE}"
    return {device.id: LOADED_SCORE for device in devices
            if device.id.driver == DRIVER and device.attributes.get(attribute) == ("string", wanted)}
