"""Bytes a settlement leaves behind for its retention, against the 1 KiB goal (docs/benchmarks.md,
"Memory per settlement").

The short test counts with tracemalloc, which sees every allocation whatever the allocator's
arenas do, over a few thousand settlements; the slow one (`make soak`) settles a million, as
`make bench-memory` does, and reads the process's RSS.
"""

from __future__ import annotations

import pytest

from gateway.bench_memory import run, traced

# The goal: all structures together (idempotency record, settlement, reconciliation index, ledgers,
# supervision figures) retain at most 1 KiB a settlement.
BYTES_PER_SETTLEMENT_MAX = 1024
PHARMACIES = 400


def test_a_settlement_retains_at_most_1_kib() -> None:
    # Can fail: with each settlement and answer held as an object of slots (before the stores kept
    # bytes) this counted ~1,700 bytes.
    held = traced(6_000, PHARMACIES, persons=3_000)
    assert held <= BYTES_PER_SETTLEMENT_MAX, f"{held:.0f} bytes retained a settlement"


@pytest.mark.slow
def test_a_million_settlements_grow_rss_by_at_most_1_kib_each() -> None:
    figures = run(1_000_000, PHARMACIES, persons=500_000, log=lambda line: None)
    print(f"RSS grown {figures['RSS']:.0f} B a settlement; a full collection with all held "
          f"{figures['full collection ms']:.0f} ms")
    assert figures["RSS"] <= BYTES_PER_SETTLEMENT_MAX
