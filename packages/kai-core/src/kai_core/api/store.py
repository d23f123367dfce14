"""The one interface through which the scheduler, the binder and controllers reach the cluster.

Two backends implement it: :class:`kai_core.apiserver.store.EmbeddedStore` (an in-process cluster
with the API server's semantics) and :class:`kai_core.client.store.KubernetesStore` (a real API
server). Objects cross it as Kubernetes JSON dicts, exactly what the API returns. Kinds are named
by resource string, ``plural`` for the core group and ``plural.group`` otherwise (``pods``,
``resourceclaims.resource.k8s.io``, ``bindrequests.scheduling.run.ai``); the names ``kai-cli get``
takes work as well (``resourceclaims``, ``pod``, ``po``, ``bindrequests``, ``br``): see
:meth:`kai_core.api.kinds.KindRegistry.get`. ``namespace`` is ignored for cluster-scoped kinds.

Errors are the exceptions of :mod:`kai_core.api.errors`, each with the HTTP code the API server would
answer: BadRequest 400, Forbidden 403, NotFound and UnknownKind 404, MethodNotAllowed 405, Conflict
and AlreadyExists 409, Gone 410, Invalid 422.

Besides the API calls, a store offers what the scheduler's cache
(:class:`kai_core.framework.cache.Cache`) and the controllers need to read the cluster cheaply: the
objects themselves without copies (:meth:`Store.list_refs`) and every change since a position in the
store's event log (:meth:`Store.events_since`, :attr:`Store.resource_version`; the log is a
:class:`kai_core.api.eventlog.EventLog`). Positions are integers that only grow; what they count is
the backend's business: the embedded store's resourceVersions, or the Kubernetes store's local
event sequence, which is no server resourceVersion to give ``list`` or ``watch``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from kai_core.api.kinds import KindRegistry
from kai_core.api.objects import parse_field_selector, parse_label_selector


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change: ``type`` is ADDED, MODIFIED, DELETED or BOOKMARK. ``object`` must not be mutated.

    ``resource_version`` is where a watch may resume from; it strictly increases along a watch. It is
    the object's ``metadata.resourceVersion`` except for an object restored from saved state with a
    version older than the store's, which keeps its own version.
    """

    type: str
    resource: str
    object: dict
    resource_version: str


class Store(ABC):
    """Get, list, watch, create, update, update-status, patch, delete and bind, with API semantics;
    and the cache's reads: ``list_refs``, ``events_since`` and ``resource_version``."""

    #: the kinds this store can address (and, for the embedded store, serves)
    kinds: KindRegistry

    @abstractmethod
    def get(self, resource: str, name: str, namespace: str | None = None, *, fresh: bool = False) -> dict:
        """The object ``name`` of kind ``resource`` (see the module docstring for how kinds are
        named) in ``namespace`` (None for a cluster-scoped kind), or NotFound; UnknownKind when no
        kind of that name is served. ``fresh``: from the API server itself even where this store
        answers reads from a watch cache (:meth:`KubernetesStore.read_from_cache
        <kai_core.client.store.KubernetesStore.read_from_cache>`), for a decision a cache that is
        behind must not make."""

    @abstractmethod
    def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict], str]:
        """The objects of kind ``resource`` (named as in the module docstring) in ``namespace``
        (every namespace when None), sorted by namespace then name, that match the label selector
        (``app=web,tier!=db``, ``env in (a,b)``, ``!x``) and the field selector
        (``metadata.name=p``, ``spec.nodeName=n1``, the fields the kind supports); and the
        resourceVersion of the list. The objects are copies, yours to change."""

    @abstractmethod
    def create(self, obj: dict) -> dict:
        """Create ``obj`` (name or generateName); returns the stored object. AlreadyExists, Invalid."""

    @abstractmethod
    def update(self, obj: dict) -> dict:
        """Replace ``obj`` (not its status, where the kind has a status subresource).

        Conflict when ``metadata.resourceVersion`` is set and stale.
        """

    @abstractmethod
    def update_status(self, obj: dict) -> dict:
        """Replace only the status of ``obj``; same resourceVersion precondition as update."""

    @abstractmethod
    def patch(
        self,
        resource: str,
        name: str,
        namespace: str | None,
        patch: dict,
        subresource: str | None = None,
        *,
        strategic: bool = False,
    ) -> dict:
        """JSON merge patch (RFC 7386) of the object or of its ``status`` subresource.

        ``strategic``: a strategic merge patch instead, where a list the Kubernetes types tag with a
        merge key (a pod's or node's ``status.conditions``, by ``type``) merges item by item, so a
        writer can set one condition without reading the others first. Built-in kinds only: a
        custom resource raises UnsupportedMediaType (415), as on the API server.
        """

    @abstractmethod
    def delete(self, resource: str, name: str, namespace: str | None = None, *, uid: str | None = None) -> None:
        """Delete (or mark deleting while finalizers remain); dependents are garbage-collected.
        ``uid``: only the object with this uid (a precondition: Conflict when the name now holds
        another object, as the API server answers)."""

    @abstractmethod
    def bind(self, namespace: str, pod_name: str, node_name: str, pod_uid: str | None = None, *,
             annotations: dict[str, str] | None = None) -> None:
        """Create the pods/binding subresource: NotFound without the pod, Conflict if it is already
        bound, being deleted, or its uid is not ``pod_uid``. ``annotations`` (the Binding's) are
        merged into the pod's in the same write, as the API server does."""

    @abstractmethod
    def watch(
        self, resource: str, resource_version: str, timeout: float | None = None
    ) -> Iterator[WatchEvent]:
        """Events of ``resource`` after ``resource_version``; Gone if that version was compacted.

        ``""`` or ``"0"`` starts with an ADDED event for every current object.
        """

    # -- what the cache and the controllers read -------------------------------------------------

    @property
    @abstractmethod
    def resource_version(self) -> int:
        """The position of the latest change in the store's event log (0 before any).

        It grows with every change the store records, so a caller can tell whether anything
        happened between two readings; it is where ``events_since`` goes on from.
        """

    @abstractmethod
    def list_refs(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict], str]:
        """Like ``list`` (same selection, sorted by namespace then name), but the objects are the
        store's own, not copies: callers must never mutate them (the store never does either: a
        change stores a new object).

        The second value is the event-log position the objects reflect, as a string:
        ``events_since(int(position))`` returns every change made after them.
        """

    @abstractmethod
    def events_since(
        self, resource_version: int, resources: set[str] | None = None
    ) -> tuple[list[WatchEvent], int]:
        """Every change after log position ``resource_version`` (of ``resources`` only, when given),
        in the order they were made, with strictly increasing ``resource_version`` values; and
        the position at the time of reading, from which the next call goes on.

        Objects are by reference, as from ``list_refs``: never mutate them. Raises Gone when the
        bounded log no longer holds every change after ``resource_version``: relist then
        (``list_refs``) and go on from the list's position.
        """


def select(
    objects: Iterable[dict],
    namespaced: bool,
    namespace: str | None = None,
    label_selector: str | None = None,
    field_selector: str | None = None,
    fields: Iterable[str] | None = None,
) -> list[dict]:
    """What ``list`` returns of ``objects``: those in ``namespace`` (every namespace when None, or
    for a cluster-scoped kind) matching both selectors, sorted by namespace then name.

    ``fields`` are the field paths the kind lets a selector use (None: any); BadRequest for a
    malformed selector or another field.
    """
    labels_ok = parse_label_selector(label_selector)
    fields_ok = parse_field_selector(field_selector, fields)
    out = []
    for o in objects:
        md = o["metadata"]
        if namespace and namespaced and md.get("namespace") != namespace:
            continue
        if label_selector and not labels_ok(md.get("labels") or {}):
            continue
        if field_selector and not fields_ok(o):
            continue
        out.append(o)
    out.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
    return out
