"""Admin changes, maker-checker proposals and key rotation as journaled records.

The admin HTTP API (gateway.admin) calls these between awaits, like `handle_tx`: each validates
completely, builds one record, commits it through `State.commit` (the same function replay uses)
and returns it for the journal. A refused request raises (ValueError naming the field, or
AdminRefusal with an HTTP status) and leaves no trace.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.core.governance import PROPOSAL_TTL_MS, AdminRefusal
from gateway.core.overlay import AUDIT_KEYS, PROTECTIVE_KINDS
from protocol import gateway_kid, public_raw

__all__ = ["AdminMixin", "AdminRefusal", "PROPOSAL_TTL_MS"]


def _split(change: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Separate the change proper from the audit keys older callers put inside it."""
    pure = {k: v for k, v in change.items() if k == "kind" or k not in AUDIT_KEYS}
    audit = {k: v for k, v in change.items() if k != "kind" and k in AUDIT_KEYS}
    return pure, audit


class AdminMixin:
    """`admin_apply`, proposals, `rotate_key` and audit notes for Core."""

    def _record(self, kind: str, now_ms: int, **fields: Any) -> dict[str, Any]:
        record = {"op": self.state.last_op + 1, "t": kind, "now_ms": now_ms, **fields}
        self.refids.attach(record)
        self.state.commit(record)
        return record

    def admin_apply(self, change: dict[str, Any], now_ms: int, *, actor: str = "", role: str = "",
                    reason: str = "") -> dict[str, Any]:
        """Validate and apply one admin change at once; returns the record to journal.

        `change` is {"kind": one of overlay.CHANGE_KINDS, ...fields}; audit keys ("actor",
        "reason", "change_id") inside it are accepted too. Raises ValueError naming the field;
        nothing is applied then.
        """
        self.state.overlay.check(change)
        pure, audit = _split(change)
        return self._record("admin", now_ms, change=pure, actor=audit.get("actor", actor), role=role,
                            reason=audit.get("reason", reason), change_id=audit.get("change_id"))

    def propose_change(self, change: dict[str, Any], now_ms: int, *, actor: str, role: str,
                       reason: str = "") -> dict[str, Any]:
        """Record a proposed policy change (not applied); returns the record (its "id" names it).

        Raises ValueError naming the field for a change that would not apply now, or for a
        protective kind (those are immediate actions, not proposals).
        """
        self.state.overlay.check(change)
        pure, audit = _split(change)
        if audit:
            raise ValueError(f"{sorted(audit)[0]}: not allowed in a proposal")
        if pure["kind"] in PROTECTIVE_KINDS:
            raise ValueError(f"kind: {pure['kind']} is an immediate protective action, not a proposal")
        change_id = f"chg-{self.state.last_op + 1}"
        return self._record("change_propose", now_ms, id=change_id, change=pure, actor=actor, role=role,
                            reason=reason, expires_ms=now_ms + PROPOSAL_TTL_MS)

    def approve_change(self, change_id: str, now_ms: int, *, actor: str, role: str) -> dict[str, Any]:
        """Apply a pending proposal approved by a second admin; returns the record.

        Raises AdminRefusal: 404 unknown id, 403 the proposer, 409 not pending (applied, rejected,
        expired) or no longer applicable to the current state (the message names the field).
        """
        proposal = self.state.governance.pending(change_id, actor, now_ms, approving=True)
        try:
            self.state.overlay.check(proposal.change)
        except ValueError as exc:
            field = str(exc).split(":", 1)[0]
            raise AdminRefusal(409, f"change {change_id} no longer applies: {exc}", field) from None
        return self._record("change_approve", now_ms, id=change_id, actor=actor, role=role)

    def reject_change(self, change_id: str, now_ms: int, *, actor: str, role: str,
                      reason: str = "") -> dict[str, Any]:
        """Drop a pending proposal (by its proposer: a withdrawal); returns the record.

        Raises AdminRefusal: 404 unknown id, 409 not pending.
        """
        self.state.governance.pending(change_id, actor, now_ms, approving=False)
        return self._record("change_reject", now_ms, id=change_id, actor=actor, role=role, reason=reason)

    def rotate_key(self, new_private_key: Ed25519PrivateKey, now_ms: int, *, actor: str = "", role: str = "",
                   reason: str = "", activate: bool = True) -> dict[str, Any]:
        """Journal a rotation to `new_private_key` and retire the current key; returns the record.

        With `activate=False` the new key does not sign yet: the caller first makes the record
        durable and stores the private key in its file, then calls `activate_key`, so no answer is
        ever signed by a key a crash could make unknown. The record carries only kids and public
        keys, never a private key.
        """
        new_raw = public_raw(new_private_key.public_key())
        keyring = self.keyring
        rotation = {"kid": gateway_kid(new_raw), "public_key": new_raw, "retired_kid": keyring.active_kid,
                    "retired_public_key": keyring.active_public_raw}
        if rotation["kid"] == keyring.active_kid:
            raise ValueError("key: the new key is the active key")
        if activate:
            keyring.rotate(new_private_key)
        return self._record("key_rotate", now_ms, **rotation, actor=actor, role=role, reason=reason)

    def activate_key(self, new_private_key: Ed25519PrivateKey) -> None:
        """Make a journaled, durable rotation's key the signing key (see `rotate_key`)."""
        kid = gateway_kid(public_raw(new_private_key.public_key()))
        assert kid == self.state.governance.rotated_kid, (kid, self.state.governance.rotated_kid)
        if kid != self.keyring.active_kid:
            self.keyring.rotate(new_private_key)

    def note_admin_action(self, action: str, now_ms: int, *, actor: str, role: str,
                          detail: dict[str, Any] | None = None, reason: str = "") -> dict[str, Any]:
        """Journal an admin action that changes no business state (e.g. a snapshot request)."""
        return self._record("admin_note", now_ms, action=action, detail=dict(detail or {}), actor=actor,
                            role=role, reason=reason)

