"""kai's plugin for NVIDIA's DRA driver, registered through the ``kai_scheduler.plugins`` entry point
(``dra-nvidia = kai_dra_nvidia.plugin``) like any third-party plugin: it reaches the scheduler only
through the hooks of :mod:`kai_core.framework.hookspecs`.

- ``kai_resource_kinds``: serves NVIDIA's ComputeDomain kind (``resource.nvidia.com/v1beta1``), which
  the scheduler then watches.
- ``kai_embedded_controllers``: the ComputeDomain controller (:mod:`kai_dra_nvidia.computedomain`).
- ``kai_check_configs`` (``KAI_DRIVERS``): refuses a pod whose claims, or the DeviceClasses they
  use, carry a malformed ``compute-domain.nvidia.com`` (:mod:`kai_dra_nvidia.config`) or
  ``gpu.nvidia.com`` (:mod:`kai_dra_nvidia.gpu`) opaque config, before any node is tried.
- ``kai_pod_groups``: the pods of one ComputeDomain form a gang (:mod:`kai_dra_nvidia.domains`).
- ``kai_group_node_subsets``: a gang with domain pods goes inside one NVLink clique, best fit first.
- ``kai_filter_nodes``: one ComputeDomain per node, one pod of a domain per node.
- ``kai_score_nodes`` and ``kai_rank_devices``: keep NVLink cliques and whole GPUs free for the
  jobs that need them (:mod:`kai_dra_nvidia.gpu`).

Every hook returns None at once for pods that do not concern NVIDIA's drivers (and with the
DynamicResourceAllocation gate off), so the plugin changes nothing for them.
"""

from __future__ import annotations

from kai_core.api.objects import clone
from kai_core.framework.hookspecs import hookimpl
from kai_dra_nvidia import domains, gpu
from kai_dra_nvidia.computedomain import ComputeDomainController
from kai_dra_nvidia.config import DRIVER as CD_DRIVER
from kai_dra_nvidia.config import parameters_problems
from kai_dra_nvidia.data import compute_domain_crd


@hookimpl
def kai_resource_kinds() -> list[dict]:
    """The ComputeDomain CRD, so the embedded cluster serves and validates ComputeDomains."""
    return [clone(compute_domain_crd())]


@hookimpl
def kai_embedded_controllers(store) -> list:
    """The embedded stand-in for NVIDIA's compute-domain-controller."""
    return [ComputeDomainController()]


#: the drivers whose opaque configs kai hands to :func:`kai_check_configs`
KAI_DRIVERS = (CD_DRIVER, gpu.GPU_DRIVER)


@hookimpl
def kai_check_configs(configs: list) -> dict | None:
    """The problems of the ``compute-domain.nvidia.com`` (:mod:`kai_dra_nvidia.config`) and
    ``gpu.nvidia.com`` (:mod:`kai_dra_nvidia.gpu`) opaque configs of a pod's claims and of the
    DeviceClasses they use; kai words the pod's reason with the config's place."""
    problems = {}
    for config in configs:
        if config.driver == CD_DRIVER:
            found = parameters_problems(config.parameters)
        else:  # a class's config applies to whatever the class selects; a claim's to its requests
            found = gpu.gpu_config_problems(
                config.parameters, {"": config.device_class} if config.device_class else config.requests)
        if found:
            problems[config] = found
    return problems or None


@hookimpl
def kai_pod_groups(pods: list[dict], snapshot) -> list | None:
    """One gang per ComputeDomain with a pod waiting (see :func:`kai_dra_nvidia.domains.domain_groups`)."""
    if not snapshot.features.dra:
        return None
    return domains.domain_groups(pods, snapshot) or None


@hookimpl
def kai_group_node_subsets(group, nodes, snapshot):
    """The NVLink cliques a gang with ComputeDomain pods may go into, best fit first, or why none can
    hold it (see :func:`kai_dra_nvidia.domains.node_subsets`)."""
    if not snapshot.features.dra:
        return None
    return domains.node_subsets(group, nodes, snapshot)


@hookimpl
def kai_filter_nodes(pod: dict, nodes, snapshot) -> dict | None:
    """Nodes already holding another ComputeDomain, or a pod of the pod's own domain, for a domain pod."""
    if not snapshot.features.dra or not (pod.get("spec") or {}).get("resourceClaims"):
        return None
    return domains.node_conflicts(pod, nodes, snapshot)


@hookimpl
def kai_score_nodes(pod: dict, nodes, snapshot) -> dict | None:
    """For pods wanting GPUs but no ComputeDomain: nodes outside NVLink cliques (then cliques already
    broken into) first, and for MIG pods nodes whose GPUs are already carved. For a ComputeDomain's
    pod: cliques already broken into first (a multi-pod domain is inside one clique anyway)."""
    if not snapshot.features.dra:
        return gpu.node_scores(pod, nodes, snapshot, None)
    view = domains.view(snapshot)
    if (pod.get("spec") or {}).get("resourceClaims") and view.pod_domain(pod) is not None:
        return domains.lone_pod_scores(nodes, view)
    return gpu.node_scores(pod, nodes, snapshot, view)


@hookimpl
def kai_rank_devices(claims: list, devices: list, snapshot) -> dict | None:
    """MIG devices on the GPUs already most used first (see :func:`kai_dra_nvidia.gpu.rank_devices`)."""
    return gpu.rank_devices(devices, snapshot, claims)
