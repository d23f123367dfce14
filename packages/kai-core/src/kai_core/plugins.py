"""The plugin manager: built-in plugins, external plugins from entry points, isolated hook calls."""

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
    name: str
    distribution: str
    version: str
    hooks: list[str] = field(default_factory=list)
    error: str | None = None


class PluginError(Exception):
    """A plugin raised inside a hook. ``str()`` names the plugin and the hook."""

    def __init__(self, plugin: str, hook: str, exc: BaseException) -> None:
        super().__init__(f"plugin {plugin!r} failed in {hook}: {type(exc).__name__}: {exc}")
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

    def register_builtin(self, plugin: object, name: str, distribution: str = "kai-core") -> None:
        self.register(plugin, name=name)
        self._dists[name] = (distribution, _version(distribution))

    def load_entry_points(self, blocked: Iterable[str] = ()) -> None:
        """Register every installed plugin of the ``kai_scheduler.plugins`` group.

        A plugin that fails to import or register is recorded in ``load_errors`` and logged; the
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
            except Exception as exc:  # any import or registration failure is the plugin's, not ours
                msg = f"plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
                log.error("%s", msg)
                log.debug("%s", traceback.format_exc())
                self.load_errors.append(PluginInfo(ep.name, dist, version, error=msg))
                continue
            self._dists[ep.name] = (dist, version)

    def info(self) -> list[PluginInfo]:
        out = []
        for name, plugin in sorted(self.list_name_plugin()):
            dist, version = self._dists.get(name, ("?", "?"))
            hooks = sorted(h.name for h in self.get_hookcallers(plugin) or [])
            out.append(PluginInfo(name, dist, version, hooks))
        return out + self.load_errors

    def _call(self, impl, hook: str, kwargs: dict) -> object:
        """One implementation, isolated: an exception becomes a PluginError, logged once."""
        try:
            return impl.function(**{a: kwargs[a] for a in impl.argnames})
        except Exception as exc:  # one plugin's bug must not stop scheduling
            err = PluginError(impl.plugin_name, hook, exc)
            key = (impl.plugin_name, hook, type(exc).__name__)
            if key not in self._logged:
                self._logged.add(key)
                log.error("%s\n%s", err, traceback.format_exc())
            return err

    def call_each(self, hook: str, **kwargs) -> list[tuple[str, object]]:
        """Call every implementation of ``hook`` in pluggy's order, each isolated.

        Returns ``(plugin_name, result)`` pairs for results that are not None; an implementation
        that raises yields ``(plugin_name, PluginError)``.
        """
        out: list[tuple[str, object]] = []
        for impl in reversed(getattr(self.hook, hook).get_hookimpls()):
            res = self._call(impl, hook, kwargs)
            if res is not None:
                out.append((impl.plugin_name, res))
        return out

    def call_first(self, hook: str, **kwargs) -> tuple[str, object] | None:
        """Like ``call_each`` but stops at the first non-None result (or error)."""
        for impl in reversed(getattr(self.hook, hook).get_hookimpls()):
            res = self._call(impl, hook, kwargs)
            if res is not None:
                return impl.plugin_name, res
        return None


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def build_plugin_manager(load_external: bool = True, blocked: Iterable[str] = ()) -> KaiPluginManager:
    """A manager with kai-core's built-in plugins and, unless disabled, every installed plugin."""
    from kai_core.builtins import register_builtins

    pm = KaiPluginManager()
    register_builtins(pm)
    if load_external:
        pm.load_entry_points(blocked)
    return pm
