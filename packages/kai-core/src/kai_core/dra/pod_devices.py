"""What a pod's ResourceClaims reach for, for plugins: the DeviceClasses and drivers they can use
(:func:`device_use`, "does this pod concern my driver?") and every opaque config they hand a driver,
from the claims and from the classes their requests name, with where each one is written
(:func:`opaque_configs`, what the ``kai_check_configs`` hook is given).

Both walk the claims' requests the same way: ``exactly`` names one DeviceClass, ``firstAvailable``
one per sub-request (named ``request/subrequest``, as allocation results are). Entries of the wrong
shape are skipped: reporting them is the API server's and the allocator's business.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from kai_core.dra.allocator import class_drivers
from kai_core.dra.claims import PodClaim, pod_claims
from kai_core.dra.inventory import DraInventory


@dataclass(frozen=True)
class DeviceUse:
    """The DeviceClasses a pod's claims name and the drivers whose devices those classes select
    (plus the drivers of devices already allocated to the claims)."""

    classes: frozenset[str] = frozenset()
    drivers: frozenset[str] = frozenset()

    def uses(self, driver: str) -> bool:
        """Whether the pod's claims may get devices of ``driver``."""
        return driver in self.drivers


@dataclass(eq=False)
class OpaqueConfig:
    """One ``opaque`` config entry meant for ``driver``, from a claim's ``spec.devices.config`` or
    from ``spec.config`` of a DeviceClass one of its requests names. Hashable by identity, so a
    ``kai_check_configs`` answer can be keyed by it."""

    driver: str
    #: ``opaque.parameters`` as written (any JSON value: checking it is the plugin's job)
    parameters: object
    #: where it is written, for a person: ``pod claim "gpu" (ResourceClaim "ns/name"):
    #: spec.devices.config[0]`` or ``... DeviceClass "c" (used by request "r"): spec.config[0]``
    where: str
    #: its path in the object holding it: ``spec.devices.config[i]`` or ``spec.config[i]``
    path: str
    #: the ResourceClaim it concerns
    claim: dict
    #: the DeviceClass holding it; None for the claim's own config
    device_class: str | None = None
    #: the requests it applies to (``request`` or ``request/subrequest``) -> their DeviceClass
    requests: dict[str, str] = field(default_factory=dict)

    def describe(self, problem: str) -> str:
        """The pod's message for ``problem`` found in this config."""
        kind = self.parameters.get("kind") if isinstance(self.parameters, dict) else None
        label = f"{self.driver} {kind}" if isinstance(kind, str) and kind else self.driver
        return f"{self.where} ({label}): {problem}"


def _request_classes(claim: dict) -> Iterator[tuple[str, str, str]]:
    """``(request name, result name, DeviceClass)`` for every request and sub-request of ``claim``."""
    devices = ((claim.get("spec") or {}).get("devices") or {}) if isinstance(claim.get("spec"), dict) else {}
    requests = devices.get("requests") if isinstance(devices, dict) else None
    for request in requests if isinstance(requests, list) else []:
        if not isinstance(request, dict) or not isinstance(request.get("name"), str):
            continue
        name = request["name"]
        if isinstance(request.get("exactly"), dict):
            alts = [(name, request["exactly"])]
        else:
            subs = request.get("firstAvailable")
            alts = [(f"{name}/{sub.get('name')}", sub) for sub in subs if isinstance(sub, dict)] \
                if isinstance(subs, list) else []
        for result_name, body in alts:
            class_name = body.get("deviceClassName")
            if isinstance(class_name, str) and class_name:
                yield name, result_name, class_name


def device_use(pod: dict, snapshot) -> DeviceUse:
    """Which DeviceClasses and drivers ``pod``'s claims can use (empty for a pod without claims,
    or whose claims cannot be resolved yet). ``snapshot`` is the cycle's (its ``dra`` inventory
    says which drivers a class selects; that answer is kept for the cycle)."""
    if not (pod.get("spec") or {}).get("resourceClaims"):
        return DeviceUse()
    claims, reason = pod_claims(pod, snapshot)
    if reason:
        return DeviceUse()
    classes: set[str] = set()
    drivers: set[str] = set()
    for pc in claims:
        classes.update(class_name for _r, _n, class_name in _request_classes(pc.claim))
        results = ((pc.allocation or {}).get("devices") or {}).get("results") or []
        drivers.update(r["driver"] for r in results if isinstance(r, dict) and isinstance(r.get("driver"), str))
    for class_name in classes:
        drivers.update(class_drivers(class_name, snapshot.dra))
    return DeviceUse(frozenset(classes), frozenset(drivers))


def _opaque_entries(configs: object) -> Iterator[tuple[int, dict, dict]]:
    """``(index, entry, opaque)`` for the well-formed opaque entries of a config list."""
    for index, entry in enumerate(configs if isinstance(configs, list) else []):
        opaque = entry.get("opaque") if isinstance(entry, dict) else None
        if isinstance(opaque, dict) and isinstance(opaque.get("driver"), str):
            yield index, entry, opaque


def opaque_configs(claims: list[PodClaim], inventory: DraInventory) -> list[OpaqueConfig]:
    """Every opaque config of ``claims`` (a pod's, from :func:`kai_core.dra.claims.pod_claims`), in
    pod order: each claim's own ``spec.devices.config`` entries, then those of each DeviceClass its
    requests name (once per claim, in request order)."""
    out: list[OpaqueConfig] = []
    for pc in claims:
        md = pc.claim.get("metadata") or {}
        owner = f'pod claim "{pc.name}" (ResourceClaim "{md.get("namespace", "")}/{md.get("name", "")}")'
        alts = list(_request_classes(pc.claim))
        devices = (pc.claim.get("spec") or {}).get("devices") or {}
        for index, entry, opaque in _opaque_entries(devices.get("config") if isinstance(devices, dict) else None):
            named = entry.get("requests") if isinstance(entry.get("requests"), list) else []
            applies = {result: cls for request, result, cls in alts
                       if not named or request in named or result in named}
            path = f"spec.devices.config[{index}]"
            out.append(OpaqueConfig(opaque["driver"], opaque.get("parameters"), f"{owner}: {path}", path,
                                    pc.claim, None, applies))
        by_class: dict[str, dict[str, str]] = {}
        for _request, result, cls in alts:
            by_class.setdefault(cls, {})[result] = cls
        for cls, applies in by_class.items():
            device_class = inventory.device_class(cls)
            spec = device_class.get("spec") if isinstance(device_class, dict) else None
            configs = spec.get("config") if isinstance(spec, dict) else None
            first = next(iter(applies)).split("/")[0]
            for index, _entry, opaque in _opaque_entries(configs):
                path = f"spec.config[{index}]"
                out.append(OpaqueConfig(
                    opaque["driver"], opaque.get("parameters"),
                    f'{owner}: DeviceClass "{cls}" (used by request "{first}"): {path}', path,
                    pc.claim, cls, dict(applies)))
    return out
