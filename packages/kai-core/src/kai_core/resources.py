"""Resource names and the arithmetic of pod requests against node allocatable."""

from __future__ import annotations

from kai_core.quantity import QuantityError, to_milli

RES_NAMESPACES = "namespaces"
RES_NODES = "nodes"
RES_PODS = "pods"
RES_EVENTS = "events"
RES_BIND_REQUESTS = "bindrequests.scheduling.run.ai"
RES_CLAIMS = "resourceclaims.resource.k8s.io"
RES_CLAIM_TEMPLATES = "resourceclaimtemplates.resource.k8s.io"
RES_SLICES = "resourceslices.resource.k8s.io"
RES_DEVICE_CLASSES = "deviceclasses.resource.k8s.io"

#: KAI's BindRequest reports whole GPUs of this extended resource in ``spec.receivedGPU``; it is
#: part of KAI's API contract (the BindRequest CRD), not of any device driver.
GPU_RESOURCE = "nvidia.com/gpu"


def _milli(value) -> int:
    try:
        return to_milli(value)
    except QuantityError:
        return 0


def pod_requests(pod: dict) -> dict[str, int]:
    """Effective requests of a pod in milli-units, as kube-scheduler computes them.

    Sum over containers (a request defaults to its limit), max with each init container, plus
    the pod overhead. ``pods`` is not included (every pod takes one).
    """
    spec = pod.get("spec") or {}
    total: dict[str, int] = {}
    for c in spec.get("containers") or []:
        for name, v in _container_requests(c).items():
            total[name] = total.get(name, 0) + v
    for c in spec.get("initContainers") or []:
        for name, v in _container_requests(c).items():
            if v > total.get(name, 0):
                total[name] = v
    for name, q in (spec.get("overhead") or {}).items():
        total[name] = total.get(name, 0) + _milli(q)
    return {k: v for k, v in total.items() if v}


def _container_requests(c: dict) -> dict[str, int]:
    res = c.get("resources") or {}
    limits = res.get("limits") or {}
    requests = dict(limits)
    requests.update(res.get("requests") or {})
    return {name: _milli(q) for name, q in requests.items()}


def node_allocatable(node: dict) -> dict[str, int]:
    status = node.get("status") or {}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    return {name: _milli(q) for name, q in alloc.items()}


def gpu_count(requests: dict[str, int]) -> int:
    """Whole GPUs of :data:`GPU_RESOURCE` in a ``pod_requests`` result."""
    return requests.get(GPU_RESOURCE, 0) // 1000
