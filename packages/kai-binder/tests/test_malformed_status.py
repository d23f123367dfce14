"""A BindRequest whose status or spec is not a mapping (the CRD schema refuses one; a store that
does not validate may still hold it) is judged, not raised on: the binder still has work on it."""

from __future__ import annotations

import pytest

from kai_binder.index import is_actionable
from kai_core.api.bindrequest import failed_attempts, failed_for_good


@pytest.mark.parametrize("status", ["x", 3, ["Failed"]])
def test_a_malformed_status_is_no_verdict(status):
    br = {"metadata": {"name": "b", "namespace": "default"}, "spec": "y", "status": status}
    assert failed_attempts(br) == 0
    assert failed_for_good(br) is False
    assert is_actionable(br) is True


def test_well_formed_requests_are_judged_as_before():
    failed = {"metadata": {"name": "b"}, "spec": {"backoffLimit": 2},
              "status": {"phase": "Failed", "failedAttempts": 2}}
    assert failed_for_good(failed) and not is_actionable(failed)
    retry = {**failed, "status": {"phase": "Failed", "failedAttempts": 1}}
    assert not failed_for_good(retry) and is_actionable(retry)
    done = {**failed, "status": {"phase": "Succeeded"}}
    assert not is_actionable(done)
    no_limit = {"metadata": {"name": "b"}, "spec": "bad", "status": {"phase": "Failed"}}
    assert failed_for_good(no_limit)  # without a valid backoffLimit a Failed request is never retried
