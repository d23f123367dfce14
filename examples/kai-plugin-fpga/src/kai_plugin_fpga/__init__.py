"""Example kai plugin for ``fpga.example.com``, a made-up DRA driver for FPGA accelerator cards.

It is meant to be copied: :mod:`kai_plugin_fpga.plugin` holds the hook implementations,
:mod:`kai_plugin_fpga.config` the validation of the driver's opaque ``FpgaConfig``. See
``docs/writing-a-device-plugin.md`` in the kai repository for the walk-through.
"""

DRIVER = "fpga.example.com"
#: pod annotation: the FPGA shell the pod's bitstream was built for (the filter)
SHELL_ANNOTATION = f"{DRIVER}/shell"
#: node label: the shell flashed on the node's cards
SHELL_LABEL = f"{DRIVER}/shell"
#: pod annotation: the bitstream the pod loads (the score)
BITSTREAM_ANNOTATION = f"{DRIVER}/bitstream"
#: device attribute published in the driver's ResourceSlices: the bitstream a card holds now
LOADED_BITSTREAM_ATTRIBUTE = "loadedBitstream"

__all__ = [
    "BITSTREAM_ANNOTATION",
    "DRIVER",
    "LOADED_BITSTREAM_ATTRIBUTE",
    "SHELL_ANNOTATION",
    "SHELL_LABEL",
]
