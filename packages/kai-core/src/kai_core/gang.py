"""Stable public name kept for plugins and tests written against earlier guides: the code lives in
:mod:`kai_core.framework.gang` (see docs/writing-a-device-plugin.md, "Where things are")."""

from kai_core.framework.gang import MAX_SUBSETS_TRIED, POD_GROUP_ANNOTATION, RES_POD_GROUPS, Gang, GroupSpec, NodeSubset  # noqa: F401
