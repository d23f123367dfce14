"""An in-process cluster store with the Kubernetes API server's semantics that matter to a scheduler.

What it does as the API server does: uids, ``generateName``, a resourceVersion on every write (a
write that changes nothing is not a write: no new resourceVersion, no event), 409 on a stale update
or a duplicate create, 404s, the status subresource (``update`` keeps the status, ``update_status``
keeps everything else), ``generation`` bumped on spec changes, JSON merge patch, strategic merge
patch (conditions merged by ``type``, see :data:`STRATEGIC_MERGE_KEYS`), watch events with 410
once history is compacted, label and field selectors, finalizers and ``deletionTimestamp``,
ownerReference garbage collection (background), namespace lifecycle (``Terminating`` while its
contents go), pods/binding, API defaulting (``schedulerName: default-scheduler``, DRA
``allocationMode``/``count``, quantities as canonical strings), and validation (kinds nobody serves,
metadata, CRD schemas and their ``self == oldSelf`` rules, CEL selectors compiled on create,
immutable fields on update). ``resource.k8s.io`` is served whatever any feature gate says.

What it leaves out on purpose: pods are deleted at once (there is no kubelet to honour a grace
period: a deleted pod is marked with a ``deletionTimestamp``, then removed, two events as on the API
server for a pod on no node), and admission webhooks other than the validation above do not exist.

``restore`` is the manifest loader's entry point (``kubectl apply`` of a whole object, or loading a
saved state): uid, resourceVersion, status and timestamps are kept as given, a missing namespace is
created, and an existing object is replaced.

Stored objects are never mutated in place: every write stores a new dict, so watch events and the
cache may hold references without copying. Callers of ``get``/``list`` receive copies.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from kai_core.api.errors import (
    AlreadyExists,
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    Invalid,
    MethodNotAllowed,
    NotFound,
    UnknownKind,
    UnsupportedMediaType,
)
from kai_core.api.eventlog import EventLog
from kai_core.api.kinds import KindRegistry, ResourceKind
from kai_core.api.objects import (
    clone,
    now_rfc3339,
    random_suffix,
)
from kai_core.api.store import Store, WatchEvent, select
from kai_core.apiserver import defaults as _defaults
from kai_core.apiserver import priority as _priority
from kai_core.apiserver.catalog import served_kinds
from kai_core.apiserver.validation import immutable_paths, transition_rule_validator, validate_metadata, validate_name

#: the namespace label that allows DRA requests with ``adminAccess`` (KEP-5018)
ADMIN_ACCESS_LABEL = "resource.kubernetes.io/admin-access"
#: built-in kinds with ``metadata.generation`` (kube-apiserver's strategies that set it on create)
_GENERATION_RESOURCES = frozenset({
    "pods", "podtemplates", "replicationcontrollers", "customresourcedefinitions.apiextensions.k8s.io",
    "deviceclasses.resource.k8s.io", "resourceslices.resource.k8s.io", "devicetaintrules.resource.k8s.io",
    "daemonsets.apps", "deployments.apps", "replicasets.apps", "statefulsets.apps", "cronjobs.batch", "jobs.batch",
    "horizontalpodautoscalers.autoscaling", "endpointslices.discovery.k8s.io", "ingresses.networking.k8s.io",
    "ingressclasses.networking.k8s.io", "networkpolicies.networking.k8s.io", "poddisruptionbudgets.policy",
    "priorityclasses.scheduling.k8s.io", "flowschemas.flowcontrol.apiserver.k8s.io",
    "prioritylevelconfigurations.flowcontrol.apiserver.k8s.io",
    "mutatingwebhookconfigurations.admissionregistration.k8s.io",
    "validatingwebhookconfigurations.admissionregistration.k8s.io",
    "validatingadmissionpolicies.admissionregistration.k8s.io",
    "validatingadmissionpolicybindings.admissionregistration.k8s.io",
    "mutatingadmissionpolicies.admissionregistration.k8s.io",
    "mutatingadmissionpolicybindings.admissionregistration.k8s.io",
})
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
#: Namespaces the API server refuses to delete.
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")
CRD_RESOURCE = "customresourcedefinitions.apiextensions.k8s.io"
_Key = tuple[str, str]  # (namespace, name)
_SYSTEM_FIELDS = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds")


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch; returns a new value (``None`` in the patch removes a key)."""
    return _merge_into(clone(target), patch)


def _merge_into(target, patch):
    """``patch`` merged into ``target``, a copy the caller owns (changed in place where it is a
    mapping): the target is copied once, not once per level."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = target if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = _merge_into(result.get(k), v)
    return result


#: The lists a strategic merge patch merges item by item, by the merge key their Kubernetes type
#: tags (``patchStrategy:"merge" patchMergeKey:...`` in k8s.io/api): (kind, field path) -> key. Only
#: the lists kai patches are here; any other list is replaced whole, as by a JSON merge patch.
STRATEGIC_MERGE_KEYS: dict[tuple[str, str], str] = {
    ("Pod", "status.conditions"): "type",  # core/v1 PodStatus.Conditions
    ("Node", "status.conditions"): "type",  # core/v1 NodeStatus.Conditions
}


def strategic_merge_patch(target, patch, kind: str, path: str = ""):
    """A strategic merge patch of an object of ``kind`` (``path``: where ``patch`` sits in it);
    returns a new value. Maps merge as in a JSON merge patch (``None`` removes a key); a list with
    a merge key in :data:`STRATEGIC_MERGE_KEYS` merges item by item: a patch item replaces the
    fields it names of the item with the same key (kept in place) or is appended. Directives
    (``$patch`` and the like) are refused with BadRequest: not implemented."""
    _refuse_directives(patch, path or kind)
    return _strategic(clone(target), patch, kind, path)


def _strategic(target, patch, kind: str, path: str):
    """``patch`` merged into ``target``, a copy the caller owns (see :func:`_merge_into`)."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = target if isinstance(target, dict) else {}
    for k, v in patch.items():
        at = f"{path}.{k}" if path else k
        key = STRATEGIC_MERGE_KEYS.get((kind, at))
        if v is None:
            result.pop(k, None)
        elif key is not None and isinstance(v, list):
            result[k] = _merge_list(result.get(k), v, key, kind, at)
        else:
            result[k] = _strategic(result.get(k), v, kind, at)
    return result


def _merge_list(current, items: list, key: str, kind: str, path: str) -> list:
    """The items of ``current`` with each of ``items`` merged into the one with the same ``key``
    value, or appended (in the patch's order) when there is none: the API server's order when the
    patch carries no ``$setElementOrder``."""
    out = current if isinstance(current, list) else []  # the caller's copy
    for item in items:
        if not isinstance(item, dict) or item.get(key) is None:
            raise BadRequest(
                f"{kind} {path}: every item of a strategic merge patch needs its merge key {key!r}, got {item!r}")
        at = next((i for i, c in enumerate(out) if isinstance(c, dict) and c.get(key) == item[key]), None)
        if at is None:
            out.append(clone(item))  # as given, nulls included: the API server appends it whole
        else:
            out[at] = _strategic(out[at], item, kind, path)
    return out


def _refuse_directives(patch, where: str) -> None:
    if isinstance(patch, dict):
        for k, v in patch.items():
            if isinstance(k, str) and k.startswith("$"):
                raise BadRequest(f"{where}: the strategic merge patch directive {k!r} is not implemented")
            _refuse_directives(v, f"{where}.{k}")
    elif isinstance(patch, list):
        for v in patch:
            _refuse_directives(v, where)


def _ref(kind: ResourceKind, name: str, namespace: str | None = None) -> str:
    return f"{kind.kind} {namespace}/{name}" if namespace and kind.namespaced else f"{kind.kind} {name}"


class EmbeddedStore(Store):
    """The embedded cluster's API server. Thread-safe; every method is one atomic API call.

    ``history`` bounds the watch event log: a watch (or ``events_since``) from a resourceVersion
    older than the log raises Gone (410), and the caller relists.
    """

    def __init__(self, kinds: Iterable[ResourceKind] | None = None, history: int = 500_000) -> None:
        self._events = EventLog(history)  # its position is the store's resourceVersion
        self.kinds = KindRegistry(served_kinds() if kinds is None else kinds)
        self._objects: dict[str, dict[_Key, dict]] = {}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._owned: dict[str, set[tuple[str, str, str]]] = {}  # owner uid -> dependents
        self._uids: dict[str, int] = {}  # uid -> how many stored objects carry it
        self._ns_count: dict[str, int] = {}  # namespace -> objects in it
        self._crd_kinds: dict[str, str] = {}  # CRD name -> resource it serves
        #: the resources CRDs serve (the values of _crd_kinds), asked on every write
        self._crd_resources: frozenset[str] = frozenset()
        self.writes = 0
        self._register_crd_kind()
        for ns in DEFAULT_NAMESPACES:
            self._write_new(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, restore=False
            )
        for pc in _priority.system_classes():  # what kube-apiserver creates when it starts
            self._write_new(pc, restore=False)

    # -- kinds ---------------------------------------------------------------------------------

    def _register_crd_kind(self) -> None:
        self.kinds.add(
            ResourceKind(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                False,
                has_status=True,
                short_names=("crd", "crds"),
                singular="customresourcedefinition",
                validate=_validate_crd,
            )
        )

    def serve_crd(self, crd: dict) -> ResourceKind:
        """Serve the custom resource a CRD describes (what the API server does once a CRD is created).

        Objects of the CRD's storage version are validated against its schema (defaults applied
        first, ``self == oldSelf`` rules enforced on update); other served versions are accepted
        and stored as the storage version. Raises Invalid naming the CRD when its schema does not
        compile or its kind is one the cluster serves natively.
        """
        from kai_core.apiserver.schema import CrdValidator

        name = (crd.get("metadata") or {}).get("name") if isinstance(crd, dict) else None
        try:
            validator = CrdValidator(crd)
        except Exception as exc:  # a CRD whose schema cannot be compiled is refused, naming it
            raise Invalid(f"CustomResourceDefinition {name!r} is invalid: {exc}") from exc
        with self._lock:
            existing = self.kinds.by_group_kind(validator.group, validator.kind)
            owner = self._crd_kinds.get(name)
            if existing is not None and existing.resource not in self._crd_kinds.values():
                raise Invalid(
                    f"CustomResourceDefinition {name!r} is invalid: {validator.kind} in group "
                    f"{validator.group!r} is served by the cluster itself"
                )
            entry = next(v for v in crd["spec"]["versions"] if v.get("name") == validator.version)
            fields = tuple(
                str(f.get("jsonPath", "")).lstrip(".")
                for f in entry.get("selectableFields") or []
                if isinstance(f, dict) and f.get("jsonPath")
            )
            kind = ResourceKind(
                validator.group,
                validator.version,
                validator.kind,
                validator.plural,
                validator.namespaced,
                has_status=validator.has_status,
                short_names=tuple(validator.short_names),
                singular=validator.singular,
                validate=_crd_validate(validator),
                defaults=validator.apply_defaults_in_place,  # on the store's own copy
                convert_from={v: _same_shape for v in validator.versions if v != validator.version},
                validate_update=transition_rule_validator(immutable_paths(validator.schema)),
                field_selectors=fields,
                custom=True,
            )
            if owner is not None and owner != kind.resource:
                self.kinds.remove(owner)
            self.kinds.add(kind)
            self._crd_kinds[name] = kind.resource
            self._crd_resources = frozenset(self._crd_kinds.values())
        return kind

    # -- reads ---------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The store's current resourceVersion (that of the latest write)."""
        return self._events.resource_version

    def get(self, resource: str, name: str, namespace: str | None = None, *, fresh: bool = False) -> dict:
        """The object (a copy), or NotFound; always fresh: there is no cache to be behind."""
        return clone(self._stored(self.kinds.get(resource), name, namespace))

    def get_ref(self, resource: str, name: str, namespace: str | None = None) -> dict:
        """Like :meth:`get`, but the store's own object, not a copy (as :meth:`list_refs`): for
        readers in this process, the embedded controllers, that never change what they read."""
        return self._stored(self.kinds.get(resource), name, namespace)

    def _stored(self, kind: ResourceKind, name: str, namespace: str | None) -> dict:
        """The store's own object (not a copy: never to be changed or handed out), or NotFound."""
        with self._lock:
            obj = self._objects.get(kind.resource, {}).get(self._key(kind, name, namespace))
        if obj is None:
            raise NotFound(f'{kind.resource} "{name}" not found')
        return obj

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict], str]:
        items, rv = self.list_refs(resource, namespace, label_selector, field_selector)
        return [clone(o) for o in items], rv

    def list_refs(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict], str]:
        """See :meth:`Store.list_refs`; the position is the store's resourceVersion."""
        kind = self.kinds.get(resource)
        with self._lock:
            objs = list(self._objects.get(kind.resource, {}).values())
            rv = str(self._events.resource_version)
        fields = kind.selectable_fields()
        return select(objs, kind.namespaced, namespace, label_selector, field_selector, fields), rv

    def events_since(
        self, resource_version: int, resources: set[str] | None = None
    ) -> tuple[list[WatchEvent], int]:
        """See :meth:`Store.events_since`; the positions are the store's resourceVersions."""
        with self._lock:
            return self._events.since(resource_version, resources)

    def watch(
        self, resource: str, resource_version: str, timeout: float | None = None
    ) -> Iterator[WatchEvent]:
        """Events of ``resource`` after ``resource_version``, as copies, until ``timeout`` seconds pass
        (forever when None).

        ``""`` or ``"0"`` first yields an ADDED event for every current object (what the API server
        does for a watch without a version). A version older than the kept history raises Gone at
        once; one that falls out of the history while the caller is slow raises Gone from the
        iterator.
        """
        kind = self.kinds.get(resource)
        initial: list[WatchEvent] = []
        with self._lock:
            if resource_version in (None, "", "0", 0):
                start = self._events.resource_version
                for o in sorted(self._objects.get(kind.resource, {}).values(), key=_sort_key):
                    initial.append(WatchEvent("ADDED", kind.resource, o, o["metadata"]["resourceVersion"]))
            else:
                try:
                    start = int(resource_version)
                except (TypeError, ValueError):
                    raise BadRequest(
                        f"invalid resourceVersion {resource_version!r}: an integer is expected"
                    ) from None
                self.events_since(start, {kind.resource})  # Gone now rather than at the first next()
        return self._watch_iter(kind.resource, start, initial, timeout)

    def _watch_iter(
        self, resource: str, rv: int, initial: list[WatchEvent], timeout: float | None
    ) -> Iterator[WatchEvent]:
        deadline = None if timeout is None else time.monotonic() + timeout
        for ev in initial:
            yield WatchEvent(ev.type, ev.resource, clone(ev.object), ev.resource_version)
        while True:
            events, now = self.events_since(rv, {resource})
            for ev in events:
                yield WatchEvent(ev.type, ev.resource, clone(ev.object), ev.resource_version)
            rv = now  # every event of this resource up to ``now`` has been delivered
            if deadline is not None and time.monotonic() >= deadline:
                return  # what had happened is delivered; a zero timeout is a poll
            with self._lock:
                if self._events.resource_version == rv:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return
                    self._changed.wait(1.0 if remaining is None else min(remaining, 1.0))

    # -- writes --------------------------------------------------------------------------------

    def create(self, obj: dict) -> dict:
        return clone(self._write_new(_copy_in(obj), restore=False))

    def restore(self, obj: dict) -> dict:
        """Put an object as a manifest or saved state gives it: uid, resourceVersion, status kept.

        An object that already exists is replaced (``kubectl apply`` of a whole object); a missing
        namespace is created. Validation and defaulting are those of ``create``.
        """
        return clone(self._write_new(_copy_in(obj), restore=True))

    def update(self, obj: dict) -> dict:
        return clone(self._write_existing(_copy_in(obj), status_only=False))

    def update_status(self, obj: dict) -> dict:
        # only what a status write takes from the request is copied; an older version is converted
        # whole first
        if isinstance(obj, dict) and obj.get("apiVersion") == self.kinds.for_object(obj).api_version:
            obj = clone(_status_part(obj))
        else:
            obj = _copy_in(obj)
        return clone(self._write_existing(obj, status_only=True))

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
        """A JSON merge patch, or with ``strategic`` a strategic merge patch
        (:func:`strategic_merge_patch`; custom resources refuse it with 415, as the API server
        does). ``metadata.uid`` and ``metadata.resourceVersion`` in the patch are preconditions."""
        if not isinstance(patch, dict):
            raise BadRequest("a merge patch must be a JSON object")
        if subresource not in (None, "status"):
            raise NotFound(f"the server could not find the requested resource ({resource}/{subresource})")
        with self._lock:
            kind = self.kinds.get(resource)
            if strategic and (kind.custom or kind.resource in self._crd_resources):
                raise UnsupportedMediaType(
                    f'{_ref(kind, name, namespace or "default")}: a strategic merge patch of a custom resource is not '
                    "supported; send a JSON merge patch")
            current = self._stored(kind, name, namespace)  # both merges below return a new object
            # a status write takes only _status_part of the request: merge the patch into that alone
            target = _status_part(current) if subresource == "status" else current
            if strategic:
                merged = strategic_merge_patch(target, patch, current["kind"])
            else:
                merged = merge_patch(target, patch)
            if not isinstance(merged.get("metadata"), dict):
                raise Invalid(f'{resource} "{name}": metadata cannot be removed by a patch')
            merged["apiVersion"], merged["kind"] = current["apiVersion"], current["kind"]
            for f in ("name", "namespace"):
                if f in current["metadata"]:
                    merged["metadata"][f] = current["metadata"][f]
            if (patch.get("metadata") or {}).get("resourceVersion") is None:
                merged["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return clone(self._write_existing(merged, status_only=subresource == "status"))

    def delete(self, resource: str, name: str, namespace: str | None = None, *, uid: str | None = None) -> None:
        with self._lock:
            kind = self.kinds.get(resource)
            key = self._key(kind, name, namespace)
            current = self._objects.get(kind.resource, {}).get(key)
            if current is None:
                raise NotFound(f'{kind.resource} "{name}" not found')
            if uid and current["metadata"].get("uid") != uid:
                raise Conflict(f'Operation cannot be fulfilled on {kind.resource} "{name}": Precondition failed: '
                               f"UID in precondition: {uid}, UID in object meta: {current['metadata'].get('uid')}")
            if kind.resource == "namespaces" and name in PROTECTED_NAMESPACES:
                raise Forbidden(f'namespaces "{name}" is forbidden: this namespace may not be deleted')
            if kind.resource == _priority.RESOURCE:
                _priority.refuse_system_delete(name)
            md = current["metadata"]
            if md.get("deletionTimestamp"):
                return  # already being deleted
            container = kind.resource in ("namespaces", CRD_RESOURCE)
            if not md.get("finalizers") and not container:
                if kind.resource == "pods":
                    # graceful deletion with no kubelet to wait for, as the API server deletes a pod
                    # not on a node: marked first (MODIFIED, deletionGracePeriodSeconds 0), then gone
                    current = clone(current)
                    current["metadata"]["deletionTimestamp"] = now_rfc3339()
                    current["metadata"]["deletionGracePeriodSeconds"] = 0
                    self._store(kind, key, current, "MODIFIED")
                self._remove(kind, key, current)
                return
            marked = clone(current)
            marked["metadata"]["deletionTimestamp"] = now_rfc3339()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            if kind.resource == "namespaces" and isinstance(marked.get("status"), dict):
                marked["status"]["phase"] = "Terminating"
            self._store(kind, key, marked, "MODIFIED")
            if kind.resource == "namespaces":
                self._delete_namespace_contents(name)
            elif kind.resource == CRD_RESOURCE:
                self._delete_custom_resources(name)
            self._finish_deletion(kind, key)

    def bind(self, namespace: str, pod_name: str, node_name: str, pod_uid: str | None = None, *,
             annotations: dict[str, str] | None = None) -> None:
        if not isinstance(node_name, str) or not node_name:
            raise Invalid(f'Binding "{pod_name}" is invalid: target.name: Required value')
        with self._lock:
            pod = self._objects.get("pods", {}).get((namespace or "default", pod_name))
            if pod is None:
                raise NotFound(f'pods "{pod_name}" not found')
            md = pod["metadata"]
            if pod_uid and md.get("uid") != pod_uid:
                raise Conflict(
                    f'Operation cannot be fulfilled on pods/binding "{pod_name}": '
                    f"Precondition failed: UID in precondition: {pod_uid}, "
                    f"UID in object meta: {md.get('uid')}"
                )
            if md.get("deletionTimestamp"):
                raise Conflict(f'pod "{pod_name}" is being deleted, cannot be assigned to a host')
            spec = pod.get("spec") or {}
            bound = spec.get("nodeName")
            if bound:
                raise Conflict(
                    f'Operation cannot be fulfilled on pods/binding "{pod_name}": '
                    f'pod {pod_name} is already assigned to node "{bound}"'
                )
            if spec.get("schedulingGates"):
                raise Conflict(f"pod {pod_name} has non-empty .spec.schedulingGates and cannot be bound")
            new = clone(pod)
            new["spec"]["nodeName"] = node_name
            if annotations:
                new["metadata"]["annotations"] = {**(new["metadata"].get("annotations") or {}), **annotations}
            status = new.get("status")
            if not isinstance(status, dict):
                status = new["status"] = {}
            conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conds.append(
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": now_rfc3339(),
                }
            )
            status["conditions"] = conds
            self._store(self.kinds.get("pods"), (md["namespace"], pod_name), new, "MODIFIED")

    # -- internals -----------------------------------------------------------------------------

    def _key(self, kind: ResourceKind, name: str, namespace: str | None) -> _Key:
        if kind.namespaced:
            return (namespace or "default", name)
        return ("", name)

    def _check_namespace(self, kind: ResourceKind, md: dict, restore: bool) -> bool:
        """Refuse an object in a missing (404) or terminating (403) namespace; on restore a missing
        namespace is fine and True says it is to be created once the object is accepted."""
        ns = md.get("namespace") or "default"
        if not isinstance(ns, str):
            raise Invalid(f"{kind.kind} {md.get('name')!r}: metadata.namespace must be a string, got {ns!r}")
        md["namespace"] = ns
        ns_obj = self._objects.get("namespaces", {}).get(("", ns))
        if ns_obj is None:
            if not restore:
                raise NotFound(f'namespaces "{ns}" not found')
            validate_name(self.kinds.get("namespaces"), ns)
            return True
        if ns_obj["metadata"].get("deletionTimestamp") and not restore:
            raise Forbidden(
                f'{kind.resource} "{md.get("name") or md.get("generateName")}" is forbidden: unable to '
                f"create new content in namespace {ns} because it is being terminated"
            )
        return False

    def _has_generation(self, kind: ResourceKind) -> bool:
        """Whether objects of ``kind`` carry ``metadata.generation``: custom resources and the
        built-in kinds whose registry strategy sets it (not Nodes, ResourceClaims, Leases...)."""
        return kind.resource in _GENERATION_RESOURCES or kind.resource in self._crd_resources

    def _check_admin_access(self, kind: ResourceKind, obj: dict) -> None:
        """As the API server refuses a new ResourceClaim (or template) asking for ``adminAccess``
        in a namespace without the label ``resource.kubernetes.io/admin-access: true``."""
        if kind.resource == "resourceclaims.resource.k8s.io":
            spec = obj.get("spec")
        elif kind.resource == "resourceclaimtemplates.resource.k8s.io":
            spec = (obj.get("spec") or {}).get("spec") if isinstance(obj.get("spec"), dict) else None
        else:
            return
        devices = spec.get("devices") if isinstance(spec, dict) else None
        requests = devices.get("requests") if isinstance(devices, dict) else None
        admin = [i for i, r in enumerate(requests if isinstance(requests, list) else [])
                 if isinstance(r, dict) and isinstance(r.get("exactly"), dict)
                 and r["exactly"].get("adminAccess") is True]
        if not admin:
            return
        md = obj["metadata"]
        ns_obj = self._objects.get("namespaces", {}).get(("", md.get("namespace")))
        labels = (ns_obj or {}).get("metadata", {}).get("labels") or {}
        if labels.get(ADMIN_ACCESS_LABEL) != "true":
            raise Invalid(
                f'{kind.kind}.{kind.group} "{md.get("name")}" is invalid: '
                f"spec.devices.requests[{admin[0]}].adminAccess: Forbidden: admin access to devices requires "
                f"the `{ADMIN_ACCESS_LABEL}: true` label on the containing namespace"
            )

    def _check_admin_access_status(self, new: dict, old: dict) -> None:
        """As the API server refuses a claim status granting ``adminAccess`` in a namespace without
        the admin-access label (unless the allocation already granted it)."""
        def admin(claim: dict) -> int | None:
            alloc = (claim.get("status") or {}).get("allocation") if isinstance(claim.get("status"), dict) else None
            devices = alloc.get("devices") if isinstance(alloc, dict) else None
            results = devices.get("results") if isinstance(devices, dict) else None
            return next((i for i, r in enumerate(results if isinstance(results, list) else [])
                         if isinstance(r, dict) and r.get("adminAccess") is True), None)

        i = admin(new)
        if i is None or admin(old) is not None:
            return
        md = new["metadata"]
        ns_obj = self._objects.get("namespaces", {}).get(("", md.get("namespace")))
        if ((ns_obj or {}).get("metadata", {}).get("labels") or {}).get(ADMIN_ACCESS_LABEL) != "true":
            raise Invalid(
                f'ResourceClaim.resource.k8s.io "{md.get("name")}" is invalid: '
                f"status.allocation.devices.results[{i}].adminAccess: Forbidden: admin access to devices requires "
                f"the `{ADMIN_ACCESS_LABEL}: true` label on the containing namespace"
            )

    def _priority_classes(self) -> dict[str, dict]:
        return {name: pc for (_ns, name), pc in self._objects.get(_priority.RESOURCE, {}).items()}

    def _admit_new(self, kind: ResourceKind, obj: dict, restore: bool) -> None:
        """The Priority admission plugin on a create: a pod's priority from its PriorityClass, one
        globalDefault class at most. A restore over a stored object is an update."""
        if kind.resource not in ("pods", _priority.RESOURCE):
            return
        name = obj["metadata"].get("name")
        existing = None
        if restore and isinstance(name, str) and name:
            existing = self._objects.get(kind.resource, {}).get(self._key(kind, name, obj["metadata"].get("namespace")))
        if existing is not None:
            self._admit_update(kind, obj, existing)
        elif kind.resource == "pods":
            _priority.admit_pod(obj, self._priority_classes(), keep_given=restore)
        else:
            _priority.admit_priority_class(obj, self._priority_classes().values())

    def _admit_update(self, kind: ResourceKind, new: dict, current: dict) -> None:
        if kind.resource == "pods":
            _priority.keep_pod_priority(current, new)
        elif kind.resource == _priority.RESOURCE:
            _priority.admit_priority_class(new, self._priority_classes().values())

    def _write_new(self, obj: dict, restore: bool) -> dict:
        kind = self.kinds.for_object(obj)
        obj = _convert(kind, obj)
        md = obj.get("metadata")
        if md is None:
            md = obj["metadata"] = {}
        if not isinstance(md, dict):
            raise Invalid(f"{kind.kind}: metadata must be a mapping, got {type(md).__name__}")
        with self._lock:
            new_namespace = False
            if kind.namespaced:
                new_namespace = self._check_namespace(kind, md, restore)
            else:
                md.pop("namespace", None)
            self._admit_new(kind, obj, restore)
            if not md.get("name"):
                prefix = md.get("generateName")
                if not prefix or not isinstance(prefix, str):
                    raise Invalid(f"{kind.kind}: metadata.name or metadata.generateName is required")
                for _ in range(8):
                    md["name"] = prefix + random_suffix()
                    if self._key(kind, md["name"], md.get("namespace")) not in self._objects.get(
                        kind.resource, {}
                    ):
                        break
            validate_name(kind, md["name"])
            if not restore:
                self._check_admin_access(kind, obj)
            self._check_crd_not_terminating(kind)
            key = self._key(kind, md["name"], md.get("namespace"))
            existing = self._objects.get(kind.resource, {}).get(key)
            if existing is not None and not restore:
                raise AlreadyExists(f'{kind.resource} "{md["name"]}" already exists')
            if restore:
                old_md = existing["metadata"] if existing is not None else {}
                md.setdefault("uid", old_md.get("uid") or _new_uid())
                md.setdefault("creationTimestamp", old_md.get("creationTimestamp") or now_rfc3339())
                if self._has_generation(kind):
                    md.setdefault("generation", old_md.get("generation", 1))
            else:
                md["uid"] = _new_uid()
                md["creationTimestamp"] = now_rfc3339()
                md.pop("generation", None)
                if self._has_generation(kind):
                    md["generation"] = 1
                for f in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
                    md.pop(f, None)
                _defaults.prepare_for_create(kind, obj, is_custom=kind.resource in self._crd_resources)
            obj = self._default_and_validate(kind, obj, old=None)
            if kind.resource == CRD_RESOURCE:
                self.serve_crd(obj)
            given_rv = obj["metadata"].get("resourceVersion") if restore else None
            if existing is not None and _same_object(existing, obj, given_rv):
                return existing  # re-applying an unchanged object is not a write
            if new_namespace:
                namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": md["namespace"]}}
                self._write_new(namespace, restore=False)
            self._store(kind, key, obj, "MODIFIED" if existing is not None else "ADDED", given_rv)
            if existing is not None and existing["metadata"]["uid"] != obj["metadata"]["uid"]:
                # replaced by an object with another uid: the old object's dependents lost their owner
                self._collect_dependents(existing["metadata"]["uid"])
            if not restore and self._owners_all_gone(obj):
                self._collect(kind.resource, key)  # what the garbage collector does soon after
            return obj

    def _write_existing(self, obj: dict, status_only: bool) -> dict:
        kind = self.kinds.for_object(obj)
        obj = _convert(kind, obj)
        md = obj.get("metadata")
        if not isinstance(md, dict) or not md.get("name") or not isinstance(md.get("name"), str):
            raise Invalid(f"{kind.kind}: metadata.name is required")
        name = md["name"]
        if status_only and not kind.has_status:
            raise NotFound(f"the server could not find the requested resource ({kind.resource}/status)")
        with self._lock:
            key = self._key(kind, name, md.get("namespace"))
            current = self._objects.get(kind.resource, {}).get(key)
            if current is None:
                raise NotFound(f'{kind.resource} "{name}" not found')
            cur_md = current["metadata"]
            want_rv = md.get("resourceVersion")
            if want_rv and str(want_rv) != cur_md["resourceVersion"]:
                raise Conflict(
                    f'Operation cannot be fulfilled on {kind.resource} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again"
                )
            if md.get("uid") and md["uid"] != cur_md["uid"]:
                raise Conflict(
                    f'Operation cannot be fulfilled on {kind.resource} "{name}": Precondition failed: '
                    f"UID in precondition: {md['uid']}, UID in object meta: {cur_md['uid']}"
                )
            if status_only:
                # the stored object but its status, which the request's replaces (never copied)
                new = clone({k: v for k, v in current.items() if k != "status"})
                if "status" in obj:
                    new["status"] = obj["status"]
            else:
                new = obj
                new_md = new["metadata"]
                for f in _SYSTEM_FIELDS:
                    if f in cur_md:
                        new_md[f] = cur_md[f]
                    else:
                        new_md.pop(f, None)
                if kind.namespaced:
                    new_md["namespace"] = cur_md["namespace"]
                if kind.has_status:
                    if "status" in current:
                        new["status"] = current["status"]
                    else:
                        new.pop("status", None)
            new["metadata"]["resourceVersion"] = cur_md["resourceVersion"]
            if not status_only:
                self._admit_update(kind, new, current)
            new = self._default_and_validate(kind, new, old=current, status_only=status_only)
            if status_only and kind.resource == "resourceclaims.resource.k8s.io":
                self._check_admin_access_status(new, current)
            new_md = new["metadata"]
            if cur_md.get("deletionTimestamp"):
                added = set(new_md.get("finalizers") or []) - set(cur_md.get("finalizers") or [])
                if added:
                    raise Forbidden(
                        f'{kind.resource} "{name}" is forbidden: no new finalizers can be added if the '
                        "object is being deleted"
                    )
            new_md.pop("generation", None)
            if self._has_generation(kind):
                new_md["generation"] = cur_md.get("generation", 1)
                if not status_only and _spec_of(new) != _spec_of(current):
                    new_md["generation"] += 1
            if new == current:
                return current  # nothing changed: no new resourceVersion, no event
            if kind.resource == CRD_RESOURCE and not status_only:
                self.serve_crd(new)
            if new_md.get("deletionTimestamp") and self._deletion_done(kind, key, new):
                self._remove(kind, key, new)
                return new
            self._store(kind, key, new, "MODIFIED")
            return new

    def _default_and_validate(self, kind: ResourceKind, obj: dict, old: dict | None,
                              status_only: bool = False) -> dict:
        """API defaulting then validation (of the status alone for a status write of a kind that
        says how); an object of an unexpected shape is refused by name, never with a traceback."""
        try:
            obj = _defaults.apply(kind, obj)
            if kind.defaults is not None:
                obj = kind.defaults(obj)
            validate_metadata(kind, obj)
            validate = kind.validate_status if status_only and kind.validate_status is not None else kind.validate
            if validate is not None:
                validate(obj)
            if old is not None and kind.validate_update is not None:
                kind.validate_update(old, obj)
        except ApiError:
            raise
        except (TypeError, AttributeError, KeyError, ValueError, IndexError) as exc:
            md = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
            where = _ref(kind, str(md.get("name") or md.get("generateName")), md.get("namespace"))
            raise Invalid(f"{where} is invalid: unexpected structure ({type(exc).__name__}: {exc})") from exc
        return obj

    def _store(self, kind: ResourceKind, key: _Key, obj: dict, event: str, rv: str | None = None) -> None:
        at = self._events.next_version  # where this write's event goes in the log
        if rv is not None and str(rv).isdigit() and int(rv) > 0:
            # a restored object keeps its resourceVersion; later writes continue above it. The event
            # log must stay in order, so an event for a version at or below the current one gets a new
            # position (its object still carries the version it was given).
            obj["metadata"]["resourceVersion"] = str(int(rv))
            at = max(at, int(rv))
        else:
            obj["metadata"]["resourceVersion"] = str(at)
        bucket = self._objects.setdefault(kind.resource, {})
        old = bucket.get(key)
        if old is not None:
            self._unindex(kind, key, old)
        elif kind.namespaced:
            self._ns_count[key[0]] = self._ns_count.get(key[0], 0) + 1
        bucket[key] = obj
        self._index(kind, key, obj)
        self.writes += 1
        self._emit(event, kind.resource, obj, at)

    def _emit(self, typ: str, resource: str, obj: dict, at: int) -> None:
        self._events.append(typ, resource, obj, at)
        self._changed.notify_all()

    def _remove(self, kind: ResourceKind, key: _Key, obj: dict) -> None:
        bucket = self._objects.get(kind.resource, {})
        old = bucket.pop(key, None)
        if old is None:
            return
        self._unindex(kind, key, old)
        if kind.namespaced:
            self._ns_count[key[0]] = self._ns_count.get(key[0], 1) - 1
        gone = clone(obj)
        at = self._events.next_version
        gone["metadata"]["resourceVersion"] = str(at)
        self.writes += 1
        self._emit("DELETED", kind.resource, gone, at)
        self._collect_dependents(old["metadata"].get("uid"))
        if kind.resource == CRD_RESOURCE:
            served = self._crd_kinds.pop(key[1], None)
            if served is not None:
                self._crd_resources = frozenset(self._crd_kinds.values())
                self.kinds.remove(served)
                self._objects.pop(served, None)
        if kind.namespaced:
            ns_kind = self.kinds.get("namespaces")
            self._finish_deletion(ns_kind, ("", key[0]))
        crd = self._crd_of(kind.resource)
        if crd is not None:
            self._finish_deletion(self.kinds.get(CRD_RESOURCE), ("", crd))

    def _deletion_done(self, kind: ResourceKind, key: _Key, obj: dict) -> bool:
        """Whether an object being deleted may go: no finalizers left and, for a namespace or a CRD,
        nothing left in it."""
        if obj["metadata"].get("finalizers"):
            return False
        if kind.resource == "namespaces":
            return self._ns_count.get(key[1], 0) == 0
        if kind.resource == CRD_RESOURCE:
            served = self._crd_kinds.get(key[1])
            return not (served and self._objects.get(served))
        return True

    def _finish_deletion(self, kind: ResourceKind, key: _Key) -> None:
        current = self._objects.get(kind.resource, {}).get(key)
        if current is not None and current["metadata"].get("deletionTimestamp"):
            if self._deletion_done(kind, key, current):
                self._remove(kind, key, current)

    def _crd_of(self, resource: str) -> str | None:
        for crd_name, served in self._crd_kinds.items():
            if served == resource:
                return crd_name
        return None

    def _check_crd_not_terminating(self, kind: ResourceKind) -> None:
        crd = self._crd_of(kind.resource)
        if crd is None:
            return
        crd_obj = self._objects.get(CRD_RESOURCE, {}).get(("", crd))
        if crd_obj is not None and crd_obj["metadata"].get("deletionTimestamp"):
            raise MethodNotAllowed(
                f"create not allowed while custom resource definition {crd} is terminating"
            )

    def _index(self, kind: ResourceKind, key: _Key, obj: dict) -> None:
        uid = obj["metadata"].get("uid")
        if uid:
            self._uids[uid] = self._uids.get(uid, 0) + 1
        for o in obj["metadata"].get("ownerReferences") or []:
            if o.get("uid"):
                self._owned.setdefault(o["uid"], set()).add((kind.resource, key[0], key[1]))

    def _unindex(self, kind: ResourceKind, key: _Key, obj: dict) -> None:
        uid = obj["metadata"].get("uid")
        if uid and uid in self._uids:
            self._uids[uid] -= 1
            if self._uids[uid] <= 0:
                del self._uids[uid]
        for o in obj["metadata"].get("ownerReferences") or []:
            deps = self._owned.get(o.get("uid", ""))
            if deps is not None:
                deps.discard((kind.resource, key[0], key[1]))
                if not deps:
                    del self._owned[o["uid"]]

    def _owners_all_gone(self, obj: dict) -> bool:
        """True when ``obj`` has owners, every one of a kind the cluster serves, and none exists."""
        owners = obj["metadata"].get("ownerReferences") or []
        if not owners:
            return False
        for o in owners:
            try:
                self.kinds.for_object({"apiVersion": o.get("apiVersion"), "kind": o.get("kind")})
            except UnknownKind:
                return False  # an owner of a kind we do not run (a Job, an MPIJob): never collected
            if o.get("uid") in self._uids:
                return False
        return True

    def _collect(self, resource: str, key: _Key) -> None:
        try:
            self.delete(resource, key[1], key[0] or None)
        except (NotFound, UnknownKind):
            pass

    def _collect_dependents(self, uid: str | None) -> None:
        """Background garbage collection: dependents whose every owner is gone are deleted."""
        if not uid or uid in self._uids:
            return
        for resource, ns, name in sorted(self._owned.pop(uid, set())):
            dep = self._objects.get(resource, {}).get((ns, name))
            if dep is None:
                continue
            live = [o for o in dep["metadata"].get("ownerReferences") or [] if o.get("uid") in self._uids]
            if not live:
                self._collect(resource, (ns, name))

    def _delete_namespace_contents(self, namespace: str) -> None:
        for resource, bucket in list(self._objects.items()):
            for ns, name in [k for k in bucket if k[0] == namespace]:
                self._collect(resource, (ns, name))

    def _delete_custom_resources(self, crd_name: str) -> None:
        served = self._crd_kinds.get(crd_name)
        for ns, name in list(self._objects.get(served, {})) if served else []:
            self._collect(served, (ns, name))

    # -- whole-state helpers -------------------------------------------------------------------

    def all_objects(self) -> list[dict]:
        """Every stored object (copies), in a stable order: kinds by dependency, then namespace/name."""
        with self._lock:
            out = []
            for kind in sorted(self.kinds, key=_save_order):
                for key in sorted(self._objects.get(kind.resource, {})):
                    out.append(clone(self._objects[kind.resource][key]))
            return out


_SAVE_FIRST = [
    "customresourcedefinitions.apiextensions.k8s.io",
    "namespaces",
    "priorityclasses.scheduling.k8s.io",  # before the pods that name them
    "deviceclasses.resource.k8s.io",
    "nodes",
    "resourceslices.resource.k8s.io",
]


def _save_order(kind: ResourceKind) -> tuple[int, str]:
    try:
        return (_SAVE_FIRST.index(kind.resource), kind.resource)
    except ValueError:
        return (len(_SAVE_FIRST), kind.resource)


def _sort_key(o: dict) -> tuple[str, str]:
    return (o["metadata"].get("namespace", ""), o["metadata"]["name"])


def _new_uid() -> str:
    """A random (version 4) UUID, as the API server gives every object. Not for secrets: from
    ``random`` (reseeded in a forked child), several times cheaper than uuid.uuid4() on a path
    that runs for every create."""
    bits = (random.getrandbits(128) & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _status_part(obj: dict) -> dict:
    """What a write of the status subresource takes from its request (the rest comes from the
    stored object): the status, and the metadata for its preconditions. Not a copy."""
    return {k: obj[k] for k in ("apiVersion", "kind", "metadata", "status") if k in obj}


def _copy_in(obj) -> dict:
    if not isinstance(obj, dict):
        raise BadRequest(f"an object must be a mapping, got {type(obj).__name__}")
    return clone(obj)


def _same_shape(obj: dict) -> dict:
    return obj


def _spec_of(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _same_object(existing: dict, new: dict, given_rv) -> bool:
    """Whether restoring ``new`` over ``existing`` would change nothing."""
    candidate = dict(new)
    candidate["metadata"] = {**new["metadata"], "resourceVersion": existing["metadata"]["resourceVersion"]}
    if given_rv is not None and str(given_rv) != existing["metadata"]["resourceVersion"]:
        return False
    return candidate == existing


def _convert(kind: ResourceKind, obj: dict) -> dict:
    _group, _, version = obj.get("apiVersion", "").rpartition("/")
    if version != kind.version:
        obj = kind.convert_from[version](obj)
        obj["apiVersion"] = kind.api_version
    return obj


def _crd_validate(validator) -> Callable[[dict], None]:
    def validate(obj: dict) -> None:
        errors = validator.errors(obj)
        if errors:
            md = obj.get("metadata") or {}
            where = f"{md.get('namespace')}/{md.get('name')}" if md.get("namespace") else md.get("name")
            raise Invalid(f"{validator.kind} {where!s} is invalid: " + "; ".join(errors))

    return validate


def _validate_crd(obj: dict) -> None:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    name = (obj.get("metadata") or {}).get("name", "")
    names = spec.get("names") if isinstance(spec.get("names"), dict) else {}
    if not spec.get("group") or not names.get("plural") or not names.get("kind") or not spec.get("versions"):
        raise Invalid(
            f"CustomResourceDefinition {name!r} is invalid: "
            "spec.group, spec.names and spec.versions are required"
        )
    if "." not in str(spec["group"]):
        raise Invalid(f"CustomResourceDefinition {name!r} is invalid: spec.group must contain a dot")
    if name != f"{names['plural']}.{spec['group']}":
        raise Invalid(
            f"CustomResourceDefinition {name!r} is invalid: "
            'metadata.name must be spec.names.plural+"."+spec.group'
        )
