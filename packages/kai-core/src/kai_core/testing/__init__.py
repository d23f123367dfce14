"""Test helpers for kai and its plugins: a fake Kubernetes API server serving the embedded store.

``from kai_core.testing import FakeApiServer``; pytest fixtures come with
``pytest_plugins = ["kai_core.testing.fixtures"]``. Nothing here imports the ``kubernetes`` client
until a helper that returns a client object is called.
"""

from kai_core.testing.apiserver import COMPACTION_MARKER, SERVER_VERSION, FakeApiServer, RequestRecord

__all__ = ["COMPACTION_MARKER", "SERVER_VERSION", "FakeApiServer", "RequestRecord"]
