"""kube-scheduler's PodTopologySpread as kai honours it, through the cycle on the embedded cluster:
DoNotSchedule and ScheduleAnyway, minDomains, nodeAffinityPolicy/nodeTaintsPolicy, matchLabelKeys,
pods placed earlier in the cycle and gang members, and the cluster-level default constraints
(``KAI_DEFAULT_SPREAD_CONSTRAINTS``)."""

from __future__ import annotations

import json

import pytest

from kai_core.framework.pod_constraints import DEFAULT_SPREAD_ENV

HOST = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"
WEB = {"app": "web"}
TAINT = {"key": "dedicated", "value": "x", "effect": "NoSchedule"}


def node(world, name: str, zone: str | None = None, cpu: str = "4", *, taints=None, **labels) -> dict:
    all_labels = {HOST: name, **labels}
    if zone:
        all_labels[ZONE] = zone
    return world.node(name, cpu=cpu, labels=all_labels, taints=taints)


def spread(key: str = ZONE, skew: int = 1, when: str = "DoNotSchedule", selector: dict | None = None,
           **extra) -> dict:
    return {"maxSkew": skew, "topologyKey": key, "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": selector or WEB}, **extra}


def pod(world, name: str, labels: dict | None = None, *constraints: dict, t: int = 0, cpu: str = "1",
        owner: str | None = None, **spec) -> dict:
    meta: dict = {"labels": dict(WEB if labels is None else labels),
                  "creationTimestamp": f"2026-01-01T00:00:{t:02}Z"}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner,
                                    "uid": f"uid-{owner}", "controller": True}]
    if constraints:
        spec["topologySpreadConstraints"] = list(constraints)
    return world.pod(name, cpu, meta=meta, **spec)


def zones_of(w, zones: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for node_name in w.placed().values():
        out[zones[node_name]] = out.get(zones[node_name], 0) + 1
    return out


# -- DoNotSchedule ------------------------------------------------------------------------------

def test_do_not_schedule_keeps_the_skew_as_pods_of_the_cycle_are_placed(world):
    w = world(node(world, "n1", "a", cpu="8"), node(world, "n2", "b", cpu="1"),
              *(pod(world, f"p{i}", None, spread(), t=i) for i in range(4)))
    w.cycle()
    assert zones_of(w, {"n1": "a", "n2": "b"}) == {"a": 2, "b": 1}
    assert w.message("p3") == ("0/2 nodes are available: 1 Insufficient cpu, "
                               "1 node(s) didn't match pod topology spread constraints.")


def test_existing_pods_count_and_a_pod_not_matching_its_selector_adds_nothing(world):
    w = world(node(world, "n1", "a"), node(world, "n2", "b"),
              pod(world, "old", nodeName="n1"),
              pod(world, "p", None, spread()),
              pod(world, "other", {"app": "other"}, spread(skew=1), t=1))
    w.cycle()
    # p goes to b (a would make the skew 2); "other" does not match app=web: a has 1, b has 1 + 0
    assert w.placed() == {"p": "n2", "other": "n1"}


def test_a_node_without_the_topology_key(world):
    w = world(node(world, "n1", "a"), world.node("bare"), pod(world, "p", None, spread()))
    w.cycle()
    assert w.placed() == {"p": "n1"}
    w2 = world(world.node("bare"), pod(world, "p", None, spread()))
    w2.cycle()
    assert w2.message("p") == ("0/1 nodes are available: 1 node(s) didn't match pod topology spread "
                               "constraints (missing required label).")


def test_min_domains_counts_missing_domains_as_empty(world):
    w = world(node(world, "n1", "a"), node(world, "n2", "b"),
              *(pod(world, f"p{i}", None, spread(minDomains=3), t=i) for i in range(3)))
    w.cycle()
    assert sorted(w.placed().values()) == ["n1", "n2"]
    assert w.message("p2") == "0/2 nodes are available: 2 node(s) didn't match pod topology spread constraints."


@pytest.mark.parametrize(("policy", "placed"), [(None, True), ("Honor", True), ("Ignore", False)])
def test_node_affinity_policy(world, policy, placed):
    """Zone c cannot take the pod (nodeSelector): with Honor it is no domain, so a and b (one pod
    each) are even; with Ignore its 0 pods are the minimum and the pod fits nowhere."""
    extra = {"nodeAffinityPolicy": policy} if policy else {}
    w = world(node(world, "n1", "a", pool="y"), node(world, "n2", "b", pool="y"), node(world, "n3", "c"),
              pod(world, "a1", nodeName="n1"), pod(world, "b1", nodeName="n2"),
              pod(world, "p", None, spread(**extra), nodeSelector={"pool": "y"}))
    w.cycle()
    assert ("p" in w.placed()) is placed


@pytest.mark.parametrize(("policy", "placed"), [(None, False), ("Ignore", False), ("Honor", True)])
def test_node_taints_policy(world, policy, placed):
    extra = {"nodeTaintsPolicy": policy} if policy else {}
    w = world(node(world, "n1", "a"), node(world, "n2", "b"), node(world, "n3", "c", taints=[TAINT]),
              pod(world, "a1", nodeName="n1"), pod(world, "b1", nodeName="n2"), pod(world, "p", None, spread(**extra)))
    w.cycle()
    assert ("p" in w.placed()) is placed
    if not placed:
        assert w.message("p") == ("0/3 nodes are available: 1 node(s) had untolerated taint(s), "
                                  "2 node(s) didn't match pod topology spread constraints.")


def test_match_label_keys_count_only_the_pod_s_own_revision(world):
    per_rev = spread(matchLabelKeys=["rev"])
    w = world(node(world, "n1", "a"), node(world, "n2", "b"),
              pod(world, "old1", {**WEB, "rev": "1"}, nodeName="n1"),
              pod(world, "old2", {**WEB, "rev": "1"}, nodeName="n1"),
              pod(world, "new", {**WEB, "rev": "2"}, per_rev))
    w.cycle()
    assert w.placed() == {"new": "n1"}  # rev 2 counts no pod yet; binpack picks the used node


def test_gang_members_spread_over_hostnames(world):
    group = {"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
             "metadata": {"name": "g", "namespace": "default"}, "spec": {"minMember": 3}}
    members = []
    for i in range(3):
        p = pod(world, f"m{i}", None, spread(HOST), t=i)
        p["metadata"]["annotations"] = {"pod-group-name": "g"}
        members.append(p)
    w = world(group, node(world, "n1"), node(world, "n2"), node(world, "n3"), *members)
    w.cycle()
    assert sorted(w.placed().values()) == ["n1", "n2", "n3"]


def test_a_malformed_constraint_is_named(world):
    w = world(node(world, "n1", "a"), pod(world, "p", None, spread(skew=0)))
    w.cycle()
    assert w.message("p") == ("0/1 nodes are available: invalid spec.topologySpreadConstraints[0].maxSkew must be "
                              "an integer of at least 1.")


# -- ScheduleAnyway -----------------------------------------------------------------------------

def test_schedule_anyway_spreads_what_bin_packing_would_stack(world):
    w = world(node(world, "n1", "a"), node(world, "n2", "b"),
              *(pod(world, f"p{i}", None, spread(when="ScheduleAnyway"), t=i) for i in range(2)))
    w.cycle()
    assert sorted(w.placed().values()) == ["n1", "n2"]


def test_schedule_anyway_never_leaves_a_pod_pending(world):
    w = world(node(world, "n1", "a"), *(pod(world, f"p{i}", None, spread(when="ScheduleAnyway"), t=i)
                                        for i in range(3)))
    w.cycle()
    assert len(w.placed()) == 3


# -- cluster-level defaults ---------------------------------------------------------------------

def test_system_defaults_spread_a_replica_set_over_hostnames(world, monkeypatch):
    monkeypatch.delenv(DEFAULT_SPREAD_ENV, raising=False)
    w = world(node(world, "n1"), node(world, "n2"), *(pod(world, f"r{i}", owner="rs", t=i) for i in range(2)))
    w.cycle()
    assert sorted(w.placed().values()) == ["n1", "n2"]


def test_no_defaults_and_pods_without_a_controller_are_left_to_bin_packing(world, monkeypatch):
    monkeypatch.setenv(DEFAULT_SPREAD_ENV, "none")
    w = world(node(world, "n1"), node(world, "n2"), *(pod(world, f"r{i}", owner="rs", t=i) for i in range(2)))
    w.cycle()
    assert set(w.placed().values()) == {"n1"}
    monkeypatch.delenv(DEFAULT_SPREAD_ENV)
    w = world(node(world, "n1"), node(world, "n2"), *(pod(world, f"p{i}", t=i) for i in range(2)))
    w.cycle()
    assert set(w.placed().values()) == {"n1"}


def test_listed_defaults_count_the_pods_of_the_same_controller(world, monkeypatch):
    monkeypatch.setenv(DEFAULT_SPREAD_ENV, json.dumps([{"maxSkew": 1, "topologyKey": HOST,
                                                         "whenUnsatisfiable": "DoNotSchedule"}]))
    w = world(node(world, "n1", cpu="8"), node(world, "n2", cpu="8"),
              pod(world, "x0", owner="other", nodeName="n2"), pod(world, "x1", owner="other", nodeName="n2"),
              *(pod(world, f"r{i}", owner="rs", t=i) for i in range(3)))
    w.cycle()
    on = list(w.placed().values())
    assert sorted(on.count(n) for n in ("n1", "n2")) == [1, 2]  # the other set's pods on n2 do not count


def test_a_bad_defaults_setting_is_reported_on_the_pods_it_applies_to(world, monkeypatch):
    monkeypatch.setenv(DEFAULT_SPREAD_ENV, "[{\"labelSelector\": {}}]")
    w = world(node(world, "n1"), pod(world, "r", owner="rs"), pod(world, "plain", t=1))
    w.cycle()
    assert w.placed() == {"plain": "n1"}
    assert w.message("r") == (f"0/1 nodes are available: invalid {DEFAULT_SPREAD_ENV}: default constraints take "
                              "no labelSelector (the pod's owner selects the pods).")
