"""The region's journal on a shared store (cluster mode): the same port as the local `Journal`.

The queue, the natural group commit, the waiters and the failure policy are the local journal's
(this class is one): what differs is where a batch goes. A batch is one fenced append to the
region's stream (the store checks the caller's lease and the journal's head atomically, then
adds the records) followed by a WAIT for `replicas_ack` replicas; only then does `durable_op`
advance and the batch's answers leave. Anything else (fenced, too few replicas, unreachable) fails
the journal exactly as a failed fsync does: the waiters answer -1 and the process rebuilds.

Two more guards make a paused or cut-off leader harmless:

- before sending a batch and again before releasing its answers, the journal asks the lease
  whether it is surely still held (`LeaseView.valid`: a local, monotonic-clock check with a
  margin below the lease's expiry in the store). A leader that wakes from a long pause finds it
  lapsed and answers nothing;
- the store refuses the append of any lease but the current one, whatever the leader believes.

A standby holds the journal in the failed state ("standby") and advances it with `follow` as it
applies the stream's records; `lead` opens it for appends once the lease is taken and the tail is
read. Snapshots go to the store (the newest one, which trims the stream behind it), written by a
forked child to a local scratch file first, as the local journal does.
"""

from __future__ import annotations

import os
import time
from typing import Any, Protocol

import trio

from .errors import JournalFailed
from .forked import ChildSnapshot
from .framing import decode_payload, decode_snapshot
from .journal import Journal, Recovery, SnapshotSource
from .snapshots import SnapshotWritten

__all__ = ["LeaseView", "StreamJournal", "StreamStore"]

STANDBY = "standby: the region's journal is appended to by its leader"
# Recovery retries when a snapshot trims the stream between reading the snapshot and the records.
RECOVER_ATTEMPTS_MAX = 5


class LeaseView(Protocol):
    """The leader's lease as the journal sees it."""

    value: str          # what the store holds while the lease is ours
    epoch: int

    def valid(self) -> bool:
        """True while the lease is surely still ours (local clock, with a margin)."""
        ...


class StreamStore(Protocol):
    """The region's store (gateway/cluster/store.py): a fenced, replicated append-only stream."""

    async def append(self, lease_value: str, epoch: int, first_op: int, payloads: list[bytes]) -> None: ...
    async def put_snapshot(self, lease_value: str, op: int, frame: bytes) -> None: ...
    async def snapshot(self) -> bytes | None: ...
    async def head(self) -> int: ...
    async def read(self, after_op: int, count: int = ...) -> list[tuple[int, int, bytes]]: ...


class StreamJournal(Journal):
    """`Journal` whose batches go to the region's store (see the module docstring)."""

    def __init__(self, store: StreamStore, scratch_dir: str | os.PathLike[str], **options: Any) -> None:
        """`scratch_dir`: local directory for the snapshot child's file; `options`: as Journal's."""
        super().__init__(scratch_dir, fsync=False, **options)
        self.store = store
        self.lease: LeaseView | None = None
        self.appended_epochs: list[int] = []        # epochs this process appended under (tests, logs)

    # -- roles -----------------------------------------------------------------------------------

    @property
    def failed(self) -> bool:
        """Failed, a standby, or a leader whose lease may have lapsed."""
        return self._failure is not None or (self.lease is not None and not self.lease.valid())

    @property
    def leading(self) -> bool:
        return self.lease is not None and self._failure is None

    def follow(self, op: int) -> None:
        """Standby: op `op` (the next one) was applied from the stream, so it is durable."""
        assert self.lease is None and op == self._next_op, (op, self._next_op)
        self._durable_op = op
        self._next_op = op + 1

    def lead(self, lease: LeaseView) -> None:
        """Accept appends (after `op`s up to durable_op were read from the stream) under `lease`."""
        self._reset(self._durable_op, None)
        self.lease = lease
        self.appended_epochs.append(lease.epoch)

    def stand_by(self, reason: str = STANDBY) -> None:
        """Stop appending: every waiter not yet durable answers -1; appends are refused."""
        self.lease = None
        self._fail(JournalFailed(reason))

    def _check_writable(self) -> None:
        super()._check_writable()
        if self.lease is None or not self.lease.valid():
            raise JournalFailed("the lease is not held: not the leader")

    # -- recovery --------------------------------------------------------------------------------

    def recover(self) -> Recovery:
        raise RuntimeError("the region's journal is read with await reopen()")

    async def reopen(self) -> Recovery:
        """Read the newest snapshot and every record after it from the store; end as a standby.

        Raises:
            JournalFailed: the store is unreachable, or kept trimming under the reader.
        """
        await self._idle.wait()
        started_s = time.perf_counter()
        for _ in range(RECOVER_ATTEMPTS_MAX):
            snapshot_op, state = await self._stored_snapshot()
            records = await self._records_after(snapshot_op)
            if records is not None:
                break
        else:
            raise JournalFailed("the region's journal kept being trimmed while it was read")
        last_op = records[-1]["op"] if records else snapshot_op
        self.lease = None
        self._reset(last_op, None)
        self._failure = JournalFailed(STANDBY)
        duration_s = time.perf_counter() - started_s
        self._observer.on_recovery(duration_s, len(records))
        self._log.info("journal.recovered", snapshot_op=snapshot_op, last_op=last_op,
                       records_replayed=len(records), duration_s=round(duration_s, 6), store="region")
        return Recovery(state, snapshot_op, records, last_op, False, 0, len(records), duration_s)

    async def _stored_snapshot(self) -> tuple[int, Any]:
        frame = await self._store_call(self.store.snapshot())
        if frame is None:
            return 0, None
        decoded = decode_snapshot(frame)
        if isinstance(decoded, str):
            raise JournalFailed(f"the region's snapshot is damaged: {decoded}")
        return decoded

    async def _records_after(self, op: int) -> list[dict] | None:
        """Every record after `op`, or None when the stream no longer reaches back to `op` + 1."""
        records: list[dict] = []
        while True:
            entries = await self._store_call(self.store.read(op))
            if not entries:
                return records
            if entries[0][0] != op + 1:
                return None
            for entry_op, _, payload in entries:
                if entry_op != op + 1:
                    raise JournalFailed(f"the region's journal skips from op {op} to {entry_op}")
                records.append(decode_payload(payload))
                op = entry_op

    async def _store_call(self, call: Any) -> Any:
        try:
            return await call
        except OSError:
            raise
        except Exception as exc:  # the store's own errors: an operating error, the journal's kind
            raise JournalFailed(f"region store: {exc}") from exc

    # -- the writer ------------------------------------------------------------------------------

    async def _write_batch(self, first_op: int, payloads: list[bytes]) -> tuple[int, float | None]:
        """One fenced append and WAIT; returns (bytes, seconds the store took)."""
        lease = self.lease
        if lease is None or not lease.valid():
            raise JournalFailed("the lease lapsed before the batch was sent")
        started_s = time.perf_counter()
        try:
            await self.store.append(lease.value, lease.epoch, first_op, payloads)
        except Exception as exc:  # the store's own errors: fenced, too few replicas, unreachable
            raise JournalFailed(f"appending ops {first_op}..{first_op + len(payloads) - 1}: {exc}") from exc
        # The batch is in the journal; its answers leave only while the lease surely holds.
        if not lease.valid() or self.lease is not lease:
            raise JournalFailed("the lease lapsed while the batch was being replicated")
        return sum(len(payload) for payload in payloads), time.perf_counter() - started_s

    # -- snapshots -------------------------------------------------------------------------------

    async def snapshot_of(self, source: SnapshotSource) -> SnapshotWritten:
        """Store a snapshot of `source` at its newest op and trim the stream behind it (leader only).

        As the local journal: a forked child encodes the state into a scratch file (the loop
        pauses only for the fork); once the op is durable the file goes to the store, under the lease.
        """
        if self.lease is None:
            raise JournalFailed("only the leader snapshots the region")
        self._file_ops.makedirs(self.snapshot_dir)
        return await super().snapshot_of(source)

    async def _publish_child_snapshot(self, op: int, child: ChildSnapshot) -> SnapshotWritten:
        lease = self.lease
        if lease is None:
            raise JournalFailed("stepped down before the snapshot was stored")
        frame = await trio.to_thread.run_sync(self._file_ops.read_bytes, child.tmp_path)
        started_s = time.perf_counter()
        await self._store_call(self.store.put_snapshot(lease.value, op, frame))
        self._discard(child.tmp_path)
        return SnapshotWritten(f"region:{op}", len(frame), time.perf_counter() - started_s, 0, 0)
