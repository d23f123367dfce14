"""Pod priority on the real API server and on kai's embedded one, request for request: PriorityClass
validation and the Priority admission plugin (a pod's spec.priority and preemptionPolicy from its
class, a missing class or a disagreeing priority refused). Each request must get the same answer
from both: the same status code, the same message, the same fields written into the pod."""

from __future__ import annotations

import json

import pytest

from kai_core.api.errors import ApiError
from kai_core.apiserver.store import EmbeddedStore

PC = "scheduling.k8s.io/v1"


class Real:
    def __init__(self, kube, namespace: str):
        self.kube, self.namespace = kube, namespace

    def _call(self, method: str, path: str, body=None, **kw) -> tuple[int, dict | str]:
        status, data = self.kube.cp.request(method, path, body, **kw)
        reply = json.loads(data) if data else {}
        return status, reply if status < 300 else reply.get("message", "")

    def create(self, obj: dict) -> tuple[int, dict | str]:
        ns = self.namespace if obj["kind"] == "Pod" else ""
        return self._call("POST", self.kube.path(obj["apiVersion"], obj["kind"], "", ns), obj)

    def patch_class(self, name: str, patch: dict) -> tuple[int, dict | str]:
        return self._call("PATCH", self.kube.path(PC, "PriorityClass", name), patch,
                          content_type="application/merge-patch+json")

    def delete_class(self, name: str) -> tuple[int, str | None]:
        status, reply = self._call("DELETE", self.kube.path(PC, "PriorityClass", name))
        return status, None if status < 300 else reply


class Embedded:
    def __init__(self, namespace: str):
        self.store, self.namespace = EmbeddedStore(), namespace
        self.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})

    @staticmethod
    def _answer(call) -> tuple[int, dict | str]:
        try:
            return 201, call()
        except ApiError as exc:
            return exc.code, exc.message

    def create(self, obj: dict) -> tuple[int, dict | str]:
        if obj["kind"] == "Pod":
            obj = {**obj, "metadata": {**obj["metadata"], "namespace": self.namespace}}
        return self._answer(lambda: self.store.create(obj))

    def patch_class(self, name: str, patch: dict) -> tuple[int, dict | str]:
        return self._answer(lambda: self.store.patch("priorityclasses", name, None, patch))

    def delete_class(self, name: str) -> tuple[int, dict | str]:
        return self._answer(lambda: self.store.delete("priorityclasses", name))


@pytest.fixture
def classes(kube, namespace):
    """PriorityClass names for this test (cluster-scoped: prefixed with the namespace), deleted
    from the real cluster afterwards."""
    names: list[str] = []

    def name(stem: str) -> str:
        names.append(f"{namespace}-{stem}")
        return names[-1]

    yield name
    for n in names:
        kube.delete(PC, "PriorityClass", n)


def pc(name: str, value: int, **fields) -> dict:
    return {"apiVersion": PC, "kind": "PriorityClass", "metadata": {"name": name}, "value": value, **fields}


def pod(name: str, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox:1"}], **spec}}


def answers(api, requests) -> list:
    """What a user sees of each answer: the status code, and the message or the priority fields."""
    out = []
    for method, *args in requests:
        status, reply = getattr(api, method)(*args)
        if isinstance(reply, dict):
            spec = reply.get("spec") or {}
            reply = {k: (spec if reply["kind"] == "Pod" else reply).get(k)
                     for k in ("priority", "preemptionPolicy", "priorityClassName", "value", "globalDefault")}
        out.append((method, args[0]["metadata"]["name"] if method == "create" else args[0], status // 100, reply))
    return out


def test_the_embedded_api_server_answers_as_the_real_one(kube, namespace, classes):
    train, polite, huge, odd = classes("train"), classes("polite"), classes("huge"), classes("odd")
    first, second = classes("first"), classes("second")
    requests = [
        ("create", pc(train, 50)),
        ("create", pc(polite, 80, preemptionPolicy="Never", description="waits, never preempts")),
        ("create", pc(huge, 1_000_000_001)),
        ("create", pc(odd, 5, preemptionPolicy="Sometimes")),
        ("create", pc("system-e2e-mine", 5)),
        ("create", pc("system-node-critical", 2000001000)),
        ("create", pod("plain")),
        ("create", pod("trainer", priorityClassName=train)),
        ("create", pod("waiter", priorityClassName=polite)),
        ("create", pod("critical", priorityClassName="system-node-critical")),
        ("create", pod("agreeing", priorityClassName=train, priority=50)),
        ("create", pod("missing", priorityClassName=f"{namespace}-nope")),
        ("create", pod("disagreeing", priorityClassName=train, priority=1000)),
        ("create", pod("classless", priority=7)),
        ("create", pod("impolite", priorityClassName=train, preemptionPolicy="Never")),
        ("patch_class", train, {"value": 51}),
        ("patch_class", polite, {"preemptionPolicy": "PreemptLowerPriority"}),
        ("patch_class", train, {"description": "training jobs"}),
        ("delete_class", "system-cluster-critical"),
        ("create", pc(first, 3, globalDefault=True)),
        ("create", pc(second, 4, globalDefault=True)),
        ("create", pod("defaulted")),
        ("delete_class", first),
    ]
    real = answers(Real(kube, namespace), requests)
    embedded = answers(Embedded(namespace), requests)
    assert embedded == real
    # and the answers are the ones expected (not two servers agreeing on nothing)
    by_name = {(method, name): (status, reply) for method, name, status, reply in real}
    assert by_name[("create", "trainer")] == (2, {"priority": 50, "preemptionPolicy": "PreemptLowerPriority",
                                                  "priorityClassName": train, "value": None,
                                                  "globalDefault": None})
    assert by_name[("create", "defaulted")][1]["priorityClassName"] == first
    assert by_name[("create", "missing")] == (
        4, f'pods "missing" is forbidden: no PriorityClass with name {namespace}-nope was found')
