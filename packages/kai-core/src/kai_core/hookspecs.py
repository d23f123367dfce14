"""Stable public name kept for plugins and tests written against earlier guides: the code lives in
:mod:`kai_core.framework.hookspecs` (see docs/writing-a-device-plugin.md, "Where things are")."""

from kai_core.framework.hookspecs import PROJECT, SchedulerSpecs, hookimpl, hookspec  # noqa: F401
