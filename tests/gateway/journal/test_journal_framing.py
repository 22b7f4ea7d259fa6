"""Framing: round trips, and the checksum catching every single-bit flip."""

from __future__ import annotations

import pytest

from gateway.journal.framing import (RECORD_HEADER_BYTES, Frame, FrameError, decode_payload,
                                     decode_snapshot, encode_record, encode_snapshot, parse_frame,
                                     valid_frames_after)

RECORDS = [
    {"op": 1},
    {"op": 2, "t": "settle", "resp": b"\x00\xff" * 40, "amounts": [1, -2, 10**10]},
    {"op": 3, "nested": {"a": {"b": [None, True, 1.5, "中文"]}}},
    {"op": 2**62, "empty": {}, "list": []},
]


@pytest.mark.parametrize("record", RECORDS)
def test_record_round_trip(record: dict) -> None:
    data = encode_record(record, batch_first_op=9)
    frame = parse_frame(data, 0)
    assert isinstance(frame, Frame)
    assert frame.next_offset == len(data)
    assert frame.batch_first_op == 9
    assert decode_payload(frame.payload) == record


def test_consecutive_frames_parse_in_order() -> None:
    data = b"".join(encode_record(r, 1) for r in RECORDS)
    offset, seen = 0, []
    while offset < len(data):
        frame = parse_frame(data, offset)
        assert isinstance(frame, Frame)
        seen.append(decode_payload(frame.payload))
        offset = frame.next_offset
    assert seen == RECORDS


def test_every_single_bit_flip_is_caught() -> None:
    data = encode_record({"op": 5, "t": "cancel", "setl_id": "S0001", "fen": 1234}, 5)
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert isinstance(parse_frame(bytes(flipped), 0), FrameError), f"bit {bit} not caught"


@pytest.mark.parametrize("cut", [0, 1, RECORD_HEADER_BYTES - 1, RECORD_HEADER_BYTES, -1])
def test_truncated_frame_is_an_error(cut: int) -> None:
    data = encode_record({"op": 1, "x": "y" * 30}, 1)
    error = parse_frame(data[:cut], 0)
    assert isinstance(error, FrameError)


def test_length_past_end_and_bad_magic_have_reasons() -> None:
    data = encode_record({"op": 1, "x": "y" * 30}, 1)
    assert parse_frame(data[:-1], 0).reason == "length past end of file"
    assert parse_frame(b"XX" + data[2:], 0).reason == "bad magic"


def test_valid_frames_after_skips_garbage() -> None:
    good = encode_record({"op": 2}, 2)
    data = b"YJ garbage \x00\x00" + good + b"trailing"
    found = list(valid_frames_after(data, 0))
    assert [offset for offset, _ in found] == [data.index(good)]


def test_snapshot_round_trip_and_bit_flips() -> None:
    state = {"ledgers": {"P1": 100, "P2": [1, 2]}, "blob": b"\x01" * 10}
    data = encode_snapshot(state, 42)
    assert decode_snapshot(data) == (42, state)
    for bit in range(0, len(data) * 8, 3):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert isinstance(decode_snapshot(bytes(flipped)), str), f"bit {bit} not caught"
    assert isinstance(decode_snapshot(data[:-1]), str)
