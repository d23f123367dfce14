"""Cut replies: the API server carries a write out and the connection drops before, in or after
the reply's headers, as a resetting proxy or load balancer does. The client cannot know whether
its write was applied. kai must act as if it may have been: no device or node given out twice, no
pod with two live BindRequests, and every pod bound in the end."""

from __future__ import annotations

import pytest
import yaml

from kai_core.api.errors import OutcomeUnknown
from kai_core.api.resources import RES_BIND_REQUESTS
from kai_core.testing.apiserver import CUT_MODES

from . import test_cluster_faults as faults
from .test_cluster_faults import all_bound, assert_consistent, create_pods

WRITES = ("create", "update", "patch", "delete")


@pytest.fixture
def dra_cluster_file(tmp_path):
    """The faults tests' DRA cluster: 3 nodes with 3 devices each, a one-device claim template."""
    path = tmp_path / "cluster.yaml"
    docs = [faults.node(n) for n in faults.NODES] + [d for d in yaml.safe_load_all(faults.DRA_CLUSTER) if d]
    path.write_text(yaml.safe_dump_all(docs))
    return path


@pytest.mark.parametrize("mode", CUT_MODES)
def test_a_cut_reply_to_a_write_is_an_unknown_outcome_and_the_write_happened(mode):
    from kai_core.client.store import KubernetesStore
    from kai_core.testing import FakeApiServer

    with FakeApiServer() as server:
        store = KubernetesStore(server.client_configuration())
        try:
            server.cut_replies(1, mode, verb="create")
            with pytest.raises(OutcomeUnknown, match="may have been applied"):
                store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cut"}})
            assert store.get("namespaces", "cut")["metadata"]["name"] == "cut"  # it was applied
            server.cut_replies(1, mode, verb="get")
            assert store.get("namespaces", "cut")  # a read is simply retried
        finally:
            store.close()


def test_a_request_never_sent_is_a_plain_error_not_an_unknown_outcome():
    from kai_core.api.errors import ApiError
    from kai_core.client.store import KubernetesStore
    from kai_core.testing import FakeApiServer

    server = FakeApiServer().start()
    cfg = server.client_configuration()
    server.stop()  # nothing listens: the connection is refused before anything is sent
    store = KubernetesStore(cfg, max_retries=0, connect_timeout=1)
    try:
        with pytest.raises(ApiError) as caught:
            store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
        assert not isinstance(caught.value, OutcomeUnknown)
    finally:
        store.close()


@pytest.mark.parametrize("mode", CUT_MODES)
def test_every_write_reply_cut_still_binds_every_pod_once(live_cluster, dra_cluster_file, mode):
    """Every reply to every write of the scheduler and the binder is cut, for the whole run."""
    lc = live_cluster(dra_cluster_file)
    for verb in WRITES:
        lc.server.cut_replies(10**6, mode, verb=verb)
    gates = "DynamicResourceAllocation=true"
    scheduler = lc.start("scheduler", gates=gates)
    binder = lc.start("binder", gates=gates)
    names = [f"p{i}" for i in range(9)]  # 3 nodes x 3 devices: every device is needed exactly once
    create_pods(lc, names, "one-fpga")
    lc.wait_for(lambda: all_bound(lc, names), f"every pod to be bound with replies cut {mode}")
    lc.server.clear_faults()
    assert scheduler.stop() == 0 and binder.stop() == 0
    assert_consistent(lc, names)
    live = lc.store.list(RES_BIND_REQUESTS)[0]
    assert len(live) == len(names)
