"""Errors raised by the cluster store, shaped like the Kubernetes API's Status replies.

Both store backends raise these, so callers handle one set of exceptions whether they talk to the
embedded cluster or to a real API server.
"""

from __future__ import annotations

import re


class ApiError(Exception):
    """An API call failed. ``code`` is the HTTP status the API server would return."""

    code = 500
    reason = "InternalError"

    def __init__(self, message: str, *, code: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if reason is not None:
            self.reason = reason

    def status(self) -> dict:
        """The ``Status`` object the API server would send for this error."""
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


class BadRequest(ApiError):
    code = 400
    reason = "BadRequest"


class Forbidden(ApiError):
    """The request is understood but refused, e.g. new objects in a namespace being deleted."""

    code = 403
    reason = "Forbidden"


class NotFound(ApiError):
    code = 404
    reason = "NotFound"


class MethodNotAllowed(ApiError):
    """The operation is not supported here, e.g. creating objects of a CRD that is being deleted."""

    code = 405
    reason = "MethodNotAllowed"


class Conflict(ApiError):
    """A write lost a race (stale resourceVersion) or the object is already in the wanted state."""

    code = 409
    reason = "Conflict"


class AlreadyExists(Conflict):
    reason = "AlreadyExists"


class Gone(ApiError):
    """The requested resourceVersion is older than the watch history kept (relist needed)."""

    code = 410
    reason = "Expired"


class Invalid(ApiError):
    """The object failed validation (schema, CEL compilation, required fields)."""

    code = 422
    reason = "Invalid"


class UnsupportedMediaType(ApiError):
    """The request body is in a format the resource does not take, e.g. a strategic merge patch of
    a custom resource (the API server knows no merge keys for CRD kinds)."""

    code = 415
    reason = "UnsupportedMediaType"


class UnknownKind(ApiError):
    """No one serves this kind: neither Kubernetes built-ins we model, nor a CRD, nor a plugin."""

    code = 404
    reason = "NotFound"


class OutcomeUnknown(ApiError):
    """A write was sent but its outcome is unknown: the reply was cut (before the headers, after
    them, or mid-body), timed out after the request went out, or was a 5xx the server may have
    answered after storing the change. The caller must act as if the write may have happened
    (the scheduler counts the decision as taken until the watch shows what is there) and never
    as if it surely did not."""

    code = 503
    reason = "ServiceUnavailable"


#: values longer than this are cut in messages (a 1 MB CEL expression is not echoed whole)
MAX_VALUE_CHARS = 200


def shorten(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """``text`` when it is short, else its first ``limit`` characters, an ellipsis and its length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def short_repr(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    """``repr(value)`` for a message, cut as :func:`shorten` does (a long string shows its own
    length, not its repr's)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    return shorten(repr(value), limit)


_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):(?P<password>[^/\s@]*)@")


def redact_credentials(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``xxxxx``, as Go's
    ``url.URL.Redacted()`` prints a URL: ``https://user:pass@host`` -> ``https://user:xxxxx@host``.
    Used on every line kai-cli prints about a cluster (start-up lines, errors, log lines)."""
    if "@" not in text:
        return text
    return _URL_PASSWORD.sub(r"\g<head>:xxxxx@", text)
