"""An in-process cluster store with the Kubernetes API server's semantics that matter to a scheduler.

What it does as the API server does: uids, ``generateName``, a resourceVersion on every write, 409 on
a stale update or a duplicate create, 404s, the status subresource (``update`` keeps the status,
``update_status`` keeps everything else), ``generation`` bumped on spec changes, watch events with
410 once history is compacted, label and field selectors, finalizers and ``deletionTimestamp``,
ownerReference garbage collection (background), namespace lifecycle, pods/binding, API defaulting
(``schedulerName: default-scheduler``, DRA ``allocationMode``/``count``, quantities as strings) and
validation (kinds nobody serves, CRD schemas, CEL selectors compiled on create).

What it leaves out on purpose: pods are deleted at once (there is no kubelet to honour a grace
period), and admission webhooks other than the validation above do not exist.

Stored objects are never mutated in place: every write stores a new dict, so watch events and the
cache may hold references without copying. Callers of ``get``/``list`` receive copies.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from kai_core import defaults as _defaults
from kai_core.errors import AlreadyExists, BadRequest, Conflict, Gone, Invalid, NotFound
from kai_core.kinds import KindRegistry, ResourceKind, builtin_kinds
from kai_core.objects import (
    clone,
    now_rfc3339,
    parse_field_selector,
    parse_label_selector,
    random_suffix,
)
from kai_core.store.base import Store, WatchEvent
from kai_core.validation import validate_name

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
CRD_RESOURCE = "customresourcedefinitions.apiextensions.k8s.io"
_Key = tuple[str, str]  # (namespace, name)


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch; returns a new value."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = clone(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


class EmbeddedStore(Store):
    """The embedded cluster's API server. Thread-safe; every method is one atomic API call.

    ``history`` bounds the watch event log: a watch from an older resourceVersion gets 410 Gone.
    """

    def __init__(self, kinds: Iterable[ResourceKind] | None = None, history: int = 500_000) -> None:
        self.kinds = KindRegistry(builtin_kinds() if kinds is None else kinds)
        self._objects: dict[str, dict[_Key, dict]] = {}
        self._rv = 0
        self._log: deque[WatchEvent] = deque(maxlen=history)
        self._compacted_rv = 0
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._owned: dict[str, set[tuple[str, str, str]]] = {}  # owner uid -> dependents
        self._uids: set[str] = set()
        self.writes = 0
        self._register_crd_kind()
        for ns in DEFAULT_NAMESPACES:
            self._write_new({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, restore=False)

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
        """Serve the custom resource a CRD describes (what the API server does once a CRD is created)."""
        from kai_core.schema import CrdValidator

        try:
            validator = CrdValidator(crd)
        except Exception as exc:  # a CRD whose schema cannot be compiled is refused, naming it
            raise Invalid(f"CustomResourceDefinition {crd.get('metadata', {}).get('name')!r}: {exc}") from exc
        kind = ResourceKind(
            validator.group,
            validator.versions[0] if len(validator.versions) == 1 else _storage_version(crd),
            validator.kind,
            validator.plural,
            validator.namespaced,
            has_status=validator.has_status,
            short_names=tuple(validator.short_names),
            singular=validator.singular,
            validate=_crd_validate(validator),
            defaults=validator.apply_defaults,
        )
        with self._lock:
            self.kinds.add(kind)
        return kind

    # -- reads ---------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict:
        kind = self.kinds.get(resource)
        with self._lock:
            obj = self._objects.get(resource, {}).get(self._key(kind, name, namespace))
        if obj is None:
            raise NotFound(f'{kind.resource} "{name}" not found')
        return clone(obj)

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
        """Like ``list`` but returns the stored objects themselves: callers must not mutate them."""
        kind = self.kinds.get(resource)
        labels_ok = parse_label_selector(label_selector)
        fields_ok = parse_field_selector(field_selector)
        with self._lock:
            objs = list(self._objects.get(resource, {}).values())
            rv = str(self._rv)
        out = []
        for o in objs:
            md = o["metadata"]
            if namespace and kind.namespaced and md.get("namespace") != namespace:
                continue
            if label_selector and not labels_ok(md.get("labels") or {}):
                continue
            if field_selector and not fields_ok(o):
                continue
            out.append(o)
        out.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return out, rv

    def events_since(
        self, resource_version: int, resources: set[str] | None = None
    ) -> tuple[list[WatchEvent], int]:
        """Every event after ``resource_version`` (objects by reference; Gone if compacted), and
        the store's resourceVersion at the time of reading, from which the next call can go on."""
        with self._lock:
            if resource_version < self._compacted_rv:
                raise Gone(f"too old resource version: {resource_version} ({self._compacted_rv})")
            out = []
            for ev in reversed(self._log):
                if int(ev.resource_version) <= resource_version:
                    break
                if resources is None or ev.resource in resources:
                    out.append(ev)
            now = self._rv
        out.reverse()
        return out, now

    def watch(
        self, resource: str, resource_version: str, timeout: float | None = None
    ) -> Iterator[WatchEvent]:
        self.kinds.get(resource)
        rv = int(resource_version or 0)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            events, _ = self.events_since(rv, {resource})
            for ev in events:
                rv = int(ev.resource_version)
                yield WatchEvent(ev.type, ev.resource, clone(ev.object), ev.resource_version)
            with self._lock:
                if self._rv == rv or not events:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return
                    self._changed.wait(remaining if remaining is not None else 1.0)

    # -- writes --------------------------------------------------------------------------------

    def create(self, obj: dict) -> dict:
        return clone(self._write_new(clone(obj), restore=False))

    def restore(self, obj: dict) -> dict:
        """Put an object as a manifest or saved state gives it: uid, resourceVersion, status kept.

        An object that already exists is replaced (``kubectl apply`` of a whole object).
        """
        return clone(self._write_new(clone(obj), restore=True))

    def update(self, obj: dict) -> dict:
        return clone(self._write_existing(clone(obj), status_only=False))

    def update_status(self, obj: dict) -> dict:
        return clone(self._write_existing(clone(obj), status_only=True))

    def patch(
        self, resource: str, name: str, namespace: str | None, patch: dict, subresource: str | None = None
    ) -> dict:
        if not isinstance(patch, dict):
            raise BadRequest("a merge patch must be a JSON object")
        with self._lock:
            current = self.get(resource, name, namespace)
            want_rv = (patch.get("metadata") or {}).get("resourceVersion")
            merged = merge_patch(current, patch)
            if want_rv is None:
                merged["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return clone(self._write_existing(merged, status_only=subresource == "status"))

    def delete(self, resource: str, name: str, namespace: str | None = None) -> None:
        with self._lock:
            kind = self.kinds.get(resource)
            key = self._key(kind, name, namespace)
            current = self._objects.get(resource, {}).get(key)
            if current is None:
                raise NotFound(f'{kind.resource} "{name}" not found')
            md = current["metadata"]
            if md.get("finalizers"):
                if not md.get("deletionTimestamp"):
                    marked = clone(current)
                    marked["metadata"]["deletionTimestamp"] = now_rfc3339()
                    marked["metadata"]["deletionGracePeriodSeconds"] = 0
                    self._store(kind, key, marked, "MODIFIED")
                return
            self._remove(kind, key, current)

    def bind(self, namespace: str, pod_name: str, node_name: str, pod_uid: str | None = None) -> None:
        with self._lock:
            pod = self._objects.get("pods", {}).get((namespace, pod_name))
            if pod is None:
                raise NotFound(f'pods "{pod_name}" not found')
            if pod_uid and pod["metadata"].get("uid") != pod_uid:
                raise Conflict(
                    f'Operation cannot be fulfilled on pods/binding "{pod_name}": '
                    f"Precondition failed: UID in precondition: {pod_uid}, UID in object meta: "
                    f"{pod['metadata'].get('uid')}"
                )
            if pod["metadata"].get("deletionTimestamp"):
                raise Conflict(f'pod "{pod_name}" is being deleted, cannot be assigned to a host')
            bound = pod.get("spec", {}).get("nodeName")
            if bound:
                raise Conflict(
                    f'Operation cannot be fulfilled on pods/binding "{pod_name}": '
                    f"pod {pod_name} is already assigned to node \"{bound}\""
                )
            new = clone(pod)
            new["spec"]["nodeName"] = node_name
            status = new.setdefault("status", {})
            conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                          "lastTransitionTime": now_rfc3339()})
            status["conditions"] = conds
            self._store(self.kinds.get("pods"), (namespace, pod_name), new, "MODIFIED")

    # -- internals -----------------------------------------------------------------------------

    def _key(self, kind: ResourceKind, name: str, namespace: str | None) -> _Key:
        if kind.namespaced:
            return (namespace or "default", name)
        return ("", name)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _write_new(self, obj: dict, restore: bool) -> dict:
        if not isinstance(obj, dict):
            raise BadRequest("object must be a mapping")
        kind = self.kinds.for_object(obj)
        obj = _convert(kind, obj)
        md = obj.setdefault("metadata", {})
        if not isinstance(md, dict):
            raise Invalid(f"{kind.kind}: metadata must be a mapping")
        with self._lock:
            if kind.namespaced:
                md["namespace"] = md.get("namespace") or "default"
                if ("", md["namespace"]) not in self._objects.get("namespaces", {}) and not restore:
                    raise NotFound(f'namespaces "{md["namespace"]}" not found')
            else:
                md.pop("namespace", None)
            if not md.get("name"):
                prefix = md.get("generateName")
                if not prefix:
                    raise Invalid(f"{kind.kind}: metadata.name or metadata.generateName is required")
                for _ in range(8):
                    md["name"] = prefix + random_suffix()
                    if self._key(kind, md["name"], md.get("namespace")) not in self._objects.get(
                        kind.resource, {}
                    ):
                        break
            validate_name(kind, md["name"])
            key = self._key(kind, md["name"], md.get("namespace"))
            existing = self._objects.get(kind.resource, {}).get(key)
            if existing is not None and not restore:
                raise AlreadyExists(f'{kind.resource} "{md["name"]}" already exists')
            if restore:
                md.setdefault("uid", existing["metadata"]["uid"] if existing else str(uuid.uuid4()))
                md.setdefault("creationTimestamp", now_rfc3339())
                md.setdefault("generation", 1)
            else:
                md["uid"] = str(uuid.uuid4())
                md["creationTimestamp"] = now_rfc3339()
                md["generation"] = 1
                for f in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
                    md.pop(f, None)
                if kind.has_status and kind.group not in ("",) and "status" in obj:
                    # custom resources with a status subresource ignore status on create
                    obj.pop("status")
            obj = _defaults.apply(kind, obj, restore=restore)
            if kind.defaults is not None:
                obj = kind.defaults(obj)
            if kind.validate is not None:
                kind.validate(obj)
            if kind.resource == CRD_RESOURCE:
                self.serve_crd(obj)
            given_rv = md.get("resourceVersion") if restore else None
            self._store(kind, key, obj, "MODIFIED" if existing is not None else "ADDED", given_rv)
            return obj

    def _write_existing(self, obj: dict, status_only: bool) -> dict:
        kind = self.kinds.for_object(obj)
        obj = _convert(kind, obj)
        md = obj.get("metadata") or {}
        name = md.get("name")
        if not name:
            raise Invalid(f"{kind.kind}: metadata.name is required")
        with self._lock:
            key = self._key(kind, name, md.get("namespace"))
            current = self._objects.get(kind.resource, {}).get(key)
            if current is None:
                raise NotFound(f'{kind.resource} "{name}" not found')
            cur_md = current["metadata"]
            want_rv = md.get("resourceVersion")
            if want_rv and want_rv != cur_md["resourceVersion"]:
                raise Conflict(
                    f'Operation cannot be fulfilled on {kind.resource} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again"
                )
            if md.get("uid") and md["uid"] != cur_md["uid"]:
                raise Conflict(f'{kind.resource} "{name}": uid precondition failed')
            if status_only:
                new = clone(current)
                if "status" in obj:
                    new["status"] = obj["status"]
                else:
                    new.pop("status", None)
            else:
                new = obj
                new_md = new["metadata"]
                for f in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
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
                new_md["generation"] = cur_md.get("generation", 1)
                if _spec_of(new) != _spec_of(current):
                    new_md["generation"] += 1
                if cur_md.get("deletionTimestamp"):
                    added = set(new_md.get("finalizers") or []) - set(cur_md.get("finalizers") or [])
                    if added:
                        raise Invalid(
                            f'{kind.resource} "{name}": no new finalizers can be added if the object is being '
                            "deleted"
                        )
            new = _defaults.apply(kind, new, restore=False)
            if kind.validate is not None:
                kind.validate(new)
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                self._remove(kind, key, new)
                return new
            self._store(kind, key, new, "MODIFIED")
            return new

    def _store(self, kind: ResourceKind, key: _Key, obj: dict, event: str, rv: str | None = None) -> None:
        if rv is not None and str(rv).isdigit():
            # a restored object keeps its resourceVersion; later writes continue above it
            self._rv = max(self._rv, int(rv))
        else:
            rv = self._next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        bucket = self._objects.setdefault(kind.resource, {})
        old = bucket.get(key)
        if old is not None:
            self._unindex(kind, key, old)
        bucket[key] = obj
        self._uids.add(obj["metadata"]["uid"])
        self._index(kind, key, obj)
        self.writes += 1
        self._emit(WatchEvent(event, kind.resource, obj, str(rv)))

    def _emit(self, ev: WatchEvent) -> None:
        if len(self._log) == self._log.maxlen and self._log:
            self._compacted_rv = int(self._log[0].resource_version)
        self._log.append(ev)
        self._changed.notify_all()

    def _remove(self, kind: ResourceKind, key: _Key, obj: dict) -> None:
        bucket = self._objects.get(kind.resource, {})
        old = bucket.pop(key, None)
        if old is not None:
            self._unindex(kind, key, old)
        self._uids.discard(obj["metadata"].get("uid"))
        gone = clone(obj)
        rv = self._next_rv()
        gone["metadata"]["resourceVersion"] = rv
        self.writes += 1
        self._emit(WatchEvent("DELETED", kind.resource, gone, rv))
        self._collect_dependents(obj["metadata"].get("uid"))
        if kind.resource == "namespaces":
            self._delete_namespace_contents(key[1])

    def _index(self, kind: ResourceKind, key: _Key, obj: dict) -> None:
        for o in obj["metadata"].get("ownerReferences") or []:
            if o.get("uid"):
                self._owned.setdefault(o["uid"], set()).add((kind.resource, key[0], key[1]))

    def _unindex(self, kind: ResourceKind, key: _Key, obj: dict) -> None:
        for o in obj["metadata"].get("ownerReferences") or []:
            deps = self._owned.get(o.get("uid", ""))
            if deps is not None:
                deps.discard((kind.resource, key[0], key[1]))
                if not deps:
                    del self._owned[o["uid"]]

    def _collect_dependents(self, uid: str | None) -> None:
        """Background garbage collection: dependents whose every owner is gone are deleted."""
        if not uid:
            return
        for resource, ns, name in sorted(self._owned.pop(uid, set())):
            dep = self._objects.get(resource, {}).get((ns, name))
            if dep is None:
                continue
            live = [o for o in dep["metadata"].get("ownerReferences") or [] if self._uid_exists(o.get("uid"))]
            if not live:
                try:
                    self.delete(resource, name, ns or None)
                except NotFound:
                    pass

    def _uid_exists(self, uid: str | None) -> bool:
        return bool(uid) and uid in self._uids

    def _delete_namespace_contents(self, namespace: str) -> None:
        for resource, bucket in list(self._objects.items()):
            for (ns, name) in [k for k in bucket if k[0] == namespace]:
                try:
                    self.delete(resource, name, ns)
                except NotFound:
                    pass

    # -- whole-state helpers -------------------------------------------------------------------

    def all_objects(self) -> list[dict]:
        """Every stored object (copies), in a stable order: kinds by dependency, then namespace/name."""
        with self._lock:
            out = []
            for kind in sorted(self.kinds, key=_save_order):
                for key in sorted(self._objects.get(kind.resource, {})):
                    out.append(clone(self._objects[kind.resource][key]))
            return out


_SAVE_FIRST = ["customresourcedefinitions.apiextensions.k8s.io", "namespaces", "deviceclasses.resource.k8s.io",
               "nodes", "resourceslices.resource.k8s.io"]


def _save_order(kind: ResourceKind) -> tuple[int, str]:
    try:
        return (_SAVE_FIRST.index(kind.resource), kind.resource)
    except ValueError:
        return (len(_SAVE_FIRST), kind.resource)


def _spec_of(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _convert(kind: ResourceKind, obj: dict) -> dict:
    group, _, version = obj.get("apiVersion", "").rpartition("/")
    if version != kind.version:
        obj = kind.convert_from[version](obj)
        obj["apiVersion"] = kind.api_version
    return obj


def _storage_version(crd: dict) -> str:
    for v in crd.get("spec", {}).get("versions") or []:
        if v.get("storage"):
            return v["name"]
    return crd["spec"]["versions"][0]["name"]


def _crd_validate(validator) -> Callable[[dict], None]:
    def validate(obj: dict) -> None:
        errors = validator.errors(obj)
        if errors:
            md = obj.get("metadata") or {}
            where = f"{md.get('namespace')}/{md.get('name')}" if md.get("namespace") else md.get("name")
            raise Invalid(f"{validator.kind} {where!s} is invalid: " + "; ".join(errors))

    return validate


def _validate_crd(obj: dict) -> None:
    spec = obj.get("spec") or {}
    name = (obj.get("metadata") or {}).get("name", "")
    names = spec.get("names") or {}
    if not spec.get("group") or not names.get("plural") or not names.get("kind") or not spec.get("versions"):
        raise Invalid(f"CustomResourceDefinition {name!r}: spec.group, spec.names and spec.versions are required")
    if name != f"{names['plural']}.{spec['group']}":
        raise Invalid(f"CustomResourceDefinition {name!r}: metadata.name must be spec.names.plural+\".\"+spec.group")
