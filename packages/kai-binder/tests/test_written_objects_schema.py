"""What the binder writes is what a real API server accepts: after bindings that failed (rolled back,
reported BindingError) and bindings that succeeded (claims with finalizer, allocation and
reservations; PodBound conditions; Events), every Pod, Event and ResourceClaim passes the upstream
schema with ``kubernetes-validate --strict``, and every BindRequest, in each phase it went through,
passes KAI's own CRD."""

from __future__ import annotations

import pytest

from kai_binder.binder import RECOMMENDED_OPTIONS
from kai_core.api.resources import RES_BIND_REQUESTS, RES_CLAIMS, RES_EVENTS, RES_PODS

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is missing")

K8S_VERSION = "1.34.0"  # the first release serving resource.k8s.io/v1


def _valid(obj: dict) -> None:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc.message} at {list(exc.absolute_path)}")


def test_objects_written_on_failure_and_success_pass_the_upstream_schemas(rig, upstream_dir):
    from kai_core.apiserver.schema import CrdValidator, load_crd

    crd = upstream_dir / "kai-scheduler.bindrequests.crd.yaml"
    if not crd.exists():
        pytest.skip(f"KAI's BindRequest CRD not found at {crd}")
    kai = CrdValidator(load_crd(crd))
    r = rig(pods=[rig.pod("p", claims=2, shared=["shared"]), rig.pod("q", shared=["shared"])],
            extra=rig.shared_claim("shared"), devices=3, backoff_limit=2, **RECOMMENDED_OPTIONS)
    r.schedule()
    r.faulty.refuse_binds = True
    assert r.bind().failed == 2
    seen_brs = list(r.store.list(RES_BIND_REQUESTS)[0])
    assert {b["status"]["phase"] for b in seen_brs} == {"Failed"}
    r.faulty.refuse_binds = False
    r.settle()
    seen_brs += r.store.list(RES_BIND_REQUESTS)[0]
    assert {b["status"]["phase"] for b in seen_brs} == {"Failed", "Succeeded"}
    for br in seen_brs:
        assert kai.errors(br) == [], br["metadata"]["name"]

    checked: dict[str, int] = {}
    for resource in (RES_PODS, RES_EVENTS, RES_CLAIMS):
        for obj in r.store.list(resource)[0]:
            _valid(obj)
            checked[obj["kind"]] = checked.get(obj["kind"], 0) + 1
    assert checked == {"Pod": 2, "Event": 4, "ResourceClaim": 3}  # BindingError and Bound for each pod
    shared = r.claim("shared")
    assert [x["name"] for x in shared["status"]["reservedFor"]] == ["p", "q"]
    for name in ("p", "q"):
        assert r.condition(name)["reason"] == "Bound"
