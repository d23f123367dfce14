"""Opaque device configs of NVIDIA's ``compute-domain.nvidia.com`` driver, and their validation.

A claim (or a DeviceClass) hands the driver its settings as ``config[].opaque`` entries with
``driver: compute-domain.nvidia.com`` and ``parameters`` shaped like a small Kubernetes object:
``ComputeDomainChannelConfig{domainID, allocationMode}`` for workload channels and
``ComputeDomainDaemonConfig{domainID}`` for the IMEX daemons. ``domainID`` is the uid of the
ComputeDomain the device joins.

On a real cluster NVIDIA's admission webhook refuses a malformed config when the claim is created;
the embedded cluster has no webhook, and a config written by hand can still reach a scheduler
through a template created before the driver was installed. A pod with such a claim would be
placed, then sit in ``ContainerCreating`` because the node's kubelet plugin refuses to prepare the
device. Checking the config before placement turns that into an unschedulable reason that says
what is wrong and where.
"""

from __future__ import annotations

import re

DRIVER = "compute-domain.nvidia.com"
API_VERSION = "resource.nvidia.com/v1beta1"
CHANNEL_CONFIG_KIND = "ComputeDomainChannelConfig"
DAEMON_CONFIG_KIND = "ComputeDomainDaemonConfig"
ALLOCATION_MODE_SINGLE = "Single"
ALLOCATION_MODE_ALL = "All"
ALLOCATION_MODES = (ALLOCATION_MODE_SINGLE, ALLOCATION_MODE_ALL)

# Fields each kind knows (the driver decodes strictly, so anything else is refused). ``protocol``
# and ``mode`` are newer optional fields of the driver; their values are the driver's business.
_KNOWN_FIELDS = {
    CHANNEL_CONFIG_KIND: ("apiVersion", "kind", "domainID", "allocationMode", "protocol"),
    DAEMON_CONFIG_KIND: ("apiVersion", "kind", "domainID", "protocol", "mode"),
}
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_uuid(value: object) -> bool:
    """Whether ``value`` is a UUID string in the canonical 8-4-4-4-12 form Kubernetes uids use."""
    return isinstance(value, str) and _UUID.fullmatch(value) is not None


def header_problems(parameters: dict, kinds: tuple[str, ...]) -> list[str]:
    """What is wrong with the ``apiVersion`` and ``kind`` of an NVIDIA driver's opaque config
    parameters (both drivers share the ``resource.nvidia.com/v1beta1`` API group), given the kinds
    the driver accepts. Empty when both are right."""
    expected = " or ".join(kinds) if len(kinds) <= 2 else "one of " + ", ".join(kinds)
    problems: list[str] = []
    api_version = parameters.get("apiVersion")
    if api_version is None:
        problems.append(f"parameters.apiVersion is missing (expected {API_VERSION})")
    elif api_version != API_VERSION:
        problems.append(f"parameters.apiVersion {api_version!r} is not {API_VERSION}")
    kind = parameters.get("kind")
    if kind is None:
        problems.append(f"parameters.kind is missing (expected {expected})")
    elif kind not in kinds:
        problems.append(f"parameters.kind {kind!r} is not {expected}")
    return problems


def parameters_problems(parameters: object) -> list[str]:
    """What is wrong with the ``parameters`` of one ``compute-domain.nvidia.com`` opaque config.

    Returns an empty list for a valid config. Each problem names the field, e.g.
    ``"parameters.domainID 'abc' is not a UUID (it must be the uid of a ComputeDomain)"``.
    """
    if not isinstance(parameters, dict):
        return [
            f"parameters must be an object with apiVersion {API_VERSION}, kind {CHANNEL_CONFIG_KIND} "
            f"or {DAEMON_CONFIG_KIND} and domainID, got {type_name(parameters)}"
        ]
    problems = header_problems(parameters, tuple(_KNOWN_FIELDS))
    kind = parameters.get("kind")
    domain_id = parameters.get("domainID")
    if domain_id is None or domain_id == "":
        problems.append("parameters.domainID is required (the uid of the ComputeDomain)")
    elif not isinstance(domain_id, str):
        problems.append(f"parameters.domainID must be a string, got {type_name(domain_id)}")
    elif not is_uuid(domain_id):
        problems.append(
            f"parameters.domainID {domain_id!r} is not a UUID (it must be the uid of a ComputeDomain)"
        )
    if "allocationMode" in parameters and kind != DAEMON_CONFIG_KIND:
        mode = parameters["allocationMode"]
        if mode not in ALLOCATION_MODES:
            problems.append(f"parameters.allocationMode {mode!r} is not {' or '.join(ALLOCATION_MODES)}")
    known = _KNOWN_FIELDS.get(kind) if isinstance(kind, str) else None
    if known is not None:
        unknown = sorted(str(k) for k in parameters if k not in known)
        if unknown:
            problems.append(
                f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)} "
                f"in {kind} (it has {', '.join(known)})"
            )
    return problems


def type_name(value: object) -> str:
    """How an error message names the JSON type of ``value``."""
    if value is None:
        return "null"
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


def domain_of_devices(devices: object) -> str | None:
    """The ``domainID`` of the ``ComputeDomainChannelConfig`` in a claim's ``devices`` (the spec's
    or the allocation's; both carry ``config`` entries)."""
    if not isinstance(devices, dict):
        return None
    for entry in devices.get("config") or []:
        opaque = entry.get("opaque") if isinstance(entry, dict) else None
        if not isinstance(opaque, dict) or opaque.get("driver") != DRIVER:
            continue
        params = opaque.get("parameters")
        if isinstance(params, dict) and params.get("kind") == CHANNEL_CONFIG_KIND:
            uid = params.get("domainID")
            if isinstance(uid, str) and uid:
                return uid
    return None
