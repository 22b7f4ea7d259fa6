"""Snapshot files: atomic write, newest-valid load with fallback, retention and segment retirement.

A snapshot is ``<data_dir>/snapshots/<op, 20 digits>.ysnap``: the core's full state including
every op up to ``op``, in a checksummed frame (see ``framing``). It is written to ``.tmp``,
fsynced, renamed into place and the directory fsynced, so a crash leaves either the old set of
snapshots or the new one, plus at worst an ignored ``.tmp`` file.

The newest two snapshots are kept. Segments wholly covered by the *older* kept snapshot are
deleted: should the newest snapshot turn out corrupt, the older one plus the journal after it
still rebuild the state.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from .fileops import RealFileOps
from .framing import decode_snapshot
from .segments import list_segments

__all__ = ["SNAPSHOT_SUFFIX", "SNAPSHOTS_KEPT", "LoadedSnapshot", "list_snapshots",
           "load_newest_snapshots", "install_snapshot", "publish_snapshot", "retire",
           "SnapshotWritten", "write_snapshot_files", "write_snapshot_tmp"]

SNAPSHOT_SUFFIX = ".ysnap"
TMP_SUFFIX = ".tmp"
CORRUPT_SUFFIX = ".corrupt"
SNAPSHOTS_KEPT = 2
_OP_DIGITS = 20


def snapshot_name(op: int) -> str:
    """File name of the snapshot that includes every op up to ``op``."""
    return f"{op:0{_OP_DIGITS}d}{SNAPSHOT_SUFFIX}"


def list_snapshots(file_ops: RealFileOps, snapshot_dir: str) -> list[tuple[int, str]]:
    """``(op, path)`` of every installed snapshot (tmp and corrupt files ignored), newest first."""
    found = []
    for name in file_ops.listdir(snapshot_dir):
        stem = name[:-len(SNAPSHOT_SUFFIX)]
        if name.endswith(SNAPSHOT_SUFFIX) and len(stem) == _OP_DIGITS and stem.isdigit():
            found.append((int(stem), os.path.join(snapshot_dir, name)))
    return sorted(found, reverse=True)


@dataclass(frozen=True)
class LoadedSnapshot:
    """A snapshot that passed its checksum."""

    op: int
    state: Any
    path: str


def load_newest_snapshots(file_ops: RealFileOps, snapshot_dir: str
                          ) -> tuple[list[LoadedSnapshot], list[tuple[str, str]]]:
    """Decode every installed snapshot, newest first.

    Returns ``(valid, rejected)``: the snapshots that passed their checksum (and whose header op
    matches the file name), and ``(path, reason)`` for those that did not.
    """
    valid: list[LoadedSnapshot] = []
    rejected: list[tuple[str, str]] = []
    for op, path in list_snapshots(file_ops, snapshot_dir):
        decoded = decode_snapshot(file_ops.read_bytes(path))
        if isinstance(decoded, str):
            rejected.append((path, decoded))
        elif decoded[0] != op:
            rejected.append((path, f"header op {decoded[0]} does not match the file name"))
        else:
            valid.append(LoadedSnapshot(op, decoded[1], path))
    return valid, rejected


def set_aside(file_ops: RealFileOps, path: str) -> None:
    """Rename a corrupt snapshot out of the way, keeping it for forensics."""
    file_ops.rename(path, path + CORRUPT_SUFFIX)


def install_snapshot(file_ops: RealFileOps, snapshot_dir: str, op: int, frame: bytes) -> str:
    """Atomically install an encoded snapshot frame; returns its path.

    Raises:
        OSError: the write, fsync or rename failed; the previous snapshots are untouched.
    """
    tmp_path = write_snapshot_tmp(file_ops, snapshot_dir, op, frame)
    final_path = os.path.join(snapshot_dir, snapshot_name(op))
    file_ops.rename(tmp_path, final_path)
    file_ops.fsync_dir(snapshot_dir)
    return final_path


def write_snapshot_tmp(file_ops: RealFileOps, snapshot_dir: str, op: int, frame: bytes) -> str:
    """Write and fsync an encoded snapshot under a temporary name (the writing process's pid in
    it, so a forked writer left over from a killed gateway never shares a file); return its path.
    """
    tmp_path = os.path.join(snapshot_dir, f"{snapshot_name(op)}.{os.getpid()}{TMP_SUFFIX}")
    fd = file_ops.open_new(tmp_path)
    try:
        try:
            file_ops.write(fd, frame)
            file_ops.fsync(fd)
        finally:
            file_ops.close(fd)
    except OSError:
        _remove_quietly(file_ops, tmp_path)
        raise
    return tmp_path


def _remove_quietly(file_ops: RealFileOps, path: str) -> None:
    """Best effort: a leftover temporary file is also removed by the next retention."""
    try:
        file_ops.remove(path)
    except OSError:
        pass


def publish_snapshot(file_ops: RealFileOps, snapshot_dir: str, journal_dir: str, op: int,
                     tmp_path: str, snapshot_bytes: int) -> SnapshotWritten:
    """Rename a snapshot written by ``write_snapshot_tmp`` into place, then apply retention."""
    started_s = time.perf_counter()
    final_path = os.path.join(snapshot_dir, snapshot_name(op))
    file_ops.rename(tmp_path, final_path)
    file_ops.fsync_dir(snapshot_dir)
    snapshots_deleted, segments_deleted = retire(file_ops, snapshot_dir, journal_dir)
    return SnapshotWritten(final_path, snapshot_bytes, time.perf_counter() - started_s,
                           snapshots_deleted, segments_deleted)


def retire(file_ops: RealFileOps, snapshot_dir: str, journal_dir: str) -> tuple[int, int]:
    """Keep the newest ``SNAPSHOTS_KEPT`` snapshots; delete older ones, stale tmp files, and
    segments wholly covered by the oldest kept snapshot.

    Returns ``(snapshots_deleted, segments_deleted)``.
    """
    kept = list_snapshots(file_ops, snapshot_dir)
    snapshots_deleted = 0
    for _, path in kept[SNAPSHOTS_KEPT:]:
        file_ops.remove(path)
        snapshots_deleted += 1
    for name in file_ops.listdir(snapshot_dir):
        if SNAPSHOT_SUFFIX in name and name.endswith(TMP_SUFFIX):
            file_ops.remove(os.path.join(snapshot_dir, name))
    file_ops.fsync_dir(snapshot_dir)
    if len(kept) < SNAPSHOTS_KEPT:
        return snapshots_deleted, 0
    covered_op = kept[SNAPSHOTS_KEPT - 1][0]
    segments = list_segments(file_ops, journal_dir)
    segments_deleted = 0
    # Segment i holds ops [first_i, first_{i+1} - 1]; the last segment is never deleted.
    for (_, path), (next_first_op, _) in zip(segments, segments[1:]):
        if next_first_op - 1 <= covered_op:
            file_ops.remove(path)
            segments_deleted += 1
    if segments_deleted:
        file_ops.fsync_dir(journal_dir)
    return snapshots_deleted, segments_deleted


@dataclass(frozen=True)
class SnapshotWritten:
    """The outcome of ``write_snapshot_files``."""

    path: str
    snapshot_bytes: int
    duration_s: float
    snapshots_deleted: int
    segments_deleted: int


def write_snapshot_files(file_ops: RealFileOps, snapshot_dir: str, journal_dir: str, op: int,
                         frame: bytes) -> SnapshotWritten:
    """Install an encoded snapshot, then apply retention; blocking (run it in a worker thread)."""
    started_s = time.perf_counter()
    path = install_snapshot(file_ops, snapshot_dir, op, frame)
    snapshots_deleted, segments_deleted = retire(file_ops, snapshot_dir, journal_dir)
    return SnapshotWritten(path, len(frame), time.perf_counter() - started_s, snapshots_deleted,
                           segments_deleted)
