"""Pods of one shape within a cycle (:mod:`kai_core.scheduler.equivalence`): the scheduler reuses the filter,
allocation and node-local score answers given for the previous pod of the shape on the nodes
unchanged since, and asks the plugins only about the nodes changed. What a user sees must not
change: the same BindRequests (node and devices) and the same unschedulable reasons as without
the memo; plugins see fewer nodes; plugins whose answers span nodes (``KAI_NODE_LOCAL = False``),
devices reaching several nodes and shared claims are still handled correctly.

The property test runs ``KAI_PROPERTY_EXAMPLES`` examples (default 50), derandomized so every run
checks the same ones."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kai_core.api.features import FeatureGates
from kai_core.api.resources import RES_CLAIMS, RES_PODS
from kai_core.dra.testing import GPU, claim, device_class, gpu_device, gpu_slice, request, resource_slice
from kai_core.framework.hookspecs import hookimpl
from kai_core.plugins import build_plugin_manager
from kai_core.scheduler.cycle import SchedulerConfig

EXAMPLES = int(os.environ.get("KAI_PROPERTY_EXAMPLES", "50"))
DRA_ON = SchedulerConfig(features=FeatureGates.parse("DynamicResourceAllocation=true"))
CREATED = "2024-01-01T00:00:00Z"  # one creation time for all pods: the order is priority, then name

GPU_CLASS_NAME = "gpu.example.com"
GPU_CLASS = device_class(
    GPU_CLASS_NAME, f"device.driver == '{GPU}' && device.attributes['{GPU}'].type == 'gpu'")
NET = "net.example.com"
NET_CLASS = device_class(NET, f"device.driver == '{NET}'")
MEMORY = ("20Gi", "40Gi", "80Gi")
ZONES = ("a", "b", "c")
TAINT = {"key": "dedicated", "value": "batch", "effect": "NoSchedule"}
TOLERATION = {"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}


# -- builders ----------------------------------------------------------------------------------


def claim_template(name: str, class_name: str, count: int = 1, *selectors: str) -> dict:
    """A ResourceClaimTemplate in the default namespace asking ``count`` devices of a class."""
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"spec": claim(name, request("dev", class_name, count, *selectors))["spec"]}}


def pod(world, name: str, cpu: str = "1", *, templates: tuple[str, ...] = (), shared: tuple[str, ...] = (),
        labels: dict | None = None, annotations: dict | None = None, **spec) -> dict:
    """A pod of the default namespace created at :data:`CREATED`, with claims made from
    ``templates`` and claims ``shared`` with other pods (by ResourceClaim name)."""
    meta: dict = {"creationTimestamp": CREATED}
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    claims = ([{"name": f"t-{t}", "resourceClaimTemplateName": t} for t in templates]
              + [{"name": f"s-{c}", "resourceClaimName": c} for c in shared])
    if claims:
        spec["resourceClaims"] = claims
    obj = world.pod(name, cpu, meta=meta, **spec)
    if claims:
        obj["spec"]["containers"][0]["resources"]["claims"] = [{"name": c["name"]} for c in claims]
    return obj


class FilterLog:
    """A filter that rejects nothing and records which nodes it was asked about, per pod."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[str]]] = []

    @hookimpl
    def kai_filter_nodes(self, pod, nodes):
        self.seen.append((pod["metadata"]["name"], [n.name for n in nodes]))

    def by_pod(self) -> dict[str, list[list[str]]]:
        out: dict[str, list[list[str]]] = {}
        for name, nodes in self.seen:
            out.setdefault(name, []).append(nodes)
        return out


class EarlyFilterLog(FilterLog):
    """:class:`FilterLog` called before the built-in filters, so it sees every node asked about."""

    @hookimpl(tryfirst=True)
    def kai_filter_nodes(self, pod, nodes):
        super().kai_filter_nodes(pod, nodes)


class MemoOff:
    """A filter that rejects nothing but declares its answers depend on other nodes: with it
    registered, the scheduler decides every pod the plain way."""

    KAI_NODE_LOCAL = False

    @hookimpl
    def kai_filter_nodes(self, pod, nodes):
        return None


def world_with(world, *objs, plugins: dict | None = None, config: SchedulerConfig = DRA_ON):
    """A World with the built-in plugins plus ``plugins`` (name -> plugin object), DRA on by default."""
    pm = build_plugin_manager(load_external=False)
    for name, plugin in (plugins or {}).items():
        pm.register(plugin, name=name)
    return world(*objs, config=config, pm=pm)


def allocated_devices(br: dict) -> list[tuple[str, str, str, str]]:
    """``(pod claim, driver, pool, device)`` of every device a BindRequest hands out."""
    out = []
    for entry in br["spec"].get("resourceClaimAllocations") or []:
        for r in ((entry.get("allocation") or {}).get("devices") or {}).get("results") or []:
            out.append((entry["name"], r["driver"], r["pool"], r["device"]))
    return out


class ScoreLog:
    """A score plugin recording the nodes of each call."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []


class LocalScore(ScoreLog):
    """A node-local score (declared): every node the same."""

    KAI_NODE_LOCAL = True

    @hookimpl
    def kai_score_nodes(self, pod, nodes):
        self.seen.append([n.name for n in nodes])
        return dict.fromkeys((n.name for n in nodes), 1.0)


class SpreadScore(ScoreLog):
    """Relative to the other nodes (undeclared): the least loaded nodes win."""

    @hookimpl
    def kai_score_nodes(self, pod, nodes):
        self.seen.append([n.name for n in nodes])
        fewest = min(n.pod_count for n in nodes)
        return {n.name: 100.0 if n.pod_count == fewest else 0.0 for n in nodes}


# -- 1. the same decisions with and without the memo -------------------------------------------


@st.composite
def scenarios(draw) -> dict:
    nodes = [{
        "cpu": draw(st.sampled_from(["2", "4", "8"])),
        "gpus": draw(st.sampled_from([0, 0, 1, 2])),
        "zone": draw(st.sampled_from(ZONES)),
        "tainted": draw(st.integers(0, 4)) == 0,
        "dra": draw(st.lists(st.sampled_from(MEMORY), max_size=3)),
    } for _ in range(draw(st.integers(2, 5)))]
    shapes = [{
        "cpu": draw(st.sampled_from(["1", "2"])),
        "gpu": draw(st.sampled_from([0, 0, 0, 1])),
        "zone": draw(st.sampled_from((None, None, None, *ZONES))),
        "tolerates": draw(st.booleans()),
        "claim": draw(st.booleans()),
        "shared": draw(st.integers(0, 5)) == 0,
        "gang": draw(st.integers(0, 5)) == 0,
        "priority": draw(st.sampled_from([0, 0, 5])),
        # inter-pod affinity toward the pods of shape ``target`` (its own shape, often)
        "affinity": draw(st.sampled_from((None, None, None, *AFFINITIES))),
        "target": draw(st.integers(0, 2)),
        "ports": draw(st.integers(0, 3)) == 0,
        "topology_spread": draw(st.sampled_from((None, None, "hard-zone", "hard-host", "soft-zone"))),
    } for _ in range(draw(st.integers(1, 3)))]
    return {
        "nodes": nodes,
        "shapes": shapes,
        "pods": draw(st.lists(st.integers(0, len(shapes) - 1), min_size=2, max_size=10)),
        # GPUs published for every node (allNodes): shared between nodes
        "everywhere": draw(st.lists(st.sampled_from(MEMORY), max_size=2)),
        "min_memory": draw(st.sampled_from(MEMORY)),
        "count": draw(st.sampled_from([1, 1, 2])),
        "gang_min": draw(st.integers(1, 2)),
        # gang pods alternate between two PodGroups: gangs of the same shapes, one after the other
        "two_gangs": draw(st.booleans()),
        # a score relative to the other nodes (spreading), so later pods often go elsewhere
        "spread": draw(st.booleans()),
    }


#: pod affinity kinds a scenario's shape may have (see :func:`pod_affinity`)
AFFINITIES = ("anti-host", "anti-zone", "together-zone", "prefer-away", "prefer-near")


def pod_affinity(kind: str, target: str) -> dict:
    """A ``spec.affinity`` of one kind toward the pods labelled ``app: <target>``."""
    selector = {"matchLabels": {"app": target}}
    key = "kubernetes.io/hostname" if kind == "anti-host" else "zone"
    term = {"labelSelector": selector, "topologyKey": key}
    if kind in ("anti-host", "anti-zone"):
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    if kind == "together-zone":
        return {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    part = "podAntiAffinity" if kind == "prefer-away" else "podAffinity"
    return {part: {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]}}


def scenario_objects(world, s: dict) -> list[dict]:
    """The cluster and the pods of a scenario drawn by :func:`scenarios`."""
    objs: list[dict] = [
        GPU_CLASS,
        claim_template("gpus", GPU_CLASS_NAME, s["count"],
                       f"device.capacity['{GPU}'].memory.compareTo(quantity('{s['min_memory']}')) >= 0"),
        claim("team", request("dev", GPU_CLASS_NAME, 1)),
        *({"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
           "metadata": {"name": g, "namespace": "default"}, "spec": {"minMember": s["gang_min"]}}
          for g in ("g", "h")),
    ]
    for i, n in enumerate(s["nodes"]):
        name = f"n{i}"
        objs.append(world.node(name, cpu=n["cpu"], labels={"zone": n["zone"], "kubernetes.io/hostname": name},
                               taints=[TAINT] if n["tainted"] else None,
                               extra={"nvidia.com/gpu": str(n["gpus"])} if n["gpus"] else None))
        if n["dra"]:
            objs.append(gpu_slice(name, devices=[gpu_device(j, memory=m) for j, m in enumerate(n["dra"])]))
    if s["everywhere"]:
        objs.append(resource_slice("everywhere", GPU, "everywhere",
                                   [gpu_device(j, memory=m) for j, m in enumerate(s["everywhere"])],
                                   all_nodes=True))
    for i, k in enumerate(s["pods"]):
        shape = s["shapes"][k]
        spec: dict = {}
        if shape["priority"]:
            spec["priority"] = shape["priority"]
        if shape["zone"]:
            spec["nodeSelector"] = {"zone": shape["zone"]}
        if shape["tolerates"]:
            spec["tolerations"] = [TOLERATION]
        if shape.get("topology_spread"):
            how, key = shape["topology_spread"].split("-")
            spec["topologySpreadConstraints"] = [{
                "maxSkew": 1, "topologyKey": "zone" if key == "zone" else "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule" if how == "hard" else "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app": f"shape-{k}"}}}]
        if shape.get("affinity"):
            spec["affinity"] = pod_affinity(shape["affinity"], f"shape-{shape['target'] % len(s['shapes'])}")
        p = pod(world, f"p{i}", shape["cpu"], templates=("gpus",) if shape["claim"] else (),
                shared=("team",) if shape["shared"] else (), labels={"app": f"shape-{k}"},
                annotations={"pod-group-name": "h" if s.get("two_gangs") and i % 2 else "g"}
                if shape["gang"] else None, **spec)
        if shape["gpu"]:
            p["spec"]["containers"][0]["resources"]["limits"] = {"nvidia.com/gpu": str(shape["gpu"])}
        if shape.get("ports"):
            p["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 80}]
        objs.append(p)
    return objs


#: where one entry of an unschedulable message starts (entries are joined by ", ", and reasons
#: such as ``(1 match, 0 in use)`` hold ", <number> " too)
_ENTRY = re.compile(r", (?=\d+ (?:node\(s\)|Insufficient |Too many pods|cannot allocate|more reason))")
_SUMMARY = re.compile(r"^(0/\d+ nodes are available)(?:: (.*))?\.$")


def canonical_message(message: str | None, claim_names: list[str]) -> str | None:
    """A pod's message with generated claim names (random, so different in two runs of one
    scenario) made generic; everything else must be equal to the letter."""
    if message is None:
        return None
    for name in sorted(claim_names, key=len, reverse=True):
        message = message.replace(f"default/{name}", "default/<claim>")
    return message


def outcome(w) -> dict:
    """What a user sees after the cycle: each pod's BindRequest (node and devices) or message."""
    claim_names = [c["metadata"]["name"] for c in w.store.list(RES_CLAIMS, "default")[0]
                   if c["metadata"]["name"] != "team"]
    placed = {br["spec"]["podName"]: (br["spec"]["selectedNode"], br["spec"].get("resourceClaimAllocations"))
              for br in w.bind_requests()}
    out = {}
    for p in w.store.list(RES_PODS, "default")[0]:
        name = p["metadata"]["name"]
        out[name] = placed[name] if name in placed else canonical_message(w.message(name), claim_names)
    return out


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(scenarios())
def test_the_memo_changes_no_decision_nor_reason(world, s: dict) -> None:
    objs = scenario_objects(world, s)
    with_memo, without_memo = FilterLog(), FilterLog()
    scores: dict = {"spread": SpreadScore()} if s["spread"] else {}
    w_memo = world_with(world, *objs, plugins={"log": with_memo, **scores})
    scores = {"spread": SpreadScore()} if s["spread"] else {}
    w_plain = world_with(world, *objs, plugins={"log": without_memo, "memo-off": MemoOff(), **scores})
    r_memo, r_plain = w_memo.cycle(), w_plain.cycle()
    assert outcome(w_memo) == outcome(w_plain)
    assert (r_memo.scheduled, r_memo.unschedulable, r_memo.errors) == (
        r_plain.scheduled, r_plain.unschedulable, r_plain.errors)
    assert r_memo.errors == 0
    assert sum(len(n) for _, n in with_memo.seen) <= sum(len(n) for _, n in without_memo.seen)


def test_a_scenario_with_every_feature_decides_alike(world) -> None:
    """One hand-picked scenario of the property above (claims, GPUs for every node, taints,
    selectors, a shared claim), so a failure shows up without hypothesis too."""
    s = {
        "nodes": [{"cpu": "4", "gpus": 2, "zone": "a", "tainted": False, "dra": ["80Gi", "20Gi"]},
                  {"cpu": "2", "gpus": 0, "zone": "b", "tainted": True, "dra": ["40Gi"]},
                  {"cpu": "4", "gpus": 1, "zone": "a", "tainted": False, "dra": []},
                  {"cpu": "1", "gpus": 0, "zone": "c", "tainted": False, "dra": ["80Gi", "80Gi"]}],
        "shapes": [{"cpu": "1", "gpu": 0, "zone": None, "tolerates": True, "claim": True, "shared": False,
                    "gang": False, "priority": 0},
                   {"cpu": "1", "gpu": 1, "zone": "a", "tolerates": False, "claim": False, "shared": False,
                    "gang": False, "priority": 5},
                   {"cpu": "1", "gpu": 0, "zone": None, "tolerates": False, "claim": False, "shared": True,
                    "gang": False, "priority": 0}],
        "pods": [0, 0, 1, 0, 2, 1, 0, 2],
        "everywhere": ["40Gi"],
        "min_memory": "40Gi",
        "count": 1,
        "gang_min": 1,
        "spread": True,
    }
    objs = scenario_objects(world, s)
    w_memo = world_with(world, *objs, plugins={"spread": SpreadScore()})
    w_plain = world_with(world, *objs, plugins={"spread": SpreadScore(), "memo-off": MemoOff()})
    w_memo.cycle()
    w_plain.cycle()
    assert outcome(w_memo) == outcome(w_plain)
    assert len(w_memo.bind_requests()) >= 4


#: a shape of plain pods (1 cpu, nothing else) and the scenario fields of a cluster without DRA
PLAIN_SHAPE = {"cpu": "1", "gpu": 0, "zone": None, "tolerates": False, "claim": False, "shared": False,
               "gang": False, "priority": 0}
NO_DRA = {"everywhere": [], "min_memory": "20Gi", "count": 1, "gang_min": 1, "spread": False}


def decided_alike(world, s: dict):
    """Run scenario ``s`` with the memo and without; assert the outcomes are equal; return the
    World run with the memo."""
    objs = scenario_objects(world, s)
    w_memo = world_with(world, *objs)
    w_plain = world_with(world, *objs, plugins={"memo-off": MemoOff()})
    w_memo.cycle()
    w_plain.cycle()
    assert outcome(w_memo) == outcome(w_plain)
    return w_memo


def test_a_scenario_with_pod_affinity_and_host_ports_decides_alike(world) -> None:
    """Plain pods of one shape around a pod whose required zone anti-affinity repels them (placed
    between them in the cycle), pods wanting to share a zone, and host ports."""
    plain = PLAIN_SHAPE
    s = {
        "nodes": [{"cpu": "1", "gpus": 0, "zone": "a", "tainted": False, "dra": []},
                  {"cpu": "1", "gpus": 0, "zone": "b", "tainted": False, "dra": []},
                  {"cpu": "2", "gpus": 0, "zone": "b", "tainted": False, "dra": []},
                  {"cpu": "4", "gpus": 0, "zone": "c", "tainted": False, "dra": []}],
        "shapes": [plain, {**plain, "affinity": "anti-zone", "target": 0},
                   {**plain, "affinity": "together-zone", "target": 2, "ports": True},
                   {**plain, "affinity": "prefer-away", "target": 0}],
        "pods": [0, 1, 0, 0, 2, 2, 3, 0],
        **NO_DRA,
    }
    w_memo = decided_alike(world, s)
    placed = w_memo.placed()
    assert placed["p1"] == "n1"  # the zone without shape 0's p0
    assert placed["p2"] == "n3" and placed["p3"] == "n3"  # zone b repels them, though n2 was never touched
    # p4 starts its group in zone c; p5 must join it there, where p4 holds the host port
    assert placed["p4"] == "n3" and "p5" not in placed
    assert w_memo.message("p5") == (
        "0/4 nodes are available: 1 node(s) didn't have free ports for the requested pod ports, "
        "1 node(s) didn't match pod affinity rules, 2 Insufficient cpu.")
    assert placed["p6"] == "n2"  # preferring zones without shape 0's pods


def test_a_scenario_with_topology_spread_decides_alike(world) -> None:
    """Pods spreading over zones (DoNotSchedule) and hostnames (ScheduleAnyway) among plain pods of
    one shape that bin packing stacks."""
    plain = PLAIN_SHAPE
    s = {
        "nodes": [{"cpu": "4", "gpus": 0, "zone": z, "tainted": False, "dra": []} for z in ("a", "a", "b", "c")],
        "shapes": [plain, {**plain, "topology_spread": "hard-zone"}, {**plain, "topology_spread": "soft-host"}],
        "pods": [1, 1, 0, 1, 2, 2, 1, 0, 2, 1],
        **NO_DRA,
    }
    w_memo = decided_alike(world, s)
    placed = w_memo.placed()
    assert len(placed) == 10
    zones = [s["nodes"][int(placed[f"p{i}"][1])]["zone"] for i, k in enumerate(s["pods"]) if k == 1]
    assert sorted(zones.count(z) for z in "abc") == [1, 2, 2]
    hosts = [placed[f"p{i}"] for i, k in enumerate(s["pods"]) if k == 2]
    assert len(set(hosts)) == 3


# -- 2. how many nodes the filters are asked about ---------------------------------------------


def test_the_next_pods_of_a_shape_are_filtered_only_on_the_changed_node(world) -> None:
    log = FilterLog()
    w = world_with(world, *(world.node(f"n{i:02}", cpu="8") for i in range(20)),
                   *(pod(world, f"p{i}", labels={"app": "web"}) for i in range(5)), plugins={"log": log})
    assert w.cycle().scheduled == 5
    nodes = [f"n{i:02}" for i in range(20)]
    # binpack puts them all on the first node; only that node is asked about again
    assert w.placed() == dict.fromkeys([f"p{i}" for i in range(5)], "n00")
    assert log.seen == [("p0", nodes)] + [(f"p{i}", ["n00"]) for i in range(1, 5)]


def test_each_shape_keeps_its_own_answers(world) -> None:
    log = FilterLog()
    pods = [pod(world, f"a{i}", "1", labels={"app": "a"}) for i in range(3)] + [
        pod(world, f"b{i}", "2", labels={"app": "b"}) for i in range(2)]
    w = world_with(world, *(world.node(f"n{i}", cpu="8") for i in range(4)), *pods, plugins={"log": log})
    assert w.cycle().scheduled == 5
    assert {name: len(calls) for name, calls in log.by_pod().items()} == dict.fromkeys(
        ["a0", "a1", "a2", "b0", "b1"], 1)
    seen = {name: calls[0] for name, calls in log.by_pod().items()}
    assert len(seen["a0"]) == 4 and len(seen["b0"]) == 4  # the first of each shape: every node
    # later pods: the nodes where pods of any shape were placed since their shape's last pod
    assert seen["a1"] == seen["a2"] == ["n0"]
    assert seen["b1"] == ["n0"]


def test_once_a_shape_fits_nowhere_its_next_pods_ask_no_filter(world) -> None:
    log = EarlyFilterLog()
    w = world_with(world, *(world.node(f"n{i}", cpu="1") for i in range(3)),
                   *(pod(world, f"p{i}", labels={"app": "web"}) for i in range(6)), plugins={"log": log})
    result = w.cycle()
    assert (result.scheduled, result.unschedulable) == (3, 3)
    for name in ("p3", "p4", "p5"):
        assert w.message(name) == "0/3 nodes are available: 3 Insufficient cpu."
    # p3 asks again about the node p2 took; nothing changed after that
    assert log.by_pod() == {"p0": [["n0", "n1", "n2"]], "p1": [["n0"]], "p2": [["n1"]], "p3": [["n2"]]}


def test_the_next_pods_of_a_shape_that_fits_nowhere_are_told_without_a_pass_over_the_nodes(world, monkeypatch):
    import kai_core.scheduler.decide as decide

    summed: list[int] = []
    real = decide.unschedulable_message

    def counted(total, rejected):
        summed.append(len(rejected))
        return real(total, rejected)

    monkeypatch.setattr(decide, "unschedulable_message", counted)
    w = world_with(world, *(world.node(f"n{i}", cpu="1") for i in range(3)),
                   *(pod(world, f"p{i}", "2", labels={"app": "web"}) for i in range(5)))
    assert w.cycle().unschedulable == 5
    assert {w.message(f"p{i}") for i in range(5)} == {"0/3 nodes are available: 3 Insufficient cpu."}
    assert summed == [3]  # once for the shape, not once per pod


def test_nodes_a_gang_took_are_asked_again(world) -> None:
    """Gang members' decisions count as changes for the shapes around them: the pod of the shape
    after the gang does not go where the gang went."""
    log = EarlyFilterLog()
    gang = {"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
            "metadata": {"name": "g", "namespace": "default"}, "spec": {"minMember": 2}}
    web = {"labels": {"app": "web"}}
    w = world_with(
        world,
        world.node("n0", cpu="2"), world.node("n1", cpu="2"), world.node("n2", cpu="2"), gang,
        pod(world, "a-web", "1", **web),  # the order is by name: a-web, the gang, c-web, d-web
        pod(world, "b-g-0", "2", annotations={"pod-group-name": "g"}),
        pod(world, "b-g-1", "2", annotations={"pod-group-name": "g"}),
        pod(world, "c-web", "1", **web),
        pod(world, "d-web", "1", **web),
        plugins={"log": log})
    result = w.cycle()
    assert (result.scheduled, result.unschedulable) == (4, 1)
    placed = w.placed()
    assert placed["a-web"] == placed["c-web"] == "n0"
    assert {placed["b-g-0"], placed["b-g-1"]} == {"n1", "n2"}
    assert w.message("d-web") == "0/3 nodes are available: 3 Insufficient cpu."
    assert log.by_pod()["c-web"] == [["n0", "n1", "n2"]]  # a-web's node and the gang's, asked again


# -- 3. filters spanning nodes turn the memo off -----------------------------------------------


class OnePerZone:
    """At most one pod of an ``app`` per ``zone`` label: the answer for a node depends on where
    pods were placed on the other nodes of its zone."""

    KAI_NODE_LOCAL = False

    @hookimpl
    def kai_filter_nodes(self, pod, nodes, snapshot):
        app = (pod["metadata"].get("labels") or {}).get("app")
        if not app:
            return None
        taken = set()
        for other in snapshot.pods.values():
            node = snapshot.node_of(other)
            if node and (other["metadata"].get("labels") or {}).get("app") == app:
                taken.add(snapshot.node_by_name[node].labels.get("zone"))
        return {n.name: f"zone already runs a pod of app {app}"
                for n in nodes if n.labels.get("zone") in taken}


def test_a_filter_declared_not_node_local_gets_fresh_answers(world) -> None:
    nodes = [world.node(f"{z}{i}", cpu="8", labels={"zone": z}) for z in ZONES for i in range(2)]
    w = world_with(world, *nodes, *(pod(world, f"web-{i}", labels={"app": "web"}) for i in range(5)),
                   plugins={"one-per-zone": OnePerZone()}, config=SchedulerConfig())
    result = w.cycle()
    assert (result.scheduled, result.unschedulable) == (3, 2)
    zones = [w.store.get("nodes", node)["metadata"]["labels"]["zone"] for node in w.placed().values()]
    assert sorted(zones) == ["a", "b", "c"]
    for name in {f"web-{i}" for i in range(5)} - set(w.placed()):
        assert w.message(name) == "0/6 nodes are available: 6 zone already runs a pod of app web."


# -- 4. devices reaching several nodes are never handed out twice ------------------------------


NIC_TEMPLATE = claim_template("nic", NET)


def nic_slice(reach: str, devices: int = 1) -> dict:
    """One pool of network devices reaching every node, through ``allNodes`` or a node selector."""
    where: dict = ({"all_nodes": True} if reach == "allNodes" else {"node_selector": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "fabric", "operator": "In", "values": ["x"]}]}]}})
    return resource_slice("fabric", NET, "fabric", [{"name": f"nic-{i}"} for i in range(devices)], **where)


@pytest.mark.parametrize("reach", ["allNodes", "nodeSelector"])
def test_one_device_for_every_node_goes_to_one_pod(world, reach: str) -> None:
    nodes = [world.node(f"n{i}", labels={"fabric": "x"}) for i in range(3)]
    w = world_with(world, NET_CLASS, NIC_TEMPLATE, nic_slice(reach), *nodes,
                   *(pod(world, f"p{i}", templates=("nic",), labels={"app": "mpi"}) for i in range(2)))
    w.explain()
    result = w.cycle()
    assert (result.scheduled, result.unschedulable) == (1, 1)
    [br] = w.bind_requests()
    assert br["spec"]["podName"] == "p0"
    assert allocated_devices(br) == [("t-nic", NET, "fabric", "nic-0")]
    assert w.message("p1") == "0/3 nodes are available: 3 cannot allocate all claims."
    assert w.detailed("p1").startswith("0/3 nodes are available: 3 cannot allocate all claims: ")
    assert "0 free (1 match, 1 in use)" in w.detailed("p1")


def test_a_shared_device_taken_by_another_shape_refreshes_every_shape(world) -> None:
    """Shape y's answers (two devices free on every node) were given before shape x took the
    second device: y's next pod must see both taken, on every node."""
    nodes = [world.node(f"n{i}", labels={"fabric": "x"}) for i in range(3)]
    y, x = {"templates": ("nic",), "labels": {"app": "y"}}, {"templates": ("nic",), "labels": {"app": "x"}}
    w = world_with(world, NET_CLASS, NIC_TEMPLATE, nic_slice("allNodes", devices=2), *nodes,
                   pod(world, "a-y", "1", **y), pod(world, "b-x", "2", **x),  # the order is by name
                   pod(world, "c-y", "1", **y), pod(world, "d-x", "2", **x))
    w.explain()
    result = w.cycle()
    assert (result.scheduled, result.unschedulable) == (2, 2)
    handed_out = [d for br in w.bind_requests() for d in allocated_devices(br)]
    assert sorted(d[3] for d in handed_out) == ["nic-0", "nic-1"]
    assert set(w.placed()) == {"a-y", "b-x"}
    for name in ("c-y", "d-x"):
        assert w.message(name).endswith(" cannot allocate all claims.")
        assert "0 free (2 match, 2 in use)" in w.detailed(name)


def test_node_local_gpus_are_reused_next_to_a_shared_pool(world) -> None:
    """GPUs on each node plus a NIC pool for every node: the GPU pods' memo survives the NIC
    pods' decisions only where nothing changed, and no device is handed out twice."""
    objs = [GPU_CLASS, NET_CLASS, NIC_TEMPLATE, nic_slice("allNodes", devices=1),
            claim_template("gpu", GPU_CLASS_NAME, 1)]
    for i in range(3):
        objs += [world.node(f"n{i}", labels={"fabric": "x"}), gpu_slice(f"n{i}", count=2)]
    pods = [pod(world, f"g{i}", templates=("gpu",), labels={"app": "g"}) for i in range(7)]
    pods.append(pod(world, "nic-0", templates=("nic",), labels={"app": "n"}, priority=1))
    pods.append(pod(world, "nic-1", templates=("nic",), labels={"app": "n"}, priority=1))
    memo = world_with(world, *objs, *pods)
    plain = world_with(world, *objs, *pods, plugins={"memo-off": MemoOff()})
    assert memo.cycle().scheduled == plain.cycle().scheduled == 7
    assert outcome(memo) == outcome(plain)
    handed_out = [(br["spec"]["selectedNode"], d)
                  for br in memo.bind_requests() for d in allocated_devices(br)]
    gpus = [(node, d[2], d[3]) for node, d in handed_out if d[1] == GPU]
    assert len(gpus) == len(set(gpus)) == 6
    assert all(node == pool for node, pool, _ in gpus)  # each GPU on its own node
    assert [d[3] for _, d in handed_out if d[1] == NET] == ["nic-0"]


# -- 5. scores -----------------------------------------------------------------------------------


def test_node_local_scores_are_asked_only_about_nodes_without_one(world) -> None:
    local, spread = LocalScore(), SpreadScore()
    w = world_with(world, *(world.node(f"n{i}", cpu="8") for i in range(4)),
                   *(pod(world, f"p{i}", labels={"app": "web"}) for i in range(3)),
                   plugins={"local": local, "spread": spread}, config=SchedulerConfig())
    assert w.cycle().scheduled == 3
    assert w.placed() == {"p0": "n0", "p1": "n1", "p2": "n2"}
    every = ["n0", "n1", "n2", "n3"]
    assert local.seen == [every, ["n0"], ["n1"]]
    assert spread.seen == [every, every, every]


def test_node_local_scores_alone_pick_like_the_plain_path(world) -> None:
    """Only node-local scores (binpack and a declared one): the best node comes from the memo's
    totals, and is the one the plain path picks."""

    class PreferLast:
        KAI_NODE_LOCAL = True

        @hookimpl
        def kai_score_nodes(self, nodes):
            return {n.name: 10.0 * int(n.name[1:]) for n in nodes}

    objs = [*(world.node(f"n{i}", cpu="2") for i in range(4)),
            *(pod(world, f"p{i}", labels={"app": "w"}) for i in range(9))]
    memo = world_with(world, *objs, plugins={"last": PreferLast()}, config=SchedulerConfig())
    plain = world_with(world, *objs, plugins={"last": PreferLast(), "memo-off": MemoOff()},
                       config=SchedulerConfig())
    memo.cycle()
    plain.cycle()
    assert memo.placed() == plain.placed()
    assert sorted(memo.placed().values()) == ["n0", "n0", "n1", "n1", "n2", "n2", "n3", "n3"]
    assert memo.placed()["p0"] == "n3"


# -- 6. shared claims ----------------------------------------------------------------------------


class PreferByPod:
    """An undeclared score that sends ``a`` to n1 and anything else to n2."""

    @hookimpl
    def kai_score_nodes(self, pod, nodes):
        want = "n1" if pod["metadata"]["name"] == "a" else "n2"
        return {n.name: 100.0 if n.name == want else 0.0 for n in nodes}


def test_pods_sharing_a_claim_land_where_it_is_allocated(world) -> None:
    log = FilterLog()
    objs = [GPU_CLASS, claim("team", request("dev", GPU_CLASS_NAME, 1)),
            world.node("n0"), world.node("n1"), world.node("n2"),
            gpu_slice("n1", count=1), gpu_slice("n2", count=1)]
    pods = [pod(world, name, shared=("team",), labels={"app": "team"}) for name in ("a", "b", "c")]
    w = world_with(world, *objs, *pods,
                   plugins={"log": log, "prefer": PreferByPod()})
    result = w.cycle()
    assert (result.scheduled, result.unschedulable) == (3, 0)
    assert w.placed() == {"a": "n1", "b": "n1", "c": "n1"}
    [device] = {d for br in w.bind_requests() for d in allocated_devices(br)}
    assert device == ("s-team", GPU, "n1", "gpu-0")
    # no memo for them: every pod is asked about on every node
    assert log.by_pod() == {name: [["n0", "n1", "n2"]] for name in ("a", "b", "c")}


def test_a_claim_already_allocated_keeps_every_pod_on_its_node(world) -> None:
    allocated = claim("team", request("dev", GPU_CLASS_NAME, 1))
    allocated["status"] = {"allocation": {
        "devices": {"results": [{"request": "dev", "driver": GPU, "pool": "n2", "device": "gpu-0"}]},
        "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}}}
    w = world_with(world, GPU_CLASS, allocated, world.node("n0", cpu="8"), world.node("n1", cpu="8"),
                   world.node("n2", cpu="2"), gpu_slice("n2", count=1),
                   *(pod(world, f"p{i}", shared=("team",), labels={"app": "team"}) for i in range(3)))
    result = w.cycle()
    assert (result.scheduled, result.unschedulable) == (2, 1)
    assert w.placed() == {"p0": "n2", "p1": "n2"}
    assert w.message("p2") == "0/3 nodes are available: 1 Insufficient cpu, 2 resourceclaim not available on the node."


# -- reasons name the pod's own claim ----------------------------------------------------------


def test_an_unschedulable_pod_is_told_about_its_own_claim(world) -> None:
    objs = [GPU_CLASS, claim_template("gpu", GPU_CLASS_NAME, 1),
            *(world.node(f"n{i}") for i in range(3)), *(gpu_slice(f"n{i}", count=1) for i in range(3)),
            *(pod(world, f"p{i}", templates=("gpu",), labels={"app": "g"}) for i in range(4))]
    w = world_with(world, *objs)
    w.explain()
    assert w.cycle().unschedulable == 1
    [own] = [c["metadata"]["name"] for c in w.store.list(RES_CLAIMS, "default")[0]
             if c["metadata"]["name"].startswith("p3-")]
    assert w.message("p3") == "0/3 nodes are available: 3 cannot allocate all claims."
    # kai-cli explain names the claim: this pod's, though the memo's answers were given for p0's
    assert w.detailed("p3") == (
        f"0/3 nodes are available: 3 cannot allocate all claims: claim default/{own} request dev: "
        "needs 1 device of DeviceClass gpu.example.com, 0 free (1 match, 1 in use).")


# -- 6. what the API server adds to every pod --------------------------------------------------


def with_token_volume(obj: dict, suffix: str, prefix: str = "kube-api-access-") -> dict:
    """``obj`` as the API server's ServiceAccount admission leaves it: a projected token volume of a
    generated name, mounted in the container."""
    name = prefix + suffix
    obj["spec"]["volumes"] = [{"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}]
    obj["spec"]["containers"][0]["volumeMounts"] = [
        {"name": name, "readOnly": True, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
    return obj


def test_pods_differing_only_in_the_token_volume_name_share_a_shape(world) -> None:
    log = FilterLog()
    pods = [with_token_volume(pod(world, f"p{i}", labels={"app": "web"}), suffix)
            for i, suffix in enumerate(("x7k2q", "b9zlm", "qq4rt"))]
    w = world_with(world, *(world.node(f"n{i:02}", cpu="8") for i in range(10)), *pods, plugins={"log": log})
    assert w.cycle().scheduled == 3
    nodes = [f"n{i:02}" for i in range(10)]
    assert log.seen == [("p0", nodes), ("p1", ["n00"]), ("p2", ["n00"])]


def test_other_volume_names_still_tell_pods_apart(world) -> None:
    log = FilterLog()
    pods = [with_token_volume(pod(world, f"p{i}", labels={"app": "web"}), suffix, prefix="data-")
            for i, suffix in enumerate(("a", "b"))]
    w = world_with(world, *(world.node(f"n{i:02}", cpu="8") for i in range(4)), *pods, plugins={"log": log})
    assert w.cycle().scheduled == 2
    assert [len(nodes) for _, nodes in log.seen] == [4, 4]  # two shapes: each asks about every node


def test_the_token_volume_is_left_as_it_is_in_the_pod(world) -> None:
    from kai_core.scheduler.equivalence import _without_token_volume_name

    obj = with_token_volume(pod(world, "p0"), "x7k2q")
    spec = obj["spec"]
    before = repr(spec)
    out = _without_token_volume_name(spec)
    assert repr(spec) == before  # a copy was changed, not the pod
    assert out["volumes"][0]["name"] == "kube-api-access-"
    assert out["containers"][0]["volumeMounts"][0]["name"] == "kube-api-access-"
