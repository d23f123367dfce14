"""The kinds the cluster serves: their group, version, plural, scope and how they are validated.

A kind is addressed by its *resource* string, ``plural`` for the core group and ``plural.group``
otherwise (``pods``, ``resourceclaims.resource.k8s.io``, ``bindrequests.scheduling.run.ai``), the
same names kubectl and RBAC use. Where a store takes a resource (``get``, ``list``, ...), any name
``kai-cli get`` and kubectl accept works too: the plural alone (``resourceclaims``), the singular,
the kind or a short name (``po``, ``br``); see :meth:`KindRegistry.get`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kai_core.api import conversion
from kai_core.api.errors import UnknownKind

Validator = Callable[[dict], None]
UpdateValidator = Callable[[dict, dict], None]  # (old, new)

#: Field selectors every kind supports.
COMMON_FIELD_SELECTORS = ("metadata.name", "metadata.namespace")


@dataclass
class ResourceKind:
    """One served kind. ``validate`` raises :class:`kai_core.api.errors.Invalid` for a bad object.

    ``validate_update(old, new)`` checks what may not change on an update (immutable fields);
    ``field_selectors`` lists the field paths that ``list`` may select on besides
    ``metadata.name`` and ``metadata.namespace``.
    """

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    has_status: bool = False
    short_names: tuple[str, ...] = ()
    singular: str = ""
    validate: Validator | None = None
    #: schema defaulting of a write: may change the object it is given (the store's own copy) and
    #: returns the defaulted object
    defaults: Callable[[dict], dict] | None = None
    #: Older API versions accepted on input and converted to ``version``.
    convert_from: dict[str, Callable[[dict], dict]] = field(default_factory=dict)
    validate_update: UpdateValidator | None = None
    #: what a write of the status subresource checks instead of ``validate`` (the API server's
    #: status strategy validates the status only); None: ``validate``
    validate_status: Validator | None = None
    field_selectors: tuple[str, ...] = ()
    #: served from a CustomResourceDefinition: the API server refuses strategic merge patches of it
    custom: bool = False

    def selectable_fields(self) -> tuple[str, ...]:
        """Every field path a field selector may name for this kind."""
        return COMMON_FIELD_SELECTORS + self.field_selectors

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


_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)


def builtin_kinds() -> list[ResourceKind]:
    """The Kubernetes kinds the scheduler and binder work with: names, scope and versions only.

    Their API validation is the embedded API server's (:func:`kai_core.apiserver.catalog.served_kinds`).

    ``resource.k8s.io`` is always served (as ``v1``, with ``v1beta1`` and ``v1beta2`` objects
    converted on input), whatever the scheduler's feature gates say: the gates decide what the
    scheduler does with claims, not whether the cluster stores them.
    """
    kinds = [
        _core(
            "Namespace",
            "namespaces",
            False,
            has_status=True,
            short_names=("ns",),
            field_selectors=("status.phase",),
        ),
        _core(
            "Node",
            "nodes",
            False,
            has_status=True,
            short_names=("no",),
            field_selectors=("spec.unschedulable",),
        ),
        _core("Pod", "pods", True, has_status=True, short_names=("po",), field_selectors=_POD_FIELDS),
        _core("Event", "events", True, short_names=("ev",), field_selectors=_EVENT_FIELDS),
        _core("ConfigMap", "configmaps", True, short_names=("cm",)),
        _core("PersistentVolume", "persistentvolumes", False, has_status=True, short_names=("pv",)),
        _core("PersistentVolumeClaim", "persistentvolumeclaims", True, has_status=True, short_names=("pvc",)),
        ResourceKind("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, short_names=("sc",),
                     singular="storageclass"),
        ResourceKind("coordination.k8s.io", "v1", "Lease", "leases", True, singular="lease"),
        ResourceKind("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", False, short_names=("pc",),
                     singular="priorityclass"),
        _dra("DeviceClass", "deviceclasses", False, convert_from=conversion.to_v1("DeviceClass")),
        _dra(
            "ResourceSlice",
            "resourceslices",
            False,
            convert_from=conversion.to_v1("ResourceSlice"),
            field_selectors=("spec.nodeName", "spec.driver"),
        ),
        _dra(
            "ResourceClaim",
            "resourceclaims",
            True,
            has_status=True,
            convert_from=conversion.to_v1("ResourceClaim"),
        ),
        _dra(
            "ResourceClaimTemplate",
            "resourceclaimtemplates",
            True,
            convert_from=conversion.to_v1("ResourceClaimTemplate"),
        ),
    ]
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

    def remove(self, resource: str) -> None:
        """Stop serving a kind (its CRD was deleted)."""
        kind = self._by_resource.pop(resource, None)
        if kind is None:
            return
        if self._by_gk.get((kind.group, kind.kind)) is kind:
            del self._by_gk[(kind.group, kind.kind)]
        for name in kind.names():
            if self._by_name.get(name.lower()) is kind:
                del self._by_name[name.lower()]

    def __iter__(self):
        return iter(list(self._by_resource.values()))

    def __contains__(self, resource: str) -> bool:
        return resource in self._by_resource

    def get(self, resource: str) -> ResourceKind:
        """By resource string (``pods``, ``resourceclaims.resource.k8s.io``) or, failing that, by
        any name :meth:`lookup` takes (``resourceclaims``, ``pod``, ``br``). The kind's
        :attr:`ResourceKind.resource` is the canonical string."""
        try:
            return self._by_resource[resource]
        except KeyError:  # not the canonical string: a name a user types (the common case costs nothing)
            kind = self._by_name.get(resource.lower()) if isinstance(resource, str) else None
            if kind is None:
                raise UnknownKind(f"the server could not find the requested resource {resource!r}") from None
            return kind

    def by_group_kind(self, group: str, kind: str) -> ResourceKind | None:
        """The kind served for ``group`` and ``kind`` (any version), or None."""
        return self._by_gk.get((group, kind))

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
        if (
            not isinstance(api_version, str)
            or not isinstance(kind_name, str)
            or not api_version
            or not kind_name
        ):
            raise UnknownKind("object has no apiVersion or kind", code=400, reason="BadRequest")
        group, _, version = api_version.rpartition("/")
        kind = self._by_gk.get((group, kind_name))
        if kind is None or (version != kind.version and version not in kind.convert_from):
            raise UnknownKind(
                f"no matches for kind {kind_name!r} in version {api_version!r}: nothing serves this kind "
                "(install its CRD or the plugin that provides it)"
            )
        return kind
