"""What a real cluster serves, checked before the scheduler or the binder starts.

At start, :func:`discover` asks the API server (``/api``, ``/apis`` and the group versions
involved) whether

* the BindRequest kind (``scheduling.run.ai/v1alpha2``, our CRD from ``deploy/crds``) is served:
  without it neither component can do anything;
* with the ``DynamicResourceAllocation`` gate on, the DRA API (``resource.k8s.io``) is served, and
  at which version: ``v1`` (Kubernetes 1.34+), else ``v1beta2`` (1.33), else ``v1beta1``
  (1.32); and
* each plugin's kinds (``kai_resource_kinds``) are served: those that are get watched (read-only),
  the others are reported and left out;
* KAI's PodGroup kind (``scheduling.run.ai/v2alpha2``, our CRD from ``deploy/crds`` too) is served.
  It is optional: without it the scheduler runs without gang scheduling by PodGroup (the
  ``pod-group-name`` annotation is ignored; groups declared by plugins still work), and the kind is
  taken out of the store so that nothing tries to watch it (:attr:`ClusterApis.pod_groups`,
  :func:`pod_groups_missing_message`).

Everything missing that a component needs is reported in one :class:`MissingApiError` saying what
to install.

The scheduler and the binder work on ``resource.k8s.io/v1`` objects only. On a cluster serving an
older version, :class:`ServedVersionStore` (a :class:`~kai_core.client.store.KubernetesStore`)
addresses the DRA kinds at the served version and converts at the wire: what it reads (lists,
watch events, replies) is turned into ``v1`` before anyone sees it, and ``v1`` objects it writes
are turned back into the served version. ``v1beta2`` has ``v1``'s shape; ``v1beta1`` differs in
the claim requests (``exactly`` is flattened into the request) and in the slice devices (their
fields sit under ``basic``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from kai_core.api.conversion import FROM_V1, TO_V1
from kai_core.api.kinds import ResourceKind, builtin_kinds
from kai_core.api.resources import RES_POD_GROUPS, RES_QUEUES
from kai_core.client.store import KubernetesStore, kind_from_crd

log = logging.getLogger("kai.discovery")

DRA_GROUP = "resource.k8s.io"
#: resource.k8s.io versions we can work with, best first
DRA_VERSIONS = ("v1", "v1beta2", "v1beta1")
DRA_RESOURCES = ("deviceclasses", "resourceclaims", "resourceclaimtemplates", "resourceslices")
BIND_REQUEST_CRD_FILE = "deploy/crds/scheduling.run.ai_bindrequests.yaml"
POD_GROUP_CRD_FILE = "deploy/crds/scheduling.run.ai_podgroups.yaml"
SCHEDULING_GROUP = "scheduling.run.ai"
POD_GROUP_VERSION = "v2alpha2"
QUEUE_VERSION = "v2"


class MissingApiError(Exception):
    """The cluster does not serve an API a component needs; the message says what to install."""


@dataclass
class ClusterApis:
    """What :func:`discover` found."""

    #: group -> served versions, preferred first ("" is the core group)
    groups: dict[str, list[str]]
    #: the resource.k8s.io version in use (None with the DRA gate off)
    dra_version: str | None = None
    #: plugin name and kind, for the plugin kinds the cluster serves (watched read-only)
    plugin_kinds: list[tuple[str, ResourceKind]] = field(default_factory=list)
    #: plugin name and kind, for plugin kinds the cluster does not serve (not watched)
    unserved_plugin_kinds: list[tuple[str, ResourceKind]] = field(default_factory=list)
    #: whether KAI's PodGroups (podgroups.scheduling.run.ai/v2alpha2) are served; when not, gang
    #: scheduling by PodGroup is off (see :func:`pod_groups_missing_message`)
    pod_groups: bool = False
    #: whether KAI's Queues (queues.scheduling.run.ai/v2) are served; when not, every pod is in the
    #: default queue (no queue checks, no ordering by fair share)
    queues: bool = False


def served_dra_version(groups: Mapping[str, Iterable[str]]) -> str | None:
    """The best ``resource.k8s.io`` version among those served, or None."""
    served = set(groups.get(DRA_GROUP) or ())
    return next((v for v in DRA_VERSIONS if v in served), None)


def bind_request_missing_message(served_versions: Iterable[str] = ()) -> str:
    """What to say when BindRequests are not served."""
    have = sorted(served_versions)
    extra = f" (scheduling.run.ai serves only {', '.join(have)})" if have else ""
    return ("the cluster does not serve BindRequests (bindrequests.scheduling.run.ai/v1alpha2)" + extra
            + f": install the CRD with `kubectl apply -f {BIND_REQUEST_CRD_FILE}` from the kai repository "
            "(the Helm chart installs it too)")


def pod_groups_missing_message() -> str:
    """The warning for a cluster without KAI's PodGroup CRD: the scheduler runs on without it."""
    return (f"PodGroups not served by the cluster (podgroups.{SCHEDULING_GROUP}/{POD_GROUP_VERSION}): "
            "gang scheduling by PodGroup is off (the pod-group-name annotation is ignored and those pods "
            "are scheduled one by one); groups declared by plugins still work. To turn it on, install "
            f"the CRD with `kubectl apply -f {POD_GROUP_CRD_FILE}` from the kai repository (the Helm "
            "chart installs it too) and restart the scheduler")


def dra_missing_message() -> str:
    """What to say when the DRA gate is on and resource.k8s.io is not served."""
    return ("the DynamicResourceAllocation feature gate is on but the cluster does not serve the DRA API "
            f"({DRA_GROUP} {', '.join(DRA_VERSIONS)}): use Kubernetes 1.34 or newer (resource.k8s.io/v1, "
            "on by default), or on 1.32/1.33 enable the DynamicResourceAllocation feature gate and the "
            f"{DRA_GROUP}/v1beta1 (or v1beta2) API on the API server; or leave the gate off "
            "(pods with resource claims then stay pending)")


def discover(
    store: KubernetesStore, *, dra: bool, plugin_crds: Iterable[tuple[str, Mapping]] = ()
) -> ClusterApis:
    """Check what the cluster serves (see the module docstring) and prepare ``store`` for it: the
    DRA kinds at the served version (a :class:`ServedVersionStore` converts; a plain store must
    find ``v1``), the served plugin kinds made addressable, and the PodGroup kind removed when it
    is not served. Raises MissingApiError listing everything missing; API errors (unreachable
    server, 401) propagate."""
    groups = store.server_groups()
    problems: list[str] = []
    br_versions = groups.get(SCHEDULING_GROUP) or []
    served = "v1alpha2" in br_versions and "bindrequests" in _resources(store, SCHEDULING_GROUP, "v1alpha2")
    if not served:
        problems.append(bind_request_missing_message(br_versions))
    apis = ClusterApis(groups)
    apis.pod_groups = POD_GROUP_VERSION in br_versions and "podgroups" in _resources(
        store, SCHEDULING_GROUP, POD_GROUP_VERSION)
    if dra:
        version = served_dra_version(groups)
        if version is None:
            problems.append(dra_missing_message())
        else:
            missing = [r for r in DRA_RESOURCES if r not in _resources(store, DRA_GROUP, version)]
            if missing:
                problems.append(f"the cluster serves {DRA_GROUP}/{version} without {', '.join(missing)}: "
                                "its DRA API is incomplete (enable every DRA resource on the API server)")
            apis.dra_version = version
    if problems:
        raise MissingApiError("; ".join(problems))
    if apis.dra_version is not None and apis.dra_version != "v1":
        if not isinstance(store, ServedVersionStore):
            raise MissingApiError(f"the cluster serves {DRA_GROUP}/{apis.dra_version} only and this store "
                                  "cannot convert it (use kai_core.client.discovery.ServedVersionStore)")
        store.use_dra_version(apis.dra_version)
    if not apis.pod_groups:
        store.kinds.remove(RES_POD_GROUPS)  # a reflector on it would wait forever for its first list
    apis.queues = QUEUE_VERSION in br_versions and "queues" in _resources(store, SCHEDULING_GROUP, QUEUE_VERSION)
    if not apis.queues and RES_QUEUES in store.kinds:
        store.kinds.remove(RES_QUEUES)
    for plugin, crd in plugin_crds:
        try:
            kind = kind_from_crd(crd)
        except ValueError as exc:
            log.error("plugin %s: %s; its kind is not watched", plugin, exc)
            continue
        if kind.version in (groups.get(kind.group) or []) and kind.plural in _resources(
                store, kind.group, kind.version):
            store.add_kind(kind)
            apis.plugin_kinds.append((plugin, kind))
        else:
            apis.unserved_plugin_kinds.append((plugin, kind))
    return apis


def _resources(store: KubernetesStore, group: str, version: str) -> set[str]:
    """The resource names a group version serves (subresources left out); empty if not served."""
    from kai_core.api.errors import NotFound

    path = f"/apis/{group}/{version}" if group else "/api/v1"
    try:
        reply = store._request("GET", path, what=f"discover {path}") or {}
    except NotFound:
        return set()
    return {r.get("name") for r in reply.get("resources") or [] if "/" not in (r.get("name") or "/")}


def dra_kinds_at(version: str) -> list[ResourceKind]:
    """The DRA kinds addressed at ``version``: they accept ``v1`` objects (converted down when
    written); reading them back up is :class:`ServedVersionStore`'s business. Validation is the
    API server's."""
    if version not in DRA_VERSIONS:
        raise ValueError(f"{DRA_GROUP}/{version} is not a version kai can use ({', '.join(DRA_VERSIONS)})")
    out = []
    for k in builtin_kinds():
        if k.group != DRA_GROUP:
            continue
        if version == "v1":
            out.append(k)
            continue
        out.append(ResourceKind(
            k.group, version, k.kind, k.plural, k.namespaced, has_status=k.has_status,
            short_names=k.short_names, singular=k.singular, convert_from={"v1": FROM_V1[version][k.kind]},
            field_selectors=k.field_selectors,
        ))
    return out


def to_v1_converters(version: str) -> dict[str, Callable[[dict], dict]]:
    """resource -> converter of a ``version`` object into ``v1`` (in place), from the converters
    :func:`kai_core.api.kinds.builtin_kinds` declares for input."""
    if version == "v1":
        return {}
    return {k.resource: TO_V1[version][k.kind] for k in builtin_kinds() if k.group == DRA_GROUP}


class ServedVersionStore(KubernetesStore):
    """A :class:`KubernetesStore` that talks ``resource.k8s.io`` at the version the server
    serves and shows its callers ``v1`` objects only.

    Until :meth:`use_dra_version` is called it behaves exactly as its base class. Afterwards every
    object read of a DRA kind (list items, watch events, replies to writes) is converted to
    ``v1`` once, as it arrives, before the reflectors store it; writes convert ``v1`` objects to
    the served version through the kinds' ``convert_from``.
    """

    _to_v1: dict[str, Callable[[dict], dict]] = {}

    def use_dra_version(self, version: str) -> None:
        """Address the DRA kinds at ``version``; call it before their reflectors start."""
        started = [k.resource for k in dra_kinds_at(version) if k.resource in self._reflectors]
        if started:
            raise RuntimeError(
                f"use_dra_version({version!r}) after reflectors started for {', '.join(started)}")
        for kind in dra_kinds_at(version):
            self.kinds.add(kind)
        self._to_v1 = to_v1_converters(version)
        self.dra_version = version

    def _fill_type(self, kind: ResourceKind, obj: dict) -> dict:
        obj = super()._fill_type(kind, obj)
        up = self._to_v1.get(kind.resource)
        if up is not None and obj.get("apiVersion") == kind.api_version:
            converted = up(obj)
            if converted is not obj:  # converters work in place; keep the identity callers rely on
                obj.clear()
                obj.update(converted)
            obj["apiVersion"] = f"{DRA_GROUP}/v1"
        return obj
