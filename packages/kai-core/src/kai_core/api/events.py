"""Events about pods, as the scheduler and the binder record them (``v1`` Event, kubectl's
``describe pod`` shows them)."""

from __future__ import annotations

from kai_core.api.objects import now_rfc3339


def pod_event(pod_ref: dict, type_: str, reason: str, message: str, component: str, *,
              name: str | None = None) -> dict:
    """An Event about a pod. ``pod_ref`` has the pod's ``name``, ``namespace`` and ``uid``;
    ``type_`` is ``Normal`` or ``Warning``. ``name`` gives the Event a fixed name (so recording it
    twice is an AlreadyExists, not a second Event); without it the server generates one."""
    ns = pod_ref.get("namespace") or "default"
    ts = now_rfc3339()
    metadata = {"name": name} if name else {"generateName": f"{pod_ref['name']}."}
    metadata["namespace"] = ns
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": metadata,
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod_ref["name"], "namespace": ns,
                           "uid": pod_ref.get("uid")},
        "type": type_,
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
    }
