"""kai-core's built-in plugins, each small and doing one thing, registered like any other plugin.

Their filters run first (``tryfirst``), in the order kube-scheduler's run: node readiness and
cordon (NodeUnschedulable), node name, taints, node affinity, host ports, resources, volume
binding, volume zone, topology spread, inter-pod affinity; each filter sees only the nodes that
passed the ones before it, so a node's reason in the pod's message is the first check it failed.
"""

from __future__ import annotations

from collections.abc import Iterable

from kai_core.framework.plugins import ENTRY_POINT_GROUP, KaiPluginManager, PluginError  # noqa: F401 (their old home)
from kai_core.plugins import (
    binpack,
    dra,
    gang,
    inter_pod_affinity,
    node_affinity,
    node_name,
    node_ports,
    node_ready,
    queues,
    resources_fit,
    taints,
    topology_spread,
    volume_binding,
    volume_zone,
)

#: plugin name -> module, in the order their filters are called
BUILTINS = {
    "kai-core.queues": queues,
    "kai-core.node-ready": node_ready,
    "kai-core.node-name": node_name,
    "kai-core.taints": taints,
    "kai-core.node-affinity": node_affinity,
    "kai-core.node-ports": node_ports,
    "kai-core.resources-fit": resources_fit,
    "kai-core.volume-binding": volume_binding,
    "kai-core.volume-zone": volume_zone,
    "kai-core.topology-spread": topology_spread,
    "kai-core.inter-pod-affinity": inter_pod_affinity,
    "kai-core.dra": dra,
    "kai-core.binpack": binpack,
    "kai-core.gang": gang,
}

#: built-in plugin -> the kube-scheduler plugin whose work it does (README "What kai honours, by
#: kube-scheduler plugin"). Such a plugin's scores weigh as kube-scheduler's default profile weighs
#: that plugin's, and its pre-filter reasons read as kube-scheduler shows a PreFilter's rejection
#: (:mod:`kai_core.scheduler.decide`); queues, bin packing and gangs are KAI's own
KUBE_SCHEDULER_PLUGINS = {
    "kai-core.node-ready": "NodeUnschedulable",
    "kai-core.node-name": "NodeName",
    "kai-core.taints": "TaintToleration",
    "kai-core.node-affinity": "NodeAffinity",
    "kai-core.node-ports": "NodePorts",
    "kai-core.resources-fit": "NodeResourcesFit",
    "kai-core.volume-binding": "VolumeBinding",
    "kai-core.volume-zone": "VolumeZone",
    "kai-core.topology-spread": "PodTopologySpread",
    "kai-core.inter-pod-affinity": "InterPodAffinity",
    "kai-core.dra": "DynamicResources",
}


def register_builtins(pm: KaiPluginManager) -> None:
    """Register every built-in plugin on ``pm`` (a :class:`kai_core.framework.plugins.KaiPluginManager`).

    pluggy calls the most recently registered implementation first, so they are registered in
    reverse to be called in :data:`BUILTINS` order.
    """
    for name, module in reversed(BUILTINS.items()):
        pm.register_builtin(module, name, kube_plugin=KUBE_SCHEDULER_PLUGINS.get(name))


def build_plugin_manager(load_external: bool = True, blocked: Iterable[str] = ()) -> KaiPluginManager:
    """A manager with kai-core's built-in plugins and, unless disabled, every installed plugin
    (except the names in ``blocked``)."""
    pm = KaiPluginManager()
    register_builtins(pm)
    if load_external:
        pm.load_entry_points(blocked)
    return pm
