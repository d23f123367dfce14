"""Releasing a claim's reservation, the rule the binder's rollback and the embedded resourceclaim
controller share (:mod:`kai_core.api.claims`): the consumer's entry goes; with no consumer left the
allocation goes too; a free claim's delete-protection finalizer protects nothing any more."""

from __future__ import annotations

from kai_core.api.claims import (
    DELETE_PROTECTION_FINALIZER,
    is_free,
    is_protected,
    is_reserved_for,
    reserved_for,
    with_consumers,
    without_consumer,
    without_protection,
)

ALLOCATION = {"devices": {"results": [{"request": "gpu", "driver": "d", "pool": "p", "device": "g0"}]}}


def ref(uid: str) -> dict:
    return {"resource": "pods", "name": f"pod-{uid}", "uid": uid}


def claim(*uids: str, allocated: bool = True, finalizers: list[str] | None = None) -> dict:
    status: dict = {}
    if allocated:
        status["allocation"] = ALLOCATION
    if uids:
        status["reservedFor"] = [ref(u) for u in uids]
    md: dict = {"name": "c", "namespace": "default"}
    if finalizers is not None:
        md["finalizers"] = finalizers
    return {"metadata": md, "status": status}


def test_reserved_for_reads_the_consumers():
    assert reserved_for(claim("a", "b")) == [ref("a"), ref("b")]
    assert reserved_for({"metadata": {}}) == []
    assert is_reserved_for(claim("a"), "a") and not is_reserved_for(claim("a"), "b")


def test_releasing_one_of_several_consumers_keeps_the_allocation():
    c = claim("a", "b")
    assert without_consumer(c["status"], "a") == {"allocation": ALLOCATION, "reservedFor": [ref("b")]}
    assert c["status"]["reservedFor"] == [ref("a"), ref("b")]  # the input is not changed


def test_releasing_the_last_consumer_deallocates():
    released = without_consumer(claim("a")["status"], "a")
    assert released == {}
    assert with_consumers({"allocation": ALLOCATION, "other": 1}, []) == {"other": 1}


def test_releasing_a_consumer_the_claim_is_not_reserved_for_is_nothing():
    assert without_consumer(claim("a")["status"], "b") is None
    assert without_consumer({}, "b") is None


def test_a_free_claim_may_lose_its_protection():
    protected = claim(finalizers=[DELETE_PROTECTION_FINALIZER, "example.com/other"], allocated=False)
    assert is_free(protected) and is_protected(protected)
    assert without_protection(protected) == ["example.com/other"]
    assert not is_free(claim("a")) and not is_free(claim())
    assert not is_protected(claim("a")) and without_protection(claim("a")) == []
