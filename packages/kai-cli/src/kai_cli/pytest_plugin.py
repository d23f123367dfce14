"""pytest fixtures for testing kai plugins, loaded by pytest through kai-cli's ``pytest11`` entry
point (nothing to add to a conftest once kai-cli is installed):

- ``kai_cluster(*manifests, plugins={name: plugin}, gates=..., score_weights=...)`` -> a loaded
  :class:`~kai_cli.testing.EmbeddedKaiCluster`; ``.run()`` schedules and binds until idle;
- ``kai_live_cluster(*manifests, plugins={name: plugin})`` -> a
  :class:`~kai_cli.testing.LiveKaiCluster` behind the fake API server; ``.start()`` runs the
  scheduler and the binder components against it; with ``processes=True,
  require_plugins=[...]``, ``kai-cli run scheduler|binder`` as processes (installed plugins only).

Both are closed after the test. This module imports only pytest: it is loaded into every pytest
run where kai-cli is installed, and what the fixtures need is imported when one is used.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def kai_cluster():
    """``kai_cluster(*manifests, plugins=None, gates="DynamicResourceAllocation=true",
    scheduler_name="kai-scheduler", score_weights=None, binder=True, installed_plugins=True)``:
    manifests (paths, YAML text, dicts) in an embedded cluster with kai's scheduler and binder and
    your ``plugins`` ({name: plugin object}); see :class:`kai_cli.testing.EmbeddedKaiCluster`."""
    from kai_cli.testing import EmbeddedKaiCluster, close_all

    made: list[EmbeddedKaiCluster] = []

    def make(*manifests, **kw) -> EmbeddedKaiCluster:
        made.append(EmbeddedKaiCluster(*manifests, **kw))
        return made[-1]

    yield make
    close_all(made)


@pytest.fixture
def kai_live_cluster(tmp_path):
    """``kai_live_cluster(*manifests, plugins=None, processes=False, require_plugins=())``: the
    manifests behind kai's fake Kubernetes API server; ``.start()`` runs kai's scheduler and binder
    components against it over HTTP (with your ``plugins``), ``.wait_bound("pod")`` waits for pods.
    ``processes=True`` runs ``kai-cli run scheduler`` and ``kai-cli run binder`` as processes
    instead, with a ``--require-plugin`` for each of ``require_plugins``: they load installed
    plugins only (``pip install -e .`` yours), and they are stopped with SIGTERM after the test
    (killed if they do not stop). See :class:`kai_cli.testing.LiveKaiCluster`. Needs the
    ``kubernetes`` client (a kai-core dependency)."""
    from kai_cli.testing import LiveKaiCluster, close_all

    made: list[LiveKaiCluster] = []

    def make(*manifests, **kw) -> LiveKaiCluster:
        made.append(LiveKaiCluster(tmp_path / f"live-{len(made)}", *manifests, **kw))
        return made[-1]

    yield make
    close_all(made)
