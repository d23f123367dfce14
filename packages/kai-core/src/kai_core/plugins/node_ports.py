"""Filter (kube-scheduler's NodePorts): a pod's host ports must be free on the node.

The ports of a pod are the ``hostPort`` of its containers' ports and of its restartable init
containers' (sidecars, which run as long as the pod); a port without ``hostPort`` (or 0) takes
nothing. Protocol defaults to TCP and ``hostIP`` to ``0.0.0.0``, which conflicts with every IP on
the same protocol and port; two specific IPs conflict only when equal. Ports in use are those of
the pods on the node: bound, in flight, and placed earlier in this cycle (gang members included).

A pod without host ports costs one look at its spec.
"""

from __future__ import annotations

from kai_core.framework.hookspecs import hookimpl
from kai_core.plugins.placed_pods import placed_pods

REASON = "node(s) didn't have free ports for the requested pod ports"
ANY_IP = "0.0.0.0"

HostPort = tuple[str, str, int]  # (ip, protocol, port)


def host_ports(pod: dict) -> list[HostPort]:
    """The pod's host ports as ``(ip, protocol, port)``, defaults applied."""
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return []
    containers = [c for c in spec.get("initContainers") or []
                  if isinstance(c, dict) and c.get("restartPolicy") == "Always"]
    containers += spec.get("containers") or []
    out = []
    for c in containers:
        ports = c.get("ports") if isinstance(c, dict) else None
        for p in ports if isinstance(ports, list) else ():
            port = p.get("hostPort") if isinstance(p, dict) else None
            if isinstance(port, int) and not isinstance(port, bool) and port > 0:
                out.append((p.get("hostIP") or ANY_IP, p.get("protocol") or "TCP", port))
    return out


def _port_keys(pod: dict) -> set[tuple[str, int]]:
    return {(proto, port) for _ip, proto, port in host_ports(pod)}


def _conflicts(a: str, b: str) -> bool:
    return a == b or a == ANY_IP or b == ANY_IP


def busy_nodes(pod: dict, snapshot) -> set[str]:
    """Nodes where some pod holds one of ``pod``'s host ports."""
    wanted = host_ports(pod)
    if not wanted:
        return set()
    view = placed_pods(snapshot)
    users = view.index("host-ports", _port_keys)
    out: set[str] = set()
    for ip, proto, port in wanted:
        for key, other in (users.get((proto, port)) or {}).items():
            node = view.node_of(key)
            if node in out or node is None:
                continue
            if any(_conflicts(ip, oip) for oip, oproto, oport in host_ports(other)
                   if oproto == proto and oport == port):
                out.add(node)
    return out


@hookimpl(tryfirst=True)
def kai_filter_nodes(pod, nodes, snapshot):
    if not host_ports(pod):
        return None
    return dict.fromkeys(busy_nodes(pod, snapshot), REASON)
