"""The scheduler's cache: one map per watched kind, kept current from the store's watch events.

The cache holds the stored objects themselves (never mutated), so building a snapshot costs no
copies. ``sync()`` brings it up to date: incrementally from the embedded store's event log, with
a relist when that log was compacted.
"""

from __future__ import annotations

from kai_core.errors import Gone

_Key = tuple[str, str]


class Cache:
    def __init__(self, store, resources: list[str]) -> None:
        self.store = store
        self.resources = list(resources)
        self.objects: dict[str, dict[_Key, dict]] = {r: {} for r in self.resources}
        self._rv = -1

    def _relist(self) -> None:
        rvs = []
        for r in self.resources:
            items, list_rv = self.store.list_refs(r)
            self.objects[r] = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in items}
            rvs.append(int(list_rv))
        # replaying from the oldest list is harmless (events are idempotent upserts/deletes)
        self._rv = min(rvs, default=0)

    def sync(self) -> bool:
        """Apply every change since the last sync; returns whether anything changed."""
        if self._rv < 0:
            self._relist()
            return True
        try:
            events, rv = self.store.events_since(self._rv, set(self.resources))
        except Gone:
            self._relist()
            return True
        for ev in events:
            md = ev.object["metadata"]
            key = (md.get("namespace", ""), md["name"])
            bucket = self.objects[ev.resource]
            if ev.type == "DELETED":
                bucket.pop(key, None)
            else:
                bucket[key] = ev.object
        self._rv = rv
        return bool(events)

    def items(self, resource: str) -> list[dict]:
        return list(self.objects.get(resource, {}).values())

    def get(self, resource: str, namespace: str, name: str) -> dict | None:
        return self.objects.get(resource, {}).get((namespace, name))
