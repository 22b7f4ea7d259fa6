"""The core's durable state and the one commit function per record kind.

The live path builds a record and calls `commit`; recovery calls the same `commit` with the
journaled record, so replaying the records of a run reproduces its state by construction.
Housekeeping (expiry of old days, idempotency records, tombstones, vouchers) also happens only in
`commit`, driven by the record's own `now_ms`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

from gateway.core.clock import business_day, business_month
from gateway.core.config import CoreConfig
from gateway.core.governance import STATUS_APPLIED, STATUS_REJECTED, Governance, Proposal
from gateway.core.idempotency import IdempotencyStore, IdemEntry, Tombstones, UsedVouchers
from gateway.core.keys import PublishedKeys
from gateway.core.ledger import InMemoryLedger
from gateway.core.catalogue import CATALOGUE_HEADER, Catalogue, row_as_change, row_from_change
from gateway.core.clock import date_day
from gateway.core.governance import FieldError
from gateway.core.overlay import AUDIT_KEYS, Overlay
from gateway.core.records import (
    AdminNoteRecord, AdminRecord, AlertRecord, CancelRecord, ChangeApproveRecord, ChangeProposeRecord,
    ChangeRejectRecord, KeyRotateRecord, Record, RefidRecord, ReverseRecord, SettleRecord,
)
from gateway.core.registry import Registry
from gateway.core.trace import TraceCodes
from gateway.core.accounts import AccountLedger, OpeningBalances, check_credit
from gateway.core.clock import day_date
from gateway.core.pooling import PersonYearLedger
from gateway.core.whopays import give_back, take, take_year
from gateway.core.settlements import (
    STATUS_CANCELLED, STATUS_REVERSED, STATUS_SETTLED, Settlement, SettlementStore,
)
from gateway.core.supervision import Supervision

SNAPSHOT_VERSION = 1
# Admin change kinds that act on the catalogue (maker-checker, like the overlay's policy kinds).
CATALOGUE_KINDS = {"catalogue.upsert": CATALOGUE_HEADER, "catalogue.retire": ("med_list_codg", "valid_to")}
# Admin change kinds that act on the personal accounts (maker-checker too; SPEC 13).
ACCOUNT_KINDS = {"account.credit": ("psn_no", "amount_fen")}


def _day_of(change: Mapping[str, Any], field: str) -> int:
    text = change.get(field)
    if not isinstance(text, str):
        raise FieldError(field, "must be a YYYY-MM-DD string")
    try:
        return date_day(datetime.date.fromisoformat(text))
    except ValueError:
        raise FieldError(field, f"not a real date {text[:40]!r}") from None


class State:
    """Everything durable: ledgers, settlements, memories, admin overlay, counters, retired keys."""

    def __init__(self, config: CoreConfig, registry: Registry, keys: PublishedKeys,
                 catalogue: Catalogue | None = None, accounts: OpeningBalances | None = None) -> None:
        """`catalogue`: this core's own copy of the loaded catalogue file (None: the catalogue is off);
        `accounts`: the loaded accounts file's opening balances (shared, never changed; None: off)."""
        self.config = config
        self.years = PersonYearLedger()
        self.accounts = AccountLedger(accounts)
        self.keys = keys
        self.catalogue = catalogue
        self.trace = TraceCodes()
        self.overlay = Overlay(registry)
        self.governance = Governance()
        self.ledger = InMemoryLedger()
        self.settlements = SettlementStore(config.settlements_max, config.settlement_days_kept, config.admdvs)
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
        self.years.expire(now_ms)
        self.settlements.expire(today)
        self.trace.expire(now_ms, self.overlay.policy.trace_retention_days)
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
            "governance": self.governance.snapshot(), "trace_codes": self.trace.snapshot(),
            "catalogue": None if self.catalogue is None else self.catalogue.snapshot(),
            "supervision": self.supervision.snapshot(),
            "person_years": self.years.snapshot(), "accounts": self.accounts.snapshot(),
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
        self.trace.restore(snap.get("trace_codes", ()))
        if self.catalogue is not None:
            self.catalogue.restore(snap.get("catalogue") or ())
        # Snapshots written before supervision: recompute the figures of the settlements they hold.
        supervision = snap.get("supervision")
        self.supervision = (Supervision.restore(supervision) if supervision is not None else
                            Supervision.rebuilt(self.settlements.standing(), self.overlay.policy.large_bill_fen))
        self._restore_who_pays(snap)

    def _restore_who_pays(self, snap: dict[str, Any]) -> None:
        """The person-year ledger and the changed balances (SPEC 13). A snapshot from before they
        existed has neither: its balances are the file's, and its year ledger is what its standing
        settlements took (v1 settlements took their rx_pay as pooled payment), so that a later
        cancellation gives back no more than was taken."""
        if "person_years" in snap:
            self.years = PersonYearLedger.restore(snap["person_years"])
        else:
            for settlement in self.settlements.standing():
                take_year(self.years, settlement, None)
        self.accounts.restore(snap.get("accounts", ()))

    # -- admin changes: the registry overlay's kinds and the catalogue's -------------------------

    def check_change(self, change: dict[str, Any], now_ms: int) -> None:
        """Validate an admin change as of `now_ms` without applying it; raises FieldError naming the field."""
        if isinstance(change, dict) and change.get("kind") in CATALOGUE_KINDS:
            self._catalogue_plan(change)
        elif isinstance(change, dict) and change.get("kind") in ACCOUNT_KINDS:
            self._account_plan(change)
        else:
            self.overlay.check(change, day_date(business_day(now_ms)))

    def apply_change(self, change: Mapping[str, Any], now_ms: int) -> None:
        """Apply a checked admin change at `now_ms` (the record's time)."""
        if change.get("kind") in CATALOGUE_KINDS:
            self._catalogue_plan(dict(change))()
        elif change.get("kind") in ACCOUNT_KINDS:
            self._account_plan(dict(change))()
        else:
            self.overlay.apply(dict(change), day_date(business_day(now_ms)))

    def _account_plan(self, change: dict[str, Any]) -> Callable[[], Any]:
        for key in change:
            if key not in ACCOUNT_KINDS[change["kind"]] and key not in AUDIT_KEYS:
                raise FieldError(key, f"unknown field for {change['kind']}")
        return check_credit(self.accounts, change)

    def value_of(self, change: Mapping[str, Any]) -> Any:
        """What the change's target looks like now, for the audit trail's before/after."""
        if change.get("kind") in ACCOUNT_KINDS:
            return {"balance_fen": self.accounts.balance(change["psn_no"])}
        if change.get("kind") in CATALOGUE_KINDS:
            assert self.catalogue is not None
            return {"rows": [row_as_change(row) for row in self.catalogue.rows_of(change["med_list_codg"])]}
        return self.overlay.value_of(dict(change))

    def _catalogue_plan(self, change: dict[str, Any]) -> Callable[[], Any]:
        catalogue = self.catalogue
        if catalogue is None:
            raise FieldError("kind", "the catalogue is off ([paths] catalogue is not set)")
        fields = CATALOGUE_KINDS[change["kind"]]
        for key in change:
            if key not in fields and key not in AUDIT_KEYS:
                raise FieldError(key, f"unknown field for {change['kind']}")
        if change["kind"] == "catalogue.upsert":
            row = row_from_change(change)
            catalogue.check_upsert(row)
            return lambda: catalogue.upsert(row)
        code = change.get("med_list_codg")
        if not isinstance(code, str) or not code:
            raise FieldError("med_list_codg", "must be a non-empty string")
        day = _day_of(change, "valid_to")
        catalogue.check_retire(code, day)
        return lambda: catalogue.retire(code, day)



def _debit(state: State, settlement: Settlement, person_limit_fen: int | None, cap_fen: int | None,
           pooling_fen: list[int] | None = None, reinstating: bool = False) -> tuple[str, int] | None:
    """Debit the settlement everywhere; returns (payer, balance_fen) when it overdrew an account."""
    overdrawn = take(state.years, state.accounts, settlement, pooling_fen, reinstating)
    grant = state.ledger.clamp_and_debit(
        settlement.psn_no, settlement.day, settlement.otc_pay, person_limit_fen,
        settlement.institution, settlement.month, settlement.fund_pay_sumamt, cap_fen)
    # The single writer computed the split from the same ledger a moment ago, so the clamp must
    # grant exactly that; a difference would mean the state machine lost determinism.
    assert (grant.person_fen, grant.institution_fen) == (settlement.otc_pay, settlement.fund_pay_sumamt), grant
    return overdrawn


def _credit(state: State, settlement: Settlement) -> None:
    give_back(state.years, state.accounts, settlement)
    state.ledger.credit(settlement.psn_no, settlement.day, settlement.otc_pay, settlement.institution,
                        settlement.month, settlement.fund_pay_sumamt)


def _commit_settle(state: State, record: SettleRecord) -> None:
    settlement = Settlement(**record.setl)
    assert settlement.status == STATUS_SETTLED
    _debit(state, settlement, record.person_limit_fen, record.cap_fen, record.pooling_fen)
    state.settlements.add(settlement)
    if settlement.trace_codes:
        state.trace.hold(settlement.trace_codes, settlement.setl_id, settlement.setl_time)
    state.supervision.settled(settlement, state.overlay.policy.large_bill_fen)
    state.setl_counter = max(state.setl_counter, record.setl_n)
    if record.voucher is not None:
        state.vouchers.add(record.voucher.key, record.voucher.exp_ms)
    state.remember(record)


def _commit_cancel(state: State, record: CancelRecord) -> None:
    settlement = state.settlements.get(record.setl_id)
    assert settlement is not None and settlement.status == STATUS_SETTLED
    _credit(state, settlement)
    state.trace.release(settlement.trace_codes, settlement.setl_id)
    state.supervision.unsettled(settlement)
    settlement.status = STATUS_CANCELLED
    settlement.cancel_msgid = record.idem.msgid
    state.settlements.update(settlement)
    state.remember(record)


def _commit_reverse(state: State, record: ReverseRecord) -> None:
    action = record.action
    settlement = state.settlements.get(record.setl_id) if record.setl_id else None
    if action == "unsettle":
        assert settlement is not None and settlement.status != STATUS_REVERSED
        if settlement.status == STATUS_SETTLED:
            _credit(state, settlement)
            state.trace.release(settlement.trace_codes, settlement.setl_id)
            state.supervision.unsettled(settlement)
        settlement.status = STATUS_REVERSED
        state.settlements.update(settlement)
    elif action == "reinstate":
        assert settlement is not None and settlement.status == STATUS_CANCELLED
        # Re-instating a cancellation is an undo, not a new settlement: no limit checks (SPEC §7).
        overdrawn = _debit(state, settlement, None, None, reinstating=True)
        if overdrawn is not None:
            # Only a re-instatement overdraws an account: the supervision alert (SPEC 14), raised
            # again by a replay of this record.
            state.supervision.note_overdrawn(record.now_ms, overdrawn[0], overdrawn[1], settlement.setl_id)
        # Held again without a check, as the limits are (SPEC 13).
        state.trace.hold(settlement.trace_codes, settlement.setl_id, settlement.setl_time)
        state.supervision.settled(settlement, state.overlay.policy.large_bill_fen)
        settlement.status = STATUS_SETTLED
        settlement.cancel_msgid = None
        state.settlements.update(settlement)
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
    before = state.value_of(change)
    state.apply_change(change, record.now_ms)  # type: ignore[attr-defined]
    state.governance.record_audit(record.op, record.now_ms, actor, role,  # type: ignore[attr-defined]
                                  action, _target(change), before, state.value_of(change), reason,
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
                                  state.value_of(change), None, record.reason, record.id)


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
    state.governance.rotated_key_sealed = record.sealed_key
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
