"""Extension points of the binder (same ``kai`` marker and entry-point group as the scheduler's).

Binder hooks run while a BindRequest is reconciled: ``kai_binder_pre_bind`` before the pod is
bound (an exception aborts the attempt and rolls back), ``kai_binder_post_bind`` after (best
effort), ``kai_binder_rollback`` when an attempt fails, to undo what the plugin's pre-bind did.
"""

from __future__ import annotations

from kai_core.hookspecs import hookspec


class BinderSpecs:
    @hookspec
    def kai_binder_pre_bind(self, bind_request, pod, store):
        """Called once per attempt before pods/binding. Raise to fail the attempt (the message
        becomes the BindRequest's ``status.reason``)."""

    @hookspec
    def kai_binder_post_bind(self, bind_request, pod, store):
        """Called after the pod was bound. Errors are logged; the bind stands."""

    @hookspec
    def kai_binder_rollback(self, bind_request, pod, store):
        """Called when an attempt failed after pre-bind; undo this plugin's pre-bind writes."""
