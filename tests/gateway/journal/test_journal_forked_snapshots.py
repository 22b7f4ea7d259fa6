"""Snapshots written by a forked child: the state at the fork, the loop never paused, errors back."""

from __future__ import annotations

import errno
import os
import time
from typing import Any

import pytest
import trio
from journal_helpers import make_record

from gateway.journal import FaultyFileOps, Journal
from gateway.journal.forked import CAN_FORK

pytestmark = pytest.mark.skipif(not CAN_FORK, reason="the platform cannot fork")

CAPTURE_S = 0.3   # how long the child's capture takes: long enough to see the parent serve on


class SlowSource:
    """A stand-in core whose capture is slow and whose state the parent keeps changing."""

    def __init__(self) -> None:
        self.last_op = 0
        self.rows: list[int] = []

    def snapshot(self) -> dict[str, Any]:
        time.sleep(CAPTURE_S)   # runs in the child only
        return {"last_op": self.last_op, "rows": list(self.rows)}

    def apply(self, journal: Journal, op: int) -> None:
        journal.append(make_record(op))
        self.last_op = op
        self.rows.append(op)


def snapshot_files(data_dir: str) -> list[str]:
    return sorted(os.listdir(os.path.join(data_dir, "snapshots")))


async def test_the_child_writes_the_state_at_the_fork_while_the_parent_serves_on(tmp_path) -> None:
    data_dir = str(tmp_path)
    journal = Journal(data_dir, group_commit_ms=0)
    journal.recover()
    source = SlowSource()
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(trio.current_time())
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for op in range(1, 6):
            source.apply(journal, op)
        nursery.start_soon(ticker)
        async with trio.open_nursery() as snapshotting:
            snapshotting.start_soon(journal.snapshot_of, source)
            await trio.sleep(0.05)            # the child has forked and is capturing
            for op in range(6, 9):            # changes after the fork must not reach the file
                source.apply(journal, op)
        nursery.cancel_scope.cancel()
    journal.close()

    gaps_s = [b - a for a, b in zip(ticks, ticks[1:])]
    assert max(gaps_s) < CAPTURE_S / 2, f"the loop paused {max(gaps_s):.3f} s"
    assert snapshot_files(data_dir) == [f"{5:020d}.ysnap"]
    recovered = Journal(data_dir).recover()
    assert recovered.snapshot == {"last_op": 5, "rows": [1, 2, 3, 4, 5]}
    assert recovered.snapshot_op == 5 and [r["op"] for r in recovered.records] == [6, 7, 8]


async def test_a_snapshot_is_not_published_before_its_op_is_durable(tmp_path) -> None:
    data_dir = str(tmp_path)
    journal = Journal(data_dir, group_commit_ms=0)
    journal.recover()
    source = SlowSource()
    source.apply(journal, 1)   # queued; the writer is not running yet, so op 1 is not durable
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.snapshot_of, source)
        await trio.sleep(CAPTURE_S + 0.3)     # the child is done: the file waits for durability
        assert not any(name.endswith(".ysnap") for name in snapshot_files(data_dir))
        await nursery.start(journal.run)
        await journal.drain()
        with trio.fail_after(5):
            while f"{1:020d}.ysnap" not in snapshot_files(data_dir):
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    journal.close()
    assert Journal(data_dir).recover().snapshot == {"last_op": 1, "rows": [1]}


async def test_a_failure_in_the_child_reaches_the_caller_and_leaves_no_file(tmp_path) -> None:
    data_dir = str(tmp_path)
    ops = FaultyFileOps()
    journal = Journal(data_dir, group_commit_ms=0, file_ops=ops)
    journal.recover()
    source = SlowSource()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        source.apply(journal, 1)
        await journal.drain()
        ops.fail("fsync", errno.ENOSPC)       # armed here, fired in the child's copy
        with pytest.raises(OSError) as caught:
            await journal.snapshot_of(source)
        nursery.cancel_scope.cancel()
    journal.close()
    assert caught.value.errno == errno.ENOSPC and "snapshot writer" in str(caught.value)
    assert snapshot_files(data_dir) == []   # not installed, and the child removed its temporary file
