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


#: KAI's workload PriorityClasses (name, value), as KAI-Scheduler's Helm chart and ours
#: (deploy/helm/kai-scheduler, defaultPriorityClasses) install them: below 100 a workload is preemptible
KAI_PRIORITY_CLASSES = (("train", 50), ("build-preemptible", 75), ("build", 100), ("inference", 125))


def kai_priority_classes() -> list[dict]:
    """The PriorityClass objects of :data:`KAI_PRIORITY_CLASSES`."""
    return [{"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
             "value": value} for name, value in KAI_PRIORITY_CLASSES]


class EmbeddedCluster:
    """kai as the chart installs it, on an embedded API server: our CRDs and the plugins' kinds,
    KAI's PriorityClasses (so pods may name ``train`` or ``inference`` as on a real cluster; a
    manifest defining one of them replaces it), and the embedded controllers. The chart's default
    queues are not objects here: the scheduler assumes them while no Queue of that name exists."""

    def __init__(self, pm: KaiPluginManager) -> None:
        self.pm = pm
        self.store = EmbeddedStore()
        for crd in builtin_crds() + plugin_crds(pm):
            self.store.restore(crd)
        for pc in kai_priority_classes():
            self.store.restore(pc)
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
