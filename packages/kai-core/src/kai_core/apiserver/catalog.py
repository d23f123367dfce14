"""The built-in kinds the embedded API server serves, with their validation attached.

:func:`kai_core.api.kinds.builtin_kinds` says what a kind is (group, versions, scope, converters);
this module adds what the API server checks on create and update (:mod:`kai_core.apiserver.validation`).
"""

from __future__ import annotations

from kai_core.api.kinds import ResourceKind, builtin_kinds
from kai_core.apiserver import priority
from kai_core.apiserver.validation import STATUS_VALIDATORS, UPDATE_VALIDATORS, VALIDATORS
from kai_core.apiserver.volume_validation import VOLUME_UPDATE_VALIDATORS, VOLUME_VALIDATORS


def served_kinds() -> list[ResourceKind]:
    """Every built-in kind with its create, update and status-write validators."""
    kinds = builtin_kinds()
    for k in kinds:
        k.validate = VALIDATORS.get((k.group, k.kind)) or VOLUME_VALIDATORS.get((k.group, k.kind))
        k.validate_update = UPDATE_VALIDATORS.get((k.group, k.kind)) or VOLUME_UPDATE_VALIDATORS.get((k.group, k.kind))
        k.validate_status = STATUS_VALIDATORS.get((k.group, k.kind))
        if k.resource == priority.RESOURCE:
            k.validate = priority.validate_priority_class
            k.validate_update = priority.validate_priority_class_update
            k.defaults = priority.default_priority_class
    return kinds
