"""The RBAC check of the ``kai`` fixture has teeth: what the chart does not allow a ServiceAccount
is refused by the real API server and named, verb and resource."""

from __future__ import annotations


def test_the_binder_as_the_schedulers_service_account_is_refused_and_named(kube, kai, nodes, namespace, nvidia):
    """The scheduler's ServiceAccount may never bind a pod: a binder running with its token (and its
    Lease; the scheduler runs without leader election) cannot write the claim the BindRequest
    allocates, the pod stays unbound, and the refusal is reported as ``update
    resourceclaims.resource.k8s.io in <ns> (kai-scheduler: 403)``."""
    nodes.add_gb200(1)
    kai.start("scheduler", helm_flags="--set scheduler.leaderElection=false")
    kai.start("binder", "--leader-elect-resource-name=kai-scheduler", as_component="scheduler")
    kube.create({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
        "metadata": {"name": "one-gpu", "namespace": namespace},
        "spec": {"spec": {"devices": {"requests": [
            {"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com"}}]}}},
    })
    kube.create({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": namespace},
        "spec": {"schedulerName": "kai-scheduler",
                 "containers": [{"name": "ctr", "image": "ubuntu:22.04", "resources": {"claims": [{"name": "gpu"}]}}],
                 "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}]},
    })
    refused = f"update resourceclaims.resource.k8s.io in {namespace} (kai-scheduler: 403)"
    kai.wait_for(lambda: refused in kai.forbidden(), "the binder's claim write to be refused")
    kai.stop()
    denied = kai.take_forbidden()
    assert refused in denied
    assert all(d.endswith("(kai-scheduler: 403)") for d in denied), denied
    assert kube.get("v1", "Pod", "p", namespace)["spec"].get("nodeName") is None
