"""Harness of the cluster chaos tests: a Redis Cluster, two gateways of one region, HAProxy, and
terminals that keep settling through HAProxy across faults.

The book, the terminal links and the checks are the crash test's (e2e_kill9_support,
e2e_kill9_checks); what is added here is the rig and a terminal loop that survives a takeover:
after a lost connection, a -1 answer or an unknown session it books the request as in doubt,
reconnects (through HAProxy, so to whichever gateway leads now), signs in again and goes on.
"""

from __future__ import annotations

import dataclasses
import pathlib
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from e2e_kill9_support import (Book, Region, Sent, TerminalLink, http_get, http_status, now_ms)
from load_tests.cluster_rig import haproxy_available, haproxy_config, node_config
from load_tests.http import Endpoint, HttpResponse, parse_head
from load_tests.redis_cluster import LocalCluster, redis_available

LEASE_MS = 1500                 # short leases keep the tests short; the bench measures the default
HAPROXY_CHECK_MS = 100
READY_DEADLINE_S = 60.0
RECONNECT_PAUSE_S = 0.05
# After any fault the region must serve again within this (a lease, a Redis failover, checks).
SERVE_AGAIN_DEADLINE_S = 20.0


def cluster_missing() -> str | None:
    """Why the cluster tests cannot run here (None: they can)."""
    return redis_available() or haproxy_available()


def free_ports(count: int) -> list[int]:
    ports: list[int] = []
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
            ports.append(int(probe.getsockname()[1]))
    finally:
        for probe in sockets:
            probe.close()
    return ports


def flush_region(cluster: LocalCluster) -> None:
    """Forget every region's keys (each test starts a region from nothing)."""
    for port in cluster.ports:
        if "role:master" in cluster.cli(port, "INFO", "replication"):
            cluster.cli(port, "FLUSHALL")


class Node:
    """One gateway process of the region (`python -m gateway serve --config gateway-<name>.toml`)."""

    def __init__(self, region: ClusterRegion, name: str) -> None:
        self.region, self.name = region, name
        self.config = region.node_configs[name]
        self.data_port, self.admin_port = region.node_ports[name]
        self.data, self.admin = Endpoint("127.0.0.1", self.data_port), Endpoint("127.0.0.1", self.admin_port)
        self.runs = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.runs += 1
        log = self.region.root / f"gw-{self.name}-{self.runs:02d}.log"
        self.log_path = log
        with open(log, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(self.config)],
                stdout=subprocess.DEVNULL, stderr=stderr)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def readyz(self) -> tuple[int | None, str]:
        response = await http_get(self.admin, "/readyz")
        return (None, "") if response is None else (response.status, response.body.decode().strip())

    async def wait_up(self) -> None:
        """Until it has read the region's journal: /readyz is 200 (leader) or 503 "standby"."""
        with trio.fail_after(READY_DEADLINE_S):
            while (await self.readyz()) not in ((200, "ready"), (503, "standby")):
                assert self.process is not None and self.process.poll() is None, self.log()[-2000:]
                await trio.sleep(0.02)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        await trio.to_thread.run_sync(self.process.wait)

    def reap(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()


class ClusterRegion(Region):
    """A `small` region with gateways gw-a and gw-b in cluster mode behind HAProxy.

    `data` / `admin` (what the book's links and checks use) are HAProxy's frontends.
    """

    def __init__(self, root: pathlib.Path, seed: int, cluster: LocalCluster, *, lease_ms: int = LEASE_MS,
                 snapshot_every_records: int | None = None) -> None:
        super().__init__(root, seed, snapshot_every_records=snapshot_every_records)
        ports = free_ports(6)
        self.data_port, self.admin_port = ports[0], ports[1]
        self.node_ports = {"a": (ports[2], ports[3]), "b": (ports[4], ports[5])}
        self.node_configs = {name: node_config(root, name, *self.node_ports[name], cluster.seeds[:3],
                                               lease_ms=lease_ms)
                             for name in self.node_ports}
        self.lease_ms = lease_ms
        haproxy_ports = {"data": ports[0], "admin": ports[1], "a_data": ports[2], "a_admin": ports[3],
                         "b_data": ports[4], "b_admin": ports[5]}
        self.haproxy_cfg = root / "haproxy.cfg"
        self.haproxy_cfg.write_text(haproxy_config(haproxy_ports, HAPROXY_CHECK_MS))
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.nodes: dict[str, Node] = {}

    async def start(self) -> None:
        """gw-a first (it takes the lease), then gw-b, then HAProxy; until the region serves."""
        self.nodes["a"] = Node(self, "a")
        await self.nodes["a"].wait_up()
        self.nodes["b"] = Node(self, "b")
        await self.nodes["b"].wait_up()
        with open(self.root / "haproxy.log", "wb") as out:
            self.haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(self.haproxy_cfg)],
                                            stdout=out, stderr=out)
        await self.wait_serving()

    async def wait_serving(self, deadline_s: float = READY_DEADLINE_S) -> float:
        """Until HAProxy's data frontend answers /readyz 200 (a leader serves); returns the wait."""
        started = time.monotonic()
        with trio.fail_after(deadline_s):
            while await http_status(self.data, "/readyz") != 200:
                await trio.sleep(0.02)
        return time.monotonic() - started

    async def leader(self) -> Node:
        """The node whose /readyz is 200 (waits for one)."""
        with trio.fail_after(READY_DEADLINE_S):
            while True:
                for node in self.nodes.values():
                    if (await node.readyz())[0] == 200:
                        return node
                await trio.sleep(0.02)

    def reap(self) -> None:
        for node in self.nodes.values():
            node.reap()
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.kill()
            self.haproxy.wait()


# -- terminals that survive a takeover -------------------------------------------------------


@dataclasses.dataclass
class Timeline:
    """When answers came: to measure the time from a fault to the next successful settlement."""

    # (sent, answered) in time.monotonic() seconds, of every acknowledged settlement
    acks: list[tuple[float, float]] = dataclasses.field(default_factory=list)

    def first_ack_after(self, at_s: float) -> float | None:
        """Delay from `at_s` to the first settlement acknowledged that was *sent* after it.

        Sent after the fault, so no answer already on its way when it struck can count.
        """
        later = [answered for sent, answered in self.acks if sent > at_s]
        return min(later) - at_s if later else None


class Gate:
    """Holds the terminals before their next request while closed (requests in flight finish)."""

    def __init__(self) -> None:
        self._opened = trio.Event()
        self._opened.set()

    def close(self) -> None:
        if self._opened.is_set():
            self._opened = trio.Event()

    def open(self) -> None:
        self._opened.set()

    async def wait_open(self) -> None:
        await self._opened.wait()


async def drive_through_faults(book: Book, region: ClusterRegion, keys: dict[str, Ed25519PublicKey],
                               stop: trio.Event, timeline: Timeline, gate: Gate) -> None:
    """One task per pharmacy terminal through HAProxy until `stop` is set."""
    async with trio.open_nursery() as nursery:
        for terminal in region.terminals:
            nursery.start_soon(_terminal_loop, book, terminal, region, keys, stop, timeline, gate)


async def _terminal_loop(book: Book, terminal: Any, region: ClusterRegion, keys: dict[str, Ed25519PublicKey],
                         stop: trio.Event, timeline: Timeline, gate: Gate) -> None:
    link: TerminalLink | None = None
    while not stop.is_set():
        await gate.wait_open()
        if link is None:
            link = TerminalLink(terminal, region.data, keys)
            try:
                with trio.fail_after(15):
                    signed_in = (await link.open(book)).infcode == 0
            except Exception:  # any failure to reach a leader: try again shortly
                signed_in = False
            if not signed_in:
                await link.aclose()
                link = None
                await trio.sleep(RECONNECT_PAUSE_S)
                continue
        sent = book.next_request(terminal)
        if not await _send_booked(book, link, sent, timeline):
            await link.aclose()
            link = None
            await trio.sleep(RECONNECT_PAUSE_S)
    if link is not None:
        await link.aclose()


async def _send_booked(book: Book, link: TerminalLink, sent: Sent, timeline: Timeline) -> bool:
    """Send one booked request; False when the link must be reopened (the request is in doubt)."""
    sent_s = time.monotonic()
    try:
        with trio.fail_after(15):
            _, body, envelope = await link.send(sent)
    except Exception:  # lost connection, a proxy's error page, a stuck leader: outcome unknown
        book.in_doubt.append(sent.msgid)
        return False
    if envelope.infcode == 0 and sent.infno == "2102":
        timeline.acks.append((sent_s, time.monotonic()))
    if envelope.err_code in ("SESSION_UNKNOWN", "SESSION_EXPIRED"):
        # A new leader does not know the session: nothing was applied; re-sent at the end.
        book.in_doubt.append(sent.msgid)
        return False
    return book.take_answer(sent, body, envelope)


async def http_post(endpoint: Endpoint, path: str, token: str, body: bytes) -> HttpResponse:
    """POST a JSON `body` with a bearer token on a new connection, read to its end (as http_get)."""
    head = (f"POST {path} HTTP/1.1\r\nhost: {endpoint.host_header}\r\nauthorization: Bearer {token}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n")
    stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
    received = bytearray()
    try:
        await stream.send_all(head.encode() + body)
        while chunk := await stream.receive_some(65536):
            received += chunk
    finally:
        await stream.aclose()
    head_bytes, answer = bytes(received).split(b"\r\n\r\n", 1)
    status, headers = parse_head(head_bytes)
    return HttpResponse(status, headers, answer)


def stream_entries(cluster: LocalCluster, admdvs: str) -> list[tuple[int, int]]:
    """(op, epoch) of every entry left in the region's journal stream, read with redis-cli."""
    key = "{" + admdvs + "}:journal"
    port = cluster.primary_of(key)
    # Field values are binary; a small Lua script returns just the ids and epochs.
    script = ("local out = {} for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do "
              "out[#out+1] = e[1] out[#out+1] = e[2][2] end return out")
    lines = cluster.cli(port, "EVAL", script, "1", key).splitlines()
    return [(int(lines[i].split("-")[0]), int(lines[i + 1])) for i in range(0, len(lines) - 1, 2)]


def check_stream(cluster: LocalCluster, admdvs: str) -> dict[str, int]:
    """The journal's invariants: ops contiguous, epochs never decreasing along it."""
    entries = stream_entries(cluster, admdvs)
    ops = [op for op, _ in entries]
    assert ops == list(range(ops[0], ops[0] + len(ops))) if ops else True, "the journal has a gap"
    epochs = [epoch for _, epoch in entries]
    assert epochs == sorted(epochs), "an older leader appended after a newer one"
    return {"entries": len(entries), "epochs": len(set(epochs))}


__all__ = ["ClusterRegion", "Gate", "Node", "http_post", "Timeline", "check_stream", "cluster_missing", "drive_through_faults",
           "flush_region", "now_ms"]
