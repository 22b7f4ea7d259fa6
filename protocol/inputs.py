"""Typed inputs per infno (SPEC section 7) and their validation (MALFORMED_INPUT, AMOUNT_MISMATCH).

The parser names the offending field's path in err_msg (`input.items[3].pric: ...`). It checks
shapes first, in field order, then amounts, so a malformed field wins over a mismatched sum. Each
map's fields and their rules are one table below, read through the reader compiled from it.
Unknown extra keys are ignored. It does not judge the credential beyond its shape: an
unaccepted mdtrt_cert_type becomes UnacceptedCredential, refused later by the core, because
SPEC section 5 puts input validation before the credential step.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any, Union

from protocol import limits
from protocol._fields import is_real_date, msgid_layout_ok
from protocol._msgpack import first_fault
from protocol._rules import (
    AMOUNT, BOOL, ID, STRING, Field, Rule, Table, binary, compile_reader, digits, integer, one_of, text,
)
from protocol.envelope import RequestEnvelope
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
    chrgitm_lv: str | None                    # None: not sent (SPEC 13: the catalogue decides)
    otc: bool | None
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


def _table(name: str, *fields: Field, make: Callable[..., Any] | None = None) -> Callable[[Any, str], Any]:
    """The reader of one input map: MALFORMED_INPUT naming `<path>.<field>`; nil counts as missing."""
    return compile_reader(Table(name=name, code=ErrCode.MALFORMED_INPUT, message="{path}.{name}: {why}",
                                fields=fields, make=make))


FLAGS = ("0", "1")
_TRACE_CODE = re.compile(r"[!-~]{1,%d}" % limits.TRACE_CODE_CHARS_MAX)


def trace_code_ok(code: Any) -> bool:
    """A traceability code (药品追溯码): 1..64 printable ASCII characters, no space."""
    return isinstance(code, str) and _TRACE_CODE.fullmatch(code) is not None


# -- the tables of SPEC section 7, each field's rules in the order they are checked -----------------

# card_key joins card_no and card_sn with a newline; refusing newlines keeps that unambiguous.
_NO_NEWLINE = Rule("'\\n' not in v", "contains a newline")
_STMT_DATE = Field("stmt_date", (Rule("is_real_date(v)", "not a real YYYYMMDD date",
                                      uses={"is_real_date": is_real_date}),))

_CERT_TYPE = _table("cert_type", Field("mdtrt_cert_type", (STRING,)))
_VOUCHER = _table("voucher", Field("mdtrt_cert_no", (STRING,)), make=VoucherCredential)
_CARD = _table(
    "card",
    Field("mdtrt_cert_no", (ID, _NO_NEWLINE)),
    Field("card_sn", (ID, _NO_NEWLINE)),
    Field("psn_no", (ID,)),
    Field("insutype", (ID,)),
    Field("insuplc_admdvs", (digits(limits.ADMDVS_DIGITS),)),
    Field("card_mac", (binary(limits.CARD_MAC_BYTES),)),
    make=CardCredential,
)
_BILL_LINE = _table(
    "bill_line",
    Field("feedetl_sn", (ID,)),
    Field("med_list_codg", (ID,)),
    # Optional since SPEC 13 (the catalogue decides); the core requires both when it has none.
    Field("chrgitm_lv", (one_of(CHRGITM_LEVELS, "not '01', '02' or '03'"),), optional="True"),
    Field("otc", (BOOL,), optional="True"),
    # An empty rxno counts as no prescription.
    Field("rxno", (text(0, limits.ID_CHARS_MAX, ID.why),), optional="True", empty_is_none=True),
    Field("cnt", integer(1, limits.CNT_MAX)),
    Field("pric", AMOUNT),
    Field("det_item_fee_sumamt", AMOUNT),
    Field("bilg_dr_codg", (ID,)),
    Field("hosp_appr_flag", (one_of(FLAGS, "not '0' or '1'"),), optional="True"),
    Field("drug_trac_codg", (Rule("isinstance(v, list) and len(v) <= cnt", "not a list of at most cnt codes"),
                             Rule("all(trace_code_ok(c) for c in v)",
                                  "each code must be 1..64 characters from '!' to '~'",
                                  uses={"trace_code_ok": trace_code_ok})), optional="True"),
    Field("trdn_flag", (one_of(FLAGS, "not '0' or '1'"),), optional="True"),
    make=lambda *values: _bill_line(*values),
)
_SETTLE = _table(
    "settle",
    Field("medfee_sumamt", AMOUNT),
    Field("items", (Rule(f"isinstance(v, list) and {limits.ITEMS_MIN} <= len(v) <= {limits.ITEMS_MAX}",
                         f"not a list of {limits.ITEMS_MIN}..{limits.ITEMS_MAX} lines"),)),
    # SPEC 13 "Who pays v2": both optional (nil counts as absent), checked whenever sent.
    Field("acct_used_flag", (one_of(FLAGS, "not '0' or '1'"),), optional="True"),
    Field("acct_payer_psn_no", (ID,), optional="True"),
)
_SIGN_IN = _table(
    "sign_in",
    Field("opter", (ID,)),
    Field("x25519_pub", (binary(limits.X25519_PUB_BYTES),
                         Rule("x25519_public_usable(v)", "not a usable X25519 public key",
                              uses={"x25519_public_usable": x25519_public_usable}))),
    make=SignInInput,
)
_CANCEL = _table("cancel", Field("setl_id", (ID,)), Field("psn_no", (ID,)), make=CancelInput)
_REVERSAL = _table(
    "reversal",
    Field("omsgid", (Rule("msgid_layout_ok(v)", "not a msgid (12 chars + yyyyMMddHHmmss + 4 digits)",
                          uses={"msgid_layout_ok": msgid_layout_ok}),)),
    Field("oinfno", (one_of(REVERSIBLE_INFNOS, "not one of 2102, 2103, 2207, 2208"),)),
    make=ReversalInput,
)
_TOTALS = _table(
    "totals",
    _STMT_DATE,
    Field("setl_cnt", integer(0, limits.SETL_CNT_MAX)),
    Field("medfee_sumamt", AMOUNT),
    Field("fund_pay_sumamt", AMOUNT),
    Field("psn_cash_pay", AMOUNT),
    Field("acct_pay", AMOUNT, optional="True"),     # compared too when sent (SPEC 13)
    make=TotalsInput,
)
_DETAIL = _table(
    "detail",
    _STMT_DATE,
    Field("after", (ID,), optional="True"),
    Field("limit", integer(limits.DETAIL_LIMIT_MIN, limits.DETAIL_LIMIT_MAX)),
    make=DetailInput,
)


def _credential(raw: dict[str, Any]) -> Credential:
    (cert_type,) = _CERT_TYPE(raw, "input")
    if cert_type == CERT_TYPE_CARD:
        return _CARD(raw, "input")
    if cert_type == CERT_TYPE_VOUCHER:
        return _VOUCHER(raw, "input")
    return UnacceptedCredential(cert_type=cert_type)


def _bill_line(feedetl_sn: str, med_list_codg: str, chrgitm_lv: str | None, otc: bool | None, rxno: str | None,
               cnt: int, pric: int, det_item_fee_sumamt: int, bilg_dr_codg: str, hosp_appr_flag: str | None,
               drug_trac_codg: list[str] | None, trdn_flag: str | None) -> BillLine:
    # SPEC 13's defaults for the optional v2 fields.
    return BillLine(feedetl_sn, med_list_codg, chrgitm_lv, otc, rxno, cnt, pric, det_item_fee_sumamt,
                    bilg_dr_codg, hosp_appr_flag or "0", tuple(drug_trac_codg or ()), trdn_flag or "0")


def _check_codes_once(lines: tuple[BillLine, ...]) -> None:
    """A whole-package code sent twice in one bill is a malformed bill (split packages may share)."""
    seen: set[str] = set()
    for index, line in enumerate(lines):
        if line.trdn_flag != "0":
            continue
        for code in line.drug_trac_codg:
            if code in seen:
                raise _fail(f"input.items[{index}].drug_trac_codg", f"code {code} appears twice among the "
                                                                      "bill's whole-package lines")
            seen.add(code)


def _bill_lines(items: list[Any]) -> tuple[BillLine, ...]:
    lines = []
    for index, item in enumerate(items):
        path = f"input.items[{index}]"
        if not isinstance(item, dict):
            raise _fail(path, "not a map")
        lines.append(_BILL_LINE(item, path))
    seen: set[str] = set()
    for index, line in enumerate(lines):
        if line.feedetl_sn in seen:
            raise _fail(f"input.items[{index}].feedetl_sn", "duplicate")
        seen.add(line.feedetl_sn)
    _check_codes_once(tuple(lines))
    return tuple(lines)


def _check_amounts(medfee_sumamt: int, lines: tuple[BillLine, ...]) -> None:
    for index, line in enumerate(lines):
        if line.det_item_fee_sumamt != line.cnt * line.pric:
            raise ProtocolError(
                ErrCode.AMOUNT_MISMATCH, f"input.items[{index}].det_item_fee_sumamt: not cnt x pric"
            )
    if medfee_sumamt != sum(line.det_item_fee_sumamt for line in lines):
        raise ProtocolError(ErrCode.AMOUNT_MISMATCH, "input.medfee_sumamt: not the sum of det_item_fee_sumamt")


def _settle(raw: dict[str, Any]) -> SettleInput:
    # The credential's fields come first, then the amounts' (SPEC section 7 lists them so).
    cert = _credential(raw)
    medfee_sumamt, items, acct_used_flag, acct_payer_psn_no = _SETTLE(raw, "input")
    lines = _bill_lines(items)
    _check_amounts(medfee_sumamt, lines)
    return SettleInput(cert=cert, medfee_sumamt=medfee_sumamt, items=lines, acct_used_flag=acct_used_flag or "0",
                       acct_payer_psn_no=acct_payer_psn_no)


_PARSERS: dict[str, Callable[[dict[str, Any]], TypedInput]] = {
    "9001": lambda raw: _SIGN_IN(raw, "input"),
    "9002": lambda raw: SignOutInput(),
    "1101": lambda raw: PersonInfoInput(cert=_credential(raw)),
    "2101": _settle,
    "2102": _settle,
    "2206": _settle,
    "2207": _settle,
    "2103": lambda raw: _CANCEL(raw, "input"),
    "2208": lambda raw: _CANCEL(raw, "input"),
    "2601": lambda raw: _REVERSAL(raw, "input"),
    "3201": lambda raw: _TOTALS(raw, "input"),
    "3202": lambda raw: _DETAIL(raw, "input"),
}
INFNOS = frozenset(_PARSERS)


def parse_input(infno: str, raw: Any) -> TypedInput:
    """Validate the raw input of `infno` and return its typed form.

    Args:
        infno: the envelope's infno.
        raw: the envelope's input map (or any value: a caller-built map is walked as a decoded one).
    Returns:
        One of the typed inputs (SignInInput ... DetailInput).
    Raises:
        ProtocolError(UNSUPPORTED_INFNO): infno is not one of SPEC section 7.
        ProtocolError(MALFORMED_INPUT): not a plain map, or a field missing, mistyped or out of
            range; msg names it.
        ProtocolError(AMOUNT_MISMATCH): det_item_fee_sumamt != cnt x pric, or medfee_sumamt != Σ.
    """
    parser = _parser(infno)
    if not isinstance(raw, dict):
        raise _fail("input", "not a map")
    return _parsed(parser, raw, first_fault(raw))


def parse_request_input(env: RequestEnvelope) -> TypedInput:
    """`parse_input(env.infno, env.input)`, taking the input's fault from the envelope's decoder.

    The decoder walked the whole body, input included, and kept what that walk found
    (`env.input_fault`), so the input is not walked a second time. Same answers, same raises.
    """
    return _parsed(_parser(env.infno), env.input, env.input_fault)


def _parser(infno: Any) -> Callable[[dict[str, Any]], TypedInput]:
    parser = _PARSERS.get(infno) if isinstance(infno, str) else None
    if parser is None:
        raise ProtocolError(ErrCode.UNSUPPORTED_INFNO, f"infno {infno!r} is not supported")
    return parser


def _parsed(parser: Callable[[dict[str, Any]], TypedInput], raw: dict[str, Any], fault: str | None) -> TypedInput:
    if fault is not None:
        raise _fail("input", fault)
    return parser(raw)
