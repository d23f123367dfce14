"""kai's plugin for NVIDIA's DRA driver, registered through the ``kai_scheduler.plugins`` entry point
(``dra-nvidia = kai_dra_nvidia.plugin``) like any third-party plugin: it reaches the scheduler only
through the hooks of :mod:`kai_core.hookspecs`.

- ``kai_resource_kinds``: serves NVIDIA's ComputeDomain kind (``resource.nvidia.com/v1beta1``).
- ``kai_embedded_controllers``: the ComputeDomain controller (:mod:`kai_dra_nvidia.computedomain`).
- ``kai_pre_filter``: refuses a pod whose claims carry a malformed ``compute-domain.nvidia.com``
  opaque config (:mod:`kai_dra_nvidia.config`), before any node is tried.
"""

from __future__ import annotations

from kai_core.builtins.dra import pod_claims
from kai_core.hookspecs import hookimpl
from kai_core.objects import clone
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
    """The first invalid ``compute-domain.nvidia.com`` config of a ResourceClaim, looking at the
    claim's own ``spec.devices.config`` and then at the configs of the DeviceClasses its requests
    name; None when every such config is valid (or there is none)."""
    devices = (claim.get("spec") or {}).get("devices") or {}
    problem = config_entries_problem(devices.get("config"), "spec.devices.config")
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
            problem = config_entries_problem((device_class.get("spec") or {}).get("config"), "spec.config")
            if problem:
                return f'DeviceClass "{class_name}" (used by request "{request.get("name")}"): {problem}'
    return None
