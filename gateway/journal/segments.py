"""Segment files: naming, listing, and the validating scan that recovery relies on.

A segment is ``<data_dir>/journal/<first op, 20 digits>.yjl`` and holds consecutive records,
whole group-commit batches only (the writer rolls to a new segment between batches, never
inside one). Every segment but the last was complete and fsynced before the next was created,
so damage there is corruption; only the last segment can end in a torn write.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import msgpack

from .errors import JournalCorrupt
from .fileops import RealFileOps
from .framing import Frame, FrameError, decode_payload, parse_frame, valid_frames_after

__all__ = ["SEGMENT_SUFFIX", "segment_name", "list_segments", "ScanResult", "scan_segments"]

SEGMENT_SUFFIX = ".yjl"
_OP_DIGITS = 20


def segment_name(first_op: int) -> str:
    """File name of the segment whose first record is ``first_op``."""
    return f"{first_op:0{_OP_DIGITS}d}{SEGMENT_SUFFIX}"


def list_segments(file_ops: RealFileOps, journal_dir: str) -> list[tuple[int, str]]:
    """``(first_op, path)`` of every segment in ``journal_dir``, oldest first."""
    found = []
    for name in file_ops.listdir(journal_dir):
        stem = name[:-len(SEGMENT_SUFFIX)]
        if name.endswith(SEGMENT_SUFFIX) and len(stem) == _OP_DIGITS and stem.isdigit():
            found.append((int(stem), os.path.join(journal_dir, name)))
    return sorted(found)


@dataclass
class ScanResult:
    """What the segments hold after ``base_op``, and where the writer should continue."""

    records: list[dict] = field(default_factory=list)
    last_op: int = 0                 # newest op found in the scanned segments (or base_op)
    tail_path: str | None = None     # the last segment, None when there is none
    tail_valid_bytes: int = 0        # where its valid data ends (the truncation point)
    torn_bytes: int = 0              # bytes after that point (0 when the tail is clean)
    torn_reason: str = ""


def scan_segments(file_ops: RealFileOps, journal_dir: str, base_op: int) -> ScanResult:
    """Read and validate every record after ``base_op``; never modifies a file.

    Raises:
        JournalCorrupt: an op gap, a damaged record before the tail, or a damaged tail followed
            by a valid record of a later batch.
    """
    segments = list_segments(file_ops, journal_dir)
    if not segments:
        return ScanResult(last_op=base_op)
    usable = [i for i, (first_op, _) in enumerate(segments) if first_op <= base_op + 1]
    if not usable:
        first_op, path = segments[0]
        raise JournalCorrupt(f"{path}: journal gap: state holds ops up to {base_op} but the oldest "
                             f"segment starts at op {first_op}")
    result = ScanResult(last_op=base_op)
    expected_op = segments[usable[-1]][0]
    for first_op, path in segments[usable[-1]:]:
        if first_op != expected_op:
            raise JournalCorrupt(f"{path}: op gap: segment starts at op {first_op}, "
                                 f"expected op {expected_op}")
        is_last = path == segments[-1][1]
        expected_op = _scan_one(file_ops.read_bytes(path), path, expected_op, base_op, is_last, result)
    result.last_op = expected_op - 1
    result.tail_path = segments[-1][1]
    return result


def _scan_one(data: bytes, path: str, expected_op: int, base_op: int, is_last: bool,
              result: ScanResult) -> int:
    """Scan one segment into ``result``; returns the op expected in the next segment."""
    offset = 0
    batch_first_op = expected_op
    while offset < len(data):
        parsed = parse_frame(data, offset)
        if isinstance(parsed, FrameError):
            _judge_damage(data, path, parsed, is_last, {batch_first_op, expected_op})
            result.torn_bytes = len(data) - offset
            result.torn_reason = parsed.reason
            break
        _check_record(parsed, path, offset, expected_op, base_op, result)
        batch_first_op = parsed.batch_first_op
        expected_op += 1
        offset = parsed.next_offset
    if is_last:
        result.tail_valid_bytes = offset
    return expected_op


def _check_record(frame: Frame, path: str, offset: int, expected_op: int, base_op: int,
                  result: ScanResult) -> None:
    try:
        record = decode_payload(frame.payload)
    except (ValueError, msgpack.UnpackException) as exc:
        # The checksum matched, so these bytes are what the writer wrote: not a torn write.
        raise JournalCorrupt(f"{path}: record at byte {offset} has a valid checksum but does not "
                             f"decode ({exc.__class__.__name__})") from exc
    op = record.get("op") if isinstance(record, dict) else None
    if op != expected_op:
        raise JournalCorrupt(f"{path}: record at byte {offset} has op {op!r}, expected op "
                             f"{expected_op} (op gap)")
    if op > base_op:
        result.records.append(record)


def _judge_damage(data: bytes, path: str, damage: FrameError, is_last: bool,
                  own_batches: set[int]) -> None:
    """Raise JournalCorrupt unless ``damage`` can be a torn write of the last batch."""
    where = f"{path}: bad record at byte {damage.offset} ({damage.reason})"
    if not is_last:
        raise JournalCorrupt(f"{where} in a segment that is not the last one")
    for later_offset, frame in valid_frames_after(data, damage.offset + 1):
        if frame.batch_first_op not in own_batches:
            raise JournalCorrupt(f"{where} followed by a valid record of a later batch at byte "
                                 f"{later_offset}")
