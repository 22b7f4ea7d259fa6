"""Crash-safe gateway key rotation on disk.

The active private key lives in the `signing_key` file (PKCS8 PEM, read at start); the journal
only carries kids and public keys. A rotation therefore touches two places, in this order:

1. `stage_key`: the new key is written to `<key>.staged` (temporary file, fsync, rename, fsync
   of the directory);
2. the `key_rotate` record is journaled and made durable;
3. `install_staged`: the current key file is copied to `<key>.<old kid>.retired` (atomic write),
   then `<key>.staged` is renamed over `<key>` (atomic), and the directory is fsynced.

A crash anywhere leaves a state `finish_pending_rotation` resolves at start, before the key ring
is built: a staged key whose kid is the journal's newest rotation is installed (crash after 2);
any other staged key is deleted (crash before 2: the rotation never happened). The key file
itself is never missing or half-written, because every step is a rename.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import gateway_kid, public_raw

__all__ = ["KeyFileError", "discard_staged", "finish_pending_rotation", "install_staged", "key_kid",
           "newest_rotation_kid", "read_key", "retired_path", "stage_key", "staged_path"]

KEY_FILE_MODE = 0o600


class KeyFileError(Exception):
    """A key file is unreadable or not an Ed25519 PKCS8 PEM key; the message names the file."""


def staged_path(key_path: pathlib.Path) -> pathlib.Path:
    """Where a rotation's new key waits until its record is durable."""
    return key_path.with_name(key_path.name + ".staged")


def retired_path(key_path: pathlib.Path, kid: str) -> pathlib.Path:
    """Where a retired key is kept (operators may archive or destroy it)."""
    return key_path.with_name(f"{key_path.name}.{kid}.retired")


def key_kid(private_key: Ed25519PrivateKey) -> str:
    """The gateway kid of a private key."""
    return gateway_kid(public_raw(private_key.public_key()))


def read_key(path: pathlib.Path) -> Ed25519PrivateKey:
    """Read a PKCS8 PEM Ed25519 private key; raises KeyFileError naming the file."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PKCS8 PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key")
    return key


def _pem(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())


def _fsync_dir(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file, fsync, rename, fsync of the directory."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_FILE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def stage_key(key_path: pathlib.Path, private_key: Ed25519PrivateKey) -> pathlib.Path:
    """Step 1: durably write the new key next to the active one; returns the staged path."""
    staged = staged_path(key_path)
    _atomic_write(staged, _pem(private_key))
    return staged


def install_staged(key_path: pathlib.Path) -> str:
    """Step 3: keep the current key as retired and move the staged key into place.

    Idempotent: after a crash in the middle, calling it again finishes the job. Returns the kid
    of the key now in `key_path`.
    """
    staged = staged_path(key_path)
    new_key = read_key(staged)
    if key_path.exists():
        old_kid = key_kid(read_key(key_path))
        if old_kid != key_kid(new_key):
            _atomic_write(retired_path(key_path, old_kid), key_path.read_bytes())
    os.replace(staged, key_path)
    _fsync_dir(key_path.parent)
    return key_kid(new_key)


def discard_staged(key_path: pathlib.Path) -> bool:
    """Delete a staged key (and a torn temporary of it); True when there was one."""
    found = False
    for path in (staged_path(key_path), staged_path(key_path).with_name(staged_path(key_path).name + ".tmp")):
        if path.exists():
            path.unlink()
            found = True
    if found:
        _fsync_dir(key_path.parent)
    return found


def newest_rotation_kid(snapshot: dict[str, Any] | None, records: Iterable[dict[str, Any]]) -> str | None:
    """The kid of the newest journaled rotation: in the records after the snapshot, else the snapshot's."""
    newest = None
    if snapshot is not None:
        newest = (snapshot.get("governance") or {}).get("rotated_kid")
    for record in records:
        if record.get("t") == "key_rotate":
            newest = record["kid"]
    return newest


def finish_pending_rotation(key_path: pathlib.Path, snapshot: dict[str, Any] | None,
                            records: Iterable[dict[str, Any]]) -> str:
    """At start, before the key ring is built: resolve a rotation a crash interrupted.

    Args:
        key_path: gateway.toml's paths.signing_key.
        snapshot, records: the journal's Recovery (`recovery.snapshot`, `recovery.records`).
    Returns:
        "none" (nothing staged), "installed" (the staged key was journaled: it is now the key
        file) or "discarded" (the staged key was never journaled: deleted).
    Raises:
        KeyFileError: the staged or current key file is unreadable.
    """
    staged = staged_path(key_path)
    if not staged.exists():
        discard_staged(key_path)   # a torn temporary of a staging that never completed
        return "none"
    if key_kid(read_key(staged)) == newest_rotation_kid(snapshot, records):
        install_staged(key_path)
        return "installed"
    discard_staged(key_path)
    return "discarded"
