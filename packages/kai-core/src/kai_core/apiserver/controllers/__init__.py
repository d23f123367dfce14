"""Controllers of the embedded cluster: what a real control plane would run, emulated in-process.

A controller has a ``name`` and ``reconcile(store)``, called every round; it must be idempotent
and write only when something must change.
"""
