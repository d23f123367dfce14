"""Every built-in object in the state after the seed scenario (pods with their conditions and claim
statuses, claims written by the binder, events, templates made by the controllers) passes the
upstream Kubernetes schema, strictly."""

from __future__ import annotations

import kubernetes_validate
import pytest

from kai_core.apiserver.schema import CrdValidator, load_crd

K8S_VERSION = "1.34.0"  # the first release serving resource.k8s.io/v1


def test_seed_state_passes_kubernetes_validate_strict(scenario, demo_path):
    sc = scenario(demo_path)
    assert sc.run().bound == 1
    checked = set()
    for obj in sc.store.all_objects():
        group = obj["apiVersion"].rpartition("/")[0]
        if group not in ("", "resource.k8s.io"):
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
        checked.add(obj["kind"])
    assert {"Pod", "Node", "Event", "ResourceClaim", "ResourceClaimTemplate", "ResourceSlice",
            "DeviceClass"} - checked <= {"Event"}


def test_bind_requests_valid_against_kai_crd_with_gate_off_and_on(scenario, demo_path, upstream_dir, tmp_path):
    kai = CrdValidator(load_crd(upstream_dir / "kai-scheduler.bindrequests.crd.yaml"))
    sc = scenario(demo_path)
    sc.run()
    brs = sc.list("bindrequests.scheduling.run.ai")
    assert brs
    for br in brs:
        assert kai.errors(br) == []
