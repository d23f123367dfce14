"""Small builders for DRA objects in the ``resource.k8s.io/v1`` shape, for tests and benchmarks.

They build what a test needs in one line: a ResourceSlice of GPUs shaped like NVIDIA's
gpu-kubelet-plugin publishes them (attributes and capacities as in its ``deviceinfo.go``), MIG devices
with shared counters (the KEP-4815 layout of its DynamicMIG mode), compute-domain slices, DeviceClasses
and ResourceClaims. Nothing here is used by the scheduler itself.
"""

from __future__ import annotations

__all__ = [
    "CD",
    "GPU",
    "claim",
    "cd_slice",
    "device_class",
    "gpu_device",
    "gpu_slice",
    "mig_counter_slice",
    "mig_devices",
    "node",
    "opaque",
    "request",
    "resource_slice",
    "result_names",
    "sub_request",
]

GPU = "gpu.nvidia.com"
CD = "compute-domain.nvidia.com"


def node(name: str = "n1", **labels: str) -> dict:
    """A Node object with ``labels``."""
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": dict(labels)}}


def gpu_device(
    index: int,
    product: str = "NVIDIA A100-SXM4-80GB",
    memory: str = "80Gi",
    driver_version: str = "550.54.15",
    **extra: object,
) -> dict:
    """A full GPU ``gpu-<index>``; four GPUs share a PCIe root (``pci0000:<index // 4>``)."""
    device = {
        "name": f"gpu-{index}",
        "attributes": {
            "type": {"string": "gpu"},
            "uuid": {"string": f"GPU-0000000{index}"},
            "productName": {"string": product},
            "brand": {"string": "Nvidia"},
            "architecture": {"string": "Ampere"},
            "cudaComputeCapability": {"version": "8.0.0"},
            "driverVersion": {"version": driver_version},
            "cudaDriverVersion": {"version": "12.4.0"},
            "resource.kubernetes.io/pciBusID": {"string": f"0000:{index:02x}:00.0"},
            "resource.kubernetes.io/pcieRoot": {"string": f"pci0000:{index // 4}"},
        },
        "capacity": {"memory": {"value": memory}},
    }
    device.update(extra)
    return device


def resource_slice(
    name: str,
    driver: str,
    pool: str,
    devices: list[dict] | None = None,
    *,
    node_name: str | None = None,
    node_selector: dict | None = None,
    all_nodes: bool = False,
    generation: int = 1,
    slice_count: int = 1,
    **extra_spec: object,
) -> dict:
    """A ResourceSlice; pass exactly one of ``node_name``, ``node_selector``, ``all_nodes`` or
    ``perDeviceNodeSelection=True`` (or ``sharedCounters=[...]`` for a counter-set slice)."""
    spec: dict = {
        "driver": driver,
        "pool": {"name": pool, "generation": generation, "resourceSliceCount": slice_count},
    }
    if devices is not None:
        spec["devices"] = devices
    if node_name is not None:
        spec["nodeName"] = node_name
    if node_selector is not None:
        spec["nodeSelector"] = node_selector
    if all_nodes:
        spec["allNodes"] = True
    spec.update(extra_spec)
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": name},
        "spec": spec,
    }


def gpu_slice(node_name: str = "n1", count: int = 8, **kwargs: object) -> dict:
    """One slice per node, pool = node name, ``nodeName`` set: what NVIDIA's GPU plugin publishes."""
    devices = kwargs.pop("devices", None) or [gpu_device(i) for i in range(count)]
    name = str(kwargs.pop("name", f"{node_name}-{GPU}"))
    return resource_slice(name, GPU, node_name, devices, node_name=node_name, **kwargs)  # type: ignore[arg-type]


# MIG profiles of an A100 80GB: (profile, compute slices, memory slices, memory).
_MIG_PROFILES = {
    "1g.10gb": (1, 1, "10Gi"),
    "2g.20gb": (2, 2, "20Gi"),
    "3g.40gb": (3, 4, "40Gi"),
    "7g.80gb": (7, 8, "80Gi"),
}


def mig_counter_slice(
    node_name: str = "n1", gpus: int = 2, *, slice_count: int = 2, **kwargs: object
) -> dict:
    """The counter-set slice of DynamicMIG: one set ``gpu-<i>-counter-set`` per GPU, with 7 compute
    slices, 8 memory slices and the GPU's memory."""
    sets = [
        {
            "name": f"gpu-{i}-counter-set",
            "counters": {
                "multiprocessors": {"value": "98"},
                "memory": {"value": "80Gi"},
                **{f"memory-slice-{s}": {"value": "1"} for s in range(8)},
            },
        }
        for i in range(gpus)
    ]
    return resource_slice(
        f"{node_name}-{GPU}-counters",
        GPU,
        node_name,
        None,
        node_name=node_name,
        slice_count=slice_count,
        sharedCounters=sets,
        **kwargs,  # type: ignore[arg-type]
    )


def mig_devices(gpu: int, profiles: list[tuple[str, int]], *, full_gpu: bool = True) -> list[dict]:
    """The full GPU and the given MIG placements ``(profile, start memory slice)`` of one GPU, each
    consuming its share of ``gpu-<gpu>-counter-set``."""
    counter_set = f"gpu-{gpu}-counter-set"
    devices = []
    if full_gpu:
        devices.append(
            gpu_device(
                gpu,
                consumesCounters=[
                    {
                        "counterSet": counter_set,
                        "counters": {
                            "multiprocessors": {"value": "98"},
                            "memory": {"value": "80Gi"},
                            **{f"memory-slice-{s}": {"value": "1"} for s in range(8)},
                        },
                    }
                ],
            )
        )
    for profile, start in profiles:
        compute, memory_slices, memory = _MIG_PROFILES[profile]
        name = f"gpu-{gpu}-mig-{profile.replace('.', '')}-{start}"
        attributes = dict(gpu_device(gpu)["attributes"])
        attributes.update(
            {
                "type": {"string": "mig"},
                "uuid": {"string": f"MIG-{gpu}-{profile}-{start}"},
                "parentUUID": {"string": f"GPU-0000000{gpu}"},
                "profile": {"string": profile},
            }
        )
        devices.append(
            {
                "name": name,
                "attributes": attributes,
                "capacity": {"multiprocessors": {"value": str(14 * compute)}, "memory": {"value": memory}},
                "consumesCounters": [
                    {
                        "counterSet": counter_set,
                        "counters": {
                            "multiprocessors": {"value": str(14 * compute)},
                            "memory": {"value": memory},
                            **{
                                f"memory-slice-{s}": {"value": "1"} for s in range(start, start + memory_slices)
                            },
                        },
                    }
                ],
            }
        )
    return devices


def cd_slice(node_name: str = "n1") -> dict:
    """The compute-domain plugin's slice: ``channel-0`` and ``daemon-0``, pool = node name."""
    devices = [
        {"name": "channel-0", "attributes": {"type": {"string": "channel"}, "id": {"int": 0}}},
        {"name": "daemon-0", "attributes": {"type": {"string": "daemon"}, "id": {"int": 0}}},
    ]
    return resource_slice(f"{node_name}-{CD}", CD, node_name, devices, node_name=node_name)


def device_class(name: str, *expressions: str, config: list[dict] | None = None) -> dict:
    """A DeviceClass with CEL selectors (ANDed) and optional ``config`` entries."""
    spec: dict = {"selectors": [{"cel": {"expression": e}} for e in expressions]}
    if config is not None:
        spec["config"] = config
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": spec,
    }


def request(name: str, class_name: str, count: int | None = None, *selectors: str, **exactly: object) -> dict:
    """A request with ``exactly``: class, optional count and selectors, and other fields as keywords."""
    body: dict = {"deviceClassName": class_name}
    if count is not None:
        body["count"] = count
    if selectors:
        body["selectors"] = [{"cel": {"expression": e}} for e in selectors]
    body.update(exactly)
    return {"name": name, "exactly": body}


def sub_request(
    name: str, class_name: str, count: int | None = None, *selectors: str, **fields: object
) -> dict:
    """A ``firstAvailable`` entry (same fields as ``exactly`` minus adminAccess, plus a name)."""
    body = request(name, class_name, count, *selectors, **fields)["exactly"]
    return {"name": name, **body}


def claim(
    name: str,
    *requests: dict,
    namespace: str = "default",
    config: list | None = None,
    constraints: list | None = None,
) -> dict:
    """A ResourceClaim with the given requests, configs and constraints."""
    devices: dict = {"requests": list(requests)}
    if config is not None:
        devices["config"] = config
    if constraints is not None:
        devices["constraints"] = constraints
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"devices": devices},
    }


def opaque(driver: str, **parameters: object) -> dict:
    """An opaque device configuration entry."""
    return {"opaque": {"driver": driver, "parameters": dict(parameters)}}


def result_names(allocation: dict) -> list[tuple[str, str]]:
    """``(request, device)`` of every result of an AllocationResult, in order."""
    return [(r["request"], r["device"]) for r in allocation["devices"]["results"]]
