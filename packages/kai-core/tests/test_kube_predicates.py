"""kube-scheduler's predicates as kai honours them, through the cycle on the embedded cluster:
NodeName, NodePorts, NodeResourcesFit's pod overhead and ephemeral storage, and pods pre-bound
with ``spec.nodeName`` counting on their node."""

from __future__ import annotations

import pytest

GANG = {"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
        "metadata": {"name": "g", "namespace": "default"}, "spec": {"minMember": 2}}


def with_ports(pod: dict, *ports: dict, init: bool = False) -> dict:
    """The pod with ``ports`` on its container (or on a sidecar init container with ``init``)."""
    if init:
        pod["spec"]["initContainers"] = [{"name": "side", "image": "busybox:1", "restartPolicy": "Always",
                                          "ports": list(ports)}]
    else:
        pod["spec"]["containers"][0]["ports"] = list(ports)
    return pod


def port(host: int, proto: str | None = None, ip: str | None = None) -> dict:
    p: dict = {"containerPort": 8080, "hostPort": host}
    if proto:
        p["protocol"] = proto
    if ip:
        p["hostIP"] = ip
    return p


# -- NodePorts --------------------------------------------------------------------------------

def test_two_pods_asking_one_host_port_go_to_different_nodes(world):
    w = world(world.node("n1"), world.node("n2"),
              with_ports(world.pod("a"), port(80)), with_ports(world.pod("b"), port(80)))
    w.cycle()
    assert sorted(w.placed().values()) == ["n1", "n2"]  # binpack alone would stack them on one node


def test_a_taken_host_port_is_named_in_the_message(world):
    w = world(world.node("n1"), with_ports(world.pod("a"), port(80)), with_ports(world.pod("b"), port(80)))
    w.cycle()
    assert w.placed() == {"a": "n1"}
    assert w.message("b") == "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports."


@pytest.mark.parametrize(("first", "second", "conflict"), [
    (port(80), port(80, "UDP"), False),                         # another protocol
    (port(80, "TCP"), port(80), True),                          # TCP is the default
    (port(80, ip="10.0.0.1"), port(80, ip="10.0.0.2"), False),  # two specific IPs
    (port(80, ip="10.0.0.1"), port(80, ip="10.0.0.1"), True),
    (port(80), port(80, ip="10.0.0.1"), True),                  # 0.0.0.0 holds every IP
    (port(80, ip="10.0.0.1"), port(80), True),
    (port(80), port(81), False),
    ({"containerPort": 80}, {"containerPort": 80}, False),      # no hostPort: no host port taken
])
def test_host_port_conflicts(world, first, second, conflict):
    w = world(world.node("n1"), with_ports(world.pod("a"), first), with_ports(world.pod("b"), second))
    w.cycle()
    assert ("b" in w.placed()) is not conflict


def test_a_sidecar_holds_its_host_port_but_a_plain_init_container_does_not(world):
    plain_init = world.pod("c")
    plain_init["spec"]["initContainers"] = [{"name": "init", "image": "busybox:1", "ports": [port(90)]}]
    w = world(world.node("n1"), with_ports(world.pod("a"), port(80), init=True),
              with_ports(world.pod("b"), port(80)), plain_init, with_ports(world.pod("d"), port(90)))
    w.cycle()
    assert w.placed() == {"a": "n1", "c": "n1", "d": "n1"}


def test_pods_bound_and_in_flight_hold_their_host_ports(world):
    bound = with_ports(world.pod("bound", nodeName="n1"), port(80))
    w = world(world.node("n1"), world.node("n2"), bound, with_ports(world.pod("a"), port(80)))
    w.cycle()
    assert w.placed() == {"a": "n2"}
    w.add(with_ports(world.pod("b"), port(80)))  # a's BindRequest is still in flight
    w.cycle()
    assert "b" not in w.placed()
    assert w.message("b") == "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports."


def test_gang_members_asking_one_host_port_take_a_node_each(world):
    members = [with_ports(world.pod(f"m{i}", meta={"annotations": {"pod-group-name": "g"}}), port(80))
               for i in range(2)]
    w = world(GANG, world.node("n1"), world.node("n2"), *members)
    w.cycle()
    assert sorted(w.placed().values()) == ["n1", "n2"]


def test_a_gang_whose_members_share_a_host_port_waits_on_one_node(world):
    members = [with_ports(world.pod(f"m{i}", meta={"annotations": {"pod-group-name": "g"}}), port(80))
               for i in range(2)]
    w = world(GANG, world.node("n1"), *members)
    w.cycle()
    assert w.placed() == {}
    assert "didn't have free ports for the requested pod ports" in w.message("m1")


# -- NodeName ---------------------------------------------------------------------------------

def test_a_pod_naming_its_node_fits_only_there(world):
    w = world(world.node("n1"), world.node("n2"), world.node("n3", cpu="0"))
    w.cycle()
    snap = w.scheduler.last_snapshot
    decision = w.scheduler.decide(world.pod("p", nodeName="n2"), snap)
    assert decision.node == "n2"
    decision = w.scheduler.decide(world.pod("p", nodeName="n3"), snap)
    assert decision.status.message == ("0/3 nodes are available: 1 Insufficient cpu, "
                                       "2 node(s) didn't match the requested node name.")


def test_a_pre_bound_pod_is_not_scheduled_and_takes_its_node_s_resources(world):
    w = world(world.node("n1", cpu="2"), world.node("n2", cpu="2"),
              world.pod("bound", "2", nodeName="n1"), world.pod("p", "2"))
    w.cycle()
    assert w.placed() == {"p": "n2"}


# -- NodeResourcesFit: overhead and ephemeral storage -----------------------------------------

def test_pod_overhead_counts_toward_the_fit(world):
    w = world(world.node("n1", cpu="1500m"), world.pod("p", "1", overhead={"cpu": "600m"}),
              world.pod("q", "1", overhead={"cpu": "500m"}))
    w.cycle()
    assert w.placed() == {"q": "n1"}
    assert w.message("p") == "0/1 nodes are available: 1 Insufficient cpu."


def test_overhead_of_a_bound_pod_takes_room_on_its_node(world):
    w = world(world.node("n1", cpu="2"), world.pod("bound", "1", nodeName="n1", overhead={"cpu": "1"}),
              world.pod("p", "1"))
    w.cycle()
    assert w.message("p") == "0/1 nodes are available: 1 Insufficient cpu."


def storage_pod(world, name: str, storage: str, where: str = "containers") -> dict:
    p = world.pod(name)
    c = p["spec"]["containers"][0]
    c["resources"]["requests"]["ephemeral-storage"] = storage
    if where == "initContainers":
        p["spec"]["initContainers"] = [{"name": "init", "image": "busybox:1",
                                        "resources": {"requests": {"ephemeral-storage": storage}}}]
        del c["resources"]["requests"]["ephemeral-storage"]
    return p


def test_ephemeral_storage_must_fit(world):
    w = world(world.node("n1", extra={"ephemeral-storage": "10Gi"}),
              world.node("n2", extra={"ephemeral-storage": "30Gi"}),
              storage_pod(world, "big", "20Gi"), storage_pod(world, "huge", "40Gi"),
              storage_pod(world, "init", "25Gi", where="initContainers"))
    w.cycle()
    assert w.placed() == {"big": "n2"}  # then n2 has 10Gi left: the init container's 25Gi fits nowhere
    assert w.message("huge") == "0/2 nodes are available: 2 Insufficient ephemeral-storage."
    assert w.message("init") == "0/2 nodes are available: 2 Insufficient ephemeral-storage."


def test_a_node_without_ephemeral_storage_takes_only_pods_not_asking_for_it(world):
    w = world(world.node("n1"), storage_pod(world, "p", "1Gi"), world.pod("plain"))
    w.cycle()
    assert w.placed() == {"plain": "n1"}
    assert w.message("p") == "0/1 nodes are available: 1 Insufficient ephemeral-storage."


# -- the README's list ------------------------------------------------------------------------

def test_the_readme_lists_the_kube_scheduler_plugins_kai_honours():
    import re
    from pathlib import Path

    from kai_core.plugins import BUILTINS

    readme = Path(__file__).resolve().parents[3] / "README.md"
    if not readme.is_file():
        pytest.skip(f"{readme} not found: the README is only in the source repository")
    section = re.search(r"^## What kai honours, by kube-scheduler plugin.*?(?=^## )",
                        readme.read_text(encoding="utf-8"), re.S | re.M)
    assert section, "README section 'What kai honours, by kube-scheduler plugin' is missing"
    listed = set(re.findall(r"`(kai-core\.[a-z-]+)`", section.group(0)))
    assert listed <= set(BUILTINS)  # no stale name
    for name in ("NodeUnschedulable", "NodeName", "TaintToleration", "NodeAffinity", "NodePorts", "NodeResourcesFit",
                 "PodTopologySpread", "InterPodAffinity", "DynamicResources", "VolumeBinding", "VolumeZone"):
        assert f"\n| {name} |" in section.group(0) or f"\n| {name}," in section.group(0), name
