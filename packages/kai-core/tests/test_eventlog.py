"""The event log both stores keep behind ``events_since`` and ``watch``: ordered positions, a bounded
history, Gone (410) for a position whose events were dropped. And the Store protocol declares the
reads the cache makes, so both backends visibly implement one interface."""

from __future__ import annotations

import pytest

from kai_core.api.errors import Gone
from kai_core.api.eventlog import EventLog
from kai_core.api.store import Store, select
from kai_core.apiserver.store import EmbeddedStore
from kai_core.client.store import KubernetesStore
from kai_core.framework.cache import Cache


def cm(name: str, namespace: str = "default", **labels) -> dict:
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels}}


def names(events) -> list[str]:
    return [e.object["metadata"]["name"] for e in events]


def test_events_get_the_next_position_and_are_read_after_one():
    log = EventLog(10)
    assert (log.resource_version, log.next_version) == (0, 1)
    for n in ("a", "b", "c"):
        log.append("ADDED", "configmaps", cm(n))
    events, now = log.since(1)
    assert names(events) == ["b", "c"] and now == 3
    assert [e.resource_version for e in events] == ["2", "3"]
    assert log.since(3) == ([], 3)


def test_since_filters_by_resource_but_returns_the_latest_position():
    log = EventLog(10)
    log.append("ADDED", "configmaps", cm("a"))
    log.append("ADDED", "pods", cm("p"))
    events, now = log.since(0, {"configmaps"})
    assert names(events) == ["a"] and now == 2


def test_an_event_may_skip_ahead_but_never_go_back():
    log = EventLog(10)
    log.append("ADDED", "configmaps", cm("a"), 1000)
    assert log.resource_version == 1000 and log.next_version == 1001
    for at in (1000, 999):
        with pytest.raises(ValueError):
            log.append("ADDED", "configmaps", cm("b"), at)
    assert names(log.since(999)[0]) == ["a"]


def test_a_position_whose_events_were_dropped_is_gone():
    log = EventLog(2, unit="local event log position")
    for n in ("a", "b", "c", "d"):
        log.append("ADDED", "configmaps", cm(n))
    assert log.compacted == 2
    with pytest.raises(Gone) as err:
        log.since(1)
    assert err.value.code == 410
    assert "too old local event log position: 1 (the oldest kept is 2)" in err.value.message
    assert names(log.since(2)[0]) == ["c", "d"]  # event 2 was seen: nothing lost after it


@pytest.mark.parametrize("history", [0, -1, 1.5, None])
def test_history_must_be_a_positive_number_of_events(history):
    with pytest.raises(ValueError, match="history must be a positive number"):
        EventLog(history)


def test_the_store_protocol_declares_what_the_cache_reads():
    assert {"list_refs", "events_since", "resource_version"} <= Store.__abstractmethods__
    for backend in (EmbeddedStore, KubernetesStore):
        assert issubclass(backend, Store) and not backend.__abstractmethods__


def test_the_cache_syncs_and_relists_through_the_protocol():
    store = EmbeddedStore(history=2)
    cache = Cache(store, ["configmaps"])
    assert cache.sync()
    store.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}})
    assert cache.sync() and cache.get("configmaps", "default", "a") is not None
    for n in "bcd":  # more changes than the log keeps: the cache relists
        store.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n}})
    assert cache.sync()
    assert sorted(o["metadata"]["name"] for o in cache.items("configmaps")) == list("abcd")


def test_select_is_what_list_returns():
    objs = [cm("b", "x", app="web"), cm("a", "y", app="web"), cm("c", "x", app="db"),
            {"metadata": {"name": "node", "labels": {}}}]
    assert [o["metadata"]["name"] for o in select(objs, True)] == ["node", "b", "c", "a"]
    assert [o["metadata"]["name"] for o in select(objs, True, "x")] == ["b", "c"]
    assert [o["metadata"]["name"] for o in select(objs, False, "x")] == ["node", "b", "c", "a"]
    assert [o["metadata"]["name"] for o in select(objs, True, None, "app=web")] == ["b", "a"]
    assert [o["metadata"]["name"] for o in select(objs, True, None, None, "metadata.name=c")] == ["c"]
