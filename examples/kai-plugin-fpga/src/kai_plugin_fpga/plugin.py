"""The hook implementations of the ``fpga-example`` plugin (entry point
``fpga-example = "kai_plugin_fpga.plugin"`` in the ``kai_scheduler.plugins`` group).

kai calls each hook once per pod with the whole list of candidate nodes, so each function below
loops over the nodes itself and returns one answer for all of them. Every hook first checks
whether the pod concerns this plugin at all and returns None when it does not: a plugin that is
installed but not used changes nothing.

- :func:`kai_pre_filter`: refuses a pod whose claims (or their DeviceClasses) carry an invalid
  ``fpga.example.com`` FpgaConfig, before any node is looked at.
- :func:`kai_filter_nodes`: refuses nodes whose cards run another shell than the one the pod's
  bitstream was built for (pod annotation and node label ``fpga.example.com/shell``).
- :func:`kai_score_nodes`: prefers nodes where a free card already holds the pod's bitstream
  (pod annotation ``fpga.example.com/bitstream``, slice attribute ``loadedBitstream``), since
  programming a card takes minutes.
"""

from __future__ import annotations

from kai_core.hookspecs import hookimpl
from kai_core.snapshot import NodeInfo, Snapshot, claim_name_for
from kai_plugin_fpga import (
    BITSTREAM_ANNOTATION,
    DRIVER,
    LOADED_BITSTREAM_ATTRIBUTE,
    SHELL_ANNOTATION,
    SHELL_LABEL,
)
from kai_plugin_fpga.config import config_list_problem

#: score of a node with a free card holding the pod's bitstream (others get 0); scores are 0..100
LOADED_SCORE = 100.0
#: the filter's reason for nodes without the shell label (nodes without cards, or not yet labelled)
NO_SHELL_REASON = "node(s) had no FPGA shell label"


def _annotations(pod: dict) -> dict:
    return (pod.get("metadata") or {}).get("annotations") or {}


@hookimpl
def kai_pre_filter(pod: dict, snapshot: Snapshot) -> str | None:
    """A reason naming the claim, the place and the problem when one of the pod's claims, or a
    DeviceClass its requests use, has an invalid ``fpga.example.com`` config; None otherwise.

    Claims that do not exist yet are skipped: the core reports those itself.
    """
    pod_claims = (pod.get("spec") or {}).get("resourceClaims") or []
    if not pod_claims or not snapshot.features.dra:
        return None
    namespace = pod["metadata"].get("namespace", "")
    for entry in pod_claims:
        name = claim_name_for(pod, entry.get("name"))
        claim = snapshot.claims.get((namespace, name)) if name else None
        if claim is None:
            continue
        problem = _claim_problem(claim, snapshot)
        if problem:
            return f'pod claim "{entry.get("name")}" (ResourceClaim "{namespace}/{name}"): {problem}'
    return None


def _claim_problem(claim: dict, snapshot: Snapshot) -> str | None:
    """The claim's own configs first, then those of each DeviceClass its requests name."""
    devices = (claim.get("spec") or {}).get("devices") or {}
    problem = config_list_problem(devices.get("config"), "spec.devices.config")
    if problem:
        return problem
    for request in devices.get("requests") or []:
        if not isinstance(request, dict):
            continue
        # a request is either "exactly" one kind of device or a "firstAvailable" list of choices
        choices = [request["exactly"]] if request.get("exactly") else request.get("firstAvailable") or []
        for choice in choices:
            class_name = choice.get("deviceClassName") if isinstance(choice, dict) else None
            device_class = snapshot.dra.device_class(class_name) if isinstance(class_name, str) else None
            if device_class is None:
                continue  # a missing class is reported by the allocator
            problem = config_list_problem((device_class.get("spec") or {}).get("config"), "spec.config")
            if problem:
                return f'DeviceClass "{class_name}" (request "{request.get("name")}"): {problem}'
    return None


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
