"""Files shipped inside the package: the ComputeDomain CRD and the demo cluster's manifests.

Both are found with importlib.resources, so they work from an installed wheel as well as from a
source checkout.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.resources
import shutil
import tempfile
from pathlib import Path

from kai_core.schema import crd_path, load_crd

PACKAGE = "kai_dra_nvidia"
COMPUTE_DOMAIN_CRD = "computedomains.resource.nvidia.com"

_EXTRACTED = contextlib.ExitStack()
atexit.register(_EXTRACTED.close)


@functools.cache
def compute_domain_crd() -> dict:
    """NVIDIA's ComputeDomain CustomResourceDefinition as kai serves it (parsed once; do not mutate).

    Raises :class:`kai_core.schema.SchemaError` naming the file if the shipped CRD is broken.
    """
    return load_crd(crd_path(COMPUTE_DOMAIN_CRD, package=PACKAGE))


@functools.cache
def demo_manifests_path() -> Path:
    """The directory of the demo cluster: NVIDIA DeviceClasses, four GB200 nodes in two NVLink
    cliques with their GPU and ComputeDomain ResourceSlices, the ComputeDomain ``imex-domain`` and
    the pod ``gpu-imex-pod`` of KAI's DRA example. Load it with ``EmbeddedCluster.load(path)``."""
    root = importlib.resources.files(PACKAGE) / "demo"
    if isinstance(root, Path):
        return root
    # installed in a zip: copy the files out once, keep them until exit
    target = Path(_EXTRACTED.enter_context(tempfile.TemporaryDirectory(prefix="kai-nvidia-demo-")))
    for entry in root.iterdir():
        if entry.is_file():
            with importlib.resources.as_file(entry) as src:
                shutil.copy(src, target / entry.name)
    return target
