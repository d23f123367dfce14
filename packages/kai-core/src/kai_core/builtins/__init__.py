"""kai-core's built-in plugins, each small and doing one thing, registered like any other plugin."""

from __future__ import annotations

from kai_core.builtins import binpack, dra, node_affinity, node_ready, resources_fit, taints

BUILTINS = {
    "kai-core.node-ready": node_ready,
    "kai-core.node-affinity": node_affinity,
    "kai-core.taints": taints,
    "kai-core.resources-fit": resources_fit,
    "kai-core.dra": dra,
    "kai-core.binpack": binpack,
}


def register_builtins(pm) -> None:
    for name, module in BUILTINS.items():
        pm.register_builtin(module, name)
