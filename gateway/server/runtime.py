"""The live objects the listeners share: core, journal, clock, metrics, limits and readiness.

`Runtime` is what the composition (app.py) builds once the journal is recovered; the routes read
it on every request, so a rebuild after a journal failure swaps `core` and `journal` in one place.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import trio

from gateway.config import LimitsConfig
from gateway.metrics import GatewayMetrics
from gateway.server.clock import WallClock
from gateway.server.http import Drain, HttpLimits
from gateway.server.logs import log_event

__all__ = ["CoreLike", "JournalLike", "Runtime", "SnapshotScheduler", "http_limits"]


class CoreLike(Protocol):
    """The part of gateway.core.Core the server calls (docs/design.md)."""

    last_op: int
    sessions_active: int

    def handle_tx(self, body: bytes, now_ms: int) -> Any: ...
    def error_response(self, code: Any, now_ms: int, msgid: str | None = None) -> bytes: ...
    def public_keys(self) -> list[dict[str, Any]]: ...
    def snapshot(self) -> dict[str, Any]: ...


class JournalLike(Protocol):
    """The part of gateway.journal.Journal the server calls (docs/design.md)."""

    durable_op: int
    failed: bool

    def check_room(self) -> None: ...
    def append(self, record: dict[str, Any]) -> None: ...
    async def wait_durable(self, op: int) -> None: ...
    async def snapshot_of(self, source: CoreLike) -> Any: ...


@dataclasses.dataclass
class Runtime:
    """Shared state of a running gateway. Mutated only from the trio thread."""

    core: CoreLike
    journal: JournalLike
    clock: WallClock
    metrics: GatewayMetrics
    limits: LimitsConfig
    drain: Drain = dataclasses.field(default_factory=Drain)
    recovered: bool = False
    rebuilding: bool = False
    in_flight: int = 0
    on_journal_failure: Callable[[], None] = lambda: None
    snapshots: SnapshotScheduler | None = None

    def ready(self) -> bool:
        """True when /readyz answers 200: recovered, not draining, journal healthy."""
        return (self.recovered and not self.rebuilding and not self.drain.started
                and not self.journal.failed)

    def writable(self) -> bool:
        """True when transactions may reach the core (its state matches the durable journal)."""
        return self.recovered and not self.rebuilding and not self.journal.failed


class SnapshotScheduler:
    """Takes a snapshot after every `every_records` journaled records, off the event loop.

    The journal forks a child at op `core.last_op` (the core is single-writer, so the child's
    copy-on-write image is consistent at that op), which captures, encodes and writes the state;
    the file is put in place once that op is durable (a snapshot must never contain an
    unacknowledgeable change). See `Journal.snapshot_of`.
    """

    def __init__(self, runtime: Runtime, every_records: int) -> None:
        self.runtime = runtime
        self.every_records = every_records
        self.records_since = 0
        self._wanted = trio.Event()
        self.written = 0

    def note_record(self) -> None:
        """Count one journaled record; wake the snapshot task when the interval is reached."""
        self.records_since += 1
        if self.records_since >= self.every_records:
            self._wanted.set()

    def request(self) -> None:
        """Ask for a snapshot now (admin action or drain)."""
        self._wanted.set()

    async def run(self) -> None:
        """The snapshot task: one snapshot at a time, for as long as the gateway runs."""
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            self.records_since = 0
            await self.take()

    async def take(self) -> None:
        """Capture, wait for durability, write; failures are counted and logged, not raised."""
        runtime = self.runtime
        if not runtime.writable():
            return
        op = runtime.core.last_op
        try:
            # A forked child copies and writes the state at `op` while this process serves on;
            # the file is put in place once `op` is durable (gateway/journal/forked.py).
            await runtime.journal.snapshot_of(runtime.core)
        except Exception as exc:  # a disk error: the journal keeps working from its records
            runtime.metrics.snapshots.labels("failed").inc()
            log_event("snapshot_failed", op=op, error=type(exc).__name__, detail=str(exc)[:200])
            return
        self.written += 1
        runtime.metrics.snapshots.labels("ok").inc()
        log_event("snapshot", op=op)


def http_limits(limits: LimitsConfig) -> HttpLimits:
    """The per-connection part of gateway.toml [limits]."""
    return HttpLimits(body_bytes_max=limits.body_bytes_max, header_bytes_max=limits.header_bytes_max,
                      read_timeout_s=limits.read_timeout_s, write_timeout_s=limits.write_timeout_s,
                      idle_timeout_s=limits.idle_timeout_s)
