"""Issue 12's faults on the real control plane (the fake API server's versions are in
packages/kai-cli/tests/test_cut_replies.py and test_stops_and_fences.py):

1. cut replies: a TCP proxy in front of kube-apiserver (TLS passes through untouched) cuts every
   open connection every 1.5 s, and cuts some replies before or in the middle of their first
   bytes, while the scheduler and the binder, both talking through it, bind 300 pods with claims;
2. a paused leader: the leader of two ``--leader-elect`` schedulers is stopped (SIGSTOP) for three
   times its Lease in the middle of its writes, the standby takes over, the old leader resumes: it
   writes no BindRequest after its pause and exits 1 (a lost Lease);
3. SIGTERM under load: the scheduler and the binder, in the middle of 400 pods, each exit 0
   within 5 s, release their Leases and leave nothing half-done; started again, they finish.

Each ends as the faults of test_faults.py do (its ``settle``): every pod bound, one Succeeded
BindRequest per pod, every claim allocated and reserved for its own pod on that pod's node, no
device allocated twice, no write of kai's refused.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import json
import random
import re
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml


def _load_test_faults():
    """test_faults.py's helpers (pytest runs with --import-mode=importlib: no sibling imports)."""
    name = "kai_e2e_test_faults"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("test_faults.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_faults = _load_test_faults()
BR, CLAIM, QUICK_LEASE = _faults.BR, _faults.CLAIM, _faults.QUICK_LEASE
bound, create_pods, lease_holder = _faults.bound, _faults.create_pods, _faults.lease_holder
problems, refused_writes, stop = _faults.problems, _faults.refused_writes, _faults.stop
gpu_cluster = _faults.gpu_cluster  # the fixture, used by this module's tests too

#: how long a component may take to exit after SIGTERM
EXIT_WITHIN = 5.0


# -- a TCP proxy that cuts connections ----------------------------------------------------------------


class CutProxy:
    """A TCP proxy on 127.0.0.1 in front of ``target`` (host, port), bytes passed through untouched
    (TLS ends at the API server). Every ``interval`` seconds it cuts every open connection; each
    reply's first bytes (server bytes after client bytes) are cut with probability ``reply_cut``,
    half of the time after passing half of them on. A cut resets (RST) or closes (FIN) both sides,
    at random. One thread, non-blocking sockets."""

    CHUNK = 65536
    #: stop reading a side while this much of it waits to be written to the other
    HIGH_WATER = 1 << 20

    def __init__(self, target: tuple[str, int], interval: float = 1.5, reply_cut: float = 0.0, seed: int = 12):
        self.target = target
        self.interval = interval
        self.reply_cut = reply_cut
        self.random = random.Random(seed)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ)
        self.pairs: set[_Pair] = set()
        self.cutting = threading.Event()
        self._stop = threading.Event()
        self.stats = Counter()
        self._thread = threading.Thread(target=self._run, name="cut-proxy", daemon=True)

    def __enter__(self) -> CutProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        for pair in list(self.pairs):
            self._close(pair, reset=False)
        self.sel.close()
        self.listener.close()

    def _run(self) -> None:
        next_cut = time.monotonic() + self.interval
        while not self._stop.is_set():
            for key, events in self.sel.select(timeout=0.05):
                if key.fileobj is self.listener:
                    self._accept()
                else:
                    pair, side = key.data
                    if pair in self.pairs:
                        self._io(pair, side, events)
            now = time.monotonic()
            if now >= next_cut:
                next_cut = now + self.interval
                if self.cutting.is_set() and self.pairs:
                    self.stats["periodic cuts"] += 1
                    for pair in list(self.pairs):
                        self.stats["connections cut"] += 1
                        self.stats["requests in flight cut"] += pair.awaiting_reply
                        self._close(pair, reset=self.random.random() < 0.5)

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except BlockingIOError:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        self.stats["connections"] += 1
        pair = _Pair(client, upstream)
        for s in (client, upstream):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pairs.add(pair)
        self.sel.register(client, selectors.EVENT_READ, (pair, 0))
        self.sel.register(upstream, selectors.EVENT_READ, (pair, 1))

    def _io(self, pair: _Pair, side: int, events: int) -> None:
        src = pair.socks[side]
        if events & selectors.EVENT_WRITE:
            try:
                sent = src.send(pair.out[side])
                del pair.out[side][:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._close(pair, reset=True)
                return
        if events & selectors.EVENT_READ:
            try:
                data = src.recv(self.CHUNK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._close(pair, reset=True)
                return
            if data == b"":  # one side closed: close both once what it sent is passed on
                pair.eof = side
                self._update(pair)
                return
            if data:
                if side == 0:
                    pair.awaiting_reply = True
                elif pair.awaiting_reply:  # the first bytes of a reply
                    pair.awaiting_reply = False
                    if self.cutting.is_set() and self.random.random() < self.reply_cut:
                        if self.random.random() < 0.5:
                            self.stats["replies cut in their first bytes"] += 1
                            pair.out[0].extend(data[: len(data) // 2])
                            self._flush(pair.socks[0], pair.out[0])
                        else:
                            self.stats["replies cut before their first byte"] += 1
                        self._close(pair, reset=self.random.random() < 0.5)
                        return
                pair.out[1 - side].extend(data)
        if pair in self.pairs:
            self._update(pair)

    @staticmethod
    def _flush(sock: socket.socket, buf: bytearray) -> None:
        try:
            del buf[: sock.send(buf)]
        except OSError:
            pass

    def _update(self, pair: _Pair) -> None:
        if pair.eof is not None:
            other = 1 - pair.eof
            if not pair.out[other]:
                self._close(pair, reset=False)
                return
            for side, events in ((pair.eof, 0), (other, selectors.EVENT_WRITE)):
                try:
                    self.sel.unregister(pair.socks[side])
                except KeyError:
                    pass
                if events:
                    self.sel.register(pair.socks[side], events, (pair, side))
            return
        for side in (0, 1):
            events = 0
            if len(pair.out[1 - side]) < self.HIGH_WATER:
                events |= selectors.EVENT_READ
            if pair.out[side]:
                events |= selectors.EVENT_WRITE
            sock = pair.socks[side]
            try:
                current = self.sel.get_key(sock).events
            except KeyError:
                current = 0
            if current == events:
                continue
            if not events:  # nothing to write to it and no room to read from it: until the other side drains
                self.sel.unregister(sock)
            elif current:
                self.sel.modify(sock, events, (pair, side))
            else:
                self.sel.register(sock, events, (pair, side))

    def _close(self, pair: _Pair, reset: bool) -> None:
        self.pairs.discard(pair)
        self.stats["resets" if reset else "closes"] += 1
        for s in pair.socks:
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            if reset:  # SO_LINGER 0: close sends RST
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            s.close()


class _Pair:
    __slots__ = ("socks", "out", "awaiting_reply", "eof")

    def __init__(self, client: socket.socket, upstream: socket.socket):
        self.socks = (client, upstream)
        #: bytes waiting to be written to socks[0] (the client) and socks[1] (the API server)
        self.out = (bytearray(), bytearray())
        self.awaiting_reply = False
        #: the side that closed its end (the pair closes once the rest is passed on), else None
        self.eof: int | None = None


# -- helpers ---------------------------------------------------------------------------------------------


def settle(kai, kube, namespace: str, names: list[str], timeout: float) -> None:
    """test_faults.settle, its failures named."""
    kai.wait_for(lambda: bound(kube, namespace) == len(names), f"all {len(names)} pods bound", timeout)
    kai.wait_for(lambda: not problems(kube, namespace, names), "a consistent end state", 60, interval=0.5)
    refused = refused_writes(kai)
    assert refused == [], f"writes refused: {refused}"


def own_kubeconfig(kai, component: str, name: str, server: str | None = None) -> tuple[str, str]:
    """A kubeconfig of the component's ServiceAccount with a token of its own (the API server's
    audit log tells its requests from others' by the token's ID), pointing at ``server`` (the
    API server's address by default). Returns (path, the token's ID)."""
    path = kai.workdir / f"{name}.kubeconfig"
    kai.cp.kubeconfig_for_serviceaccount(kai.install.namespace, kai.install.service_account(component), path)
    cfg = yaml.safe_load(path.read_text())
    if server:
        cfg["clusters"][0]["cluster"]["server"] = server
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    token = cfg["users"][0]["user"]["token"]
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(path), claims["jti"]


def credential(event: dict) -> str:
    """The ID of the token an audit event's request came with ("" when not given)."""
    ids = ((event.get("user") or {}).get("extra") or {}).get("authentication.kubernetes.io/credential-id") or []
    return ids[0].removeprefix("JTI=") if ids else ""


def received(event: dict) -> float:
    return dt.datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp()


def bind_request_creates(kai, namespace: str) -> list[dict]:
    """The audit events of kai's BindRequest creates in ``namespace``, every answer."""
    return [e for e in kai.requests() if e["verb"] == "create"
            and (e.get("objectRef") or {}).get("resource") == "bindrequests"
            and (e.get("objectRef") or {}).get("namespace") == namespace]


def max_live_bind_requests(kai, namespace: str) -> int:
    """The most BindRequests one pod had at once, from the audit log's creates and deletes in
    the order the API server took them (a BindRequest's name starts with its pod's)."""
    events = [e for e in kai.requests() if (e.get("objectRef") or {}).get("resource") == "bindrequests"
              and not e["objectRef"].get("subresource") and e["objectRef"].get("namespace") == namespace
              and (e["verb"], e["responseStatus"]["code"]) in (("create", 201), ("delete", 200))]
    assert all(e["objectRef"].get("name") for e in events), "the audit log does not name created objects"
    live, most = Counter(), 0
    for e in sorted(events, key=lambda e: e["stageTimestamp"]):
        pod = e["objectRef"]["name"].rsplit("-", 1)[0]
        live[pod] += 1 if e["verb"] == "create" else -1
        most = max(most, live[pod])
    return most


def bind_requests(kube, namespace: str) -> list[dict]:
    return kube.list(*BR, namespace)


def log_count(component, text: str) -> int:
    return component.log.read_text(errors="replace").count(text)


def half_done(kube, namespace: str) -> list[str]:
    """What a stop left half-done: a pod with two BindRequests, a Succeeded one whose pod is not on
    its node, a device allocated twice, a claim allocated for nobody, or reserved for a pod neither
    bound on the claim's node nor with a pending BindRequest for that node (which the binder,
    started again, carries out)."""
    out = []
    pods = {p["metadata"]["name"]: p for p in kube.list("v1", "Pod", namespace)}
    by_uid = {p["metadata"]["uid"]: p for p in pods.values()}
    brs = bind_requests(kube, namespace)
    per_pod = Counter(b["spec"]["podName"] for b in brs)
    out += [f"pod {n} has {c} BindRequests" for n, c in per_pod.items() if c > 1]
    pending = {}
    for b in brs:
        phase = (b.get("status") or {}).get("phase")
        pod = pods.get(b["spec"]["podName"])
        if phase == "Succeeded" and (not pod or pod["spec"].get("nodeName") != b["spec"]["selectedNode"]):
            out.append(f"BindRequest {b['metadata']['name']} Succeeded, its pod is not on {b['spec']['selectedNode']}")
        if not phase:
            pending[b["spec"]["podName"]] = b["spec"]["selectedNode"]
    for p in pods.values():
        if p["spec"].get("nodeName") and per_pod[p["metadata"]["name"]] == 0:
            out.append(f"pod {p['metadata']['name']} is bound without a BindRequest")
    devices: dict[tuple[str, str], str] = {}
    for c in kube.list(*CLAIM, namespace):
        name, status = c["metadata"]["name"], c.get("status") or {}
        alloc, reserved = status.get("allocation"), status.get("reservedFor") or []
        results = (alloc or {}).get("devices", {}).get("results", [])
        for d in results:
            key = (d["pool"], d["device"])
            if key in devices:
                out.append(f"device {key} is allocated to claims {devices[key]} and {name}")
            devices[key] = name
        if alloc and not reserved:
            out.append(f"claim {name} is allocated for no pod")
        for r in reserved:
            pod = by_uid.get(r.get("uid"))
            if pod is None:
                out.append(f"claim {name} is reserved for {r.get('name')}, which does not exist")
                continue
            node = pod["spec"].get("nodeName") or pending.get(pod["metadata"]["name"])
            if not node:
                out.append(f"claim {name} is reserved for {r.get('name')}, neither bound nor to be bound")
            elif alloc and {d["pool"] for d in results} != {node}:
                out.append(f"claim {name} is reserved for {r.get('name')} on {node}, but allocated elsewhere")
    return out


# -- 1. cut replies ----------------------------------------------------------------------------------------


def test_cut_replies_every_connection_cut_every_1_5s_still_binds_300_pods_once(
        kai, kube, namespace, gpu_cluster, controlplane):
    gpu_cluster(10, 32)
    names = [f"p{i:03d}" for i in range(300)]
    api = urlsplit(controlplane.server)
    with CutProxy((api.hostname, api.port), interval=1.5, reply_cut=0.03) as proxy:
        # the API server's serving certificate is for 127.0.0.1, the proxy's address too
        through = f"https://127.0.0.1:{proxy.port}"
        components = {}
        for component in ("scheduler", "binder"):
            path, _ = own_kubeconfig(kai, component, f"{component}-proxied", server=through)
            components[component] = kai.start(component, f"--kubeconfig={path}")  # the last one counts
        kai.wait_for(lambda: all(f"API server {through}" in c.log.read_text(errors="replace")
                                 for c in components.values()), "both components to connect through the proxy")
        kai.wait_for(lambda: lease_holder(kube, kai, "kai-scheduler") and lease_holder(kube, kai, "kai-binder"),
                     "both Leases held")
        proxy.cutting.set()
        started = time.monotonic()
        create_pods(kube, namespace, names)
        kai.wait_for(lambda: bound(kube, namespace) == len(names), "all 300 pods bound through the proxy", 420,
                     interval=1.0)
        took = time.monotonic() - started
        proxy.cutting.clear()
        kai.wait_for(lambda: not problems(kube, namespace, names), "a consistent end state", 60, interval=0.5)
        stop(kai)
    # a write to a BindRequest the scheduler had deleted (it failed for good) is answered 404: the
    # binder worked from a cache the cut watch had not brought up to date, and takes NotFound as done;
    # and a delete whose reply the proxy cut is sent again and finds the request gone (404: done)
    deleted = {(e["objectRef"].get("name"), verb) for e in kai.requests()
               if e["verb"] == "delete" and e["objectRef"].get("resource") == "bindrequests"
               and e["responseStatus"]["code"] == 200 for verb in ("update", "delete")}
    # (the audit log need not show the cut delete as answered 200: the scheduler's log names it)
    scheduler_log = components["scheduler"].log.read_text(errors="replace")
    cut = re.findall(rf"cannot delete BindRequest {re.escape(namespace)}/([\w.-]+): ", scheduler_log)
    deleted |= {(name, "delete") for name in cut}
    refused = [kai.describe(e) + f" {e['objectRef'].get('name')}" for e in kai.requests(400)
               if e["verb"] in ("create", "update", "patch", "delete")
               and e["responseStatus"]["code"] < 500 and e["responseStatus"]["code"] not in (409, 429)
               and not (e["responseStatus"]["code"] == 404 and (e["objectRef"].get("name"), e["verb"]) in deleted)]
    assert refused == [], f"writes refused: {refused}"
    stats = dict(proxy.stats)
    unknown = {name: log_count(c, "may have been applied") for name, c in components.items()}
    caught = log_count(components["binder"], "verification failed")
    userless = [{k: e.get(k) for k in ("verb", "requestURI", "user", "responseStatus", "userAgent")}
                for e in controlplane.audit_events(kai.audit_start)[0] if not (e.get("user") or {}).get("username")]
    print(f"cut replies: 300 pods bound in {took:.1f}s; proxy {stats}; writes of unknown outcome {unknown}; "
          f"BindRequests the binder refused (a device already allocated): {caught}; audit events naming no "
          f"user: {len(userless)} {userless[:3]}")
    assert stats["periodic cuts"] >= 10, stats
    assert stats["requests in flight cut"] + stats.get("replies cut before their first byte", 0) \
        + stats.get("replies cut in their first bytes", 0) >= 20, stats
    # writes did go out with their replies lost: kai had to find out what became of them
    assert sum(unknown.values()) >= 1, (unknown, stats)
    assert Counter(b["spec"]["podName"] for b in bind_requests(kube, namespace)) == Counter(names)
    assert max_live_bind_requests(kai, namespace) == 1


# -- 2. a paused leader -----------------------------------------------------------------------------------


def test_paused_leader_of_two_schedulers_writes_no_bind_request_after_it_resumes(kai, kube, namespace, gpu_cluster):
    gpu_cluster(8, 32)
    names = [f"p{i:03d}" for i in range(200)]
    lease_duration = 4  # QUICK_LEASE
    schedulers, tokens = {}, {}
    for i in range(2):
        identity = f"scheduler-{i}"
        path, tokens[identity] = own_kubeconfig(kai, "scheduler", identity)
        # 20 requests a second: the leader is still writing BindRequests when it is paused
        schedulers[identity] = kai.start("scheduler", *QUICK_LEASE, "--qps=20", "--burst=20",
                                         f"--leader-elect-identity={identity}", f"--kubeconfig={path}")
    kai.start("binder", *QUICK_LEASE)
    leader = kai.wait_for(lambda: lease_holder(kube, kai, "kai-scheduler"), "a scheduler to lead")
    [standby] = set(schedulers) - {leader}
    create_pods(kube, namespace, names)
    kai.wait_for(lambda: len(bind_requests(kube, namespace)) >= 40, "the leader to be writing BindRequests", 120)
    old = schedulers[leader]
    old.popen.send_signal(signal.SIGSTOP)
    paused_at, paused_mono = time.time(), time.monotonic()
    written = len(bind_requests(kube, namespace))
    assert written < len(names), "every BindRequest was written before the leader was paused"
    try:
        kai.wait_for(lambda: lease_holder(kube, kai, "kai-scheduler") == standby
                     and time.monotonic() - paused_mono >= 3 * lease_duration,
                     f"the standby to take the Lease, and {3 * lease_duration}s of pause", 60)
        taken_over = len(bind_requests(kube, namespace))
    finally:
        old.popen.send_signal(signal.SIGCONT)
    resumed_at = time.time()
    try:
        code = old.popen.wait(10)
    except Exception:
        pytest.fail(f"the old leader still runs 10s after it resumed:\n{old.tail()}", pytrace=False)
    kai.components.remove(old)
    assert code == 1, f"the old leader exited {code}, not 1 (a lost Lease):\n{old.tail()}"
    assert "leader Lease" in old.log.read_text(errors="replace"), old.tail()
    settle(kai, kube, namespace, names, 240)
    stop(kai)

    creates = bind_request_creates(kai, namespace)
    assert all(credential(e) for e in creates), "the audit log names no token ID (credential-id)"
    by_whom = Counter((credential(e), e["responseStatus"]["code"]) for e in creates)
    print(f"paused leader: {written} BindRequests written when paused, {taken_over} when the standby had "
          f"taken over ({resumed_at - paused_at:.1f}s of pause); creates by (token, code): {dict(by_whom)}")
    assert by_whom[(tokens[leader], 201)] > 0, by_whom  # the leader's writes are seen as its own
    # nothing after the pause (a request sent just before it may arrive a moment later)
    late = [(e["objectRef"].get("name"), e["requestReceivedTimestamp"], e["responseStatus"]["code"])
            for e in creates if credential(e) == tokens[leader] and received(e) > paused_at + 1.0]
    assert late == [], f"the old leader wrote BindRequests after its pause: {late}"
    # one BindRequest per pod, but for those the binder refused and the scheduler deleted, then wrote
    # again: never two at once
    deletes = sum(1 for e in kai.requests() if e["verb"] == "delete" and e["responseStatus"]["code"] == 200
                  and (e.get("objectRef") or {}).get("resource") == "bindrequests")
    assert sum(c for (_, code), c in by_whom.items() if code == 201) == len(names) + deletes, (by_whom, deletes)
    assert max_live_bind_requests(kai, namespace) == 1
    assert Counter(b["spec"]["podName"] for b in bind_requests(kube, namespace)) == Counter(names)


# -- 4. SIGTERM under load -----------------------------------------------------------------------------------


def test_sigterm_under_load_both_exit_0_within_5s_release_the_leases_and_leave_nothing_half_done(
        kai, kube, namespace, gpu_cluster):
    gpu_cluster(10, 40)
    names = [f"p{i:03d}" for i in range(400)]
    scheduler = kai.start("scheduler")
    binder = kai.start("binder", "--qps=20", "--burst=20")  # busy: BindRequests wait for it
    kai.wait_for(lambda: lease_holder(kube, kai, "kai-scheduler") and lease_holder(kube, kai, "kai-binder"),
                 "both Leases held")
    create_pods(kube, namespace, names)
    kai.wait_for(lambda: bound(kube, namespace) >= 20, "20 pods bound", 180, interval=0.5)
    assert bound(kube, namespace) < len(names) // 2, "the binder was not busy when the SIGTERM came"
    sent = {}
    for c in (scheduler, binder):
        c.popen.send_signal(signal.SIGTERM)
        sent[c.name] = time.monotonic()
    took, codes = {}, {}
    for c in (scheduler, binder):
        try:
            codes[c.name] = c.popen.wait(max(0.1, sent[c.name] + 10 - time.monotonic()))
        except Exception:
            pytest.fail(f"{c.name} still runs 10s after SIGTERM:\n{c.tail()}", pytrace=False)
        took[c.name] = time.monotonic() - sent[c.name]
        kai.components.remove(c)
    print(f"SIGTERM under load: exit codes {codes}, seconds to exit "
          f"{ {k: round(v, 2) for k, v in took.items()} }, {bound(kube, namespace)} pods bound, "
          f"{len(bind_requests(kube, namespace))} BindRequests")
    assert codes == {"scheduler": 0, "binder": 0}, (codes, scheduler.tail(), binder.tail())
    assert max(took.values()) < EXIT_WITHIN, took
    assert lease_holder(kube, kai, "kai-scheduler") == lease_holder(kube, kai, "kai-binder") == "", "not released"
    assert half_done(kube, namespace) == []
    assert bound(kube, namespace) < len(names)
    kai.start("scheduler")
    kai.start("binder")
    settle(kai, kube, namespace, names, 300)
    stop(kai)
