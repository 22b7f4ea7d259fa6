"""Checksummed, length-prefixed msgpack frames for journal records and snapshots.

Record frame (24-byte header, then the payload)::

    magic b"YJ" | version u8 | reserved u8 = 0 | length u32 BE | batch_first_op u64 BE
    | checksum 8 bytes | payload

``checksum = sha256(header[0:16] + payload)[:8]``: it covers the magic, version, length and batch
tag as well as the payload, so a flipped length bit cannot make a valid-looking frame.

``batch_first_op`` names the group-commit batch the record was written in. Recovery uses it to
tell a torn write from corruption: a crash can leave any part of the *last, unfinished* batch on
disk (the filesystem may persist its pages out of order), but a valid record of a *later* batch
after damaged bytes proves the damaged bytes had been fsynced, which no crash explains. Truncated
SHA-256 (stdlib) detects every single-bit flip and, at 64 bits, random garbage with odds of
2**-64; CRC32C would be faster but is not in the standard library.

Snapshot frame (32-byte header)::

    magic b"YS" | version u8 | reserved u8 | op u64 BE | length u64 BE | reserved u32 | checksum 8

with ``checksum = sha256(header[0:24] + payload)[:8]``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from collections.abc import Iterator
from typing import Any

import msgpack

__all__ = [
    "RECORD_MAGIC",
    "RECORD_HEADER_BYTES",
    "RECORD_PAYLOAD_BYTES_MAX",
    "FrameError",
    "encode_record",
    "decode_payload",
    "parse_frame",
    "valid_frames_after",
    "Frame",
    "encode_payload",
    "frame_payload",
    "encode_snapshot",
    "decode_snapshot",
]

RECORD_MAGIC = b"YJ"
RECORD_VERSION = 1
_RECORD_HEAD = struct.Struct(">2sBBIQ")  # magic, version, reserved, length, batch_first_op
RECORD_HEADER_BYTES = _RECORD_HEAD.size + 8
# A record carries one signed response (body cap 64 KiB) plus bookkeeping; 16 MiB leaves ample
# room while stopping a corrupt length from asking for gigabytes.
RECORD_PAYLOAD_BYTES_MAX = 16 * 1024 * 1024

SNAPSHOT_MAGIC = b"YS"
SNAPSHOT_VERSION = 1
_SNAPSHOT_HEAD = struct.Struct(">2sBBQQI")  # magic, version, reserved, op, length, reserved
SNAPSHOT_HEADER_BYTES = _SNAPSHOT_HEAD.size + 8

_CHECKSUM_BYTES = 8


@dataclass(frozen=True)
class Frame:
    """A valid record frame: its payload, where the next frame starts, and its batch tag."""

    payload: bytes
    next_offset: int
    batch_first_op: int


@dataclass(frozen=True)
class FrameError:
    """Why the bytes at ``offset`` are not a valid record frame (a value, not an exception)."""

    offset: int
    reason: str


def _checksum(head: bytes, payload: bytes) -> bytes:
    digest = hashlib.sha256(head)
    digest.update(payload)
    return digest.digest()[:_CHECKSUM_BYTES]


def _packb(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def encode_payload(record: dict) -> bytes:
    """Return the msgpack payload of one record (a msgpack-able dict).

    Raises:
        TypeError / ValueError: the record cannot be msgpack-encoded or is too large.
    """
    payload = _packb(record)
    if len(payload) > RECORD_PAYLOAD_BYTES_MAX:
        raise ValueError(f"record of {len(payload)} bytes exceeds {RECORD_PAYLOAD_BYTES_MAX}")
    return payload


def frame_payload(payload: bytes, batch_first_op: int) -> bytes:
    """Return the framed bytes of an encoded payload written in batch ``batch_first_op``."""
    head = _RECORD_HEAD.pack(RECORD_MAGIC, RECORD_VERSION, 0, len(payload), batch_first_op)
    return head + _checksum(head, payload) + payload


def encode_record(record: dict, batch_first_op: int) -> bytes:
    """Return the framed bytes of one record: ``frame_payload(encode_payload(record), ...)``."""
    return frame_payload(encode_payload(record), batch_first_op)


def decode_payload(payload: bytes) -> Any:
    """Decode a checksummed payload back into the value that was encoded."""
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)


def parse_frame(data: bytes, offset: int) -> Frame | FrameError:
    """Parse the record frame starting at ``offset``: a ``Frame``, or a ``FrameError`` saying why."""
    end = len(data)
    if end - offset < RECORD_HEADER_BYTES:
        return FrameError(offset, "incomplete header")
    head = bytes(data[offset:offset + _RECORD_HEAD.size])
    magic, version, reserved, length, batch_first_op = _RECORD_HEAD.unpack(head)
    if magic != RECORD_MAGIC:
        return FrameError(offset, "bad magic")
    if version != RECORD_VERSION or reserved != 0:
        return FrameError(offset, f"unsupported version {version}")
    if length > RECORD_PAYLOAD_BYTES_MAX:
        return FrameError(offset, f"length {length} over limit")
    body_start = offset + RECORD_HEADER_BYTES
    if body_start + length > end:
        return FrameError(offset, "length past end of file")
    stored = bytes(data[offset + _RECORD_HEAD.size:body_start])
    payload = bytes(data[body_start:body_start + length])
    if _checksum(head, payload) != stored:
        return FrameError(offset, "bad checksum")
    return Frame(payload, body_start + length, batch_first_op)


def valid_frames_after(data: bytes, start: int) -> Iterator[tuple[int, Frame]]:
    """Yield ``(offset, frame)`` for every valid frame found at or after ``start``.

    Damaged bytes are skipped by searching for the next magic; valid frames are followed frame
    by frame. Only recovery's failure path calls this, so its cost does not matter.
    """
    position = data.find(RECORD_MAGIC, start)
    while position != -1:
        parsed = parse_frame(data, position)
        if isinstance(parsed, FrameError):
            position = data.find(RECORD_MAGIC, position + 1)
            continue
        yield position, parsed
        position = parsed.next_offset if parsed.next_offset < len(data) else -1


def encode_snapshot(state: Any, op: int) -> bytes:
    """Return the framed bytes of a snapshot of ``state`` that includes every op up to ``op``."""
    payload = _packb(state)
    head = _SNAPSHOT_HEAD.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, 0, op, len(payload), 0)
    return head + _checksum(head, payload) + payload


def decode_snapshot(data: bytes) -> tuple[int, Any] | str:
    """Return ``(op, state)`` for a valid snapshot file's bytes, else a reason string."""
    if len(data) < SNAPSHOT_HEADER_BYTES:
        return "incomplete header"
    head = data[:_SNAPSHOT_HEAD.size]
    magic, version, _, op, length, _ = _SNAPSHOT_HEAD.unpack(head)
    if magic != SNAPSHOT_MAGIC or version != SNAPSHOT_VERSION:
        return "bad magic or version"
    if SNAPSHOT_HEADER_BYTES + length != len(data):
        return f"length {length} does not match file size {len(data)}"
    payload = data[SNAPSHOT_HEADER_BYTES:]
    if _checksum(head, payload) != data[_SNAPSHOT_HEAD.size:SNAPSHOT_HEADER_BYTES]:
        return "bad checksum"
    try:
        return op, decode_payload(payload)
    except (ValueError, msgpack.UnpackException) as exc:
        return f"undecodable payload ({exc.__class__.__name__})"
