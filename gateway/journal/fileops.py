"""The file-operations seam: every byte the journal reads or writes goes through one of these.

``RealFileOps`` talks to the operating system. ``FaultyFileOps`` wraps it and raises chosen
``OSError``s (ENOSPC, EIO ...) on chosen calls, optionally after writing part of the data, so
tests can prove the failure policy without a full disk.
"""

from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass

__all__ = ["RealFileOps", "FaultyFileOps", "FaultRule"]


# fdatasync where the platform has it (Linux); elsewhere fsync, which flushes more but as safely.
_datasync = getattr(os, "fdatasync", os.fsync)


class RealFileOps:
    """Plain POSIX file operations, using raw file descriptors (no userspace buffering)."""

    def makedirs(self, path: str) -> None:
        """Create ``path`` and its parents if missing."""
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        """Names in directory ``path`` (unsorted)."""
        return os.listdir(path)

    def read_bytes(self, path: str) -> bytes:
        """The whole content of file ``path``."""
        with open(path, "rb") as handle:
            return handle.read()

    def open_append(self, path: str) -> int:
        """Open ``path`` for appending (created if missing); returns a file descriptor."""
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def open_new(self, path: str) -> int:
        """Create or empty ``path`` for writing; returns a file descriptor."""
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def write(self, fd: int, data: bytes) -> None:
        """Write all of ``data``, looping over short writes."""
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def after_fork_in_child(self) -> None:
        """Called first thing in a forked snapshot writer (``forked``); nothing to reset here."""

    def fsync(self, fd: int) -> None:
        """Flush the file's data, and the metadata needed to read it back, to stable storage.

        fdatasync: the size of an appended or truncated file is flushed, its timestamps are not
        (they are never read back), which saves a metadata write per batch on ext4/xfs.
        """
        _datasync(fd)

    def close(self, fd: int) -> None:
        """Close a descriptor returned by ``open_append``/``open_new``."""
        os.close(fd)

    def truncate(self, path: str, size_bytes: int) -> None:
        """Cut ``path`` to ``size_bytes`` and make the new size durable."""
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size_bytes)
            self.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace ``dst`` by ``src`` (same filesystem)."""
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        """Delete file ``path``."""
        os.remove(path)

    def fsync_dir(self, path: str) -> None:
        """Make creations, renames and deletions inside directory ``path`` durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class FaultRule:
    """Fail calls of ``op_name`` number ``after + 1`` .. ``after + times`` (``times=None``: forever)."""

    op_name: str
    errno_code: int = errno.ENOSPC
    after: int = 0
    times: int | None = 1
    # For "write": bytes actually written before the error, to model a partial write.
    partial_bytes: int = 0
    fired: int = 0


class FaultyFileOps(RealFileOps):
    """``RealFileOps`` that raises injected ``OSError``s, for tests of the failure policy.

    Example: ``ops = FaultyFileOps(); ops.fail("fsync", errno.EIO)`` makes the next fsync fail.
    ``calls`` counts every operation by name, which also lets tests count fsyncs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the journal calls in from worker threads
        self.rules: list[FaultRule] = []
        self.calls: dict[str, int] = {}

    def fail(self, op_name: str, errno_code: int = errno.ENOSPC, *, after: int = 0,
             times: int | None = 1, partial_bytes: int = 0) -> FaultRule:
        """Arm a fault: the call of ``op_name`` after the next ``after`` ones raises ``errno_code``."""
        rule = FaultRule(op_name, errno_code, self.calls.get(op_name, 0) + after, times, partial_bytes)
        with self._lock:
            self.rules.append(rule)
        return rule

    def after_fork_in_child(self) -> None:
        """A worker thread may have held the lock at the fork; the child has no such thread."""
        self._lock = threading.Lock()

    def _check(self, op_name: str) -> FaultRule | None:
        with self._lock:
            count = self.calls.get(op_name, 0)
            self.calls[op_name] = count + 1
            for rule in self.rules:
                due = rule.op_name == op_name and count >= rule.after
                if due and (rule.times is None or rule.fired < rule.times):
                    rule.fired += 1
                    return rule
        return None

    @staticmethod
    def _raise(rule: FaultRule) -> None:
        raise OSError(rule.errno_code, f"injected {os.strerror(rule.errno_code)} on {rule.op_name}")

    def write(self, fd: int, data: bytes) -> None:
        rule = self._check("write")
        if rule is not None:
            if rule.partial_bytes:
                super().write(fd, data[:rule.partial_bytes])
            self._raise(rule)
        super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._maybe_fail("fsync")
        super().fsync(fd)

    def open_append(self, path: str) -> int:
        self._maybe_fail("open")
        return super().open_append(path)

    def open_new(self, path: str) -> int:
        self._maybe_fail("open")
        return super().open_new(path)

    def rename(self, src: str, dst: str) -> None:
        self._maybe_fail("rename")
        super().rename(src, dst)

    def truncate(self, path: str, size_bytes: int) -> None:
        self._maybe_fail("truncate")
        super().truncate(path, size_bytes)

    def fsync_dir(self, path: str) -> None:
        self._maybe_fail("fsync_dir")
        super().fsync_dir(path)

    def listdir(self, path: str) -> list[str]:
        self._maybe_fail("listdir")
        return super().listdir(path)

    def _maybe_fail(self, op_name: str) -> None:
        rule = self._check(op_name)
        if rule is not None:
            self._raise(rule)
