"""Stable public name kept for plugins and tests written against earlier guides: the code lives in
:mod:`kai_core.framework.snapshot` (see docs/writing-a-device-plugin.md, "Where things are")."""

from kai_core.framework.snapshot import ClaimAllocation, NodeInfo, PodClaim, Snapshot, claim_name_for  # noqa: F401
