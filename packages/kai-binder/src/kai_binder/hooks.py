"""The binder's hooks, called through one typed method each (as the scheduler's
:class:`kai_core.framework.plugins.KaiPluginManager` does for its own hooks).

:func:`add_binder_hookspecs` teaches a plugin manager the hooks of :mod:`kai_binder.hookspecs`
and registers the built-in DRA claim step and volume step (:mod:`kai_binder.volumes`);
:class:`BinderHooks` is the only place that calls them.
Each method calls every implementation on its own (``pm.call_impl``: an exception becomes a
:class:`kai_core.framework.plugins.PluginError` naming the plugin and the hook, logged once),
checks what came back once, and hands the binder a plain answer:

- :meth:`BinderHooks.pre_bind`: a :class:`kai_core.framework.status.Status`, success or the
  error of the first plugin that raised (the built-in DRA and volume steps' own message when
  they refuse a claim, the plugin and hook named otherwise); a plugin's
  :class:`~kai_binder.hookspecs.NotReady` is raised on to the binder, which tries again later;
- :meth:`BinderHooks.post_bind`: nothing (best effort, errors are logged);
- :meth:`BinderHooks.rollback`: whether every rollback finished (False when one was stopped by
  the API: the attempt is then left for later).

Order: the built-in DRA step first, then the others in pluggy's order; rollback in the reverse
of that. Implementations are looked up at each call, so plugins registered after the binder was
built take part.
"""

from __future__ import annotations

from kai_binder.claims import ClaimBindError, is_transient
from kai_binder.dra import PLUGIN_NAME as DRA_PLUGIN_NAME
from kai_binder.dra import DraClaimsPlugin
from kai_binder.hookspecs import BinderSpecs, NotReady
from kai_binder.volumes import PLUGIN_NAME as VOLUMES_PLUGIN_NAME
from kai_binder.volumes import VolumeBindError, VolumeBindingPlugin
from kai_core.api.features import FeatureGates
from kai_core.framework.plugins import KaiPluginManager, PluginError
from kai_core.framework.status import SUCCESS, Status

PRE_BIND = "kai_binder_pre_bind"
#: built-in steps whose refusals are worded for the user already (they name the claim)
_OWN_WORDS = (DRA_PLUGIN_NAME, VOLUMES_PLUGIN_NAME)
POST_BIND = "kai_binder_post_bind"
ROLLBACK = "kai_binder_rollback"


def add_binder_hookspecs(pm: KaiPluginManager) -> None:
    """Teach ``pm`` the binder's hooks and register the binder's built-in plugins (the DRA claim
    step); calling it again changes nothing."""
    if not hasattr(pm.hook, PRE_BIND):
        pm.add_hookspecs(BinderSpecs)
    if not pm.has_plugin(DRA_PLUGIN_NAME):
        pm.register_builtin(DraClaimsPlugin(), DRA_PLUGIN_NAME, distribution="kai-binder")
    if not pm.has_plugin(VOLUMES_PLUGIN_NAME):
        pm.register_builtin(VolumeBindingPlugin(), VOLUMES_PLUGIN_NAME, distribution="kai-binder")


class BinderHooks:
    """One typed method per binder hook over ``pm``; every hook gets ``store`` (the binder's,
    rate-limited) and ``features`` besides the BindRequest, the pod and the node name."""

    def __init__(self, pm: KaiPluginManager, store: object, features: FeatureGates) -> None:
        add_binder_hookspecs(pm)
        self.pm = pm
        self.store = store
        self.features = features

    def pre_bind(self, br: dict, pod: dict, node: str) -> Status:
        """``kai_binder_pre_bind`` of every plugin in order, stopping at the first that raises:
        success, or an error Status whose message is the attempt's reason."""
        kwargs = self._kwargs(br, pod, node)
        for impl in self._ordered(PRE_BIND):
            res = self.pm.call_impl(impl, PRE_BIND, kwargs)
            if isinstance(res, NotReady):  # returned rather than raised: no traceback logged
                raise res
            if isinstance(res, PluginError):  # any other result is ignored (the hook returns nothing)
                if isinstance(res.original, NotReady):
                    raise res.original
                if isinstance(res.original, ClaimBindError | VolumeBindError) and impl.plugin_name in _OWN_WORDS:
                    return Status.error(str(res.original), impl.plugin_name)
                return Status.error(str(res), impl.plugin_name)
        return SUCCESS

    def post_bind(self, br: dict, pod: dict, node: str) -> None:
        """``kai_binder_post_bind`` of every plugin in order; best effort (the manager logs errors)."""
        kwargs = self._kwargs(br, pod, node)
        for impl in self._ordered(POST_BIND):
            self.pm.call_impl(impl, POST_BIND, kwargs)

    def rollback(self, br: dict, pod: dict, node: str) -> bool:
        """``kai_binder_rollback`` of every plugin, in reverse pre-bind order; False when one could
        not finish because of the API (an ``ApiError`` 5xx or an ``OSError``), True otherwise (any
        other failure is logged by the manager and the rollback goes on)."""
        kwargs = self._kwargs(br, pod, node)
        complete = True
        for impl in reversed(self._ordered(ROLLBACK)):
            res = self.pm.call_impl(impl, ROLLBACK, kwargs)
            if isinstance(res, PluginError) and res.original is not None and is_transient(res.original):
                complete = False
        return complete

    def _ordered(self, hook: str) -> list:
        """``hook``'s implementations in call order, the binder's built-in DRA step first."""
        return sorted(self.pm.implementations(hook), key=lambda i: i.plugin_name != DRA_PLUGIN_NAME)

    def _kwargs(self, br: dict, pod: dict, node: str) -> dict:
        return {"bind_request": br, "pod": pod, "node_name": node, "store": self.store,
                "features": self.features}
