"""BindRequest construction: the scheduler's decision as KAI's ``scheduling.run.ai/v1alpha2`` object."""

from __future__ import annotations

import re

from kai_core.objects import random_suffix
from kai_core.resources import gpu_count, pod_requests

API_VERSION = "scheduling.run.ai/v1alpha2"
KIND = "BindRequest"
LABEL_SELECTED_NODE = "selected-node"
LABEL_POD_NAME = "pod-name"
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_NAME_SUFFIX_LEN = 10


def _label_value_ok(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_VALUE.fullmatch(value))


def bind_request_name(pod_name: str) -> str:
    """``<pod>-<10 random chars>``, as KAI names them, within the 253-character name limit."""
    return f"{pod_name[: 253 - _NAME_SUFFIX_LEN - 1]}-{random_suffix(_NAME_SUFFIX_LEN)}"


def build_bind_request(
    pod: dict,
    node_name: str,
    claim_allocations: list[tuple[str, dict]] = (),
    backoff_limit: int | None = None,
    annotations: dict | None = None,
) -> dict:
    """The BindRequest for placing ``pod`` on ``node_name``.

    ``claim_allocations`` pairs each of the pod's claim names (``spec.resourceClaims[].name``, not
    the ResourceClaim object's name) with its AllocationResult.
    """
    md = pod["metadata"]
    gpus = gpu_count(pod_requests(pod))
    labels = {}
    if _label_value_ok(node_name):
        labels[LABEL_SELECTED_NODE] = node_name
    if _label_value_ok(md["name"]):
        labels[LABEL_POD_NAME] = md["name"]
    spec: dict = {
        "podName": md["name"],
        "selectedNode": node_name,
        "receivedResourceType": "Regular",
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
