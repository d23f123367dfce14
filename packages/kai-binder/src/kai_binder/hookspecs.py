"""Extension points of the binder (same ``kai`` marker and entry-point group as the scheduler's).

Every hook receives the same arguments; an implementation may accept any subset of them:

- ``bind_request``: the BindRequest being carried out (a dict; do not mutate it);
- ``pod``: the pod, as read at the start of the attempt. In ``kai_binder_rollback`` it may be a stub
  holding only ``metadata.name``, ``namespace`` and ``uid`` when the pod is gone;
- ``node_name``: ``spec.selectedNode``;
- ``store``: the cluster store (rate-limited like every call of the binder);
- ``features``: the binder's :class:`kai_core.api.features.FeatureGates`.

Order of one attempt: ``kai_binder_pre_bind`` of every plugin (the built-in DRA claim step first,
then the others in pluggy's order), pods/binding, ``kai_binder_post_bind``, status. When an attempt
fails, ``kai_binder_rollback`` runs for **every** plugin, in the reverse of the pre-bind order.

Error isolation is the scheduler's: each implementation is called on its own, and an exception
becomes a :class:`kai_core.framework.plugins.PluginError` naming the plugin and the hook (its traceback is
logged once); it never reaches the binder's loop. The binder calls these hooks only through
:class:`kai_binder.hooks.BinderHooks`, one typed method per hook.

Crash safety: a binder may be killed at any moment and restarted, so a hook may be called again for
the same BindRequest, and ``kai_binder_rollback`` may be called although this process never called
the plugin's ``kai_binder_pre_bind`` (an earlier process may have). Implementations must therefore
be idempotent and undo what they find, not what they remember.
"""

from __future__ import annotations

from kai_core.framework.hookspecs import hookspec


class NotReady(Exception):
    """Returned (or raised) by a ``kai_binder_pre_bind`` that waits on the cluster (a volume being
    provisioned): the attempt is left for later, as after an API failure whose outcome is unknown,
    with nothing rolled back and no attempt counted; the message says what it waits for. The plugin
    bounds the wait itself (then raises any other exception to fail the attempt). Returning it is
    quieter: a raised exception's traceback is logged the first time."""


class BinderSpecs:
    @hookspec
    def kai_binder_pre_bind(self, bind_request, pod, node_name, store, features):
        """Called once per attempt, before pods/binding; prepare what the pod needs on the node.

        Raise to fail the attempt: the binder rolls back and sets the BindRequest ``Failed`` with a
        reason naming the plugin and the error (a retry follows while ``backoffLimit`` allows). The
        first plugin that raises stops the pre-bind. Return (or raise) :class:`NotReady` to have the
        attempt tried again later instead. Any other return value is ignored."""

    @hookspec
    def kai_binder_post_bind(self, bind_request, pod, node_name, store, features):
        """Called after the pod was bound. Best effort: an error is logged and the bind stands. Not
        called again when a restarted binder finds the pod already bound."""

    @hookspec
    def kai_binder_rollback(self, bind_request, pod, node_name, store, features):
        """Called when an attempt fails (for every plugin, reverse pre-bind order): undo what this
        plugin's pre-bind left for this pod, if anything. Raise an ``ApiError`` with a 5xx code (or
        an ``OSError``) when the cluster did not let the undo finish: the binder then leaves the
        BindRequest as it is and tries the whole attempt again later. Any other exception is logged
        and the rollback goes on."""
