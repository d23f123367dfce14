"""The example plugin changes placement once installed, and nothing when it is not.

"With" takes the plugin through its installed entry point, as ``kai-cli`` does; "without" is the
kit's ``installed_plugins=False`` (kai-core's built-ins only), i.e. kai as it behaves where the
plugin is not installed. Every cluster is the kit's (``fpga_cluster`` wraps ``kai_cluster``).
"""

from __future__ import annotations

import copy

import pytest

# the example's pods on their own; each shell/bitstream pair is in the manifests' comments
EXAMPLE_WITHOUT_PLUGIN = {"aes-encrypt": "fpga-node-a", "h265-transcode": "fpga-node-a"}
EXAMPLE_WITH_PLUGIN = {"aes-encrypt": "fpga-node-c", "h265-transcode": "fpga-node-b"}


def run(cluster) -> dict[str, str]:
    """Schedule and bind until idle; pod -> node of the bound pods."""
    cluster.run()
    return cluster.placed()


def test_without_the_plugin_both_pods_land_on_the_first_node(fpga_cluster):
    # every node fits: name order breaks the first tie, bin-packing then adds the second pod,
    # although fpga-node-a's shell v2 cannot run either bitstream
    assert run(fpga_cluster(with_plugin=False)) == EXAMPLE_WITHOUT_PLUGIN


def test_installed_plugin_sends_each_pod_to_a_node_with_its_shell_and_bitstream(fpga_cluster):
    cluster = fpga_cluster()
    assert run(cluster) == EXAMPLE_WITH_PLUGIN
    # the allocator took the card that holds the bitstream (the first card of each node)
    assert cluster.devices_of("aes-encrypt") == {"fpga": ["fpga.example.com/fpga-node-c/fpga-0"]}
    assert cluster.devices_of("h265-transcode") == {"fpga": ["fpga.example.com/fpga-node-b/fpga-0"]}
    # and the scheduler says why: the shell filter refused fpga-node-a for both
    assert cluster.explain("aes-encrypt").verdict("fpga-node-a").plugin == "fpga-example"


def test_registering_the_module_directly_works_like_the_entry_point(fpga_cluster):
    # how to test a plugin before packaging it: hand its module to the kit
    import kai_plugin_fpga.plugin

    cluster = fpga_cluster(with_plugin=False, plugins={"fpga-example": kai_plugin_fpga.plugin})
    assert run(cluster) == EXAMPLE_WITH_PLUGIN


@pytest.mark.parametrize("with_plugin", [True, False], ids=["with", "without"])
def test_pods_without_annotations_are_placed_as_if_the_plugin_were_absent(fpga_cluster, fpga_pod, with_plugin):
    cluster = fpga_cluster(fpga_pod("plain-1"), fpga_pod("plain-2"), with_plugin=with_plugin,
                           with_example_pods=False)
    assert run(cluster) == {"plain-1": "fpga-node-a", "plain-2": "fpga-node-a"}


def test_shell_filter_leaves_only_matching_nodes(fpga_cluster, fpga_pod):
    cluster = fpga_cluster(fpga_pod("old-shell", shell="v2"), fpga_pod("new-shell", shell="v3"),
                           with_example_pods=False)
    placed = run(cluster)
    assert placed["old-shell"] == "fpga-node-a"
    assert placed["new-shell"] in ("fpga-node-b", "fpga-node-c")


def test_pod_whose_shell_no_node_has_waits_with_the_filters_reason(fpga_cluster, fpga_pod):
    cluster = fpga_cluster(fpga_pod("future", shell="v9"), with_example_pods=False)
    assert run(cluster) == {}
    assert cluster.pending_message("future") == (
        "0/3 nodes are available: 3 node(s) didn't have FPGA shell v9.")

    bare = fpga_cluster(fpga_pod("future", shell="v9"), with_plugin=False, with_example_pods=False)
    assert run(bare) == {"future": "fpga-node-a"}


def test_bitstream_score_follows_the_card_that_holds_it(fpga_cluster, fpga_pod):
    # no shell annotation, so every node passes the filter: the score alone moves the pod
    cluster = fpga_cluster(fpga_pod("h265", bitstream="h265-encoder-v2"), with_example_pods=False)
    assert run(cluster) == {"h265": "fpga-node-b"}


def test_a_card_taken_earlier_in_the_cycle_no_longer_attracts_pods(fpga_cluster, fpga_pod):
    # bin-packing switched off (weight 0) so only this plugin's score speaks: fpga-node-c has one
    # card with aes-gcm-v1; the first pod takes it, the second finds no free card holding it and
    # falls back to the first node by name
    cluster = fpga_cluster(fpga_pod("aes-1", bitstream="aes-gcm-v1"), fpga_pod("aes-2", bitstream="aes-gcm-v1"),
                           with_example_pods=False, score_weights={"kai-core.binpack": 0})
    assert run(cluster) == {"aes-1": "fpga-node-c", "aes-2": "fpga-node-a"}


def _template(name: str, parameters: dict, device_class: str = "fpga.example.com") -> dict:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"spec": {"devices": {
            "requests": [{"name": "fpga", "exactly": {"deviceClassName": device_class}}],
            "config": [{"opaque": {"driver": "fpga.example.com", "parameters": parameters}}],
        }}},
    }


GOOD = {"apiVersion": "fpga.example.com/v1alpha1", "kind": "FpgaConfig", "clockMHz": 250}


def test_invalid_claim_config_keeps_the_pod_pending_naming_claim_and_field(fpga_cluster, fpga_pod):
    bad = {**GOOD, "clockMHz": 900, "turbo": True}
    hot = (_template("hot-fpga", bad), fpga_pod("hot", template="hot-fpga"))
    cluster = fpga_cluster(*hot, with_example_pods=False)
    assert run(cluster) == {}
    message = cluster.pending_message("hot")
    assert message.startswith('pod claim "fpga" (ResourceClaim "default/hot-fpga-')
    assert message.endswith(
        "spec.devices.config[0] (fpga.example.com FpgaConfig): parameters.clockMHz 900 is out of range "
        "(100..600); unknown field(s) parameters.turbo (known: apiVersion, kind, clockMHz, powerLimitWatts)")

    bare = fpga_cluster(*hot, with_plugin=False, with_example_pods=False)
    assert run(bare) == {"hot": "fpga-node-a"}  # the driver would only fail it on the node


def test_invalid_device_class_config_is_reported_with_the_class(fpga_cluster, fpga_pod):
    cluster = fpga_cluster(with_example_pods=False)
    device_class = copy.deepcopy(cluster.get("deviceclasses", "fpga.example.com"))
    device_class["metadata"] = {"name": "fpga-lowpower.example.com"}
    device_class["spec"]["config"][0]["opaque"]["parameters"]["powerLimitWatts"] = 10
    cluster.add(device_class, _template("low", GOOD, "fpga-lowpower.example.com"),
                fpga_pod("low-power", template="low"))
    assert run(cluster) == {}
    assert cluster.pending_message("low-power").endswith(
        'DeviceClass "fpga-lowpower.example.com" (used by request "fpga"): spec.config[0] (fpga.example.com '
        "FpgaConfig): parameters.powerLimitWatts 10 is out of range (25..225)")


@pytest.mark.parametrize(("with_plugin", "card"), [(True, "fpga-node-b/fpga-1"), (False, "fpga-node-a/fpga-0")],
                         ids=["with", "without"])
def test_the_card_holding_the_bitstream_is_the_one_allocated(fpga_cluster, fpga_pod, with_plugin, card):
    # fpga-node-b's bitstream moved to its second card: the node still wins on the score, and the
    # device ranking makes the allocator take that card rather than the first
    cluster = fpga_cluster(with_plugin=with_plugin, with_example_pods=False)
    slice_ = cluster.get("resourceslices", "fpga-node-b-fpga.example.com")
    first, second = (d["attributes"] for d in slice_["spec"]["devices"])
    first["loadedBitstream"], second["loadedBitstream"] = second["loadedBitstream"], first["loadedBitstream"]
    cluster.store.update(slice_)
    cluster.add(fpga_pod("h265", bitstream="h265-encoder-v2"))
    cluster.run()
    assert cluster.devices_of("h265") == {"fpga": [f"fpga.example.com/{card}"]}
