"""Writing a snapshot from a forked child (as Redis's BGSAVE does), so serving never pauses for it.

The core is the single writer on the event loop, and a snapshot must hold exactly the state at
one op. Copying and encoding a large state takes about a second (docs/durability.md), and every
request would wait for it. A child forked at that op already holds the consistent copy: its
copy-on-write image of the parent's memory. The parent pauses only for ``fork()`` and goes on
serving while the child captures, encodes, writes and fsyncs the file under a temporary name;
the parent renames it into place once the op is durable (``Journal.snapshot_of``).

The child touches nothing of trio's: it turns off cycle collection, restores default signal
handling, lets the file operations drop locks another thread may have held at the fork, does
the capture and the file work, reports on a pipe and leaves with ``os._exit`` (no atexit
handlers, no flushing of the parent's buffers, no closing of the parent's connections).
"""

from __future__ import annotations

import errno
import gc
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from .fileops import RealFileOps
from .framing import encode_snapshot
from .snapshots import write_snapshot_tmp

__all__ = ["CAN_FORK", "ChildSnapshot", "fork_writer", "wait_writer"]

CAN_FORK = hasattr(os, "fork")
_REPORT_BYTES_MAX = 4096   # one small JSON line: written at once into the pipe's buffer


@dataclass(frozen=True)
class ChildSnapshot:
    """What the child wrote: the temporary file, its size, and the capture + encode time."""

    tmp_path: str
    snapshot_bytes: int
    encode_s: float


def fork_writer(capture: Callable[[], Any], op: int, file_ops: RealFileOps,
                snapshot_dir: str) -> tuple[int, int]:
    """Fork a child that writes ``capture()`` as the snapshot of ``op``; return (pid, report fd).

    Call it with no await since ``op`` was read: the child's image is the state at that moment.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(capture, op, file_ops, snapshot_dir, write_fd)
    os.close(write_fd)
    return pid, read_fd


def wait_writer(pid: int, read_fd: int) -> ChildSnapshot:
    """Blocking (run it in a worker thread): the child's report once it has exited.

    Raises:
        OSError: the child failed (its errno when it had one, else EIO), or died.
    """
    chunks = []
    try:
        while chunk := os.read(read_fd, _REPORT_BYTES_MAX):
            chunks.append(chunk)
    finally:
        os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    try:
        report = json.loads(b"".join(chunks))
    except ValueError:
        report = {"ok": False, "error": "no report"}
    if os.waitstatus_to_exitcode(status) != 0 or not report.get("ok"):
        detail = report.get("error", "no report")
        raise OSError(report.get("errno") or errno.EIO,
                      f"snapshot writer {pid} failed ({detail}; wait status {status})")
    return ChildSnapshot(report["tmp_path"], report["snapshot_bytes"], report["encode_s"])


def _child(capture: Callable[[], Any], op: int, file_ops: RealFileOps, snapshot_dir: str,
           write_fd: int) -> NoReturn:
    code = 1
    try:
        # No cycle collection here: it would run finalizers of the parent's objects (coroutines,
        # sockets) in this process, and touch pages copy-on-write for nothing.
        gc.disable()
        # The parent's wakeup fd and handlers belong to its event loop, not to this process.
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        file_ops.after_fork_in_child()
        started_s = time.perf_counter()
        frame = encode_snapshot(capture(), op)
        encode_s = time.perf_counter() - started_s
        tmp_path = write_snapshot_tmp(file_ops, snapshot_dir, op, frame)
        report: dict[str, Any] = {"ok": True, "tmp_path": tmp_path, "snapshot_bytes": len(frame),
                                  "encode_s": encode_s}
        code = 0
    except BaseException as exc:  # everything goes back to the parent; nothing may escape here
        report = {"ok": False, "errno": getattr(exc, "errno", None),
                  "error": f"{type(exc).__name__}: {exc}"[:500]}
    try:
        os.write(write_fd, json.dumps(report).encode()[:_REPORT_BYTES_MAX])
    finally:
        os._exit(code)
