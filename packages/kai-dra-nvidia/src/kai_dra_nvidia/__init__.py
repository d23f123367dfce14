"""kai's plugin for NVIDIA's DRA driver (``gpu.nvidia.com`` and ``compute-domain.nvidia.com``).

The scheduler loads it through the ``kai_scheduler.plugins`` entry point (:mod:`kai_dra_nvidia.plugin`).
This package also ships the ComputeDomain CRD and a demo cluster (:func:`demo_manifests_path`).
"""

from __future__ import annotations

from kai_dra_nvidia.data import compute_domain_crd
from kai_dra_nvidia.demo import demo_manifests_path

__all__ = ["compute_domain_crd", "demo_manifests_path"]
