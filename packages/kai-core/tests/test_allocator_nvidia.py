"""NVIDIA's real DeviceClasses (``../shared/upstream/nvidia.deviceclasses.yaml``) against GPU slices
shaped like the driver's: full GPUs, and DynamicMIG's layout where the full GPU and every MIG
placement consume one shared counter set per GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kai_core.dra.allocator import DeviceId, DraInventory, Unallocatable, allocate
from kai_core.dra.testing import (
    GPU,
    cd_slice,
    claim,
    gpu_slice,
    mig_counter_slice,
    mig_devices,
    node,
    request,
    result_names,
)


@pytest.fixture
def nvidia_classes(upstream_dir: Path) -> list[dict]:
    path = upstream_dir / "nvidia.deviceclasses.yaml"
    if not path.exists():
        pytest.skip(f"upstream NVIDIA DeviceClasses not found at {path}")
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture
def dynamic_mig(nvidia_classes: list[dict]) -> DraInventory:
    """Node n1: two A100s in DynamicMIG layout (full GPU, seven 1g.10gb, two 3g.40gb each) plus the
    compute-domain devices; node n2: eight plain GPUs."""
    placements = [("1g.10gb", s) for s in range(7)] + [("3g.40gb", 0), ("3g.40gb", 4)]
    made = mig_devices(0, placements) + mig_devices(1, placements)
    slices = [
        gpu_slice("n1", devices=made, slice_count=2),
        mig_counter_slice("n1", gpus=2),
        cd_slice("n1"),
        gpu_slice("n2"),
    ]
    return DraInventory(slices, nvidia_classes)


def mig(gpu: int, profile: str, start: int) -> DeviceId:
    return DeviceId(GPU, "n1", f"gpu-{gpu}-mig-{profile.replace('.', '')}-{start}")


def names(allocation: dict) -> list[str]:
    return [device for _, device in result_names(allocation)]


def test_each_class_selects_its_kind_of_device(dynamic_mig: DraInventory) -> None:
    node_devices = dynamic_mig.devices_for_node(node("n1"))
    assert len(node_devices) == 2 * 10 + 2
    [gpus] = allocate([claim("c", request("gpu", "gpu.nvidia.com", 2))], node("n1"), dynamic_mig, set())
    assert names(gpus) == ["gpu-0", "gpu-1"]
    [migs] = allocate([claim("c", request("mig", "mig.nvidia.com", 14))], node("n1"), dynamic_mig, set())
    assert all("-mig-1g10gb-" in name for name in names(migs))  # 14 1g slices are what fits in two GPUs
    with pytest.raises(Unallocatable, match="request vfio: no device of DeviceClass vfio.gpu.nvidia.com"):
        allocate([claim("c", request("vfio", "vfio.gpu.nvidia.com"))], node("n1"), dynamic_mig, set())
    [channel] = allocate(
        [claim("c", request("ch", "compute-domain-default-channel.nvidia.com"))],
        node("n1"),
        dynamic_mig,
        set(),
    )
    assert names(channel) == ["channel-0"]


@pytest.mark.parametrize(
    ("in_use", "claims", "expected"),
    [
        pytest.param(
            {mig(0, "1g.10gb", 2)},
            [request("gpu", "gpu.nvidia.com", 1)],
            [["gpu-1"]],
            id="full-gpu-avoids-a-gpu-with-a-mig-in-use",
        ),
        pytest.param(
            {mig(0, "1g.10gb", 2)},
            [request("mig", "mig.nvidia.com", 1, f"device.attributes['{GPU}'].profile == '3g.40gb'")],
            [["gpu-0-mig-3g40gb-4"]],
            id="3g-placement-next-to-a-used-1g-packs-gpu-0",
        ),
        pytest.param(
            {DeviceId(GPU, "n1", "gpu-1")},
            [request("mig", "mig.nvidia.com", 8)],
            None,
            id="a-full-gpu-in-use-leaves-seven-slices",
        ),
        pytest.param(
            set(),
            [request("gpu", "gpu.nvidia.com", 1), request("mig", "mig.nvidia.com", 7)],
            [["gpu-0"] + [f"gpu-1-mig-1g10gb-{s}" for s in range(7)]],
            id="one-whole-gpu-and-the-other-as-migs",
        ),
    ],
)
def test_mig_devices_share_their_gpus_counters(
    dynamic_mig: DraInventory, in_use: set, claims: list[dict], expected: list | None
) -> None:
    the_claim = claim("c", *claims)
    if expected is None:
        with pytest.raises(Unallocatable, match="not enough shared counters left"):
            allocate([the_claim], node("n1"), dynamic_mig, in_use)
        return
    allocations = allocate([the_claim], node("n1"), dynamic_mig, in_use)
    assert [names(a) for a in allocations] == expected
    assert allocations[0]["nodeSelector"]["nodeSelectorTerms"][0]["matchFields"][0]["values"] == ["n1"]


def test_a_pod_full_of_migs_then_a_gpu_claim_on_the_other_node(dynamic_mig: DraInventory) -> None:
    in_use: set[DeviceId] = set()
    for round_ in range(14):
        [allocation] = allocate(
            [claim(f"c{round_}", request("mig", "mig.nvidia.com"))], node("n1"), dynamic_mig, in_use
        )
        in_use.update(DeviceId(r["driver"], r["pool"], r["device"]) for r in allocation["devices"]["results"])
    # Pack: GPU 0 filled before GPU 1 was touched.
    assert sorted(d.device for d in in_use)[:7] == [f"gpu-0-mig-1g10gb-{s}" for s in range(7)]
    with pytest.raises(Unallocatable):
        allocate([claim("x", request("mig", "mig.nvidia.com"))], node("n1"), dynamic_mig, in_use)
    [allocation] = allocate([claim("x", request("gpu", "gpu.nvidia.com"))], node("n2"), dynamic_mig, in_use)
    assert names(allocation) == ["gpu-0"] and allocation["devices"]["results"][0]["pool"] == "n2"
