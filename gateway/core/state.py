"""The core's durable state and the one commit function per record kind.

The live path builds a record and calls `commit`; recovery calls the same `commit` with the
journaled record, so replaying the records of a run reproduces its state by construction.
Housekeeping (expiry of old days, idempotency records, tombstones, vouchers) also happens only in
`commit`, driven by the record's own `now_ms`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.core.clock import business_day, business_month
from gateway.core.config import CoreConfig
from gateway.core.governance import STATUS_APPLIED, STATUS_REJECTED, Governance, Proposal
from gateway.core.idempotency import IdempotencyStore, IdemEntry, Tombstones, UsedVouchers
from gateway.core.keys import PublishedKeys
from gateway.core.ledger import InMemoryLedger
from gateway.core.overlay import Overlay
from gateway.core.records import (
    AdminNoteRecord, AdminRecord, AlertRecord, CancelRecord, ChangeApproveRecord, ChangeProposeRecord, ChangeRejectRecord,
    KeyRotateRecord, Record, RefidRecord, ReverseRecord, SettleRecord,
)
from gateway.core.registry import Registry
from gateway.core.settlements import (
    STATUS_CANCELLED, STATUS_REVERSED, STATUS_SETTLED, Settlement, SettlementStore,
)
from gateway.core.supervision import Supervision

SNAPSHOT_VERSION = 1


class State:
    """Everything durable: ledgers, settlements, memories, admin overlay, counters, retired keys."""

    def __init__(self, config: CoreConfig, registry: Registry, keys: PublishedKeys) -> None:
        self.config = config
        self.keys = keys
        self.overlay = Overlay(registry)
        self.governance = Governance()
        self.ledger = InMemoryLedger()
        self.settlements = SettlementStore(config.settlements_max, config.settlement_days_kept)
        self.idempotency = IdempotencyStore(config.idempotency_records_max)
        self.tombstones = Tombstones(config.tombstones_max)
        self.vouchers = UsedVouchers(config.used_vouchers_max)
        self.supervision = Supervision()
        self.last_op = 0
        self.setl_counter = 0
        self.refid_reserved_to = 0

    def commit(self, record: Record) -> None:
        """Apply one record (live or replayed). Records must come in op order without gaps."""
        assert record.op == self.last_op + 1, f"op {record.op} after {self.last_op}"
        self.last_op = record.op
        if record.refid_to:
            self.refid_reserved_to = max(self.refid_reserved_to, record.refid_to)
        now_ms = getattr(record, "now_ms", None)
        if now_ms is not None:
            self._expire(now_ms)
        _COMMITS[type(record)](self, record)
        if now_ms is not None:
            # After the record is applied: a month closes only once nothing can change it any more.
            self.supervision.expire(now_ms)

    def _expire(self, now_ms: int) -> None:
        today = business_day(now_ms)
        self.ledger.expire(today, business_month(now_ms))
        self.settlements.expire(today)
        self.idempotency.expire(now_ms)
        self.tombstones.expire(now_ms)
        self.vouchers.expire(now_ms)

    def remember(self, record: SettleRecord | CancelRecord | ReverseRecord) -> None:
        """Store the record's idempotency entry (its answer bytes, for an idempotent retry)."""
        idem = record.idem
        self.idempotency.put(idem.msgid, IdemEntry(idem.fingerprint, record.response, record.op, idem.infno,
                                                   record.now_ms, idem.subject))

    def snapshot(self) -> dict[str, Any]:
        """A msgpack-able copy of all durable state."""
        return {
            "version": SNAPSHOT_VERSION, "last_op": self.last_op, "setl_counter": self.setl_counter,
            "refid_reserved_to": self.refid_reserved_to, "ledger": self.ledger.snapshot(),
            "settlements": self.settlements.snapshot(), "idempotency": self.idempotency.snapshot(),
            "tombstones": self.tombstones.snapshot(), "vouchers": self.vouchers.snapshot(),
            "admin_changes": self.overlay.snapshot(), "retired_keys": self.keys.snapshot(),
            "governance": self.governance.snapshot(), "supervision": self.supervision.snapshot(),
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Load `snapshot()` output into a freshly built state."""
        assert snap["version"] == SNAPSHOT_VERSION and self.last_op == 0
        self.last_op = snap["last_op"]
        self.setl_counter = snap["setl_counter"]
        self.refid_reserved_to = snap["refid_reserved_to"]
        self.ledger = InMemoryLedger.restore(snap["ledger"])
        self.settlements.restore(snap["settlements"])
        self.idempotency.restore(snap["idempotency"])
        self.tombstones.restore(snap["tombstones"])
        self.vouchers.restore(snap["vouchers"])
        self.overlay = Overlay.restore(self.overlay.registry, snap["admin_changes"])
        self.keys.restore(snap["retired_keys"])
        self.governance = Governance.restore(snap.get("governance"))
        # Snapshots written before supervision: recompute the figures of the settlements they hold.
        supervision = snap.get("supervision")
        self.supervision = (Supervision.restore(supervision) if supervision is not None else
                            Supervision.rebuilt(self.settlements.standing(), self.overlay.policy.large_bill_fen))



def _debit(state: State, settlement: Settlement, person_limit_fen: int | None, cap_fen: int | None) -> None:
    grant = state.ledger.clamp_and_debit(
        settlement.psn_no, settlement.day, settlement.otc_pay, person_limit_fen,
        settlement.institution, settlement.month, settlement.fund_pay_sumamt, cap_fen)
    # The single writer computed the split from the same ledger a moment ago, so the clamp must
    # grant exactly that; a difference would mean the state machine lost determinism.
    assert (grant.person_fen, grant.institution_fen) == (settlement.otc_pay, settlement.fund_pay_sumamt), grant


def _credit(state: State, settlement: Settlement) -> None:
    state.ledger.credit(settlement.psn_no, settlement.day, settlement.otc_pay, settlement.institution,
                        settlement.month, settlement.fund_pay_sumamt)


def _commit_settle(state: State, record: SettleRecord) -> None:
    settlement = Settlement(**record.setl)
    assert settlement.status == STATUS_SETTLED
    _debit(state, settlement, record.person_limit_fen, record.cap_fen)
    state.settlements.add(settlement)
    state.supervision.settled(settlement, state.overlay.policy.large_bill_fen)
    state.setl_counter = max(state.setl_counter, record.setl_n)
    if record.voucher is not None:
        state.vouchers.add(record.voucher.key, record.voucher.exp_ms)
    state.remember(record)


def _commit_cancel(state: State, record: CancelRecord) -> None:
    settlement = state.settlements.get(record.setl_id)
    assert settlement is not None and settlement.status == STATUS_SETTLED
    _credit(state, settlement)
    state.supervision.unsettled(settlement)
    settlement.status = STATUS_CANCELLED
    settlement.cancel_msgid = record.idem.msgid
    state.remember(record)


def _commit_reverse(state: State, record: ReverseRecord) -> None:
    action = record.action
    settlement = state.settlements.get(record.setl_id) if record.setl_id else None
    if action == "unsettle":
        assert settlement is not None and settlement.status != STATUS_REVERSED
        if settlement.status == STATUS_SETTLED:
            _credit(state, settlement)
            state.supervision.unsettled(settlement)
        settlement.status = STATUS_REVERSED
    elif action == "reinstate":
        assert settlement is not None and settlement.status == STATUS_CANCELLED
        # Re-instating a cancellation is an undo, not a new settlement: no limit checks (SPEC §7).
        _debit(state, settlement, None, None)
        state.supervision.settled(settlement, state.overlay.policy.large_bill_fen)
        settlement.status = STATUS_SETTLED
        settlement.cancel_msgid = None
    state.tombstones.add(record.omsgid, record.now_ms)
    state.remember(record)


def _commit_refid(state: State, record: RefidRecord) -> None:
    # The reservation itself was applied by `commit` (refid_to); nothing else to do.
    assert record.refid_to


def _target(change: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a change that name what it acts on (or sets), for the audit trail."""
    return {k: v for k, v in change.items() if k not in ("kind", "actor", "reason", "change_id")}


def _apply_audited(state: State, record: Record, change: Mapping[str, Any], actor: str, role: str, action: str,
                   change_id: str | None, reason: str) -> None:
    before = state.overlay.value_of(change)
    state.overlay.apply(dict(change))
    state.governance.record_audit(record.op, record.now_ms, actor, role,  # type: ignore[attr-defined]
                                  action, _target(change), before, state.overlay.value_of(change), reason,
                                  change_id)


def _commit_admin(state: State, record: AdminRecord) -> None:
    change = record.change
    _apply_audited(state, record, change, record.actor, record.role, change["kind"], record.change_id,
                   record.reason or change.get("reason", ""))


def _commit_change_propose(state: State, record: ChangeProposeRecord) -> None:
    change = record.change
    state.governance.add(Proposal(id=record.id, change=dict(change), proposer=record.actor,
                                  reason=record.reason, proposed_ms=record.now_ms,
                                  expires_ms=record.expires_ms))
    state.governance.record_audit(record.op, record.now_ms, record.actor, record.role, "change.propose",
                                  {"kind": change["kind"], **_target(change)},
                                  state.overlay.value_of(change), None, record.reason, record.id)


def _commit_change_approve(state: State, record: ChangeApproveRecord) -> None:
    proposal = state.governance.decide(record.id, STATUS_APPLIED, record.actor, record.now_ms, "")
    _apply_audited(state, record, proposal.change, record.actor, record.role, "change.approve", proposal.id,
                   proposal.reason)


def _commit_change_reject(state: State, record: ChangeRejectRecord) -> None:
    proposal = state.governance.decide(record.id, STATUS_REJECTED, record.actor, record.now_ms, record.reason)
    state.governance.record_audit(record.op, record.now_ms, record.actor, record.role, "change.reject",
                                  {"kind": proposal.change["kind"], **_target(proposal.change)}, None, None,
                                  record.reason, proposal.id)


def _commit_key_rotate(state: State, record: KeyRotateRecord) -> None:
    state.keys.apply_rotation(record)
    state.governance.rotated_kid = record.kid
    if record.now_ms is not None:
        state.governance.record_audit(record.op, record.now_ms, record.actor, record.role,
                                      "key.rotate", {}, {"active_kid": record.retired_kid},
                                      {"active_kid": record.kid}, record.reason)


def _commit_admin_note(state: State, record: AdminNoteRecord) -> None:
    state.governance.record_audit(record.op, record.now_ms, record.actor, record.role, record.action,
                                  dict(record.detail), reason=record.reason)


def _commit_alert(state: State, record: AlertRecord) -> None:
    state.supervision.note_event(record.now_ms, record.code, record.subject, record.detail)


_COMMITS: dict[type[Record], Callable[[State, Any], None]] = {
    SettleRecord: _commit_settle, CancelRecord: _commit_cancel, ReverseRecord: _commit_reverse,
    RefidRecord: _commit_refid, AdminRecord: _commit_admin, KeyRotateRecord: _commit_key_rotate,
    ChangeProposeRecord: _commit_change_propose, ChangeApproveRecord: _commit_change_approve,
    ChangeRejectRecord: _commit_change_reject, AdminNoteRecord: _commit_admin_note, AlertRecord: _commit_alert,
}
