"""/metrics, /healthz and /readyz (kai_core.observability), alone and served by a running component,
and the JSON log format."""

from __future__ import annotations

import io
import json
import logging
import re
import urllib.error
import urllib.request

import pytest

from kai_core.observability import (
    BindAddressError,
    BinderMetrics,
    ObservabilityServer,
    SchedulerMetrics,
    configure_logging,
    instrument_plugin_manager,
    parse_bind_address,
)
from kai_core.scheduler.cycle import CycleResult


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


@pytest.mark.parametrize(
    "text,want",
    [(":8080", ("0.0.0.0", 8080)), ("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:9090", ("::1", 9090)),
     ("0", None), ("", None), ("localhost:8081", ("localhost", 8081))],
)
def test_bind_addresses(text, want):
    assert parse_bind_address(text) == want


@pytest.mark.parametrize("text", ["8080", "host:port", ":99999", "::1:8080", "[::1]8080"])
def test_bad_bind_addresses_say_what_is_expected(text):
    with pytest.raises(BindAddressError, match=re.escape(repr(text))):
        parse_bind_address(text)


def test_one_server_serves_metrics_and_probes():
    metrics = SchedulerMetrics()
    ready = {"state": "waiting for the first list of pods"}
    server = ObservabilityServer("127.0.0.1:0", metrics=metrics, health={"ping": lambda: None},
                                 ready={"reflectors-synced": lambda: ready["state"]})
    with server:
        assert server.paths == ["/metrics", "/healthz", "/livez", "/readyz"]
        metrics.observe_cycle(CycleResult(scheduled=2, unschedulable=1, errors=0, seconds=0.02))
        status, ctype, body = get(server.url + "/metrics")
        assert status == 200 and ctype.startswith("text/plain")
        assert "kai_pods_scheduled_total 2.0" in body and "kai_pods_unschedulable_total 1.0" in body
        assert "kai_scheduling_cycle_duration_seconds_count 1.0" in body
        assert 'kai_scheduling_cycle_duration_seconds_bucket{le="0.025"} 1.0' in body  # seconds, not ms

        assert get(server.url + "/healthz")[::2] == (200, "ok\n")
        assert get(server.url + "/livez")[0] == 200
        status, _, body = get(server.url + "/readyz")
        assert status == 500 and "[-]reflectors-synced failed: waiting for the first list of pods" in body
        ready["state"] = None
        assert get(server.url + "/readyz")[::2] == (200, "ok\n")
        status, _, body = get(server.url + "/readyz?verbose")
        assert status == 200 and "[+]reflectors-synced ok" in body
        assert get(server.url + "/nope")[0] == 404


def test_separate_servers_serve_only_their_paths_and_a_broken_check_fails_its_probe():
    metrics = BinderMetrics()

    def broken():
        raise RuntimeError("boom")

    with ObservabilityServer("127.0.0.1:0", metrics=metrics) as only_metrics, \
            ObservabilityServer("127.0.0.1:0", health={"loop": broken}, ready={}) as probes:
        assert get(only_metrics.url + "/readyz")[0] == 404
        assert get(probes.url + "/metrics")[0] == 404
        status, _, body = get(probes.url + "/healthz")
        assert status == 500 and "[-]loop failed: RuntimeError: boom" in body
        assert get(probes.url + "/readyz")[0] == 200  # no checks: ready
        metrics.observe_bind("Succeeded", 0.05)
        metrics.observe_bind("Failed", 0.01)
        metrics.observe_bind("Pending", 0.01)  # an attempt left for later is not a bind
        body = get(only_metrics.url + "/metrics")[2]
        assert "kai_binds_total 1.0" in body and "kai_bind_failures_total 1.0" in body
        assert 'kai_bind_latency_seconds_count{result="succeeded"} 1.0' in body


def test_a_busy_port_is_an_os_error():
    with ObservabilityServer("127.0.0.1:0", health={}) as first:
        with pytest.raises(OSError):
            ObservabilityServer(f"127.0.0.1:{first.port}", health={}).start()


def test_plugin_hooks_are_timed_per_plugin_and_hook(scenario, tmp_path):
    (tmp_path / "c.yaml").write_text("""
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {allocatable: {cpu: "4", memory: 8Gi, pods: "10"}, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: p}
spec: {schedulerName: kai-scheduler, containers: [{name: c, image: busybox:1}]}
""")
    sc = scenario(tmp_path)
    metrics = SchedulerMetrics()
    instrument_plugin_manager(sc.pm, metrics)
    instrument_plugin_manager(sc.pm, metrics)  # a second time changes nothing
    assert sc.run().bound == 1

    def count(plugin, hook):
        return metrics.registry.get_sample_value(
            "kai_plugin_duration_seconds_count", {"plugin": plugin, "hook": hook})

    assert count("kai-core.resources-fit", "kai_filter_nodes") == 1.0
    assert count("kai-core.node-ready", "kai_filter_nodes") == 1.0


def test_two_components_in_one_process_have_their_own_registries():
    a, b = SchedulerMetrics(), SchedulerMetrics()
    a.observe_cycle(CycleResult(scheduled=1, seconds=0.1))
    assert a.registry.get_sample_value("kai_pods_scheduled_total") == 1.0
    assert b.registry.get_sample_value("kai_pods_scheduled_total") == 0.0


def test_json_logs_are_one_object_per_line():
    out = io.StringIO()
    restore = configure_logging(logging.INFO, "json", stream=out)
    try:
        logging.getLogger("kai.test").info("pod %s bound", "default/p", extra={"node": "n1"})
        logging.getLogger("kai.test").debug("not shown")
        try:
            raise ValueError("bad")
        except ValueError:
            logging.getLogger("kai.test").exception("failed")
    finally:
        restore()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(ln) for ln in lines)
    assert first["msg"] == "pod default/p bound" and first["level"] == "info"
    assert first["logger"] == "kai.test"
    assert first["node"] == "n1" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert second["level"] == "error" and "ValueError: bad" in second["error"]
    logging.getLogger("kai.test").warning("after restore")
    assert len(out.getvalue().splitlines()) == 2


def test_readyz_waits_for_every_reflector_and_metrics_follow_the_work(live_cluster, tmp_path):
    lc = live_cluster()
    lc.server.fail_next(100_000, 503, verb="list", resource="pods")  # pods cannot be listed for now
    scheduler = lc.start("scheduler", gates="", probe_address="127.0.0.1:0", metrics_address="127.0.0.1:0")
    url = scheduler.url("/readyz")
    def only_pods_missing() -> bool:  # every other kind listed (namespaces may come a moment later)
        stats = scheduler.component.store.reflector_stats()
        return bool(stats["pods"]["last_error"]) and all(s["synced"] for r, s in stats.items() if r != "pods")

    lc.wait_for(only_pods_missing, "a failed list of pods, every other kind listed")
    status, _, body = get(url + "?verbose")
    assert status == 500 and "waiting for the first list of pods" in body
    assert get(scheduler.url("/healthz"))[0] == 200  # alive while waiting
    lc.server.clear_faults()
    lc.wait_for(lambda: get(url)[0] == 200, "/readyz to turn ready once pods are listed")

    lc.store.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                     "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "10"},
                                "conditions": [{"type": "Ready", "status": "True"}]}})
    lc.store.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
                     "spec": {"schedulerName": "kai-scheduler",
                              "containers": [{"name": "c", "image": "busybox:1"}]}})
    binder = lc.start("binder", gates="", metrics_address="127.0.0.1:0")

    def bound() -> bool:
        return bool(lc.store.get("pods", "p", "default")["spec"].get("nodeName"))

    lc.wait_for(bound, "the pod to be bound")
    lc.wait_for(lambda: "kai_binds_total 1.0" in get(binder.url("/metrics"))[2], "the bind to be counted")
    body = get(scheduler.url("/metrics"))[2]
    assert "kai_pods_scheduled_total 1.0" in body
    assert re.search(
        r'kai_plugin_duration_seconds_count\{hook="kai_filter_nodes",plugin="kai-core.resources-fit"\}', body)
    assert 'kai_reflector_synced{resource="pods"} 1.0' in body
    requests = re.search(r"^kai_apiserver_requests_total (\S+)$", body, re.M)
    assert requests and float(requests.group(1)) > 0
    assert scheduler.stop() == 0 and binder.stop() == 0
