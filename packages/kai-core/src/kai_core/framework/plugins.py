"""The plugin manager: built-in plugins, external plugins from entry points, isolated hook calls.

Built-ins are registered directly (never also as entry points); external plugins come from the
entry-point group ``kai_scheduler.plugins``. A plugin that fails to import or register is recorded
in :attr:`KaiPluginManager.load_errors` (and shown by :meth:`KaiPluginManager.info`) while the rest
load. At run time every implementation is called on its own (:meth:`KaiPluginManager.call_each`),
so one that raises becomes a :class:`PluginError` naming the plugin and the hook instead of
stopping the scheduler; its traceback is logged once.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import logging
import traceback
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pluggy

from kai_core.dra.claims import ClaimAllocation, PodClaim, pod_claims
from kai_core.dra.pod_devices import OpaqueConfig, opaque_configs
from kai_core.framework.gang import GroupSpec, NodeSubset
from kai_core.framework.hookspecs import PROJECT, SchedulerSpecs
from kai_core.framework.status import SUCCESS, Status

log = logging.getLogger("kai.plugins")

ENTRY_POINT_GROUP = "kai_scheduler.plugins"

#: hook families whose specs another component adds after the scheduler's plugins are loaded
#: (kai-binder's ``kai_binder_*``): their names are checked when those specs arrive
LATER_HOOK_FAMILIES = ("kai_binder_",)

#: the highest score ``kai_score_nodes`` may give a node (the lowest is 0)
MAX_NODE_SCORE = 100

#: the weights of kube-scheduler's default profile, by its plugin name
#: (pkg/scheduler/apis/config/v1/default_plugins.go, the same in 1.35 and 1.37): a built-in
#: plugin that does one of these plugins' work weighs its scores as kube-scheduler does, unless
#: the configuration names it; every other plugin weighs 1
KUBE_SCORE_WEIGHTS = {
    "TaintToleration": 3,
    "NodeAffinity": 2,
    "NodeResourcesFit": 1,
    "PodTopologySpread": 2,
    "InterPodAffinity": 2,
    "DynamicResources": 2,
    "NodeResourcesBalancedAllocation": 1,
    "ImageLocality": 1,
}

#: kube-scheduler's DynamicResources Filter reasons for a node (dynamicresources.go), which the
#: pod's ``0/N nodes are available`` message counts: a ``kai_allocate_claims`` reason starting with
#: one of them (``<reason>`` or ``<reason>: <detail>``) counts under it, any other under the first;
#: the detail is kept for ``kai-cli explain`` only
DRA_NODE_REASONS = ("cannot allocate all claims", "resourceclaim not available on the node")

#: plugin object attribute: True (answers for a node depend only on that node), False (they do
#: not), absent (filters and allocators are assumed node-local, scores are not)
NODE_LOCAL_ATTRIBUTE = "KAI_NODE_LOCAL"


#: plugin object attribute: the drivers whose opaque configs ``kai_check_configs`` is handed
DRIVERS_ATTRIBUTE = "KAI_DRIVERS"


def declared_drivers(plugin: object) -> tuple[str, ...]:
    """The driver names a plugin object declares in :data:`DRIVERS_ATTRIBUTE` (empty: none, or
    not a list of non-empty strings)."""
    value = getattr(plugin, DRIVERS_ATTRIBUTE, None)
    if isinstance(value, list | tuple | frozenset | set) and value and all(isinstance(d, str) and d for d in value):
        return tuple(value)
    return ()


def declares_node_local(plugin: object) -> bool | None:
    """What a plugin object says of itself through :data:`NODE_LOCAL_ATTRIBUTE` (None: nothing)."""
    value = getattr(plugin, NODE_LOCAL_ATTRIBUTE, None)
    return value if isinstance(value, bool) else None


@dataclass
class PluginInfo:
    """One line of ``kai-cli plugins``: a registered plugin, or one that failed to load (``error``)."""

    name: str
    distribution: str
    version: str
    hooks: list[str] = field(default_factory=list)
    error: str | None = None


class PluginError(Exception):
    """A plugin raised inside a hook, or returned something the hook does not accept.

    ``str()`` names the plugin and the hook; ``original`` is the exception (None for a bad result).
    """

    def __init__(self, plugin: str, hook: str, exc: BaseException | None = None, problem: str | None = None) -> None:
        detail = problem if problem is not None else f"{type(exc).__name__}: {exc}"
        verb = "failed in" if problem is None else "returned a bad result from"
        super().__init__(f"plugin {plugin!r} {verb} {hook}: {detail}")
        self.plugin = plugin
        self.hook = hook
        self.original = exc


class PluginRefused(ValueError):
    """A plugin whose hooks kai cannot use as written (a hook name that is not a hook, another
    project's marker, a wrapper); ``str()`` names the plugin, ``problem`` is the rest."""

    def __init__(self, plugin: str, problem: str) -> None:
        super().__init__(f"plugin {plugin!r}: {problem}")
        self.plugin = plugin
        self.problem = problem


class ListedOnUse(Sequence):
    """A list made by ``make`` the first time it is read: what a device hook receives as its
    candidates. Listing every candidate device of every node costs as much as the allocation it
    steers (8 % of the dra bench), and a plugin that answers from the claims alone (NVIDIA's, for
    a claim that cannot use a MIG device) never reads them."""

    __slots__ = ("_items", "_make")

    def __init__(self, make: Callable[[], list]) -> None:
        self._make = make
        self._items: list | None = None

    def _listed(self) -> list:
        if self._items is None:
            self._items = list(self._make())
        return self._items

    def __getitem__(self, index):
        return self._listed()[index]

    def __len__(self) -> int:
        return len(self._listed())

    def __iter__(self):
        return iter(self._listed())

    def __eq__(self, other) -> bool:
        return self._listed() == (list(other) if isinstance(other, ListedOnUse) else other)

    def __repr__(self) -> str:
        return f"ListedOnUse({self._items!r})" if self._items is not None else "ListedOnUse(<not listed yet>)"


class KaiPluginManager(pluggy.PluginManager):
    """pluggy's manager plus load-error bookkeeping and per-plugin error isolation."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(SchedulerSpecs)
        self.load_errors: list[PluginInfo] = []
        self._dists: dict[str, tuple[str, str]] = {}
        self._kube: dict[str, str] = {}
        self._logged: set[tuple[str, str, str]] = set()

    def register(self, plugin: object, name: str | None = None) -> str | None:
        """pluggy's ``register``, refusing (:class:`PluginRefused`, naming the plugin and the hook)
        what would otherwise be silently ignored: a hook implementation whose name is not a hook
        (with the closest real name suggested), a ``kai_*`` function marked by another project's
        ``HookimplMarker`` or a hook-named function not marked at all, and hook wrappers (kai calls
        every implementation on its own to isolate failures, so a wrapper would wrap nothing)."""
        label = name or self.get_canonical_name(plugin)
        problem = self.hook_name_problem(plugin)
        if problem:
            raise PluginRefused(label, problem)
        registered = super().register(plugin, name=name)
        for caller in self.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and (impl.hookwrapper or impl.wrapper):
                    self.unregister(plugin)
                    raise PluginRefused(
                        str(registered), f"{caller.name} is a hook wrapper; kai does not support "
                        "wrappers (implement the hook as a plain function)")
        return registered

    def add_hookspecs(self, module_or_class: object) -> None:
        """pluggy's ``add_hookspecs``; then plugins already registered are checked again, since
        their hooks of a family added later (:data:`LATER_HOOK_FAMILIES`) are now known or not: a
        plugin with a misspelt one is unregistered and recorded in ``load_errors``."""
        super().add_hookspecs(module_or_class)
        for name, plugin in list(self.list_name_plugin()):
            problem = self.hook_name_problem(plugin) if plugin is not None else None
            if problem:
                self.unregister(plugin)
                dist, version = self._dists.pop(name, ("?", "?"))
                self._load_failed(name, dist, version, f"plugin {name!r} refused: {problem}")

    def hook_names(self) -> list[str]:
        """The names of every hook that has a spec."""
        return sorted(n for n, caller in vars(self.hook).items()
                      if isinstance(caller, pluggy.HookCaller) and caller.has_spec())

    def hook_name_problem(self, plugin: object) -> str | None:
        """Why ``plugin``'s hook functions would not run as its author meant, or None: a marked
        function whose name is not a hook, a ``kai_*`` function carrying another project's
        marker, or a function named exactly like a hook without any marker."""
        known = self.hook_names()
        for attr in sorted(dir(plugin)):
            if not attr.startswith("kai_"):
                continue
            if self.parse_hookimpl_opts(plugin, attr) is not None:
                if attr in known or any(attr.startswith(f) and not any(k.startswith(f) for k in known)
                                        for f in LATER_HOOK_FAMILIES):
                    continue
                close = difflib.get_close_matches(attr, known, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]}?)" if close else ""
                return f"{attr} is not a kai hook{hint}; it would never be called"
            value = getattr(plugin, attr, None)
            if not callable(value):
                continue
            func = getattr(value, "__func__", value)
            markers = sorted(k[:-len("_impl")] for k, v in (getattr(func, "__dict__", None) or {}).items()
                             if k.endswith("_impl") and isinstance(v, dict))
            if markers:
                return (f"{attr} is marked by pluggy.HookimplMarker({markers[0]!r}), not kai's "
                        f"({PROJECT!r}): use kai_core.framework.hookspecs.hookimpl")
            if attr in known:
                return (f"{attr} is not marked @hookimpl (kai_core.framework.hookspecs.hookimpl), "
                        "so it would never be called")
        if self.parse_hookimpl_opts(plugin, "kai_check_configs") is not None and not declared_drivers(plugin):
            return (f"kai_check_configs needs {DRIVERS_ATTRIBUTE} (a tuple of the driver names whose "
                    "opaque configs it checks) on the plugin")
        return None

    def _load_failed(self, name: str, dist: str, version: str, msg: str) -> None:
        log.error("%s", msg)
        self.load_errors.append(PluginInfo(name, dist, version, error=msg))

    def register_builtin(self, plugin: object, name: str, distribution: str = "kai-core",
                         kube_plugin: str | None = None) -> None:
        """Register one of our own plugins (no entry point), recording its distribution for ``info``
        and the kube-scheduler plugin whose work it does, if any (:meth:`kube_plugin`)."""
        self.register(plugin, name=name)
        self._dists[name] = (distribution, _version(distribution))
        if kube_plugin is not None:
            self._kube[name] = kube_plugin

    def kube_plugin(self, name: str | None) -> str | None:
        """The kube-scheduler plugin whose work the built-in plugin ``name`` does (e.g.
        ``VolumeBinding``), None for a plugin of kai's own or an installed one."""
        return self._kube.get(name) if name is not None else None

    def doing_work_of(self, kube_plugin: str) -> str | None:
        """The registered built-in plugin doing the work of kube-scheduler's ``kube_plugin``, if any."""
        return next((name for name, kube in self._kube.items() if kube == kube_plugin and self.has_plugin(name)),
                    None)

    def default_score_weight(self, name: str) -> float:
        """What ``name``'s scores weigh when the configuration does not say: kube-scheduler's
        default-profile weight (:data:`KUBE_SCORE_WEIGHTS`) for a built-in doing the work of one of
        its plugins, else 1."""
        return float(KUBE_SCORE_WEIGHTS.get(self._kube.get(name, ""), 1))

    def load_entry_points(self, blocked: Iterable[str] = ()) -> None:
        """Register every installed plugin of the ``kai_scheduler.plugins`` group, in name order.

        Names in ``blocked`` are skipped, and so are names already registered (a built-in). A
        plugin that fails to import or register is recorded in ``load_errors`` and logged; the
        others still load.
        """
        for name in blocked:
            self.set_blocked(name)
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if self.is_blocked(ep.name) or self.has_plugin(ep.name):
                continue
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            try:
                self.register(ep.load(), name=ep.name)
            except PluginRefused as exc:
                self._load_failed(ep.name, dist, version, f"plugin {ep.name!r} ({ep.value}) refused: {exc.problem}")
                continue
            except (Exception, SystemExit) as exc:  # any import or registration failure is the plugin's
                self._load_failed(ep.name, dist, version,
                                  f"plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}")
                log.debug("%s", traceback.format_exc())
                continue
            self._dists[ep.name] = (dist, version)

    def missing(self, required: Iterable[str]) -> str | None:
        """Why the plugins named in ``required`` are not all loaded (the first one missing: its
        load error, or that it is not installed), or None when they are."""
        for name in required:
            if self.has_plugin(name) and self.get_plugin(name) is not None:
                continue
            failed = next((e.error for e in self.load_errors if e.name == name), None)
            if failed:
                return f"required plugin {name!r} is not loaded: {failed}"
            if self.is_blocked(name):
                return f"required plugin {name!r} is blocked"
            loaded = ", ".join(sorted(n for n, p in self.list_name_plugin() if p is not None))
            return f"required plugin {name!r} is not installed (loaded: {loaded})"
        return None

    def info(self) -> list[PluginInfo]:
        """Every registered plugin (name order) with its distribution, version and hooks, then the
        plugins that failed to load."""
        out = []
        for name, plugin in sorted(self.list_name_plugin()):
            if plugin is None:
                continue  # blocked
            dist, version = self._dists.get(name, ("?", "?"))
            hooks = sorted(h.name for h in self.get_hookcallers(plugin) or [])
            out.append(PluginInfo(name, dist, version, hooks))
        return out + self.load_errors

    def implementations(self, hook: str) -> list:
        """The implementations of ``hook`` in call order (pluggy's: ``tryfirst`` ones first, then
        the most recently registered first, ``trylast`` ones last)."""
        return list(reversed(getattr(self.hook, hook).get_hookimpls()))

    def call_impl(self, impl, hook: str, kwargs: dict) -> object:
        """Call one implementation with the arguments it asks for, isolated: an exception becomes
        a returned PluginError, its traceback logged once per (plugin, hook, exception type)."""
        try:
            return impl.function(**{a: kwargs[a] for a in impl.argnames})
        except Exception as exc:  # one plugin's bug must not stop scheduling
            err = PluginError(impl.plugin_name, hook, exc)
            key = (impl.plugin_name, hook, type(exc).__name__)
            if key not in self._logged:
                self._logged.add(key)
                log.error("%s\n%s", err, traceback.format_exc())
            return err

    def bad_result(self, plugin: str, hook: str, problem: str) -> PluginError:
        """A PluginError for a result of the wrong shape (``problem`` says what was expected),
        logged once per plugin and hook."""
        err = PluginError(plugin, hook, problem=problem)
        key = (plugin, hook, "bad result")
        if key not in self._logged:
            self._logged.add(key)
            log.error("%s", err)
        return err

    def call_each(self, hook: str, **kwargs) -> list[tuple[str, object]]:
        """Call every implementation of ``hook`` in pluggy's order, each isolated.

        Returns ``(plugin_name, result)`` pairs for results that are not None; an implementation
        that raises yields ``(plugin_name, PluginError)``.
        """
        out: list[tuple[str, object]] = []
        for impl in self.implementations(hook):
            res = self.call_impl(impl, hook, kwargs)
            if res is not None:
                out.append((impl.plugin_name, res))
        return out

    def call_first(self, hook: str, **kwargs) -> tuple[str, object] | None:
        """Like ``call_each`` but stops at the first non-None result (or error)."""
        for impl in self.implementations(hook):
            res = self.call_impl(impl, hook, kwargs)
            if res is not None:
                return impl.plugin_name, res
        return None


    # -- one typed method per hook -------------------------------------------------------------
    # Every call site goes through these: each checks its hook's answers once, turns a plugin's
    # exception or wrong-shaped answer into a Status naming the plugin, and returns plain types.

    def _bad(self, plugin: str, hook: str, problem: str) -> Status:
        return Status.error(str(self.bad_result(plugin, hook, problem)), plugin)

    def resource_kinds(self) -> list[tuple[str, dict]]:
        """``kai_resource_kinds``: ``(plugin, CRD)`` for every plugin's CRDs, in plugin order (a
        failing plugin's are left out, logged; a CRD's own problems are the cluster's to report)."""
        out: list[tuple[str, dict]] = []
        for plugin, res in self.call_each("kai_resource_kinds"):
            if isinstance(res, PluginError):
                continue
            if not isinstance(res, list | tuple):
                self.bad_result(plugin, "kai_resource_kinds", f"expected a list of CRDs, got {type(res).__name__}")
                continue
            out.extend((plugin, crd) for crd in res)
        return out

    def resource_names(self) -> list[str]:
        """The resource strings (``plural.group``) of the kinds of :meth:`resource_kinds`, in plugin
        order without repeats; malformed CRDs are skipped."""
        out: list[str] = []
        for _plugin, crd in self.resource_kinds():
            spec = crd.get("spec") if isinstance(crd, Mapping) else None
            try:
                resource = f"{spec['names']['plural']}.{spec['group']}"
            except (KeyError, TypeError):
                continue
            if resource not in out:
                out.append(resource)
        return out

    def device_gpu_worth(self, driver: str, device: Mapping | None, pool_devices: list) -> float | None:
        """``kai_device_gpu_worth``: the first plugin's number of GPUs for an allocated device, or
        None when no plugin answers (a failing plugin or a wrong answer is logged and skipped)."""
        for impl in self.implementations("kai_device_gpu_worth"):
            res = self.call_impl(impl, "kai_device_gpu_worth",
                                 {"driver": driver, "device": device, "pool_devices": pool_devices})
            if res is None or isinstance(res, PluginError):
                continue
            if isinstance(res, bool) or not isinstance(res, int | float) or not res >= 0:
                self.bad_result(impl.plugin_name, "kai_device_gpu_worth", f"expected a number >= 0, got {res!r}")
                continue
            return float(res)
        return None

    def embedded_controllers(self, store: object) -> list:
        """``kai_embedded_controllers``: every plugin's controllers (a failing plugin adds none)."""
        out: list = []
        for plugin, res in self.call_each("kai_embedded_controllers", store=store):
            if isinstance(res, PluginError):
                continue
            if not isinstance(res, list | tuple):
                self.bad_result(plugin, "kai_embedded_controllers",
                                f"expected a list of controllers, got {type(res).__name__}")
                continue
            out.extend(res)
        return out

    def cli_commands(self, cli: object) -> None:
        """``kai_cli_commands``: let every plugin add its commands (a failing plugin is logged)."""
        self.call_each("kai_cli_commands", cli=cli)

    def answers_are_node_local(self) -> bool:
        """Whether filter, allocation and device-ranking answers may be reused per pod shape: not
        when a plugin implementing one of them sets ``KAI_NODE_LOCAL = False``."""
        return not any(
            declares_node_local(impl.plugin) is False
            for hook in ("kai_filter_nodes", "kai_allocate_claims", "kai_rank_devices", "kai_filter_devices")
            for impl in self.implementations(hook))

    def pod_groups(self, pods: Callable[[], list[dict]], snapshot: object) -> list[tuple[str, GroupSpec]]:
        """``kai_pod_groups``: ``(plugin, GroupSpec)`` for every group declared. ``pods`` is called
        once, only if some plugin implements the hook. A plugin that fails declares nothing."""
        hook = "kai_pod_groups"
        declared: list[tuple[str, GroupSpec]] = []
        candidates = None
        for impl in self.implementations(hook):
            if candidates is None:
                candidates = pods()
            res = self.call_impl(impl, hook, {"pods": candidates, "snapshot": snapshot})
            if res is None or isinstance(res, PluginError):
                continue
            if not isinstance(res, list | tuple) or not all(
                    isinstance(g, GroupSpec) and isinstance(g.pods, list) and (
                        g.min_member is None or (isinstance(g.min_member, int) and g.min_member >= 0))
                    for g in res):
                self.bad_result(impl.plugin_name, hook,
                                "expected a list of kai_core.gang.GroupSpec (pods a list, min_member "
                                f"None or an int >= 0), got {res!r:.200}")
                continue
            declared += [(impl.plugin_name, g) for g in res]
        return declared

    def group_node_subsets(self, group: object, nodes: list, snapshot: object
                           ) -> tuple[list[tuple[str, list[NodeSubset]]], Status]:
        """``kai_group_node_subsets``: each proposing plugin's subsets, in order; or a Status with a
        plugin's reason (unschedulable) or failure (error)."""
        hook = "kai_group_node_subsets"
        proposals: list[tuple[str, list[NodeSubset]]] = []
        for plugin, res in self.call_each(hook, group=group, nodes=nodes, snapshot=snapshot):
            if isinstance(res, PluginError):
                return [], Status.error(str(res), plugin)
            if isinstance(res, str):
                return [], Status.unschedulable(res, plugin)
            if not isinstance(res, list | tuple) or not all(
                    isinstance(s, NodeSubset) and isinstance(s.nodes, list | tuple) for s in res):
                return [], self._bad(
                    plugin, hook, f"expected a list of kai_core.gang.NodeSubset or a reason, got {res!r:.200}")
            proposals.append((plugin, list(res)))
        return proposals, SUCCESS

    def pre_filter(self, pod: dict, snapshot: object) -> Status:
        """``kai_pre_filter``: the first reason given (unresolvable), a failure (error); then
        ``kai_check_configs`` (:meth:`check_configs`); or success."""
        hook = "kai_pre_filter"
        for plugin, res in self.call_each(hook, pod=pod, snapshot=snapshot):
            if isinstance(res, PluginError):
                return Status.error(str(res), plugin)
            if not isinstance(res, str):
                return self._bad(plugin, hook, f"expected None or a reason (str), got {type(res).__name__}")
            return Status.unresolvable(res, plugin)
        return self.check_configs(pod, snapshot)

    def check_configs(self, pod: dict, snapshot) -> Status:
        """``kai_check_configs``: each implementing plugin gets the opaque configs of the pod's
        claims addressed to its drivers (``KAI_DRIVERS``); the first problem, in walk order, makes
        the pod unresolvable with kai's wording. Nothing is walked when no plugin implements it,
        the pod has no claims, DRA is off or the claims cannot be resolved yet (the core says so)."""
        hook = "kai_check_configs"
        impls = self.implementations(hook)
        if not impls or not (pod.get("spec") or {}).get("resourceClaims") or not snapshot.features.dra:
            return SUCCESS
        claims, reason = pod_claims(pod, snapshot)
        if reason:
            return SUCCESS
        configs = opaque_configs(claims, snapshot.dra)
        position = {id(c): i for i, c in enumerate(configs)}  # a config's place in the walk
        problems: dict[int, tuple[str, str]] = {}  # position -> (plugin, problem)
        for impl in impls:
            drivers = declared_drivers(impl.plugin)
            mine = [c for c in configs if c.driver in drivers]
            if not mine:
                continue
            given = {id(c) for c in mine}
            plugin = impl.plugin_name
            res = self.call_impl(impl, hook, {"pod": pod, "configs": mine, "snapshot": snapshot})
            if res is None:
                continue
            if isinstance(res, PluginError):
                return Status.error(str(res), plugin)
            if not isinstance(res, Mapping):
                return self._bad(plugin, hook, f"expected a dict {{config: problem}}, got {type(res).__name__}")
            for config, problem in res.items():
                if isinstance(problem, list | tuple) and problem and all(isinstance(p, str) for p in problem):
                    problem = "; ".join(problem)
                if not isinstance(config, OpaqueConfig) or id(config) not in given:
                    return self._bad(plugin, hook, f"expected keys among the configs it was given, got {config!r:.200}")
                if not isinstance(problem, str) or not problem:
                    return self._bad(plugin, hook, f"{config.where}: expected a problem (str), got {problem!r:.200}")
                problems.setdefault(position[id(config)], (plugin, problem))
        if not problems:
            return SUCCESS
        first = min(problems)
        plugin, problem = problems[first]
        return Status.unresolvable(configs[first].describe(problem), plugin)

    def filter_nodes(self, pod: dict, nodes: list, snapshot: object, rejected: dict,
                     refused_by: dict | None = None) -> tuple[list, Status]:
        """``kai_filter_nodes``, each plugin over the nodes the ones before it let through. Returns the
        nodes left; each rejected node's reason(s) go into ``rejected``, and with ``refused_by`` (a
        decision being explained) the refusing plugin's name too. A failure stops at once."""
        hook = "kai_filter_nodes"
        for impl in self.implementations(hook):
            if not nodes:
                break
            res = self.call_impl(impl, hook, {"pod": pod, "nodes": nodes, "snapshot": snapshot})
            if res is None:
                continue
            if isinstance(res, PluginError):
                return nodes, Status.error(str(res), impl.plugin_name)
            if not isinstance(res, Mapping):
                return nodes, self._bad(
                    impl.plugin_name, hook, f"expected a dict {{node name: reason}}, got {type(res).__name__}")
            if not res:
                continue
            left = []
            for n in nodes:
                reason = res.get(n.name)
                if reason is None:
                    left.append(n)
                elif isinstance(reason, str) or (
                        isinstance(reason, list | tuple) and reason and all(isinstance(r, str) for r in reason)):
                    rejected[n.name] = reason
                else:
                    return nodes, self._bad(
                        impl.plugin_name, hook,
                        f"node {n.name}: expected a reason (str or list of str), got {reason!r}")
            if refused_by is not None:
                refused_by.update((n.name, impl.plugin_name) for n in nodes if res.get(n.name) is not None)
            nodes = left
        return nodes, SUCCESS

    def allocate_claims(self, pod: dict, claims: list[PodClaim], nodes: list, snapshot: object,
                        rejected: dict, refused_by: dict | None = None, devices: dict | None = None,
                        details: dict | None = None) -> tuple[dict[str, ClaimAllocation], Status]:
        """``kai_allocate_claims`` (first answer wins) over ``nodes``: the allocation per node where
        the claims fit; other nodes go into ``rejected`` with kube-scheduler's reason
        (:func:`dra_node_reason`). For a decision being explained, ``details`` gets the plugin's
        whole reason per refused node, ``refused_by`` the answering plugin, and ``devices`` what the
        device hooks said: ``"removed"`` (device id -> reason), ``"ranked"`` (device id -> summed
        score) and ``"allocator"`` (the plugin that answered)."""
        hook = "kai_allocate_claims"
        rank, filter_ = self._device_ranker(pod, snapshot), self._device_filter(pod, snapshot)
        if devices is not None:
            rank, filter_ = _kept(rank, devices, "ranked"), _kept(filter_, devices, "removed")
        failures: list[Status] = []
        rank, filter_ = _failures_noted(rank, failures), _failures_noted(filter_, failures)
        answer = self.call_first(hook, pod=pod, claims=claims, nodes=nodes, snapshot=snapshot,
                                 rank_devices=rank, filter_devices=filter_)
        if failures:  # a device hook failed: the pod's message names it, not one node's reason
            return {}, failures[0]
        if answer is None:
            return {}, Status.unresolvable("no plugin can allocate this pod's resource claims")
        plugin, res = answer
        if isinstance(res, PluginError):
            return {}, Status.error(str(res), plugin)
        if not isinstance(res, Mapping):
            return {}, self._bad(
                plugin, hook, f"expected a dict {{node name: ClaimAllocation or reason}}, got {type(res).__name__}")
        allocations: dict[str, ClaimAllocation] = {}
        for n in nodes:
            got = res.get(n.name, f"plugin {plugin!r} gave no allocation for this node")
            if isinstance(got, ClaimAllocation):
                if len(got.allocations) != len(claims):
                    return {}, self._bad(
                        plugin, hook, f"node {n.name}: {len(got.allocations)} allocation(s) for {len(claims)} claim(s)")
                allocations[n.name] = got
            elif isinstance(got, str):
                rejected[n.name], detailed = dra_node_reason(got)
                if details is not None:
                    details[n.name] = detailed
            else:
                return {}, self._bad(
                    plugin, hook, f"node {n.name}: expected a ClaimAllocation or a reason, got {type(got).__name__}")
        if refused_by is not None:
            refused_by.update((n.name, plugin) for n in nodes if n.name not in allocations)
        if devices is not None:
            devices["allocator"] = plugin
        return allocations, SUCCESS

    def _device_ranker(self, pod: dict, snapshot: object) -> DeviceRanker | None:
        """What ``kai_allocate_claims`` receives as ``rank_devices``: None when no plugin ranks
        devices (so nobody lists them), else a function calling :meth:`rank_devices` for ``pod``."""
        if not self.hook.kai_rank_devices.get_hookimpls():
            return None

        def rank(claims: list[dict], devices: Callable[[], list]) -> dict | Status | None:
            return self.rank_devices(pod, claims, devices, snapshot)

        return rank

    def rank_devices(self, pod: dict, claims: list[dict], devices: Callable[[], list], snapshot: object
                     ) -> dict | Status | None:
        """``kai_rank_devices``, every plugin's scores summed by device: ``{DeviceId: score}``, None
        (no ranking; nobody implements it or nobody answered), or an error Status naming the
        plugin. ``devices`` is called only when some plugin implements the hook."""
        hook = "kai_rank_devices"
        if not claims or not self.hook.kai_rank_devices.get_hookimpls():
            return None
        total: dict | None = None
        for plugin, scores in self.call_each(hook, pod=pod, claims=claims, devices=ListedOnUse(devices),
                                             snapshot=snapshot):
            if isinstance(scores, PluginError):
                return Status.error(str(scores), plugin)
            if not isinstance(scores, Mapping) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) for v in scores.values()):
                return Status.error(f"plugin {plugin!r} answered {hook} with {type(scores).__name__}, not a "
                                    "mapping of device ids to numbers", plugin)
            if total is None:
                total = dict(scores)
                continue
            for device, score in scores.items():
                total[device] = total.get(device, 0) + score
        return total

    def _device_filter(self, pod: dict, snapshot: object) -> DeviceFilter | None:
        """What ``kai_allocate_claims`` receives as ``filter_devices``: None when no plugin filters
        devices (so nobody lists them), else a function calling :meth:`filter_devices` for ``pod``."""
        if not self.hook.kai_filter_devices.get_hookimpls():
            return None

        def filter_(claims: list[dict], requests: Callable[[], list]) -> dict | Status | None:
            return self.filter_devices(pod, claims, requests, snapshot)

        return filter_

    def filter_devices(self, pod: dict, claims: list[dict], requests: Callable[[], list], snapshot: object
                       ) -> dict | Status | None:
        """``kai_filter_devices``: ``{DeviceId: "plugin 'p': reason"}`` for every device some plugin
        removed (the first plugin's reason kept), None when none did, or an error Status naming the
        plugin. ``requests`` is called only when some plugin implements the hook."""
        hook = "kai_filter_devices"
        if not claims or not self.hook.kai_filter_devices.get_hookimpls():
            return None
        removed: dict = {}
        for plugin, res in self.call_each(hook, pod=pod, requests=ListedOnUse(requests), snapshot=snapshot):
            if isinstance(res, PluginError):
                return Status.error(str(res), plugin)
            if not isinstance(res, Mapping) or not all(isinstance(r, str) and r for r in res.values()):
                return self._bad(plugin, hook, f"expected a dict {{device id: reason}}, got {res!r:.200}")
            for device, reason in res.items():
                removed.setdefault(device, f"plugin {plugin!r}: {reason}")
        return removed or None

    def score_nodes(self, pod: dict, snapshot: object, weights: Mapping[str, float], *,
                    local_nodes: Mapping[str, object], nodes: list, among: Container[str],
                    by_plugin: dict | None = None) -> tuple[dict[str, float], dict[str, float], Status]:
        """``kai_score_nodes``, weighted (``weights`` by plugin name, else
        :meth:`default_score_weight`) and summed per node. Plugins that declare node-local scores
        are asked about ``local_nodes`` (name -> NodeInfo) only, the others about ``nodes``, whose
        names are in ``among`` (given, not derived: this runs once per pod, and a pass over every
        feasible node per pod is what the equivalence memo avoids). Returns the node-local totals
        (for ``local_nodes``), the others' totals (for ``among``), and a Status. With ``by_plugin`` (a
        decision being explained), each answering plugin's ``(weight, node-local, {node: score})``."""
        hook = "kai_score_nodes"
        local_names = local_nodes
        local_list = list(local_nodes.values())
        names = among
        local_sums = dict.fromkeys(local_names, 0.0)
        others: dict[str, float] = {}
        for impl in self.implementations(hook):
            local = declares_node_local(impl.plugin) is True
            asked = local_list if local else nodes
            if not (local_list if local else among):  # ``among`` names ``nodes``, which may list on use
                continue
            res = self.call_impl(impl, hook, {"pod": pod, "nodes": asked, "snapshot": snapshot})
            if res is None:
                continue
            plugin = impl.plugin_name
            if isinstance(res, PluginError):
                return local_sums, others, Status.error(str(res), plugin)
            if not isinstance(res, Mapping):
                return local_sums, others, self._bad(
                    plugin, hook, f"expected a dict {{node name: score}}, got {type(res).__name__}")
            into, among = (local_sums, local_names) if local else (others, names)
            weight = weights[plugin] if plugin in weights else self.default_score_weight(plugin)
            try:
                for name, score in res.items():
                    # a score out of range would outweigh every other plugin (NaN fails too)
                    if not 0 <= score <= MAX_NODE_SCORE:
                        return local_sums, others, self._bad(
                            plugin, hook, f"node {name}: score {score!r} is outside 0..{MAX_NODE_SCORE}")
                    if name in among:
                        into[name] = into.get(name, 0.0) + weight * score
            except TypeError:
                return local_sums, others, self._bad(plugin, hook, f"node {name}: expected a number, got {score!r}")
            if by_plugin is not None:
                by_plugin[plugin] = (weight, local, {name: score for name, score in res.items() if name in among})
        return local_sums, others, SUCCESS

    def bind_request(self, pod: dict, node: object, bind_request: dict) -> tuple[dict[str, str], Status]:
        """``kai_bind_request``: the annotations of every plugin merged, or the failure of one."""
        hook = "kai_bind_request"
        annotations: dict[str, str] = {}
        for plugin, res in self.call_each(hook, pod=pod, node=node, bind_request=bind_request):
            if isinstance(res, PluginError):
                return {}, Status.error(str(res), plugin)
            if not (isinstance(res, Mapping) and all(isinstance(v, str) for v in res.values())):
                return {}, self._bad(plugin, hook, f"expected a dict of annotations (str values), got {res!r}")
            annotations.update(res)
        return annotations, SUCCESS


def dra_node_reason(reason: str) -> tuple[str, str]:
    """An allocator's reason for a node as kube-scheduler's DynamicResources words it (one of
    :data:`DRA_NODE_REASONS`), and with kai's detail (``<kube's reason>: <detail>``)."""
    for kube in DRA_NODE_REASONS:
        if reason == kube or reason.startswith(f"{kube}: "):
            return kube, reason
    return DRA_NODE_REASONS[0], f"{DRA_NODE_REASONS[0]}: {reason}"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _kept(hook_call: Callable | None, into: dict, key: str) -> Callable | None:
    """``hook_call`` (a device ranker or filter) keeping its answer in ``into[key]``, for a decision
    being explained; None stays None."""
    if hook_call is None:
        return None

    def call(claims: list[dict], listed: Callable[[], list]):
        answer = hook_call(claims, listed)
        if isinstance(answer, dict):
            into.setdefault(key, {}).update(answer)
        return answer

    return call


def _failures_noted(hook_call: Callable | None, failures: list[Status]) -> Callable | None:
    """``hook_call`` (a device ranker or filter) noting in ``failures`` the error Status it
    answers (a device hook's plugin failed); None stays None."""
    if hook_call is None:
        return None

    def call(claims: list[dict], listed: Callable[[], list]):
        answer = hook_call(claims, listed)
        if isinstance(answer, Status):
            failures.append(answer)
        return answer

    return call


#: what ``kai_allocate_claims`` receives as ``rank_devices``: called with the claims to allocate and a
#: function listing the candidate devices; answers scores, None (no ranking) or an error Status
DeviceRanker = Callable[[list[dict], Callable[[], list]], "dict | Status | None"]
#: what ``kai_allocate_claims`` receives as ``filter_devices``: called with the claims to allocate and
#: a function listing their requests' candidates; answers removals, None (none) or an error Status
DeviceFilter = Callable[[list[dict], Callable[[], list]], "dict | Status | None"]
