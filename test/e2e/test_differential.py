"""kai against kube-scheduler on the real control plane: the same workloads, on the same nodes, run
once with kube-scheduler (the one built with the control plane, its default profile) and once with
kai's scheduler and binder (processes under the chart's RBAC).

Each workload is a list of pods created one at a time, each waited for until its scheduler has
decided (bound, or ``PodScheduled=False`` with a message); then the run's pods (and their claims)
are deleted, and the other scheduler gets fresh objects. The pods are laid out so that whether a
pod fits does not depend on where the scheduler put the pods before it, and the pods left pending
come after every pod that binds: kai decides a pending pod again each cycle and rewrites its
message when the cluster changed, kube-scheduler only on events its plugins say may help, so a
message is compared once nothing changes any more.

- Where kube-scheduler binds a pod, kai binds it too, and kai's node satisfies every constraint
  (checked on the placement itself, by the test's own reading of the constraints: node selector,
  cordon, host ports, cpu, inter-pod affinity and anti-affinity both ways, DoNotSchedule spread
  at the time of each placement, PV node affinity, and devices allocated from the node's own slices,
  each to one claim, matching the class). The same checks run on kube-scheduler's placements, so a
  check that wrongly fails is caught there.
- Where kube-scheduler leaves a pod pending, kai leaves it pending with the same message, but for
  kube-scheduler's ``preemption: ...`` part (kai does not preempt, README "What kai honours";
  :func:`comparable`).
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest

HOST = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"
KUBE_SCHEDULER = "default-scheduler"
KAI_SCHEDULER = "kai-scheduler"
RUNS = (("kube", KUBE_SCHEDULER), ("kai", KAI_SCHEDULER))
DRIVER = "gpu.differential.example.com"
#: the label of the test's nodes, which every pod of the workloads selects
SET, SET_VALUE = "differential.kai.example.com/set", "yes"



# -- the runs ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kube_scheduler(controlplane):
    """kube-scheduler with its default profile for this module's tests."""
    controlplane.start_scheduler()
    yield controlplane.kube_scheduler
    controlplane.stop_scheduler()


def scheduled_condition(pod: dict) -> dict | None:
    return next((c for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] == "PodScheduled"), None)


#: what a scheduler reports while the resourceclaim controller has not made a pod's claim from its
#: template yet (kai's words, then kube-scheduler's): a moment of the pod's life, not a decision
WAITING_FOR_CLAIM = re.compile(r"waiting for (the ResourceClaim of pod claim|dynamic resource controller)")


def decided(pod: dict | None) -> bool:
    """Bound, or reported unschedulable for a reason other than a claim not made yet."""
    if pod is None:
        return False
    if pod["spec"].get("nodeName"):
        return True
    cond = scheduled_condition(pod)
    return bool(cond and cond["status"] == "False" and cond.get("reason") == "Unschedulable"
                and not WAITING_FOR_CLAIM.search(cond.get("message") or ""))


def pending_message(pod: dict) -> str | None:
    if pod["spec"].get("nodeName"):
        return None
    return scheduled_condition(pod)["message"]


def comparable(message: str) -> str:
    """A pending pod's message without kube-scheduler's PostFilter (preemption) part, which kai
    does not write (kai does not preempt, README "What kai honours"): after the summary
    ``0/N nodes are available: ....`` kube-scheduler appends `` preemption: ...`` (`` not found``
    after a PreFilter's rejection). Everything else must be equal to the letter."""
    m = re.match(r"0/\d+ nodes are available(?:: .*?)?\.(?= |$)", message)
    return m.group(0) if m is not None else message


class Runs:
    """One test's workload, run by each scheduler in turn in the test's namespace (and the
    namespaces of :attr:`namespaces`, for pods that name theirs)."""

    def __init__(self, kube, kai, namespace: str):
        self.kube, self.kai, self.ns = kube, kai, namespace
        self.namespaces = [namespace]
        self.timings: dict[str, float] = {}
        #: each run's ResourceClaims as they were before its pods were deleted
        self.claims: dict[str, dict[str, dict]] = {}

    def run(self, make_pods: Callable[[str, str], list[dict]], tick: Callable[[str], None] | None = None,
            ) -> dict[str, list[dict]]:
        """Each scheduler's pods (in creation order, as they ended up): ``make_pods(run, scheduler)``
        gives the pods; each is created once the one before is decided, with ``tick(run)`` called
        while waiting (what a controller outside the control plane does, e.g. a volume provisioner).
        The pods and their claims are deleted after each run."""
        self.kai.start("scheduler")
        self.kai.start("binder")
        out = {}
        for run, scheduler in RUNS:
            began = time.monotonic()
            keys = []
            for pod in make_pods(run, scheduler):
                key = (pod["metadata"].get("namespace") or self.ns, pod["metadata"]["name"])
                self.kube.create(pod, key[0])
                keys.append(key)
                got = self.kai.wait_for(lambda key=key, run=run: self._decided(key, run, tick),
                                        f"{run}: pod {key} to be bound or reported unschedulable", timeout=90)
                assert got["spec"].get("schedulerName") == scheduler or got["spec"].get("nodeName")
            out[run] = [self.kube.get("v1", "Pod", name, ns) for ns, name in keys]
            self.claims[run] = {c["metadata"]["name"]: c for c in
                                self.kube.list("resource.k8s.io/v1", "ResourceClaim", self.ns)}
            self.timings[run] = time.monotonic() - began
            self.clear()
        return out

    def _decided(self, key: tuple[str, str], run: str, tick) -> dict | None:
        if tick is not None:
            tick(run)
        pod = self.kube.get("v1", "Pod", key[1], key[0])
        return pod if decided(pod) else None

    def clear(self) -> None:
        """Delete the run's pods (no kubelet: at once) and the claims the workload made itself, and
        wait until they and the claims made for the pods from templates are gone, so that the next
        run finds the nodes and devices free."""
        for ns in self.namespaces:
            for pod in self.kube.list("v1", "Pod", ns):
                self.kube.delete("v1", "Pod", pod["metadata"]["name"], ns, grace=0)
            for c in self.kube.list("resource.k8s.io/v1", "ResourceClaim", ns):
                if not c["metadata"].get("ownerReferences"):  # not a template's: the controller leaves it
                    self.kube.delete("resource.k8s.io/v1", "ResourceClaim", c["metadata"]["name"], ns)
        self.kai.wait_for(lambda: not any(self.kube.list("v1", "Pod", ns) or self.kube.list(
            "resource.k8s.io/v1", "ResourceClaim", ns) for ns in self.namespaces),
                          "the run's pods and their claims to be deleted", timeout=60)


@pytest.fixture
def runs(kube, kai, namespace, kube_scheduler) -> Runs:
    r = Runs(kube, kai, namespace)
    yield r
    print(f"differential timings (s): {r.timings}")


def pod(name: str, scheduler: str, labels: dict | None = None, cpu: str = "100m", ports: list[dict] | None = None,
        node_selector: dict | None = None, memory: str = "", **spec) -> dict:
    """A pod kept to the test's nodes (other tests of the session may have left nodes behind: those
    count, for both schedulers alike, as ``didn't match Pod's node affinity/selector``)."""
    container = {"name": "c", "image": "busybox:1",
                 "resources": {"requests": {"cpu": cpu, **({"memory": memory} if memory else {})}}}
    if ports:
        container["ports"] = ports
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"schedulerName": scheduler, "terminationGracePeriodSeconds": 0, "containers": [container],
                     "nodeSelector": {SET: SET_VALUE, **(node_selector or {})}, **spec}}


def zoned_nodes(nodes, namespace: str, small_cpu: str = "8") -> list[dict]:
    """n1, n2 in zone a; n3 (``small_cpu`` CPUs) in zone b."""
    out = []
    for i, zone in enumerate(("a", "a", "b")):
        name = f"{namespace}-n{i + 1}"
        cpu = small_cpu if i == 2 else "8"
        out.append(nodes.add(name, labels={HOST: name, ZONE: f"{namespace}-{zone}", SET: SET_VALUE},
                             capacity={"cpu": cpu, "memory": "32Gi", "pods": "110"}))
    return out


# -- the test's own reading of the constraints -----------------------------------------------------------


def matches(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        has, value = e["key"] in labels, labels.get(e["key"])
        ok = {"In": has and value in e.get("values", []), "NotIn": not has or value not in e.get("values", []),
              "Exists": has, "DoesNotExist": not has}[e["operator"]]
        if not ok:
            return False
    return True


class Placement:
    """The bound pods of one run (in the order they were placed) on the cluster's nodes."""

    def __init__(self, kube, pods: list[dict]):
        self.kube = kube
        self.nodes = {n["metadata"]["name"]: n for n in kube.list("v1", "Node")}
        self.namespace_labels = {ns["metadata"]["name"]: ns["metadata"].get("labels") or {}
                                 for ns in kube.list("v1", "Namespace")}
        self.pods = [p for p in pods if p["spec"].get("nodeName")]

    def term_selects(self, term: dict, owner: dict, other: dict) -> bool:
        """Whether ``owner``'s pod (anti-)affinity term selects the pod ``other``: its labels, and
        its namespace among the term's ``namespaces`` and ``namespaceSelector``'s (the owner's own
        namespace when neither is given)."""
        ns = other["metadata"]["namespace"]
        if term.get("namespaceSelector") is None and not term.get("namespaces"):
            in_scope = ns == owner["metadata"]["namespace"]
        else:
            in_scope = ns in (term.get("namespaces") or []) or (term.get("namespaceSelector") is not None and matches(
                term["namespaceSelector"], self.namespace_labels.get(ns, {})))
        return in_scope and matches(term["labelSelector"], other["metadata"].get("labels") or {})

    def node_labels(self, pod: dict) -> dict:
        return self.nodes[pod["spec"]["nodeName"]]["metadata"].get("labels") or {}

    def violations(self) -> list[str]:
        out = []
        for i, p in enumerate(self.pods):
            out += [f"{p['metadata']['name']} on {p['spec']['nodeName']}: {v}" for v in self.of(p, self.pods[:i])]
        return out + self.shared()

    def of(self, p: dict, before: list[dict]) -> list[str]:
        """What ``p``'s placement breaks, given the pods placed before it."""
        out, spec, labels = [], p["spec"], self.node_labels(p)
        node = self.nodes[spec["nodeName"]]
        if node["spec"].get("unschedulable") and not any(
                t.get("key") == "node.kubernetes.io/unschedulable" for t in spec.get("tolerations") or []):
            out.append("the node is cordoned")
        if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
            out.append("nodeSelector")
        if untolerated(node, spec):
            out.append(f"untolerated taints {untolerated(node, spec)}")
        affinity = spec.get("affinity") or {}
        for term in (affinity.get("podAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or []:
            key = term["topologyKey"]
            anywhere = [q for q in before if self.term_selects(term, p, q)]
            near = [q for q in anywhere if self.node_labels(q).get(key) == labels.get(key)]
            first = not anywhere and self.term_selects(term, p, p)
            if not near and not first:
                out.append(f"pod affinity over {key}")
        for q in before:  # anti-affinity both ways
            for a, b in ((p, q), (q, p)):
                terms = ((a["spec"].get("affinity") or {}).get("podAntiAffinity") or {}).get(
                    "requiredDuringSchedulingIgnoredDuringExecution") or []
                for term in terms:
                    key = term["topologyKey"]
                    if self.node_labels(q).get(key) == labels.get(key) and self.term_selects(term, a, b):
                        out.append(f"anti-affinity of {a['metadata']['name']} over {key} with {b['metadata']['name']}")
        for c in spec.get("topologySpreadConstraints") or []:
            if c["whenUnsatisfiable"] == "DoNotSchedule":
                out += self.skew(p, c, before)
        return out

    def skew(self, p: dict, c: dict, before: list[dict]) -> list[str]:
        """kube-scheduler's skew of ``p``'s domain once ``p`` is placed: pods matching the
        constraint's selector on eligible nodes (nodeAffinityPolicy, nodeTaintsPolicy), the global
        minimum 0 while there are fewer eligible domains than ``minDomains``."""
        key, spec = c["topologyKey"], p["spec"]
        eligible = {name: (n["metadata"].get("labels") or {}).get(key) for name, n in self.nodes.items()
                    if key in (n["metadata"].get("labels") or {})
                    and (c.get("nodeAffinityPolicy", "Honor") == "Ignore" or all(
                        (n["metadata"].get("labels") or {}).get(k) == v for k, v in spec["nodeSelector"].items()))
                    and (c.get("nodeTaintsPolicy", "Ignore") == "Ignore" or not untolerated(n, spec))}
        counts = Counter(dict.fromkeys(eligible.values(), 0))
        for q in [*before, p]:
            if q["spec"]["nodeName"] in eligible and q["metadata"]["namespace"] == p["metadata"]["namespace"] and (
                    matches(c["labelSelector"], q["metadata"].get("labels") or {})):
                counts[eligible[q["spec"]["nodeName"]]] += 1
        low = 0 if len(counts) < c.get("minDomains", 1) else min(counts.values())
        skew = counts[eligible.get(spec["nodeName"])] - low
        if skew > c["maxSkew"]:
            return [f"spread over {key}: skew {skew} > {c['maxSkew']} ({dict(counts)})"]
        return []

    def shared(self) -> list[str]:
        """What the pods of one node break together: host ports, resources and the pod count."""
        out = []
        by_node = defaultdict(list)
        for p in self.pods:
            by_node[p["spec"]["nodeName"]].append(p)
        for name, pods in by_node.items():
            ports = Counter((port.get("protocol", "TCP"), port["hostPort"]) for p in pods
                            for c in p["spec"]["containers"] for port in c.get("ports") or [] if port.get("hostPort"))
            out += [f"{name}: host port {k} used {n} times" for k, n in ports.items() if n > 1]
            allocatable = self.nodes[name]["status"]["allocatable"]
            for resource in ("cpu", "memory", "ephemeral-storage"):
                asked = sum(pod_request(p, resource) for p in pods)
                if asked > quantity(allocatable.get(resource, "0")):
                    out.append(f"{name}: {asked} {resource} requested")
            if len(pods) > quantity(allocatable["pods"]):
                out.append(f"{name}: {len(pods)} pods")
        return out


def pod_request(p: dict, resource: str) -> float:
    """What a pod asks of a node: its containers' sum or its largest init container, whichever is
    more, plus its overhead (the tests' pods have no sidecars)."""
    def asked(c: dict) -> float:
        return quantity(((c.get("resources") or {}).get("requests") or {}).get(resource, "0"))

    spec = p["spec"]
    return (max(sum(map(asked, spec["containers"])), max(map(asked, spec.get("initContainers") or []), default=0))
            + quantity((spec.get("overhead") or {}).get(resource, "0")))


def quantity(q: str) -> float:
    """The quantities the test writes (``100m``, ``2``, ``16Gi``) as numbers."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    unit = next((u for u in units if q.endswith(u)), "")
    return float(q[: len(q) - len(unit)]) * units.get(unit, 1)


def untolerated(node: dict, spec: dict) -> list[dict]:
    """The node's NoSchedule/NoExecute taints the pod does not tolerate."""
    def tolerates(t: dict, taint: dict) -> bool:
        return (t.get("key") in (None, "", taint["key"]) if t.get("operator") == "Exists"
                else t.get("key") == taint["key"] and t.get("value", "") == taint.get("value", "")) and (
            t.get("effect") in (None, "", taint["effect"]))

    return [taint for taint in node["spec"].get("taints") or [] if taint["effect"] in ("NoSchedule", "NoExecute")
            and not any(tolerates(t, taint) for t in spec.get("tolerations") or [])]


def compare(result: dict[str, list[dict]], kube, placement_checks: Callable[[str, Placement], list[str]] | None = None,
            ) -> dict[str, tuple[str | None, str | None]]:
    """kai against kube-scheduler, pod by pod (see the module docstring); returns each pod's
    (kube-scheduler's node or message, kai's) for the test's own assertions."""
    kube_pods = {p["metadata"]["name"]: p for p in result["kube"]}
    kai_pods = {p["metadata"]["name"]: p for p in result["kai"]}
    assert list(kube_pods) == list(kai_pods)
    for run in ("kube", "kai"):
        placement = Placement(kube, result[run])
        broken = placement.violations() + (placement_checks(run, placement) if placement_checks else [])
        assert not broken, f"{run}'s placements break constraints: {broken}"
    outcome = {}
    for name, kp in kube_pods.items():
        ap = kai_pods[name]
        if kp["spec"].get("nodeName"):
            assert ap["spec"].get("nodeName"), (
                f"kube-scheduler bound {name}, kai left it pending: {pending_message(ap)!r}")
            outcome[name] = (kp["spec"]["nodeName"], ap["spec"]["nodeName"])
        else:
            want = pending_message(kp)
            assert not ap["spec"].get("nodeName"), (
                f"kube-scheduler left {name} pending ({want!r}), kai bound it to {ap['spec']['nodeName']}")
            got = pending_message(ap)
            assert comparable(got) == comparable(want), f"{name}: kai says {got!r}, kube-scheduler {want!r}"
            outcome[name] = (want, got)
    return outcome


def pending(outcome: dict) -> set[str]:
    """The pods kube-scheduler (and so kai) left pending: a message, not a node's name."""
    return {name for name, (k, _) in outcome.items() if " " in k}


# -- the workloads ---------------------------------------------------------------------------------------


def anti(key: str, **match) -> dict:
    return {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": match}, "topologyKey": key}]}


def test_inter_pod_affinity_and_anti_affinity(runs, nodes, namespace, kube):
    zoned_nodes(nodes, namespace)

    def workload(run: str, scheduler: str) -> list[dict]:
        web = [pod(f"web-{i}", scheduler, {"app": "web"}, affinity={"podAntiAffinity": anti(HOST, app="web")})
               for i in range(4)]  # one per node: the fourth has none left
        db = [pod(f"db-{i}", scheduler, {"app": "db"},
                  affinity={"podAffinity": anti(ZONE, app="web"), "podAntiAffinity": anti(ZONE, app="db")})
              for i in range(3)]  # next to a web pod, one per zone: the third has none left
        guard = pod("guard", scheduler, {"app": "guard"},
                    affinity={"podAntiAffinity": anti(ZONE, role="intruder")})
        intruder = pod("intruder", scheduler, {"role": "intruder"})  # kept out of the guard's zone
        lonely = pod("lonely", scheduler, {"app": "lonely"}, affinity={"podAffinity": anti(HOST, app="ghost")})
        first = pod("first", scheduler, {"app": "first"}, affinity={"podAffinity": anti(ZONE, app="first")})
        return [*web[:3], *db[:2], guard, intruder, first, web[3], db[2], lonely]

    outcome = compare(runs.run(workload), kube)
    assert pending(outcome) == {"web-3", "db-2", "lonely"}


def test_topology_spread_do_not_schedule(runs, nodes, namespace, kube):
    zoned_nodes(nodes, namespace, small_cpu="2")  # zone b holds one spread pod

    def workload(run: str, scheduler: str) -> list[dict]:
        def spread(name: str, app: str, key: str) -> dict:
            return pod(name, scheduler, {"app": app}, cpu="1500m", topologySpreadConstraints=[
                {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "DoNotSchedule",
                 "labelSelector": {"matchLabels": {"app": app}}}])

        # zones a, b, then a (b is full), then a again would make the skew 2
        zone = [spread(f"zone-{i}", "zone", ZONE) for i in range(4)]
        rack = spread("rack", "rack", "example.com/rack")  # no node has the label
        return [*zone, rack]

    outcome = compare(runs.run(workload), kube)
    assert pending(outcome) == {"zone-3", "rack"}


def test_host_ports_and_a_cordoned_node(runs, nodes, namespace, kube):
    names = [n["metadata"]["name"] for n in zoned_nodes(nodes, namespace)]
    kube.call("PATCH", kube.path("v1", "Node", names[2]), {"spec": {"unschedulable": True}},
              content_type="application/merge-patch+json")

    def workload(run: str, scheduler: str) -> list[dict]:
        def http(name: str, protocol: str = "TCP", **spec) -> dict:
            return pod(name, scheduler, {"app": "http"},
                       ports=[{"containerPort": 80, "hostPort": 8080, "protocol": protocol}], **spec)

        tolerant = http("tolerant", tolerations=[{"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
                                                  "effect": "NoSchedule"}], node_selector={HOST: names[2]})
        # one term naming two nodes (NodeAffinity's PreFilter: "pod affinity terms conflict")
        conflict = pod("conflict", scheduler, affinity={"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [name]} for name in names[:2]]}]}}})
        # a DaemonSet's pod for the cordoned node: only that node is tried, every other counted
        # under NodeAffinity's PreFilter result
        daemon = pod("daemon", scheduler, affinity={"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [names[2]]}]}]}}})
        return [http("http-0"), http("http-1"), http("udp", "UDP"), tolerant,
                http("http-2"),  # both schedulable nodes have the port taken
                pod("cordoned", scheduler, node_selector={HOST: names[2]}), conflict, daemon]

    outcome = compare(runs.run(workload), kube)
    assert pending(outcome) == {"http-2", "cordoned", "conflict", "daemon"}
    assert "node(s) didn't satisfy plugin(s) [NodeAffinity]" in outcome["daemon"][0], outcome["daemon"]
    assert comparable(outcome["conflict"][0]).endswith(": pod affinity terms conflict."), outcome["conflict"]
    assert outcome["tolerant"] == (names[2], names[2])


@pytest.fixture
def storage(kube, namespace):
    """The test's cluster-scoped StorageClasses and PVs (by apiVersion, kind, name); afterwards they
    and the namespace's claims are deleted, with the protection finalizers the API server's admission
    put on them removed first (no pvc/pv-protection controller runs; no pod uses them by then)."""
    made: list[tuple[str, str, str]] = []
    yield made
    for p in kube.list("v1", "Pod", namespace):
        kube.delete("v1", "Pod", p["metadata"]["name"], namespace, grace=0)
    objs = [("v1", "PersistentVolumeClaim", c["metadata"]["name"], namespace)
            for c in kube.list("v1", "PersistentVolumeClaim", namespace)]
    for api_version, kind, name, ns in [*objs, *((v, k, n, "") for v, k, n in made)]:
        if (kube.get(api_version, kind, name, ns) or {}).get("metadata", {}).get("finalizers"):
            kube.call("PATCH", kube.path(api_version, kind, name, ns), {"metadata": {"finalizers": None}},
                      content_type="application/merge-patch+json")
        kube.delete(api_version, kind, name, ns)


def local_pv(name: str, node: str, cls: str, size: str = "10Gi") -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "storageClassName": cls,
                     "persistentVolumeReclaimPolicy": "Retain", "local": {"path": f"/mnt/{name}"},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [
                         {"matchExpressions": [{"key": HOST, "operator": "In", "values": [node]}]}]}}}}


def claim(name: str, cls: str, size: str = "1Gi", volume: str = "") -> dict:
    spec = {"accessModes": ["ReadWriteOnce"], "storageClassName": cls, "resources": {"requests": {"storage": size}}}
    if volume:
        spec["volumeName"] = volume
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": spec}


def selects(node_selector: dict, node: dict) -> bool:
    """A NodeSelector (terms ORed, expressions ANDed) on the node's labels and name."""
    labels, name = node["metadata"].get("labels") or {}, node["metadata"]["name"]
    ops = {"In": lambda v, vs: v in vs, "NotIn": lambda v, vs: v not in vs,
           "Exists": lambda v, vs: v is not None, "DoesNotExist": lambda v, vs: v is None}
    return any(
        all(ops[e["operator"]](labels.get(e["key"]), e.get("values") or []) for e in t.get("matchExpressions") or [])
        and all(ops[e["operator"]](name if e["key"] == "metadata.name" else None, e.get("values") or [])
                for e in t.get("matchFields") or [])
        for t in node_selector["nodeSelectorTerms"])


def storage_class(kube, storage: list, name: str, provisioner: str, mode: str = "WaitForFirstConsumer",
                  zones: list[str] | None = None) -> None:
    cls = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
           "provisioner": provisioner, "volumeBindingMode": mode}
    if zones is not None:
        cls["allowedTopologies"] = [{"matchLabelExpressions": [{"key": ZONE, "values": zones}]}]
    kube.create(cls)
    storage.append(("storage.k8s.io/v1", "StorageClass", name))


def mounting(name: str, scheduler: str, claim_name: str) -> dict:
    p = pod(name, scheduler)
    p["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    p["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim_name}}]
    return p


def volume_checks(kube, namespace: str) -> Callable[[str, Placement], list[str]]:
    """Each bound pod's claims are bound to PVs whose node affinity selects the pod's node and whose
    zone label (VolumeZone) is the node's."""

    def check(run: str, placement: Placement) -> list[str]:
        out = []
        for p in placement.pods:
            node = placement.nodes[p["spec"]["nodeName"]]
            for v in p["spec"].get("volumes") or []:
                if "persistentVolumeClaim" not in v:
                    continue
                c = kube.get("v1", "PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"], namespace)
                pv = kube.get("v1", "PersistentVolume", c["spec"].get("volumeName") or "-")
                affinity = ((pv or {}).get("spec", {}).get("nodeAffinity") or {}).get("required")
                zone = ((pv or {}).get("metadata", {}).get("labels") or {}).get(ZONE)
                if pv is None or (affinity and not selects(affinity, node)) or (
                        zone and zone != (node["metadata"].get("labels") or {}).get(ZONE)):
                    volume = pv and pv["metadata"]["name"]
                    out.append(f"{run}: {p['metadata']['name']} on {node['metadata']['name']} with volume {volume}")
        return out

    return check


def test_volumes_pv_node_affinity_and_wait_for_first_consumer(runs, nodes, namespace, kube, storage):
    names = [n["metadata"]["name"] for n in zoned_nodes(nodes, namespace)]
    local, later = f"{namespace}-local", f"{namespace}-later"
    storage_class(kube, storage, local, "kubernetes.io/no-provisioner")
    storage_class(kube, storage, later, "csi.example.com", "Immediate")

    def workload(run: str, scheduler: str) -> list[dict]:
        disk, pinned = f"{namespace}-{run}-disk", f"{namespace}-{run}-pinned"
        for pv in (local_pv(disk, names[1], local), local_pv(pinned, names[0], local)):
            kube.create(pv)
            storage.append(("v1", "PersistentVolume", pv["metadata"]["name"]))
        for c in (claim(f"{run}-data", local), claim(f"{run}-pinned", local, volume=pinned),
                  claim(f"{run}-big", local, size="100Gi"), claim(f"{run}-later", later)):
            kube.create(c, namespace)
        runs.kai.wait_for(lambda: all((kube.get("v1", "PersistentVolume", pv).get("status") or {}).get("phase")
                                      in ("Available", "Bound") for pv in (disk, pinned))
                          and (kube.get("v1", "PersistentVolumeClaim", f"{run}-pinned", namespace).get("status")
                               or {}).get("phase") == "Bound",
                          "the PV controller to make the volumes Available and bind the pre-bound claim")

        return [mounting("app", scheduler, f"{run}-data"), mounting("pinned", scheduler, f"{run}-pinned"),
                mounting("big", scheduler, f"{run}-big"),  # no volume is large enough, and nothing provisions one
                mounting("later", scheduler, f"{run}-later")]  # its Immediate claim is not bound

    outcome = compare(runs.run(workload), kube, volume_checks(kube, namespace))
    assert pending(outcome) == {"big", "later"}
    assert outcome["app"] == (names[1], names[1]) and outcome["pinned"] == (names[0], names[0])


def gpu_slice(node: str, models: list[str], groups: list[str] | None = None) -> dict:
    """The node's GPUs: attribute ``model`` (and ``group``, for matchAttribute)."""
    groups = groups or [""] * len(models)
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": f"{node}-gpus"},
            "spec": {"driver": DRIVER, "nodeName": node,
                     "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                     "devices": [{"name": f"gpu-{i}", "attributes": {
                         "model": {"string": m}, **({"group": {"string": g}} if g else {})}}
                         for i, (m, g) in enumerate(zip(models, groups, strict=True))]}}


#: the only CEL selector the tests write besides the class's
MODEL_SELECTOR = re.compile(r'device\.attributes\["[^"]+"\]\.model == "([^"]+)"')


def model_selector(model: str) -> list[dict]:
    return [{"cel": {"expression": f'device.attributes["{DRIVER}"].model == "{model}"'}}]


@pytest.fixture
def gpu_class(kube, namespace) -> str:
    """A DeviceClass of the test's driver's devices; deleted afterwards."""
    name = f"{namespace}-gpu"
    kube.create({"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": name},
                 "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{DRIVER}"'}}]}})
    yield name
    kube.delete("resource.k8s.io/v1", "DeviceClass", name)


def claiming(scheduler: str, name: str, template: str) -> dict:
    """A pod with one claim ``gpus`` made from ``template``."""
    p = pod(name, scheduler, resourceClaims=[{"name": "gpus", "resourceClaimTemplateName": template}])
    p["spec"]["containers"][0]["resources"]["claims"] = [{"name": "gpus"}]
    return p


def claim_problems(c: dict, pod: dict, node: dict, devices: dict[str, dict]) -> list[str]:
    """What is wrong with claim ``c``'s allocation for ``pod`` on ``node`` (whose devices of the
    test's driver are ``devices``), read against the claim's own spec: the node selector, the
    reservation, each request's (or the chosen subrequest's) selector and count (``All``: every
    matching device of the node), devices of the node's own pool, and ``matchAttribute``."""
    alloc, name = c["status"]["allocation"], node["metadata"]["name"]
    out = []
    if not selects(alloc["nodeSelector"], node):
        out.append(f"node selector {alloc['nodeSelector']}")
    if c["status"].get("reservedFor") != [{"resource": "pods", "name": pod["metadata"]["name"],
                                           "uid": pod["metadata"]["uid"]}]:
        out.append(f"reserved for {c['status'].get('reservedFor')}")
    results = alloc["devices"]["results"]
    for r in results:
        if (r["driver"], r["pool"]) != (DRIVER, name) or r["device"] not in devices:
            out.append(f"{r} is no device of the node")
    def model(r: dict) -> str:
        return (devices.get(r["device"]) or {}).get("attributes", {}).get("model", {}).get("string")
    for req in c["spec"]["devices"]["requests"]:
        options = {req["name"]: req["exactly"]} if "exactly" in req else {
            f"{req['name']}/{sub['name']}": sub for sub in req["firstAvailable"]}
        used = {r["request"] for r in results if r["request"].split("/")[0] == req["name"]}
        if len(used) != 1 or not used <= set(options):
            out.append(f"request {req['name']} answered by {used}")
            continue
        [chosen] = used
        spec, mine = options[chosen], [r for r in results if r["request"] == chosen]
        wanted = [m.group(1) for sel in spec.get("selectors") or []
                  if (m := MODEL_SELECTOR.fullmatch(sel["cel"]["expression"]))]
        if any(model(r) not in wanted for r in mine if wanted):
            out.append(f"{chosen}: models {[model(r) for r in mine]}, wanted {wanted}")
        count = (len([d for d in devices.values() if not wanted or d["attributes"]["model"]["string"] in wanted])
                 if spec.get("allocationMode") == "All" else spec.get("count", 1))
        if len(mine) != count:
            out.append(f"{chosen}: {len(mine)} device(s), wanted {count}")
    for constraint in c["spec"]["devices"].get("constraints") or []:
        key = constraint["matchAttribute"].split("/", 1)[1]
        values = {(devices.get(r["device"]) or {}).get("attributes", {}).get(key, {}).get("string") for r in results
                  if not constraint.get("requests") or r["request"].split("/")[0] in constraint["requests"]}
        if len(values) != 1 or None in values:
            out.append(f"matchAttribute {key}: {values}")
    return out


def device_checks(kube, runs: Runs) -> Callable[[str, Placement], list[str]]:
    """Each bound pod's claims (as they were before the run's end) are allocated as :func:`claim_problems`
    checks, and no device goes to two claims."""

    def check(run: str, placement: Placement) -> list[str]:
        slices = {s["spec"]["nodeName"]: s for s in kube.list("resource.k8s.io/v1", "ResourceSlice")
                  if s["spec"]["driver"] == DRIVER}
        out, taken = [], Counter()
        for p in placement.pods:
            node = p["spec"]["nodeName"]
            devices = {d["name"]: d for d in (slices.get(node) or {"spec": {"devices": []}})["spec"]["devices"]}
            for status in p["status"].get("resourceClaimStatuses") or []:
                c = runs.claims[run][status["resourceClaimName"]]
                out += [f"{run}: {p['metadata']['name']} on {node}: {problem}"
                        for problem in claim_problems(c, p, placement.nodes[node], devices)]
                results = c["status"]["allocation"]["devices"]["results"]
                taken.update((r["driver"], r["pool"], r["device"]) for r in results)
        return out + [f"{run}: {d} allocated {n} times" for d, n in taken.items() if n > 1]

    return check


def test_dra_claims_from_templates(runs, nodes, namespace, kube, gpu_class):
    cls = gpu_class
    n1, n2, n3 = (f"{namespace}-n{i}" for i in (1, 2, 3))
    devices = {n1: ["a100", "h100"], n2: ["a100"]}  # n3 has none
    for name in (n1, n2, n3):
        nodes.add(name, labels={HOST: name, SET: SET_VALUE}, capacity={"cpu": "8", "memory": "32Gi", "pods": "110"},
                  slices=[gpu_slice(name, devices[name])] if name in devices else [])
    for name, count, model in (("one", 1, None), ("two", 2, None), ("h100", 1, "h100")):
        request = {"deviceClassName": cls, "allocationMode": "ExactCount", "count": count}
        if model:
            request["selectors"] = model_selector(model)
        kube.create({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                     "metadata": {"name": name, "namespace": namespace},
                     "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": request}]}}}})

    def workload(run: str, scheduler: str) -> list[dict]:
        return [claiming(scheduler, "pair", "two"),  # only n1 has two devices
                claiming(scheduler, "single", "one"),  # n2's
                claiming(scheduler, "third", "one"),  # every device is taken
                claiming(scheduler, "h100", "h100")]

    outcome = compare(runs.run(workload), kube, device_checks(kube, runs))
    assert pending(outcome) == {"third", "h100"}
    assert outcome["pair"] == (n1, n1) and outcome["single"] == (n2, n2)


def test_taints_memory_and_spread_policies(runs, nodes, namespace, kube):
    names = [n["metadata"]["name"] for n in zoned_nodes(nodes, namespace)]
    dedicated = {"key": "example.com/dedicated", "value": "gpu", "effect": "NoSchedule"}
    kube.call("PATCH", kube.path("v1", "Node", names[2]), {"spec": {"taints": [dedicated]}},
              content_type="application/merge-patch+json")
    tolerate = [{"key": "example.com/dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]

    def workload(run: str, scheduler: str) -> list[dict]:
        def spread(name: str, app: str, key: str = ZONE, **more) -> dict:
            policies = ("minDomains", "nodeAffinityPolicy", "nodeTaintsPolicy")
            constraint = {k: v for k, v in more.items() if k in policies}
            rest = {k: v for k, v in more.items() if k not in constraint}
            return pod(name, scheduler, {"app": app}, topologySpreadConstraints=[
                {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "DoNotSchedule",
                 "labelSelector": {"matchLabels": {"app": app}}, **constraint}], **rest)

        zone_a = {ZONE: f"{namespace}-a"}
        return [
            pod("memory-0", scheduler, memory="20Gi"), pod("memory-1", scheduler, memory="20Gi"),
            pod("dedicated", scheduler, tolerations=tolerate, node_selector={ZONE: f"{namespace}-b"}),
            # the tainted zone b is no domain of theirs: all three go to zone a
            *(spread(f"honour-{i}", "honour", nodeTaintsPolicy="Honor") for i in range(3)),
            # zone b counts (with nothing in it): a second in zone a would make the skew 2
            spread("ignore-0", "ignore"),
            # two zones and minDomains 3: the global minimum is 0, one pod per zone
            *(spread(f"few-{i}", "few", minDomains=3, tolerations=tolerate) for i in range(2)),
            # zone b counts though the pod may not go there
            spread("ignore-affinity-0", "aff", nodeAffinityPolicy="Ignore", node_selector=zone_a, tolerations=tolerate),
            # the pods left pending, once every other pod is placed
            spread("ignore-1", "ignore"), spread("few-2", "few", minDomains=3, tolerations=tolerate),
            spread("ignore-affinity-1", "aff", nodeAffinityPolicy="Ignore", node_selector=zone_a, tolerations=tolerate),
            pod("memory-2", scheduler, memory="20Gi"),  # 32Gi nodes, zone a's hold 20Gi each, b is tainted
        ]

    outcome = compare(runs.run(workload), kube)
    assert pending(outcome) == {"memory-2", "ignore-1", "few-2", "ignore-affinity-1"}
    assert outcome["dedicated"] == (names[2], names[2])
    assert {outcome[f"honour-{i}"][1] for i in range(3)} <= set(names[:2])


SELECTED_NODE = "volume.kubernetes.io/selected-node"


def play_provisioner(kube, namespace: str, storage: list, classes: set[str]) -> Callable[[str], None]:
    """An external provisioner of ``classes``, played: for each claim given a node
    (``volume.kubernetes.io/selected-node``, by kube-scheduler or kai's binder) and not yet bound,
    a PV on that node, pre-bound to the claim; the PV controller then binds them."""

    def tick(run: str) -> None:
        for c in kube.list("v1", "PersistentVolumeClaim", namespace):
            node = (c["metadata"].get("annotations") or {}).get(SELECTED_NODE)
            name = f"{namespace}-{c['metadata']['name']}"
            if not node or c["spec"].get("storageClassName") not in classes or c["spec"].get("volumeName") or (
                    kube.get("v1", "PersistentVolume", name) is not None):
                continue
            pv = local_pv(name, node, c["spec"]["storageClassName"], size="1Gi")
            pv["metadata"]["annotations"] = {"pv.kubernetes.io/provisioned-by": "csi.example.com"}
            pv["spec"]["claimRef"] = {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": namespace,
                                      "name": c["metadata"]["name"], "uid": c["metadata"]["uid"]}
            pv["spec"]["persistentVolumeReclaimPolicy"] = "Retain"
            kube.create(pv)
            storage.append(("v1", "PersistentVolume", name))

    return tick


def test_volume_zones_class_topologies_provisioning_and_missing_claims(runs, nodes, namespace, kube, storage):
    names = [n["metadata"]["name"] for n in zoned_nodes(nodes, namespace)]
    manual, nowhere, zone_b = f"{namespace}-manual", f"{namespace}-nowhere", f"{namespace}-zone-b"
    storage_class(kube, storage, manual, "kubernetes.io/no-provisioner")
    storage_class(kube, storage, nowhere, "csi.example.com", zones=[f"{namespace}-c"])  # a zone without nodes
    storage_class(kube, storage, zone_b, "csi.example.com", zones=[f"{namespace}-b"])

    def workload(run: str, scheduler: str) -> list[dict]:
        for zone in ("b", "c"):  # volumes of a zone (VolumeZone), pre-bound to their claims
            pv = f"{namespace}-{run}-zone-{zone}"
            kube.create({"apiVersion": "v1", "kind": "PersistentVolume",
                         "metadata": {"name": pv, "labels": {ZONE: f"{namespace}-{zone}"}},
                         "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                                  "storageClassName": manual, "persistentVolumeReclaimPolicy": "Retain",
                                  "hostPath": {"path": f"/mnt/{pv}"}}})
            storage.append(("v1", "PersistentVolume", pv))
            kube.create(claim(f"{run}-zone-{zone}", manual, volume=pv), namespace)
        kube.create(claim(f"{run}-nowhere", nowhere), namespace)
        kube.create(claim(f"{run}-provisioned", zone_b), namespace)
        runs.kai.wait_for(lambda: all((kube.get("v1", "PersistentVolumeClaim", f"{run}-zone-{z}", namespace).get(
            "status") or {}).get("phase") == "Bound" for z in "bc"), "the PV controller to bind the pre-bound claims")
        return [mounting("zone-b", scheduler, f"{run}-zone-b"),
                # its class provisions in zone b: bound once the provisioner made its volume there
                mounting("provisioned", scheduler, f"{run}-provisioned"),
                mounting("zone-c", scheduler, f"{run}-zone-c"),  # no node in its volume's zone
                mounting("nowhere", scheduler, f"{run}-nowhere"),  # its class provisions in zone c only
                mounting("missing", scheduler, "no-such-claim")]

    provisioner = play_provisioner(kube, namespace, storage, {zone_b})
    outcome = compare(runs.run(workload, provisioner), kube, volume_checks(kube, namespace))
    assert pending(outcome) == {"zone-c", "nowhere", "missing"}
    assert outcome["zone-b"] == outcome["provisioned"] == (names[2], names[2])


def test_dra_prioritized_lists_match_attribute_and_all(runs, nodes, namespace, kube, gpu_class):
    cls = gpu_class
    n1, n2, n3 = (f"{namespace}-n{i}" for i in (1, 2, 3))
    devices = {n1: (["a100", "a100"], ["x", "y"]), n2: (["a100", "a100"], ["x", "x"]), n3: (["h100"], ["z"])}
    for name, (models, groups) in devices.items():
        nodes.add(name, labels={HOST: name, SET: SET_VALUE}, capacity={"cpu": "8", "memory": "32Gi", "pods": "110"},
                  slices=[gpu_slice(name, models, groups)])

    def exactly(count: int = 1, model: str | None = None, mode: str = "ExactCount") -> dict:
        out = {"deviceClassName": cls, "allocationMode": mode, **({"count": count} if mode == "ExactCount" else {})}
        return {**out, "selectors": model_selector(model)} if model else out

    templates = {
        # two GPUs of one group: n2's (n1's two differ)
        "linked": {"requests": [{"name": "gpu", "exactly": exactly(2)}],
                   "constraints": [{"matchAttribute": f"{DRIVER}/group"}]},
        # every H100 of a node: n3's one
        "all-h100": {"requests": [{"name": "gpu", "exactly": exactly(model="h100", mode="All")}]},
        # an H100 if there is one, else any GPU
        "fallback": {"requests": [{"name": "gpu", "firstAvailable": [
            {"name": "h100", **exactly(model="h100")}, {"name": "any", **exactly()}]}]},
    }
    for name, devices_spec in templates.items():
        kube.create({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                     "metadata": {"name": name, "namespace": namespace}, "spec": {"spec": {"devices": devices_spec}}})

    def workload(run: str, scheduler: str) -> list[dict]:
        return [claiming(scheduler, "linked", "linked"), claiming(scheduler, "all-h100", "all-h100"),
                claiming(scheduler, "fallback", "fallback"),  # the H100 is taken: one of n1's
                claiming(scheduler, "fallback-2", "fallback"),  # n1's other
                claiming(scheduler, "linked-2", "linked"),  # n1's two are gone
                claiming(scheduler, "all-h100-2", "all-h100")]  # the one H100 is taken

    outcome = compare(runs.run(workload), kube, device_checks(kube, runs))
    assert pending(outcome) == {"linked-2", "all-h100-2"}
    assert outcome["linked"] == (n2, n2) and outcome["all-h100"] == (n3, n3)
    assert outcome["fallback"] == outcome["fallback-2"] == (n1, n1)


def test_dra_a_shared_claim_allocated_elsewhere_and_a_missing_device_class(runs, nodes, namespace, kube, gpu_class):
    """DynamicResources' reason for a node an allocated claim cannot be used on, counted per node,
    and its PreFilter's for a request of a DeviceClass that does not exist."""
    cls = gpu_class
    names = [f"{namespace}-n{i}" for i in (1, 2, 3)]
    for name in names:
        nodes.add(name, labels={HOST: name, SET: SET_VALUE}, capacity={"cpu": "8", "memory": "32Gi", "pods": "110"},
                  slices=[gpu_slice(name, ["a100"])])
    kube.create({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                 "metadata": {"name": "no-class", "namespace": namespace},
                 "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
                     "deviceClassName": f"{namespace}-no-such-class"}}]}}}})

    def sharing(scheduler: str, name: str, claim_name: str, cpu: str) -> dict:
        p = pod(name, scheduler, cpu=cpu, resourceClaims=[{"name": "gpus", "resourceClaimName": claim_name}])
        p["spec"]["containers"][0]["resources"]["claims"] = [{"name": "gpus"}]
        return p

    def workload(run: str, scheduler: str) -> list[dict]:
        shared = f"shared-{run}"  # made for the run, deleted with its pods
        kube.create({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                     "metadata": {"name": shared, "namespace": namespace},
                     "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": cls}}]}}})
        return [sharing(scheduler, "holder", shared, "7"),  # the claim's GPU and most of its node's cpu
                sharing(scheduler, "sharer", shared, "2"),  # its node is too full, the others lack the GPU
                claiming(scheduler, "classless", "no-class")]

    outcome = compare(runs.run(workload), kube)
    assert pending(outcome) == {"sharer", "classless"}
    # (nodes other tests left behind count too, as not matching the node selector)
    reasons = set(comparable(outcome["sharer"][1]).split(": ", 1)[1].rstrip(".").split(", "))
    assert {"1 Insufficient cpu", "2 resourceclaim not available on the node"} <= reasons, outcome["sharer"]
    assert comparable(outcome["classless"][1]).endswith(
        f": request gpu: device class {namespace}-no-such-class does not exist."), outcome["classless"]


@pytest.fixture
def runtime_class(kube, namespace) -> str:
    """A RuntimeClass whose pods carry 3 CPUs of overhead (the API server's admission writes it
    into their ``spec.overhead``); deleted afterwards."""
    name = f"{namespace}-heavy"
    kube.create({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": name},
                 "handler": "runc", "overhead": {"podFixed": {"cpu": "3"}}})
    yield name
    kube.delete("node.k8s.io/v1", "RuntimeClass", name)


def test_ephemeral_storage_init_containers_overhead_and_pod_count(runs, nodes, namespace, kube, runtime_class):
    names = [f"{namespace}-n{i}" for i in (1, 2, 3)]
    for name, cpu, pods, storage in zip(names, ("4", "4", "2"), ("3", "110", "110"), ("10Gi", "2Gi", "2Gi"),
                                        strict=True):
        nodes.add(name, labels={HOST: name, SET: SET_VALUE},
                  capacity={"cpu": cpu, "memory": "8Gi", "pods": pods, "ephemeral-storage": storage})

    def workload(run: str, scheduler: str) -> list[dict]:
        def scratch(name: str) -> dict:
            p = pod(name, scheduler)
            p["spec"]["containers"][0]["resources"]["requests"]["ephemeral-storage"] = "6Gi"
            return p

        init = pod("init", scheduler)
        init["spec"]["initContainers"] = [{"name": "prepare", "image": "busybox:1",
                                           "resources": {"requests": {"cpu": "3500m"}}}]
        return [
            scratch("scratch"),  # only n1 has the space
            init,  # 3.5 CPUs while it starts: n1 or n2
            pod("overhead", scheduler, cpu="500m", runtimeClassName=runtime_class),  # 3.5 CPUs: the other
            pod("n1-0", scheduler, node_selector={HOST: names[0]}),  # n1's third pod
            scratch("scratch-2"),
            pod("overhead-2", scheduler, cpu="500m", runtimeClassName=runtime_class),  # no 3.5 CPUs left
            pod("n1-1", scheduler, node_selector={HOST: names[0]}),  # n1 holds three
        ]

    outcome = compare(runs.run(workload), kube)
    assert pending(outcome) == {"scratch-2", "overhead-2", "n1-1"}
    assert outcome["scratch"] == (names[0], names[0])


TEAM = "differential.kai.example.com/team"


@pytest.fixture
def other_namespace(controlplane, kube, namespace, runs, _deleted_namespaces) -> str:
    """A second namespace, labelled ``TEAM: other``, whose pods the runs delete too."""
    name = f"{namespace}-other"
    controlplane.ensure_namespace(name)
    kube.call("PATCH", kube.path("v1", "Namespace", name), {"metadata": {"labels": {TEAM: "other"}}},
              content_type="application/merge-patch+json")
    runs.namespaces.append(name)
    yield name
    for p in kube.list("v1", "Pod", name):
        kube.delete("v1", "Pod", p["metadata"]["name"], name, grace=0)
    kube.delete("v1", "Namespace", name)
    _deleted_namespaces.append(name)


def test_other_namespaces_pre_bound_pods_and_match_label_keys(runs, nodes, namespace, kube, other_namespace):
    names = [n["metadata"]["name"] for n in zoned_nodes(nodes, namespace)]

    def term(key: str = HOST, **more) -> dict:
        return {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": key, **more}]}

    db = {"labelSelector": {"matchLabels": {"app": "db"}}}

    def workload(run: str, scheduler: str) -> list[dict]:
        # a pod created on n1 (no scheduler), of another namespace, holding host port 9090
        pre_bound = pod("db", scheduler, {"app": "db"}, ports=[{"containerPort": 90, "hostPort": 9090}],
                        nodeName=names[0])
        pre_bound["metadata"]["namespace"] = other_namespace

        def versioned(name: str, version: str) -> dict:  # one per node among pods of its version
            return pod(name, scheduler, {"app": "mlk", "version": version}, affinity={"podAntiAffinity": term(
                labelSelector={"matchLabels": {"app": "mlk"}}, matchLabelKeys=["version"])})

        return [
            pre_bound,
            pod("port", scheduler, ports=[{"containerPort": 90, "hostPort": 9090}]),  # not on n1
            pod("near-db", scheduler, affinity={"podAffinity": term(
                namespaceSelector={"matchLabels": {TEAM: "other"}}, **db)}),  # n1
            pod("far-db", scheduler, affinity={"podAntiAffinity": term(namespaces=[other_namespace], **db)}),
            *(versioned(f"v1-{i}", "v1") for i in range(3)),
            versioned("v2-0", "v2"),  # v1's pods do not count for it
            pod("near-db-here", scheduler, {"app": "near"}, affinity={"podAffinity": term(**db)}),  # no db here
            versioned("v1-3", "v1"),  # every node has a v1 pod
        ]

    outcome = compare(runs.run(workload), kube)
    assert pending(outcome) == {"near-db-here", "v1-3"}
    assert outcome["db"] == outcome["near-db"] == (names[0], names[0])
    assert names[0] not in outcome["port"] + outcome["far-db"]
