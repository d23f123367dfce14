"""The fake API server (``kai_core.testing.FakeApiServer``) held to the real one.

One sequence of calls, made through kai's own Kubernetes store (``KubernetesStore``: the paths,
verbs, bodies and preconditions kai's scheduler, binder and leader election send), runs against the
real kube-apiserver of the session control plane and against the fake. For each step the test keeps
the HTTP statuses of the requests, and what came back: for a success what the caller looks at (the
reply's kind, whether a deleted object is still there with a ``deletionTimestamp``, the names a list
returns), for a failure the status code and the Status ``reason``; and, per kind, the type and order
of the watch events the sequence caused. Both transcripts must be equal; the assertion lists every
step where they are not.

Covered, for pods, nodes, BindRequests, ResourceClaims (and their DeviceClass), Leases and Events:
get, list (label and field selectors, pages), watch, create, update, update_status, merge patch
(object and status), delete, pods/binding; 409 Conflict (stale resourceVersion, pod already bound,
uid precondition) and AlreadyExists, 404 (missing object, missing pod to bind, update of a missing
object), 422 Invalid (built-in validation, the CRD schema, ResourceClaim status rules: more than 256
consumers, a reservation without an allocation), 410 Gone (a watch from a compacted resourceVersion,
a continue token after compaction).

410 on the real server: with its watch cache (the default) a watch from an old resourceVersion is
served from the cache's own history, compaction or not (see test/controlplane/README.md). Events
are not cached by kube-apiserver (their watch cache size is 0), so the 410 steps use Events: their
watches and lists reach etcd, and a compacted revision gets 410 at once, as every kind does on a
server without a watch cache.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kai_core.api.errors import ApiError
from kai_core.api.resources import RES_BIND_REQUESTS, RES_CLAIMS, RES_EVENTS, RES_NODES, RES_PODS

ROOT = Path(__file__).resolve().parents[2]
BIND_REQUEST_CRD = ROOT / "deploy" / "crds" / "scheduling.run.ai_bindrequests.yaml"
LEASES = "leases.coordination.k8s.io"
CLASSES = "deviceclasses.resource.k8s.io"
BR_API = "scheduling.run.ai/v1alpha2"


@dataclass
class Side:
    """One API server as the sequence sees it: kai's store on it, and how to compact its history."""

    name: str
    store: object  # kai_core.client.store.KubernetesStore
    compact: Callable[[], None]
    ns: str
    suffix: str
    statuses: list[int] = field(default_factory=list)

    def record_statuses(self) -> None:
        """Wrap the store's HTTP call so that every reply's status is kept in :attr:`statuses`."""
        api = self.store.api
        call = api.call_api

        def recording(*args, **kwargs):
            resp = call(*args, **kwargs)
            self.statuses.append(resp.status)
            return resp

        api.call_api = recording


def _store(configuration):
    from kai_core.client.store import KubernetesStore

    # no client-side limits or retries: every request and its first answer are what is compared
    return KubernetesStore(configuration, qps=0, max_retries=0)


def _bindrequest_crd() -> dict:
    import yaml

    return yaml.safe_load(BIND_REQUEST_CRD.read_text())


@pytest.fixture
def real_side(controlplane, kube):
    from kubernetes import client, config

    crd = _bindrequest_crd()
    kube.apply(crd)
    kube.wait_established(crd["metadata"]["name"])
    suffix = secrets.token_hex(3)
    ns = f"conformance-{suffix}"
    controlplane.ensure_namespace(ns)
    cfg = client.Configuration()
    config.load_kube_config(config_file=controlplane.kubeconfig, client_configuration=cfg, persist_config=False)
    side = Side("real", _store(cfg), controlplane.compact_etcd, ns, suffix)
    yield side
    side.store.close()
    for pod in kube.list("v1", "Pod", ns):
        kube.delete("v1", "Pod", pod["metadata"]["name"], ns, grace=0)
    kube.delete("v1", "Namespace", ns)
    kube.delete("v1", "Node", f"conformance-node-{suffix}")
    kube.delete("resource.k8s.io/v1", "DeviceClass", f"conformance-{suffix}.example.com")


@pytest.fixture
def fake_side():
    from kai_core.apiserver.store import EmbeddedStore
    from kai_core.testing import FakeApiServer

    server = FakeApiServer(EmbeddedStore()).start()
    suffix = secrets.token_hex(3)
    ns = f"conformance-{suffix}"
    store = _store(server.client_configuration())
    # installed and created through the API, as on the real server
    store._request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=_bindrequest_crd(),
                   what="create the BindRequest CRD")
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    side = Side("fake", store, server.compact, ns, suffix)
    yield side
    store.close()
    server.stop()


# -- the sequence ----------------------------------------------------------------------------------


def _pod(name: str, ns: str, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"app": "c"}},
            "spec": {"schedulerName": "kai-scheduler", "containers": [{"name": "c", "image": "busybox:1"}],
                     **spec}}


def _event(ns: str, pod: dict, **md) -> dict:
    from kai_core.api.events import pod_event

    meta = pod["metadata"]
    return pod_event({"name": meta["name"], "namespace": ns, "uid": meta["uid"]}, "Normal", "Bound",
                     "bound by the conformance test", "kai-binder", **md)


def _allocation(node: str, driver: str) -> dict:
    return {"devices": {"results": [{"request": "gpu", "driver": driver, "pool": node, "device": "gpu-0"}]},
            "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [node]}]}]}}


def _consumer(pod: dict) -> dict:
    return {"resource": "pods", "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}


def gen(obj: dict):
    return obj["metadata"].get("generation")


def _reply_kind(reply) -> str:
    """What a delete answered: the object (still there, being finalized, or as it was), or a Status."""
    if not isinstance(reply, dict):
        return repr(reply)
    if reply.get("kind") == "Status":
        return f"Status {reply.get('status')}, details {sorted(reply.get('details') or {})}"
    if (reply.get("metadata") or {}).get("deletionTimestamp"):
        return "object, deletionTimestamp set"
    return "object"


def run_sequence(side: Side) -> tuple[list[tuple], dict[str, list[tuple[str, str]]]]:
    """The calls, in order; returns the transcript (step, statuses, outcome) and the watch events
    (resource -> [(type, name)]) of what the sequence wrote in its namespace."""
    st, ns, sfx = side.store, side.ns, side.suffix
    node_name = f"conformance-node-{sfx}"
    driver = f"conformance-{sfx}.example.com"
    transcript: list[tuple] = []
    objs: dict[str, dict] = {}

    def step(name: str, call: Callable[[], object], keep: str | None = None,
             show: Callable[[object], object] = lambda _r: None) -> object:
        side.statuses.clear()
        try:
            result = call()
            outcome = ("ok", show(result))
        except ApiError as exc:
            result = None
            outcome = ("error", exc.code, exc.reason)
        transcript.append((name, tuple(side.statuses), outcome))
        if keep and result is not None:
            objs[keep] = result
        return result

    def raw(method: str, path: str, body=None, query=None, content_type: str = "application/json"):
        return lambda: st._request(method, path, body=body, query=query, content_type=content_type,
                                   what=f"{method} {path}")

    def stale(key: str) -> dict:
        """A copy of the object as it was before its last write (so its resourceVersion is stale)."""
        obj = json.loads(json.dumps(objs[key]))
        obj["metadata"]["resourceVersion"] = objs[f"{key}@old"]["metadata"]["resourceVersion"]
        return obj

    def remember(key: str) -> None:
        objs[f"{key}@old"] = objs[key]

    watched = [RES_PODS, RES_NODES, RES_BIND_REQUESTS, RES_CLAIMS, LEASES, RES_EVENTS]
    start_rv = {r: st.list(r, ns)[1] for r in watched}

    # -- nodes
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node_name, "labels": {"pool": sfx}}}
    step("create node", lambda: st.create(node), keep="node")
    step("create node again", lambda: st.create(node))
    step("create node with an invalid name", lambda: st.create(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "Not_A_DNS_Name"}}))
    step("get node", lambda: st.get(RES_NODES, node_name), show=lambda o: o["metadata"]["name"])
    step("get missing node", lambda: st.get(RES_NODES, f"missing-{sfx}"))
    remember("node")
    new = dict(objs["node"], status={"allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
                                     "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
                                     "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                                     "message": "conformance"}]})
    step("update_status node", lambda: st.update_status(new), keep="node")
    step("update node with a stale resourceVersion", lambda: st.update(stale("node")))
    step("patch node labels", lambda: st.patch(RES_NODES, node_name, None, {"metadata": {"labels": {"x": "y"}}}),
         keep="node", show=lambda o: o["metadata"]["labels"].get("x"))
    step("patch missing node", lambda: st.patch(RES_NODES, f"missing-{sfx}", None, {"metadata": {"labels": {}}}))
    step("list nodes by label", lambda: st.list(RES_NODES, label_selector=f"pool={sfx}"),
         show=lambda r: [o["metadata"]["name"] for o in r[0]])

    # -- pods
    step("create pod", lambda: st.create(_pod("p1", ns)), keep="p1")
    step("create pod again", lambda: st.create(_pod("p1", ns)))
    step("create pod without containers", lambda: st.create(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "empty", "namespace": ns},
         "spec": {"containers": []}}))
    step("create second pod", lambda: st.create(_pod("p2", ns)), keep="p2")
    step("create third pod", lambda: st.create(_pod("p3", ns)), keep="p3")
    remember("p1")
    new = json.loads(json.dumps(objs["p1"]))
    new.setdefault("status", {})["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                   "message": "0/1 nodes are available", "lastProbeTime": None,
                                                   "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    step("update_status pod", lambda: st.update_status(new), keep="p1",
         show=lambda o: [c["type"] for c in o["status"]["conditions"]])
    step("update_status pod with a stale resourceVersion", lambda: st.update_status(stale("p1")))
    step("update_status missing pod", lambda: st.update_status(_pod(f"missing-{sfx}", ns)))
    step("patch pod status", lambda: st.patch(RES_PODS, "p2", ns, {"status": {"conditions": [
        {"type": "PodBound", "status": "False", "reason": "BindingError", "message": "m",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}, "status"),
         show=lambda o: [c["type"] for c in o["status"]["conditions"]])
    step("get missing pod", lambda: st.get(RES_PODS, f"missing-{sfx}", ns))
    step("list pods by field selector", lambda: st.list(RES_PODS, ns, field_selector="metadata.name=p2"),
         show=lambda r: [o["metadata"]["name"] for o in r[0]])
    step("list pods not bound", lambda: st.list(RES_PODS, ns, field_selector="spec.nodeName="),
         show=lambda r: sorted(o["metadata"]["name"] for o in r[0]))

    def in_pages_of_one():
        st.page_size = 1  # the reflectors' paginated list, a page per pod: order and continue tokens
        try:
            return st.list(RES_PODS, ns)
        finally:
            st.page_size = 500

    step("list pods in pages of one", in_pages_of_one, show=lambda r: [o["metadata"]["name"] for o in r[0]])
    p1_uid = objs["p1"]["metadata"]["uid"]
    step("bind pod", lambda: st.bind(ns, "p1", node_name, p1_uid))
    step("bind pod again", lambda: st.bind(ns, "p1", node_name, p1_uid))
    step("bind pod to another node", lambda: st.bind(ns, "p1", f"other-{sfx}", p1_uid))
    step("bind missing pod", lambda: st.bind(ns, f"missing-{sfx}", node_name))
    step("bind pod with another uid", lambda: st.bind(ns, "p2", node_name, "00000000-0000-4000-8000-000000000000"))
    step("bind pod to a node that does not exist", lambda: st.bind(ns, "p3", f"nowhere-{sfx}"))
    step("bind pod to no node", raw("POST", f"/api/v1/namespaces/{ns}/pods/p2/binding", body={
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p2"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": ""}}))
    step("get bound pod", lambda: st.get(RES_PODS, "p1", ns), show=lambda o: o["spec"].get("nodeName") == node_name)
    step("list bound pods", lambda: st.list(RES_PODS, ns, field_selector=f"spec.nodeName={node_name}"),
         show=lambda r: sorted(o["metadata"]["name"] for o in r[0]))

    # -- events (what the scheduler and the binder record)
    p1 = objs["p1"]
    step("create event (generateName)", lambda: st.create(_event(ns, p1)),
         show=lambda o: o["metadata"]["name"].startswith("p1."))
    step("create named event", lambda: st.create(_event(ns, p1, name="p1.bound")))
    step("create named event again", lambda: st.create(_event(ns, p1, name="p1.bound")))
    bad_event = _event(ns, p1, name="p1.elsewhere")
    bad_event["involvedObject"]["namespace"] = f"other-{sfx}"
    step("create event about an object of another namespace", lambda: st.create(bad_event))

    # -- BindRequests
    br = {"apiVersion": BR_API, "kind": "BindRequest",
          "metadata": {"name": "p2-br", "namespace": ns, "labels": {"pod-name": "p2"}},
          "spec": {"podName": "p2", "selectedNode": node_name, "backoffLimit": 3}}
    step("create BindRequest", lambda: st.create(br), keep="br", show=lambda o: (o.get("status"), gen(o)))
    with_status = dict(br, metadata={"name": "with-status", "namespace": ns}, status={"phase": "Succeeded"})
    step("create BindRequest with a status", lambda: st.create(with_status), show=lambda o: o.get("status"))
    step("create BindRequest again", lambda: st.create(br))
    bad = json.loads(json.dumps(br))
    bad["metadata"]["name"] = "bad-br"
    bad["spec"]["selectedNode"] = 5
    step("create BindRequest against its schema", lambda: st.create(bad))
    remember("br")
    new = dict(objs["br"], status={"phase": "Succeeded"})
    step("update_status BindRequest", lambda: st.update_status(new), keep="br",
         show=lambda o: (o["status"], gen(o)))
    step("update_status BindRequest with a stale resourceVersion", lambda: st.update_status(
        dict(stale("br"), status={"phase": "Failed", "reason": "r"})))
    new = dict(objs["br"], status={"phase": "Succeeded", "failedAttempts": -1})
    step("update_status BindRequest against its schema", lambda: st.update_status(new))
    step("update_status missing BindRequest", lambda: st.update_status(dict(br, metadata={
        "name": f"missing-{sfx}", "namespace": ns}, status={"phase": "Succeeded"})))
    new = json.loads(json.dumps(objs["br"]))
    new["metadata"]["labels"]["extra"] = "1"
    step("update BindRequest", lambda: st.update(new), keep="br", show=lambda o: (o["status"], gen(o)))
    new = json.loads(json.dumps(objs["br"]))
    new["spec"]["backoffLimit"] = 5
    new["status"] = {"phase": "Failed"}
    step("update BindRequest spec (and a status, ignored)", lambda: st.update(new), keep="br",
         show=lambda o: (o["status"], o["spec"]["backoffLimit"], gen(o)))
    step("list BindRequests by label", lambda: st.list(RES_BIND_REQUESTS, ns, label_selector="pod-name=p2"),
         show=lambda r: [o["metadata"]["name"] for o in r[0]])
    step("get missing BindRequest", lambda: st.get(RES_BIND_REQUESTS, f"missing-{sfx}", ns))
    br_path = f"/apis/{BR_API}/namespaces/{ns}/bindrequests"
    step("delete BindRequest", raw("DELETE", f"{br_path}/p2-br", body={
        "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}), show=_reply_kind)
    step("delete BindRequest again", lambda: st.delete(RES_BIND_REQUESTS, "p2-br", ns))

    # -- ResourceClaims, as the binder writes them
    dc = {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": driver},
          "spec": {"selectors": [{"cel": {"expression": f"device.driver == '{driver}'"}}]}}
    step("create DeviceClass", lambda: st.create(dc))
    step("create DeviceClass with a CEL error", lambda: st.create(dict(dc, metadata={"name": f"bad-{driver}"}, spec={
        "selectors": [{"cel": {"expression": "device.driver =="}}]})))
    claim = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
             "metadata": {"name": "gpu", "namespace": ns},
             "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": driver}}]}}}
    step("create claim", lambda: st.create(claim), keep="claim",
         show=lambda o: o["spec"]["devices"]["requests"][0]["exactly"].get("allocationMode"))
    step("create claim again", lambda: st.create(claim))
    step("create claim with an invalid request name", lambda: st.create(dict(claim, metadata={
        "name": "bad", "namespace": ns}, spec={"devices": {"requests": [
            {"name": "Not_Valid", "exactly": {"deviceClassName": driver}}]}})))
    admin = json.loads(json.dumps(claim))
    admin["metadata"]["name"] = "monitor"
    admin["spec"]["devices"]["requests"][0]["exactly"]["adminAccess"] = True
    step("create claim with adminAccess in a namespace without the label", lambda: st.create(admin))
    remember("claim")
    new = json.loads(json.dumps(objs["claim"]))
    new["metadata"]["finalizers"] = ["resource.kubernetes.io/delete-protection"]
    new["metadata"]["annotations"] = {"binder.kai.scheduler/delete-protection-for": p1_uid}
    step("update claim (finalizer)", lambda: st.update(new), keep="claim",
         show=lambda o: (o["metadata"]["finalizers"], gen(o)))
    step("update claim with a stale resourceVersion", lambda: st.update(stale("claim")))
    new = json.loads(json.dumps(objs["claim"]))
    new["status"] = {"reservedFor": [_consumer(p1)]}
    step("update_status claim reserved but not allocated", lambda: st.update_status(new))
    new["status"] = {"allocation": _allocation(node_name, driver),
                     "reservedFor": [{"resource": "pods", "name": f"x{i}",
                                      "uid": f"00000000-0000-4000-8000-{i:012d}"} for i in range(257)]}
    step("update_status claim with 257 consumers", lambda: st.update_status(new))
    new["status"] = {"allocation": _allocation(node_name, driver), "reservedFor": [_consumer(p1)]}
    remember("claim")
    step("update_status claim (allocation, reservedFor)", lambda: st.update_status(new), keep="claim",
         show=lambda o: ([r["name"] for r in o["status"]["reservedFor"]], gen(o)))
    step("update_status claim with a stale resourceVersion", lambda: st.update_status(stale("claim")))
    new = json.loads(json.dumps(objs["claim"]))
    new["status"]["allocation"]["devices"]["results"][0]["device"] = "gpu-1"
    step("update_status claim: another allocation", lambda: st.update_status(new))
    new = json.loads(json.dumps(objs["claim"]))
    new["status"]["reservedFor"].append(_consumer(objs["p2"]))
    step("update_status claim: a second consumer", lambda: st.update_status(new), keep="claim",
         show=lambda o: [r["name"] for r in o["status"]["reservedFor"]])
    new = json.loads(json.dumps(objs["claim"]))
    new["status"]["reservedFor"] = [_consumer(p1)]
    step("update_status claim: a consumer less", lambda: st.update_status(new), keep="claim")
    step("list claims", lambda: st.list(RES_CLAIMS, ns), show=lambda r: [o["metadata"]["name"] for o in r[0]])
    claim_path = f"/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims"
    step("delete claim (finalizer)", raw("DELETE", f"{claim_path}/gpu", body={
        "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}), show=_reply_kind)
    step("get claim being deleted", lambda: st.get(RES_CLAIMS, "gpu", ns), keep="claim",
         show=lambda o: bool(o["metadata"].get("deletionTimestamp")))
    # (still reserved for p1, a pod that exists: kube-controller-manager's resourceclaim controller
    # leaves it alone; a released claim being deleted would lose its finalizer to that controller)
    new = json.loads(json.dumps(objs["claim"]))
    new["metadata"]["finalizers"] = []
    new["metadata"].pop("annotations", None)
    step("update claim: drop the finalizer", lambda: st.update(new), show=_reply_kind)
    step("get deleted claim", lambda: st.get(RES_CLAIMS, "gpu", ns))

    # -- Leases (leader election)
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "kai-binder", "namespace": ns},
             "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "acquireTime": "2026-01-01T00:00:00.000000Z",
                      "renewTime": "2026-01-01T00:00:00.000000Z", "leaseTransitions": 0}}
    step("get missing lease", lambda: st.get(LEASES, "kai-binder", ns))
    step("create lease", lambda: st.create(lease), keep="lease", show=lambda o: o["spec"]["holderIdentity"])
    step("create lease again", lambda: st.create(lease))
    remember("lease")
    new = json.loads(json.dumps(objs["lease"]))
    new["spec"]["renewTime"] = "2026-01-01T00:00:05.000000Z"
    step("update lease (renew)", lambda: st.update(new), keep="lease")
    step("update lease with a stale resourceVersion", lambda: st.update(
        dict(stale("lease"), spec=dict(lease["spec"], holderIdentity="b"))))
    new = json.loads(json.dumps(objs["lease"]))
    new["spec"]["leaseDurationSeconds"] = 0
    step("update lease with a zero duration", lambda: st.update(new))
    new = json.loads(json.dumps(objs["lease"]))
    new["spec"]["holderIdentity"] = ""
    step("update lease (release)", lambda: st.update(new), keep="lease", show=lambda o: o["spec"]["holderIdentity"])
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
    step("delete lease", raw("DELETE", f"{lease_path}/kai-binder", body={
        "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}), show=_reply_kind)

    # -- deletes of pods kai never bound, and of what is missing
    pod_path = f"/api/v1/namespaces/{ns}/pods"
    step("delete unbound pod", raw("DELETE", f"{pod_path}/p2", body={
        "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}), show=_reply_kind)
    step("delete missing pod", lambda: st.delete(RES_PODS, f"missing-{sfx}", ns))
    step("update missing pod", lambda: st.update(_pod(f"missing-{sfx}", ns)))

    # -- the watch events of all of it, kind by kind, in order
    events: dict[str, list[tuple[str, str]]] = {}
    for r in watched:
        got = []
        for ev in st.watch(r, start_rv[r], timeout=1):
            md = ev.object.get("metadata") or {}
            if ev.type == "BOOKMARK":
                continue
            if md.get("namespace", ns) == ns and (r != RES_NODES or md.get("name") == node_name):
                name = md.get("name", "")
                got.append((ev.type, "p1.<generated>" if name.startswith("p1.") and name != "p1.bound" else name))
        events[r] = got

    # -- 410 Gone: history compacted under a watch's resourceVersion and a list's continue token
    ev_path = f"/api/v1/namespaces/{ns}/events"
    first_page = st._request("GET", ev_path, query={"limit": "1"}, what="list events")
    token, old_rv = first_page["metadata"].get("continue"), first_page["metadata"]["resourceVersion"]
    step("page token handed out", lambda: bool(token), show=lambda r: r)
    for i in range(2):
        st.create(_event(ns, p1, name=f"p1.more-{i}"))
    side.compact()
    step("watch events from a compacted resourceVersion", lambda: [e.type for e in st.watch(RES_EVENTS, old_rv, 1)],
         show=lambda r: r)
    step("list events with a continue token from before the compaction",
         raw("GET", ev_path, query={"limit": "1", "continue": token}))
    return transcript, events


def normalized(side: Side, transcript, events):
    """The names each side made unique (its random suffix) made the same."""
    text = json.dumps([transcript, events]).replace(side.suffix, "<sfx>")
    transcript, events = json.loads(text)
    return [(s, tuple(codes), tuple(outcome)) for s, codes, outcome in transcript], \
        {r: [tuple(e) for e in evs] for r, evs in events.items()}


def test_the_fake_api_server_answers_kais_calls_as_the_real_one(real_side, fake_side):
    real_side.record_statuses()
    fake_side.record_statuses()
    real, real_events = normalized(real_side, *run_sequence(real_side))
    fake, fake_events = normalized(fake_side, *run_sequence(fake_side))
    assert [r[0] for r in real] == [f[0] for f in fake]
    differences = [f"{r[0]}:\n    real {r[1]} {r[2]}\n    fake {f[1]} {f[2]}" for r, f in zip(real, fake, strict=True)
                   if r != f]
    for resource in real_events:
        if real_events[resource] != fake_events[resource]:
            differences.append(f"watch {resource}:\n    real {real_events[resource]}\n    fake {fake_events[resource]}")
    assert not differences, f"{len(differences)} differences:\n" + "\n".join(differences)
    # and the sequence did what it says: the errors it means to provoke came from the real server
    outcomes = {r[0]: r[2] for r in real}
    assert outcomes["create node again"] == ("error", 409, "AlreadyExists")
    assert outcomes["update node with a stale resourceVersion"] == ("error", 409, "Conflict")
    assert outcomes["get missing pod"] == ("error", 404, "NotFound")
    assert outcomes["update_status claim with 257 consumers"] == ("error", 422, "Invalid")
    assert outcomes["watch events from a compacted resourceVersion"] == ("error", 410, "Expired")
    assert outcomes["list events with a continue token from before the compaction"] == ("error", 410, "Expired")
    assert real_events[RES_CLAIMS][0] == ("ADDED", "gpu") and real_events[RES_CLAIMS][-1] == ("DELETED", "gpu")


# -- validation of the DRA objects kai reads and the claim statuses it writes ----------------------


def _claim_obj(name: str, ns: str, *requests: dict, **devices) -> dict:
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": name, "namespace": ns},
            "spec": {"devices": {"requests": list(requests), **devices}}}


def _slice_obj(name: str, driver: str, node: str | None, devices: list, **spec) -> dict:
    body = {"driver": driver, "pool": {"name": node or "pool", "generation": 1, "resourceSliceCount": 1},
            "devices": devices, **spec}
    if node:
        body["nodeName"] = node
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": name}, "spec": body}


def validation_cases(ns: str, sfx: str) -> list[tuple[str, dict]]:
    """(what, object): objects to create, valid or not."""
    cls = f"conformance-{sfx}.example.com"
    ex = {"deviceClassName": cls}
    one = {"name": "gpu", "exactly": ex}
    node = f"conformance-node-{sfx}"
    drv = f"gpu.conformance-{sfx}.example.com"
    dev = {"name": "gpu-0", "attributes": {"model": {"string": "a100"}}, "capacity": {"memory": {"value": "80Gi"}}}
    return [
        ("a DeviceClass", {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": cls},
                           "spec": {"selectors": [{"cel": {"expression": f"device.driver == '{drv}'"}}]}}),
        ("a DeviceClass with 33 selectors", {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
                                             "metadata": {"name": f"many-{cls}"},
                                             "spec": {"selectors": [{"cel": {"expression": "true"}}] * 33}}),
        ("a claim", _claim_obj("ok", ns, one)),
        ("a claim: a request with exactly and firstAvailable", _claim_obj(
            "both", ns, {"name": "gpu", "exactly": ex, "firstAvailable": [{"name": "a", **ex}]})),
        ("a claim: a request with neither", _claim_obj("neither", ns, {"name": "gpu"})),
        ("a claim: count 0", _claim_obj("zero", ns, {"name": "gpu", "exactly": {**ex, "count": 0}})),
        ("a claim: allocationMode Some", _claim_obj("mode", ns, {"name": "gpu", "exactly": {
            **ex, "allocationMode": "Some"}})),
        ("a claim: All with a count", _claim_obj("all-count", ns, {"name": "gpu", "exactly": {
            **ex, "allocationMode": "All", "count": 2}})),
        ("a claim: a CEL syntax error", _claim_obj("cel", ns, {"name": "gpu", "exactly": {
            **ex, "selectors": [{"cel": {"expression": "device.driver =="}}]}})),
        ("a claim: 33 requests", _claim_obj("many", ns, *({"name": f"r{i}", "exactly": ex} for i in range(33)))),
        ("a claim: duplicate request names", _claim_obj("dup", ns, one, one)),
        ("a claim: a constraint on an unknown request", _claim_obj(
            "constraint", ns, one, constraints=[{"requests": ["nope"], "matchAttribute": "model"}])),
        ("a claim: a constraint naming no attribute", _claim_obj(
            "no-attr", ns, one, constraints=[{"requests": ["gpu"]}])),
        ("a claim: 9 subrequests", _claim_obj("subs", ns, {"name": "gpu", "firstAvailable": [
            {"name": f"s{i}", **ex} for i in range(9)]})),
        ("a claim: a subrequest with an invalid name", _claim_obj("subname", ns, {"name": "gpu", "firstAvailable": [
            {"name": "Bad_Sub", **ex}]})),
        ("a claim: an invalid class name", _claim_obj("class", ns, {"name": "gpu", "exactly": {
            "deviceClassName": "Bad_Class"}})),
        ("a claim: a toleration with a bad effect", _claim_obj("tol", ns, {"name": "gpu", "exactly": {
            **ex, "tolerations": [{"key": "k", "operator": "Exists", "effect": "Bogus"}]}})),
        ("a claim: an Exists toleration with a value", _claim_obj("tolv", ns, {"name": "gpu", "exactly": {
            **ex, "tolerations": [{"key": "k", "operator": "Exists", "value": "v", "effect": "NoSchedule"}]}})),
        ("a claim: a config for an unknown request", _claim_obj("cfg", ns, one, config=[
            {"requests": ["nope"], "opaque": {"driver": drv, "parameters": {"a": 1}}}])),
        ("a claim: a config with an invalid driver", _claim_obj("cfgdrv", ns, one, config=[
            {"opaque": {"driver": "Bad_Driver", "parameters": {"a": 1}}}])),
        ("a slice", _slice_obj(f"{node}-ok", drv, node, [dev])),
        ("a slice with no node scope", _slice_obj(f"{node}-noscope", drv, None, [dev])),
        ("a slice with two node scopes", _slice_obj(f"{node}-twoscopes", drv, node, [dev], allNodes=True)),
        ("a slice with 129 devices", _slice_obj(f"{node}-many", drv, node, [{"name": f"d{i}"} for i in range(129)])),
        ("a slice: an invalid device name", _slice_obj(f"{node}-devname", drv, node, [{"name": "GPU_0"}])),
        ("a slice: an invalid attribute name", _slice_obj(f"{node}-attr", drv, node, [
            {"name": "gpu-0", "attributes": {"Bad Name": {"string": "x"}}}])),
        ("a slice: an attribute with two values", _slice_obj(f"{node}-attr2", drv, node, [
            {"name": "gpu-0", "attributes": {"model": {"string": "x", "int": 1}}}])),
        ("a slice: an attribute of no type", _slice_obj(f"{node}-attr0", drv, node, [
            {"name": "gpu-0", "attributes": {"model": {}}}])),
        ("a slice: a taint with a bad effect", _slice_obj(f"{node}-taint", drv, node, [
            {"name": "gpu-0", "taints": [{"key": "k", "effect": "Bogus"}]}])),
        ("a slice: an invalid driver", _slice_obj(f"{node}-drv", "Bad_Driver", node, [dev])),
        ("a slice: duplicate device names", _slice_obj(f"{node}-dupdev", drv, node, [dev, dev])),
    ]


def status_cases(claim: dict, pod: dict, node: str, drv: str) -> list[tuple[str, dict]]:
    """(what, status): statuses written to ``claim`` (allocated and reserved for ``pod`` by the first)."""
    alloc = _allocation(node, drv)
    consumer = _consumer(pod)

    def results(**changes) -> dict:
        a = json.loads(json.dumps(alloc))
        a["devices"]["results"][0].update(changes)
        return a

    other_selector = json.loads(json.dumps(alloc))
    other_selector["nodeSelector"]["nodeSelectorTerms"][0]["matchFields"][0]["operator"] = "Bogus"
    return [
        ("results for an unknown request", {"allocation": results(request="nope"), "reservedFor": [consumer]}),
        ("results with an invalid driver", {"allocation": results(driver="Bad_Driver"), "reservedFor": [consumer]}),
        ("results with an invalid pool", {"allocation": results(pool="Bad Pool"), "reservedFor": [consumer]}),
        ("results with an invalid device", {"allocation": results(device="GPU_0"), "reservedFor": [consumer]}),
        ("results with adminAccess the request did not ask for", {"allocation": results(adminAccess=True),
                                                                  "reservedFor": [consumer]}),
        ("a node selector with a bad operator", {"allocation": other_selector, "reservedFor": [consumer]}),
        ("33 results", {"allocation": {**alloc, "devices": {"results": [
            {"request": "gpu", "driver": drv, "pool": node, "device": f"gpu-{i}"} for i in range(33)]}},
            "reservedFor": [consumer]}),
        ("a reservation without a uid", {"allocation": alloc, "reservedFor": [{"resource": "pods", "name": "p1"}]}),
        ("a reservation twice", {"allocation": alloc, "reservedFor": [consumer, consumer]}),
        ("the allocation and a reservation", {"allocation": alloc, "reservedFor": [consumer]}),
        ("another allocation once allocated", {"allocation": results(device="gpu-1"), "reservedFor": [consumer]}),
        ("no allocation while reserved", {"reservedFor": [consumer]}),
        ("released", {}),
    ]


def run_validation(side: Side) -> list[tuple]:
    st, ns, sfx = side.store, side.ns, side.suffix
    out = []
    made: list[tuple[str, str]] = []

    def outcome(call):
        try:
            obj = call()
            return ("ok",) if obj is not None else ("ok", None)
        except ApiError as exc:
            return ("error", exc.code, exc.reason)

    try:
        for what, obj in validation_cases(ns, sfx):
            result = outcome(lambda obj=obj: st.create(obj))
            out.append((what, result))
            if result[0] == "ok" and obj["kind"] in ("DeviceClass", "ResourceSlice"):
                made.append((f"{obj['kind'].lower()}es.resource.k8s.io" if obj["kind"] == "DeviceClass"
                             else "resourceslices.resource.k8s.io", obj["metadata"]["name"]))
        pod = st.create(_pod("p1", ns))
        claim = st.get(RES_CLAIMS, "ok", ns)
        node, drv = f"conformance-node-{sfx}", f"gpu.conformance-{sfx}.example.com"
        for what, status in status_cases(claim, pod, node, drv):
            claim = st.get(RES_CLAIMS, "ok", ns)
            if what != "another allocation once allocated" and (claim.get("status") or {}).get("allocation"):
                claim = st.update_status({**claim, "status": {}})  # each case from a free claim
            out.append((f"claim status: {what}", outcome(
                lambda claim=claim, status=status: st.update_status({**claim, "status": status}))))
    finally:
        for resource, name in made:
            try:
                st.delete(resource, name)
            except ApiError:
                pass
    return out


def test_the_fake_validates_dra_objects_and_claim_statuses_as_the_real_one(real_side, fake_side):
    real = json.loads(json.dumps(run_validation(real_side)).replace(real_side.suffix, "<sfx>"))
    fake = json.loads(json.dumps(run_validation(fake_side)).replace(fake_side.suffix, "<sfx>"))
    assert [r[0] for r in real] == [f[0] for f in fake]
    differences = [f"{r[0]}: real {r[1]}, fake {f[1]}" for r, f in zip(real, fake, strict=True) if r != f]
    assert not differences, f"{len(differences)} differences:\n" + "\n".join(differences)
    outcomes = dict(real)
    assert outcomes["a claim"] == outcomes["a slice"] == outcomes["claim status: released"] == ["ok"]
    assert outcomes["a claim: 33 requests"] == ["error", 422, "Invalid"]
