"""Resource names and the arithmetic of pod requests against node allocatable.

Amounts are integers in milli-units (``"1500m"`` cpu -> 1500, ``"1Gi"`` memory -> 1073741824000), so
they add and compare exactly.
"""

from __future__ import annotations

from functools import lru_cache

from kai_core.api.quantity import QuantityError, to_milli

RES_NAMESPACES = "namespaces"
RES_NODES = "nodes"
RES_PODS = "pods"
RES_EVENTS = "events"
RES_BIND_REQUESTS = "bindrequests.scheduling.run.ai"
RES_CLAIMS = "resourceclaims.resource.k8s.io"
RES_CLAIM_TEMPLATES = "resourceclaimtemplates.resource.k8s.io"
RES_SLICES = "resourceslices.resource.k8s.io"
RES_DEVICE_CLASSES = "deviceclasses.resource.k8s.io"
RES_PVS = "persistentvolumes"
RES_PVCS = "persistentvolumeclaims"
RES_STORAGE_CLASSES = "storageclasses.storage.k8s.io"
#: KAI's PodGroup kind
RES_POD_GROUPS = "podgroups.scheduling.run.ai"
POD_GROUP_API_VERSION = "scheduling.run.ai/v2alpha2"
#: KAI's Queue kind (cluster-scoped)
RES_QUEUES = "queues.scheduling.run.ai"
QUEUE_API_VERSION = "scheduling.run.ai/v2"

#: KAI's BindRequest reports whole GPUs of this extended resource in ``spec.receivedGPU``; it is
#: part of KAI's API contract (the BindRequest CRD), not of any device driver.
GPU_RESOURCE = "nvidia.com/gpu"


#: pod phases after which a pod holds no node resources any more
TERMINAL_PHASES = ("Succeeded", "Failed")


def is_active_pod(pod: dict) -> bool:
    """Whether the pod still holds (or will hold) node resources: it has not Succeeded or Failed."""
    status = pod.get("status")
    return not isinstance(status, dict) or status.get("phase") not in TERMINAL_PHASES


@lru_cache(maxsize=4096)
def _milli_cached(value: str | int | float) -> int:
    try:
        return to_milli(value)
    except QuantityError:
        return 0


def _milli(value) -> int:
    """Milli-units of a quantity; a malformed one counts as 0 (the API server refuses those on
    write, so only hand-made objects can carry one). Parsing is memoized: a cluster uses few
    distinct quantity strings and parsing one exactly costs microseconds."""
    try:
        return _milli_cached(value)
    except TypeError:  # unhashable: not a quantity at all
        return 0


def pod_requests(pod: dict) -> dict[str, int]:
    """Effective requests of a pod in milli-units, as kube-scheduler computes them.

    - containers: summed; a resource without a request uses its limit;
    - init containers run one after the other, so the pod needs the largest of them, except
      restartable ones (sidecars, ``restartPolicy: Always``), which keep running: they add to the
      containers' sum and to every later init container;
    - pod-level ``spec.resources`` (requests, else limits), where given, replaces the containers'
      total for those resources;
    - ``spec.overhead`` is added on top.

    Zero amounts are left out, and ``pods`` is not included (every pod takes one slot).
    """
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return {}
    containers = spec.get("containers") or []
    if not isinstance(containers, list):
        containers = []
    if len(containers) == 1 and not (spec.get("initContainers") or spec.get("resources") or spec.get("overhead")):
        # most pods: one container and nothing else to fold in (this runs once per pod event)
        return {k: v for k, v in _container_requests(containers[0]).items() if v}
    total: dict[str, int] = {}
    for c in containers:
        add_amounts(total, _container_requests(c))
    sidecars: dict[str, int] = {}
    init_peak: dict[str, int] = {}
    init_containers = spec.get("initContainers") or []
    for c in init_containers if isinstance(init_containers, list) else []:
        req = _container_requests(c)
        if isinstance(c, dict) and c.get("restartPolicy") == "Always":
            add_amounts(total, req)
            add_amounts(sidecars, req)
            needed = dict(sidecars)
        else:
            needed = dict(req)
            add_amounts(needed, sidecars)
        for name, v in needed.items():
            if v > init_peak.get(name, 0):
                init_peak[name] = v
    for name, v in init_peak.items():
        if v > total.get(name, 0):
            total[name] = v
    pod_level = _container_requests(spec)
    total.update(pod_level)
    overhead = spec.get("overhead") or {}
    for name, q in overhead.items() if isinstance(overhead, dict) else ():
        total[name] = total.get(name, 0) + _milli(q)
    return {k: v for k, v in total.items() if v}


def add_amounts(total: dict[str, int], more: dict[str, int]) -> None:
    """Add ``more`` into ``total``, resource by resource."""
    for name, v in more.items():
        total[name] = total.get(name, 0) + v


def subtract_amounts(total: dict[str, int], less: dict[str, int]) -> None:
    """Take ``less`` out of ``total``, resource by resource; a resource reaching 0 is dropped."""
    for name, v in less.items():
        left = total.get(name, 0) - v
        if left:
            total[name] = left
        else:
            total.pop(name, None)


def _container_requests(c: dict) -> dict[str, int]:
    """Requests of a container (or of a pod spec's ``resources``); a limit stands in for a
    missing request."""
    res = c.get("resources") if isinstance(c, dict) else None
    if not isinstance(res, dict):
        return {}
    limits = res.get("limits")
    requests = res.get("requests")
    if not isinstance(requests, dict):
        requests = {}
    if limits and isinstance(limits, dict):
        requests = {**limits, **requests}
    return {name: _milli(q) for name, q in requests.items()}


def node_allocatable(node: dict) -> dict[str, int]:
    """A node's ``status.allocatable`` (else ``status.capacity``) in milli-units."""
    status = node.get("status") or {}
    alloc = (status.get("allocatable") or status.get("capacity") or {}) if isinstance(status, dict) else {}
    return {name: _milli(q) for name, q in alloc.items()} if isinstance(alloc, dict) else {}


def gpu_count(requests: dict[str, int]) -> int:
    """Whole GPUs of :data:`GPU_RESOURCE` in a ``pod_requests`` result."""
    return requests.get(GPU_RESOURCE, 0) // 1000
