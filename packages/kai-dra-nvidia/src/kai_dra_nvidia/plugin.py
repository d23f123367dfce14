"""kai's plugin for NVIDIA's DRA driver, registered through the ``kai_scheduler.plugins`` entry point
(``dra-nvidia = kai_dra_nvidia.plugin``) like any third-party plugin: it reaches the scheduler only
through the hooks of :mod:`kai_core.framework.hookspecs`.

- ``kai_resource_kinds``: serves NVIDIA's ComputeDomain kind (``resource.nvidia.com/v1beta1``), which
  the scheduler then watches.
- ``kai_embedded_controllers``: the ComputeDomain controller (:mod:`kai_dra_nvidia.computedomain`).
- ``kai_pre_filter``: refuses a pod whose claims carry a malformed ``compute-domain.nvidia.com``
  (:mod:`kai_dra_nvidia.config`) or ``gpu.nvidia.com`` (:mod:`kai_dra_nvidia.gpu`) opaque config,
  before any node is tried.
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
from kai_core.dra.claims import pod_claims
from kai_core.framework.hookspecs import hookimpl
from kai_dra_nvidia import domains, gpu
from kai_dra_nvidia.computedomain import ComputeDomainController
from kai_dra_nvidia.config import config_entries_problem
from kai_dra_nvidia.data import compute_domain_crd


@hookimpl
def kai_resource_kinds() -> list[dict]:
    """The ComputeDomain CRD, so the embedded cluster serves and validates ComputeDomains."""
    return [clone(compute_domain_crd())]


@hookimpl
def kai_embedded_controllers(store) -> list:
    """The embedded stand-in for NVIDIA's compute-domain-controller."""
    return [ComputeDomainController()]


@hookimpl
def kai_pre_filter(pod: dict, snapshot) -> str | None:
    """A reason naming the claim and the problem when one of the pod's claims, or a DeviceClass its
    requests use, has an invalid ``compute-domain.nvidia.com`` config; None otherwise.

    Claims that cannot be resolved yet (feature gate off, claim not created) are left to the core,
    which reports them itself.
    """
    if not (pod.get("spec") or {}).get("resourceClaims"):
        return None
    if not snapshot.features.dra:
        return None
    claims, reason = pod_claims(pod, snapshot)
    if reason:
        return None
    for pc in claims:
        problem = claim_config_problem(pc.claim, snapshot)
        if problem:
            md = pc.claim["metadata"]
            return (
                f'pod claim "{pc.name}" (ResourceClaim "{md.get("namespace", "")}/{md["name"]}"): {problem}'
            )
    return None


def claim_config_problem(claim: dict, snapshot) -> str | None:
    """The first invalid ``compute-domain.nvidia.com`` or ``gpu.nvidia.com`` config of a
    ResourceClaim, looking at the claim's own ``spec.devices.config`` and then at the configs of the
    DeviceClasses its requests name; None when every such config is valid (or there is none)."""
    devices = (claim.get("spec") or {}).get("devices") or {}
    request_classes = {
        r["name"]: r["exactly"].get("deviceClassName")
        for r in devices.get("requests") or []
        if isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("exactly"), dict)
    }
    problem = config_entries_problem(devices.get("config"), "spec.devices.config") or gpu.gpu_config_problem(
        devices.get("config"), "spec.devices.config", request_classes
    )
    if problem:
        return problem
    seen: set[str] = set()
    for request in devices.get("requests") or []:
        if not isinstance(request, dict):
            continue
        subs = (
            [request.get("exactly")] if request.get("exactly") else list(request.get("firstAvailable") or [])
        )
        for sub in subs:
            class_name = sub.get("deviceClassName") if isinstance(sub, dict) else None
            if not isinstance(class_name, str) or class_name in seen:
                continue
            seen.add(class_name)
            device_class = snapshot.dra.device_class(class_name)
            if device_class is None:
                continue  # the allocator reports a missing class
            configs = (device_class.get("spec") or {}).get("config")
            problem = config_entries_problem(configs, "spec.config") or gpu.gpu_config_problem(
                configs, "spec.config", {"": class_name}
            )
            if problem:
                return f'DeviceClass "{class_name}" (used by request "{request.get("name")}"): {problem}'
    return None


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
