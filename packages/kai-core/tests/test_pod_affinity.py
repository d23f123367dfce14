"""kube-scheduler's InterPodAffinity as kai honours it, through the cycle on the embedded cluster:
required and preferred pod affinity and anti-affinity, existing pods' anti-affinity (symmetry),
namespaces and namespaceSelector, matchLabelKeys/mismatchLabelKeys, and pods placed earlier in the
cycle (gang members included)."""

from __future__ import annotations

REQ = "requiredDuringSchedulingIgnoredDuringExecution"
PREF = "preferredDuringSchedulingIgnoredDuringExecution"
HOST = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"


def term(labels: dict, key: str = HOST, **extra) -> dict:
    return {"labelSelector": {"matchLabels": labels}, "topologyKey": key, **extra}


def affinity(*, required=(), anti=(), preferred=(), preferred_anti=()) -> dict:
    out: dict = {}
    if required or preferred:
        out["podAffinity"] = {REQ: list(required), PREF: [{"weight": w, "podAffinityTerm": t} for w, t in preferred]}
    if anti or preferred_anti:
        out["podAntiAffinity"] = {REQ: list(anti),
                                  PREF: [{"weight": w, "podAffinityTerm": t} for w, t in preferred_anti]}
    return out


def node(world, name: str, zone: str | None = None, cpu: str = "4") -> dict:
    labels = {HOST: name}
    if zone:
        labels[ZONE] = zone
    return world.node(name, cpu=cpu, labels=labels)


def pod(world, name: str, labels: dict, cpu: str = "1", *, ns: str = "default", aff: dict | None = None,
        t: int = 0, **spec) -> dict:
    meta = {"labels": labels, "namespace": ns, "creationTimestamp": f"2026-01-01T00:00:{t:02}Z"}
    if aff:
        spec["affinity"] = aff
    return world.pod(name, cpu, meta=meta, **spec)


def namespace(name: str, **labels) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


WEB = {"app": "web"}


# -- required anti-affinity ---------------------------------------------------------------------

def test_replicas_with_hostname_anti_affinity_take_a_node_each(world):
    spread = affinity(anti=[term(WEB)])
    w = world(node(world, "n1"), node(world, "n2"),
              *(pod(world, f"w{i}", WEB, aff=spread, t=i) for i in range(3)))
    w.cycle()
    assert sorted(w.placed().values()) == ["n1", "n2"]  # binpack alone would stack them
    assert w.message("w2") == "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."


def test_zone_anti_affinity_rejects_every_node_of_the_zone(world):
    w = world(node(world, "n1", "a"), node(world, "n2", "a"), node(world, "n3", "b"),
              pod(world, "db", {"app": "db"}, nodeName="n1"),
              pod(world, "p", WEB, aff=affinity(anti=[term({"app": "db"}, ZONE)])))
    w.cycle()
    assert w.placed() == {"p": "n3"}


def test_a_node_without_the_topology_key_is_not_repelled(world):
    w = world(world.node("bare"), pod(world, "db", {"app": "db"}, nodeName="bare"),
              pod(world, "p", WEB, aff=affinity(anti=[term({"app": "db"}, ZONE)])))
    w.cycle()
    assert w.placed() == {"p": "bare"}


# -- required affinity ---------------------------------------------------------------------------

def test_affinity_follows_the_pods_it_wants(world):
    w = world(node(world, "n1", "a"), node(world, "n2", "b"), node(world, "n3", "b"),
              pod(world, "db", {"app": "db"}, nodeName="n3"),
              pod(world, "p", WEB, aff=affinity(required=[term({"app": "db"}, ZONE)])))
    w.cycle()
    assert w.placed() == {"p": "n3"}  # zone b; binpack picks the used node of it


def test_affinity_to_pods_that_run_nowhere(world):
    w = world(node(world, "n1", "a"), world.node("bare"),
              pod(world, "p", WEB, aff=affinity(required=[term({"app": "db"}, ZONE)])))
    w.cycle()
    assert w.message("p") == "0/2 nodes are available: 2 node(s) didn't match pod affinity rules."


def test_the_first_pod_of_a_group_wanting_itself_goes_to_a_node_with_the_key(world):
    together = affinity(required=[term(WEB, ZONE)])
    w = world(world.node("bare", cpu="8"), node(world, "n1", "a", cpu="1"), node(world, "n2", "b", cpu="1"),
              node(world, "n3", "b", cpu="1"), *(pod(world, f"w{i}", WEB, aff=together, t=i) for i in range(3)))
    w.cycle()
    placed = w.placed()
    zones = {"n1": "a", "n2": "b", "n3": "b"}
    assert "bare" not in placed.values()
    # once the first is placed, the others must join its zone
    assert len({zones[n] for n in placed.values()}) == 1
    assert len(placed) == (2 if zones[placed["w0"]] == "b" else 1)


# -- existing pods' anti-affinity (symmetry) -----------------------------------------------------

def test_an_existing_pod_s_anti_affinity_repels_a_plain_pod(world):
    guard = pod(world, "guard", {"app": "guard"}, nodeName="n1", aff=affinity(anti=[term(WEB)]))
    w = world(node(world, "n1"), node(world, "n2"), guard, pod(world, "p", WEB), pod(world, "other", {"app": "x"}))
    w.cycle()
    assert w.placed() == {"p": "n2", "other": "n1"}


def test_existing_anti_affinity_message(world):
    guard = pod(world, "guard", {"app": "guard"}, nodeName="n1", aff=affinity(anti=[term(WEB)]))
    w = world(node(world, "n1"), guard, pod(world, "p", WEB))
    w.cycle()
    assert w.message("p") == "0/1 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules."


def test_a_guard_placed_earlier_in_the_cycle_repels_the_next_pods_of_a_shape(world):
    """w0 and w1 share a shape (the memo reuses w0's answers); the guard placed between them repels
    web pods from zone b, including n4, which nothing was placed on."""
    guard = pod(world, "guard", {"app": "guard"}, aff=affinity(anti=[term(WEB, ZONE)]), t=1)
    w = world(node(world, "n1", "a", cpu="1"), node(world, "n3", "b", cpu="1"), node(world, "n4", "b", cpu="1"),
              pod(world, "w0", WEB, t=0), guard, pod(world, "w1", WEB, t=2))
    w.cycle()
    assert w.placed() == {"w0": "n1", "guard": "n3"}
    assert w.message("w1") == ("0/3 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity "
                               "rules, 2 Insufficient cpu.")


def test_a_pod_in_flight_from_an_earlier_cycle_counts(world):
    spread = affinity(anti=[term(WEB)])
    w = world(node(world, "n1"), node(world, "n2"), pod(world, "w0", WEB, aff=spread))
    w.cycle()
    assert w.placed() == {"w0": "n1"}
    w.add(pod(world, "w1", WEB, aff=spread, t=1), pod(world, "plain", WEB, t=2))
    w.cycle()  # w0's BindRequest is still in flight: nobody binds in this test
    assert w.placed() == {"w0": "n1", "w1": "n2"}
    # a web pod without terms of its own is repelled by both
    assert w.message("plain") == "0/2 nodes are available: 2 node(s) didn't satisfy existing pods anti-affinity rules."


# -- namespaces ----------------------------------------------------------------------------------

def test_a_term_looks_in_its_own_namespace_unless_told_otherwise(world):
    db_elsewhere = pod(world, "db", {"app": "db"}, ns="other", nodeName="n1")
    w = world(namespace("other"), node(world, "n1"), node(world, "n2"), db_elsewhere,
              pod(world, "same-ns", WEB, aff=affinity(anti=[term({"app": "db"})])),
              pod(world, "listed", WEB, aff=affinity(anti=[term({"app": "db"}, namespaces=["other"])]), t=1))
    w.cycle()
    assert w.placed()["same-ns"] == "n1"
    assert w.placed()["listed"] == "n2"


def test_namespace_selector_picks_namespaces_by_label(world):
    objs = [namespace("team-a", team="a"), namespace("team-b", team="b"), node(world, "n1"), node(world, "n2"),
            node(world, "n3"), pod(world, "db-a", {"app": "db"}, ns="team-a", nodeName="n1"),
            pod(world, "db-b", {"app": "db"}, ns="team-b", nodeName="n2")]
    by_label = affinity(anti=[term({"app": "db"}, namespaceSelector={"matchLabels": {"team": "a"}})])
    everywhere = affinity(anti=[term({"app": "db"}, namespaceSelector={})])
    w = world(*objs, pod(world, "p", WEB, aff=by_label), pod(world, "q", WEB, aff=everywhere, t=1))
    w.cycle()
    assert w.placed()["p"] == "n2"  # n1 holds team-a's db; binpack prefers the used n2
    assert w.placed()["q"] == "n3"


# -- matchLabelKeys / mismatchLabelKeys ----------------------------------------------------------

def test_match_label_keys_narrow_the_term_to_the_pod_s_own_values(world):
    per_version = affinity(anti=[term(WEB, matchLabelKeys=["version"])])
    w = world(node(world, "n1"), node(world, "n2"),
              pod(world, "old", {**WEB, "version": "1"}, nodeName="n1"),
              pod(world, "v2", {**WEB, "version": "2"}, aff=per_version),
              pod(world, "v1", {**WEB, "version": "1"}, aff=per_version, t=1))
    w.cycle()
    assert w.placed() == {"v2": "n1", "v1": "n2"}


def test_mismatch_label_keys_keep_tenants_apart(world):
    exists = {"labelSelector": {"matchExpressions": [{"key": "tenant", "operator": "Exists"}]}, "topologyKey": HOST,
              "mismatchLabelKeys": ["tenant"]}
    w = world(node(world, "n1"), node(world, "n2"),
              pod(world, "a0", {"tenant": "a"}, nodeName="n1"),
              pod(world, "b", {"tenant": "b"}, aff=affinity(anti=[exists])),
              pod(world, "a1", {"tenant": "a"}, aff=affinity(anti=[exists]), t=1))
    w.cycle()
    assert w.placed() == {"b": "n2", "a1": "n1"}


# -- gangs ---------------------------------------------------------------------------------------

GANG = {"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
        "metadata": {"name": "g", "namespace": "default"}, "spec": {"minMember": 2}}


def gang_member(world, name: str, t: int) -> dict:
    p = pod(world, name, WEB, aff=affinity(anti=[term(WEB)]), t=t)
    p["metadata"]["annotations"] = {"pod-group-name": "g"}
    return p


def test_gang_members_see_each_other_s_anti_affinity(world):
    w = world(GANG, node(world, "n1"), node(world, "n2"), gang_member(world, "m0", 0), gang_member(world, "m1", 1))
    w.cycle()
    assert sorted(w.placed().values()) == ["n1", "n2"]


def test_a_gang_that_repels_itself_off_the_only_node_waits(world):
    w = world(GANG, node(world, "n1"), gang_member(world, "m0", 0), gang_member(world, "m1", 1))
    w.cycle()
    assert w.placed() == {}
    assert "didn't match pod anti-affinity rules" in w.message("m1")


# -- preferred terms (score) ---------------------------------------------------------------------

def test_preferred_anti_affinity_outweighs_bin_packing(world):
    away = affinity(preferred_anti=[(100, term({"app": "db"}))])
    w = world(node(world, "n1"), node(world, "n2"), pod(world, "db", {"app": "db"}, nodeName="n1"),
              pod(world, "plain", {"app": "x"}), pod(world, "p", WEB, aff=away, t=1))
    w.cycle()
    assert w.placed() == {"plain": "n1", "p": "n2"}


def test_preferred_affinity_pulls_toward_its_pods(world):
    near = affinity(preferred=[(50, term({"app": "db"}, ZONE))])
    w = world(node(world, "n1", "a"), node(world, "n2", "a"), node(world, "n3", "b"),
              pod(world, "big", {"app": "x"}, "3", nodeName="n1"),
              pod(world, "db", {"app": "db"}, "1", nodeName="n3"), pod(world, "p", WEB, aff=near))
    w.cycle()
    assert w.placed() == {"p": "n3"}  # binpack alone prefers the fuller n1


def test_an_existing_pod_s_preferred_anti_affinity_pushes_a_plain_pod_away(world):
    shy = pod(world, "shy", {"app": "shy"}, nodeName="n1", aff=affinity(preferred_anti=[(100, term(WEB))]))
    w = world(node(world, "n1"), node(world, "n2"), shy, pod(world, "p", WEB))
    w.cycle()
    assert w.placed() == {"p": "n2"}


# -- bad input ----------------------------------------------------------------------------------

def test_a_malformed_term_is_named(world):
    w = world(node(world, "n1"), pod(world, "p", WEB, aff=affinity(anti=[{"labelSelector": {}}])))
    w.cycle()
    assert w.message("p") == ("0/1 nodes are available: invalid spec.affinity.podAntiAffinity."
                              "requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey must not be empty.")
