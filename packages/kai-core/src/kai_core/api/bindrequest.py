"""BindRequest construction: the scheduler's decision as KAI's ``scheduling.run.ai/v1alpha2`` object.

The shape is KAI's (see ``docs/dra/README.md`` of KAI-Scheduler and its CRD), so the object
validates against KAI's own BindRequest CRD and KAI's binder could carry it out:

- name ``<pod>-<10 random characters>``, in the pod's namespace;
- labels ``selected-node`` and ``pod-name`` (each only when the value is a valid label value);
- one ownerReference to the Pod (``apiVersion: v1``, ``kind``, ``name``, ``uid``; no ``controller``
  flag), so the request is garbage-collected with its pod;
- ``spec.podName``, ``spec.selectedNode``, ``spec.receivedResourceType: Regular``,
  ``spec.receivedGPU {count, portion}`` from the pod's whole ``nvidia.com/gpu`` request,
  ``spec.resourceClaimAllocations[{name, allocation}]`` keyed by the pod's own claim names, and
  ``spec.backoffLimit`` only when configured (KAI's scheduler never sets it).
"""

from __future__ import annotations

import re

from kai_core.api.objects import random_suffix
from kai_core.api.resources import gpu_count, pod_requests

API_VERSION = "scheduling.run.ai/v1alpha2"
KIND = "BindRequest"
LABEL_SELECTED_NODE = "selected-node"
LABEL_POD_NAME = "pod-name"
RESOURCE_TYPE_REGULAR = "Regular"
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_NAME_SUFFIX_LEN = 10
_MAX_NAME_LEN = 253


class BindRequestError(ValueError):
    """The pod cannot be described by a BindRequest (e.g. it has no name or uid)."""


def _label_value_ok(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_VALUE.fullmatch(value))


def bind_request_name(pod_name: str) -> str:
    """``<pod>-<10 random chars>``, as KAI names them, within the 253-character name limit."""
    return f"{pod_name[: _MAX_NAME_LEN - _NAME_SUFFIX_LEN - 1]}-{random_suffix(_NAME_SUFFIX_LEN)}"


def build_bind_request(
    pod: dict,
    node_name: str,
    claim_allocations: list[tuple[str, dict]] = (),
    backoff_limit: int | None = None,
    annotations: dict | None = None,
    requests: dict[str, int] | None = None,
) -> dict:
    """The BindRequest for placing ``pod`` on ``node_name``.

    ``claim_allocations`` pairs each of the pod's claim names (``spec.resourceClaims[].name``, not
    the ResourceClaim object's name) with its AllocationResult. ``requests`` is the pod's
    :func:`~kai_core.api.resources.pod_requests` when the caller already has it. Raises
    BindRequestError when the pod lacks a name or uid.
    """
    md = pod.get("metadata") or {}
    if not md.get("name") or not md.get("uid"):
        raise BindRequestError(
            f"pod {md.get('namespace', 'default')}/{md.get('name', '<unnamed>')}: a BindRequest needs the "
            "pod's name and uid (a pod read from the API server has both)"
        )
    gpus = gpu_count(requests if requests is not None else pod_requests(pod))
    labels = {}
    if _label_value_ok(node_name):
        labels[LABEL_SELECTED_NODE] = node_name
    if _label_value_ok(md["name"]):
        labels[LABEL_POD_NAME] = md["name"]
    spec: dict = {
        "podName": md["name"],
        "selectedNode": node_name,
        "receivedResourceType": RESOURCE_TYPE_REGULAR,
        "receivedGPU": {"count": gpus, "portion": "%.2f" % (1.0 if gpus else 0.0)},
    }
    if claim_allocations:
        spec["resourceClaimAllocations"] = [{"name": n, "allocation": a} for n, a in claim_allocations]
    if backoff_limit is not None:
        spec["backoffLimit"] = backoff_limit
    meta: dict = {
        "name": bind_request_name(md["name"]),
        "namespace": md.get("namespace", "default"),
        "labels": labels,
        "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": md["name"], "uid": md["uid"]}],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": spec}


def is_count(value: object) -> bool:
    """Whether ``value`` is a count (an int >= 0, not a bool), as ``backoffLimit`` and
    ``failedAttempts`` must be; anything else counts as absent or zero."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def failed_attempts(br: dict) -> int:
    """``status.failedAttempts``, 0 when absent or malformed."""
    status = br.get("status")
    n = status.get("failedAttempts") if isinstance(status, dict) else None
    return n if is_count(n) else 0


def failed_for_good(br: dict) -> bool:
    """A Failed BindRequest with no retries left (KAI's rule: a Failed request is tried again while
    ``failedAttempts < backoffLimit``; without a valid ``backoffLimit``, never). The scheduler deletes
    it and schedules the pod again; the binder leaves it alone."""
    status = br.get("status")
    if not isinstance(status, dict) or status.get("phase") != "Failed":
        return False  # a malformed status is no verdict (the schema refuses one; a store may not)
    spec = br.get("spec")
    limit = spec.get("backoffLimit") if isinstance(spec, dict) else None
    return not is_count(limit) or failed_attempts(br) >= limit
