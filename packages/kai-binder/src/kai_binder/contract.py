"""KAI's BindRequest spec, field by field: what this binder carries out, what it refuses, and the pod
annotations KAI's binder writes.

Every field of KAI's ``scheduling.run.ai/v1alpha2`` spec (KAI-Scheduler
``pkg/apis/scheduling/v1alpha2/bindrequest_types.go``) is either carried out or refused, so a pod is
never bound without something its BindRequest asked for:

- ``podName``, ``selectedNode``, ``resourceClaimAllocations``, ``backoffLimit``: carried out by the
  binder (:mod:`kai_binder.binder`, :mod:`kai_binder.dra`);
- ``extendedResourceClaimAllocation`` (DRA-backed extended resources, KEP-5004): carried out by
  :mod:`kai_binder.extended`, with DRA on (refused with it off);
- ``receivedResourceType``: ``Regular``, ``MigInstance`` and ``""`` need nothing but the pod
  annotation (KAI's binder too does nothing else for them: the kubelet's device plugin hands out the
  devices the pod's extended resources name). ``Fraction`` (GPU sharing: a reservation pod per shared
  GPU, ``NVIDIA_VISIBLE_DEVICES`` from its index) is refused: this binder has no GPU sharing, and a
  fractional pod bound without it would run with no GPU at all. Any other value is refused too;
- ``receivedGPU`` and ``selectedGPUGroups``: read by KAI's binder only for ``Fraction``, refused
  with it;
- ``predictedNUMAZones``: written to the pod's annotation.

:func:`unsupported` names the field of a spec this binder cannot carry out; :func:`pod_annotations`
gives what KAI's binder merges into the pod's annotations before binding (``received-resource-type``
always, even empty, and ``kai.scheduler/numa-placement-predicted`` when there is a prediction). The
binder sends them in the ``pods/binding`` request itself, whose annotations the API server merges
into the pod's in the same write as ``spec.nodeName``: the pod is never bound without them, and it
costs no API call.
"""

from __future__ import annotations

import json

from kai_core.api.quantity import QuantityError, format_quantity, parse_quantity

#: pod annotation: the BindRequest's ``spec.receivedResourceType`` (KAI's constants.ReceivedResourceType)
RECEIVED_RESOURCE_TYPE_ANNOTATION = "received-resource-type"
#: pod annotation: the BindRequest's ``spec.predictedNUMAZones`` as JSON (KAI's constants.NumaPlacementPredicted)
NUMA_PLACEMENT_ANNOTATION = "kai.scheduler/numa-placement-predicted"
#: ``receivedResourceType`` values that need nothing of the binder but the annotation
CARRIED_OUT_TYPES = ("", "Regular", "MigInstance")
FRACTION = "Fraction"


def unsupported(spec: dict, dra: bool = True) -> str | None:
    """What of ``spec`` (a BindRequest's) this binder cannot carry out, naming the field; None when
    it can carry out all of it. ``dra``: whether the binder's DynamicResourceAllocation gate is on."""
    kind = spec.get("receivedResourceType", "")
    if kind == FRACTION:
        return ("spec.receivedResourceType: Fraction (GPU sharing) is not supported by this binder; "
                "binding the pod without it would leave it with no GPU")
    if kind not in CARRIED_OUT_TYPES:
        return (f"spec.receivedResourceType: {kind!r} is not supported by this binder "
                f"(it carries out {', '.join(repr(t) for t in CARRIED_OUT_TYPES)})")
    if spec.get("extendedResourceClaimAllocation") not in (None, {}) and not dra:
        return ("spec.extendedResourceClaimAllocation: extended resources backed by DRA need the "
                "DynamicResourceAllocation feature gate, which is off in this binder")
    return None


def pod_annotations(spec: dict) -> dict[str, str]:
    """The annotations KAI's binder merges into the pod before binding it."""
    out = {RECEIVED_RESOURCE_TYPE_ANNOTATION: str(spec.get("receivedResourceType") or "")}
    zones = spec.get("predictedNUMAZones")
    if zones:
        out[NUMA_PLACEMENT_ANNOTATION] = numa_placement(zones)
    return out


def numa_placement(zones: list) -> str:
    """``predictedNUMAZones`` as KAI's binder writes it (Go's ``json.Marshal``): compact, fields in
    the struct's order (``zone``, ``amount``), resource names sorted, quantities in canonical form."""
    out = []
    for z in zones:
        amount = {}
        for name in sorted(z.get("amount") or {}):
            amount[name] = _canonical(z["amount"][name])
        out.append({"zone": str(z.get("zone", "")), "amount": amount})
    return json.dumps(out, separators=(",", ":"))


def _canonical(value) -> str:
    """A quantity as ``resource.Quantity`` prints it: binary suffixes stay binary where they can."""
    try:
        parsed = parse_quantity(value)
    except QuantityError:
        return str(value)
    return format_quantity(parsed, binary=isinstance(value, str) and value.endswith("i"))
