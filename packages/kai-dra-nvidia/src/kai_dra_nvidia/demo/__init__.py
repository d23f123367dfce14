"""The demo cluster of KAI's DRA example, shipped as package data: the YAML files beside this module.

- ``00-deviceclasses.yaml``: NVIDIA's DeviceClasses (GPU, MIG, IMEX daemon, default IMEX channel).
- ``10-nodes.yaml``: four GB200 nodes ``gb200-node-1..4`` (72 CPUs, 480Gi, 4 GPUs each) in two
  NVLink cliques of two nodes (label ``nvidia.com/gpu.clique``).
- ``20-resourceslices.yaml``: per node, the ``compute-domain.nvidia.com`` slice (``channel-0``,
  ``daemon-0``) and the ``gpu.nvidia.com`` slice with four GPUs, shaped as the driver publishes them.
- ``30-computedomain.yaml``: the ComputeDomain ``imex-domain`` (template ``imex-channel-0``).
- ``40-gpu-imex-pod.yaml``: the pod ``gpu-imex-pod`` (one GPU plus the IMEX channel claim).

Loaded into the embedded cluster with the plugin installed, and scheduled with DRA on, it yields the
BindRequest KAI documents for this pod.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.resources
import shutil
import tempfile
from pathlib import Path

_EXTRACTED = contextlib.ExitStack()
atexit.register(_EXTRACTED.close)


@functools.cache
def demo_manifests_path() -> Path:
    """The directory holding the demo cluster's manifests; load it with ``EmbeddedCluster.load(path)``.

    From a zipped install the YAML files are copied once to a temporary directory kept until exit.
    """
    root = importlib.resources.files(__name__)
    if isinstance(root, Path):
        return root
    target = Path(_EXTRACTED.enter_context(tempfile.TemporaryDirectory(prefix="kai-nvidia-demo-")))
    for entry in root.iterdir():
        if entry.is_file() and entry.name.endswith(".yaml"):
            with importlib.resources.as_file(entry) as src:
                shutil.copy(src, target / entry.name)
    return target
