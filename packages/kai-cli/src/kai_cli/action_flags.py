"""``kai-cli run scheduler``'s flags for the eviction actions after allocate: which run and how much
they may do (:class:`kai_core.scheduler.actions.ActionsConfig`).

``--actions`` is KAI's list of actions without ``allocate``, which always runs first:
``consolidation,reclaim,preempt`` by default, in the order given, ``""`` for none.
``--max-consolidation-preemptees`` is KAI's flag of that name (default 16, 0 turns consolidation
off); ``--actions-time-budget`` caps the seconds the actions of one cycle take together.
"""

from __future__ import annotations

import math

from kai_core.scheduler.actions import ACTIONS, ActionsConfig


class ActionFlagError(ValueError):
    """A flag's value is refused; ``str()`` is the one-line message naming the flag."""


def parse_actions(value: str) -> tuple[str, ...]:
    """The actions of a comma-separated list (spaces around names ignored); ``""`` is none."""
    names = [n.strip() for n in value.split(",")] if value.strip() else []
    for name in names:
        if name == "allocate":
            raise ActionFlagError(f"--actions {value!r}: allocate always runs first; list only the eviction "
                                  f"actions after it ({', '.join(ACTIONS)})")
        if name not in ACTIONS:
            raise ActionFlagError(f"--actions {value!r}: unknown action {name!r}; the actions are "
                                  f"{', '.join(ACTIONS)} (\"\" for none)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ActionFlagError(f"--actions {value!r}: {', '.join(repeated)} named twice")
    return tuple(names)


def actions_config(actions: str | None = None, max_consolidation_preemptees: str | None = None,
                   time_budget: str | None = None) -> ActionsConfig:
    """The eviction actions' configuration from the flags' values as typed (None: the flag was not
    given, KAI's default holds)."""
    config = ActionsConfig()
    if actions is not None:
        config.actions = parse_actions(actions)
    if max_consolidation_preemptees is not None:
        try:
            count = int(max_consolidation_preemptees)
        except ValueError:
            count = -1
        if count < 0:
            raise ActionFlagError(f"--max-consolidation-preemptees {max_consolidation_preemptees!r}: expected a whole "
                                  "number, 0 (consolidation off) or more")
        config.max_consolidation_preemptees = count
    if time_budget is not None:
        try:
            seconds = float(time_budget)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds <= 0:
            raise ActionFlagError(f"--actions-time-budget {time_budget!r}: expected a number of seconds above 0")
        config.time_budget = seconds
    return config
