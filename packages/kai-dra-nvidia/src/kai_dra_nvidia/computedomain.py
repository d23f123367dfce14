"""The embedded ComputeDomain controller: what NVIDIA's ``compute-domain-controller`` does for
workloads, so that a ComputeDomain loaded into the embedded cluster behaves as on a GB200 cluster.

For every ``resource.nvidia.com/v1beta1`` ComputeDomain it:

- adds the finalizer ``resource.nvidia.com/computeDomain`` to the domain, so that deleting it
  lets the controller clean up first;
- creates, in the domain's namespace, the ResourceClaimTemplate named by
  ``spec.channel.resourceClaimTemplate.name``: one request ``channel`` of DeviceClass
  ``compute-domain-default-channel.nvidia.com`` and a ``ComputeDomainChannelConfig`` whose
  ``domainID`` is the domain's uid. The template carries the labels
  ``resource.nvidia.com/computeDomain: <uid>`` and ``resource.nvidia.com/computeDomainTarget:
  Workload`` and the same finalizer, as NVIDIA's does (no ownerReference: the controller, not the
  garbage collector, removes it). A template of that name that already exists is left alone;
- sets ``status.status`` as NVIDIA does (Ready once ``spec.numNodes`` nodes have joined), where a
  node joins when a running pod holds an allocated channel claim of the domain there (the embedded
  stand-in for the IMEX daemon that registers itself on such a node), and ``status.nodes``: one
  entry per joined node with its name, InternalIP, ``cliqueID`` (the node's
  ``nvidia.com/gpu.clique`` label), an index unique within the clique, and ``Ready`` (what
  ``kai-cli get computedomains -o wide`` shows as NODES);
- once the domain is being deleted, deletes its templates, then drops the finalizers; templates
  whose domain is gone altogether are cleaned up the same way.

What is left out: the per-domain IMEX daemon DaemonSet and its claim template (no kubelet runs
them here), node labels and ComputeDomainClique objects.

Every write happens only when something differs from the wanted state, so a second reconcile of an
unchanged cluster writes nothing.
"""

from __future__ import annotations

import logging

from kai_core.api.errors import ApiError, NotFound, UnknownKind
from kai_core.api.objects import clone
from kai_core.api.resources import RES_CLAIM_TEMPLATES, RES_CLAIMS, RES_NODES, RES_PODS
from kai_dra_nvidia.config import (
    ALLOCATION_MODE_ALL,
    API_VERSION,
    CHANNEL_CONFIG_KIND,
    DRIVER,
    domain_of_devices,
)

log = logging.getLogger("kai.nvidia.computedomain")

RES_COMPUTE_DOMAINS = "computedomains.resource.nvidia.com"
COMPUTE_DOMAIN_KIND = "ComputeDomain"
#: label naming the uid of the ComputeDomain an object belongs to; also the finalizer's name
COMPUTE_DOMAIN_LABEL = "resource.nvidia.com/computeDomain"
COMPUTE_DOMAIN_FINALIZER = COMPUTE_DOMAIN_LABEL
TARGET_LABEL = "resource.nvidia.com/computeDomainTarget"
TARGET_WORKLOAD = "Workload"
DEFAULT_CHANNEL_CLASS = "compute-domain-default-channel.nvidia.com"
CHANNEL_REQUEST = "channel"
CLIQUE_LABEL = "nvidia.com/gpu.clique"
STATUS_READY = "Ready"
STATUS_NOT_READY = "NotReady"


def channel_config(domain: dict) -> dict:
    """The ``ComputeDomainChannelConfig`` parameters for a domain's workload channel.

    ``allocationMode`` is written only for ``All``: the driver treats a missing mode as ``Single``,
    and NVIDIA's templates for single-channel domains carry only apiVersion, kind and domainID
    (that is what the allocation in KAI's documented BindRequest shows).
    """
    params = {"apiVersion": API_VERSION, "kind": CHANNEL_CONFIG_KIND, "domainID": domain["metadata"]["uid"]}
    channel = (domain.get("spec") or {}).get("channel") or {}
    if channel.get("allocationMode") == ALLOCATION_MODE_ALL:
        params["allocationMode"] = ALLOCATION_MODE_ALL
    return params


def template_name(domain: dict) -> str | None:
    """``spec.channel.resourceClaimTemplate.name`` of a domain, or None when it is not set."""
    channel = (domain.get("spec") or {}).get("channel") or {}
    name = (channel.get("resourceClaimTemplate") or {}).get("name") if isinstance(channel, dict) else None
    return name if isinstance(name, str) and name else None


def workload_claim_template(domain: dict) -> dict:
    """The ResourceClaimTemplate NVIDIA's controller creates for a ComputeDomain's workload pods."""
    md = domain["metadata"]
    uid = md["uid"]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {
            "name": template_name(domain),
            "namespace": md.get("namespace") or "default",
            "labels": {COMPUTE_DOMAIN_LABEL: uid, TARGET_LABEL: TARGET_WORKLOAD},
            "finalizers": [COMPUTE_DOMAIN_FINALIZER],
        },
        "spec": {
            "spec": {
                "devices": {
                    "requests": [
                        {
                            "name": CHANNEL_REQUEST,
                            "exactly": {
                                "deviceClassName": DEFAULT_CHANNEL_CLASS,
                                "allocationMode": "ExactCount",
                                "count": 1,
                            },
                        }
                    ],
                    "config": [
                        {
                            "requests": [CHANNEL_REQUEST],
                            "opaque": {"driver": DRIVER, "parameters": channel_config(domain)},
                        }
                    ],
                }
            }
        },
    }


def _list(store, resource: str, label_selector: str | None = None) -> list[dict]:
    """Stored objects without copies where the store allows it (they are only read here)."""
    lister = getattr(store, "list_refs", None) or store.list
    items, _ = lister(resource, label_selector=label_selector)
    return items


def _key(obj: dict) -> tuple[str, str]:
    md = obj["metadata"]
    return md.get("namespace", ""), md["name"]


def _describe(domain: dict) -> str:
    md = domain["metadata"]
    return f"ComputeDomain {md.get('namespace', '')}/{md['name']}"


class ComputeDomainController:
    """Reconciles ComputeDomains in the embedded cluster (see the module docstring)."""

    name = "compute-domain"

    def __init__(self) -> None:
        # (domain uid, problem) already logged, so a lasting problem is reported once
        self._warned: set[tuple[str, str]] = set()

    def reconcile(self, store) -> None:
        """One pass over every ComputeDomain and every template labelled as a domain's workload
        template. Write failures (a conflict, a namespace going away) are logged and retried next
        round; one domain's failure does not hold up the others."""
        try:
            domains = _list(store, RES_COMPUTE_DOMAINS)
        except UnknownKind:
            return  # the ComputeDomain CRD is not served: nothing to do
        templates = _list(
            store, RES_CLAIM_TEMPLATES, f"{COMPUTE_DOMAIN_LABEL},{TARGET_LABEL}={TARGET_WORKLOAD}"
        )
        by_uid: dict[str, list[dict]] = {}
        for t in templates:
            by_uid.setdefault(t["metadata"]["labels"][COMPUTE_DOMAIN_LABEL], []).append(t)
        live = {d["metadata"]["uid"] for d in domains}
        joined = self._joined_nodes(store, live) if domains else {}
        for domain in domains:
            uid = domain["metadata"]["uid"]
            try:
                if domain["metadata"].get("deletionTimestamp"):
                    self._finalize(store, domain, by_uid.get(uid, []))
                else:
                    self._ensure(store, domain, by_uid.get(uid, []), joined.get(uid, set()))
            except ApiError as exc:  # retried next round; a lasting failure is logged once
                self._warn_once(uid, f"{_describe(domain)}: {exc.message} (retried every round)")
        for uid, orphans in by_uid.items():
            if uid not in live:
                for t in orphans:
                    self._remove_template(store, t)

    # -- one domain -------------------------------------------------------------------------------

    def _ensure(self, store, domain: dict, owned: list[dict], joined: set[str]) -> None:
        finalizers = domain["metadata"].get("finalizers") or []
        if COMPUTE_DOMAIN_FINALIZER not in finalizers:
            new = clone(domain)
            new["metadata"]["finalizers"] = [*finalizers, COMPUTE_DOMAIN_FINALIZER]
            domain = store.update(new)
        if not owned:
            self._create_template(store, domain)
        self._update_status(store, domain, joined)

    def _create_template(self, store, domain: dict) -> None:
        uid = domain["metadata"]["uid"]
        name = template_name(domain)
        if name is None:
            self._warn_once(uid, f"{_describe(domain)} has no spec.channel.resourceClaimTemplate.name")
            return
        namespace = domain["metadata"].get("namespace") or "default"
        try:
            existing = store.get(RES_CLAIM_TEMPLATES, name, namespace)
        except NotFound:
            existing = None
        if existing is not None:
            # not labelled for this domain (those were found by label): someone else's, leave it
            self._warn_once(
                uid,
                f"{_describe(domain)}: ResourceClaimTemplate {namespace}/{name} already "
                "exists and was not created for this ComputeDomain; leaving it alone",
            )
            return
        store.create(workload_claim_template(domain))
        log.info("%s: created ResourceClaimTemplate %s/%s", _describe(domain), namespace, name)

    def _update_status(self, store, domain: dict, joined: set[str]) -> None:
        old = domain.get("status") or {}
        nodes = self._status_nodes(store, old.get("nodes") or [], joined)
        num_nodes = (domain.get("spec") or {}).get("numNodes") or 0
        ready = len(nodes) >= num_nodes and all(n.get("status") != STATUS_NOT_READY for n in nodes)
        status = {"status": STATUS_READY if ready else STATUS_NOT_READY}
        if nodes:
            status["nodes"] = nodes
        if status == old:
            return
        new = clone(domain)
        new["status"] = status
        store.update_status(new)

    def _status_nodes(self, store, current: list[dict], joined: set[str]) -> list[dict]:
        """Nodes of the domain: entries of nodes that still host its workload are kept as they are;
        a node that joined gets its address, its clique and the lowest free index in that clique."""
        kept = [n for n in current if isinstance(n, dict) and n.get("name") in joined]
        taken = {(n.get("cliqueID"), n.get("index")) for n in kept}
        have = {n.get("name") for n in kept}
        for node_name in sorted(joined - have):
            try:
                node = store.get(RES_NODES, node_name)
            except NotFound:
                continue
            clique = ((node["metadata"].get("labels") or {}).get(CLIQUE_LABEL)) or ""
            index = 0
            while (clique, index) in taken:
                index += 1
            taken.add((clique, index))
            kept.append(
                {
                    "name": node_name,
                    "ipAddress": _internal_ip(node),
                    "cliqueID": clique,
                    "index": index,
                    "status": STATUS_READY,
                }
            )
        return sorted(kept, key=lambda n: n.get("name", ""))

    def _joined_nodes(self, store, domain_uids: set[str]) -> dict[str, set[str]]:
        """domain uid -> names of the nodes where a running pod holds an allocated channel claim of
        that domain (the nodes whose IMEX daemon would have registered with the domain)."""
        out: dict[str, set[str]] = {}
        pods: dict[tuple[str, str], dict] | None = None
        for claim in _list(store, RES_CLAIMS):
            status = claim.get("status") or {}
            allocation = status.get("allocation")
            if not allocation or not status.get("reservedFor"):
                continue
            uid = channel_domain(allocation)
            if uid not in domain_uids:
                continue
            if pods is None:
                pods = {_key(p): p for p in _list(store, RES_PODS)}
            ns = claim["metadata"].get("namespace", "")
            for consumer in status["reservedFor"]:
                pod = pods.get((ns, consumer.get("name", ""))) if consumer.get("resource") == "pods" else None
                if pod is None or pod["metadata"].get("uid") != consumer.get("uid"):
                    continue
                node = (pod.get("spec") or {}).get("nodeName")
                if node and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                    out.setdefault(uid, set()).add(node)
        return out

    # -- deletion ---------------------------------------------------------------------------------

    def _finalize(self, store, domain: dict, owned: list[dict]) -> None:
        for template in owned:
            self._remove_template(store, template)
        finalizers = domain["metadata"].get("finalizers") or []
        if COMPUTE_DOMAIN_FINALIZER in finalizers:
            new = clone(domain)
            new["metadata"]["finalizers"] = [f for f in finalizers if f != COMPUTE_DOMAIN_FINALIZER]
            store.update(new)
            log.info("%s: cleaned up, finalizer removed", _describe(domain))

    def _remove_template(self, store, template: dict) -> None:
        """Delete a domain's template, then drop the domain finalizer so the deletion completes."""
        namespace, name = _key(template)
        try:
            if not template["metadata"].get("deletionTimestamp"):
                store.delete(RES_CLAIM_TEMPLATES, name, namespace)
            current = store.get(RES_CLAIM_TEMPLATES, name, namespace)
        except NotFound:
            return
        except ApiError as exc:
            log.warning("ResourceClaimTemplate %s/%s: %s (retried next round)", namespace, name, exc.message)
            return
        finalizers = current["metadata"].get("finalizers") or []
        if COMPUTE_DOMAIN_FINALIZER not in finalizers:
            return
        current["metadata"]["finalizers"] = [f for f in finalizers if f != COMPUTE_DOMAIN_FINALIZER]
        try:
            store.update(current)
        except ApiError as exc:
            log.warning("ResourceClaimTemplate %s/%s: %s (retried next round)", namespace, name, exc.message)

    def _warn_once(self, uid: str, message: str) -> None:
        if (uid, message) not in self._warned:
            self._warned.add((uid, message))
            log.warning("%s", message)


def channel_domain(allocation: dict) -> str | None:
    """The domainID of the ComputeDomainChannelConfig in a claim's allocation, if it has one."""
    return domain_of_devices(allocation.get("devices"))


def _internal_ip(node: dict) -> str:
    for address in (node.get("status") or {}).get("addresses") or []:
        if isinstance(address, dict) and address.get("type") == "InternalIP":
            return str(address.get("address", ""))
    return ""
