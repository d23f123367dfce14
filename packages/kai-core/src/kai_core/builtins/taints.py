"""Filter: a node's NoSchedule and NoExecute taints must be tolerated by the pod."""

from __future__ import annotations

from kai_core.hookspecs import hookimpl


def toleration_matches(tol: dict, taint: dict) -> bool:
    if tol.get("effect") and tol["effect"] != taint.get("effect"):
        return False
    op = tol.get("operator") or "Equal"
    if not tol.get("key"):
        return op == "Exists"
    if tol["key"] != taint.get("key"):
        return False
    if op == "Exists":
        return True
    return (tol.get("value") or "") == (taint.get("value") or "")


def tolerates(tolerations: list[dict], taint: dict) -> bool:
    return any(toleration_matches(t, taint) for t in tolerations)


@hookimpl
def kai_filter_nodes(pod, nodes):
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    out = {}
    for n in nodes:
        for taint in n.taints:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
                value = f"={taint['value']}" if taint.get("value") else ""
                out[n.name] = f"node(s) had untolerated taint {{{taint.get('key')}{value}}}"
                break
    return out
