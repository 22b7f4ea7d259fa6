"""SPEC section 15 under faults: a region of two gateways on a Redis Cluster (3 primaries, two
replicas each), terminals settling through HAProxy the whole time.

1. kill -9 of the leader, repeatedly: the standby takes over (time to serve again measured);
2. kill -9 of the Redis primary holding the region's slot: the cluster fails over, the region
   serves again; and the region's replicas stalling while appends go on, then the whole shard
   dying (what the replicas never read is lost: only answers that waited for them were sent);
3. SIGSTOP of the leader for longer than a lease, then SIGCONT: the old leader is fenced (no
   append, no answer from it after it wakes);
4. a standby restarted from nothing catches up from the stored snapshot and the stream's tail,
   then takes over.

Besides: what a standby answers, and a key rotation reaching every node (a takeover and a node
started from nothing sign with the rotated key).

Each ends with the crash test's checks against the client's book: every acknowledged answer comes
back byte for byte, every in-doubt request is applied exactly once, 3201 balances and every 3202
row matches (no msgid settled twice), month-used equals the standing fund payments; and the
journal's own invariants (ops contiguous, epochs never decreasing). `make test` runs a short
version of each; `make soak` the long ones (`slow`). YB_CHAOS_SEED replays a run's choices.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import signal
import time
import tomllib

import pytest
import trio

from e2e_cluster_support import (ClusterRegion, Gate, Node, Timeline, check_stream, cluster_missing,
                                 drive_through_faults, flush_region, http_post, now_ms)
from e2e_kill9_checks import Checker
from e2e_kill9_support import Book, TerminalLink, gateway_keys, http_get
from load_tests.http import Endpoint, HttpConnection
from protocol import decode_frame
from protocol.terminal import verify_answer
from load_tests.redis_cluster import LocalCluster

MISSING = cluster_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"cluster chaos tests need Debian's redis-server "
                                                            f"and haproxy (make test installs them): {MISSING}")


def chaos_seed() -> int:
    return int(os.environ.get("YB_CHAOS_SEED") or random.randrange(2**32))


class ChaosRun:
    """One region, its book, and the load that runs while faults are injected."""

    def __init__(self, tmp_path: pathlib.Path, cluster: LocalCluster, seed: int,
                 snapshot_every_records: int | None = None) -> None:
        flush_region(cluster)
        cluster.wait_healthy()
        self.cluster, self.seed, self.rng = cluster, seed, random.Random(seed)
        self.region = ClusterRegion(tmp_path / "region", seed % 1000 + 1, cluster,
                                    snapshot_every_records=snapshot_every_records)
        self.admdvs = tomllib.loads(self.region.config_path.read_text())["admdvs"]
        self.book = Book(self.region, self.rng)
        self.timeline = Timeline()
        self.gate = Gate()
        self.keys: dict = {}
        self.serve_again_s: list[float] = []

    async def start(self) -> None:
        await self.region.start()
        with trio.fail_after(10):
            while True:
                try:
                    self.keys = await gateway_keys(self.region.data)
                    break
                except AssertionError:   # HAProxy's first checks are still under way
                    await trio.sleep(0.05)

    async def under_load(self, faults) -> None:  # type: ignore[no-untyped-def]
        """Run `faults()` while every pharmacy terminal settles through HAProxy."""
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drive_through_faults, self.book, self.region, self.keys, stop, self.timeline,
                               self.gate)
            await faults()
            stop.set()

    async def settle_for(self, low_s: float, high_s: float) -> None:
        await trio.sleep(self.rng.uniform(low_s, high_s))

    async def served_again_after(self, fault_s: float) -> float:
        """Wait for the first acknowledged settlement after `fault_s`; returns the delay."""
        with trio.fail_after(30):
            while (delay := self.timeline.first_ack_after(fault_s)) is None:
                await trio.sleep(0.02)
        self.serve_again_s.append(delay)
        return delay

    async def check(self) -> None:
        """The crash test's checks through HAProxy, and the journal's invariants."""
        await self.region.wait_serving()
        async with Checker(self.book, self.region, self.keys, now_ms()) as checker:
            await checker.resolve_in_doubt()
            await checker.recheck_acked(list(self.book.acked))
            await checker.check_totals(with_detail=True)
            await checker.check_admin_month()
        assert not self.book.unexpected, self.book.unexpected[:5]
        assert len(self.book.acked) > 20, "the load hardly ran: the test proved little"
        self.check_unique_serials()
        stream = check_stream(self.cluster, self.admdvs)
        print(f"chaos seed {self.seed}: {len(self.book.acked)} acknowledged, {len(self.book.settlements)} "
              f"settlements, in doubt resolved {checker.counts.in_doubt_found_applied} found applied + "
              f"{checker.counts.in_doubt_applied_now} applied now; serve again after "
              f"{[round(s, 2) for s in self.serve_again_s]} s; stream {stream}")

    def check_unique_serials(self) -> None:
        """inf_refmsgid and setl_id never repeat across the region's processes and leaders.

        The serial (the inf_refmsgid's last 10 digits) is checked, not the whole string: the
        string also holds the second it was made in, which would hide a reused serial.
        """
        serials = [verify_answer(sent.answer, self.keys).inf_refmsgid[-10:]
                   for sent in self.book.sent.values() if sent.answer is not None]
        assert len(set(serials)) == len(serials), "an inf_refmsgid serial was handed out twice"
        setl_ids = [s.setl_id for s in self.book.settlements.values()]
        assert len(set(setl_ids)) == len(setl_ids), "a setl_id was handed out twice"

    def reap(self) -> None:
        self.region.reap()


async def run_chaos(tmp_path: pathlib.Path, cluster: LocalCluster, scenario, **options) -> ChaosRun:  # type: ignore[no-untyped-def]
    seed = chaos_seed()
    print(f"chaos test: seed {seed} (replay with YB_CHAOS_SEED={seed})")
    run = ChaosRun(tmp_path, cluster, seed, **options)
    try:
        await run.start()
        await run.under_load(lambda: scenario(run))
        await run.check()
    except BaseException as exc:
        exc.add_note(f"chaos seed {seed}: replay with YB_CHAOS_SEED={seed}; logs in {run.region.root}")
        raise
    finally:
        run.reap()
    return run


# -- 1. kill -9 of the leader -----------------------------------------------------------------


async def kill_the_leader(run: ChaosRun, leader: Node) -> None:
    """kill -9 the leader, wait until the region serves again, bring it back (as a standby)."""
    await leader.kill9()
    await run.served_again_after(time.monotonic())
    leader.start()              # it comes back as a standby: snapshot + stream
    await leader.wait_up()


def leader_kills(cycles: int):  # type: ignore[no-untyped-def]
    async def scenario(run: ChaosRun) -> None:
        for _ in range(cycles):
            await run.settle_for(0.5, 1.5)
            await kill_the_leader(run, await run.region.leader())
        await run.settle_for(0.3, 0.6)
    return scenario


async def test_kill9_of_the_leader(tmp_path: pathlib.Path, redis_cluster: LocalCluster) -> None:
    run = await run_chaos(tmp_path, redis_cluster, leader_kills(2))
    assert max(run.serve_again_s) < run.region.lease_ms / 1000 + 3.0


@pytest.mark.slow
async def test_kill9_of_the_leader_soak(tmp_path: pathlib.Path, redis_cluster: LocalCluster) -> None:
    await run_chaos(tmp_path, redis_cluster, leader_kills(int(os.environ.get("YB_CHAOS_CYCLES", 12))))


# -- 2. kill -9 of the Redis primary holding the region ---------------------------------------


def primary_kills(cycles: int, stall_replicas: bool = False):  # type: ignore[no-untyped-def]
    """kill -9 of the primary holding the region's slot; Redis Cluster promotes a replica.

    `stall_replicas`: first the region's replicas stall (SIGSTOP) while appends go on, then the
    whole shard dies and the replicas come back from their own files, so what they never read is
    gone: only answers that waited for a replica's acknowledgement (WAIT) may have been sent.
    """
    async def scenario(run: ChaosRun) -> None:
        key = "{" + run.admdvs + "}:journal"
        for _ in range(cycles):
            await run.settle_for(0.5, 1.5)
            primary = await trio.to_thread.run_sync(run.cluster.primary_of, key)
            replicas = run.cluster.replicas_of(primary) if stall_replicas else []
            for port in replicas:
                run.cluster.signal(port, signal.SIGSTOP)
            await trio.sleep(1.0 if stall_replicas else 0.0)
            for port in (primary, *replicas):
                run.cluster.kill9(port)
            for port in replicas:
                run.cluster.start_node(port)
            await run.served_again_after(time.monotonic())
            # A supervisor restarts the dead node; it rejoins as a replica of the new primary.
            run.cluster.start_node(primary)
            await trio.to_thread.run_sync(run.cluster.wait_healthy)
        await run.settle_for(0.3, 0.6)
    return scenario


async def test_kill9_of_the_redis_primary(tmp_path: pathlib.Path, redis_cluster: LocalCluster) -> None:
    await run_chaos(tmp_path, redis_cluster, primary_kills(1))


@pytest.mark.slow
async def test_kill9_of_the_redis_primary_soak(tmp_path: pathlib.Path, redis_cluster: LocalCluster) -> None:
    await run_chaos(tmp_path, redis_cluster, primary_kills(int(os.environ.get("YB_CHAOS_CYCLES", 6))))


async def test_replicas_stall_then_the_shard_dies(tmp_path: pathlib.Path, redis_cluster: LocalCluster) -> None:
    await run_chaos(tmp_path, redis_cluster, primary_kills(1, stall_replicas=True))


# -- 3. SIGSTOP of the leader past its lease ---------------------------------------------------


def leader_pauses(cycles: int):  # type: ignore[no-untyped-def]
    """SIGSTOP the leader past its lease, then SIGCONT; a request sent to it while it sleeps must
    not be applied by it. Every other cycle the load is held at the takeover, so the old leader
    wakes before the new one has appended anything: then nothing but the epoch check in the
    append script and the old leader's own lease clock stand between its append and the journal."""
    async def scenario(run: ChaosRun) -> None:
        for cycle in range(cycles):
            idle = cycle % 2 == 1
            await run.settle_for(0.5, 1.5)
            leader = await run.region.leader()
            successor = next(node for node in run.region.nodes.values() if node is not leader)
            if idle:
                run.gate.close()
                await trio.sleep(0.3)          # answers in flight arrive
            direct = TerminalLink(run.region.terminals[0], Endpoint("127.0.0.1", leader.data_port), run.keys)
            assert (await direct.open(run.book)).infcode == 0
            leader.signal(signal.SIGSTOP)
            stopped_s = time.monotonic()
            if idle:
                with trio.fail_after(30):
                    while (await successor.readyz())[0] != 200:
                        await trio.sleep(0.005)
                run.serve_again_s.append(time.monotonic() - stopped_s)
            else:
                await run.served_again_after(stopped_s)
                await trio.sleep(run.rng.uniform(0.0, 0.5))
            await probe_the_woken(run, leader, direct)
            run.gate.open()
        await run.settle_for(0.3, 0.6)
    return scenario


async def probe_the_woken(run: ChaosRun, leader: Node, direct: TerminalLink) -> None:
    """Send a settlement to the stopped leader, wake it: it must not answer it with success."""
    probe = run.book.settlement(run.region.terminals[0])
    answers: list = []

    async def send() -> None:
        try:
            answers.append(await direct.send(probe))
        except Exception as exc:  # a closed connection is an acceptable refusal too
            answers.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        await trio.sleep(0.05)            # the request waits in its socket, read once it wakes
        leader.signal(signal.SIGCONT)
    await direct.aclose()
    if isinstance(answers[0], tuple):
        assert answers[0][2].infcode != 0, "the fenced old leader answered a settlement after waking"
    run.book.in_doubt.append(probe.msgid)
    assert (await leader.readyz())[1] == "standby", "the old leader did not step down"


async def test_sigstop_of_the_leader_past_its_lease(tmp_path: pathlib.Path, redis_cluster: LocalCluster) -> None:
    run = await run_chaos(tmp_path, redis_cluster, leader_pauses(2))
    for node in run.region.nodes.values():
        assert "Traceback" not in node.log()


@pytest.mark.slow
async def test_sigstop_of_the_leader_soak(tmp_path: pathlib.Path, redis_cluster: LocalCluster) -> None:
    await run_chaos(tmp_path, redis_cluster, leader_pauses(int(os.environ.get("YB_CHAOS_CYCLES", 6))))


# -- 4. a standby restarted from nothing ------------------------------------------------------


def standby_rebuilds(cycles: int):  # type: ignore[no-untyped-def]
    async def scenario(run: ChaosRun) -> None:
        for _ in range(cycles):
            await run.settle_for(1.0, 2.0)
            leader = await run.region.leader()
            standby = next(node for node in run.region.nodes.values() if node is not leader)
            await standby.kill9()
            shutil.rmtree(run.region.root / f"data-{standby.name}", ignore_errors=True)
            await run.settle_for(0.5, 1.0)
            standby.start()
            await standby.wait_up()
            recovered = _recovered_line(standby)
            assert '"snapshot_op":0,' not in recovered, f"no snapshot was used: {recovered}"
            await run.settle_for(0.5, 1.0)
            # Now it must be able to lead with everything acknowledged so far.
            await kill_the_leader(run, leader)
        await run.settle_for(0.3, 0.6)
    return scenario


def _recovered_line(node: Node) -> str:
    return next(line for line in node.log().splitlines() if '"event":"journal.recovered"' in line)


async def test_standby_from_nothing_catches_up_from_snapshot_and_stream(
        tmp_path: pathlib.Path, redis_cluster: LocalCluster) -> None:
    await run_chaos(tmp_path, redis_cluster, standby_rebuilds(1), snapshot_every_records=150)


@pytest.mark.slow
async def test_standby_from_nothing_soak(tmp_path: pathlib.Path, redis_cluster: LocalCluster) -> None:
    await run_chaos(tmp_path, redis_cluster, standby_rebuilds(int(os.environ.get("YB_CHAOS_CYCLES", 4))),
                    snapshot_every_records=150)


# -- what a standby answers -------------------------------------------------------------------


async def test_a_standby_answers_reads_and_refuses_writes(tmp_path: pathlib.Path, redis_cluster: LocalCluster) -> None:
    """/readyz 503 "standby"; a transaction 503 DRAINING with Retry-After, signed; admin reads
    answered from the followed state, admin writes 503; the leader's change shows on the standby."""
    run = ChaosRun(tmp_path, redis_cluster, chaos_seed())
    try:
        await run.start()
        leader = await run.region.leader()
        standby = next(node for node in run.region.nodes.values() if node is not leader)
        assert await standby.readyz() == (503, "standby")
        operator = next(a["token"] for a in run.region.sim["admins"] if a["role"] == "operator")
        code = run.region.terminals[0].code
        suspend = f"/admin/v1/institutions/{code}/suspend"
        assert (await http_post(leader.admin, suspend, operator, b'{"reason":"audit"}')).status == 200
        refused = await http_post(standby.admin, f"/admin/v1/institutions/{code}/resume", operator, b"{}")
        assert refused.status == 503, refused
        with trio.fail_after(10):
            while True:      # the standby applies the leader's record as it arrives
                shown = await http_get(standby.admin, f"/admin/v1/institutions/{code}", run.region.viewer_token)
                assert shown is not None and shown.status == 200, shown
                if b'"suspended"' in shown.body:
                    break
                await trio.sleep(0.05)
        terminal = run.region.terminals[0]
        conn = await HttpConnection.connect(standby.data)
        try:
            frame = terminal.session(run.keys).signin_frame(run.book.new_msgid(terminal.code), now_ms())
            answer = await conn.request("POST", "/fsi/v1/tx", frame, "application/msgpack")
        finally:
            await conn.aclose()
        assert (answer.status, verify_answer(answer.body, run.keys).err_code) == (503, "DRAINING")
        assert answer.headers.get("retry-after"), answer.headers
    finally:
        run.reap()


# -- a key rotation reaches every node ---------------------------------------------------------


async def signed_in_kid(run: ChaosRun, endpoint: Endpoint) -> str:
    """Sign a terminal in at `endpoint`; the kid of the answer, verified with the published keys."""
    terminal = run.region.terminals[0]
    published = await gateway_keys(run.region.data)
    conn = await HttpConnection.connect(endpoint)
    try:
        frame = terminal.session(published).signin_frame(run.book.new_msgid(terminal.code), now_ms())
        answer = await conn.request("POST", "/fsi/v1/tx", frame, "application/msgpack")
    finally:
        await conn.aclose()
    envelope = verify_answer(answer.body, published)
    assert (answer.status, envelope.infcode) in ((200, 0), (503, -1)), (answer.status, envelope)
    return decode_frame(answer.body).key_id


async def active_kid(endpoint: Endpoint) -> str:
    response = await http_get(endpoint, "/fsi/v1/keys")
    assert response is not None and response.status == 200
    return next(k["kid"] for k in json.loads(response.body)["keys"] if k["status"] == "active")


async def until_active(node: Node, kid: str) -> None:
    """Until `node` publishes `kid` as its active key (a standby applies records as they arrive)."""
    with trio.fail_after(10):
        while await active_kid(node.data) != kid:
            await trio.sleep(0.05)


async def test_a_rotated_key_reaches_every_node(tmp_path: pathlib.Path, redis_cluster: LocalCluster) -> None:
    """A rotation on the leader: the standby signs with the new key (its refusals too), and so does
    it once it has taken over after kill -9 of the leader; a node started afterwards from an empty
    data_dir gets the key from the stored snapshot (the stream trimmed behind it) and, leading in
    its turn, signs with it. Every answer verifies with the published key of its kid."""
    run = ChaosRun(tmp_path, redis_cluster, chaos_seed())
    try:
        await run.start()
        leader = await run.region.leader()
        standby = next(node for node in run.region.nodes.values() if node is not leader)
        operator = next(a["token"] for a in run.region.sim["admins"] if a["role"] == "operator")
        first_kid = await active_kid(run.region.data)
        rotated = await http_post(leader.admin, "/admin/v1/keys/rotate", operator, b'{"reason":"drill"}')
        assert rotated.status == 200, rotated
        rotation = json.loads(rotated.body)
        kid = rotation["kid"]
        assert kid != first_kid and await signed_in_kid(run, run.region.data) == kid
        await until_active(standby, kid)
        assert await signed_in_kid(run, standby.data) == kid            # its DRAINING refusal

        await leader.kill9()
        await run.region.wait_serving()
        assert await run.region.leader() is standby
        assert await signed_in_kid(run, run.region.data) == kid, "the new leader signs with a retired key"
        assert await active_kid(run.region.data) == kid

        # The rotation reaches a node started from nothing through the snapshot alone.
        snapshot = await http_post(standby.admin, "/admin/v1/snapshot", operator, b'{"reason":"drill"}')
        assert snapshot.status == 200 and json.loads(snapshot.body)["snapshot_op"] > rotation["op"], snapshot
        code = run.region.terminals[-1].code
        for verb in ("suspend", "resume"):    # records in the stream after the snapshot
            changed = await http_post(standby.admin, f"/admin/v1/institutions/{code}/{verb}", operator,
                                      b'{"reason":"drill"}')
            assert changed.status == 200, changed
        shutil.rmtree(run.region.root / f"data-{leader.name}", ignore_errors=True)
        leader.start()
        await leader.wait_up()
        recovered = json.loads(_recovered_line(leader))["fields"]
        assert recovered["snapshot_op"] > rotation["op"] and recovered["records_replayed"] >= 2, recovered
        await until_active(leader, kid)

        await standby.kill9()
        await run.region.wait_serving()
        assert await run.region.leader() is leader
        assert await signed_in_kid(run, run.region.data) == kid, "the node started from nothing signs with a retired key"
        assert [k["kid"] for k in json.loads((await http_get(run.region.data, "/fsi/v1/keys")).body)["keys"]] == [
            kid, first_kid]
    finally:
        run.reap()
