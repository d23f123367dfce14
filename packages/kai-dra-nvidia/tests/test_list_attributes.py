"""A GPU slice with list-valued attributes (DRAListTypeAttributes, KEP-5491): the NVIDIA plugin's
scores, which read scalar attributes such as ``uuid`` and ``parentUUID``, take a list as no value
and the pod is still scheduled."""

from __future__ import annotations

from kai_core.dra.testing import gpu_device, gpu_slice, mig_counter_slice, mig_devices


def test_a_mig_pod_is_placed_next_to_a_gpu_with_list_attributes(gb200):
    c = gb200()
    odd = gpu_device(5)
    odd["attributes"]["uuid"] = {"strings": ["GPU-00000005", "GPU-00000005-alias"]}
    devices = [*mig_devices(0, [("1g.10gb", 0), ("1g.10gb", 1)]), odd]
    c.add_node("m1", slices=[gpu_slice("m1", devices=devices, slice_count=2), mig_counter_slice("m1", gpus=1)])
    # a second node, so that nodes are scored (the plugin looks at every GPU of each node)
    c.add_node("m2", slices=[gpu_slice("m2", devices=mig_devices(0, [("1g.10gb", 0)]), slice_count=2),
                             mig_counter_slice("m2", gpus=1)])
    c.add({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
           "metadata": {"name": "mig", "namespace": "default"},
           "spec": {"devices": {"requests": [{"name": "mig", "exactly": {"deviceClassName": "mig.nvidia.com"}}]}}})
    c.pod("p", claims={"mig": "mig"})
    result = c.cycle()
    assert result.errors == 0
    assert c.placed().get("p") in ("m1", "m2")
