"""The ComputeDomain CRD shipped in ``crds/``, found with importlib.resources so that it loads from an
installed wheel as well as from a source checkout."""

from __future__ import annotations

import functools

from kai_core.apiserver.schema import crd_path, load_crd

PACKAGE = "kai_dra_nvidia"
COMPUTE_DOMAIN_CRD = "computedomains.resource.nvidia.com"


@functools.cache
def compute_domain_crd() -> dict:
    """NVIDIA's ComputeDomain CustomResourceDefinition as kai serves it (parsed once; do not mutate).

    Raises :class:`kai_core.apiserver.schema.SchemaError` naming the file if the shipped CRD is broken.
    """
    return load_crd(crd_path(COMPUTE_DOMAIN_CRD, package=PACKAGE))
