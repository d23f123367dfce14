"""Gang scheduling: groups of pods that are placed all together or not at all.

Where groups come from:

- KAI's ``PodGroup`` (``scheduling.run.ai/v2alpha2``, :data:`RES_POD_GROUPS`): pods join one with
  the annotation ``pod-group-name: <name>`` (:data:`POD_GROUP_ANNOTATION`, same namespace) and at
  least ``spec.minMember`` of them must be placed in the same cycle. The built-in plugin
  :mod:`kai_core.plugins.gang` declares them;
- any plugin, through the ``kai_pod_groups`` hook: "these pods form a group of N" as a
  :class:`GroupSpec` (a device plugin grouping the pods of one multi-node job, for instance).

Declarations that share a pod are merged into one :class:`Gang` (a PodGroup whose pods span two
plugin-declared jobs is one gang with three declarations). A gang is placed once per cycle, when the
scheduling order reaches its first waiting member: every waiting member is tried inside one node
subset (``kai_group_node_subsets``; all nodes when no plugin proposes any), each decision assumed so
the next member sees it; the placements are kept only if every declaration is satisfied
(:meth:`Gang.satisfied`), otherwise they are undone and the next subset is tried. Nothing is written
for a gang that does not fit: its members get one reason saying why.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from kai_core.api.resources import POD_GROUP_API_VERSION, RES_POD_GROUPS  # noqa: F401 (documented here)

#: the pod annotation naming the PodGroup a pod belongs to (KAI's pod-grouper sets it)
POD_GROUP_ANNOTATION = "pod-group-name"
#: how many node subsets of one gang are tried in one cycle at most (the rest wait for the next)
MAX_SUBSETS_TRIED = 16
#: how many failed subsets a gang's message describes
MAX_SUBSETS_IN_MESSAGE = 3

PodKey = tuple[str, str]


def pod_key(pod: dict) -> PodKey:
    """``(namespace, name)`` of a pod, the key the snapshot uses."""
    md = pod["metadata"]
    return (md.get("namespace", ""), md["name"])


@dataclass
class GroupSpec:
    """A plugin's declaration: ``pods`` form one group of which at least ``min_member`` must run.

    ``pods`` may list members in any state (waiting, in flight, bound): those already placed count
    toward ``min_member``. ``min_member`` None means every listed pod (the pods present form the
    group). ``name`` identifies the group across cycles (e.g. ``fpga.example.com/<job uid>``);
    ``description`` is how messages name it (e.g. ``FpgaJob default/encode``).
    """

    name: str
    pods: list[dict]
    min_member: int | None = None
    description: str = ""

    @property
    def minimum(self) -> int:
        """``min_member``, or the number of pods listed when it is None."""
        return len(self.pods) if self.min_member is None else self.min_member

    def describe(self) -> str:
        return self.description or f"pod group {self.name}"


@dataclass
class NodeSubset:
    """A set of nodes a gang may be placed in, as ``kai_group_node_subsets`` proposes it.

    ``name`` says what the subset is in messages (``rack r7``); ``nodes`` are node
    names (names the snapshot does not know are ignored).
    """

    name: str
    nodes: list[str]


@dataclass
class _SpecState:
    spec: GroupSpec
    source: str
    keys: set[PodKey]
    placed: int = 0  # members bound or in flight before this cycle's attempt
    waiting: int = 0  # members among the gang's waiting pods


@dataclass
class Gang:
    """One unit of gang placement: the merged declarations and the state of their pods.

    Plugins receive it in ``kai_group_node_subsets`` and must not mutate it. ``pods`` are the
    members waiting for a node that this cycle tries (scheduling order); ``placed`` the members
    already bound or in flight; ``others`` members neither waiting nor placed (scheduling gates,
    backing off after failed bindings, being deleted).
    """

    name: str
    description: str
    pods: list[dict] = field(default_factory=list)
    placed: list[dict] = field(default_factory=list)
    others: list[dict] = field(default_factory=list)
    _specs: list[_SpecState] = field(default_factory=list, repr=False)

    @property
    def specs(self) -> list[tuple[str, GroupSpec]]:
        """``(plugin, GroupSpec)`` of every declaration merged into this gang."""
        return [(s.source, s.spec) for s in self._specs]

    @property
    def need(self) -> int:
        """How many waiting members this cycle must place at least (the largest shortfall of a
        declaration; at least 1 when a member waits)."""
        short = max((s.spec.minimum - s.placed for s in self._specs), default=0)
        return max(short, 1 if self.pods else 0)

    def unreachable(self) -> str | None:
        """Why the gang cannot be placed whatever the nodes (a declaration needs more members than
        are placed or waiting), or None."""
        for s in self._specs:
            if s.waiting and s.placed + s.waiting < s.spec.minimum:
                not_ready = len(s.keys) - s.placed - s.waiting
                extra = f", {not_ready} not ready to be scheduled" if not_ready > 0 else ""
                return (f"{s.spec.describe()}: waiting for pods: {s.spec.minimum} must run together but "
                        f"only {s.placed + s.waiting} are running or waiting to be scheduled ({s.placed} "
                        f"running{extra})")
        return None

    def satisfied(self, new: Iterable[PodKey]) -> bool:
        """Whether placing the pods ``new`` (this cycle) keeps every declaration whole: each one
        gets no new pod, or enough to reach its minimum."""
        new = set(new)
        if not new:
            return False
        for s in self._specs:
            added = len(s.keys & new)
            if added and s.placed + added < s.spec.minimum:
                return False
        return True

    def hopeless(self, new: set[PodKey], remaining: set[PodKey]) -> bool:
        """Whether no outcome of the members still to try can satisfy the gang any more."""
        for s in self._specs:
            added = len(s.keys & new)
            if added and s.placed + added + len(s.keys & remaining) < s.spec.minimum:
                return True
        return False


def build_gangs(
    declared: Iterable[tuple[str, GroupSpec]],
    waiting: Sequence[dict],
    placed_of,
    known: dict[PodKey, dict],
) -> dict[PodKey, Gang]:
    """Merge declarations that share pods and sort their members by state.

    ``declared`` are ``(plugin, GroupSpec)`` pairs; ``waiting`` the pods this cycle may place, in
    scheduling order; ``placed_of(pod)`` the node a pod is bound to or in flight to (or None);
    ``known`` the snapshot's pods (members it does not hold are dropped). Returns waiting pod key ->
    its gang; gangs without a waiting member are left out (their members' states are not even
    looked at: on a large cluster most groups run, and only the waiting ones cost a cycle anything).
    """
    order = {pod_key(p): i for i, p in enumerate(waiting)}
    specs: list[tuple[str, GroupSpec, list[dict], list[PodKey]]] = []
    owner: dict[PodKey, int] = {}  # pod -> the first declaration listing it
    shared = False
    for source, spec in declared:
        members: list[dict] = []
        keys: list[PodKey] = []
        seen: set[PodKey] = set()
        for pod in spec.pods:
            key = pod_key(pod)
            if key in known and key not in seen:
                seen.add(key)
                members.append(known[key])
                keys.append(key)
        if members:
            index = len(specs)
            specs.append((source, spec, members, keys))
            for key in keys:
                if owner.setdefault(key, index) != index:
                    shared = True
    # declarations sharing a pod are one gang: each joins the first declaration of its group
    parent = list(range(len(specs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if shared:
        for index, (_source, _spec, _members, keys) in enumerate(specs):
            for key in keys:
                a, b = find(index), find(owner[key])
                if a != b:
                    parent[max(a, b)] = min(a, b)
    live = {find(i) for i, (_s, _g, _m, keys) in enumerate(specs) if any(k in order for k in keys)}
    gangs: dict[PodKey, Gang] = {}
    by_root: dict[int, Gang] = {}
    for index, (source, spec, members, keys) in enumerate(specs):
        root = find(index)
        if root not in live:
            continue
        gang = by_root.get(root)
        if gang is None:
            gang = by_root[root] = Gang(spec.name, spec.describe())
        else:
            gang.name = f"{gang.name}+{spec.name}"
            gang.description = f"{gang.description} and {spec.describe()}"
        state = _SpecState(spec, source, set(keys))
        for pod, key in zip(members, keys, strict=True):
            if placed_of(pod):
                state.placed += 1
            elif key in order:
                state.waiting += 1
        gang._specs.append(state)
    for gang in by_root.values():
        in_gang: dict[PodKey, dict] = {}
        for s in gang._specs:
            for key in s.keys:
                in_gang[key] = known[key]
        for key, pod in in_gang.items():
            if placed_of(pod):
                gang.placed.append(pod)
            elif key in order:
                gang.pods.append(pod)
            else:
                gang.others.append(pod)
        gang.pods.sort(key=lambda p: order[pod_key(p)])
        for pod in gang.pods:
            gangs[pod_key(pod)] = gang
    return gangs


def intersect_subsets(proposals: Sequence[tuple[str, list[NodeSubset]]]) -> list[NodeSubset]:
    """Combine the subsets several plugins propose: every non-empty intersection of one subset of
    each, in the first plugin's order, then the next plugin's, and so on."""
    combined: list[NodeSubset] | None = None
    for _plugin, subsets in proposals:
        if combined is None:
            combined = list(subsets)
            continue
        out = []
        for a in combined:
            names = set(a.nodes)
            for b in subsets:
                both = [n for n in b.nodes if n in names]
                if both:
                    out.append(NodeSubset(f"{a.name} and {b.name}", both))
        combined = out
    return combined or []
