"""Benchmark of the structured DRA allocator: allocations per second on a 500-node x 8-GPU inventory.

Run from the project root with the project's venv::

    .venv/bin/python benchmarks/bench_allocator.py [--nodes 500] [--gpus 8] [--seconds 2]

Each scenario calls ``allocate()`` for one pod's claim on successive nodes (the scheduler calls it once
per candidate node of each pod), with the inventory built once and a realistic in-use set (every
node half full), and prints a table. Scenarios:

* ``1-gpu``: one claim with one request for 1 GPU of NVIDIA's ``gpu.nvidia.com`` class;
* ``pair-pcieRoot``: one claim, two 1-GPU requests with ``matchAttribute: resource.kubernetes.io/pcieRoot``;
* ``8-gpu``: one claim asking for all 8 GPUs of an empty node (``count: 8``);
* ``1-gpu-full``: 1 GPU on nodes where every GPU is in use (the refusal path, with its reason);
* ``inventory``: building the inventory itself (once per scheduling cycle), per build.
"""

from __future__ import annotations

import argparse
import time

from kai_core.dra.allocator import DeviceId, DraInventory, Unallocatable, allocate
from kai_core.dra.testing import GPU, claim, device_class, gpu_slice, node, request

GPU_CLASS = device_class(
    "gpu.nvidia.com", "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'"
)


def _slices(nodes: int, gpus: int) -> list[dict]:
    out = []
    for i in range(nodes):
        made = gpu_slice(f"node-{i:04d}", count=gpus)
        made["metadata"]["resourceVersion"] = str(1000 + i)
        out.append(made)
    return out


def _rate(fn, seconds: float) -> tuple[float, int]:
    """Calls per second of ``fn(i)`` over about ``seconds`` (at least 200 calls)."""
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            fn(calls)
            calls += 1
        if calls >= 200 and time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    return calls / elapsed, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    nodes = [node(f"node-{i:04d}") for i in range(args.nodes)]
    slices = _slices(args.nodes, args.gpus)

    inventory = DraInventory(slices, [GPU_CLASS])
    half = {
        DeviceId(GPU, f"node-{i:04d}", f"gpu-{g}") for i in range(args.nodes) for g in range(args.gpus // 2)
    }
    full = {DeviceId(GPU, f"node-{i:04d}", f"gpu-{g}") for i in range(args.nodes) for g in range(args.gpus)}
    one = claim("one", request("gpu", "gpu.nvidia.com", 1))
    pair = claim(
        "pair",
        request("a", "gpu.nvidia.com", 1),
        request("b", "gpu.nvidia.com", 1),
        constraints=[{"matchAttribute": "resource.kubernetes.io/pcieRoot"}],
    )
    eight = claim("eight", request("gpu", "gpu.nvidia.com", args.gpus))
    count = len(nodes)

    def refused(i: int) -> None:
        try:
            allocate([one], nodes[i % count], inventory, full)
        except Unallocatable:
            return
        raise AssertionError("a full node must refuse")

    scenarios = [
        ("1-gpu", lambda i: allocate([one], nodes[i % count], inventory, half)),
        ("pair-pcieRoot", lambda i: allocate([pair], nodes[i % count], inventory, half)),
        (f"{args.gpus}-gpu", lambda i: allocate([eight], nodes[i % count], inventory, set())),
        ("1-gpu-full", refused),
        ("inventory", lambda i: DraInventory(slices, [GPU_CLASS])),
    ]
    # Warm up: the first call on a node evaluates the selectors of its devices (cached afterwards).
    for node_obj in nodes:
        allocate([one], node_obj, inventory, half)
        allocate([pair], node_obj, inventory, half)
    print(f"structured allocator, {args.nodes} nodes x {args.gpus} GPUs (NVIDIA-shaped slices)")
    print(f"{'scenario':<16} {'calls':>9} {'per second':>12} {'us per call':>12}")
    for name, fn in scenarios:
        rate, calls = _rate(fn, args.seconds if name != "inventory" else args.seconds / 2)
        print(f"{name:<16} {calls:>9} {rate:>12,.0f} {1e6 / rate:>12.1f}")


if __name__ == "__main__":
    main()
