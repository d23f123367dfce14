"""Which pod is on which node, as one cycle sees it: the view host ports, inter-pod affinity and
topology spread read.

A pod counts on a node when it is bound there (active: not Succeeded nor Failed), when its
BindRequest is in flight to it, or when this cycle assumed it there (a single pod committed
earlier, or a gang member placed while its gang is being tried). The view is built once per
snapshot, the first time a pod needs it (a cycle whose pods use none of these features never
builds it), then kept current by replaying :attr:`Snapshot.pod_changes` from the position it last
read: O(1) per decision, whatever the number of pods.

Indexes that only some pods need (pods by label, by owner, with host ports) are built on first use
and kept current from then on.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable

from kai_core.api.resources import is_active_pod

PodKey = tuple[str, str]

_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def placed_pods(snapshot) -> PlacedPods:
    """The snapshot's view, brought up to date with the cycle's decisions."""
    view = _VIEWS.get(snapshot)
    if view is None:
        view = _VIEWS[snapshot] = PlacedPods(snapshot)
    else:
        view.sync()
    return view


_ANY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def any_pod(snapshot, name: str, predicate: Callable[[dict], bool]) -> bool:
    """Whether some pod of the snapshot, placed or not, satisfies ``predicate`` (cached per snapshot
    under ``name``): a pass over the pods' specs, much cheaper than building the view, that lets a
    plugin skip it in a cycle where no pod uses its feature. Pods placed during the cycle are pods
    of the snapshot, so the answer holds for the whole cycle."""
    answers = _ANY.get(snapshot)
    if answers is None:
        answers = _ANY[snapshot] = {}
    got = answers.get(name)
    if got is None:
        got = answers[name] = any(predicate(p) for p in snapshot.pods.values())
    return got


def pod_key(pod: dict) -> PodKey:
    md = pod["metadata"]
    return (md.get("namespace", ""), md.get("name", ""))


def pod_labels(pod: dict) -> dict:
    labels = pod["metadata"].get("labels")
    return labels if isinstance(labels, dict) else {}


class PlacedPods:
    """Pods on nodes (see the module docstring). Read-only for plugins."""

    def __init__(self, snapshot) -> None:
        self._snap = snapshot
        #: pod key -> (pod, node name)
        self.where: dict[PodKey, tuple[dict, str]] = {}
        #: node name -> {pod key: pod}
        self.by_node: dict[str, dict[PodKey, dict]] = {}
        #: optional indexes: name -> (key function of a pod giving index keys, {index key: {pod key: pod}})
        self._indexes: dict[str, tuple[Callable[[dict], Iterable], dict]] = {}
        #: plugins' per-cycle memos (parsed terms of placed pods, ...), by the plugin's own keys
        self.cache: dict = {}
        known = snapshot.node_by_name
        for key, pod in snapshot.pods.items():
            spec = pod.get("spec")
            node = spec.get("nodeName") if isinstance(spec, dict) else None
            if node and node in known and is_active_pod(pod) and key not in snapshot.evicted:
                self._add(key, pod, node)
        for key, br in snapshot.in_flight.items():
            pod = snapshot.pods.get(key)
            node = ((br or {}).get("spec") or {}).get("selectedNode")
            if pod is not None and node in known:
                self._add(key, pod, node)
        self._pos = len(snapshot.pod_changes)

    def sync(self) -> None:
        """Replay the cycle's decisions made since the last call."""
        changes = self._snap.pod_changes
        if self._pos == len(changes):
            return
        for sign, pod, node in changes[self._pos:]:
            key = pod_key(pod)
            if sign > 0:
                self._add(key, pod, node)
            else:
                self._remove(key)
        self._pos = len(changes)

    def _add(self, key: PodKey, pod: dict, node: str) -> None:
        if key in self.where:
            self._remove(key)
        self.where[key] = (pod, node)
        self.by_node.setdefault(node, {})[key] = pod
        for keys_of, index in self._indexes.values():
            for k in keys_of(pod):
                index.setdefault(k, {})[key] = pod

    def _remove(self, key: PodKey) -> None:
        got = self.where.pop(key, None)
        if got is None:
            return
        pod, node = got
        on_node = self.by_node.get(node)
        if on_node is not None:
            on_node.pop(key, None)
        for keys_of, index in self._indexes.values():
            for k in keys_of(pod):
                bucket = index.get(k)
                if bucket is not None:
                    bucket.pop(key, None)
                    if not bucket:
                        del index[k]

    def node_of(self, key: PodKey) -> str | None:
        got = self.where.get(key)
        return got[1] if got else None

    def index(self, name: str, keys_of: Callable[[dict], Iterable]) -> dict:
        """``{index key: {pod key: pod}}`` over the placed pods, where ``keys_of(pod)`` gives a pod's
        index keys; built on first use under ``name`` and kept current from then on."""
        got = self._indexes.get(name)
        if got is not None:
            return got[1]
        index: dict = {}
        for key, (pod, _node) in self.where.items():
            for k in keys_of(pod):
                index.setdefault(k, {})[key] = pod
        self._indexes[name] = (keys_of, index)
        return index

    def by_label(self) -> dict:
        """``{(label key, value): {pod key: pod}}``, and ``{(label key, None): ...}`` for every pod
        having the key at all."""
        return self.index("labels", _label_keys)

    def by_namespace(self) -> dict:
        """``{namespace: {pod key: pod}}``."""
        return self.index("namespaces", _namespace_keys)


def _label_keys(pod: dict) -> list:
    labels = pod_labels(pod)
    return [*((k, v) for k, v in labels.items() if isinstance(v, str)), *((k, None) for k in labels)]


def _namespace_keys(pod: dict) -> tuple[str]:
    return (pod["metadata"].get("namespace", ""),)
