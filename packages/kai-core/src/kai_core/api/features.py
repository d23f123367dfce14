"""Feature gates, parsed from ``--feature-gates=Name=true,Other=false`` as Kubernetes components do.

The DRA gates carry kube-scheduler's names and its defaults for Kubernetes 1.37 (``pkg/features``),
the release kai's real control plane tests run: a gate that is off gives upstream's behaviour with it
off. Unlike kube-scheduler 1.37, kai lets gates that upstream has locked to their default
(``DRAPrioritizedList``, ``DRAAdminAccess``) be turned off, so that an older cluster can be matched:
Kubernetes 1.34 has ``DRADeviceTaints``, ``DRAPartitionableDevices``, ``DRAConsumableCapacity`` and
``DRADeviceBindingConditions`` off. ``DRAListTypeAttributes`` is alpha in 1.36 and 1.37, so off by
default as there. ``DynamicResourceAllocation`` keeps kai's own default (off): DRA support is opted
into.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: gate -> (default, description)
KNOWN_GATES: dict[str, tuple[bool, str]] = {
    "DynamicResourceAllocation": (
        False,
        "schedule pods with resource claims (resource.k8s.io) and allocate their devices",
    ),
    "DRAPrioritizedList": (True, "requests with firstAvailable sub-requests (off: such claims are unschedulable)"),
    "DRAAdminAccess": (True, "adminAccess requests (off: such claims are unschedulable)"),
    "DRADeviceTaints": (True, "device taints keep devices from requests without a toleration (off: ignored)"),
    "DRAPartitionableDevices": (
        True,
        "devices consuming shared counters and perDeviceNodeSelection slices (off: not used)",
    ),
    "DRAConsumableCapacity": (
        True,
        "capacity requests, devices shared by capacity (allowMultipleAllocations) and distinctAttribute "
        "(off: capacity requests and distinctAttribute are refused, shared devices are exclusive)",
    ),
    "DRADeviceBindingConditions": (
        True,
        "devices with binding conditions and bindsToNode; the binder waits for the conditions "
        "(off, or DRAResourceClaimDeviceStatus off: such devices are not used)",
    ),
    "DRAResourceClaimDeviceStatus": (True, "device status in claims, which binding conditions are read from"),
    "DRAListTypeAttributes": (
        False,
        "list-valued device attributes in matchAttribute (the devices share an element) and distinctAttribute "
        "(no two devices share one) (off: a list-valued attribute matches no other device)",
    ),
}

DRA = "DynamicResourceAllocation"
PRIORITIZED_LIST = "DRAPrioritizedList"
ADMIN_ACCESS = "DRAAdminAccess"
DEVICE_TAINTS = "DRADeviceTaints"
PARTITIONABLE_DEVICES = "DRAPartitionableDevices"
CONSUMABLE_CAPACITY = "DRAConsumableCapacity"
BINDING_CONDITIONS = "DRADeviceBindingConditions"
DEVICE_STATUS = "DRAResourceClaimDeviceStatus"
LIST_TYPE_ATTRIBUTES = "DRAListTypeAttributes"


@dataclass(frozen=True, slots=True)
class DraFeatures:
    """The DRA gates the allocator follows, fixed for one inventory (one cycle)."""

    prioritized_list: bool = KNOWN_GATES[PRIORITIZED_LIST][0]
    admin_access: bool = KNOWN_GATES[ADMIN_ACCESS][0]
    device_taints: bool = KNOWN_GATES[DEVICE_TAINTS][0]
    partitionable_devices: bool = KNOWN_GATES[PARTITIONABLE_DEVICES][0]
    consumable_capacity: bool = KNOWN_GATES[CONSUMABLE_CAPACITY][0]
    #: upstream's DeviceBindingAndStatus: binding conditions are read from the claim's device status
    binding_conditions: bool = KNOWN_GATES[BINDING_CONDITIONS][0] and KNOWN_GATES[DEVICE_STATUS][0]
    #: constraints compare attributes as sets, a scalar being a set of one (KEP-5491)
    list_type_attributes: bool = KNOWN_GATES[LIST_TYPE_ATTRIBUTES][0]


class FeatureGateError(ValueError):
    pass


@dataclass
class FeatureGates:
    enabled: dict[str, bool] = field(default_factory=lambda: {k: v[0] for k, v in KNOWN_GATES.items()})

    def __getitem__(self, gate: str) -> bool:
        return self.enabled.get(gate, False)

    @property
    def dra(self) -> bool:
        return self[DRA]

    @property
    def dra_features(self) -> DraFeatures:
        return DraFeatures(
            prioritized_list=self[PRIORITIZED_LIST],
            admin_access=self[ADMIN_ACCESS],
            device_taints=self[DEVICE_TAINTS],
            partitionable_devices=self[PARTITIONABLE_DEVICES],
            consumable_capacity=self[CONSUMABLE_CAPACITY],
            binding_conditions=self[BINDING_CONDITIONS] and self[DEVICE_STATUS],
            list_type_attributes=self[LIST_TYPE_ATTRIBUTES],
        )

    @classmethod
    def parse(cls, text: str | None) -> FeatureGates:
        gates = cls()
        for part in (text or "").split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            name = name.strip()
            if not sep:
                raise FeatureGateError(f"feature gate {part!r}: expected Name=true|false")
            if name not in KNOWN_GATES:
                known = ", ".join(sorted(KNOWN_GATES))
                raise FeatureGateError(f"unrecognized feature gate {name!r} (known: {known})")
            v = value.strip().lower()
            if v not in ("true", "false"):
                raise FeatureGateError(f"feature gate {name}: invalid value {value!r}, expected true or false")
            gates.enabled[name] = v == "true"
        return gates

    def __str__(self) -> str:
        return ",".join(f"{k}={str(v).lower()}" for k, v in sorted(self.enabled.items()))


def dra_disabled_message() -> str:
    return (
        f"the {DRA} feature gate is disabled; enable it with --feature-gates={DRA}=true "
        f"(Helm: --set scheduler.additionalArgs[0]=--feature-gates={DRA}=true "
        f"--set binder.additionalArgs[0]=--feature-gates={DRA}=true)"
    )
