"""Helpers shared by the journal tests: hand-built segment files and a toy state machine."""

from __future__ import annotations

import os

from gateway.journal.framing import encode_record
from gateway.journal.segments import segment_name


def make_record(op: int) -> dict:
    """A record whose content is a pure function of its op, so garbage is detectable."""
    return {"op": op, "t": "settle", "amount_fen": op * 7 % 1000, "note": f"r{op}" * (op % 5)}


def write_segment(data_dir: str, batches: list[list[int]]) -> tuple[str, list[tuple[int, int]]]:
    """Write a segment holding ``batches`` (lists of ops) as the writer would.

    Returns the path and ``(start, end)`` byte offsets of every record in order.
    """
    journal_dir = os.path.join(data_dir, "journal")
    os.makedirs(journal_dir, exist_ok=True)
    path = os.path.join(journal_dir, segment_name(batches[0][0]))
    spans = []
    with open(path, "wb") as handle:
        for batch in batches:
            for op in batch:
                start = handle.tell()
                handle.write(encode_record(make_record(op), batch[0]))
                spans.append((start, handle.tell()))
    return path, spans


def apply(state: dict, record: dict) -> dict:
    """Toy deterministic state machine: per-kind counters and a running sum."""
    state = dict(state)
    state["count"] = state.get("count", 0) + 1
    state["sum_fen"] = state.get("sum_fen", 0) + record["amount_fen"]
    state["last_op"] = record["op"]
    return state


def replay(snapshot: dict | None, records: list[dict]) -> dict:
    """Rebuild the toy state from a snapshot and the records after it."""
    state = dict(snapshot or {})
    for record in records:
        state = apply(state, record)
    return state
