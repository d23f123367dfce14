"""Events off the workers' path (:mod:`kai_binder.events`): queued and written by a thread of
their own, as client-go's event broadcaster does; dropped, with a warning, when too many wait."""

from __future__ import annotations

import threading
import time

from kai_binder.binder import RECOMMENDED_OPTIONS
from kai_binder.events import EventRecorder
from kai_core.api.errors import AlreadyExists, ApiError
from kai_core.api.resources import RES_BIND_REQUESTS


class SlowApi:
    """Creates Events only once ``gate`` is open; records what it created."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.gate = threading.Event()
        self.created: list[str] = []
        self.fail = fail

    def create(self, event):
        assert self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        self.created.append(event["metadata"]["name"])
        return event


def event(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}}


def test_record_returns_at_once_and_the_thread_writes_in_order():
    api = SlowApi()
    rec = EventRecorder(api, writers=1)
    start = time.monotonic()
    for i in range(3):
        rec.record(event(f"e{i}"))
    assert time.monotonic() - start < 1 and api.created == []
    assert rec.flush(timeout=0.05) is False  # still held
    api.gate.set()
    assert rec.flush(timeout=10) is True
    assert api.created == ["e0", "e1", "e2"]
    rec.close()


def test_a_full_queue_drops_new_events_with_a_warning(caplog):
    api = SlowApi()
    rec = EventRecorder(api, queue_size=2, writers=1)
    for i in range(5):  # one taken by the thread (held at the gate), two queued, the rest dropped
        rec.record(event(f"e{i}"))
        time.sleep(0.05)
    assert rec.dropped == 2
    assert "event queue full (2): dropped the event for pod default/p (1 dropped so far)" in caplog.text
    assert caplog.text.count("event queue full") == 1  # one warning, not one per Event
    api.gate.set()
    rec.close()
    assert api.created == ["e0", "e1", "e2"]


def test_errors_are_logged_and_the_thread_goes_on(caplog):
    for failure in (ApiError("boom", code=500), AlreadyExists("there")):
        api = SlowApi(fail=failure)
        api.gate.set()
        rec = EventRecorder(api)
        rec.record(event("e0"))
        assert rec.flush(timeout=10)
        rec.close()
    assert "cannot record event for pod default/p" in caplog.text
    assert caplog.text.count("cannot record event") == 1  # AlreadyExists: reported before, not an error


def test_close_writes_what_is_queued_then_stops():
    api = SlowApi()
    api.gate.set()
    rec = EventRecorder(api)  # several writers: every Event written, in no set order
    for i in range(20):
        rec.record(event(f"e{i}"))
    rec.close()
    assert sorted(api.created) == sorted(f"e{i}" for i in range(20))
    assert not any(t.name.startswith("kai-binder-events") and t.is_alive() for t in threading.enumerate())


def test_a_dispatched_attempt_does_not_wait_for_its_event(rig):
    r = rig(pods=[rig.pod("p")], **{**RECOMMENDED_OPTIONS, "workers": 2})
    r.schedule()
    held = threading.Event()
    real_create = r.faulty.create

    def slow_create(obj):
        if obj.get("kind") == "Event":
            assert held.wait(10)
        return real_create(obj)

    r.faulty.create = slow_create
    r.binder.dispatch()
    deadline = time.monotonic() + 10
    while r.binder.in_progress():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # the attempt is done (Succeeded) while its Event still waits to be written
    assert [b["status"]["phase"] for b in r.store.list(RES_BIND_REQUESTS)[0]] == ["Succeeded"]
    assert [e for e in r.store.list("events")[0] if e["involvedObject"]["name"] == "p"] == []
    held.set()
    r.binder.close()
    [ev] = [e for e in r.store.list("events")[0] if e["involvedObject"]["name"] == "p"]
    assert ev["reason"] == "Bound"
    conditions = {c["type"]: c["status"] for c in r.get_pod("p")["status"]["conditions"]}
    assert conditions["PodBound"] == "True"
    # KAI's order: the request's status, then the pod's condition and Event
    writes = [(w[0], w[1]) for w in r.faulty.log]
    assert writes.index(("update_status", "BindRequest")) < writes.index(("patch", "pods"))


def test_a_report_that_must_not_be_lost_waits_for_room():
    api = SlowApi()
    rec = EventRecorder(api, queue_size=1, writers=1)
    done = []

    def submitter():
        for i in range(3):  # one held by the thread, one queued, the third waits for room
            rec.submit(lambda i=i: api.create(event(f"r{i}")), f"report {i}")
        done.append(True)

    t = threading.Thread(target=submitter)
    t.start()
    time.sleep(0.2)
    assert done == [] and rec.dropped == 0  # waiting, not dropped
    api.gate.set()
    t.join(10)
    rec.close()
    assert done == [True] and api.created == ["r0", "r1", "r2"]
