"""Admin changes, maker-checker proposals and key rotation as journaled records.

The admin HTTP API (gateway.admin) calls these between awaits, like `decide`: each validates
completely and returns one typed record, which the caller commits through `Core.commit` (the same
function replay uses) and journals. They change nothing themselves. A refused request raises
(`FieldError` naming the field, or AdminRefusal with its reason) and leaves no trace.
"""

from __future__ import annotations

from typing import Any

from gateway.core.governance import PROPOSAL_TTL_MS, REFUSED_CONFLICT, AdminRefusal, FieldError
from gateway.core.overlay import AUDIT_KEYS, PROTECTIVE_KINDS
from gateway.core.records import (
    AdminNoteRecord, AdminRecord, ChangeApproveRecord, ChangeProposeRecord, ChangeRejectRecord, KeyRotateRecord,
)
from protocol import gateway_kid

__all__ = ["AdminMixin", "AdminRefusal", "FieldError", "PROPOSAL_TTL_MS"]


def _split(change: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Separate the change proper from the audit keys older callers put inside it."""
    pure = {k: v for k, v in change.items() if k == "kind" or k not in AUDIT_KEYS}
    audit = {k: v for k, v in change.items() if k != "kind" and k in AUDIT_KEYS}
    return pure, audit


class AdminMixin:
    """`admin_apply`, proposals, `rotate_key` and audit notes for Core."""

    def admin_apply(self, change: dict[str, Any], now_ms: int, *, actor: str = "", role: str = "",
                    reason: str = "") -> AdminRecord:
        """Validate one admin change to apply at once; returns the record to commit and journal.

        `change` is {"kind": one of overlay.CHANGE_KINDS, ...fields}; audit keys ("actor",
        "reason", "change_id") inside it are accepted too. Raises FieldError naming the field;
        nothing is applied then.
        """
        self.state.check_change(change, now_ms)
        pure, audit = _split(change)
        return AdminRecord(now_ms=now_ms, change=pure, actor=audit.get("actor", actor), role=role,
                           reason=audit.get("reason", reason), change_id=audit.get("change_id"))

    def propose_change(self, change: dict[str, Any], now_ms: int, *, actor: str, role: str,
                       reason: str = "") -> ChangeProposeRecord:
        """Record a proposed policy change (not applied); returns the record (its "id" names it).

        Raises FieldError naming the field for a change that would not apply now, or for a
        protective kind (those are immediate actions, not proposals).
        """
        self.state.check_change(change, now_ms)
        pure, audit = _split(change)
        if audit:
            raise FieldError(sorted(audit)[0], "not allowed in a proposal")
        if pure["kind"] in PROTECTIVE_KINDS:
            raise FieldError("kind", f"{pure['kind']} is an immediate protective action, not a proposal")
        change_id = f"chg-{self.state.last_op + 1}"
        return ChangeProposeRecord(now_ms=now_ms, id=change_id, change=pure, actor=actor, role=role,
                                   reason=reason, expires_ms=now_ms + PROPOSAL_TTL_MS)

    def approve_change(self, change_id: str, now_ms: int, *, actor: str, role: str) -> ChangeApproveRecord:
        """Apply a pending proposal approved by a second admin; returns the record.

        Raises AdminRefusal: 404 unknown id, 403 the proposer, 409 not pending (applied, rejected,
        expired) or no longer applicable to the current state (the message names the field).
        """
        proposal = self.state.governance.pending(change_id, actor, now_ms, approving=True)
        try:
            self.state.check_change(proposal.change, now_ms)
        except FieldError as exc:
            raise AdminRefusal(REFUSED_CONFLICT, f"change {change_id} no longer applies: {exc}", exc.field) from None
        return ChangeApproveRecord(now_ms=now_ms, id=change_id, actor=actor, role=role)

    def reject_change(self, change_id: str, now_ms: int, *, actor: str, role: str,
                      reason: str = "") -> ChangeRejectRecord:
        """Drop a pending proposal (by its proposer: a withdrawal); returns the record.

        Raises AdminRefusal: 404 unknown id, 409 not pending.
        """
        self.state.governance.pending(change_id, actor, now_ms, approving=False)
        return ChangeRejectRecord(now_ms=now_ms, id=change_id, actor=actor, role=role, reason=reason)

    def rotate_key(self, new_public_raw: bytes, now_ms: int, *, actor: str = "", role: str = "",
                   reason: str = "", sealed_key: bytes | None = None) -> KeyRotateRecord:
        """A rotation to the key of `new_public_raw`, retiring the active key; returns the record.

        The shell makes the record durable and keeps the private key (in its file, or in cluster
        mode as `sealed_key`, opaque bytes it sealed) before it signs with it (then
        `keys.activate`), so no answer is ever signed by a key a crash could make unknown. The
        record never carries a private key in plaintext.
        """
        keys = self.state.keys
        kid = gateway_kid(new_public_raw)
        if kid == keys.active_kid:
            raise FieldError("key", "the new key is the active key")
        return KeyRotateRecord(kid=kid, public_key=new_public_raw, retired_kid=keys.active_kid,
                               retired_public_key=keys.active_public_raw, now_ms=now_ms, actor=actor, role=role,
                               reason=reason, sealed_key=sealed_key)

    def note_admin_action(self, action: str, now_ms: int, *, actor: str, role: str,
                          detail: dict[str, Any] | None = None, reason: str = "") -> AdminNoteRecord:
        """An admin action that changes no business state (e.g. a snapshot request), for the audit trail."""
        return AdminNoteRecord(now_ms=now_ms, action=action, detail=dict(detail or {}), actor=actor, role=role,
                               reason=reason)
