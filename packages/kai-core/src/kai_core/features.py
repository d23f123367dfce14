"""Stable public name kept for plugins and tests written against earlier guides: the code lives in
:mod:`kai_core.api.features` (see docs/writing-a-device-plugin.md, "Where things are")."""

from kai_core.api.features import FeatureGateError, FeatureGates, dra_disabled_message  # noqa: F401
