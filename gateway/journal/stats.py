"""Counters and observations for metrics, without importing prometheus_client.

``gateway/metrics.py`` passes a ``JournalObserver`` subclass whose methods feed its histograms
and counters; the journal also keeps cumulative ``JournalStats`` that tests and the bench read.
Observer methods are called on the trio thread, never from a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["JournalObserver", "JournalStats"]


class JournalObserver:
    """No-op base: override what you export. Methods must be quick and must not raise."""

    def on_batch(self, records: int, bytes_written: int, fsync_s: float | None) -> None:
        """A batch became durable; ``fsync_s`` is None when fsync is disabled."""

    def on_torn_tail(self, torn_bytes: int) -> None:
        """Recovery found and truncated a torn tail of ``torn_bytes`` bytes."""

    def on_recovery(self, duration_s: float, records_replayed: int) -> None:
        """``recover()`` finished."""

    def on_failure(self, error: BaseException) -> None:
        """The journal entered the failed state."""

    def on_snapshot(self, snapshot_bytes: int, duration_s: float) -> None:
        """A snapshot was installed (file work only, encoding excluded)."""


@dataclass
class JournalStats:
    """Cumulative counters since the Journal object was created."""

    batches: int = 0
    records_written: int = 0
    bytes_written: int = 0
    fsyncs: int = 0
    fsync_s_total: float = 0.0
    fsync_s_max: float = 0.0
    torn_tails: int = 0
    torn_tail_bytes: int = 0
    failures: int = 0
    snapshots_written: int = 0
    segments_retired: int = 0
    recovery_s: float = 0.0

    def add_batch(self, records: int, bytes_written: int, fsync_s: float | None) -> None:
        """Account one durable batch."""
        self.batches += 1
        self.records_written += records
        self.bytes_written += bytes_written
        if fsync_s is not None:
            self.fsyncs += 1
            self.fsync_s_total += fsync_s
            self.fsync_s_max = max(self.fsync_s_max, fsync_s)
