"""BinderHooks: one typed method per binder hook, each checking its answers once."""

from __future__ import annotations

import pytest

from kai_binder.claims import ClaimBindError
from kai_binder.dra import PLUGIN_NAME as DRA_PLUGIN_NAME
from kai_binder.hooks import BinderHooks, add_binder_hookspecs
from kai_binder.hookspecs import NotReady
from kai_binder.volumes import PLUGIN_NAME as VOLUMES_PLUGIN_NAME
from kai_core.api.errors import ApiError
from kai_core.api.features import FeatureGates
from kai_core.framework.hookspecs import hookimpl
from kai_core.framework.plugins import KaiPluginManager
from kai_core.framework.status import Code

BR = {"metadata": {"name": "br", "namespace": "default", "uid": "u-br"},
      "spec": {"podName": "p", "selectedNode": "n1"}}
POD = {"metadata": {"name": "p", "namespace": "default", "uid": "u-p"}, "spec": {}}
STORE = object()
GATES = FeatureGates()


class Step:
    """A binder plugin recording its calls; ``fail`` maps a hook to the exception it raises."""

    def __init__(self, name: str, calls: list, **fail: BaseException) -> None:
        self.name, self.calls, self.fail = name, calls, fail

    def _call(self, hook: str):
        self.calls.append((self.name, hook))
        if hook in self.fail:
            raise self.fail[hook]
        return "ignored"  # every binder hook's return value is ignored

    @hookimpl
    def kai_binder_pre_bind(self, bind_request, pod, node_name, store, features):
        assert (bind_request, pod, node_name, store, features) == (BR, POD, "n1", STORE, GATES)
        return self._call("pre_bind")

    @hookimpl
    def kai_binder_post_bind(self, pod):
        return self._call("post_bind")

    @hookimpl
    def kai_binder_rollback(self, pod):
        return self._call("rollback")


@pytest.fixture
def hooks():
    pm = KaiPluginManager()
    return BinderHooks(pm, STORE, GATES)


def test_the_hookspecs_and_the_dra_and_volume_steps_are_added_once():
    pm = KaiPluginManager()
    BinderHooks(pm, STORE, GATES)
    add_binder_hookspecs(pm)
    assert [i.name for i in pm.info()] == [DRA_PLUGIN_NAME, VOLUMES_PLUGIN_NAME]
    assert hasattr(pm.hook, "kai_binder_post_bind")


def test_pre_bind_succeeds_when_nobody_raises_and_ignores_answers(hooks):
    calls: list = []
    hooks.pm.register(Step("a", calls), name="a")  # registered after the hooks were built
    assert hooks.pre_bind(BR, POD, "n1").ok
    hooks.post_bind(BR, POD, "n1")
    assert hooks.rollback(BR, POD, "n1") is True
    assert calls == [("a", "pre_bind"), ("a", "post_bind"), ("a", "rollback")]


def test_pre_bind_stops_at_the_first_failure_naming_it(hooks):
    calls: list = []
    hooks.pm.register(Step("a", calls), name="a")
    hooks.pm.register(Step("b", calls, pre_bind=RuntimeError("no room")), name="b")
    status = hooks.pre_bind(BR, POD, "n1")
    assert status.code is Code.ERROR and status.plugin == "b"
    assert status.message == "plugin 'b' failed in kai_binder_pre_bind: RuntimeError: no room"
    assert calls == [("b", "pre_bind")]  # the later registered first (pluggy's order)
    hooks.rollback(BR, POD, "n1")
    assert calls[1:] == [("a", "rollback"), ("b", "rollback")]  # the reverse of pre-bind


@pytest.mark.parametrize("raised", [False, True])
def test_a_step_that_waits_on_the_cluster_is_handed_to_the_binder_as_not_ready(hooks, raised):
    class Waiting:
        @hookimpl
        def kai_binder_pre_bind(self):
            why = NotReady("waiting for the volume")
            if raised:
                raise why
            return why

    calls: list = []
    hooks.pm.register(Step("first", calls), name="first")
    hooks.pm.register(Waiting(), name="waiting")
    with pytest.raises(NotReady, match="waiting for the volume"):
        hooks.pre_bind(BR, POD, "n1")
    assert calls == []  # it stops the pre-bind like a failure, but nothing is reported failed


def test_the_dra_steps_refusal_is_its_own_message_and_it_runs_first(hooks):
    class Refusing:
        @hookimpl(tryfirst=True)
        def kai_binder_pre_bind(self):
            raise ClaimBindError('claim "c" is reserved for another pod')

    pm = KaiPluginManager()
    calls: list = []
    pm.register(Step("late", calls), name="late")
    pm.register(Refusing(), name=DRA_PLUGIN_NAME)  # the binder's step under its name
    status = BinderHooks(pm, STORE, GATES).pre_bind(BR, POD, "n1")
    assert status.message == 'claim "c" is reserved for another pod' and status.plugin == DRA_PLUGIN_NAME
    assert calls == []
    # from any other plugin the same error is named
    hooks.pm.register(Refusing(), name="other")
    assert hooks.pre_bind(BR, POD, "n1").message.startswith("plugin 'other' failed in kai_binder_pre_bind")


def test_post_bind_failures_are_logged_and_do_not_stop_the_others(hooks, caplog):
    calls: list = []
    hooks.pm.register(Step("a", calls), name="a")
    hooks.pm.register(Step("b", calls, post_bind=RuntimeError("broke")), name="b")
    assert hooks.post_bind(BR, POD, "n1") is None
    assert calls == [("b", "post_bind"), ("a", "post_bind")]
    assert "plugin 'b' failed in kai_binder_post_bind: RuntimeError: broke" in caplog.text


@pytest.mark.parametrize(("exc", "complete"), [
    (ApiError("etcd is away", code=503), False),
    (OSError("connection reset"), False),
    (ClaimBindError("cannot list claims", transient=True), False),
    (ClaimBindError("not ours"), True),
    (ApiError("no", code=422), True),
    (ValueError("a bug"), True),
])
def test_rollback_goes_on_and_reports_whether_the_api_let_it_finish(hooks, exc, complete):
    calls: list = []
    hooks.pm.register(Step("a", calls), name="a")
    hooks.pm.register(Step("b", calls, rollback=exc), name="b")
    assert hooks.rollback(BR, POD, "n1") is complete
    assert calls == [("a", "rollback"), ("b", "rollback")]


def test_a_misspelt_binder_hook_is_refused_once_the_binders_hooks_are_known():
    """A plugin registered before the binder's hook specs are added is checked again then: a
    misspelt ``kai_binder_*`` hook is refused, naming the closest real one."""
    import types

    from kai_core.plugins import build_plugin_manager

    @hookimpl
    def misspelt(bind_request, pod):
        return None

    pm = build_plugin_manager(load_external=False)
    module = types.ModuleType("m")
    module.kai_binder_pre_bnd = misspelt
    pm.register(module, name="late")
    assert pm.has_plugin("late")  # the binder's hooks are not known yet
    add_binder_hookspecs(pm)
    assert not pm.has_plugin("late")
    [err] = pm.load_errors
    assert err.error == ("plugin 'late' refused: kai_binder_pre_bnd is not a kai hook "
                         "(did you mean kai_binder_pre_bind?); it would never be called")
