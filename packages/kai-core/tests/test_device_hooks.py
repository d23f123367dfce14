"""Device-level hooks: ``kai_filter_devices`` removes single devices with a reason (the pending
message names it), ``kai_rank_devices`` answers of several plugins are summed by device,
``kai_check_configs`` gets only its drivers' opaque configs with their path, and
:func:`kai_core.dra.pod_devices.device_use` says which drivers and classes a pod's claims can use."""

from __future__ import annotations

import pytest

from kai_core.api.features import FeatureGates
from kai_core.apiserver.manifests import parse_documents
from kai_core.cluster import EmbeddedCluster
from kai_core.dra.pod_devices import device_use
from kai_core.framework.hookspecs import hookimpl
from kai_core.framework.plugins import PluginRefused
from kai_core.plugins import build_plugin_manager
from kai_core.scheduler.cycle import Scheduler, SchedulerConfig
from kai_core.scheduler.explain import DecisionRecorder

GATES = FeatureGates.parse("DynamicResourceAllocation=true")


def slice_(driver: str, devices: str) -> str:
    return f"""
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {{name: n1-{driver}}}
spec:
  driver: {driver}
  nodeName: n1
  pool: {{name: n1, generation: 1, resourceSliceCount: 1}}
  devices: {devices}
"""


def device_class(name: str, config: str = "") -> str:
    return f"""
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {{name: {name}}}
spec:
  selectors: [{{cel: {{expression: "device.driver == '{name}'"}}}}]
{config}"""


CLUSTER = "\n---\n".join([
    """
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {allocatable: {cpu: "8", memory: 16Gi, pods: "10"}, conditions: [{type: Ready, status: "True"}]}
""",
    device_class("gpu.example.com"),
    device_class("nic.example.com", """  config:
  - opaque: {driver: nic.example.com, parameters: {kind: NicConfig, mtu: 9000}}
  - opaque: {driver: other.example.com, parameters: {x: 1}}"""),
    slice_("gpu.example.com", "[{name: gpu-0}, {name: gpu-1}]"),
    slice_("nic.example.com", """
  - {name: nic-0, attributes: {linkUp: {bool: false}, gbps: {int: 400}}}
  - {name: nic-1, attributes: {linkUp: {bool: true}, gbps: {int: 100}}}
  - {name: nic-2, attributes: {linkUp: {bool: true}, gbps: {int: 200}}}"""),
    """
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: c}
spec:
  devices:
    requests:
    - {name: gpu, exactly: {deviceClassName: gpu.example.com}}
    - {name: nic, exactly: {deviceClassName: nic.example.com}}
    config:
    - requests: [nic]
      opaque: {driver: nic.example.com, parameters: {kind: NicConfig, mtu: 100000}}
    - opaque: {driver: gpu.example.com, parameters: {kind: GpuConfig}}
""",
    """
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  schedulerName: kai-scheduler
  containers: [{name: c, image: busybox:1, resources: {claims: [{name: net}]}}]
  resourceClaims: [{name: net, resourceClaimName: c}]
""",
])


def schedule(*plugins, recorder: DecisionRecorder | None = None) -> tuple[dict[str, str], dict]:
    """The devices the pod got (request -> device) and the pod, after one cycle with ``plugins``
    (and ``recorder`` explaining the decisions)."""
    pm = build_plugin_manager(load_external=False)
    for name, plugin in plugins:
        pm.register(plugin, name=name)
    cluster = EmbeddedCluster(pm)
    for m in parse_documents(CLUSTER, "test"):
        cluster.store.restore(m.obj)
    scheduler = Scheduler(cluster.store, pm, SchedulerConfig(features=GATES))
    scheduler.recorder = recorder
    scheduler.run_cycle()
    pod = cluster.store.get("pods", "p", "default")
    brs = cluster.store.list("bindrequests.scheduling.run.ai")[0]
    if not brs:
        return {}, pod
    results = brs[0]["spec"]["resourceClaimAllocations"][0]["allocation"]["devices"]["results"]
    return {r["request"]: r["device"] for r in results}, pod


def message(pod: dict) -> str:
    [cond] = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"]
    return cond["message"]


class LinkDown:
    """Removes NICs whose link is down; records what it was handed."""

    def __init__(self, also: tuple[str, ...] = ()) -> None:
        self.calls: list[dict[str, list[str]]] = []
        self.also = also

    @hookimpl
    def kai_filter_devices(self, pod, requests, snapshot):
        self.calls.append({r.request: [d.id.device for d in r.devices] for r in requests})
        return {d.id: "NIC link down" for r in requests for d in r.devices
                if d.attributes.get("nic.example.com/linkUp") == ("bool", False) or d.id.device in self.also}


class Prefer:
    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores
        self.seen: list[list[str]] = []

    @hookimpl
    def kai_rank_devices(self, devices):
        self.seen.append([d.id.device for d in devices])
        return {d.id: self.scores[d.id.device] for d in devices if d.id.device in self.scores}


# -- kai_filter_devices --------------------------------------------------------------------------


def test_without_a_device_filter_the_down_nic_is_taken():
    assert schedule()[0] == {"gpu": "gpu-0", "nic": "nic-0"}


def test_a_removed_device_is_never_chosen_and_the_hook_runs_once_per_pod():
    plugin = LinkDown()
    assert schedule(("rdma", plugin))[0] == {"gpu": "gpu-0", "nic": "nic-1"}
    assert plugin.calls == [{"gpu": ["gpu-0", "gpu-1"], "nic": ["nic-0", "nic-1", "nic-2"]}]


def test_when_every_device_is_removed_the_explanation_names_the_plugin_and_reason():
    recorder = DecisionRecorder(["default/p"])
    picked, pod = schedule(("rdma", LinkDown(also=("nic-1", "nic-2"))), recorder=recorder)
    assert picked == {}
    assert message(pod) == "0/1 nodes are available: 1 cannot allocate all claims."  # kube-scheduler's words
    [verdict] = recorder.last["default/p"].verdicts  # what kai-cli explain shows
    assert verdict.reason == (
        "cannot allocate all claims: claim default/c request nic: needs 1 device of DeviceClass nic.example.com, "
        "0 free (3 match, 0 in use, 3 removed by plugin 'rdma': NIC link down)")


def test_removed_devices_are_not_handed_to_the_rankers():
    ranker = Prefer({"nic-0": 50})
    assert schedule(("rdma", LinkDown()), ("rank", ranker))[0]["nic"] == "nic-1"
    assert ranker.seen == [["gpu-0", "gpu-1", "nic-1", "nic-2"]]


class Exploding:
    @hookimpl
    def kai_filter_devices(self, requests):
        raise RuntimeError("sysfs unreadable")


def test_a_failing_device_filter_is_named():
    picked, pod = schedule(("rdma", Exploding()))
    assert picked == {}
    assert "plugin 'rdma' failed in kai_filter_devices: RuntimeError: sysfs unreadable" in message(pod)


def test_nothing_is_listed_when_no_plugin_filters_or_ranks_devices(monkeypatch):
    import kai_core.plugins.dra as dra

    def listed(*args):
        raise AssertionError("candidate devices listed with no plugin asking for them")

    monkeypatch.setattr(dra, "request_candidates", listed)
    monkeypatch.setattr(dra, "candidate_devices", listed)
    assert schedule()[0] == {"gpu": "gpu-0", "nic": "nic-0"}


# -- kai_rank_devices: summed ------------------------------------------------------------------------


def test_rankings_of_several_plugins_are_summed_by_device():
    # alone, each would pick its own favourite; summed, nic-2 (30 + 25) beats nic-1 (40) and nic-0 (0)
    assert schedule(("a", Prefer({"nic-1": 40, "nic-2": 30})))[0]["nic"] == "nic-1"
    assert schedule(("b", Prefer({"nic-2": 25, "gpu-1": 10})))[0] == {"gpu": "gpu-1", "nic": "nic-2"}
    both = schedule(("a", Prefer({"nic-1": 40, "nic-2": 30})), ("b", Prefer({"nic-2": 25, "gpu-1": 10})))[0]
    assert both == {"gpu": "gpu-1", "nic": "nic-2"}


# -- kai_check_configs -------------------------------------------------------------------------------


class NicConfigs:
    KAI_DRIVERS = ("nic.example.com",)

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None, dict]] = []

    @hookimpl
    def kai_check_configs(self, configs):
        self.seen += [(c.driver, c.where, c.device_class, c.requests) for c in configs]
        return {c: f"parameters.mtu {c.parameters['mtu']} is above 9216"
                for c in configs if c.parameters.get("mtu", 0) > 9216}


def test_a_config_checker_gets_only_its_drivers_configs_with_their_paths():
    checker = NicConfigs()
    picked, pod = schedule(("nic", checker))
    owner = 'pod claim "net" (ResourceClaim "default/c")'
    assert checker.seen == [
        ("nic.example.com", f"{owner}: spec.devices.config[0]", None, {"nic": "nic.example.com"}),
        ("nic.example.com", f'{owner}: DeviceClass "nic.example.com" (used by request "nic"): spec.config[0]',
         "nic.example.com", {"nic": "nic.example.com"}),
    ]
    assert picked == {}
    assert message(pod) == (f"{owner}: spec.devices.config[0] (nic.example.com NicConfig): "
                            "parameters.mtu 100000 is above 9216")


def test_a_plugin_with_no_config_of_its_driver_is_not_asked():
    class Fpga(NicConfigs):
        KAI_DRIVERS = ("fpga.example.com",)

    checker = Fpga()
    assert schedule(("fpga", checker))[0] and checker.seen == []


def test_a_config_checker_must_declare_its_drivers():
    class NoDrivers:
        @hookimpl
        def kai_check_configs(self, configs):
            return None

    with pytest.raises(PluginRefused, match="plugin 'nic': kai_check_configs needs KAI_DRIVERS"):
        build_plugin_manager(load_external=False).register(NoDrivers(), name="nic")


class BadKeys(NicConfigs):
    @hookimpl
    def kai_check_configs(self, configs):
        return {"spec.devices.config[0]": "bad"}


def test_a_config_answer_not_keyed_by_the_configs_given_is_a_bad_result():
    _, pod = schedule(("nic", BadKeys()))
    assert message(pod).startswith("plugin 'nic' returned a bad result from kai_check_configs: expected keys "
                                   "among the configs it was given")


# -- device_use ----------------------------------------------------------------------------------


def test_device_use_names_the_classes_and_drivers_of_a_pods_claims():
    class Mine:
        """What a plugin asks first: does this pod concern my driver?"""

        uses: list = []

        @hookimpl
        def kai_pre_filter(self, pod, snapshot):
            self.uses.append(device_use(pod, snapshot))
            self.uses.append(device_use({"metadata": {"name": "x"}, "spec": {}}, snapshot))

    schedule(("mine", Mine()))
    use, none = Mine.uses
    assert use.classes == {"gpu.example.com", "nic.example.com"}
    assert use.drivers == {"gpu.example.com", "nic.example.com"}
    assert use.uses("nic.example.com") and not use.uses("gpu.nvidia.com")
    assert none.classes == none.drivers == frozenset()


# (the guide's NIC sketch is run as written, with the test kit only, by
# packages/kai-cli/tests/test_guide_testkit.py)


def test_opaque_configs_follow_first_available_sub_requests_and_config_requests():
    from kai_core.dra.claims import PodClaim
    from kai_core.dra.inventory import DraInventory
    from kai_core.dra.pod_devices import opaque_configs

    classes = [{"metadata": {"name": name}, "spec": {"config": [
        {"opaque": {"driver": "nic.example.com", "parameters": {"class": name}}}]}}
        for name in ("nic-fast", "nic-slow")]
    claim = {"metadata": {"name": "c", "namespace": "ns"}, "spec": {"devices": {
        "requests": [{"name": "net", "firstAvailable": [{"name": "fast", "deviceClassName": "nic-fast"},
                                                        {"name": "slow", "deviceClassName": "nic-slow"}]},
                     {"name": "other", "exactly": {"deviceClassName": "nic-slow"}}],
        "config": [{"requests": ["net/slow"], "opaque": {"driver": "nic.example.com", "parameters": {}}},
                   {"opaque": {"driver": "nic.example.com", "parameters": []}},
                   {"opaque": "not an object"}]}}}
    configs = opaque_configs([PodClaim("net", claim)], DraInventory([], classes))
    owner = 'pod claim "net" (ResourceClaim "ns/c")'
    assert [(c.where, c.device_class, c.requests) for c in configs] == [
        (f"{owner}: spec.devices.config[0]", None, {"net/slow": "nic-slow"}),
        (f"{owner}: spec.devices.config[1]", None,
         {"net/fast": "nic-fast", "net/slow": "nic-slow", "other": "nic-slow"}),
        (f'{owner}: DeviceClass "nic-fast" (used by request "net"): spec.config[0]', "nic-fast",
         {"net/fast": "nic-fast"}),
        (f'{owner}: DeviceClass "nic-slow" (used by request "net"): spec.config[0]', "nic-slow",
         {"net/slow": "nic-slow", "other": "nic-slow"}),
    ]
    assert configs[1].describe("parameters must be an object") == (
        f"{owner}: spec.devices.config[1] (nic.example.com): parameters must be an object")
