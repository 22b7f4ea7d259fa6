"""The live objects both listeners share, and the one gate through which state becomes durable.

`Runtime` is what the composition (gateway/server/app.py) builds once the journal is recovered; the
routes of both listeners read it on every request, so a rebuild after a journal failure swaps the
core in one place. `make_durable` is the commit gate of the data and admin paths alike: the
record a synchronous decide/commit step produced is appended to the journal, and the answer waits
until every op it depends on is durable; a journal failure hands the process to its rebuild
(memory is rolled back to what is durable) before the caller answers -1 / 500.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import trio

from gateway.config import LimitsConfig
from gateway.core import Core
from gateway.core.records import Record
from gateway.journal.errors import JournalFailed, JournalFull
from gateway.logs import log_event
from gateway.metrics import GatewayMetrics
from gateway.sealer import Sealer

__all__ = ["Clock", "Drain", "JournalLike", "Runtime", "SnapshotScheduler"]


class Clock(Protocol):
    """The gateway's wall clock (gateway/server/clock.py)."""

    def now_ms(self) -> int: ...


class JournalLike(Protocol):
    """The part of gateway.journal.Journal the shells call (docs/design.md)."""

    durable_op: int
    failed: bool

    def check_room(self) -> None: ...
    def append(self, record: dict[str, Any]) -> None: ...
    async def wait_durable(self, op: int) -> None: ...
    async def snapshot_of(self, source: Any) -> Any: ...


class Drain:
    """The drain signal shared by all connections: wakes idle keep-alive connections to close."""

    def __init__(self) -> None:
        self.started = False
        self._idle_scopes: set[trio.CancelScope] = set()

    def start(self) -> None:
        """Ask every idle connection to close now and every busy one after its answer."""
        self.started = True
        for scope in list(self._idle_scopes):
            scope.cancel()

    def idle_scope(self) -> trio.CancelScope:
        """Return a scope for an idle wait; cancelled when draining starts (or already started)."""
        scope = trio.CancelScope()
        if self.started:
            scope.cancel()
        self._idle_scopes.add(scope)
        return scope

    def forget(self, scope: trio.CancelScope) -> None:
        self._idle_scopes.discard(scope)


@dataclasses.dataclass
class Runtime:
    """Shared state of a running gateway. Mutated only from the trio thread."""

    core: Core
    sealer: Sealer
    journal: JournalLike
    clock: Clock
    metrics: GatewayMetrics
    limits: LimitsConfig
    drain: Drain = dataclasses.field(default_factory=Drain)
    recovered: bool = False
    rebuilding: bool = False
    in_flight: int = 0
    # Cluster mode (SPEC section 15): a hot standby follows its region's journal and serves no
    # transaction (/readyz 503 "standby", DRAINING) until it holds the region's lease.
    standby: bool = False
    on_journal_failure: Callable[[], None] = lambda: None
    snapshots: SnapshotScheduler | None = None

    def ready(self) -> bool:
        """True when /readyz answers 200: recovered, not draining, journal healthy, not a standby."""
        return (self.recovered and not self.rebuilding and not self.drain.started
                and not self.standby and not self.journal.failed)

    def writable(self) -> bool:
        """True when transactions may reach the core (its state matches the durable journal)."""
        return self.recovered and not self.rebuilding and not self.standby and not self.journal.failed

    async def make_durable(self, record: Record | None, wait_op: int) -> None:
        """Journal `record` (None: nothing new) and return once op `wait_op` is durable.

        Call it right after the synchronous step that committed `record` in memory, before any
        other await. Raises JournalFull / JournalFailed after handing the process to its rebuild:
        memory may be ahead of the disk, and the rebuild rolls it back to what is durable.
        """
        try:
            if record is not None:
                self.journal.append(record.to_wire())
                if self.snapshots is not None:
                    self.snapshots.note_record()
            if wait_op:
                await self.journal.wait_durable(wait_op)
        except (JournalFull, JournalFailed) as exc:
            log_event("journal_refused", error=type(exc).__name__, detail=str(exc)[:200],
                      op=None if record is None else record.op)
            self.on_journal_failure()
            raise

    async def reads_settled(self) -> None:
        """Return once everything committed in memory is durable (for answers that read state).

        Raises JournalFailed (after handing the process to its rebuild) when it never becomes so.
        """
        await self.make_durable(None, self.core.last_op)


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
