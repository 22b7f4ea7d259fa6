"""The region's journal (gateway/journal/stream.py) against an in-memory store: group commit,
fencing, a lease that lapses while a batch is replicated, standby / leader, recovery."""

from __future__ import annotations

import msgpack
import pytest
import trio
import trio.testing

from gateway.journal import JournalFailed
from gateway.journal.framing import encode_snapshot
from gateway.journal.stream import StreamJournal


class FakeLease:
    def __init__(self, value: str = "1 gw-a:1", epoch: int = 1) -> None:
        self.value, self.epoch, self.ok = value, epoch, True

    def valid(self) -> bool:
        return self.ok


class Refused(Exception):
    pass


class FakeStore:
    """The store's contract: a fenced (lease value and head checked) append, then replicas."""

    def __init__(self) -> None:
        self.lease_value = "1 gw-a:1"
        self.entries: list[tuple[int, int, bytes]] = []
        self.snapshot_frame: bytes | None = None
        self.appends: list[list[int]] = []
        self.short_of_replicas = False
        self.gate: trio.Event | None = None      # set: the next append waits for it (replication)

    async def append(self, lease_value: str, epoch: int, first_op: int, payloads: list[bytes]) -> None:
        if lease_value != self.lease_value:
            raise Refused("FENCED the lease is not held by this leader")
        head = self.entries[-1][0] if self.entries else 0
        if first_op != head + 1:
            raise Refused(f"GAP the journal head is {head}")
        self.entries += [(first_op + n, epoch, payload) for n, payload in enumerate(payloads)]
        self.appends.append([first_op + n for n in range(len(payloads))])
        if self.gate is not None:
            await self.gate.wait()
        if self.short_of_replicas:
            raise Refused("WAIT reached 0 of 1 replicas")

    async def put_snapshot(self, lease_value: str, op: int, frame: bytes) -> None:
        self.snapshot_frame = frame
        self.entries = [entry for entry in self.entries if entry[0] > op]

    async def snapshot(self) -> bytes | None:
        return self.snapshot_frame

    async def head(self) -> int:
        return self.entries[-1][0] if self.entries else 0

    async def read(self, after_op: int, count: int = 1000) -> list[tuple[int, int, bytes]]:
        return [entry for entry in self.entries if entry[0] > after_op][:count]


def record(op: int) -> dict:
    return {"op": op, "t": "refid", "refid_to": op * 10}


async def leading_journal(tmp_path, store: FakeStore, lease: FakeLease) -> StreamJournal:
    journal = StreamJournal(store, tmp_path, group_commit_ms=0)
    await journal.reopen()
    journal.lead(lease)
    return journal


async def test_batches_go_to_the_store_and_release_their_waiters(tmp_path) -> None:
    store, lease = FakeStore(), FakeLease()
    journal = await leading_journal(tmp_path, store, lease)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for op in range(1, 6):
            journal.append(record(op))
        await journal.wait_durable(5)
        nursery.cancel_scope.cancel()
    assert journal.durable_op == 5
    assert sum(store.appends, []) == [1, 2, 3, 4, 5]
    assert len(store.appends) < 5, "records appended together are one batch"
    assert [msgpack.unpackb(p) for _, _, p in store.entries][0] == record(1)


@pytest.mark.parametrize(("fault", "message"), [("fenced", "FENCED"), ("short", "replicas")])
async def test_a_refused_batch_fails_every_waiter_and_the_journal(tmp_path, fault: str, message: str) -> None:
    """Another leader took over (fenced), or WAIT reached too few replicas: nothing is acknowledged."""
    store, lease = FakeStore(), FakeLease()
    journal = await leading_journal(tmp_path, store, lease)
    if fault == "fenced":
        store.lease_value = "2 gw-b:1"
    else:
        store.short_of_replicas = True
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        journal.append(record(1))
        with pytest.raises(JournalFailed, match=message):
            await journal.wait_durable(1)
        nursery.cancel_scope.cancel()
    assert journal.failed and not journal.leading and journal.durable_op == 0
    assert store.entries == ([] if fault == "fenced" else store.entries[:1])


async def test_no_answer_leaves_once_the_lease_may_have_lapsed(tmp_path) -> None:
    """The store took the batch, but the lease lapsed meanwhile: its answers must not leave."""
    store, lease = FakeStore(), FakeLease()
    journal = await leading_journal(tmp_path, store, lease)
    store.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        journal.append(record(1))
        await trio.testing.wait_all_tasks_blocked()
        lease.ok = False
        store.gate.set()
        with pytest.raises(JournalFailed, match="lapsed"):
            await journal.wait_durable(1)
        nursery.cancel_scope.cancel()
    assert journal.durable_op == 0


async def test_a_lapsed_lease_sends_nothing_and_refuses_appends(tmp_path) -> None:
    store, lease = FakeStore(), FakeLease()
    journal = await leading_journal(tmp_path, store, lease)
    lease.ok = False
    assert journal.failed
    with pytest.raises(JournalFailed):
        journal.check_room()
    assert store.appends == []


async def test_a_standby_follows_and_refuses_appends_until_it_leads(tmp_path) -> None:
    store = FakeStore()
    journal = StreamJournal(store, tmp_path, group_commit_ms=0)
    await journal.reopen()
    assert journal.failed and not journal.leading
    with pytest.raises(JournalFailed):
        journal.check_room()
    journal.follow(1)
    journal.follow(2)
    await journal.wait_durable(2)   # reads on a standby wait for nothing it has applied
    journal.lead(FakeLease())
    assert journal.next_op == 3 and not journal.failed
    journal.stand_by()
    assert journal.failed


async def test_recovery_reads_the_snapshot_then_the_records_after_it(tmp_path) -> None:
    store = FakeStore()
    store.snapshot_frame = encode_snapshot({"state": "at 2"}, 2)
    store.entries = [(op, 1, msgpack.packb(record(op))) for op in (3, 4)]
    journal = StreamJournal(store, tmp_path, group_commit_ms=0)
    recovery = await journal.reopen()
    assert (recovery.snapshot, recovery.snapshot_op, recovery.last_op) == ({"state": "at 2"}, 2, 4)
    assert recovery.records == [record(3), record(4)]
    assert journal.durable_op == 4 and journal.next_op == 5


async def test_recovery_refuses_a_stream_that_does_not_reach_the_snapshot(tmp_path) -> None:
    store = FakeStore()
    store.entries = [(op, 1, msgpack.packb(record(op))) for op in (5, 6)]   # trimmed, no snapshot
    journal = StreamJournal(store, tmp_path, group_commit_ms=0)
    with pytest.raises(JournalFailed, match="trimmed"):
        await journal.reopen()
