"""Snapshots: replay equality, atomicity, fallback, retention and segment retirement."""

from __future__ import annotations

import io
import json
import os

import pytest
import trio
from journal_helpers import apply, make_record, replay

from gateway.journal import Journal, JournalCorrupt
from gateway.logs import JsonLogger


async def run_with_snapshots(data_dir: str, last_op: int, snapshot_every: int,
                             segment_bytes_max: int = 300) -> dict:
    """Commit ops 1..last_op one by one, snapshotting the toy state; return the final state."""
    journal = Journal(data_dir, segment_bytes_max=segment_bytes_max, group_commit_ms=0)
    journal.recover()
    state: dict = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for op in range(1, last_op + 1):
            record = make_record(op)
            state = apply(state, record)
            journal.append(record)
            await journal.wait_durable(op)
            if op % snapshot_every == 0:
                await journal.snapshot(state, op)
        nursery.cancel_scope.cancel()
    journal.close()
    return state


def full_replay(last_op: int) -> dict:
    return replay(None, [make_record(op) for op in range(1, last_op + 1)])


async def test_snapshot_plus_replay_equals_full_replay(tmp_path) -> None:
    final = await run_with_snapshots(str(tmp_path), 47, snapshot_every=10)
    recovery = Journal(str(tmp_path)).recover()
    assert recovery.snapshot_op == 40
    assert [r["op"] for r in recovery.records] == list(range(41, 48))
    assert replay(recovery.snapshot, recovery.records) == final == full_replay(47)


async def test_retention_keeps_two_snapshots_and_retires_covered_segments(tmp_path) -> None:
    await run_with_snapshots(str(tmp_path), 60, snapshot_every=10)
    snapshots = sorted(os.listdir(tmp_path / "snapshots"))
    assert snapshots == [f"{50:020d}.ysnap", f"{60:020d}.ysnap"]
    first_ops = sorted(int(name.split(".")[0]) for name in os.listdir(tmp_path / "journal"))
    # The segment holding op 51 (the older kept snapshot's next op) must survive; older ones go.
    holding = max(first for first in first_ops if first <= 51)
    assert first_ops[0] == holding and holding > 1


async def test_corrupt_newest_snapshot_falls_back_to_the_previous(tmp_path) -> None:
    await run_with_snapshots(str(tmp_path), 35, snapshot_every=10)
    newest = tmp_path / "snapshots" / f"{30:020d}.ysnap"
    data = bytearray(newest.read_bytes())
    data[-3] ^= 0x40
    newest.write_bytes(bytes(data))
    recovery = Journal(str(tmp_path)).recover()
    assert recovery.snapshot_op == 20 and len(recovery.snapshots_rejected) == 1
    assert replay(recovery.snapshot, recovery.records) == full_replay(35)
    assert (tmp_path / "snapshots" / f"{30:020d}.ysnap.corrupt").exists()


async def test_all_snapshots_corrupt_and_segments_retired_is_corrupt(tmp_path) -> None:
    await run_with_snapshots(str(tmp_path), 40, snapshot_every=10)
    for path in (tmp_path / "snapshots").iterdir():
        path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(JournalCorrupt, match="no valid snapshot"):
        Journal(str(tmp_path)).recover()


async def test_leftover_tmp_file_is_ignored_and_cleaned(tmp_path) -> None:
    await run_with_snapshots(str(tmp_path), 15, snapshot_every=10)
    leftover = tmp_path / "snapshots" / f"{15:020d}.ysnap.tmp"
    leftover.write_bytes(b"half a snapshot")
    journal = Journal(str(tmp_path))
    recovery = journal.recover()
    assert recovery.snapshot_op == 10
    assert replay(recovery.snapshot, recovery.records) == full_replay(15)
    journal.write_snapshot(replay(recovery.snapshot, recovery.records), 15)
    assert not leftover.exists()
    assert Journal(str(tmp_path)).recover().snapshot_op == 15


async def test_snapshot_of_an_op_that_is_not_durable_is_refused(tmp_path) -> None:
    journal = Journal(str(tmp_path))
    journal.recover()
    journal.append(make_record(1))
    with pytest.raises(ValueError, match="not durable"):
        journal.write_snapshot({"count": 1}, 1)


async def test_snapshot_with_no_journal_after_it(tmp_path) -> None:
    await run_with_snapshots(str(tmp_path), 20, snapshot_every=10)
    journal = Journal(str(tmp_path))
    recovery = journal.recover()
    assert recovery.snapshot_op == 20 and recovery.records == [] and journal.next_op == 21


async def test_snapshot_log_reports_the_encoding_time_spent_on_the_event_loop(tmp_path) -> None:
    # Encoding runs on the loop and pauses every request: ops must see how long it took.
    stream = io.StringIO()
    journal = Journal(str(tmp_path), group_commit_ms=0, logger=JsonLogger(stream))
    journal.recover()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        journal.append(make_record(1))
        await journal.snapshot({"last_op": 1, "rows": list(range(1000))}, 1)
        nursery.cancel_scope.cancel()
    journal.close()
    [line] = [json.loads(text) for text in stream.getvalue().splitlines() if '"journal.snapshot"' in text]
    assert 0 < line["fields"]["encode_s"] < line["fields"]["duration_s"] + 1
