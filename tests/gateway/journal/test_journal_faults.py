"""Failure policy: ENOSPC/EIO on write or fsync fail the journal; reopen rebuilds from disk."""

from __future__ import annotations

import errno

import pytest
import trio
from journal_helpers import make_record

from gateway.journal import FaultyFileOps, Journal, JournalFailed


async def commit_one_by_one(journal: Journal, ops: range) -> None:
    for op in ops:
        journal.append(make_record(op))
        await journal.wait_durable(op)


async def run_failing_batch(journal: Journal, ops: range) -> list[str]:
    """Append ``ops`` as one batch plus a later one; return what each waiter got."""
    outcomes: list[str] = []

    async def waiter(op: int) -> None:
        try:
            await journal.wait_durable(op)
            outcomes.append(f"{op}:ok")
        except JournalFailed:
            outcomes.append(f"{op}:failed")

    async with trio.open_nursery() as nursery:
        for op in ops:
            journal.append(make_record(op))
            nursery.start_soon(waiter, op)
    return sorted(outcomes)


@pytest.mark.parametrize("op_name, errno_code, partial_bytes", [
    ("write", errno.ENOSPC, 0),
    ("write", errno.ENOSPC, 30),
    ("write", errno.EIO, 0),
    ("fsync", errno.EIO, 0),
    ("fsync", errno.ENOSPC, 0),
])
async def test_io_error_fails_waiters_and_reopen_keeps_only_fsynced(
        tmp_path, op_name: str, errno_code: int, partial_bytes: int) -> None:
    ops = FaultyFileOps()
    journal = Journal(str(tmp_path), file_ops=ops, group_commit_ms=5)
    journal.recover()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await commit_one_by_one(journal, range(1, 4))
        ops.fail(op_name, errno_code, partial_bytes=partial_bytes)
        outcomes = await run_failing_batch(journal, range(4, 9))
        assert outcomes == [f"{op}:failed" for op in range(4, 9)]
        assert journal.failed and journal.durable_op == 3
        with pytest.raises(JournalFailed):
            journal.append(make_record(9))
        with pytest.raises(JournalFailed):
            journal.check_room()
        await journal.wait_durable(3)  # what was durable stays durable

        recovery = await journal.reopen()
        assert recovery.records == [make_record(op) for op in range(1, 4)]
        assert not journal.failed and journal.next_op == 4
        await commit_one_by_one(journal, range(4, 7))
        nursery.cancel_scope.cancel()
    journal.close()
    assert Journal(str(tmp_path)).recover().records == [make_record(op) for op in range(1, 7)]


async def test_fresh_process_after_fsync_failure_sees_a_clean_prefix(tmp_path) -> None:
    # A crash right after a failed fsync: the page cache may still hold the batch. Whatever
    # survives must be a gap-free prefix that contains every acknowledged record.
    ops = FaultyFileOps()
    journal = Journal(str(tmp_path), file_ops=ops)
    journal.recover()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await commit_one_by_one(journal, range(1, 3))
        ops.fail("fsync", errno.EIO, times=None)
        await run_failing_batch(journal, range(3, 6))
        nursery.cancel_scope.cancel()
    journal.close()
    recovered = [r["op"] for r in Journal(str(tmp_path)).recover().records]
    assert recovered[:2] == [1, 2] and recovered == list(range(1, len(recovered) + 1))


async def test_failure_while_rolling_a_segment(tmp_path) -> None:
    ops = FaultyFileOps()
    journal = Journal(str(tmp_path), file_ops=ops, segment_bytes_max=1)
    journal.recover()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await commit_one_by_one(journal, range(1, 3))
        ops.fail("fsync_dir", errno.EIO)
        assert await run_failing_batch(journal, range(3, 4)) == ["3:failed"]
        recovery = await journal.reopen()
        assert recovery.last_op == 2
        await commit_one_by_one(journal, range(3, 5))
        nursery.cancel_scope.cancel()
    journal.close()
    assert Journal(str(tmp_path)).recover().last_op == 4


async def test_reopen_retries_when_the_cut_back_fails(tmp_path) -> None:
    ops = FaultyFileOps()
    journal = Journal(str(tmp_path), file_ops=ops)
    journal.recover()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await commit_one_by_one(journal, range(1, 3))
        ops.fail("write", errno.ENOSPC, partial_bytes=10)
        await run_failing_batch(journal, range(3, 5))
        ops.fail("truncate", errno.EIO)
        with pytest.raises(JournalFailed, match="cannot cut"):
            await journal.reopen()
        assert journal.failed
        assert (await journal.reopen()).last_op == 2
        nursery.cancel_scope.cancel()
    journal.close()


async def test_waiters_of_later_batches_fail_too(tmp_path) -> None:
    ops = FaultyFileOps()
    journal = Journal(str(tmp_path), file_ops=ops, group_commit_ms=0, batch_records_max=2)
    journal.recover()
    ops.fail("fsync", errno.EIO)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        outcomes = await run_failing_batch(journal, range(1, 7))
        nursery.cancel_scope.cancel()
    journal.close()
    assert outcomes == [f"{op}:failed" for op in range(1, 7)]
    assert journal.stats.failures == 1 and journal.durable_op == 0
