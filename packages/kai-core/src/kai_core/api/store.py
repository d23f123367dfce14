"""The one interface through which the scheduler, the binder and controllers reach the cluster.

Two backends implement it: :class:`kai_core.apiserver.store.EmbeddedStore` (an in-process cluster with
the API server's semantics) and the Kubernetes backend. Objects cross it as Kubernetes JSON dicts,
exactly what the API returns. Kinds are named by resource string (``pods``,
``resourceclaims.resource.k8s.io``), see :mod:`kai_core.api.kinds`.

Errors are the exceptions of :mod:`kai_core.api.errors`, each with the HTTP code the API server would
answer: BadRequest 400, Forbidden 403, NotFound and UnknownKind 404, MethodNotAllowed 405, Conflict
and AlreadyExists 409, Gone 410, Invalid 422.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from kai_core.api.kinds import KindRegistry


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
    """Get, list, watch, create, update, update-status, patch, delete and bind, with API semantics."""

    kinds: KindRegistry

    @abstractmethod
    def get(self, resource: str, name: str, namespace: str | None = None) -> dict:
        """The object, or NotFound."""

    @abstractmethod
    def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict], str]:
        """Matching objects (all namespaces when ``namespace`` is None) and the list's resourceVersion."""

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
        self, resource: str, name: str, namespace: str | None, patch: dict, subresource: str | None = None
    ) -> dict:
        """JSON merge patch (RFC 7386) of the object or of its ``status`` subresource."""

    @abstractmethod
    def delete(self, resource: str, name: str, namespace: str | None = None) -> None:
        """Delete (or mark deleting while finalizers remain); dependents are garbage-collected."""

    @abstractmethod
    def bind(self, namespace: str, pod_name: str, node_name: str, pod_uid: str | None = None) -> None:
        """Create the pods/binding subresource: NotFound without the pod, Conflict if it is already
        bound, being deleted, or its uid is not ``pod_uid``."""

    @abstractmethod
    def watch(
        self, resource: str, resource_version: str, timeout: float | None = None
    ) -> Iterator[WatchEvent]:
        """Events of ``resource`` after ``resource_version``; Gone if that version was compacted.

        ``""`` or ``"0"`` starts with an ADDED event for every current object.
        """
