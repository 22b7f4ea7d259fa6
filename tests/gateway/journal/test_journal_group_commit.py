"""Group commit under concurrency, the bounded queue, and drain."""

from __future__ import annotations

import pytest
import trio
from journal_helpers import make_record

from gateway.journal import FaultyFileOps, Journal, JournalFailed, JournalFull, JournalObserver


class RecordingObserver(JournalObserver):
    def __init__(self) -> None:
        self.batches: list[tuple[int, int, float | None]] = []

    def on_batch(self, records: int, bytes_written: int, fsync_s: float | None) -> None:
        self.batches.append((records, bytes_written, fsync_s))


@pytest.mark.parametrize("group_commit_ms", [0.0, 2.0])
async def test_concurrent_appenders_share_fsyncs(tmp_path, group_commit_ms: float) -> None:
    ops = FaultyFileOps()
    observer = RecordingObserver()
    journal = Journal(str(tmp_path), group_commit_ms=group_commit_ms, file_ops=ops,
                      observer=observer)
    journal.recover()
    released: list[tuple[int, int]] = []
    durable_seen: list[int] = []

    async def appender(start: trio.Event) -> None:
        await start.wait()
        journal.check_room()
        op = journal.next_op
        journal.append(make_record(op))
        await journal.wait_durable(op)
        durable_seen.append(journal.durable_op)
        released.append((op, journal.durable_op))

    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        start = trio.Event()
        for _ in range(200):
            nursery.start_soon(appender, start)
        await trio.sleep(0)
        start.set()
        while len(released) < 200:
            await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    journal.close()

    assert sorted(op for op, _ in released) == list(range(1, 201))
    assert all(durable >= op for op, durable in released), "released before durable"
    assert durable_seen == sorted(durable_seen), "durable_op went backwards"
    assert sum(records for records, _, _ in observer.batches) == 200
    fsyncs = ops.calls["fsync"]
    assert fsyncs == len(observer.batches) < 200 // 4, f"{fsyncs} fsyncs for 200 records"
    assert journal.stats.records_written == 200 and journal.stats.fsyncs == fsyncs
    assert Journal(str(tmp_path)).recover().records == [make_record(op) for op in range(1, 201)]


async def test_batch_records_max_caps_each_write(tmp_path) -> None:
    observer = RecordingObserver()
    journal = Journal(str(tmp_path), group_commit_ms=50, batch_records_max=8, observer=observer,
                      fsync=False)
    journal.recover()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for op in range(1, 31):
            journal.append(make_record(op))
        await journal.drain()
        nursery.cancel_scope.cancel()
    journal.close()
    assert [records for records, _, _ in observer.batches] == [8, 8, 8, 6]
    assert all(fsync_s is None for _, _, fsync_s in observer.batches)


async def test_waiters_are_released_in_op_order(tmp_path) -> None:
    journal = Journal(str(tmp_path), group_commit_ms=1)
    journal.recover()
    order: list[int] = []

    async def waiter(op: int) -> None:
        await journal.wait_durable(op)
        order.append(op)

    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for op in range(1, 6):
            journal.append(make_record(op))
        for op in (5, 3, 1, 4, 2):
            nursery.start_soon(waiter, op)
        await journal.drain()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    journal.close()
    assert sorted(order) == [1, 2, 3, 4, 5]
    assert journal.durable_op == 5


async def test_full_queue_raises_journal_full(tmp_path) -> None:
    journal = Journal(str(tmp_path), queue_records_max=10)
    journal.recover()
    for op in range(1, 11):
        journal.check_room()
        journal.append(make_record(op))
    with pytest.raises(JournalFull):
        journal.check_room()
    assert not journal.failed, "check_room alone must not fail the journal"
    with pytest.raises(JournalFull):
        journal.append(make_record(11))
    assert journal.failed
    with pytest.raises(JournalFailed):
        journal.append(make_record(11))
    with pytest.raises(JournalFailed):
        await journal.wait_durable(3)


async def test_append_rejects_out_of_sequence_and_unencodable_records(tmp_path) -> None:
    journal = Journal(str(tmp_path))
    with pytest.raises(RuntimeError, match="recover"):
        journal.append(make_record(1))
    journal.recover()
    with pytest.raises(ValueError, match="out of sequence"):
        journal.append(make_record(2))
    with pytest.raises(TypeError):
        journal.append({"op": 1, "bad": object()})
    assert journal.next_op == 1 and journal.queue_records == 0
    with pytest.raises(ValueError, match="never appended"):
        await journal.wait_durable(1)


async def test_appends_continue_after_restart(tmp_path) -> None:
    for round_index in range(3):
        journal = Journal(str(tmp_path), segment_bytes_max=200)
        recovery = journal.recover()
        assert recovery.last_op == round_index * 10
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            for op in range(recovery.last_op + 1, recovery.last_op + 11):
                journal.append(make_record(op))
                await journal.wait_durable(op)
            nursery.cancel_scope.cancel()
        journal.close()
    assert Journal(str(tmp_path)).recover().records == [make_record(op) for op in range(1, 31)]
    # One record per batch, about 60 bytes each: a 200-byte segment rolls every few batches,
    # and never inside a batch.
    assert len(list((tmp_path / "journal").iterdir())) >= 8, "segments should have rolled"


class BatchStartObserver(JournalObserver):
    """Notes the trio time at which each batch finished (it started at most one fsync earlier)."""

    def __init__(self) -> None:
        self.done_s: list[float] = []

    def on_batch(self, records: int, bytes_written: int, fsync_s: float | None) -> None:
        self.done_s.append(trio.current_time())


async def test_a_record_finding_the_writer_idle_is_written_at_once(tmp_path) -> None:
    # group_commit_ms spaces batches under load; it must not delay a record at low load.
    journal = Journal(str(tmp_path), group_commit_ms=500, fsync=False)
    journal.recover()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for op in (1, 2):
            started_s = trio.current_time()
            journal.append(make_record(op))
            await journal.wait_durable(op)
            assert trio.current_time() - started_s < 0.25, f"op {op} waited for company"
            await trio.sleep(0.6)   # longer than group_commit_ms: the writer is idle again
        nursery.cancel_scope.cancel()
    journal.close()


async def test_group_commit_ms_spaces_batches_under_load(tmp_path) -> None:
    observer = BatchStartObserver()
    journal = Journal(str(tmp_path), group_commit_ms=100, fsync=False, observer=observer)
    journal.recover()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for op in range(1, 81):   # one record every 5 ms for 400 ms
            journal.append(make_record(op))
            await trio.sleep(0.005)
        await journal.drain()
        nursery.cancel_scope.cancel()
    journal.close()
    # Batch starts are 100 ms apart; completions are too, give or take one write's hand-off to
    # the worker thread (a few ms, more on a busy machine), hence the margin.
    gaps_s = [b - a for a, b in zip(observer.done_s, observer.done_s[1:])]
    assert 4 <= len(observer.done_s) <= 7, observer.done_s
    assert min(gaps_s) >= 0.07, gaps_s
