"""The binder verifies what a BindRequest asks before it writes anything (issue 12, item 3).

Hand-written BindRequests of every kind the issue's red-team pass got through are refused: two pods
given the same device, a device on another node than the pod, a device that does not exist, three
devices in a claim that asks for one, a pod of another scheduler; and a device that does not match
the selectors, a second live BindRequest for one pod, an allocation other than the claim's. Each
refusal ends the request ``Failed`` with a reason naming the check, and nothing else is written:
no claim is touched, the pod stays unbound, nothing is reported on it.
"""

from __future__ import annotations

import pytest

from kai_binder.testing import invariant_violations
from kai_core.api.bindrequest import build_bind_request
from kai_core.api.claims import claim_name_for
from kai_core.api.nodeaffinity import node_selector_for_node
from kai_core.api.resources import RES_BIND_REQUESTS, RES_CLAIMS, RES_PODS

DRIVER = "fpga.example.com"


def result(pool: str, device: str, request: str = "fpga") -> dict:
    return {"request": request, "driver": DRIVER, "pool": pool, "device": device}


def allocation(node: str, *devices: str, pool: str | None = None, request: str = "fpga") -> dict:
    """An AllocationResult as the scheduler writes it: the devices of one node-local pool."""
    pool = pool or node
    return {"devices": {"results": [result(pool, d, request) for d in devices]},
            "nodeSelector": node_selector_for_node(pool)}


def hand_br(r, pod_name: str, node: str, claims: dict[str, dict] | None = None, name: str | None = None,
            backoff_limit: int | None = None) -> dict:
    """Create a BindRequest by hand (not through the binder's store: not in its write log)."""
    pod = r.get_pod(pod_name)
    br = build_bind_request(pod, node, list((claims or {}).items()), backoff_limit=backoff_limit)
    if name:
        br["metadata"]["name"] = name
    return r.store.create(br)


def claims_ready(r) -> None:
    """Claims from templates created (the resourceclaim controller), no scheduling."""
    r.cluster.reconcile_controllers()


def claim_of(r, pod_name: str, pod_claim: str = "dev0") -> str:
    return claim_name_for(r.get_pod(pod_name), pod_claim)


def world(r) -> tuple[dict, dict]:
    """Every claim and pod as stored (to compare before and after)."""
    claims = {c["metadata"]["name"]: c for c in r.store.list(RES_CLAIMS)[0]}
    pods = {p["metadata"]["name"]: p for p in r.store.list(RES_PODS)[0]}
    return claims, pods


def refused(r, br: dict, *expected: str) -> dict:
    """Run the binder once: ``br`` ends Failed with a reason containing ``expected``, and the
    binder wrote nothing but that status."""
    before = world(r)
    start = len(r.faulty.log)
    result = r.bind()
    name = br["metadata"]["name"]
    after = r.store.get(RES_BIND_REQUESTS, name, "default")
    reason = after["status"]["reason"]
    assert after["status"]["phase"] == "Failed", after["status"]
    assert reason.startswith("verification failed: "), reason
    for text in expected:
        assert text in reason, reason
    assert reason in result.reasons
    assert r.faulty.log[start:] == [("update_status", "BindRequest", "default", name)]
    assert world(r) == before  # claims untouched, pods unbound and unreported
    return after


# -- the list ---------------------------------------------------------------------------


def test_two_pods_given_the_same_device(rig):
    r = rig(pods=[rig.pod("p1", claims=1), rig.pod("p2", claims=1)])
    claims_ready(r)
    hand_br(r, "p1", "n1", {"dev0": allocation("n1", "fpga-0")})
    assert r.bind().succeeded == 1
    br = hand_br(r, "p2", "n1", {"dev0": allocation("n1", "fpga-0")})
    refused(r, br, f"device {DRIVER}/n1/fpga-0 of claim default/{claim_of(r, 'p2')} is already allocated to "
                   f"claim default/{claim_of(r, 'p1')}")
    assert not r.node_of("p2")
    assert invariant_violations(r.store) == []


def test_two_pods_given_the_same_device_in_flight_together_bind_once(rig):
    r = rig(pods=[rig.pod("p1", claims=1), rig.pod("p2", claims=1)])
    claims_ready(r)
    hand_br(r, "p1", "n1", {"dev0": allocation("n1", "fpga-0")}, name="a")
    hand_br(r, "p2", "n1", {"dev0": allocation("n1", "fpga-0")}, name="b")
    result = r.bind()
    assert (result.succeeded, result.failed) == (1, 1)
    # the same allocation in two requests may be one claim two pods share: "a" (first by name) goes
    # ahead, and "b" finds the device taken by another claim than its own
    reason = result.reasons[0]
    assert f"device {DRIVER}/n1/fpga-0 of claim default/{claim_of(r, 'p2')} is " in reason
    assert f"to claim default/{claim_of(r, 'p1')}" in reason
    assert (r.node_of("p1"), r.node_of("p2")) == ("n1", None)
    assert invariant_violations(r.store) == []


def test_a_device_in_flight_for_another_claim_with_another_allocation(rig):
    r = rig(pods=[templated_pod(rig, "p1", "two-same-root"), templated_pod(rig, "p2", "big-fpga")],
            extra=SELECTOR_WORLD)
    claims_ready(r)
    hand_br(r, "p1", "n3", {"dev0": allocation("n3", "small-0", "big-0")}, name="b")
    hand_br(r, "p2", "n3", {"dev0": allocation("n3", "big-0")}, name="a")
    result = r.bind()
    assert (result.succeeded, result.failed) == (1, 1)  # "b" goes ahead once "a" is Failed
    assert f'device {DRIVER}/n3/big-0 of claim default/{claim_of(r, "p2")} is in BindRequest "default/b" ' \
           f"for claim default/{claim_of(r, 'p1')}" in result.reasons[0]
    assert (r.node_of("p1"), r.node_of("p2")) == ("n3", None)
    assert invariant_violations(r.store) == []


def test_pods_sharing_a_claim_in_flight_together_cost_no_extra_reads(rig):
    names = [f"p{i:02d}" for i in range(20)]
    r = rig(pods=[rig.pod(n, cpu="100m", shared=["shared"]) for n in names], extra=rig.shared_claim("shared"))
    for n in names:
        hand_br(r, n, "n1", {"shared-shared": allocation("n1", "fpga-0")})
    gets = []
    inner_get = r.faulty.get

    def get(resource, name, namespace=None):
        gets.append(resource)
        return inner_get(resource, name, namespace)

    r.faulty.get = get
    assert r.bind().succeeded == 20
    assert gets.count(RES_PODS) == 20  # each attempt reads its own pod, and no other
    assert len(r.claim("shared")["status"]["reservedFor"]) == 20
    assert invariant_violations(r.store) == []


def test_a_pod_bound_to_one_node_with_a_device_on_another(rig):
    r = rig(nodes=("n1", "n2"), pods=[rig.pod("p1", claims=1)])
    claims_ready(r)
    br = hand_br(r, "p1", "n1", {"dev0": allocation("n2", "fpga-0")})
    refused(r, br, f"device {DRIVER}/n2/fpga-0 of claim default/{claim_of(r, 'p1')} is not available on "
                   "node n1: it is on node n2")


def test_a_device_that_does_not_exist(rig):
    r = rig(pods=[rig.pod("p1", claims=1)])
    claims_ready(r)
    br = hand_br(r, "p1", "n1", {"dev0": allocation("n1", "fpga-7")})
    refused(r, br, f"device {DRIVER}/n1/fpga-7 of claim default/{claim_of(r, 'p1')} does not exist in pool "
                   f"{DRIVER}/n1 (generation 1)")


def test_a_device_of_a_pool_nobody_publishes(rig):
    r = rig(pods=[rig.pod("p1", claims=1)])
    claims_ready(r)
    br = hand_br(r, "p1", "n1", {"dev0": allocation("n1", "fpga-0", pool="elsewhere")})
    refused(r, br, f"no current ResourceSlice publishes pool {DRIVER}/elsewhere")


def test_only_the_newest_generation_of_a_pool_counts(rig):
    newer = f"""
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {{name: n1-fpga-v2}}
spec:
  driver: {DRIVER}
  nodeName: n1
  pool: {{name: n1, generation: 2, resourceSliceCount: 1}}
  devices: [{{name: fpga-0}}]
"""
    r = rig(pods=[rig.pod("p1", claims=1)], extra=newer)
    claims_ready(r)
    br = hand_br(r, "p1", "n1", {"dev0": allocation("n1", "fpga-1")})  # only in generation 1
    refused(r, br, f"device {DRIVER}/n1/fpga-1", f"does not exist in pool {DRIVER}/n1 (generation 2)")


def test_three_devices_in_a_claim_that_asks_for_one(rig):
    r = rig(devices=3, pods=[rig.pod("p1", claims=1)])
    claims_ready(r)
    br = hand_br(r, "p1", "n1", {"dev0": allocation("n1", "fpga-0", "fpga-1", "fpga-2")})
    refused(r, br, f"claim default/{claim_of(r, 'p1')}: request fpga asks for 1 device(s), the allocation "
                   "gives it 3")


def test_a_pod_of_another_scheduler(rig):
    pod = rig.pod("theirs")
    pod["spec"]["schedulerName"] = "default-scheduler"
    r = rig(pods=[pod])
    br = hand_br(r, "theirs", "n1")
    refused(r, br, 'pod default/theirs has schedulerName "default-scheduler", not one this binder serves '
                   "(kai-scheduler)")
    assert not r.node_of("theirs")


def test_a_pod_without_scheduler_name_is_the_default_schedulers(rig):
    pod = rig.pod("plain")
    del pod["spec"]["schedulerName"]
    r = rig(pods=[pod])
    br = hand_br(r, "plain", "n1")
    refused(r, br, 'schedulerName "default-scheduler"')


def test_a_binder_serves_the_scheduler_names_it_is_given(rig):
    pod = rig.pod("theirs")
    pod["spec"]["schedulerName"] = "default-scheduler"
    r = rig(pods=[pod, rig.pod("ours")], scheduler_names=["kai-scheduler", "default-scheduler"])
    hand_br(r, "theirs", "n1")
    hand_br(r, "ours", "n1")
    assert r.bind().succeeded == 2
    assert r.node_of("theirs") == r.node_of("ours") == "n1"


def test_binder_needs_a_scheduler_name(rig):
    with pytest.raises(ValueError, match="scheduler_names"):
        rig(scheduler_names=[])


# -- and the rest of the checks -------------------------------------------------------------------

SELECTOR_WORLD = f"""
apiVersion: v1
kind: Node
metadata: {{name: n3}}
status:
  allocatable: {{cpu: "8", memory: 16Gi, pods: "110"}}
  conditions: [{{type: Ready, status: "True"}}]
---
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {{name: n3-fpga}}
spec:
  driver: {DRIVER}
  nodeName: n3
  pool: {{name: n3, generation: 1, resourceSliceCount: 1}}
  devices:
  - {{name: small-0, attributes: {{model: {{string: small}}, root: {{string: r0}}}}}}
  - {{name: big-0, attributes: {{model: {{string: big}}, root: {{string: r0}}}}}}
  - {{name: big-1, attributes: {{model: {{string: big}}, root: {{string: r1}}}}}}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {{name: big-fpga, namespace: default}}
spec:
  spec:
    devices:
      requests:
      - name: fpga
        exactly:
          deviceClassName: {DRIVER}
          selectors: [{{cel: {{expression: "device.attributes['{DRIVER}'].model == 'big'"}}}}]
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {{name: two-same-root, namespace: default}}
spec:
  spec:
    devices:
      requests: [{{name: fpga, exactly: {{deviceClassName: {DRIVER}, count: 2}}}}]
      constraints: [{{matchAttribute: {DRIVER}/root}}]
"""


def templated_pod(rig, name: str, template: str) -> dict:
    pod = rig.pod(name, claims=1)
    pod["spec"]["resourceClaims"][0]["resourceClaimTemplateName"] = template
    return pod


def test_a_device_that_does_not_match_the_selector(rig):
    r = rig(pods=[templated_pod(rig, "p1", "big-fpga")], extra=SELECTOR_WORLD)
    claims_ready(r)
    br = hand_br(r, "p1", "n3", {"dev0": allocation("n3", "small-0")})
    refused(r, br, f"device {DRIVER}/n3/small-0 of claim default/{claim_of(r, 'p1')} does not match CEL "
                   f"selector #0 of request (DeviceClass {DRIVER}) of request fpga: "
                   f"device.attributes['{DRIVER}'].model == 'big'")
    hand_br(r, "p1", "n3", {"dev0": allocation("n3", "big-0")}, name="right")
    r.store.delete(RES_BIND_REQUESTS, br["metadata"]["name"], "default")
    assert r.bind().succeeded == 1


def test_devices_that_break_a_match_attribute_constraint(rig):
    r = rig(pods=[templated_pod(rig, "p1", "two-same-root")], extra=SELECTOR_WORLD)
    claims_ready(r)
    br = hand_br(r, "p1", "n3", {"dev0": allocation("n3", "small-0", "big-1")})
    refused(r, br, "constraint #0 (matchAttribute fpga.example.com/root over all requests)",
            f"device {DRIVER}/n3/small-0 has 'r0' (a string), device {DRIVER}/n3/big-1 has 'r1'")


def test_a_second_live_bind_request_for_the_same_pod(rig):
    r = rig(pods=[rig.pod("p1", claims=1)])
    claims_ready(r)
    first = hand_br(r, "p1", "n1", {"dev0": allocation("n1", "fpga-0")}, name="a")
    hand_br(r, "p1", "n1", {"dev0": allocation("n1", "fpga-1")}, name="b")
    refused(r, first, 'pod default/p1 has another live BindRequest: "default/b"')
    assert r.bind().succeeded == 1  # "a" is Failed: "b" is the only live one
    [claim] = r.claims_of("p1")
    assert claim["status"]["allocation"]["devices"]["results"][0]["device"] == "fpga-1"


def test_an_existing_allocation_that_differs(rig):
    r = rig(pods=[rig.pod("p1", shared=["shared"])], extra=rig.shared_claim("shared"))
    claim = r.claim("shared")
    claim["status"] = {"allocation": allocation("n1", "fpga-1")}
    r.store.update_status(claim)
    br = hand_br(r, "p1", "n1", {"shared-shared": allocation("n1", "fpga-0")})
    refused(r, br, f"claim default/shared is already allocated to other devices ({DRIVER}/n1/fpga-1) than the "
                   f"BindRequest's ({DRIVER}/n1/fpga-0)")


def test_an_existing_allocation_that_is_the_same_is_joined(rig):
    r = rig(pods=[rig.pod("p1", shared=["shared"]), rig.pod("p2", shared=["shared"])],
            extra=rig.shared_claim("shared"))
    hand_br(r, "p1", "n1", {"shared-shared": allocation("n1", "fpga-1")})
    assert r.bind().succeeded == 1
    hand_br(r, "p2", "n1", {"shared-shared": allocation("n1", "fpga-1")})
    assert r.bind().succeeded == 1
    assert [c["name"] for c in r.claim("shared")["status"]["reservedFor"]] == ["p1", "p2"]


def test_a_claim_of_the_pod_left_out(rig):
    r = rig(pods=[rig.pod("p1", claims=2)])
    claims_ready(r)
    br = hand_br(r, "p1", "n1", {"dev0": allocation("n1", "fpga-0")})
    refused(r, br, 'pod default/p1 has claim "dev1", which the BindRequest does not allocate')


def test_a_claim_the_pod_does_not_have(rig):
    r = rig(pods=[rig.pod("p1", claims=1)])
    claims_ready(r)
    br = hand_br(r, "p1", "n1", {"dev0": allocation("n1", "fpga-0"), "dev9": allocation("n1", "fpga-1")})
    refused(r, br, 'the BindRequest allocates claim "dev9", which pod default/p1 does not have')


def test_one_device_for_two_claims_of_a_pod(rig):
    r = rig(pods=[rig.pod("p1", claims=2)])
    claims_ready(r)
    br = hand_br(r, "p1", "n1", {"dev0": allocation("n1", "fpga-0"), "dev1": allocation("n1", "fpga-0")})
    refused(r, br, f"device {DRIVER}/n1/fpga-0 is in the allocations of both claim")


def test_a_node_that_does_not_exist(rig):
    r = rig(pods=[rig.pod("p1")])
    br = hand_br(r, "p1", "nowhere")
    refused(r, br, 'node "nowhere" not found')


def test_a_node_selector_wider_than_the_devices(rig):
    r = rig(pods=[rig.pod("p1", claims=1)])
    claims_ready(r)
    wide = allocation("n1", "fpga-0")
    del wide["nodeSelector"]  # usable everywhere: a second pod of the claim could go anywhere
    br = hand_br(r, "p1", "n1", {"dev0": wide})
    refused(r, br, "the allocation's nodeSelector is not the one of its devices")


def test_a_config_the_claim_does_not_have(rig):
    r = rig(pods=[rig.pod("p1", claims=1)])
    claims_ready(r)
    injected = allocation("n1", "fpga-0")
    injected["devices"]["config"] = [{"source": "FromClass", "requests": ["fpga"],
                                      "opaque": {"driver": DRIVER, "parameters": {"sharing": "all"}}}]
    br = hand_br(r, "p1", "n1", {"dev0": injected})
    refused(r, br, "is neither a config of the claim nor of a DeviceClass it uses")


# -- retries ----------------------------------------------------------------------------------------


def test_a_check_that_cannot_pass_later_uses_up_the_attempts(rig):
    r = rig(pods=[rig.pod("p1", claims=1)])
    claims_ready(r)
    br = hand_br(r, "p1", "n1", {"dev0": allocation("n1", "fpga-7")}, backoff_limit=3)
    after = refused(r, br, "does not exist")
    assert after["status"]["failedAttempts"] == 3  # no retry: the scheduler places the pod again
    assert r.binder.next_due() is None


def test_a_device_taken_meanwhile_is_retried(rig):
    r = rig(pods=[rig.pod("p1", claims=1), rig.pod("p2", claims=1)])
    claims_ready(r)
    hand_br(r, "p1", "n1", {"dev0": allocation("n1", "fpga-0")})
    r.bind()
    br = hand_br(r, "p2", "n1", {"dev0": allocation("n1", "fpga-0")}, backoff_limit=3)
    after = refused(r, br, "is already allocated to claim")
    assert after["status"]["failedAttempts"] == 1  # a lost race: tried again after the backoff
    assert r.binder.next_due() is not None
    r.store.delete(RES_PODS, "p1", "default")  # p1 goes, its claim is freed: the retry passes
    r.cluster.reconcile_controllers()
    r.clock.advance_to(r.binder.next_due())
    assert r.bind().succeeded == 1
    assert r.node_of("p2") == "n1"


# -- concurrency ------------------------------------------------------------------------------------


def test_parallel_workers_never_hand_out_one_device_twice(rig):
    pods = [rig.pod(f"p{i}", claims=1) for i in range(6)]
    r = rig(pods=pods, workers=6)
    claims_ready(r)
    for i in range(6):
        hand_br(r, f"p{i}", "n1", {"dev0": allocation("n1", "fpga-0")}, backoff_limit=3)
    for _ in range(8):  # six threads at once; those refused are retried at once, after the backoff
        assert r.bind().succeeded <= 1
        r.clock.advance(120)
    bound = [p["metadata"]["name"] for p in r.store.list(RES_PODS)[0] if p["spec"].get("nodeName")]
    assert len(bound) == 1
    holders = [c["metadata"]["name"] for c in r.store.list(RES_CLAIMS)[0] if (c.get("status") or {}).get("allocation")]
    assert len(holders) == 1
    assert invariant_violations(r.store) == []


def test_the_schedulers_own_decisions_all_pass(rig):
    r = rig(nodes=("n1", "n2"), devices=2, pods=[rig.pod(f"p{i}", claims=1) for i in range(4)],
            extra=rig.shared_claim("shared"))
    r.add(rig.pod("s1", shared=["shared"]), rig.pod("s2", shared=["shared"]))
    r.settle()
    assert all(b["status"]["phase"] == "Succeeded" for b in r.brs())
    assert invariant_violations(r.store) == []


# -- what the binder wrote, before its index shows it -------------------------------------------------


class DropsClaimEvents:
    """The binder's store, but the index never hears of a claim change (a watch event lost, or
    late: what a reply cut in flight leaves the binder with)."""

    def __init__(self, store) -> None:
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def events_since(self, resource_version, resources=None):
        events, rv = self._store.events_since(resource_version, resources)
        return [e for e in events if e.resource != RES_CLAIMS], rv


def test_a_claim_write_the_index_has_not_seen_keeps_its_device_held_until_read_back(rig):
    r = rig(pods=[rig.pod("p1", claims=1), rig.pod("p2", claims=1)])
    claims_ready(r)
    r.binder = r.new_binder()
    r.binder.store = r.binder.index.store = DropsClaimEvents(r.faulty)
    hand_br(r, "p1", "n1", {"dev0": allocation("n1", "fpga-0")})
    assert r.bind().succeeded == 1
    verifier = r.binder.verifier
    assert list(verifier._settling)  # written, and not in the index: its device stays held
    br = hand_br(r, "p2", "n1", {"dev0": allocation("n1", "fpga-0")})
    # the next pass reads the claim back from the server: the hold goes, the index knows
    refused(r, br, f"device {DRIVER}/n1/fpga-0 of claim default/{claim_of(r, 'p2')} is already allocated to "
                   f"claim default/{claim_of(r, 'p1')}")
    assert not verifier._holds and not verifier._settling
    assert invariant_violations(r.store) == []
