"""Stable public name kept for plugins and tests written against earlier guides: the code lives in
:mod:`kai_core.apiserver.manifests` (see docs/writing-a-device-plugin.md, "Where things are")."""

from kai_core.apiserver.manifests import ManifestError, apply_manifests, dump_objects, read_manifests, save_state  # noqa: F401
