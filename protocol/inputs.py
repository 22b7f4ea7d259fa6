"""Typed inputs per infno (SPEC section 7) and their validation (MALFORMED_INPUT, AMOUNT_MISMATCH).

The parser names the offending field's path in err_msg (`input.items[3].pric: ...`). It checks
shapes first, in field order, then amounts, so a malformed field wins over a mismatched sum.
Unknown extra keys are ignored. It does not judge the credential beyond its shape: an
unaccepted mdtrt_cert_type becomes UnacceptedCredential, refused later by the core, because
SPEC section 5 puts input validation before the credential step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Union

from protocol import limits
from protocol._fields import is_digits, is_id, is_int, is_real_date, msgid_layout_ok
from protocol._msgpack import plain_violation
from protocol.errors import ErrCode, ProtocolError
from protocol.session import x25519_public_usable

CERT_TYPE_VOUCHER = "01"
CERT_TYPE_CARD = "03"
CHRGITM_LEVELS = frozenset({"01", "02", "03"})
REVERSIBLE_INFNOS = frozenset({"2102", "2103", "2207", "2208"})
# Successful answers to these are recorded for idempotency (SPEC section 6).
STATE_CHANGING_INFNOS = frozenset({"2102", "2103", "2207", "2208", "2601"})


@dataclasses.dataclass(frozen=True, slots=True)
class VoucherCredential:
    """mdtrt_cert_type "01": the e-voucher token, verified later with verify_voucher."""

    token: str


@dataclasses.dataclass(frozen=True, slots=True)
class CardCredential:
    """mdtrt_cert_type "03": the social-security card and its 16-byte cryptogram."""

    card_no: str
    card_sn: str
    psn_no: str
    insutype: str
    insuplc_admdvs: str
    card_mac: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class UnacceptedCredential:
    """Any other mdtrt_cert_type string; the core answers CREDENTIAL_NOT_ACCEPTED."""

    cert_type: str


Credential = Union[VoucherCredential, CardCredential, UnacceptedCredential]


@dataclasses.dataclass(frozen=True, slots=True)
class BillLine:
    """One bill line; amounts in fen; rxno None when absent (or empty)."""

    feedetl_sn: str
    med_list_codg: str
    chrgitm_lv: str
    otc: bool
    rxno: str | None
    cnt: int
    pric: int
    det_item_fee_sumamt: int
    bilg_dr_codg: str
    hosp_appr_flag: str = "0"                 # "1": restricted use approved (SPEC 13)
    drug_trac_codg: tuple[str, ...] = ()      # traceability codes, at most cnt
    trdn_flag: str = "0"                      # "1": split package (拆零), codes neither checked nor held


@dataclasses.dataclass(frozen=True, slots=True)
class SignInInput:
    """9001."""

    opter: str
    x25519_pub: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class SignOutInput:
    """9002: no fields."""


@dataclasses.dataclass(frozen=True, slots=True)
class PersonInfoInput:
    """1101."""

    cert: Credential


@dataclasses.dataclass(frozen=True, slots=True)
class SettleInput:
    """2101, 2102, 2206, 2207: the amounts already agree (Σ lines = medfee_sumamt)."""

    cert: Credential
    medfee_sumamt: int
    items: tuple[BillLine, ...]
    acct_used_flag: str = "0"                 # "1": pay from a personal account (SPEC 13)
    acct_payer_psn_no: str | None = None      # whose account (None: the patient's)


@dataclasses.dataclass(frozen=True, slots=True)
class CancelInput:
    """2103, 2208."""

    setl_id: str
    psn_no: str


@dataclasses.dataclass(frozen=True, slots=True)
class ReversalInput:
    """2601: oinfno is one of 2102, 2103, 2207, 2208."""

    omsgid: str
    oinfno: str


@dataclasses.dataclass(frozen=True, slots=True)
class TotalsInput:
    """3201: the institution's own totals for stmt_date (YYYYMMDD)."""

    stmt_date: str
    setl_cnt: int
    medfee_sumamt: int
    fund_pay_sumamt: int
    psn_cash_pay: int
    acct_pay: int | None = None               # compared too when sent (SPEC 13)


@dataclasses.dataclass(frozen=True, slots=True)
class DetailInput:
    """3202: one page of at most `limit` rows after setl_id `after` (None = from the start)."""

    stmt_date: str
    after: str | None
    limit: int


TypedInput = Union[
    SignInInput, SignOutInput, PersonInfoInput, SettleInput, CancelInput, ReversalInput, TotalsInput, DetailInput
]


def _fail(path: str, why: str) -> ProtocolError:
    return ProtocolError(ErrCode.MALFORMED_INPUT, f"{path}: {why}")


def _get(raw: dict[str, Any], path: str, name: str) -> Any:
    if name not in raw or raw[name] is None:
        raise _fail(f"{path}.{name}", "missing")
    return raw[name]


def _id(raw: dict[str, Any], path: str, name: str) -> str:
    value = _get(raw, path, name)
    if not is_id(value):
        raise _fail(f"{path}.{name}", f"not a string of 1..{limits.ID_CHARS_MAX} chars")
    return value


def _int(raw: dict[str, Any], path: str, name: str, low: int, high: int) -> int:
    value = _get(raw, path, name)
    if not is_int(value):
        raise _fail(f"{path}.{name}", "not an integer")
    if not low <= value <= high:
        raise _fail(f"{path}.{name}", f"outside {low}..{high}")
    return value


def _amount(raw: dict[str, Any], path: str, name: str) -> int:
    return _int(raw, path, name, 0, limits.AMOUNT_FEN_MAX)


def _bin(raw: dict[str, Any], path: str, name: str, size: int) -> bytes:
    value = _get(raw, path, name)
    if not isinstance(value, bytes) or len(value) != size:
        raise _fail(f"{path}.{name}", f"not bin({size})")
    return value


def _admdvs(raw: dict[str, Any], path: str, name: str) -> str:
    value = _get(raw, path, name)
    if not isinstance(value, str) or not is_digits(value, limits.ADMDVS_DIGITS):
        raise _fail(f"{path}.{name}", "not 6 digits")
    return value


def _stmt_date(raw: dict[str, Any]) -> str:
    value = _get(raw, "input", "stmt_date")
    if not is_real_date(value):
        raise _fail("input.stmt_date", "not a real YYYYMMDD date")
    return value


def _card_id(raw: dict[str, Any], name: str) -> str:
    # card_key joins card_no and card_sn with a newline; refusing newlines keeps that unambiguous.
    value = _id(raw, "input", name)
    if "\n" in value:
        raise _fail(f"input.{name}", "contains a newline")
    return value


def _credential(raw: dict[str, Any]) -> Credential:
    # A card credential that is right in every field is read in one pass; anything else takes the
    # reference walk below (same order of checks, same messages).
    get = raw.get
    if get("mdtrt_cert_type") == CERT_TYPE_CARD:
        card_no, card_sn, psn_no, insutype = get("mdtrt_cert_no"), get("card_sn"), get("psn_no"), get("insutype")
        admdvs, tag = get("insuplc_admdvs"), get("card_mac")
        if (_id_ok(card_no) and "\n" not in card_no and _id_ok(card_sn) and "\n" not in card_sn and _id_ok(psn_no)
                and _id_ok(insutype) and type(admdvs) is str and is_digits(admdvs, limits.ADMDVS_DIGITS)
                and type(tag) is bytes and len(tag) == limits.CARD_MAC_BYTES):
            return CardCredential(card_no, card_sn, psn_no, insutype, admdvs, tag)
    return _credential_checked(raw)


def _credential_checked(raw: dict[str, Any]) -> Credential:
    cert_type = _get(raw, "input", "mdtrt_cert_type")
    if not isinstance(cert_type, str):
        raise _fail("input.mdtrt_cert_type", "not a string")
    if cert_type == CERT_TYPE_VOUCHER:
        token = _get(raw, "input", "mdtrt_cert_no")
        if not isinstance(token, str):
            raise _fail("input.mdtrt_cert_no", "not a string")
        return VoucherCredential(token=token)
    if cert_type != CERT_TYPE_CARD:
        return UnacceptedCredential(cert_type=cert_type)
    return CardCredential(
        card_no=_card_id(raw, "mdtrt_cert_no"),
        card_sn=_card_id(raw, "card_sn"),
        psn_no=_id(raw, "input", "psn_no"),
        insutype=_id(raw, "input", "insutype"),
        insuplc_admdvs=_admdvs(raw, "input", "insuplc_admdvs"),
        card_mac=_bin(raw, "input", "card_mac", limits.CARD_MAC_BYTES),
    )


def _rxno(raw: dict[str, Any], path: str) -> str | None:
    value = raw.get("rxno")
    if value is None or value == "":
        return None
    if not is_id(value):
        raise _fail(f"{path}.rxno", f"not a string of 1..{limits.ID_CHARS_MAX} chars")
    return value


def _chrgitm_lv(raw: dict[str, Any], path: str) -> str:
    value = _get(raw, path, "chrgitm_lv")
    if not isinstance(value, str) or value not in CHRGITM_LEVELS:
        raise _fail(f"{path}.chrgitm_lv", "not '01', '02' or '03'")
    return value


def _bool(raw: dict[str, Any], path: str, name: str) -> bool:
    value = _get(raw, path, name)
    if not isinstance(value, bool):
        raise _fail(f"{path}.{name}", "not a bool")
    return value


def _id_ok(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= limits.ID_CHARS_MAX


def _amount_ok(value: Any) -> bool:
    return type(value) is int and 0 <= value <= limits.AMOUNT_FEN_MAX


def _bill_line(raw: Any, index: int) -> BillLine:
    # A line that is right in every field is read in one pass; any doubt (a missing, mistyped or
    # out-of-range field, a subclass) goes to the field-by-field reference walk, which names the
    # first offending field in the SPEC's order, or accepts what this pass was too strict for.
    if type(raw) is dict:
        get = raw.get
        sn, codg, level, otc, rxno = get("feedetl_sn"), get("med_list_codg"), get("chrgitm_lv"), get("otc"), get("rxno")
        cnt, pric, det_fen, doctor = get("cnt"), get("pric"), get("det_item_fee_sumamt"), get("bilg_dr_codg")
        if (_id_ok(sn) and _id_ok(codg) and type(level) is str and level in CHRGITM_LEVELS and type(otc) is bool
                and (rxno is None or (type(rxno) is str and len(rxno) <= limits.ID_CHARS_MAX))
                and type(cnt) is int and 1 <= cnt <= limits.CNT_MAX and _amount_ok(pric) and _amount_ok(det_fen)
                and _id_ok(doctor)):
            return BillLine(sn, codg, level, otc, rxno or None, cnt, pric, det_fen, doctor)
    return _bill_line_checked(raw, f"input.items[{index}]")


def _bill_line_checked(raw: Any, path: str) -> BillLine:
    if not isinstance(raw, dict):
        raise _fail(path, "not a map")
    # Keyword arguments evaluate left to right: fields are checked in the SPEC's order.
    return BillLine(
        feedetl_sn=_id(raw, path, "feedetl_sn"),
        med_list_codg=_id(raw, path, "med_list_codg"),
        chrgitm_lv=_chrgitm_lv(raw, path),
        otc=_bool(raw, path, "otc"),
        rxno=_rxno(raw, path),
        cnt=_int(raw, path, "cnt", 1, limits.CNT_MAX),
        pric=_amount(raw, path, "pric"),
        det_item_fee_sumamt=_amount(raw, path, "det_item_fee_sumamt"),
        bilg_dr_codg=_id(raw, path, "bilg_dr_codg"),
    )


def _bill_lines(raw: dict[str, Any]) -> tuple[BillLine, ...]:
    items = _get(raw, "input", "items")
    if not isinstance(items, list) or not limits.ITEMS_MIN <= len(items) <= limits.ITEMS_MAX:
        raise _fail("input.items", f"not a list of {limits.ITEMS_MIN}..{limits.ITEMS_MAX} lines")
    lines = tuple(_bill_line(item, index) for index, item in enumerate(items))
    seen: set[str] = set()
    for index, line in enumerate(lines):
        if line.feedetl_sn in seen:
            raise _fail(f"input.items[{index}].feedetl_sn", "duplicate")
        seen.add(line.feedetl_sn)
    return lines


def _check_amounts(medfee_sumamt: int, lines: tuple[BillLine, ...]) -> None:
    for index, line in enumerate(lines):
        if line.det_item_fee_sumamt != line.cnt * line.pric:
            raise ProtocolError(
                ErrCode.AMOUNT_MISMATCH, f"input.items[{index}].det_item_fee_sumamt: not cnt x pric"
            )
    if medfee_sumamt != sum(line.det_item_fee_sumamt for line in lines):
        raise ProtocolError(ErrCode.AMOUNT_MISMATCH, "input.medfee_sumamt: not the sum of det_item_fee_sumamt")


def _sign_in(raw: dict[str, Any]) -> SignInInput:
    opter = _id(raw, "input", "opter")
    x25519_pub = _bin(raw, "input", "x25519_pub", limits.X25519_PUB_BYTES)
    if not x25519_public_usable(x25519_pub):
        raise _fail("input.x25519_pub", "not a usable X25519 public key")
    return SignInInput(opter=opter, x25519_pub=x25519_pub)


def _settle(raw: dict[str, Any]) -> SettleInput:
    cert = _credential(raw)
    medfee_sumamt = _amount(raw, "input", "medfee_sumamt")
    lines = _bill_lines(raw)
    # SPEC 13 "Who pays v2": both optional (nil counts as absent), validated whenever sent.
    flag = raw.get("acct_used_flag")
    flag = "0" if flag is None else flag
    if type(flag) is not str or flag not in ("0", "1"):
        raise _fail("input.acct_used_flag", "not '0' or '1'")
    payer = raw.get("acct_payer_psn_no")
    if payer is not None and not is_id(payer):
        raise _fail("input.acct_payer_psn_no", f"not a string of 1..{limits.ID_CHARS_MAX} chars")
    _check_amounts(medfee_sumamt, lines)
    return SettleInput(cert=cert, medfee_sumamt=medfee_sumamt, items=lines, acct_used_flag=flag,
                       acct_payer_psn_no=payer)


def _reversal(raw: dict[str, Any]) -> ReversalInput:
    omsgid = _get(raw, "input", "omsgid")
    if not msgid_layout_ok(omsgid):
        raise _fail("input.omsgid", "not a msgid (12 chars + yyyyMMddHHmmss + 4 digits)")
    oinfno = _get(raw, "input", "oinfno")
    if not isinstance(oinfno, str) or oinfno not in REVERSIBLE_INFNOS:
        raise _fail("input.oinfno", "not one of 2102, 2103, 2207, 2208")
    return ReversalInput(omsgid=omsgid, oinfno=oinfno)


def _totals(raw: dict[str, Any]) -> TotalsInput:
    return TotalsInput(
        stmt_date=_stmt_date(raw),
        setl_cnt=_int(raw, "input", "setl_cnt", 0, limits.SETL_CNT_MAX),
        medfee_sumamt=_amount(raw, "input", "medfee_sumamt"),
        fund_pay_sumamt=_amount(raw, "input", "fund_pay_sumamt"),
        psn_cash_pay=_amount(raw, "input", "psn_cash_pay"),
        acct_pay=None if raw.get("acct_pay") is None else _amount(raw, "input", "acct_pay"),
    )


def _detail(raw: dict[str, Any]) -> DetailInput:
    stmt_date = _stmt_date(raw)
    after = raw.get("after")
    if after is not None and not is_id(after):
        raise _fail("input.after", f"not a string of 1..{limits.ID_CHARS_MAX} chars")
    limit = _int(raw, "input", "limit", limits.DETAIL_LIMIT_MIN, limits.DETAIL_LIMIT_MAX)
    return DetailInput(stmt_date=stmt_date, after=after, limit=limit)


_PARSERS: dict[str, Callable[[dict[str, Any]], TypedInput]] = {
    "9001": _sign_in,
    "9002": lambda raw: SignOutInput(),
    "1101": lambda raw: PersonInfoInput(cert=_credential(raw)),
    "2101": _settle,
    "2102": _settle,
    "2206": _settle,
    "2207": _settle,
    "2103": lambda raw: CancelInput(setl_id=_id(raw, "input", "setl_id"), psn_no=_id(raw, "input", "psn_no")),
    "2208": lambda raw: CancelInput(setl_id=_id(raw, "input", "setl_id"), psn_no=_id(raw, "input", "psn_no")),
    "2601": _reversal,
    "3201": _totals,
    "3202": _detail,
}
INFNOS = frozenset(_PARSERS)


def parse_input(infno: str, raw: Any, input_proven_plain: bool = False) -> TypedInput:
    """Validate the raw input of `infno` and return its typed form.

    Args:
        infno: the envelope's infno.
        raw: the envelope's input map (from decode_request_envelope).
        input_proven_plain: True only when decode_request_envelope_proving_input said so for this
            input; the plainness walk is then skipped (the answer is the same either way).
    Returns:
        One of the typed inputs (SignInInput ... DetailInput).
    Raises:
        ProtocolError(UNSUPPORTED_INFNO): infno is not one of SPEC section 7.
        ProtocolError(MALFORMED_INPUT): a field missing, mistyped or out of range; msg names it.
        ProtocolError(AMOUNT_MISMATCH): det_item_fee_sumamt != cnt x pric, or medfee_sumamt != Σ.
    """
    parser = _PARSERS.get(infno) if isinstance(infno, str) else None
    if parser is None:
        raise ProtocolError(ErrCode.UNSUPPORTED_INFNO, f"infno {infno!r} is not supported")
    if not isinstance(raw, dict):
        raise _fail("input", "not a map")
    if not input_proven_plain:
        reason = plain_violation(raw, 0)
        if reason is not None:
            raise _fail("input", reason)
    return parser(raw)

