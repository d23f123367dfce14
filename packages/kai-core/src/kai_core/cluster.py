"""The embedded cluster: an embedded API server with our CRDs and plugins' kinds installed, the
embedded controllers, and manifests loaded from files. What ``kai-cli run`` uses when no
kubeconfig is given, and what the tests run against.

This module puts the layers together (the API server below, the plugins above), so nothing inside
the layers imports it.
"""

from __future__ import annotations

import logging
import os

from kai_core.api.crds import builtin_crd_paths, load_crd
from kai_core.apiserver.controllers.resourceclaim import ResourceClaimController
from kai_core.apiserver.manifests import apply_manifests, read_manifests
from kai_core.apiserver.store import EmbeddedStore
from kai_core.framework.plugins import KaiPluginManager
from kai_core.plugins.queues import QueueStatusController

log = logging.getLogger("kai.cluster")


def builtin_crds() -> list[dict]:
    return [load_crd(p) for p in builtin_crd_paths()]


def plugin_crds(pm: KaiPluginManager) -> list[dict]:
    return [crd for _plugin, crd in pm.resource_kinds()]


class EmbeddedCluster:
    def __init__(self, pm: KaiPluginManager) -> None:
        self.pm = pm
        self.store = EmbeddedStore()
        for crd in builtin_crds() + plugin_crds(pm):
            self.store.restore(crd)
        # KAI's queue controller: Queue status from the pods, DRA devices valued by the plugins
        queues = QueueStatusController(worth=pm.device_gpu_worth)
        self.controllers = [ResourceClaimController(), queues, *pm.embedded_controllers(self.store)]

    def load(self, path: str | os.PathLike) -> list[dict]:
        """Load manifests from a file or directory; raises ManifestError naming file and object."""
        return apply_manifests(self.store, read_manifests(path))

    def reconcile_controllers(self) -> None:
        """One round of every embedded controller; a failing controller is logged, not fatal."""
        for c in self.controllers:
            try:
                c.reconcile(self.store)
            except Exception:  # a controller bug must not stop the cluster
                log.exception("embedded controller %s failed", getattr(c, "name", c))
