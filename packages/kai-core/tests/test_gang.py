"""Gang scheduling on the embedded cluster: KAI's PodGroups (annotation ``pod-group-name``,
``minMember``) and groups declared by plugins are placed all together in one cycle or not at all
(no BindRequest for a partial group), inside the node subsets plugins propose, in their order."""

from __future__ import annotations

import pytest

from kai_core.api.features import FeatureGates
from kai_core.api.resources import RES_POD_GROUPS
from kai_core.apiserver.schema import crd_path, load_crd
from kai_core.apiserver.store import EmbeddedStore
from kai_core.dra.claims import ClaimAllocation, PodClaim
from kai_core.framework.gang import GroupSpec, NodeSubset
from kai_core.framework.hookspecs import hookimpl
from kai_core.framework.snapshot import Snapshot
from kai_core.plugins import build_plugin_manager
from kai_core.scheduler.cycle import Scheduler, SchedulerConfig, default_resources, watched_resources


def pod_group(name: str, min_member: int | None, namespace: str = "default", **spec) -> dict:
    if min_member is not None:
        spec["minMember"] = min_member
    return {"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def member(world, name: str, group: str, cpu: str = "1", **kw) -> dict:
    meta = kw.pop("meta", {})
    meta.setdefault("annotations", {})["pod-group-name"] = group
    return world.pod(name, cpu, meta=meta, **kw)


def messages(w, *names: str) -> set[str | None]:
    return {w.message(n) for n in names}


# -- PodGroups ---------------------------------------------------------------------------------


def test_a_podgroup_of_4_with_room_for_3_writes_no_bind_request(world):
    w = world(world.node("n1", cpu="2"), world.node("n2", cpu="1"), pod_group("train", 4),
              *[member(world, f"train-{i}", "train") for i in range(4)])
    result = w.cycle()
    assert w.bind_requests() == []
    assert (result.scheduled, result.unschedulable) == (0, 4)
    [message] = messages(w, *[f"train-{i}" for i in range(4)])
    assert message.startswith("PodGroup default/train (minMember 4): 4 pod(s) must be placed together but "
                              "only 3 fit: pod default/train-3: 0/2 nodes are available")
    assert "Insufficient cpu" in message
    assert [e["reason"] for e in w.events("train-0")] == ["FailedScheduling"]


def test_what_a_partial_group_tried_is_given_back_in_the_same_cycle(world):
    w = world(world.node("n1", cpu="2"), world.node("n2", cpu="1"), pod_group("train", 4),
              *[member(world, f"train-{i}", "train") for i in range(4)],
              world.pod("a-later", cpu="2", priority=-1), world.pod("b-later", cpu="1", priority=-1))
    assert w.cycle().scheduled == 2
    assert w.placed() == {"a-later": "n1", "b-later": "n2"}


def test_a_podgroup_that_fits_is_placed_whole_in_one_cycle(world):
    w = world(world.node("n1", cpu="2"), world.node("n2", cpu="2"), pod_group("train", 4),
              *[member(world, f"train-{i}", "train") for i in range(4)])
    assert w.cycle().scheduled == 4
    assert sorted(w.placed()) == [f"train-{i}" for i in range(4)]
    assert sorted(w.placed().values()) == ["n1", "n1", "n2", "n2"]


def test_members_above_min_member_that_do_not_fit_get_their_own_reason(world):
    w = world(world.node("n1", cpu="2"), pod_group("elastic", 2),
              *[member(world, f"e-{i}", "elastic") for i in range(3)])
    result = w.cycle()
    assert (result.scheduled, result.unschedulable) == (2, 1)
    assert sorted(w.placed()) == ["e-0", "e-1"]
    assert w.message("e-2") == "0/1 nodes are available: 1 Insufficient cpu."


def test_a_group_waits_for_its_members_then_starts_whole(world):
    w = world(world.node("n1", cpu="8"), pod_group("pg", 3), member(world, "a", "pg"), member(world, "b", "pg"))
    w.cycle()
    assert w.bind_requests() == []
    assert w.message("a") == ("PodGroup default/pg (minMember 3): waiting for pods: 3 must run together but "
                              "only 2 are running or waiting to be scheduled (0 running)")
    w.add(member(world, "c", "pg"))
    assert w.cycle().scheduled == 3


def test_members_already_running_count_toward_min_member(world):
    w = world(world.node("n1", cpu="2"), pod_group("pg", 3),
              member(world, "a", "pg", nodeName="n1"), member(world, "b", "pg", nodeName="n1"),
              member(world, "c", "pg"), member(world, "gated", "pg", schedulingGates=[{"name": "x/y"}]))
    w.add(world.node("n2", cpu="1"))
    assert w.cycle().scheduled == 1
    assert w.placed() == {"c": "n2"}


def test_a_pod_naming_a_missing_podgroup_waits_for_it(world):
    w = world(world.node("n1"), member(world, "p", "later"))
    w.cycle()
    assert w.bind_requests() == []
    assert w.message("p") == ('PodGroup "default/later" (annotation pod-group-name) not found: the pod waits '
                              "for its group to be created")
    w.add(pod_group("later", 1))
    w.cycle()
    assert w.placed() == {"p": "n1"}


@pytest.mark.parametrize("min_member", [None, 0, 1])
def test_min_member_below_2_schedules_pods_one_by_one(world, min_member):
    w = world(world.node("n1", cpu="1"), pod_group("pg", min_member),
              member(world, "a", "pg"), member(world, "b", "pg"))
    assert w.cycle().scheduled == 1
    assert w.placed() == {"a": "n1"}


def test_podgroups_are_matched_within_their_namespace(world):
    other = pod_group("pg", 2, namespace="team-b")
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}}
    w = world(world.node("n1", cpu="1"), ns, other, pod_group("pg", 1),
              member(world, "a", "pg"), member(world, "b", "pg"))
    w.cycle()
    assert w.placed() == {"a": "n1"}  # default/pg has minMember 1; team-b/pg is another group


def test_the_embedded_cluster_validates_podgroups_against_our_crd(world):
    from kai_core.api.errors import Invalid

    w = world()
    with pytest.raises(Invalid) as info:
        w.store.create(pod_group("bad", -1))
    assert "spec.minMember" in str(info.value)
    w.store.create(pod_group("good", 2, queue="team-a", subGroups=[{"name": "workers", "minMember": 2}]))


def test_a_failing_bind_request_hook_leaves_the_whole_group_unwritten(world):
    class RefuseB:
        @hookimpl
        def kai_bind_request(self, pod):
            if pod["metadata"]["name"] == "b":
                raise RuntimeError("no annotation for b")
            return None

    pm = build_plugin_manager(load_external=False)
    pm.register(RefuseB(), name="refuse-b")
    w = world(world.node("n1", cpu="4"), pod_group("pg", 2), member(world, "a", "pg"), member(world, "b", "pg"),
              pm=pm)
    w.cycle()
    assert w.bind_requests() == []
    assert "plugin 'refuse-b' failed in kai_bind_request" in w.message("a")


@pytest.mark.parametrize("fail_at", [0, 1])
def test_a_store_error_while_writing_a_group(world, monkeypatch, fail_at):
    from kai_core.api.errors import Forbidden

    w = world(world.node("n1", cpu="4"), pod_group("pg", 2), member(world, "a", "pg"), member(world, "b", "pg"))
    real, attempts = w.store.create, []

    def create(obj):
        if obj["kind"] == "BindRequest":
            attempts.append(obj["spec"]["podName"])
            if len(attempts) - 1 == fail_at:
                raise Forbidden("bindrequests.scheduling.run.ai is forbidden")
        return real(obj)

    monkeypatch.setattr(w.store, "create", create)
    result = w.cycle()
    if fail_at == 0:  # nothing written yet: nothing is, and b is not even tried
        assert attempts == ["a"] and w.bind_requests() == [] and result.errors == 2
    else:  # a is written and stays; b is tried again next cycle, a counting toward minMember
        assert attempts == ["a", "b"] and w.placed() == {"a": "n1"}
        monkeypatch.setattr(w.store, "create", real)
        w.cycle()
        assert w.placed() == {"a": "n1", "b": "n1"}


# -- groups and subsets from plugins -------------------------------------------------------------


class Racks:
    """Declares pods labelled ``job`` as groups of ``size``; proposes racks (node label ``rack``) in
    name order, or a reason when told to."""

    def __init__(self, size: int | None = None, reason: str | None = None) -> None:
        self.size = size
        self.reason = reason
        self.group_calls = 0
        self.subset_calls: list[str] = []

    @hookimpl
    def kai_pod_groups(self, pods, snapshot):
        self.group_calls += 1
        jobs: dict[str, list[dict]] = {}
        for pod in pods:
            job = (pod["metadata"].get("labels") or {}).get("job")
            if job:
                jobs.setdefault(job, []).append(pod)
        return [GroupSpec(f"job/{j}", members, self.size, f"job {j}") for j, members in jobs.items()]

    @hookimpl
    def kai_group_node_subsets(self, group, nodes, snapshot):
        self.subset_calls.append(group.name)
        if self.reason:
            return self.reason
        racks: dict[str, list[str]] = {}
        for n in nodes:
            racks.setdefault(n.labels.get("rack", "none"), []).append(n.name)
        return [NodeSubset(f"rack {r}", names) for r, names in sorted(racks.items())]


def rack_world(world, plugin, *objs):
    pm = build_plugin_manager(load_external=False)
    pm.register(plugin, name="racks")
    return world(*objs, pm=pm)


def job_pod(world, name: str, job: str, cpu: str = "1", **kw) -> dict:
    kw.setdefault("meta", {"labels": {"job": job}})
    return world.pod(name, cpu, **kw)


def test_a_plugin_group_goes_into_the_first_subset_where_it_fits(world):
    racks = Racks(size=2)
    w = rack_world(world, racks,
                   world.node("a1", cpu="1", labels={"rack": "a"}), world.node("a2", cpu="1", labels={"rack": "a"}),
                   world.node("b1", cpu="1", labels={"rack": "b"}), world.node("b2", cpu="1", labels={"rack": "b"}),
                   world.pod("hog", cpu="1", nodeName="a1"),
                   job_pod(world, "j-0", "j"), job_pod(world, "j-1", "j"))
    assert w.cycle().scheduled == 2
    assert w.placed() == {"j-0": "b1", "j-1": "b2"}
    assert racks.group_calls == 1 and racks.subset_calls == ["job/j"]  # once per cycle, once per gang


def test_a_group_fitting_no_subset_says_what_fit_where(world):
    racks = Racks(size=2)
    w = rack_world(world, racks,
                   world.node("a1", cpu="1", labels={"rack": "a"}), world.node("b1", cpu="1", labels={"rack": "b"}),
                   job_pod(world, "j-0", "j"), job_pod(world, "j-1", "j"))
    w.cycle()
    assert w.bind_requests() == []
    assert w.message("j-0") == (
        "job j: 2 pod(s) must be placed together inside one node subset and none holds them: "
        "in rack a: 1 fit (pod default/j-1: 0/1 nodes are available: 1 Insufficient cpu.); "
        "in rack b: 1 fit (pod default/j-1: 0/1 nodes are available: 1 Insufficient cpu.)")


def test_a_subset_hook_reason_keeps_the_group_waiting(world):
    w = rack_world(world, Racks(size=2, reason="job j needs a rack with 2 free nodes; the largest has 1"),
                   world.node("a1"), job_pod(world, "j-0", "j"), job_pod(world, "j-1", "j"))
    w.cycle()
    assert w.bind_requests() == []
    assert messages(w, "j-0", "j-1") == {"job j needs a rack with 2 free nodes; the largest has 1"}


def test_min_member_none_means_every_pod_listed(world):
    w = rack_world(world, Racks(size=None), world.node("n1", cpu="2"),
                   *[job_pod(world, f"j-{i}", "j") for i in range(3)])
    w.cycle()
    assert w.bind_requests() == []
    assert w.message("j-0").startswith("job j: 3 pod(s) must be placed together inside one node subset")


def test_declarations_sharing_a_pod_are_merged_and_all_must_hold(world):
    racks = Racks(size=2)
    x = job_pod(world, "x", "j", meta={"labels": {"job": "j"}, "annotations": {"pod-group-name": "pg"}})
    w = rack_world(world, racks, world.node("n1", cpu="3"), pod_group("pg", 2), x,
                   member(world, "y", "pg"), job_pod(world, "z", "j"), job_pod(world, "w", "j"))
    w.cycle()
    # one gang: PodGroup pg {x, y} and job j {w, x, z}; room for three, tried in name order: w, x, y
    # fit, which gives each declaration its two; z gets its own reason
    assert racks.subset_calls == ["PodGroup/default/pg+job/j"]
    assert sorted(w.placed()) == ["w", "x", "y"]
    assert w.message("z") == "0/1 nodes are available: 1 Insufficient cpu."


def test_a_merged_gang_is_refused_when_one_declaration_would_be_split(world):
    x = job_pod(world, "x", "j", meta={"labels": {"job": "j"}, "annotations": {"pod-group-name": "pg"}})
    w = rack_world(world, Racks(size=3), world.node("n1", cpu="3"), pod_group("pg", 2), x,
                   member(world, "y", "pg"), job_pod(world, "z", "j"), job_pod(world, "w", "j"))
    w.cycle()  # job j needs w, x and z; with y that is four pods for three cpus
    assert w.bind_requests() == []
    assert w.message("y").startswith("PodGroup default/pg (minMember 2) and job j: 3 pod(s) must be placed")


def test_undone_decisions_free_their_devices_for_later_pods(world):
    dra = FeatureGates.parse("DynamicResourceAllocation=true")
    cluster = f"""
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {{name: fpga.example.com}}
spec: {{selectors: [{{cel: {{expression: "device.driver == 'fpga.example.com'"}}}}]}}
---
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {{name: n1-fpga}}
spec:
  driver: fpga.example.com
  nodeName: n1
  pool: {{name: n1, generation: 1, resourceSliceCount: 1}}
  devices: [{{name: fpga-0}}]
---
{"".join(f'''apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {{name: {c}, namespace: default}}
spec: {{devices: {{requests: [{{name: fpga, exactly: {{deviceClassName: fpga.example.com}}}}]}}}}
---
''' for c in ("ca", "cb", "cs"))}"""

    def with_claim(pod: dict, claim: str) -> dict:
        pod["spec"]["resourceClaims"] = [{"name": "fpga", "resourceClaimName": claim}]
        pod["spec"]["containers"][0]["resources"]["claims"] = [{"name": "fpga"}]
        return pod

    w = world(world.node("n1", cpu="8"), cluster, pod_group("pg", 2),
              with_claim(member(world, "a", "pg"), "ca"), with_claim(member(world, "b", "pg"), "cb"),
              with_claim(world.pod("single", priority=-1), "cs"), config=SchedulerConfig(features=dra))
    w.cycle()
    assert w.placed() == {"single": "n1"}  # the device a took for the gang was given back
    assert "PodGroup default/pg (minMember 2): 2 pod(s) must be placed together but only 1 fit" in w.message("a")
    [br] = w.bind_requests()
    assert br["spec"]["resourceClaimAllocations"][0]["allocation"]["devices"]["results"][0]["device"] == "fpga-0"


def test_bad_answers_from_gang_hooks_are_reported_not_fatal(world, caplog):
    class Junk:
        @hookimpl
        def kai_pod_groups(self):
            return "not a list"

        @hookimpl
        def kai_group_node_subsets(self):
            return 42

    w = rack_world(world, Junk(), world.node("n1", cpu="4"), pod_group("pg", 2),
                   member(world, "a", "pg"), member(world, "b", "pg"), world.pod("alone"))
    w.cycle()
    assert w.placed() == {"alone": "n1"}
    assert w.message("a").startswith("plugin 'racks' returned a bad result from kai_group_node_subsets")
    assert "plugin 'racks' returned a bad result from kai_pod_groups" in caplog.text


# -- what the scheduler watches --------------------------------------------------------------------


def test_podgroups_are_watched_only_where_served(world):
    assert RES_POD_GROUPS in watched_resources(False)
    assert RES_POD_GROUPS not in watched_resources(True, pod_groups=False)
    pm = build_plugin_manager(load_external=False)
    assert RES_POD_GROUPS not in default_resources(EmbeddedStore(), pm, False)  # no CRD installed
    store = EmbeddedStore()
    store.restore(load_crd(crd_path("bindrequests.scheduling.run.ai")))
    s = Scheduler(store, pm)  # BindRequests but no PodGroups: a cycle works, annotations are ignored
    assert RES_POD_GROUPS not in s.cache.resources
    store.restore(world.node("n1"))
    store.restore(member(world, "p", "pg"))
    assert s.run_cycle().scheduled == 1


def test_unassume_gives_back_exactly_what_assume_took(world):
    w = world(world.node("n1", cpu="4"), world.pod("p", cpu="1500m"))
    w.scheduler.cache.sync()
    snap = Snapshot(w.scheduler.cache, "kai-scheduler", FeatureGates())
    node = snap.node_by_name["n1"]
    before = (dict(node.requested), node.pod_count, set(snap.devices_in_use))
    pod = snap.pods[("default", "p")]
    claim = {"metadata": {"name": "c", "namespace": "default"}}
    alloc = {"devices": {"results": [{"request": "r", "driver": "d.example.com", "pool": "n1", "device": "x"}]}}
    snap.assume(pod, "n1", [PodClaim("c", claim)], ClaimAllocation([alloc]))
    assert snap.node_of(pod) == "n1" and snap.pending_pods() == []
    assert node.requested["cpu"] == 1500 and ("d.example.com", "n1", "x") in snap.devices_in_use
    snap.unassume(pod, "n1", [PodClaim("c", claim)], ClaimAllocation([alloc]))
    assert (dict(node.requested), node.pod_count, set(snap.devices_in_use)) == before
    assert snap.node_of(pod) is None and snap.pending_pods() == [pod]
    assert snap.assumed_allocations == {} and snap.generation == 2
    assert [(added, key) for added, key, _ in snap.allocation_log] == [(True, ("default", "c")),
                                                                       (False, ("default", "c"))]
