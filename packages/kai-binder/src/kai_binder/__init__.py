"""kai_binder: carries out the scheduler's BindRequests (claims, pods/binding, status), crash-safe."""

from kai_binder.binder import RECOMMENDED_OPTIONS, Binder, BinderResult, add_binder_hookspecs, is_actionable
from kai_binder.clock import ManualClock

__all__ = [
    "RECOMMENDED_OPTIONS", "Binder", "BinderResult", "ManualClock", "add_binder_hookspecs", "is_actionable",
]
