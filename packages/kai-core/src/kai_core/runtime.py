"""Interpreter settings for a long-running scheduler or binder process.

CPython's cyclic garbage collector runs a young-generation pass every 700 net allocations, and
every so often a full pass over every live object. A scheduler holds a whole cluster's objects
(hundreds of thousands of dicts) and allocates at a high rate while deciding, so with the defaults
it spends a large share of its time walking objects that are not garbage: Kubernetes objects are
trees of dicts and lists, freed by reference counting the moment they are dropped, and almost
never form cycles.

:func:`tune_gc` raises the thresholds so the collector runs over a hundred times less often.
Garbage without cycles is still freed at once; cycles are still collected, later. Measured with
``kai-cli bench --scenario dra`` (500 nodes, 4,000 DRA pods): 863 pods/s with the defaults, 1,215
pods/s tuned, peak memory unchanged (also for the 100,000-pod memory scenario).
"""

from __future__ import annotations

import gc

#: young-generation threshold (CPython's default is 700) and the two older ones (default 10, 10)
GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> None:
    """Make the cyclic garbage collector run less often (:data:`GC_THRESHOLDS`)."""
    gc.set_threshold(*GC_THRESHOLDS)
