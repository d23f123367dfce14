"""Validation of ``compute-domain.nvidia.com`` opaque configs, alone and as the plugin's
``kai_check_configs`` (kai walks the claims and classes and words the pod's reason)."""

from __future__ import annotations

import pytest

from kai_core.api.features import FeatureGates
from kai_core.api.resources import RES_PODS
from kai_core.cluster import EmbeddedCluster
from kai_core.framework.cache import Cache
from kai_core.framework.snapshot import Snapshot
from kai_core.plugins import build_plugin_manager
from kai_core.scheduler.cycle import Scheduler, SchedulerConfig, watched_resources
from kai_dra_nvidia.config import is_uuid, parameters_problems

UID = "83479f70-e292-43d6-aa67-dd4ba8adab8f"
API = "resource.nvidia.com/v1beta1"
DRA_ON = "DynamicResourceAllocation=true"


def channel(**over) -> dict:
    params = {"apiVersion": API, "kind": "ComputeDomainChannelConfig", "domainID": UID}
    params.update(over)
    return {k: v for k, v in params.items() if v is not None}


VALID = {
    "channel": channel(),
    "channel-single": channel(allocationMode="Single"),
    "channel-all": channel(allocationMode="All"),
    "channel-upper-case-uid": channel(domainID=UID.upper()),
    "daemon": {"apiVersion": API, "kind": "ComputeDomainDaemonConfig", "domainID": UID},
}

INVALID = {
    "not-an-object": ("just-a-string", "parameters must be an object"),
    "no-apiVersion": (
        channel(apiVersion=None),
        "parameters.apiVersion is missing (expected resource.nvidia.com/v1beta1)",
    ),
    "old-apiVersion": (
        channel(apiVersion="nvidia.com/v1alpha1"),
        "parameters.apiVersion 'nvidia.com/v1alpha1' is not",
    ),
    "no-kind": (channel(kind=None), "parameters.kind is missing"),
    "gpu-kind": (
        channel(kind="GpuConfig"),
        "parameters.kind 'GpuConfig' is not ComputeDomainChannelConfig or",
    ),
    "no-domainID": (channel(domainID=None), "parameters.domainID is required (the uid of the ComputeDomain)"),
    "empty-domainID": (channel(domainID=""), "parameters.domainID is required"),
    "domain-name-not-uid": (
        channel(domainID="imex-domain"),
        "parameters.domainID 'imex-domain' is not a UUID",
    ),
    "numeric-domainID": (channel(domainID=7), "parameters.domainID must be a string, got a number"),
    "path-in-domainID": (channel(domainID="../../etc"), "is not a UUID"),
    "bad-mode": (channel(allocationMode="Many"), "parameters.allocationMode 'Many' is not Single or All"),
    "lower-case-mode": (
        channel(allocationMode="all"),
        "parameters.allocationMode 'all' is not Single or All",
    ),
    "typo-field": (
        channel(domainId=UID, domainID=None),
        "unknown field 'domainId' in ComputeDomainChannelConfig",
    ),
    "mode-on-daemon": (
        {"apiVersion": API, "kind": "ComputeDomainDaemonConfig", "domainID": UID, "allocationMode": "All"},
        "unknown field 'allocationMode' in ComputeDomainDaemonConfig",
    ),
}


@pytest.mark.parametrize("params", VALID.values(), ids=VALID.keys())
def test_valid_parameters(params):
    assert parameters_problems(params) == []


@pytest.mark.parametrize(("params", "problem"), INVALID.values(), ids=INVALID.keys())
def test_invalid_parameters_say_what_is_wrong(params, problem):
    problems = parameters_problems(params)
    assert any(problem in p for p in problems), problems


def test_every_problem_is_reported_at_once():
    problems = parameters_problems(
        {"kind": "ComputeDomainChannelConfig", "domainID": "x", "allocationMode": "Both"}
    )
    assert len(problems) == 3, problems


def test_uuid_check():
    assert is_uuid(UID)
    assert not is_uuid(UID + "0") and not is_uuid("{" + UID + "}") and not is_uuid(UID.replace("-", ""))
    assert not is_uuid(None)


# -- as the scheduler sees it -------------------------------------------------------------------


def claim_spec(
    params: dict | None = None, class_name: str = "compute-domain-default-channel.nvidia.com"
) -> dict:
    spec: dict = {"devices": {"requests": [{"name": "channel", "exactly": {"deviceClassName": class_name}}]}}
    if params is not None:
        spec["devices"]["config"] = [
            {"requests": ["channel"], "opaque": {"driver": "compute-domain.nvidia.com", "parameters": params}}
        ]
    return spec


class World:
    """An embedded cluster with the plugin found through its entry point, and snapshot helpers."""

    def __init__(self) -> None:
        self.pm = build_plugin_manager()
        self.cluster = EmbeddedCluster(self.pm)
        self.store = self.cluster.store
        self.store.create(
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "DeviceClass",
                "metadata": {"name": "compute-domain-default-channel.nvidia.com"},
                "spec": {},
            }
        )

    def pod(self, name: str, claim_spec_: dict | None) -> dict:
        spec: dict = {"schedulerName": "kai-scheduler", "containers": [{"name": "c", "image": "busybox"}]}
        if claim_spec_ is not None:
            self.store.create(
                {
                    "apiVersion": "resource.k8s.io/v1",
                    "kind": "ResourceClaim",
                    "metadata": {"name": f"{name}-channel", "namespace": "default"},
                    "spec": claim_spec_,
                }
            )
            spec["resourceClaims"] = [{"name": "imex", "resourceClaimName": f"{name}-channel"}]
        return self.store.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "default"},
                "spec": spec,
            }
        )

    def snapshot(self, gates: str = DRA_ON) -> Snapshot:
        features = FeatureGates.parse(gates)
        cache = Cache(self.store, watched_resources(features.dra))
        cache.sync()
        return Snapshot(cache, "kai-scheduler", features)

    def config_reason(self, pod: dict, gates: str = DRA_ON) -> str | None:
        """The pod's reason from the config checks (``kai_check_configs``), or None."""
        status = self.pm.check_configs(pod, self.snapshot(gates))
        return None if status.ok else status.message


@pytest.fixture
def world() -> World:
    return World()


def test_plugin_is_loaded_from_its_entry_point(world):
    assert world.pm.has_plugin("dra-nvidia")
    info = next(i for i in world.pm.info() if i.name == "dra-nvidia")
    assert info.distribution == "kai-dra-nvidia"
    assert {"kai_check_configs", "kai_resource_kinds", "kai_embedded_controllers"} <= set(info.hooks)


def test_valid_claim_passes(world):
    pod = world.pod("ok", claim_spec(channel()))
    assert world.config_reason(pod) is None


def test_pod_without_claims_passes(world):
    pod = world.pod("plain", None)
    assert world.config_reason(pod) is None


def test_only_our_drivers_configs_are_checked_and_the_first_bad_one_is_named(world):
    spec = claim_spec(channel())
    spec["devices"]["config"] += [
        {"opaque": {"driver": "example.com", "parameters": {"anything": "goes"}}},
        {"opaque": {"driver": "compute-domain.nvidia.com", "parameters": channel(domainID="nope")}},
        {"opaque": {"driver": "gpu.nvidia.com", "parameters": {"kind": "GpuConfig"}}},
    ]
    assert world.config_reason(world.pod("mixed", spec)) == (
        'pod claim "imex" (ResourceClaim "default/mixed-channel"): spec.devices.config[2] '
        "(compute-domain.nvidia.com ComputeDomainChannelConfig): "
        "parameters.domainID 'nope' is not a UUID (it must be the uid of a ComputeDomain)"
    )


def test_bad_claim_config_is_named_in_the_reason(world):
    pod = world.pod("bad", claim_spec(channel(domainID="imex-domain")))
    assert world.config_reason(pod) == (
        'pod claim "imex" (ResourceClaim "default/bad-channel"): spec.devices.config[0] '
        "(compute-domain.nvidia.com ComputeDomainChannelConfig): parameters.domainID 'imex-domain' is not a UUID "
        "(it must be the uid of a ComputeDomain)"
    )


def test_bad_device_class_config_is_named_in_the_reason(world):
    world.store.create(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "DeviceClass",
            "metadata": {"name": "broken-channel"},
            "spec": {
                "config": [
                    {
                        "opaque": {
                            "driver": "compute-domain.nvidia.com",
                            "parameters": channel(kind="ComputeDomainConfig"),
                        }
                    }
                ]
            },
        }
    )
    pod = world.pod("cls", claim_spec(channel(), class_name="broken-channel"))
    reason = world.config_reason(pod)
    assert reason.startswith(
        'pod claim "imex" (ResourceClaim "default/cls-channel"): DeviceClass "broken-channel" '
        '(used by request "channel"): spec.config[0] (compute-domain.nvidia.com ComputeDomainConfig): '
    )
    assert "parameters.kind 'ComputeDomainConfig'" in reason


def test_unresolved_claims_and_gate_off_are_left_to_the_core(world):
    pod = world.store.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "waiting", "namespace": "default"},
            "spec": {
                "containers": [{"name": "c", "image": "busybox"}],
                "resourceClaims": [{"name": "imex", "resourceClaimTemplateName": "nope"}],
            },
        }
    )
    assert world.config_reason(pod) is None
    bad = world.pod("bad", claim_spec(channel(domainID="x")))
    assert world.config_reason(bad, gates="") is None


def test_scheduler_reports_the_reason_on_the_pod(world):
    world.pod("bad", claim_spec(channel(allocationMode="Every")))
    scheduler = Scheduler(world.store, world.pm, SchedulerConfig(features=FeatureGates.parse(DRA_ON)))
    result = scheduler.run_cycle()
    assert result.unschedulable == 1 and result.scheduled == 0
    pod = world.store.get(RES_PODS, "bad", "default")
    cond = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert cond["status"] == "False"
    assert "parameters.allocationMode 'Every' is not Single or All" in cond["message"]
    assert 'pod claim "imex"' in cond["message"]
