"""The embedded resourceclaim controller creates a pod's claims from its ResourceClaimTemplates the
way kube-controller-manager does: named ``<pod>-<podClaimName>-<5 random characters>``, the Pod as
controller owner, the ``resource.kubernetes.io/pod-claim-name`` annotation, and the claim's name
recorded in ``pod.status.resourceClaimStatuses``."""

from __future__ import annotations

import re

from kai_core.api.resources import RES_CLAIMS, RES_PODS
from kai_core.apiserver.controllers.resourceclaim import POD_CLAIM_NAME_ANNOTATION
from kai_core.cluster import EmbeddedCluster
from kai_core.plugins import build_plugin_manager


def template(name: str, labels: dict | None = None) -> dict:
    meta = {"labels": labels} if labels else {}
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"metadata": meta,
                     "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu"}}]}}}}


def pod(name: str, claims: dict[str, str]) -> dict:
    """A pod with one resourceClaims entry per ``{podClaimName: templateName}``."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"schedulerName": "kai-scheduler",
                     "containers": [{"name": "c", "image": "busybox:1",
                                     "resources": {"claims": [{"name": n} for n in claims]}}],
                     "resourceClaims": [{"name": n, "resourceClaimTemplateName": t} for n, t in claims.items()]}}


def cluster(*objs: dict) -> EmbeddedCluster:
    c = EmbeddedCluster(build_plugin_manager(load_external=False))
    for obj in objs:
        c.store.create(obj)
    return c


def claims_of(c: EmbeddedCluster) -> list[dict]:
    return c.store.list(RES_CLAIMS, "default")[0]


def test_a_claim_is_created_from_the_template_named_owned_and_recorded_on_the_pod():
    c = cluster(template("gpu-tmpl", labels={"team": "ml"}), pod("trainer", {"gpu": "gpu-tmpl"}))
    c.reconcile_controllers()

    [claim] = claims_of(c)
    p = c.store.get(RES_PODS, "trainer", "default")
    md = claim["metadata"]
    assert re.fullmatch(r"trainer-gpu-[bcdfghjklmnpqrstvwxz2456789]{5}", md["name"]), md["name"]
    assert md["annotations"][POD_CLAIM_NAME_ANNOTATION] == "gpu"
    assert md["labels"] == {"team": "ml"}  # the template's metadata is carried over
    assert md["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": "trainer",
                                      "uid": p["metadata"]["uid"], "controller": True,
                                      "blockOwnerDeletion": True}]
    assert claim["spec"]["devices"]["requests"][0]["exactly"]["deviceClassName"] == "gpu"
    assert p["status"]["resourceClaimStatuses"] == [{"name": "gpu", "resourceClaimName": md["name"]}]


def test_each_pod_claim_gets_its_own_claim_once():
    c = cluster(template("a"), template("b"), pod("p", {"first": "a", "second": "b"}))
    c.reconcile_controllers()
    c.reconcile_controllers()  # a second round creates nothing more

    names = sorted(cl["metadata"]["annotations"][POD_CLAIM_NAME_ANNOTATION] for cl in claims_of(c))
    assert names == ["first", "second"]
    statuses = c.store.get(RES_PODS, "p", "default")["status"]["resourceClaimStatuses"]
    assert {s["name"] for s in statuses} == {"first", "second"}


def test_long_names_are_shortened_to_fit_a_name():
    long_pod, long_claim = "p" * 60, "c" * 40
    c = cluster(template("t"), pod(long_pod, {long_claim: "t"}))
    c.reconcile_controllers()
    [claim] = claims_of(c)
    name = claim["metadata"]["name"]
    assert len(name) <= 63 and name.startswith("p") and "-c" in name


def test_a_missing_template_creates_nothing_until_it_appears():
    c = cluster(pod("p", {"gpu": "later"}))
    c.reconcile_controllers()
    assert claims_of(c) == []
    assert not (c.store.get(RES_PODS, "p", "default").get("status") or {}).get("resourceClaimStatuses")

    c.store.create(template("later"))
    c.reconcile_controllers()
    [claim] = claims_of(c)
    assert claim["metadata"]["name"].startswith("p-gpu-")


def test_the_claim_goes_with_its_pod():
    c = cluster(template("t"), pod("p", {"gpu": "t"}))
    c.reconcile_controllers()
    assert len(claims_of(c)) == 1
    c.store.delete(RES_PODS, "p", "default")
    c.reconcile_controllers()
    assert claims_of(c) == []  # ownerReference garbage collection
