"""Durable append-only journal: group commit, snapshots and crash recovery.

See ``journal.py`` for the life cycle and the failure policy.
"""

from .errors import JournalCorrupt, JournalError, JournalFailed, JournalFull
from .fileops import FaultRule, FaultyFileOps, RealFileOps
from .journal import Journal, Recovery
from .snapshots import SnapshotWritten
from .stats import JournalObserver, JournalStats

__all__ = [
    "FaultRule",
    "FaultyFileOps",
    "Journal",
    "JournalCorrupt",
    "JournalError",
    "JournalFailed",
    "JournalFull",
    "JournalObserver",
    "JournalStats",
    "RealFileOps",
    "Recovery",
    "SnapshotWritten",
]
