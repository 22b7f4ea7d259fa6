"""The journal's exceptions: full (back-pressure), failed (operating error), corrupt (refuse to start)."""

from __future__ import annotations

__all__ = ["JournalError", "JournalFull", "JournalFailed", "JournalCorrupt"]


class JournalError(Exception):
    """Base class of every error the journal raises on purpose."""


class JournalFull(JournalError):
    """The bounded append queue is full; the server answers OVERLOADED (-1)."""


class JournalFailed(JournalError):
    """A write or fsync failed (or the queue overflowed after the caller decided).

    Nothing at or after the failed batch is durable as far as the journal will ever say; the
    process must rebuild its in-memory state from disk (``Journal.recover()``) before it
    accepts state-changing requests again.
    """


class JournalCorrupt(JournalError):
    """The files on disk are damaged in a way a torn write cannot explain.

    The message is one line naming the file, the byte offset and the reason, so an operator can
    see at a glance what to restore from backup. The CLI exits non-zero on it.
    """
