"""The durable journal: group commit, snapshots and crash recovery (LMAX / TigerBeetle style).

Life cycle::

    journal = Journal(data_dir, fsync=True, group_commit_ms=2)
    recovered = journal.recover()            # snapshot + records after it; torn tail truncated
    core = rebuild(recovered.snapshot, recovered.records)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)     # the one writer task
        ...
        journal.check_room()                 # before the core decides (raises JournalFull)
        result = core.handle_tx(body, now_ms)
        journal.append(result.record)        # synchronous, right after the core decided
        await journal.wait_durable(result.record["op"])
        ...
        await journal.drain()                # graceful shutdown: everything appended is durable

Group commit: ``append`` only queues the encoded record. The writer task writes everything queued
as ONE batch with ONE write and ONE fsync in a worker thread (so the event loop keeps serving and
the next batch gathers meanwhile), advances ``durable_op`` and wakes that batch's waiters in op
order. Batching is natural (LMAX's smart batching): records that arrive while a batch is on its
way to disk form the next one. ``group_commit_ms`` is the least time between the starts of two
batches, which caps fsyncs at 1000 / group_commit_ms per second: a record is written at once if
the previous batch started at least that long ago, and otherwise waits until then (at most
``group_commit_ms``, less the time already passed) with whatever else arrives; a full batch of
``batch_records_max`` records goes without waiting. When records arrive further apart than
``group_commit_ms`` it adds nothing; under load it trades at most that much latency for fewer,
larger writes.

Failure policy. Any ``OSError`` (ENOSPC, EIO ...) while writing or fsyncing a batch puts the
journal in the failed state: every waiter of that batch and of later ones gets ``JournalFailed``
(the server answers -1 INTERNAL: outcome unknown), ``append`` raises ``JournalFailed``, and
``failed`` is True so /readyz answers 503. ``durable_op`` never covers a record whose fsync did
not succeed. Because the core's memory now holds effects that are not durable, the process must
rebuild it: ``await journal.reopen()`` (or ``recover()`` when the writer is idle) cuts the last
segment back to the end of the last fsynced batch (discarding a partial write, and any page-cache
data whose fsync failed, which Linux may drop silently), re-reads the disk and returns the
``Recovery`` to rebuild the core from; appends are accepted again after it. The same applies when
``append`` finds the queue full: the caller has already applied that op in memory, so the journal
fails rather than leave a gap; callers avoid it by calling ``check_room()`` before the core decides.

Snapshots: ``await journal.snapshot_of(core)`` forks a child at the core's newest op; the child
captures, encodes and writes the state from its copy-on-write image while the parent serves on,
and the parent renames the file into place once that op is durable (``forked``). ``await
journal.snapshot(state, op)`` encodes an already captured ``state`` on the event loop (a pause
that grows with the state), waits until ``op`` is durable, then writes the file in a worker
thread; ``write_snapshot(state, op)`` does the same synchronously, for tools and tests, and
requires ``op <= durable_op``.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from ..logs import JsonLogger
from .errors import JournalCorrupt, JournalFailed, JournalFull
from .fileops import RealFileOps
from .forked import CAN_FORK, ChildSnapshot, fork_writer, wait_writer
from .framing import encode_payload, encode_snapshot, frame_payload
from .segments import ScanResult, scan_segments, segment_name
from .snapshots import (LoadedSnapshot, SnapshotWritten, load_newest_snapshots, publish_snapshot,
                        set_aside, write_snapshot_files)
from .stats import JournalObserver, JournalStats
from .writer import WriterThread

__all__ = ["Journal", "Recovery", "SnapshotSource"]

GROUP_COMMIT_MS_DEFAULT = 2.0
BATCH_RECORDS_MAX_DEFAULT = 1024
QUEUE_RECORDS_MAX_DEFAULT = 16_384
QUEUE_BYTES_MAX_DEFAULT = 64 * 1024 * 1024
SEGMENT_BYTES_MAX_DEFAULT = 64 * 1024 * 1024


class SnapshotSource(Protocol):
    """What ``snapshot_of`` snapshots: the core (its newest op and a msgpack-able copy of its state)."""

    last_op: int

    def snapshot(self) -> Any: ...


@dataclass(frozen=True)
class Recovery:
    """What ``recover()`` found: rebuild the core from ``snapshot`` then ``records`` in order."""

    snapshot: Any | None          # the newest valid snapshot's state, None when there is none
    snapshot_op: int              # the op that snapshot includes (0 without one)
    records: list[dict]           # every durable record after snapshot_op, in op order
    last_op: int                  # the newest durable op; the next append must be last_op + 1
    torn_tail: bool
    torn_tail_bytes: int
    records_replayed: int
    duration_s: float
    snapshots_rejected: tuple[str, ...] = ()   # "path: reason" of corrupt snapshots set aside


@dataclass
class _Segment:
    first_op: int
    path: str
    fd: int | None
    durable_bytes: int            # bytes of whole, acknowledged batches


@dataclass
class _Pending:
    op: int
    payload: bytes


class Journal:
    """Append-only, group-committed journal of core records, with snapshots and recovery."""

    def __init__(self, data_dir: str | os.PathLike[str], *, fsync: bool = True,
                 group_commit_ms: float = GROUP_COMMIT_MS_DEFAULT,
                 batch_records_max: int = BATCH_RECORDS_MAX_DEFAULT,
                 queue_records_max: int = QUEUE_RECORDS_MAX_DEFAULT,
                 queue_bytes_max: int = QUEUE_BYTES_MAX_DEFAULT,
                 segment_bytes_max: int = SEGMENT_BYTES_MAX_DEFAULT,
                 file_ops: RealFileOps | None = None, observer: JournalObserver | None = None,
                 logger: JsonLogger | None = None) -> None:
        if group_commit_ms < 0 or batch_records_max < 1 or queue_records_max < 1:
            raise ValueError("group_commit_ms >= 0, batch_records_max >= 1, queue_records_max >= 1")
        self.journal_dir = os.path.join(os.fspath(data_dir), "journal")
        self.snapshot_dir = os.path.join(os.fspath(data_dir), "snapshots")
        self._fsync = fsync
        self._group_commit_s = group_commit_ms / 1000.0
        self._writer = WriterThread()
        self._batch_records_max = batch_records_max
        self._queue_records_max = queue_records_max
        self._queue_bytes_max = queue_bytes_max
        self._segment_bytes_max = segment_bytes_max
        self._file_ops = file_ops if file_ops is not None else RealFileOps()
        self._observer = observer if observer is not None else JournalObserver()
        self._log = logger if logger is not None else JsonLogger()
        self.stats = JournalStats()
        self._recovered = False
        self._running = False
        self._failure: JournalFailed | JournalFull | None = None
        self._durable_op = 0
        self._next_op = 1
        self._inflight_last_op = 0       # last op of the batch being written, 0 when idle
        self._idle = trio.Event()
        self._idle.set()
        self._generation = 0             # bumped by recover(): waiters from before cannot succeed
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queue_bytes = 0
        self._wakeup = trio.Event()
        self._waiters: list[tuple[int, int, trio.Event]] = []
        self._waiter_seq = itertools.count()
        self._batch_started_s = float("-inf")   # trio time the last batch was taken for writing
        self._segment: _Segment | None = None
        self._snapshot_lock = trio.Lock()

    # -- state -------------------------------------------------------------------------------

    @property
    def durable_op(self) -> int:
        """The newest op whose batch was written and fsynced (monotonic until ``recover``)."""
        return self._durable_op

    @property
    def next_op(self) -> int:
        """The op the next ``append`` must carry."""
        return self._next_op

    @property
    def failed(self) -> bool:
        """True after a write/fsync failure until a successful ``recover``/``reopen``."""
        return self._failure is not None

    @property
    def failure(self) -> BaseException | None:
        """The error that failed the journal, for logs and /readyz detail."""
        return self._failure

    @property
    def queue_records(self) -> int:
        """Records appended but not yet handed to the writer thread."""
        return len(self._queue)

    # -- recovery ----------------------------------------------------------------------------

    def recover(self) -> Recovery:
        """Load the newest valid snapshot and every durable record after it; truncate a torn tail.

        Call before ``run``, and again after a failure (when no batch is being written; see
        ``reopen``). Never modifies a file when it raises ``JournalCorrupt``.

        Returns:
            Recovery: the state to rebuild the core from.
        Raises:
            JournalCorrupt: damage a torn write cannot explain (one-line message).
            JournalFailed: after a failure, the journal could not be cut back to its durable end.
            RuntimeError: a batch is being written, or the journal is healthy and running.
        """
        if self._inflight_last_op or (self._running and self._failure is None):
            raise RuntimeError("recover() while the writer is busy; use await reopen() after a failure")
        started_s = time.perf_counter()
        self._cut_back_to_durable()
        self._file_ops.makedirs(self.journal_dir)
        self._file_ops.makedirs(self.snapshot_dir)
        snapshot, scan, rejected = self._load()
        if scan.torn_bytes:
            self._truncate_torn_tail(scan)
        for path, _ in rejected:
            set_aside(self._file_ops, path)
        base_op = snapshot.op if snapshot else 0
        last_op = max(base_op, scan.last_op)
        self._reset(last_op, scan if scan.last_op >= base_op else None)
        duration_s = time.perf_counter() - started_s
        self.stats.recovery_s = duration_s
        self._observer.on_recovery(duration_s, len(scan.records))
        self._log.info("journal.recovered", snapshot_op=base_op, last_op=last_op,
                       records_replayed=len(scan.records), torn_tail_bytes=scan.torn_bytes,
                       duration_s=round(duration_s, 6))
        return Recovery(snapshot.state if snapshot else None, base_op, scan.records, last_op,
                        scan.torn_bytes > 0, scan.torn_bytes, len(scan.records), duration_s,
                        tuple(f"{path}: {reason}" for path, reason in rejected))

    def read_only(self) -> Recovery:
        """What ``recover`` would rebuild the core from, read without changing or creating any file.

        For tools that read a data directory (a copy, a backup, or one a gateway is writing): a
        torn tail is left as it is and its bytes are not used; a corrupt snapshot is passed over
        (the next older one is used), never set aside. Nothing is truncated, renamed or created.

        Raises:
            JournalCorrupt: no journal or snapshot directory here, or damage a torn write cannot
                explain (one-line message).
        """
        if not (os.path.isdir(self.journal_dir) or os.path.isdir(self.snapshot_dir)):
            raise JournalCorrupt(f"{os.path.dirname(self.journal_dir)}: no journal or snapshots here")
        started_s = time.perf_counter()
        snapshot, scan, rejected = self._load_read_only()
        base_op = snapshot.op if snapshot else 0
        return Recovery(snapshot.state if snapshot else None, base_op, scan.records, max(base_op, scan.last_op),
                        scan.torn_bytes > 0, scan.torn_bytes, len(scan.records), time.perf_counter() - started_s,
                        tuple(f"{path}: {reason}" for path, reason in rejected))

    def _load_read_only(self) -> tuple[LoadedSnapshot | None, ScanResult, list[tuple[str, str]]]:
        """``_load`` for a directory that may lack one of its two subdirectories."""
        if not os.path.isdir(self.snapshot_dir):
            return None, scan_segments(self._file_ops, self.journal_dir, 0), []
        if not os.path.isdir(self.journal_dir):
            valid, rejected = load_newest_snapshots(self._file_ops, self.snapshot_dir)
            snapshot = valid[0] if valid else None
            return snapshot, ScanResult(last_op=snapshot.op if snapshot else 0), rejected
        return self._load()

    async def reopen(self) -> Recovery:
        """After a failure: wait for the batch being written (if any) to finish, then ``recover``."""
        await self._idle.wait()
        return self.recover()

    def _load(self) -> tuple[LoadedSnapshot | None, ScanResult, list[tuple[str, str]]]:
        valid, rejected = load_newest_snapshots(self._file_ops, self.snapshot_dir)
        snapshot = valid[0] if valid else None
        try:
            scan = scan_segments(self._file_ops, self.journal_dir, snapshot.op if snapshot else 0)
        except JournalCorrupt as exc:
            if rejected and snapshot is None:
                path, reason = rejected[0]
                raise JournalCorrupt(f"{exc} (and no valid snapshot: {path}: {reason})") from exc
            raise
        for path, reason in rejected:
            self._log.warning("journal.snapshot_rejected", path=path, reason=reason,
                              fallback_op=snapshot.op if snapshot else 0)
        return snapshot, scan, rejected

    def _truncate_torn_tail(self, scan: ScanResult) -> None:
        assert scan.tail_path is not None
        self._file_ops.truncate(scan.tail_path, scan.tail_valid_bytes)
        self.stats.torn_tails += 1
        self.stats.torn_tail_bytes += scan.torn_bytes
        self._observer.on_torn_tail(scan.torn_bytes)
        self._log.warning("journal.torn_tail", path=scan.tail_path, kept_bytes=scan.tail_valid_bytes,
                          torn_bytes=scan.torn_bytes, reason=scan.torn_reason)

    def _cut_back_to_durable(self) -> None:
        """After a failure, drop whatever follows the last fsynced batch in the open segment."""
        segment, self._segment = self._segment, None
        if segment is None:
            return
        if segment.fd is not None:
            self._file_ops.close(segment.fd)
        if self._failure is None:
            return
        try:
            self._file_ops.truncate(segment.path, segment.durable_bytes)
        except OSError as exc:
            self._segment = segment
            segment.fd = None
            raise JournalFailed(f"cannot cut {segment.path} back to {segment.durable_bytes} "
                                f"bytes: {exc}") from exc

    def _reset(self, last_op: int, scan: ScanResult | None) -> None:
        self._generation += 1
        self._wake_all()
        self._failure = None
        self._queue.clear()
        self._queue_bytes = 0
        self._durable_op = last_op
        self._next_op = last_op + 1
        self._recovered = True
        self._segment = None
        if scan is not None and scan.tail_path is not None:
            first_op = int(os.path.basename(scan.tail_path).split(".")[0])
            self._segment = _Segment(first_op, scan.tail_path, None, scan.tail_valid_bytes)

    # -- appending ---------------------------------------------------------------------------

    def check_room(self) -> None:
        """Raise JournalFull (or JournalFailed) unless one more record can be appended now.

        Call it before the core decides: between this call and ``append`` there is no await, so
        the append that follows cannot find the queue full.
        """
        self._check_writable()
        if len(self._queue) >= self._queue_records_max or self._queue_bytes >= self._queue_bytes_max:
            raise JournalFull(f"journal queue full ({len(self._queue)} records, "
                              f"{self._queue_bytes} bytes)")

    def append(self, record: dict) -> None:
        """Queue ``record`` (whose ``"op"`` must be ``next_op``) for the next group commit.

        Synchronous: never awaits. Raises:
            JournalFailed: the journal is failed (rebuild first).
            JournalFull: the queue is full; the journal fails too (see the module docstring).
            ValueError / TypeError: wrong op, or a record msgpack cannot encode (nothing queued).
        """
        self._check_writable()
        op = record.get("op") if isinstance(record, dict) else None
        if op != self._next_op or isinstance(op, bool):
            raise ValueError(f"record op {op!r} out of sequence: expected {self._next_op}")
        payload = encode_payload(record)
        try:
            self.check_room()
        except JournalFull as exc:
            self._fail(exc)
            raise
        self._queue.append(_Pending(op, payload))
        self._queue_bytes += len(payload)
        self._next_op += 1
        if len(self._queue) == 1 or len(self._queue) >= self._batch_records_max:
            self._wakeup.set()

    def _check_writable(self) -> None:
        if self._failure is not None:
            raise JournalFailed(f"journal failed: {self._failure}")
        if not self._recovered:
            raise RuntimeError("Journal.recover() must run before append()")

    async def wait_durable(self, op: int) -> None:
        """Return once ``op`` is durable (its batch written and fsynced).

        Raises:
            JournalFailed: the batch holding ``op`` (or an earlier one) failed.
            ValueError: ``op`` was never appended.
        """
        if op <= self._durable_op:
            return
        if op >= self._next_op:
            raise ValueError(f"op {op} was never appended (next op {self._next_op})")
        if self._failure is not None and op > self._inflight_last_op:
            raise JournalFailed(f"op {op} is not durable: journal failed: {self._failure}")
        generation = self._generation
        event = trio.Event()
        heapq.heappush(self._waiters, (op, next(self._waiter_seq), event))
        await event.wait()
        if generation != self._generation or op > self._durable_op:
            raise JournalFailed(f"op {op} is not durable: journal failed: {self._failure}")

    async def drain(self) -> None:
        """Wait until every appended record is durable (graceful shutdown); raises JournalFailed."""
        await self.wait_durable(self._next_op - 1)

    # -- snapshots ---------------------------------------------------------------------------

    async def snapshot(self, state: Any, op: int) -> SnapshotWritten:
        """Snapshot ``state`` (which includes every op up to ``op``) without blocking the loop.

        ``state`` is encoded at once, on the loop, so later mutations of the core cannot leak
        into it; the method then waits until ``op`` is durable and writes the file, fsyncs,
        renames and retires old snapshots and segments in a worker thread. One at a time.

        Raises:
            JournalFailed: the journal is (or becomes) failed.
            OSError: the snapshot could not be written; older snapshots stay valid.
        """
        encode_started_s = time.perf_counter()
        frame = encode_snapshot(state, op)
        encode_s = time.perf_counter() - encode_started_s
        await self.wait_durable(op)
        async with self._snapshot_lock:
            self._check_snapshot_op(op)
            written = await trio.to_thread.run_sync(
                write_snapshot_files, self._file_ops, self.snapshot_dir, self.journal_dir, op, frame)
        return self._account_snapshot(written, encode_s, loop_pause_s=encode_s)

    async def snapshot_of(self, source: SnapshotSource) -> SnapshotWritten:
        """Snapshot ``source`` (the core) at its newest op, pausing the loop only for a fork.

        Where the platform forks, a child forked at ``source.last_op`` captures, encodes and
        writes the state from its copy-on-write image (``forked``); the parent waits for it in a
        worker thread, then for the op to be durable, then renames the file into place and
        retires old snapshots and segments. Elsewhere it is ``snapshot(source.snapshot(), op)``.
        One at a time. Raises like ``snapshot``.
        """
        if not CAN_FORK:
            return await self.snapshot(source.snapshot(), source.last_op)
        async with self._snapshot_lock:
            if self._failure is not None:
                raise JournalFailed(f"no snapshot while the journal is failed: {self._failure}")
            # No await from here to the fork: the child's image is the state at exactly `op`.
            op = source.last_op
            fork_started_s = time.perf_counter()
            pid, report_fd = fork_writer(source.snapshot, op, self._file_ops, self.snapshot_dir)
            fork_s = time.perf_counter() - fork_started_s
            child = await trio.to_thread.run_sync(wait_writer, pid, report_fd)
            try:
                # Never publish a state holding an op that could still be lost.
                await self.wait_durable(op)
                self._check_snapshot_op(op)
                written = await self._publish_child_snapshot(op, child)
            except BaseException:
                self._discard(child.tmp_path)
                raise
        return self._account_snapshot(written, child.encode_s, loop_pause_s=fork_s)

    async def _publish_child_snapshot(self, op: int, child: ChildSnapshot) -> SnapshotWritten:
        """Put the child's file of durable op `op` in place and retire what it covers."""
        return await trio.to_thread.run_sync(
            publish_snapshot, self._file_ops, self.snapshot_dir, self.journal_dir, op,
            child.tmp_path, child.snapshot_bytes)

    def _discard(self, tmp_path: str) -> None:
        """Best effort: a leftover temporary snapshot is also removed by the next retention."""
        try:
            self._file_ops.remove(tmp_path)
        except OSError:
            pass

    def write_snapshot(self, state: Any, op: int) -> SnapshotWritten:
        """Blocking variant of ``snapshot`` for tools and tests; requires ``op <= durable_op``.

        On the event loop prefer ``await snapshot(...)``: this one does the file work inline.
        """
        self._check_snapshot_op(op)
        encode_started_s = time.perf_counter()
        frame = encode_snapshot(state, op)
        encode_s = time.perf_counter() - encode_started_s
        written = write_snapshot_files(self._file_ops, self.snapshot_dir, self.journal_dir, op, frame)
        return self._account_snapshot(written, encode_s, loop_pause_s=encode_s)

    def _check_snapshot_op(self, op: int) -> None:
        if self._failure is not None:
            raise JournalFailed(f"no snapshot while the journal is failed: {self._failure}")
        if not self._recovered:
            raise RuntimeError("Journal.recover() must run before a snapshot")
        if op > self._durable_op:
            raise ValueError(f"snapshot op {op} is not durable yet (durable_op {self._durable_op}); "
                             "use await journal.snapshot(), which waits for it")

    def _account_snapshot(self, written: SnapshotWritten, encode_s: float, *,
                          loop_pause_s: float) -> SnapshotWritten:
        """Count and log a written snapshot; `loop_pause_s` is how long every request waited for it."""
        self.stats.snapshots_written += 1
        self.stats.segments_retired += written.segments_deleted
        self._observer.on_snapshot(written.snapshot_bytes, written.duration_s)
        self._log.info("journal.snapshot", path=written.path, snapshot_bytes=written.snapshot_bytes,
                       segments_retired=written.segments_deleted,
                       duration_s=round(written.duration_s, 6), encode_s=round(encode_s, 6),
                       loop_pause_s=round(loop_pause_s, 6))
        return written

    def close(self) -> None:
        """Close the open segment and end the writer thread; call after ``run`` has ended."""
        self._writer.stop()
        if self._segment is not None and self._segment.fd is not None:
            self._file_ops.close(self._segment.fd)
            self._segment.fd = None

    # -- the writer task ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: group-commit queued records until cancelled. Start with nursery.start."""
        if not self._recovered:
            raise RuntimeError("Journal.recover() must run before run()")
        if self._running:
            raise RuntimeError("Journal.run() is already running")
        self._running = True
        try:
            task_status.started()
            while True:
                await self._collect()
                batch = self._take_batch()
                if batch:
                    await self._commit(batch)
        finally:
            self._running = False

    async def _collect(self) -> None:
        """Wait for a record, then until group_commit_ms after the last batch started (or a full batch)."""
        while not self._queue:
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        not_before_s = self._batch_started_s + self._group_commit_s
        if self._group_commit_s > 0 and trio.current_time() < not_before_s:
            with trio.move_on_at(not_before_s):
                while 0 < len(self._queue) < self._batch_records_max:
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
        self._batch_started_s = trio.current_time()

    def _take_batch(self) -> list[_Pending]:
        count = min(len(self._queue), self._batch_records_max)
        batch = [self._queue.popleft() for _ in range(count)]
        self._queue_bytes -= sum(len(p.payload) for p in batch)
        return batch

    async def _commit(self, batch: list[_Pending]) -> None:
        first_op, last_op = batch[0].op, batch[-1].op
        self._inflight_last_op = last_op
        self._idle = trio.Event()
        try:
            written_bytes, fsync_s = await self._write_batch(first_op, [p.payload for p in batch])
        except (OSError, JournalFailed) as exc:
            error = exc if isinstance(exc, JournalFailed) else JournalFailed(
                f"writing ops {first_op}..{last_op} failed: {exc}")
            if error is not exc:
                error.__cause__ = exc
            self._inflight_last_op = 0
            self._fail(error)
            return
        finally:
            self._inflight_last_op = 0
            self._idle.set()
        self._durable_op = last_op
        self.stats.add_batch(len(batch), written_bytes, fsync_s)
        self._observer.on_batch(len(batch), written_bytes, fsync_s)
        self._release_waiters()

    async def _write_batch(self, first_op: int, payloads: list[bytes]) -> tuple[int, float | None]:
        """Make one batch durable; returns (bytes written, fsync seconds or None).

        Raises OSError or JournalFailed: the batch is not durable (the journal fails).
        """
        written_bytes, fsync_s = await self._writer.run_sync(self._write_blocking, first_op, payloads)
        assert self._segment is not None
        self._segment.durable_bytes += written_bytes
        return written_bytes, fsync_s

    def _write_blocking(self, first_op: int, payloads: list[bytes]) -> tuple[int, float | None]:
        """Worker thread: one write and one fsync for the whole batch."""
        data = b"".join(frame_payload(payload, first_op) for payload in payloads)
        segment = self._segment
        if segment is None or segment.durable_bytes >= self._segment_bytes_max:
            segment = self._roll_blocking(first_op)
        elif segment.fd is None:
            segment.fd = self._file_ops.open_append(segment.path)
        self._file_ops.write(segment.fd, data)
        if not self._fsync:
            return len(data), None
        started_s = time.perf_counter()
        self._file_ops.fsync(segment.fd)
        return len(data), time.perf_counter() - started_s

    def _roll_blocking(self, first_op: int) -> _Segment:
        """Worker thread: start the segment named ``first_op`` and make its name durable."""
        path = os.path.join(self.journal_dir, segment_name(first_op))
        segment = _Segment(first_op, path, self._file_ops.open_append(path), 0)
        previous, self._segment = self._segment, segment
        if previous is not None and previous.fd is not None:
            self._file_ops.close(previous.fd)
            previous.fd = None
        if self._fsync:
            self._file_ops.fsync_dir(self.journal_dir)
        return segment

    # -- waking ------------------------------------------------------------------------------

    def _release_waiters(self) -> None:
        """Wake, in op order, every waiter whose op is now durable."""
        while self._waiters and self._waiters[0][0] <= self._durable_op:
            heapq.heappop(self._waiters)[2].set()

    def _wake_all(self) -> None:
        waiters, self._waiters = self._waiters, []
        for _, _, event in sorted(waiters):
            event.set()

    def _fail(self, error: JournalFailed | JournalFull) -> None:
        """Enter the failed state: drop the queue, fail every waiter not in the batch in flight."""
        if self._failure is None:
            self._failure = error
            self.stats.failures += 1
            self._observer.on_failure(error)
            self._log.error("journal.failed", error=str(error), durable_op=self._durable_op)
        self._queue.clear()
        self._queue_bytes = 0
        self._wakeup.set()
        keep = [w for w in self._waiters if w[0] <= self._inflight_last_op]
        doomed = [w for w in self._waiters if w[0] > self._inflight_last_op]
        self._waiters = keep
        heapq.heapify(self._waiters)
        for _, _, event in sorted(doomed):
            event.set()
