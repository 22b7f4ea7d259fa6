"""Business handlers, one per infno (SPEC section 7), run after every earlier pipeline step passed.

A handler reads a narrow view of the core (`View`: state, config, sessions, credential keys) and
returns an Answer: the output map, the warnings and, for a state change, the typed record (without
"op" and "response", which the shell adds once the answer is sealed). Handlers never write: the
shell commits the record through `Core.commit`, and 9001/9002 name the session to open or end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gateway.core.clock import business_day, business_month, date_day, day_date, parse_stmt_date
from gateway.core.config import CoreConfig, Rejection
from gateway.core.idempotency import IDEMPOTENCY_RETENTION_MS
from gateway.core.patient import Patient, check_credential, check_person
from gateway.core.registry import Institution
from gateway.core.records import CancelRecord, Idem, Record, ReverseRecord, SettleRecord, Voucher
from gateway.core.sessions import Session, SessionTable
from gateway.core.settlement import Bill, LineRules, Usage, YearTerms, compute_bill
from gateway.core.settlements import STATUS_CANCELLED, STATUS_SETTLED, Settlement, mdtrt_id_of, setl_id_of
from gateway.core.state import State
from gateway.core.supervision import doctor_sums
from gateway.core.whopays import BOUND_ACCOUNT_BALANCE, AccountPart, account_part, check_payer
from protocol import ErrCode, RequestEnvelope, session_key, x25519_public_raw

PRE_SETTLE_INFNOS = frozenset({"2101", "2206"})


class Request(NamedTuple):
    """A request that passed frame, envelope, institution, authentication and freshness checks.

    A NamedTuple: immutable, and built by one tuple allocation (one per request).
    """

    env: RequestEnvelope
    institution: Institution
    session: Session | None
    typed: Any
    fingerprint: bytes
    now_ms: int


@dataclasses.dataclass
class Answer:
    """A successful answer before signing."""

    output: dict[str, Any]
    warnings: tuple[str, ...] = ()
    record: Record | None = None
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)
    session_opened: Session | None = None     # 9001: the session to open
    session_ended: str | None = None          # 9002: the sign_no to end


class View:
    """What handlers may read: durable state, limits, sessions and credential keys; never the Core."""

    __slots__ = ("state", "config", "sessions", "master_keys", "random_bytes", "_issuer_cache")

    def __init__(self, state: State, config: CoreConfig, sessions: SessionTable, master_keys: dict[str, bytes],
                 random_bytes: Callable[[int], bytes]) -> None:
        self.state = state
        self.config = config
        self.sessions = sessions
        self.master_keys = master_keys
        self.random_bytes = random_bytes
        self._issuer_cache: tuple[int, dict[str, Ed25519PublicKey]] = (-1, {})

    @property
    def issuer_keys(self) -> dict[str, Ed25519PublicKey]:
        """E-voucher issuer keys as key objects (built once per overlay version)."""
        issuers = self.state.overlay.voucher_issuers
        if self._issuer_cache[0] != id(issuers):
            self._issuer_cache = (id(issuers), {kid: Ed25519PublicKey.from_public_bytes(raw)
                                                for kid, raw in issuers.items()})
        return self._issuer_cache[1]

    def new_sign_no(self) -> str:
        """A fresh random sign_no not in the session table."""
        while True:
            sign_no = self.random_bytes(16).hex()
            if self.sessions.get(sign_no) is None:
                return sign_no

    def setl_id(self, number: int) -> str:
        """The n-th setl_id of the region (the store keys it by `number`)."""
        return setl_id_of(self.config.admdvs, number)

    def mdtrt_id(self, number: int) -> str:
        """The n-th mdtrt_id (one visit per settlement at the till)."""
        return mdtrt_id_of(self.config.admdvs, number)


def _overloaded(what: str) -> Rejection:
    return Rejection(ErrCode.OVERLOADED, f"{what} is full; retry later")


def sign_in(view: View, req: Request) -> Answer:
    """9001: open a session with a fresh ephemeral X25519 key from the injected randomness."""
    if req.typed.opter != req.env.opter:
        raise Rejection(ErrCode.MALFORMED_INPUT, "input.opter: differs from the envelope's opter")
    sign_no = view.new_sign_no()
    ephemeral = X25519PrivateKey.from_private_bytes(view.random_bytes(32))
    key = session_key(ephemeral, req.typed.x25519_pub, sign_no)
    expires_ms = req.now_ms + view.config.session_ttl_s * 1000
    session = Session(sign_no, req.env.dev_no, req.env.opter, req.institution.code, key, req.now_ms, expires_ms)
    return Answer({"sign_no": sign_no, "sign_time": req.now_ms, "x25519_pub": x25519_public_raw(ephemeral),
                   "session_expires": expires_ms}, session_opened=session)


def sign_out(view: View, req: Request) -> Answer:
    """9002: end the session named by the frame."""
    assert req.session is not None
    return Answer({"sign_no": req.session.sign_no, "sign_out_time": req.now_ms},
                  session_ended=req.session.sign_no)


def _patient(view: View, req: Request, medfee_fen: int) -> Patient:
    state = view.state
    patient = check_credential(req.typed.cert, req.env, medfee_fen, state.overlay, view.issuer_keys,
                               view.master_keys, state.vouchers, req.now_ms)
    check_person(patient, req.institution, state.overlay, day_date(business_day(req.now_ms)))
    return patient


def _allowance_fen(view: View, institution: Institution) -> int:
    if institution.kind != "pharmacy":
        return 0
    return view.state.overlay.policy.otc_allowance_fen[institution.grade]


def person_info(view: View, req: Request) -> Answer:
    """1101: who the person is and what is left of today's OTC allowance here."""
    patient = _patient(view, req, 0)
    allowance_fen = _allowance_fen(view, req.institution)
    used_fen = view.state.ledger.person_day_used(patient.psn_no, business_day(req.now_ms)) if allowance_fen else 0
    dedc_left, year_left, balance = _who_pays_info(view, req, patient)
    # In canonical key order, so the answer is packed as it is, without rebuilding the map.
    return Answer({"acct_balance": balance, "cross_province": patient.cross_province(req.institution),
                   "insuplc_admdvs": patient.insuplc_admdvs, "insutype": patient.insutype,
                   "otc_allowance_day": allowance_fen, "otc_remaining_day": max(0, allowance_fen - used_fen),
                   "otc_used_day": used_fen, "pool_deductible_remaining": dedc_left,
                   "pool_year_remaining": year_left, "psn_no": patient.psn_no},
                  facts={"cert_type": patient.cert_type})


def _who_pays_info(view: View, req: Request, patient: Patient) -> tuple[int | None, int | None, int | None]:
    """1101's SPEC 13 figures: what is left of the year's deductible and pooling cap, and the balance."""
    state = view.state
    pooling = state.overlay.policy.pooling.get(patient.insutype)
    dedc_left = year_left = None
    if pooling is not None:
        used = state.years.used(patient.psn_no, patient.insutype, business_month(req.now_ms) // 100)
        dedc_left = max(0, pooling.deductible_fen - used.dedc_used_fen)
        year_left = max(0, pooling.annual_cap_fen - used.pool_paid_fen)
    balance = state.accounts.balance(patient.psn_no) if state.accounts.enabled else None
    return dedc_left, year_left, balance


def _check_lines_complete(view: View, req: Request) -> None:
    """Without a catalogue the terminal's class and OTC flag decide, so both must be sent."""
    if view.state.catalogue is not None:
        return
    for index, item in enumerate(req.typed.items):
        for field in ("chrgitm_lv", "otc"):
            if getattr(item, field) is None:
                raise Rejection(ErrCode.MALFORMED_INPUT, f"input.items[{index}].{field}: required "
                                                         "(no catalogue decides it)")


def _catalogue_rows(view: View, req: Request, day: int) -> list[Any]:
    catalogue = view.state.catalogue
    if catalogue is None:
        return [None] * len(req.typed.items)
    return [catalogue.lookup(item.med_list_codg, day) for item in req.typed.items]


def _held_codes(req: Request) -> list[str]:
    """The codes a pharmacy settlement holds: whole-package lines' (split packages are never held)."""
    if req.institution.kind != "pharmacy":
        return []
    return [code for item in req.typed.items if item.trdn_flag == "0" for code in item.drug_trac_codg]


def _check_trace_codes(view: View, req: Request, codes: list[str]) -> None:
    """TRACE_CODE_REUSED when a standing settlement holds one of `codes` (naming only this request's line)."""
    state = view.state
    reused = state.trace.held_by_other(codes, req.now_ms, state.overlay.policy.trace_retention_days)
    if reused is None:
        return
    line = next(item for item in req.typed.items if item.trdn_flag == "0" and reused in item.drug_trac_codg)
    raise Rejection(ErrCode.TRACE_CODE_REUSED, f"line {line.feedetl_sn}: traceability code {reused} "
                                               "was already sold",
                    evidence={"feedetl_sn": line.feedetl_sn, "drug_trac_codg": reused})


def _compute(view: View, req: Request, patient: Patient, day: int, month: int) -> tuple[Bill, Usage]:
    state, institution = view.state, req.institution
    policy = state.overlay.policy
    usage = Usage(
        otc_allowance_fen=_allowance_fen(view, institution),
        person_day_used_fen=state.ledger.person_day_used(patient.psn_no, day),
        monthly_cap_fen=institution.monthly_cap_fen,
        institution_month_used_fen=state.ledger.institution_month_used(institution.code, month))
    pharmacy = institution.kind == "pharmacy"
    trace_from = policy.trace_required_from
    rules = LineRules(pharmacy=pharmacy, catalogue_on=state.catalogue is not None,
                      trace_required=trace_from is not None and date_day(trace_from) <= day,
                      selfpay_prop_permille=policy.selfpay_prop_permille,
                      doctor_suspended=state.overlay.operator_suspended)
    year = YearTerms(policy.pooling.get(patient.insutype), institution.outpatient_pooling,
                     state.years.used(patient.psn_no, patient.insutype, month // 100))
    bill = compute_bill(req.typed.items, _catalogue_rows(view, req, day), req.typed.medfee_sumamt,
                        patient.insutype, policy, rules, usage, year)
    return bill, usage


# The answer maps below are built in canonical key order (UTF-8 byte order), so that sealing packs
# them as they are; the encoding is canonical whatever the order, this only saves the re-sorting.
def _setlinfo(req: Request, patient: Patient, bill: Bill, part: AccountPart,
              setl_ids: tuple[str, str] | None) -> dict[str, Any]:
    setlinfo = {
        "acct_mulaid_pay": part.acct_mulaid_pay, "acct_pay": part.acct_pay, "acct_payer_psn_no": part.payer,
        "act_pay_dedc": bill.act_pay_dedc, "balc": part.balc,
        "bound_by": _bound_by(bill, part), "crt_payb_lmt_amt": bill.crt_payb_lmt_amt,
        "fulamt_ownpay_amt": bill.fulamt_ownpay_amt, "fund_pay_sumamt": bill.fund_pay_sumamt,
        "inscp_scp_amt": bill.inscp_scp_amt, "institution_month_remaining": bill.institution_month_remaining,
        "insuplc_admdvs": patient.insuplc_admdvs, "insutype": patient.insutype}
    if setl_ids is not None:
        setlinfo["mdtrt_id"] = setl_ids[1]
    setlinfo.update({
        "medfee_sumamt": bill.medfee_sumamt, "medins_setl_id": req.env.msgid, "otc_pay": bill.otc_pay,
        "overlmt_selfpay": bill.overlmt_amt, "person_day_remaining": bill.person_day_remaining,
        "person_year_pool_remaining": bill.person_year_pool_remaining, "preselfpay_amt": bill.preselfpay_amt,
        "psn_cash_pay": part.psn_cash_pay, "psn_no": patient.psn_no,
        "psn_part_amt": part.psn_part_amt, "rx_pay": bill.rx_pay})
    if setl_ids is not None:
        setlinfo["setl_id"] = setl_ids[0]
    setlinfo["setl_time"] = req.now_ms
    return setlinfo


def _bound_by(bill: Bill, part: AccountPart) -> list[str]:
    return [*bill.bound_by, BOUND_ACCOUNT_BALANCE] if part.bound else list(bill.bound_by)


def settle(view: View, req: Request) -> Answer:
    """2101/2102 (pharmacies) and 2206/2207 (clinics, hospitals): split the bill; settle on 2102/2207."""
    state, env = view.state, req.env
    applying = env.infno not in PRE_SETTLE_INFNOS
    held = _held_codes(req)
    if applying:
        _require_room(view, settlement=True, trace_codes=len(held))
    _check_lines_complete(view, req)
    patient = _patient(view, req, req.typed.medfee_sumamt)
    day, month = business_day(req.now_ms), business_month(req.now_ms)
    payer = check_payer(state.overlay, req.typed.acct_used_flag, req.typed.acct_payer_psn_no, patient.psn_no,
                        day_date(day))
    _check_trace_codes(view, req, held)
    bill, usage = _compute(view, req, patient, day, month)
    part = account_part(bill, payer, patient.psn_no, 0 if payer is None else state.accounts.balance(payer))
    setl_n = state.setl_counter + 1
    setl_id = view.setl_id(setl_n) if applying else ""
    setlinfo = _setlinfo(req, patient, bill, part, (setl_id, view.mdtrt_id(setl_n)) if applying else None)
    output = {"detlcutinfo": [
        {"chrgitm_lv": c.chrgitm_lv, "cut_reason": c.cut_reason, "drug_trac_codg": list(item.drug_trac_codg),
         "feedetl_sn": c.feedetl_sn, "fulamt_ownpay_amt": c.fulamt_ownpay_amt, "inscp_scp_amt": c.inscp_scp_amt,
         "otc": c.otc, "overlmt_amt": c.overlmt_amt, "preselfpay_amt": c.preselfpay_amt}
        for c, item in zip(bill.lines, req.typed.items)],
        "setlinfo": setlinfo}
    facts = {"cert_type": patient.cert_type, "medfee_fen": bill.medfee_sumamt, "fund_fen": bill.fund_pay_sumamt,
             "cash_fen": part.psn_cash_pay, "acct_fen": part.acct_pay, "bound_by": tuple(setlinfo["bound_by"]),
             "fulamt_fen": bill.fulamt_ownpay_amt,
             "preselfpay_fen": bill.preselfpay_amt, "overlmt_fen": bill.overlmt_amt,
             "cut_reasons": tuple(c.cut_reason for c in bill.lines if c.cut_reason)}
    if not applying:
        return Answer(output, bill.warnings, None, facts)
    # The record's settlement in Settlement.to_dict() form, built directly (the commit builds the object).
    setl = {"setl_id": setl_id, "msgid": env.msgid, "infno": env.infno, "institution": req.institution.code,
            "psn_no": patient.psn_no, "insutype": patient.insutype, "insuplc_admdvs": patient.insuplc_admdvs,
            "setl_time": req.now_ms, "day": day, "month": month, "medfee_sumamt": bill.medfee_sumamt,
            "fund_pay_sumamt": bill.fund_pay_sumamt, "psn_cash_pay": part.psn_cash_pay, "otc_pay": bill.otc_pay,
            "rx_pay": bill.rx_pay, "status": STATUS_SETTLED, "cancel_msgid": None,
            "overlmt_amt": bill.overlmt_amt, "acct_pay": part.acct_pay, "trace_codes": held,
            "act_pay_dedc": bill.act_pay_dedc, "acct_payer_psn_no": part.payer,
            # Supervision (SPEC 14): who settled, how, and per doctor.
            "opter": env.opter, "cert_type": patient.cert_type, "bound_by": setlinfo["bound_by"],
            "fulamt_ownpay_amt": bill.fulamt_ownpay_amt, "preselfpay_amt": bill.preselfpay_amt,
            "doctors": doctor_sums(req.typed.items, bill.lines)}
    voucher = None if patient.voucher_key is None else Voucher(patient.voucher_key, patient.voucher_exp_ms)
    pooling = state.overlay.policy.pooling.get(patient.insutype)
    record = SettleRecord(now_ms=req.now_ms, setl=setl, setl_n=setl_n, person_limit_fen=usage.otc_allowance_fen,
                          cap_fen=usage.monthly_cap_fen, voucher=voucher,
                          idem=Idem(env.msgid, req.fingerprint, env.infno, setl_id),
                          pooling_fen=None if pooling is None else [pooling.deductible_fen, pooling.annual_cap_fen])
    return Answer(output, bill.warnings, record, facts)


def _require_room(view: View, settlement: bool = False, tombstone: bool = False, trace_codes: int = 0) -> None:
    state = view.state
    if not state.idempotency.has_room():
        raise _overloaded("the idempotency store")
    if settlement and not (state.settlements.has_room() and state.vouchers.has_room()):
        raise _overloaded("the settlement store")
    if trace_codes and not state.trace.has_room(trace_codes):
        raise _overloaded("the traceability code memory")
    if tombstone and not state.tombstones.has_room():
        raise _overloaded("the tombstone store")


def cancel(view: View, req: Request) -> Answer:
    """2103/2208: cancel a settlement of this institution and person within its business month."""
    _require_room(view)
    found = view.state.settlements.get(req.typed.setl_id)
    if found is None or found.institution != req.institution.code or found.psn_no != req.typed.psn_no:
        raise Rejection(ErrCode.SETTLEMENT_NOT_FOUND, "no such settlement")
    if found.status != STATUS_SETTLED:
        raise Rejection(ErrCode.ALREADY_CANCELLED, f"the settlement is {found.status}")
    if found.month != business_month(req.now_ms):
        raise Rejection(ErrCode.CANCEL_WINDOW_CLOSED, "only settlements of the current month can be cancelled")
    output = {"setl_id": found.setl_id, "cancel_time": req.now_ms, "medfee_sumamt": -found.medfee_sumamt,
              "fund_pay_sumamt": -found.fund_pay_sumamt, "psn_cash_pay": -found.psn_cash_pay,
              "otc_pay": -found.otc_pay, "rx_pay": -found.rx_pay, "acct_pay": -found.acct_pay,
              "act_pay_dedc": -found.act_pay_dedc}
    record = CancelRecord(now_ms=req.now_ms, setl_id=found.setl_id,
                          idem=Idem(req.env.msgid, req.fingerprint, req.env.infno, found.setl_id))
    return Answer(output, (), record)


def reverse(view: View, req: Request) -> Answer:
    """2601: undo an applied original, or tombstone an unknown one so it is refused if it arrives."""
    _require_room(view, tombstone=True)
    state, omsgid, oinfno = view.state, req.typed.omsgid, req.typed.oinfno
    if omsgid[:12] != req.institution.code:
        raise Rejection(ErrCode.SETTLEMENT_NOT_FOUND, "input.omsgid: not a message of this institution")
    output: dict[str, Any] = {"reversed": True}
    action, setl_id = "none", ""
    original = state.idempotency.get(omsgid)
    if original is not None and original.created_ms < req.now_ms - IDEMPOTENCY_RETENTION_MS:
        # Past its retention, and this record's commit expires it first: after a long quiet spell
        # nothing has expired it yet, but the settlement it names may be gone too. Unknown, then.
        original = None
    if omsgid in state.tombstones:
        output["already_reversed"] = True
    elif original is None:
        output["original_found"] = False
    elif original.infno != oinfno:
        raise Rejection(ErrCode.SETTLEMENT_NOT_FOUND, "input.oinfno: the original is of another infno")
    else:
        output["original_found"] = True
        setl_id = original.subject
        action = _reverse_action(state.settlements.get(setl_id), oinfno, omsgid)
    record = ReverseRecord(now_ms=req.now_ms, omsgid=omsgid, action=action, setl_id=setl_id,
                           idem=Idem(req.env.msgid, req.fingerprint, req.env.infno, omsgid))
    return Answer(output, (), record)


def _reverse_action(settlement: Settlement | None, oinfno: str, omsgid: str) -> str:
    if settlement is None:
        return "none"        # past the settlement retention: nothing left to undo
    if oinfno in ("2102", "2207"):
        return "unsettle" if settlement.status != "reversed" else "none"
    # Reversing a cancellation re-instates the settlement, if that cancellation is still its state.
    if settlement.status == STATUS_CANCELLED and settlement.cancel_msgid == omsgid:
        return "reinstate"
    return "none"


def _stmt_day(text: str) -> int:
    try:
        return parse_stmt_date(text)
    except ValueError:
        raise Rejection(ErrCode.MALFORMED_INPUT, "input.stmt_date: not a real YYYYMMDD date") from None


def totals(view: View, req: Request) -> Answer:
    """3201: compare the institution's totals for a business day with the settlements that stand."""
    store = view.state.settlements
    rows = [store.get(i) for i in store.day_ids(req.institution.code, _stmt_day(req.typed.stmt_date))]
    standing = [s for s in rows if s is not None and s.status == STATUS_SETTLED]
    gateway = {"setl_cnt": len(standing), "medfee_sumamt": sum(s.medfee_sumamt for s in standing),
               "fund_pay_sumamt": sum(s.fund_pay_sumamt for s in standing),
               "psn_cash_pay": sum(s.psn_cash_pay for s in standing),
               "acct_pay": sum(s.acct_pay for s in standing)}
    # acct_pay (SPEC 13) is compared only when the institution sent its own.
    compared = [key for key in gateway if key != "acct_pay" or req.typed.acct_pay is not None]
    balanced = all(getattr(req.typed, key) == gateway[key] for key in compared)
    return Answer({"stmt_rslt": "0" if balanced else "1", "gateway": gateway})


# A 3202 row encodes to at most ~250 bytes (psn_no of up to 64 chars); 200 rows keep the signed
# answer under the 64 KiB msgpack bound every terminal decodes with. A larger `limit` gets a
# shorter page whose `next` says where to continue, as SPEC's paging already allows.
DETAIL_ROWS_PER_ANSWER_MAX = 200


def detail(view: View, req: Request) -> Answer:
    """3202: one page of the day's settlements in setl_id order."""
    limit = min(req.typed.limit, DETAIL_ROWS_PER_ANSWER_MAX)
    page, more = view.state.settlements.page(req.institution.code, _stmt_day(req.typed.stmt_date),
                                             req.typed.after, limit)
    rows = [{"setl_id": s.setl_id, "msgid": s.msgid, "psn_no": s.psn_no, "setl_time": s.setl_time,
             "medfee_sumamt": s.medfee_sumamt, "fund_pay_sumamt": s.fund_pay_sumamt,
             "psn_cash_pay": s.psn_cash_pay, "acct_pay": s.acct_pay, "status": s.status} for s in page]
    return Answer({"rows": rows, "next": rows[-1]["setl_id"] if more and rows else None})


HANDLERS = {
    "9001": sign_in, "9002": sign_out, "1101": person_info,
    "2101": settle, "2102": settle, "2206": settle, "2207": settle,
    "2103": cancel, "2208": cancel, "2601": reverse, "3201": totals, "3202": detail,
}
