"""Recovery: torn tails are truncated, everything else that is damaged is JournalCorrupt."""

from __future__ import annotations

import os
import pathlib

import pytest
from journal_helpers import make_record, write_segment

from gateway.journal import Journal, JournalCorrupt

BATCHES = [[1, 2], [3, 4], [5]]


def recover(data_dir: str):
    return Journal(data_dir).recover()


def test_clean_journal_recovers_every_record(tmp_path) -> None:
    write_segment(str(tmp_path), BATCHES)
    recovery = recover(str(tmp_path))
    assert recovery.records == [make_record(op) for op in range(1, 6)]
    assert (recovery.last_op, recovery.torn_tail, recovery.torn_tail_bytes) == (5, False, 0)
    assert recovery.snapshot is None and recovery.records_replayed == 5


def test_empty_data_dir_recovers_nothing(tmp_path) -> None:
    recovery = recover(str(tmp_path))
    assert (recovery.records, recovery.last_op, recovery.snapshot) == ([], 0, None)


def test_torn_tail_at_every_offset_of_the_last_record(tmp_path) -> None:
    source, spans = write_segment(str(tmp_path / "source"), BATCHES)
    full = pathlib.Path(source).read_bytes()
    last_start, last_end = spans[-1]
    for cut in range(last_start, last_end):
        data_dir = tmp_path / f"cut{cut}"
        os.makedirs(data_dir / "journal")
        target = data_dir / "journal" / os.path.basename(source)
        target.write_bytes(full[:cut])
        journal = Journal(str(data_dir))
        recovery = journal.recover()
        assert recovery.records == [make_record(op) for op in range(1, 5)], cut
        assert recovery.torn_tail_bytes == cut - last_start
        assert recovery.torn_tail == (cut > last_start)
        assert target.stat().st_size == last_start
        assert journal.stats.torn_tails == (1 if cut > last_start else 0)


def test_torn_tail_inside_a_multi_record_last_batch(tmp_path) -> None:
    # A crash may persist the end of the unfinished batch but not its middle (zeros).
    path, spans = write_segment(str(tmp_path), [[1, 2], [3, 4, 5]])
    data = bytearray(pathlib.Path(path).read_bytes())
    start, end = spans[3]
    data[start:end] = bytes(end - start)
    pathlib.Path(path).write_bytes(bytes(data))
    recovery = recover(str(tmp_path))
    assert [r["op"] for r in recovery.records] == [1, 2, 3]
    assert os.path.getsize(path) == start


def test_bit_flip_in_the_last_record_is_a_torn_tail(tmp_path) -> None:
    path, spans = write_segment(str(tmp_path), BATCHES)
    data = bytearray(pathlib.Path(path).read_bytes())
    data[spans[-1][0] + 30] ^= 0x10
    pathlib.Path(path).write_bytes(bytes(data))
    assert [r["op"] for r in recover(str(tmp_path)).records] == [1, 2, 3, 4]


@pytest.mark.parametrize("victim", [0, 1, 2, 3])
def test_damage_followed_by_a_later_batch_is_corrupt(tmp_path, victim: int) -> None:
    path, spans = write_segment(str(tmp_path), BATCHES)
    original = bytearray(pathlib.Path(path).read_bytes())
    damaged = bytearray(original)
    damaged[spans[victim][0] + 20] ^= 0x01
    pathlib.Path(path).write_bytes(bytes(damaged))
    with pytest.raises(JournalCorrupt, match="later batch") as info:
        recover(str(tmp_path))
    assert "\n" not in str(info.value)
    assert pathlib.Path(path).read_bytes() == bytes(damaged), "a corrupt journal must not be modified"


def test_damage_in_a_segment_that_is_not_the_last_is_corrupt(tmp_path) -> None:
    first, spans = write_segment(str(tmp_path), [[1, 2], [3]])
    write_segment(str(tmp_path), [[4, 5]])
    with open(first, "r+b") as handle:
        handle.truncate(spans[-1][1] - 1)
    with pytest.raises(JournalCorrupt, match="not the last"):
        recover(str(tmp_path))


def test_op_gap_inside_a_segment_is_corrupt(tmp_path) -> None:
    write_segment(str(tmp_path), [[1, 2], [4]])
    with pytest.raises(JournalCorrupt, match="op gap"):
        recover(str(tmp_path))


def test_op_gap_between_segments_is_corrupt(tmp_path) -> None:
    write_segment(str(tmp_path), [[1, 2, 3]])
    write_segment(str(tmp_path), [[5, 6]])
    with pytest.raises(JournalCorrupt, match="op gap"):
        recover(str(tmp_path))


def test_missing_first_segment_is_corrupt(tmp_path) -> None:
    write_segment(str(tmp_path), [[3, 4]])
    with pytest.raises(JournalCorrupt, match="journal gap"):
        recover(str(tmp_path))


def test_valid_checksum_around_undecodable_payload_is_corrupt(tmp_path) -> None:
    from gateway.journal.framing import frame_payload

    journal_dir = tmp_path / "journal"
    journal_dir.mkdir()
    (journal_dir / f"{1:020d}.yjl").write_bytes(frame_payload(b"\xc1", 1))
    with pytest.raises(JournalCorrupt, match="does not decode"):
        recover(str(tmp_path))


def test_segments_chain_across_files(tmp_path) -> None:
    write_segment(str(tmp_path), [[1, 2], [3]])
    write_segment(str(tmp_path), [[4], [5, 6]])
    write_segment(str(tmp_path), [[7]])
    recovery = recover(str(tmp_path))
    assert recovery.records == [make_record(op) for op in range(1, 8)]
