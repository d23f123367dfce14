"""The kinds the cluster serves: their group, version, plural, scope and how they are validated.

A kind is addressed by its *resource* string, ``plural`` for the core group and ``plural.group``
otherwise (``pods``, ``resourceclaims.resource.k8s.io``, ``bindrequests.scheduling.run.ai``), the
same names kubectl and RBAC use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kai_core.errors import UnknownKind

Validator = Callable[[dict], None]


@dataclass
class ResourceKind:
    """One served kind. ``validate`` raises :class:`kai_core.errors.Invalid` for a bad object."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    has_status: bool = False
    short_names: tuple[str, ...] = ()
    singular: str = ""
    validate: Validator | None = None
    defaults: Callable[[dict], dict] | None = None
    #: Older API versions accepted on input and converted to ``version``.
    convert_from: dict[str, Callable[[dict], dict]] = field(default_factory=dict)

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def names(self) -> set[str]:
        """Every name a user may type for this kind (kubectl style)."""
        names = {self.plural, self.kind.lower(), self.resource}
        if self.singular:
            names.add(self.singular)
        names.update(self.short_names)
        if self.group:
            names.add(f"{self.kind.lower()}.{self.group}")
        return names


def _core(kind: str, plural: str, namespaced: bool, **kw) -> ResourceKind:
    return ResourceKind("", "v1", kind, plural, namespaced, singular=kind.lower(), **kw)


def _dra(kind: str, plural: str, namespaced: bool, **kw) -> ResourceKind:
    return ResourceKind("resource.k8s.io", "v1", kind, plural, namespaced, singular=kind.lower(), **kw)


def builtin_kinds() -> list[ResourceKind]:
    """The Kubernetes kinds the scheduler and binder work with, with their API validation."""
    from kai_core.validation import VALIDATORS

    kinds = [
        _core("Namespace", "namespaces", False, has_status=True, short_names=("ns",)),
        _core("Node", "nodes", False, has_status=True, short_names=("no",)),
        _core("Pod", "pods", True, has_status=True, short_names=("po",)),
        _core("Event", "events", True, short_names=("ev",)),
        _core("ConfigMap", "configmaps", True, short_names=("cm",)),
        ResourceKind("coordination.k8s.io", "v1", "Lease", "leases", True, singular="lease"),
        _dra("DeviceClass", "deviceclasses", False),
        _dra("ResourceSlice", "resourceslices", False),
        _dra("ResourceClaim", "resourceclaims", True, has_status=True),
        _dra("ResourceClaimTemplate", "resourceclaimtemplates", True),
    ]
    for k in kinds:
        k.validate = VALIDATORS.get((k.group, k.kind))
    return kinds


class KindRegistry:
    """Looks kinds up by apiVersion+kind, by resource string, or by any kubectl-style name."""

    def __init__(self, kinds: Iterable[ResourceKind] = ()) -> None:
        self._by_resource: dict[str, ResourceKind] = {}
        self._by_gk: dict[tuple[str, str], ResourceKind] = {}
        self._by_name: dict[str, ResourceKind] = {}
        for k in kinds:
            self.add(k)

    def add(self, kind: ResourceKind) -> None:
        self._by_resource[kind.resource] = kind
        self._by_gk[(kind.group, kind.kind)] = kind
        for name in kind.names():
            self._by_name[name.lower()] = kind

    def __iter__(self):
        return iter(list(self._by_resource.values()))

    def __contains__(self, resource: str) -> bool:
        return resource in self._by_resource

    def get(self, resource: str) -> ResourceKind:
        """By resource string (``pods``, ``resourceclaims.resource.k8s.io``)."""
        try:
            return self._by_resource[resource]
        except KeyError:
            raise UnknownKind(f"the server could not find the requested resource {resource!r}") from None

    def lookup(self, name: str) -> ResourceKind:
        """By any name a user may type: plural, singular, kind, short name, ``plural.group``."""
        kind = self._by_name.get(name.lower())
        if kind is None:
            raise UnknownKind(f"the server doesn't have a resource type {name!r}")
        return kind

    def for_object(self, obj: dict) -> ResourceKind:
        """The kind serving ``obj`` (by its apiVersion and kind); an unserved one raises UnknownKind."""
        api_version = obj.get("apiVersion")
        kind_name = obj.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind_name, str) or not api_version or not kind_name:
            raise UnknownKind("object has no apiVersion or kind", code=400, reason="BadRequest")
        group, _, version = api_version.rpartition("/")
        kind = self._by_gk.get((group, kind_name))
        if kind is None or (version != kind.version and version not in kind.convert_from):
            raise UnknownKind(
                f"no matches for kind {kind_name!r} in version {api_version!r}: nothing serves this kind "
                "(install its CRD or the plugin that provides it)"
            )
        return kind
