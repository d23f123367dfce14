"""NVIDIA GPUs through the scheduler: NVIDIA's gpu.nvidia.com and mig.nvidia.com classes on slices shaped
like the driver's, GPU attributes in CEL selectors, GpuConfig / MigDeviceConfig validation, and the
preferences that keep whole GPUs and NVLink cliques free."""

from __future__ import annotations

import pytest

from kai_core.dra.testing import GPU, gpu_device, gpu_slice, mig_counter_slice, mig_devices
from kai_core.plugins import build_plugin_manager
from kai_core.scheduler.explain import DecisionRecorder
from kai_dra_nvidia import plugin
from kai_dra_nvidia.gpu import gpu_config_problems, gpu_parameters_problems

API = "resource.nvidia.com/v1beta1"


def gpu(index: int, product: str, architecture: str, memory: str, driver: str, cc: str) -> dict:
    device = gpu_device(index, product=product, memory=memory, driver_version=driver)
    device["attributes"]["architecture"] = {"string": architecture}
    device["attributes"]["cudaComputeCapability"] = {"version": cc}
    return device


MODELS = {
    "h100": ("NVIDIA H100 80GB HBM3", "Hopper", "80Gi", "550.54.15", "9.0.0"),
    "a100": ("NVIDIA A100-SXM4-40GB", "Ampere", "40Gi", "535.104.5", "8.0.0"),
    "gb200": ("NVIDIA GB200", "Blackwell", "189471Mi", "570.124.6", "10.0.0"),
}


def claim(name: str, class_name: str = "gpu.nvidia.com", count: int = 1, *selectors: str,
          config: list | None = None, allocation: dict | None = None) -> dict:
    exactly: dict = {"deviceClassName": class_name, "count": count}
    if selectors:
        exactly["selectors"] = [{"cel": {"expression": e}} for e in selectors]
    obj: dict = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                 "metadata": {"name": name, "namespace": "default"},
                 "spec": {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}}}
    if config is not None:
        obj["spec"]["devices"]["config"] = config
    if allocation is not None:
        obj["status"] = {"allocation": allocation}
    return obj


def allocated(*devices: tuple[str, str]) -> dict:
    """An allocation of ``(pool, device)`` pairs of the GPU driver, as a binder would have written."""
    return {"devices": {"results": [{"request": "gpu", "driver": GPU, "pool": p, "device": d} for p, d in devices]},
            "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [devices[0][0]]}]}]}}


def picked(c, pod: str) -> list[str]:
    [br] = [b for b in c.store.list("bindrequests.scheduling.run.ai")[0] if b["spec"]["podName"] == pod]
    return [r["device"] for r in br["spec"]["resourceClaimAllocations"][0]["allocation"]["devices"]["results"]]


def nvidia_without(*hooks: str):
    """The NVIDIA plugin with some of its hooks left out (a control: what the core alone does)."""
    impls = {name: staticmethod(getattr(plugin, name)) for name in dir(plugin)
             if name.startswith("kai_") and name not in hooks and hasattr(getattr(plugin, name), "kai_impl")}
    pm = build_plugin_manager(blocked=["dra-nvidia"])
    pm.register(type("NvidiaWithout", (), {"KAI_DRIVERS": plugin.KAI_DRIVERS, **impls})(), name="nvidia-partial")
    return pm


# -- GPU attributes in CEL selectors ------------------------------------------------------------------


@pytest.mark.parametrize(("selector", "node"), [
    ("device.attributes['gpu.nvidia.com'].productName.lowerAscii().matches('h100')", "h100"),
    ("device.attributes['gpu.nvidia.com'].architecture == 'Blackwell'", "gb200"),
    ("device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) == 0", "a100"),
    ("device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('80Gi')) >= 0 && "
     "device.attributes['gpu.nvidia.com'].driverVersion.compareTo(semver('560.0.0')) < 0", "h100"),
    ("device.attributes['gpu.nvidia.com'].driverVersion.compareTo(semver('540.0.0')) < 0", "a100"),
    ("device.attributes['gpu.nvidia.com'].cudaComputeCapability.isGreaterThan(semver('9.0.0'))", "gb200"),
], ids=["productName", "architecture", "memory", "memory-and-driver", "driverVersion", "cudaComputeCapability"])
def test_gpu_attributes_choose_the_node(gb200, selector, node):
    c = gb200()
    for name, model in MODELS.items():
        c.add_node(name, slices=[gpu_slice(name, devices=[gpu(i, *model) for i in range(2)])])
    c.add(claim("want", "gpu.nvidia.com", 2, selector))
    c.pod("p", claims={"gpus": "want"})
    assert c.cycle().scheduled == 1
    assert c.placed() == {"p": node}
    assert picked(c, "p") == ["gpu-0", "gpu-1"]


def test_no_gpu_matching_says_so(gb200):
    c = gb200()
    c.add_node("a100", slices=[gpu_slice("a100", devices=[gpu(0, *MODELS["a100"])])])
    c.add(claim("want", "gpu.nvidia.com", 1, "device.attributes['gpu.nvidia.com'].architecture == 'Hopper'"))
    c.pod("p", claims={"gpus": "want"})
    c.cycle()
    assert c.placed() == {}
    assert c.message("p") == "0/1 nodes are available: 1 cannot allocate all claims."  # kube-scheduler's words


# -- MIG devices with shared counters ------------------------------------------------------------------

PLACEMENTS = [("1g.10gb", s) for s in range(7)] + [("3g.40gb", 0), ("3g.40gb", 4)]


def mig_node(c, name: str) -> None:
    devices = mig_devices(0, PLACEMENTS) + mig_devices(1, PLACEMENTS)
    c.add_node(name, slices=[gpu_slice(name, devices=devices, slice_count=2), mig_counter_slice(name, gpus=2)])


def one_g(name: str) -> dict:
    return claim(name, "mig.nvidia.com", 1, "device.attributes['gpu.nvidia.com'].profile == '1g.10gb'")


@pytest.mark.parametrize(("pm", "gpu_used"), [(None, "gpu-1"), ("control", "gpu-0")], ids=["plugin", "core-alone"])
def test_mig_devices_come_from_the_gpu_most_used(gb200, pm, gpu_used):
    c = gb200(pm=nvidia_without("kai_rank_devices") if pm else None)
    mig_node(c, "m1")
    # gpu-0 has one 1g slice taken, gpu-1 half of its memory (a 3g.40gb): the best fit is gpu-1
    c.add(claim("old-1", "mig.nvidia.com", allocation=allocated(("m1", "gpu-0-mig-1g10gb-0"))),
          claim("old-2", "mig.nvidia.com", allocation=allocated(("m1", "gpu-1-mig-3g40gb-4"))),
          one_g("new"))
    c.pod("p", claims={"mig": "new"})
    assert c.cycle().scheduled == 1
    [device] = picked(c, "p")
    assert device.startswith(f"{gpu_used}-mig-1g10gb-")


def test_mig_pods_go_where_gpus_are_already_carved(gb200):
    c = gb200()
    mig_node(c, "m1")
    mig_node(c, "m2")
    c.add(claim("old", "mig.nvidia.com", allocation=allocated(("m2", "gpu-0-mig-1g10gb-0"))), one_g("new"))
    c.pod("p", claims={"mig": "new"})
    c.cycle()
    assert c.placed() == {"p": "m2"}  # m1's GPUs stay whole


def test_whole_gpus_and_migs_share_counters(gb200):
    c = gb200()
    mig_node(c, "m1")
    c.add(claim("old", "mig.nvidia.com", allocation=allocated(("m1", "gpu-0-mig-1g10gb-3"))),
          claim("two-gpus", "gpu.nvidia.com", 2))
    c.pod("p", claims={"gpus": "two-gpus"})
    c.scheduler.recorder = recorder = DecisionRecorder(["default/p"])
    c.cycle()
    assert c.placed() == {}  # gpu-0 is carved: one whole GPU left
    assert c.message("p") == "0/1 nodes are available: 1 cannot allocate all claims."
    [verdict] = recorder.last["default/p"].verdicts  # what kai-cli explain says of the node
    assert "not enough shared counters" in verdict.reason


# -- keeping NVLink cliques whole -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["dra-claim", "device-plugin"])
def test_gpu_pods_without_a_domain_keep_off_nvlink_cliques(gb200, how):
    c = gb200({"a": 2}, plain=1)
    if how == "dra-claim":
        c.add(claim("one", "gpu.nvidia.com", 1))
        c.pod("p", claims={"gpu": "one"})
    else:
        c.pod("p", gpus=1)
    c.cycle()
    assert c.placed() == {"p": "plain1"}


def test_cliques_already_broken_into_are_used_before_whole_ones(gb200):
    c = gb200({"a": 2, "b": 2})
    c.domain("d", num_nodes=1)
    c.pod("d-0", "d", gpus=1)
    c.cycle()
    c.bind()
    used = c.clique_of(c.placed()["d-0"])
    c.pod("p", gpus=1)
    c.cycle()
    assert c.clique_of(c.placed()["p"]) == used


def test_cpu_pods_are_not_steered(gb200):
    c = gb200({"a": 1}, plain=1)
    c.pod("p", cpu="1")
    c.cycle()
    assert c.placed() == {"p": "a1"}  # name order, as without the plugin


# -- opaque GPU configs ----------------------------------------------------------------------------------


def params(kind: str = "GpuConfig", **fields) -> dict:
    return {"apiVersion": API, "kind": kind, **fields}


VALID = {
    "gpu-bare": params(),
    "gpu-time-slicing": params(sharing={"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Long"}}),
    "gpu-time-slicing-default": params(sharing={"strategy": "TimeSlicing"}),
    "gpu-mps": params(sharing={"strategy": "MPS", "mpsConfig": {
        "defaultActiveThreadPercentage": 50, "defaultPinnedDeviceMemoryLimit": "10Gi",
        "defaultPerDevicePinnedMemoryLimit": {"0": "5Gi", "GPU-00000001": "20Gi"}}}),
    "mig-time-slicing": params("MigDeviceConfig", sharing={"strategy": "TimeSlicing"}),
    "mig-mps": params("MigDeviceConfig", sharing={"strategy": "MPS", "mpsConfig": {}}),
    "vfio": params("VfioDeviceConfig"),
}

INVALID = {
    "not-an-object": ([1], "parameters must be an object"),
    "no-apiVersion": ({"kind": "GpuConfig"}, "parameters.apiVersion is missing (expected resource.nvidia.com/v1beta1)"),
    "old-apiVersion": ({"apiVersion": "gpu.nvidia.com/v1alpha1", "kind": "GpuConfig"},
                       "parameters.apiVersion 'gpu.nvidia.com/v1alpha1' is not resource.nvidia.com/v1beta1"),
    "bad-kind": (params("GPUConfig"), "parameters.kind 'GPUConfig' is not one of GpuConfig, MigDeviceConfig"),
    "unknown-field": (params(shareing={}), "unknown field 'shareing' in GpuConfig (it has sharing)"),
    "vfio-fields": (params("VfioDeviceConfig", sharing={}), "unknown field 'sharing' in VfioDeviceConfig"),
    "no-strategy": (params(sharing={}), "parameters.sharing.strategy is required (TimeSlicing or MPS)"),
    "bad-strategy": (params(sharing={"strategy": "Fabric"}), "parameters.sharing.strategy 'Fabric' is not"),
    "bad-interval": (params(sharing={"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Forever"}}),
                     "parameters.sharing.timeSlicingConfig.interval 'Forever' is not one of Default, Short"),
    "mps-with-time-slicing": (params(sharing={"strategy": "TimeSlicing", "mpsConfig": {}}),
                              "parameters.sharing.mpsConfig cannot be used with the TimeSlicing strategy"),
    "time-slicing-with-mps": (params(sharing={"strategy": "MPS", "timeSlicingConfig": {}}),
                              "parameters.sharing.timeSlicingConfig cannot be used with the MPS strategy"),
    "mig-time-slicing-config": (params("MigDeviceConfig", sharing={"strategy": "TimeSlicing",
                                                                   "timeSlicingConfig": {"interval": "Short"}}),
                                "unknown field 'timeSlicingConfig' in parameters.sharing of a MigDeviceConfig"),
    "thread-percentage": (params(sharing={"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": 150}}),
                          "parameters.sharing.mpsConfig.defaultActiveThreadPercentage 150 is not between 0 and 100"),
    "bad-limit": (params(sharing={"strategy": "MPS", "mpsConfig": {"defaultPinnedDeviceMemoryLimit": "lots"}}),
                  "parameters.sharing.mpsConfig.defaultPinnedDeviceMemoryLimit 'lots' is not a quantity"),
    "tiny-limit": (params(sharing={"strategy": "MPS", "mpsConfig": {
        "defaultPerDevicePinnedMemoryLimit": {"0": "100Ki"}}}),
        "parameters.sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit['0'] '100Ki' is below 1Mi"),
}


@pytest.mark.parametrize("value", VALID.values(), ids=VALID.keys())
def test_valid_gpu_configs(value):
    assert gpu_parameters_problems(value) == []


@pytest.mark.parametrize(("value", "problem"), INVALID.values(), ids=INVALID.keys())
def test_invalid_gpu_configs_say_what_is_wrong(value, problem):
    problems = gpu_parameters_problems(value)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_a_config_of_the_wrong_kind_for_its_devices():
    assert gpu_config_problems(params(), {"gpu": "gpu.nvidia.com"}) == []
    assert gpu_config_problems(params(), {"gpu": "mig.nvidia.com"}) == [
        "a GpuConfig applies to gpu.nvidia.com devices but request 'gpu' asks for mig.nvidia.com devices "
        "(use a MigDeviceConfig)"]
    assert gpu_config_problems(params(), {"": "mig.nvidia.com"}) == [
        "a GpuConfig applies to gpu.nvidia.com devices but the DeviceClass selects mig.nvidia.com devices "
        "(use a MigDeviceConfig)"]


def test_a_bad_gpu_config_keeps_the_pod_off_every_node(gb200):
    c = gb200(plain=1)
    bad = {"opaque": {"driver": "gpu.nvidia.com", "parameters": params(sharing={"strategy": "MPS", "mpsConfig": {
        "defaultActiveThreadPercentage": -5}})}}
    c.add(claim("shared", "gpu.nvidia.com", 1, config=[bad]))
    c.pod("p", claims={"gpu": "shared"})
    c.cycle()
    assert c.placed() == {}
    assert c.message("p") == (
        'pod claim "gpu" (ResourceClaim "default/shared"): spec.devices.config[0] (gpu.nvidia.com GpuConfig): '
        "parameters.sharing.mpsConfig.defaultActiveThreadPercentage -5 is not between 0 and 100")


def test_a_good_gpu_config_is_passed_on_in_the_allocation(gb200):
    c = gb200(plain=1)
    good = {"requests": ["gpu"], "opaque": {"driver": "gpu.nvidia.com", "parameters": VALID["gpu-time-slicing"]}}
    c.add(claim("shared", "gpu.nvidia.com", 1, config=[good]))
    c.pod("p", claims={"gpu": "shared"})
    c.cycle()
    [br] = c.store.list("bindrequests.scheduling.run.ai")[0]
    allocation = br["spec"]["resourceClaimAllocations"][0]["allocation"]
    assert allocation["devices"]["config"] == [{"source": "FromClaim", **good}]
