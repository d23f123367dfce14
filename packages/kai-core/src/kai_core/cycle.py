"""Stable public name kept for plugins and tests written against earlier guides: the code lives in
:mod:`kai_core.scheduler.cycle` (see docs/writing-a-device-plugin.md, "Where things are")."""

from kai_core.scheduler.cycle import (  # noqa: F401
    DEFAULT_BACKOFF_LIMIT,
    DEFAULT_SCHEDULER_NAME,
    CycleResult,
    Scheduler,
    SchedulerConfig,
    watched_resources,
)
