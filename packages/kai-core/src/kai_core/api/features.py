"""Feature gates, parsed from ``--feature-gates=Name=true,Other=false`` as Kubernetes components do."""

from __future__ import annotations

from dataclasses import dataclass, field

#: gate -> (default, description)
KNOWN_GATES: dict[str, tuple[bool, str]] = {
    "DynamicResourceAllocation": (
        False,
        "schedule pods with resource claims (resource.k8s.io) and allocate their devices",
    ),
}

DRA = "DynamicResourceAllocation"


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
