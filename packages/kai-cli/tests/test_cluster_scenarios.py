"""The seed's scenarios a second time, through the Kubernetes backend: the cluster is the embedded
one behind the fake API server (its controllers running as a control plane would), and kai's
scheduler and binder are separate processes (``kai-cli run scheduler|binder --kubeconfig``) or
threads that reach it over HTTP only. Same assertions as test_seed_scenario.py."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import yaml

from kai_core.api.resources import RES_BIND_REQUESTS, RES_CLAIMS, RES_PODS
from kai_core.apiserver.schema import CrdValidator, load_crd

CD_RESOURCE = "computedomains.resource.nvidia.com"
LEASES = "leases.coordination.k8s.io"
DRA = "--feature-gates=DynamicResourceAllocation=true"


def seed_bind_request(shared_dir) -> dict:
    text = (shared_dir / "seed" / "dra.md").read_text()
    block = re.search(r"(apiVersion: scheduling\.run\.ai/v1alpha2.*?)```", text, re.S).group(1)
    return yaml.safe_load(block)


def _only(items):
    assert len(items) == 1, items
    return items[0]


def assert_seed_result(store, shared_dir, upstream_dir, backoff_limit: int | None = None) -> None:
    """test_seed_scenario.py's assertions, on the store behind the fake API server. ``backoff_limit``:
    the scheduler's ``--backoff-limit``, if it was given one (unset by default, as in the seed's
    BindRequest, KAI's)."""
    pod = store.get(RES_PODS, "gpu-imex-pod", "default")
    br = _only(store.list(RES_BIND_REQUESTS)[0])
    cd = _only(store.list(CD_RESOURCE)[0])
    node = pod["spec"]["nodeName"]
    assert node and br["spec"]["selectedNode"] == node

    want = seed_bind_request(shared_dir)
    text = yaml.safe_dump(want).replace("NODE_NAME", node)
    text = text.replace("83479f70-e292-43d6-aa67-dd4ba8adab8f", cd["metadata"]["uid"])
    want = yaml.safe_load(text)
    if backoff_limit is not None:
        assert "backoffLimit" not in want["spec"]
        want["spec"]["backoffLimit"] = backoff_limit

    assert br["apiVersion"] == want["apiVersion"] and br["kind"] == want["kind"]
    assert br["spec"] == want["spec"]
    assert br["status"] == want["status"] == {"phase": "Succeeded"}
    md = br["metadata"]
    assert md["labels"] == want["metadata"]["labels"]
    assert md["namespace"] == "default"
    assert re.fullmatch(r"gpu-imex-pod-[a-z0-9]{10}", md["name"])
    assert md["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": "gpu-imex-pod",
                                      "uid": pod["metadata"]["uid"]}]

    claim_name = pod["status"]["resourceClaimStatuses"][0]["resourceClaimName"]
    assert claim_name.startswith("gpu-imex-pod-imex-channel-0-")
    claim = store.get(RES_CLAIMS, claim_name, "default")
    assert claim["status"]["allocation"] == br["spec"]["resourceClaimAllocations"][0]["allocation"]
    assert claim["status"]["reservedFor"] == [{"resource": "pods", "name": "gpu-imex-pod",
                                               "uid": pod["metadata"]["uid"]}]
    assert "resource.kubernetes.io/delete-protection" in claim["metadata"]["finalizers"]

    kai = CrdValidator(load_crd(upstream_dir / "kai-scheduler.bindrequests.crd.yaml"))
    assert kai.errors(br) == []


def seed_done(store) -> bool:
    pod = store.get(RES_PODS, "gpu-imex-pod", "default")
    brs = store.list(RES_BIND_REQUESTS)[0]
    phases = [b.get("status", {}).get("phase") for b in brs]
    return bool(pod["spec"].get("nodeName")) and phases == ["Succeeded"]


class Proc:
    """``kai-cli`` in a subprocess; stdout and stderr collected line by line as they come."""

    def __init__(self, *args: str) -> None:
        self.p = subprocess.Popen([sys.executable, "-m", "kai_cli.main", *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.p.stdout, self.out), daemon=True),
                         threading.Thread(target=self._read, args=(self.p.stderr, self.err), daemon=True)]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def url(self, path: str) -> str:
        for line in self.out:
            m = re.search(r"serving (.*) at (http://\S+)$", line)
            if m and path in m.group(1):
                return m.group(2) + path
        raise AssertionError(f"no server for {path} announced: {self.out}")

    def terminate(self, timeout: float = 30) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait(10)
            for t in self._readers:
                t.join(10)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(metrics_text: str, name: str) -> float:
    """The value of an unlabelled sample in a Prometheus text exposition."""
    m = re.search(rf"^{re.escape(name)} (\S+)$", metrics_text, re.M)
    assert m, f"{name} not in the metrics"
    return float(m.group(1))


def test_seed_scenario_with_scheduler_and_binder_as_separate_processes(live_cluster, demo_path, shared_dir,
                                                                       upstream_dir):
    lc = live_cluster(demo_path)
    kube = ["--kubeconfig", str(lc.kubeconfig), DRA, "--leader-elect", "--period", "0.2"]
    scheduler = Proc("run", "scheduler", *kube, "--metrics-bind-address", "127.0.0.1:0",
                     "--health-probe-bind-address", "127.0.0.1:0")
    binder = Proc("run", "binder", *kube, "--metrics-bind-address", "127.0.0.1:0", "--log-format", "json")
    try:
        lc.wait_for(lambda: seed_done(lc.store), "the seed pod to be bound by the two processes")
        lc.wait_for(lambda: any("serving" in ln for ln in scheduler.out) and any(
            "serving" in ln for ln in binder.out), "both processes to announce their servers")
        # each component holds a Lease of its own
        leases = {ls["metadata"]["name"]: ls["spec"] for ls in lc.store.list(LEASES, "default")[0]}
        assert set(leases) == {"kai-scheduler", "kai-binder"}
        assert leases["kai-scheduler"]["holderIdentity"] != leases["kai-binder"]["holderIdentity"]
        assert leases["kai-scheduler"]["leaseDurationSeconds"] == 15

        status, body = get(scheduler.url("/readyz"))
        assert (status, body.strip()) == (200, "ok")
        assert get(scheduler.url("/healthz"))[0] == 200
        lc.wait_for(lambda: sample(get(binder.url("/metrics"))[1], "kai_binds_total") == 1.0,
                    "the binder's metrics to count the bind")
        metrics = get(scheduler.url("/metrics"))[1]
        assert sample(metrics, "kai_pods_scheduled_total") == 1.0
        assert sample(metrics, "kai_scheduling_cycle_duration_seconds_count") >= 1
        assert 'kai_leader_election_master_status{name="kai-scheduler"} 1.0' in metrics
    finally:
        codes = (scheduler.terminate(), binder.terminate())
    assert codes == (0, 0), (scheduler.out, scheduler.err, binder.out, binder.err)
    assert any("scheduler stopped" in ln for ln in scheduler.out)
    assert any("binder stopped" in ln and "1 BindRequests succeeded" in ln for ln in binder.out), binder.out
    # a clean stop gives the Leases up, so standbys take over at once
    assert {ls["spec"]["holderIdentity"] for ls in lc.store.list(LEASES, "default")[0]} == {""}
    # --log-format json: every log line of the binder is one JSON object
    logs = [json.loads(ln) for ln in binder.err if ln.startswith("{")]
    assert logs and all({"ts", "level", "logger", "msg"} <= set(doc) for doc in logs)
    assert not [ln for ln in binder.err if not ln.startswith("{") and not ln.startswith("kai-cli: note")]
    assert_seed_result(lc.store, shared_dir, upstream_dir)
    # nothing of the embedded cluster ran in the components: no request created a claim or a template
    assert not [c for c in lc.server.calls() if c.startswith("create resourceclaim")]


def test_seed_scenario_with_components_as_threads(live_cluster, demo_path, shared_dir, upstream_dir):
    lc = live_cluster(demo_path)
    scheduler = lc.start("scheduler")
    binder = lc.start("binder")
    lc.wait_for(lambda: seed_done(lc.store), "the seed pod to be bound")
    assert scheduler.stop() == 0 and binder.stop() == 0
    assert_seed_result(lc.store, shared_dir, upstream_dir)


def test_dra_gate_off_leaves_pod_pending_with_reason(live_cluster, demo_path):
    lc = live_cluster(demo_path)
    scheduler = lc.start("scheduler", gates="")
    binder = lc.start("binder", gates="")

    def pending_with_reason() -> bool:
        pod = lc.store.get(RES_PODS, "gpu-imex-pod", "default")
        return any(c["type"] == "PodScheduled" and c["status"] == "False"
                   for c in (pod.get("status") or {}).get("conditions") or [])

    # the pass that reported it has ended (the reason is visible while that pass still runs)
    lc.wait_for(lambda: pending_with_reason() and scheduler.component.passes >= 1,
                "the pod to be reported unschedulable")
    passes = scheduler.component.passes
    time.sleep(1.0)  # five periods: nothing changed, so no cycle ran (no empty re-runs)
    assert scheduler.component.passes <= passes + 1
    for i in range(3):  # new nodes may give work: each wakes a cycle, which finds the same reason
        lc.store.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"extra-{i}"},
                         "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "10"},
                                    "conditions": [{"type": "Ready", "status": "True"}]}})
        lc.wait_for(lambda i=i: scheduler.component.passes > passes + i, "a cycle after a new node")
    assert scheduler.stop() == 0 and binder.stop() == 0
    pod = lc.store.get(RES_PODS, "gpu-imex-pod", "default")
    cond = _only([c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"])
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
    assert "DynamicResourceAllocation" in cond["message"]
    assert "--feature-gates=DynamicResourceAllocation=true" in cond["message"]
    assert lc.store.list(RES_BIND_REQUESTS)[0] == []
    events = [e for e in lc.store.list("events")[0] if e["involvedObject"]["name"] == "gpu-imex-pod"]
    assert [e["reason"] for e in events] == ["FailedScheduling"]  # once, not once per cycle
    # with the gate off the DRA kinds are not watched at all
    assert not [c for c in lc.server.calls() if "resource.k8s.io" in c]


def test_nvidia_channel_injection_demo_runs_unchanged(live_cluster, demo_path, upstream_dir, tmp_path):
    infra = tmp_path / "infra.yaml"
    docs = []
    for f in sorted(demo_path.rglob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text())
                 if d and d["kind"] not in ("Pod", "ComputeDomain")]
    infra.write_text(yaml.safe_dump_all(docs))
    lc = live_cluster(infra, upstream_dir / "nvidia.demo.channel-injection.yaml")
    scheduler = lc.start("scheduler", scheduler_name="default-scheduler")
    binder = lc.start("binder", binder_kwargs={"scheduler_names": ["default-scheduler"]})

    def done() -> bool:
        brs = lc.store.list(RES_BIND_REQUESTS)[0]
        return len(brs) == 1 and brs[0].get("status", {}).get("phase") == "Succeeded"

    lc.wait_for(done, "the channel-injection pod to be bound")
    assert scheduler.stop() == 0 and binder.stop() == 0
    cd = lc.store.get(CD_RESOURCE, "imex-channel-injection", "default")
    br = _only(lc.store.list(RES_BIND_REQUESTS)[0])
    [entry] = br["spec"]["resourceClaimAllocations"]
    assert entry["name"] == "imex-channel-0"
    [config] = entry["allocation"]["devices"]["config"]
    assert config["opaque"]["parameters"]["domainID"] == cd["metadata"]["uid"]


@pytest.mark.parametrize("component", ["scheduler", "binder"])
def test_a_component_exits_cleanly_on_sigterm_before_any_work(live_cluster, demo_path, component):
    lc = live_cluster(demo_path)
    proc = Proc("run", component, "--kubeconfig", str(lc.kubeconfig),
                "--health-probe-bind-address", "127.0.0.1:0")
    try:
        lc.wait_for(lambda: any(ln.endswith(": running") for ln in proc.out), f"the {component} to run")
        assert get(proc.url("/readyz"))[0] == 200
    finally:
        code = proc.terminate()
    assert code == 0, proc.err
