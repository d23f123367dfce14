"""The plugin manager: built-in plugins, external plugins from entry points, isolated hook calls.

Built-ins are registered directly (never also as entry points); external plugins come from the
entry-point group ``kai_scheduler.plugins``. A plugin that fails to import or register is recorded
in :attr:`KaiPluginManager.load_errors` (and shown by :meth:`KaiPluginManager.info`) while the rest
load. At run time every implementation is called on its own (:meth:`KaiPluginManager.call_each`),
so one that raises becomes a :class:`PluginError` naming the plugin and the hook instead of
stopping the scheduler; its traceback is logged once.
"""

from __future__ import annotations

import importlib.metadata
import logging
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field

import pluggy

from kai_core.hookspecs import PROJECT, SchedulerSpecs

log = logging.getLogger("kai.plugins")

ENTRY_POINT_GROUP = "kai_scheduler.plugins"


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


class KaiPluginManager(pluggy.PluginManager):
    """pluggy's manager plus load-error bookkeeping and per-plugin error isolation."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(SchedulerSpecs)
        self.load_errors: list[PluginInfo] = []
        self._dists: dict[str, tuple[str, str]] = {}
        self._logged: set[tuple[str, str, str]] = set()

    def register(self, plugin: object, name: str | None = None) -> str | None:
        """pluggy's ``register``, refusing hook wrappers: kai calls every implementation on its own
        to isolate failures, so a wrapper would never wrap anything. Raises ValueError naming the
        plugin and the hook."""
        registered = super().register(plugin, name=name)
        for caller in self.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and (impl.hookwrapper or impl.wrapper):
                    self.unregister(plugin)
                    raise ValueError(
                        f"plugin {registered!r}: {caller.name} is a hook wrapper; kai does not support "
                        "wrappers (implement the hook as a plain function)"
                    )
        return registered

    def register_builtin(self, plugin: object, name: str, distribution: str = "kai-core") -> None:
        """Register one of our own plugins (no entry point), recording its distribution for ``info``."""
        self.register(plugin, name=name)
        self._dists[name] = (distribution, _version(distribution))

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
            except (Exception, SystemExit) as exc:  # any import or registration failure is the plugin's
                msg = f"plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
                log.error("%s", msg)
                log.debug("%s", traceback.format_exc())
                self.load_errors.append(PluginInfo(ep.name, dist, version, error=msg))
                continue
            self._dists[ep.name] = (dist, version)

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


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def build_plugin_manager(load_external: bool = True, blocked: Iterable[str] = ()) -> KaiPluginManager:
    """A manager with kai-core's built-in plugins and, unless disabled, every installed plugin
    (except the names in ``blocked``)."""
    from kai_core.builtins import register_builtins

    pm = KaiPluginManager()
    register_builtins(pm)
    if load_external:
        pm.load_entry_points(blocked)
    return pm
