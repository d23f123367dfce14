"""The ``FpgaConfig`` that claims and DeviceClasses hand to the ``fpga.example.com`` driver, and its checks.

DRA lets a claim (``spec.devices.config[]``) or a DeviceClass (``spec.config[]``) carry settings
meant for one driver only, as ``opaque: {driver, parameters}``. Kubernetes stores them without
looking inside; the driver reads them when the kubelet asks it to prepare the device, i.e. after
the pod has been placed. A typo there would leave the pod stuck on its node in
``ContainerCreating``. Checking the config before placement instead gives the pod an
unschedulable reason that says what is wrong and where.

The made-up schema::

    apiVersion: fpga.example.com/v1alpha1
    kind: FpgaConfig
    clockMHz: 100..600          # optional, the card's kernel clock
    powerLimitWatts: 25..225    # optional, the card's power cap

Unknown fields are refused, as a driver decoding strictly would.
"""

from __future__ import annotations

from kai_plugin_fpga import DRIVER

API_VERSION = f"{DRIVER}/v1alpha1"
KIND = "FpgaConfig"
#: optional integer fields and their inclusive ranges
RANGES = {"clockMHz": (100, 600), "powerLimitWatts": (25, 225)}
_FIELDS = ("apiVersion", "kind", *RANGES)


def parameters_problems(parameters: object) -> list[str]:
    """Everything wrong with the ``parameters`` of one ``fpga.example.com`` opaque config.

    An empty list means valid. Each problem names the field, e.g.
    ``"parameters.clockMHz 900 is out of range (100..600)"``.
    """
    if not isinstance(parameters, dict):
        return [f"parameters must be an object (apiVersion {API_VERSION}, kind {KIND}), "
                f"got {type(parameters).__name__}"]
    problems = []
    if parameters.get("apiVersion") != API_VERSION:
        problems.append(f"parameters.apiVersion {parameters.get('apiVersion')!r} is not {API_VERSION}")
    if parameters.get("kind") != KIND:
        problems.append(f"parameters.kind {parameters.get('kind')!r} is not {KIND}")
    for name, (low, high) in RANGES.items():
        if name not in parameters:
            continue
        value = parameters[name]
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"parameters.{name} must be an integer, got {value!r}")
        elif not low <= value <= high:
            problems.append(f"parameters.{name} {value} is out of range ({low}..{high})")
    unknown = sorted(str(k) for k in parameters if k not in _FIELDS)
    if unknown:
        problems.append(f"unknown field(s) {', '.join('parameters.' + k for k in unknown)} "
                        f"(known: {', '.join(_FIELDS)})")
    return problems
