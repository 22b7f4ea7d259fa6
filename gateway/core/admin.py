"""Admin changes and key rotation as journaled records (the admin HTTP API lives elsewhere)."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


class AdminMixin:
    """`admin_apply` and `rotate_key` for Core: validate, build one record, commit it."""

    def admin_apply(self, change: dict[str, Any], now_ms: int) -> dict[str, Any]:
        """Validate and apply one admin change; returns the record to journal.

        `change` is {"kind": one of overlay.CHANGE_KINDS, ...fields} plus optional audit keys
        ("actor", "reason", "change_id"). Raises ValueError naming the field; nothing is applied then.
        """
        self.state.overlay.check(change)
        record = {"op": self.state.last_op + 1, "t": "admin", "now_ms": now_ms, "change": dict(change)}
        self.refids.attach(record)
        self.state.commit(record)
        return record

    def rotate_key(self, new_private_key: Ed25519PrivateKey, now_ms: int) -> dict[str, Any]:
        """Make `new_private_key` the signing key and retire the current one; returns the record.

        The record carries only kids and public keys: the caller stores the private key in its file.
        """
        rotation = self.keyring.rotate(new_private_key)
        record = {"op": self.state.last_op + 1, "now_ms": now_ms, **rotation}
        self.refids.attach(record)
        self.state.commit(record)
        return record
