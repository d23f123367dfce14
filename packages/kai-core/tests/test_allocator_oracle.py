"""The allocator against a brute-force oracle, on random small instances (hypothesis).

Each example draws a few devices on the node (and one on another node), in up to two pools, some in
use, some tainted, some consuming shared counters, an incomplete pool now and then; three
DeviceClasses; and one or two claims of one to three requests (``ExactCount``, ``All`` or
``firstAvailable``, with request selectors, tolerations, admin access, and ``matchAttribute`` /
``distinctAttribute`` constraints).

The oracle knows the rules independently of the allocator: it evaluates the selectors in Python from
the drawn structure (the allocator compiles the same selectors to CEL) and enumerates every choice of
sub-requests and every combination of devices. Then:

* when the allocator allocates, every result satisfies every selector, count, constraint, counter and
  taint rule, uses no device twice (admin access aside), sits on the node, and the sub-requests chosen
  are the first ones (in request order) for which a solution exists;
* when the allocator refuses, the oracle finds no solution either, and the refusal is not the search
  bound.

Example counts: ``KAI_ORACLE_EXAMPLES`` (default 200, the CI profile); the note reports a run with a
much larger value.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kai_core.dra.allocator import DeviceId, DraInventory, Unallocatable, allocate
from kai_core.dra.testing import claim, device_class, node, resource_slice

EXAMPLES = int(os.environ.get("KAI_ORACLE_EXAMPLES", "200"))
DRIVER = "ex.example.com"
ADMIN_NS = {
    "admins": {"metadata": {"name": "admins", "labels": {"resource.kubernetes.io/admin-access": "true"}}},
    "default": {"metadata": {"name": "default"}},
}

# Selectors as data: (kind, argument). The oracle evaluates them in Python, the allocator as CEL.
CLASSES = {
    "kind-a": ("kind", "a"),
    "any": ("any", None),
    "n-at-least-1": ("nmin", 1),
}


def cel_of(selector: tuple) -> str:
    kind, arg = selector
    if kind == "any":
        return "true"
    if kind == "kind":
        return f"device.attributes['{DRIVER}'].kind == '{arg}'"
    if kind == "nmin":
        return f"device.attributes['{DRIVER}'].n >= {arg}"
    if kind == "nmax":
        return f"device.attributes['{DRIVER}'].n <= {arg}"
    if kind == "mem":
        return f"device.capacity['{DRIVER}'].mem.compareTo(quantity('{arg}Gi')) >= 0"
    raise AssertionError(kind)


@dataclass
class Dev:
    name: str
    pool: str
    kind: str
    n: int
    mem: int
    root: str | None
    taint: str | None  # taint key (effect NoSchedule), or None
    consumes: int  # units of the pool's counter set "cs" (0: none)
    on_node: bool = True

    def matches(self, selector: tuple) -> bool:
        kind, arg = selector
        if kind == "any":
            return True
        if kind == "kind":
            return self.kind == arg
        if kind == "nmin":
            return self.n >= arg
        if kind == "nmax":
            return self.n <= arg
        if kind == "mem":
            return self.mem >= arg
        raise AssertionError(kind)

    @property
    def key(self) -> tuple[str, str]:
        return (self.pool, self.name)


@dataclass
class Alt:
    name: str  # result name
    cls: str
    selectors: list[tuple]
    all_mode: bool
    count: int
    tolerate: str | None  # tolerated taint key, "*" for Exists without key
    admin: bool = False


@dataclass
class Req:
    name: str
    alts: list[Alt]
    first_available: bool


@dataclass
class Cl:
    name: str
    namespace: str
    requests: list[Req]
    constraints: list[tuple[bool, list[str] | None]] = field(default_factory=list)  # (distinct, names)


@dataclass
class Instance:
    devices: list[Dev]
    capacity: dict[str, int]  # pool -> counter capacity of set "cs"
    incomplete: set[str]
    in_use: set[tuple[str, str]]
    claims: list[Cl]


# ------------------------------------------------------------------------------------ strategies


@st.composite
def instances(draw) -> Instance:
    devices: list[Dev] = []
    pools = ["p0", "p1"]
    for i in range(draw(st.integers(3, 8))):
        devices.append(
            Dev(
                name=f"d{i}",
                pool=draw(st.sampled_from(pools)),
                kind=draw(st.sampled_from(["a", "b"])),
                n=draw(st.integers(0, 2)),
                mem=draw(st.sampled_from([8, 16])),
                root=draw(st.sampled_from(["r0", "r1", "r2", None])),
                taint=draw(st.sampled_from([None] * 6 + ["k1", "k2"])),
                consumes=draw(st.sampled_from([0, 0, 0, 1, 2])),
            )
        )
    # One device of another node, which must never be picked.
    devices.append(Dev("far", "p0-far", "a", 2, 16, "r0", None, 0, on_node=False))
    capacity = {pool: draw(st.integers(1, 5)) for pool in pools}
    incomplete = {pool for pool in pools if draw(st.integers(0, 19)) == 0}
    in_use = {d.key for d in devices if d.on_node and draw(st.integers(0, 5)) == 0}
    claims = []
    for c in range(draw(st.sampled_from([1, 1, 2]))):
        admin_ns = draw(st.integers(0, 5)) == 0
        requests = []
        for r in range(draw(st.sampled_from([1, 1, 2, 2, 3]))):
            subs = draw(st.integers(1, 2)) if draw(st.booleans()) else 0
            alts = []
            for s in range(max(1, subs)):
                selectors = (
                    [draw(st.sampled_from([("nmax", 1), ("mem", 16), ("kind", "b")]))]
                    if draw(st.integers(0, 2)) == 0
                    else []
                )
                all_mode = draw(st.integers(0, 7)) == 0
                alts.append(
                    Alt(
                        name=f"r{r}/s{s}" if subs else f"r{r}",
                        cls=draw(st.sampled_from(["any", "any", "kind-a", "n-at-least-1"])),
                        selectors=selectors,
                        all_mode=all_mode,
                        count=0 if all_mode else draw(st.sampled_from([1, 1, 1, 1, 2, 3])),
                        tolerate=draw(st.sampled_from([None, None, "k1", "*"])),
                        admin=(not subs) and admin_ns and draw(st.booleans()),
                    )
                )
            requests.append(Req(f"r{r}", alts, bool(subs)))
        constraints = []
        for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
            names = None
            if draw(st.booleans()):
                names = draw(
                    st.lists(
                        st.sampled_from(
                            [a.name for q in requests for a in q.alts] + [q.name for q in requests]
                        ),
                        min_size=1,
                        max_size=2,
                        unique=True,
                    )
                )
            constraints.append((draw(st.booleans()), names))
        claims.append(Cl(f"c{c}", "admins" if admin_ns else "default", requests, constraints))
    return Instance(devices, capacity, incomplete, in_use, claims)


# ------------------------------------------------------------------------------------ rendering


def render(inst: Instance) -> tuple[DraInventory, list[dict], set[DeviceId]]:
    slices = []
    for pool in ["p0", "p1"]:
        members = [d for d in inst.devices if d.pool == pool]
        devices = []
        for d in members:
            attributes: dict = {"kind": {"string": d.kind}, "n": {"int": d.n}}
            if d.root is not None:
                attributes["root"] = {"string": d.root}
            device: dict = {
                "name": d.name,
                "attributes": attributes,
                "capacity": {"mem": {"value": f"{d.mem}Gi"}},
            }
            if d.taint:
                device["taints"] = [{"key": d.taint, "value": "x", "effect": "NoSchedule"}]
            if d.consumes:
                device["consumesCounters"] = [
                    {"counterSet": "cs", "counters": {"units": {"value": str(d.consumes)}}}
                ]
            devices.append(device)
        count = 3 if pool in inst.incomplete else 2
        slices.append(
            resource_slice(f"{pool}-devices", DRIVER, pool, devices, node_name="n1", slice_count=count)
        )
        slices.append(
            resource_slice(
                f"{pool}-counters",
                DRIVER,
                pool,
                None,
                node_name="n1",
                slice_count=count,
                sharedCounters=[{"name": "cs", "counters": {"units": {"value": str(inst.capacity[pool])}}}],
            )
        )
    far = [d for d in inst.devices if not d.on_node]
    slices.append(
        resource_slice(
            "far",
            DRIVER,
            "p0-far",
            [{"name": d.name, "attributes": {"kind": {"string": d.kind}, "n": {"int": d.n}}} for d in far],
            node_name="n2",
        )
    )
    classes = [device_class(name, cel_of(sel)) for name, sel in CLASSES.items()]
    claims = []
    for cl in inst.claims:
        requests = []
        for req in cl.requests:
            bodies = []
            for alt in req.alts:
                body: dict = {"deviceClassName": alt.cls}
                if alt.all_mode:
                    body["allocationMode"] = "All"
                else:
                    body["count"] = alt.count
                if alt.selectors:
                    body["selectors"] = [{"cel": {"expression": cel_of(s)}} for s in alt.selectors]
                if alt.tolerate == "*":
                    body["tolerations"] = [{"operator": "Exists"}]
                elif alt.tolerate:
                    body["tolerations"] = [
                        {"key": alt.tolerate, "operator": "Exists", "effect": "NoSchedule"}
                    ]
                if alt.admin:
                    body["adminAccess"] = True
                bodies.append(body)
            if req.first_available:
                requests.append(
                    {
                        "name": req.name,
                        "firstAvailable": [
                            {"name": a.name.split("/")[1], **b} for a, b in zip(req.alts, bodies, strict=True)
                        ],
                    }
                )
            else:
                requests.append({"name": req.name, "exactly": bodies[0]})
        constraints = []
        for distinct, names in cl.constraints:
            entry: dict = {("distinctAttribute" if distinct else "matchAttribute"): f"{DRIVER}/root"}
            if names:
                entry["requests"] = names
            constraints.append(entry)
        claims.append(claim(cl.name, *requests, namespace=cl.namespace, constraints=constraints or None))
    in_use = {DeviceId(DRIVER, pool, name) for pool, name in inst.in_use}
    return DraInventory(slices, classes), claims, in_use


# ------------------------------------------------------------------------------------ oracle


def usable_pool(inst: Instance, d: Dev) -> bool:
    return d.on_node and d.pool not in inst.incomplete


def selected(alt: Alt, d: Dev) -> bool:
    return d.matches(CLASSES[alt.cls]) and all(d.matches(s) for s in alt.selectors)


def tolerated(alt: Alt, d: Dev) -> bool:
    return d.taint is None or alt.tolerate == "*" or alt.tolerate == d.taint


def options(inst: Instance, alt: Alt) -> list[list[Dev]] | None:
    """Every device set this alternative could take, ignoring the other requests (None: not at all)."""
    if alt.all_mode:
        if inst.incomplete:  # an incomplete pool reaches the node: "all" is not known
            return None
        chosen = [d for d in inst.devices if usable_pool(inst, d) and selected(alt, d)]
        if not chosen:
            return None
        if any(not tolerated(alt, d) or (d.key in inst.in_use and not alt.admin) for d in chosen):
            return None
        return [chosen]
    free = [
        d
        for d in inst.devices
        if usable_pool(inst, d)
        and selected(alt, d)
        and tolerated(alt, d)
        and (alt.admin or d.key not in inst.in_use)
    ]
    return [list(c) for c in itertools.combinations(free, alt.count)]


def valid(inst: Instance, picks: list[tuple[int, Req, Alt, Dev]]) -> bool:
    """Whether a full assignment obeys the rules that involve several picks."""
    # Devices: a non-admin pick conflicts with every earlier pick; an admin pick with earlier picks
    # of its own claim (upstream's order of checks).
    for i, (ci, _, alt, d) in enumerate(picks):
        for cj, _, _, e in picks[:i]:
            if e.key == d.key and (not alt.admin or cj == ci):
                return False
    # Counters: what non-admin picks consume, plus what devices in use consume, fits the pool's set
    # (checked when a pick consumes from it: an overcommitted set does not concern other devices).
    for pool, capacity in inst.capacity.items():
        taking = sum(d.consumes for _, _, alt, d in picks if d.pool == pool and not alt.admin)
        used = sum(d.consumes for d in inst.devices if d.pool == pool and d.key in inst.in_use)
        if taking and used + taking > capacity:
            return False
    # Constraints, per claim.
    for ci, cl in enumerate(inst.claims):
        for distinct, names in cl.constraints:
            scoped = [
                d
                for cj, req, alt, d in picks
                if cj == ci and (names is None or req.name in names or alt.name in names)
            ]
            if any(d.root is None for d in scoped):
                return False
            roots = [d.root for d in scoped]
            if distinct and len(set(roots)) != len(roots):
                return False
            if not distinct and len(set(roots)) > 1:
                return False
    return True


def solutions_exist(inst: Instance, choice: tuple[int, ...]) -> bool:
    """Whether some assignment exists for one choice of alternative per request."""
    flat = [(ci, req) for ci, cl in enumerate(inst.claims) for req in cl.requests]
    per_request = []
    for (ci, req), a in zip(flat, choice, strict=True):
        alt = req.alts[a]
        sets = options(inst, alt)
        if not sets:
            return False
        per_request.append([(ci, req, alt, devs) for devs in sets])
    for combo in itertools.product(*per_request):
        picks = [(ci, req, alt, d) for ci, req, alt, devs in combo for d in devs]
        if valid(inst, picks):
            return True
    return False


def choices(inst: Instance) -> list[tuple[int, ...]]:
    """Every choice of alternatives, in the order the allocator tries them (lexicographic)."""
    ranges = [range(len(req.alts)) for cl in inst.claims for req in cl.requests]
    return list(itertools.product(*ranges))


# ------------------------------------------------------------------------------------ property


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(inst=instances())
def test_allocator_agrees_with_the_oracle(inst: Instance) -> None:
    inventory, claims, in_use = render(inst)
    feasible = [c for c in choices(inst) if solutions_exist(inst, c)]
    try:
        allocations = allocate(claims, node("n1"), inventory, in_use, namespaces=ADMIN_NS)
    except Unallocatable as err:
        assert "too large" not in err.reason, err.reason
        assert not feasible, f"allocator refused ({err.reason}) but the oracle found {feasible[0]}"
        return
    assert feasible, f"allocator allocated {allocations} where the oracle found nothing"
    by_name = {d.name: d for d in inst.devices}
    picks = []
    chosen = []
    for ci, (cl, allocation) in enumerate(zip(inst.claims, allocations, strict=True)):
        results = allocation["devices"]["results"]
        position = 0
        for req in cl.requests:
            names = {a.name: i for i, a in enumerate(req.alts)}
            first = results[position]["request"]
            assert first in names, f"result names {first}, not a request or sub-request of {req.name}"
            a = names[first]
            alt = req.alts[a]
            chosen.append(a)
            took = [r for r in results[position:] if r["request"] == first]
            position += len(took)
            expected = options(inst, alt)
            assert expected is not None
            if alt.all_mode:
                assert sorted(r["device"] for r in took) == sorted(d.name for d in expected[0])
            else:
                assert len(took) == alt.count
            for r in took:
                d = by_name[r["device"]]
                assert (r["driver"], r["pool"]) == (DRIVER, d.pool)
                assert d.on_node and usable_pool(inst, d)
                assert selected(alt, d) and tolerated(alt, d)
                assert alt.admin or d.key not in inst.in_use
                assert bool(r.get("adminAccess")) is alt.admin
                picks.append((ci, req, alt, d))
        assert position == len(results)
    assert valid(inst, picks)
    assert tuple(chosen) == feasible[0], "firstAvailable must keep the first sub-requests that work"


# ------------------------------------------------------------------------------------ verification


TAMPERINGS = ("missing device", "device twice", "result dropped", "far device", "admin flipped")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(inst=instances(), data=st.data())
def test_what_the_allocator_allocates_passes_verification_and_tampering_does_not(inst: Instance, data) -> None:
    """The binder's check (:func:`kai_core.dra.verify.verify_allocations`) accepts every allocation
    the allocator makes, and refuses it once one result is tampered with."""
    import copy

    from kai_core.dra.verify import AllocationRefused, verify_allocations

    inventory, claims, in_use = render(inst)
    try:
        allocations = allocate(claims, node("n1"), inventory, in_use, namespaces=ADMIN_NS)
    except Unallocatable:
        return
    verify_allocations(claims, allocations, node("n1"), inventory, in_use=in_use, namespaces=ADMIN_NS)
    ci = data.draw(st.integers(0, len(claims) - 1))
    results = allocations[ci]["devices"]["results"]
    if not results:
        return
    tampered = copy.deepcopy(allocations)
    target = tampered[ci]["devices"]["results"]
    index = data.draw(st.integers(0, len(target) - 1))
    how = data.draw(st.sampled_from(TAMPERINGS))
    if how == "missing device":
        target[index]["device"] = "no-such-device"
    elif how == "device twice":
        target.append(dict(target[index]))
    elif how == "result dropped":
        del target[index]
    elif how == "far device":
        target[index].update(pool="p0-far", device="far")
    else:
        target[index]["adminAccess"] = not target[index].get("adminAccess", False)
    try:
        verify_allocations(claims, tampered, node("n1"), inventory, in_use=in_use, namespaces=ADMIN_NS)
    except AllocationRefused as err:
        assert err.reason
    else:
        raise AssertionError(f"{how} of result #{index} of claim #{ci} passed: {tampered[ci]}")
