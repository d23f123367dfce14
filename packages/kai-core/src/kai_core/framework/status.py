"""The one result type of the decision phases, after kube-scheduler's ``framework.Status``.

Every phase that can turn a pod down (pre-filter, filter, claim allocation, node subsets of a gang,
scoring, the BindRequest annotations) answers with a :class:`Status` instead of a string, an
exception or ``None``. The code says what the caller may do next:

- ``SUCCESS``: go on;
- ``UNSCHEDULABLE``: no node fits now; the pod waits and is tried again next cycle;
- ``UNRESOLVABLE``: the pod cannot be placed whatever the nodes (a pre-filter's reason, a claim
  not created yet): no node is looked at;
- ``ERROR``: a plugin raised or answered with something of the wrong shape; only this pod suffers.

``message`` is what the pod's ``PodScheduled`` condition says; ``plugin`` names the plugin whose
answer it is, when one is.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Code(enum.Enum):
    SUCCESS = "Success"
    UNSCHEDULABLE = "Unschedulable"
    UNRESOLVABLE = "UnschedulableAndUnresolvable"
    ERROR = "Error"


@dataclass(frozen=True, slots=True)
class Status:
    code: Code = Code.SUCCESS
    message: str = ""
    plugin: str | None = None

    @property
    def ok(self) -> bool:
        return self.code is Code.SUCCESS

    @classmethod
    def unschedulable(cls, message: str, plugin: str | None = None) -> Status:
        return cls(Code.UNSCHEDULABLE, message, plugin)

    @classmethod
    def unresolvable(cls, message: str, plugin: str | None = None) -> Status:
        return cls(Code.UNRESOLVABLE, message, plugin)

    @classmethod
    def error(cls, message: str, plugin: str | None = None) -> Status:
        return cls(Code.ERROR, message, plugin)

    def __str__(self) -> str:
        return self.message if self.message else self.code.value


SUCCESS = Status()
