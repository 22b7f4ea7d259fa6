"""parse_input: every rule of SPEC sections 2, 5 and 7, one broken field per case."""

from __future__ import annotations

from typing import Any

import pytest

import protocol
from protocol import ErrCode, ProtocolError
from protocol_builders import CARD, MSGID, bill_line, card_fields, settle_input, valid_input, voucher_token

MALFORMED = ErrCode.MALFORMED_INPUT
MISMATCH = ErrCode.AMOUNT_MISMATCH


def with_line(index: int, **changes: Any) -> dict[str, Any]:
    lines = [bill_line(0), bill_line(1), bill_line(2), bill_line(3)]
    lines[index].update(changes)
    return settle_input(lines)


def without(infno: str, field: str) -> dict[str, Any]:
    raw = valid_input(infno)
    del raw[field]
    return raw


def replaced(infno: str, **changes: Any) -> dict[str, Any]:
    raw = valid_input(infno)
    raw.update(changes)
    return raw


REJECTED = [
    # Money: ints only; bool, float, str, negative, above 10**10 all refused.
    ("bool pric", "2102", with_line(3, pric=True), MALFORMED, "input.items[3].pric"),
    ("float pric", "2102", with_line(3, pric=12.5), MALFORMED, "input.items[3].pric"),
    ("str pric", "2102", with_line(3, pric="1250"), MALFORMED, "input.items[3].pric"),
    ("negative pric", "2102", with_line(3, pric=-1), MALFORMED, "input.items[3].pric"),
    ("pric over cap", "2102", with_line(0, pric=10**10 + 1), MALFORMED, "input.items[0].pric"),
    ("det over cap", "2102", {**with_line(1, det_item_fee_sumamt=10**10 + 1), "medfee_sumamt": 0}, MALFORMED, "input.items[1].det_item_fee_sumamt"),
    ("bool det", "2102", with_line(1, det_item_fee_sumamt=False), MALFORMED, "input.items[1].det_item_fee_sumamt"),
    ("medfee float", "2102", replaced("2102", medfee_sumamt=25.0), MALFORMED, "input.medfee_sumamt"),
    ("medfee negative", "2102", replaced("2102", medfee_sumamt=-2500), MALFORMED, "input.medfee_sumamt"),
    ("medfee over cap", "2102", replaced("2102", medfee_sumamt=10**10 + 1), MALFORMED, "input.medfee_sumamt"),
    ("medfee missing", "2102", without("2102", "medfee_sumamt"), MALFORMED, "input.medfee_sumamt"),
    ("int over int64 anywhere", "2102", replaced("2102", extra=2**64 - 1), MALFORMED, "input"),
    # Lines: 1..200, maps, unique feedetl_sn, each field typed.
    ("no lines", "2102", settle_input([]), MALFORMED, "input.items"),
    ("201 lines", "2102", settle_input([bill_line(i) for i in range(201)]), MALFORMED, "input.items"),
    ("items not a list", "2102", replaced("2102", items={"0": bill_line()}), MALFORMED, "input.items"),
    ("line not a map", "2102", settle_input([bill_line(0), "L1"]), MALFORMED, "input.items[1]"),
    ("duplicate feedetl_sn", "2102", with_line(2, feedetl_sn="L000"), MALFORMED, "input.items[2].feedetl_sn"),
    ("feedetl_sn int", "2102", with_line(0, feedetl_sn=7), MALFORMED, "input.items[0].feedetl_sn"),
    ("feedetl_sn empty", "2102", with_line(0, feedetl_sn=""), MALFORMED, "input.items[0].feedetl_sn"),
    ("med_list_codg missing", "2102", with_line(1, med_list_codg=None), MALFORMED, "input.items[1].med_list_codg"),
    ("chrgitm_lv 04", "2102", with_line(1, chrgitm_lv="04"), MALFORMED, "input.items[1].chrgitm_lv"),
    ("chrgitm_lv int", "2102", with_line(1, chrgitm_lv=1), MALFORMED, "input.items[1].chrgitm_lv"),
    ("otc int", "2102", with_line(2, otc=1), MALFORMED, "input.items[2].otc"),
    ("otc str", "2102", with_line(2, otc="true"), MALFORMED, "input.items[2].otc"),
    ("rxno int", "2102", with_line(2, rxno=12), MALFORMED, "input.items[2].rxno"),
    ("cnt zero", "2102", with_line(3, cnt=0, det_item_fee_sumamt=0), MALFORMED, "input.items[3].cnt"),
    ("cnt bool", "2102", with_line(3, cnt=True), MALFORMED, "input.items[3].cnt"),
    ("cnt float", "2102", with_line(3, cnt=2.0), MALFORMED, "input.items[3].cnt"),
    ("bilg_dr_codg list", "2102", with_line(0, bilg_dr_codg=["DR"]), MALFORMED, "input.items[0].bilg_dr_codg"),
    # Amounts: cnt x pric per line, then the sum.
    ("det not cnt x pric", "2102", with_line(2, det_item_fee_sumamt=2499), MISMATCH, "input.items[2].det_item_fee_sumamt"),
    ("medfee not the sum", "2102", replaced("2102", medfee_sumamt=2501), MISMATCH, "input.medfee_sumamt"),
    ("sum over cap", "2206", {**settle_input([bill_line(i, cnt=1, pric=10**10, det_item_fee_sumamt=10**10) for i in range(2)]), "medfee_sumamt": 10**10}, MISMATCH, "input.medfee_sumamt"),
    # Credentials: shapes only.
    ("cert_type missing", "1101", without("1101", "mdtrt_cert_type"), MALFORMED, "input.mdtrt_cert_type"),
    ("cert_type int", "1101", replaced("1101", mdtrt_cert_type=3), MALFORMED, "input.mdtrt_cert_type"),
    ("voucher no not str", "1101", {"mdtrt_cert_type": "01", "mdtrt_cert_no": b"tok"}, MALFORMED, "input.mdtrt_cert_no"),
    ("voucher no missing", "2101", settle_input(cert={"mdtrt_cert_type": "01"}), MALFORMED, "input.mdtrt_cert_no"),
    ("card_no missing", "1101", without("1101", "mdtrt_cert_no"), MALFORMED, "input.mdtrt_cert_no"),
    ("card_no newline", "1101", replaced("1101", mdtrt_cert_no="C1\n"), MALFORMED, "input.mdtrt_cert_no"),
    ("card_sn newline", "1101", replaced("1101", card_sn="\nS1"), MALFORMED, "input.card_sn"),
    ("card_sn int", "1101", replaced("1101", card_sn=1), MALFORMED, "input.card_sn"),
    ("card psn_no missing", "1101", without("1101", "psn_no"), MALFORMED, "input.psn_no"),
    ("card insutype missing", "1101", without("1101", "insutype"), MALFORMED, "input.insutype"),
    ("card insuplc 5 digits", "1101", replaced("1101", insuplc_admdvs="51018"), MALFORMED, "input.insuplc_admdvs"),
    ("card insuplc letters", "1101", replaced("1101", insuplc_admdvs="51018x"), MALFORMED, "input.insuplc_admdvs"),
    ("card_mac 15 bytes", "1101", replaced("1101", card_mac=b"\x00" * 15), MALFORMED, "input.card_mac"),
    ("card_mac str", "1101", replaced("1101", card_mac="00" * 16), MALFORMED, "input.card_mac"),
    # 9001 / 2103 / 2208 / 2601.
    ("9001 opter missing", "9001", without("9001", "opter"), MALFORMED, "input.opter"),
    ("9001 pub 31 bytes", "9001", replaced("9001", x25519_pub=b"\x01" * 31), MALFORMED, "input.x25519_pub"),
    ("9001 pub low order", "9001", replaced("9001", x25519_pub=bytes(32)), MALFORMED, "input.x25519_pub"),
    ("9001 pub str", "9001", replaced("9001", x25519_pub="k" * 32), MALFORMED, "input.x25519_pub"),
    ("2103 setl_id missing", "2103", without("2103", "setl_id"), MALFORMED, "input.setl_id"),
    ("2208 psn_no int", "2208", replaced("2208", psn_no=5), MALFORMED, "input.psn_no"),
    ("2601 oinfno 2101", "2601", replaced("2601", oinfno="2101"), MALFORMED, "input.oinfno"),
    ("2601 oinfno 9001", "2601", replaced("2601", oinfno="9001"), MALFORMED, "input.oinfno"),
    ("2601 oinfno int", "2601", replaced("2601", oinfno=2102), MALFORMED, "input.oinfno"),
    ("2601 omsgid short", "2601", replaced("2601", omsgid=MSGID[:-1]), MALFORMED, "input.omsgid"),
    ("2601 omsgid bad date", "2601", replaced("2601", omsgid=MSGID[:12] + "20250230120000" + "0001"), MALFORMED, "input.omsgid"),
    # 3201 / 3202.
    ("3201 date Feb 30", "3201", replaced("3201", stmt_date="20250230"), MALFORMED, "input.stmt_date"),
    ("3201 date dashes", "3201", replaced("3201", stmt_date="2025-06-15"), MALFORMED, "input.stmt_date"),
    ("3201 date int", "3201", replaced("3201", stmt_date=20250615), MALFORMED, "input.stmt_date"),
    ("3201 date month 13", "3201", replaced("3201", stmt_date="20251301"), MALFORMED, "input.stmt_date"),
    ("3201 setl_cnt negative", "3201", replaced("3201", setl_cnt=-1), MALFORMED, "input.setl_cnt"),
    ("3201 fund bool", "3201", replaced("3201", fund_pay_sumamt=True), MALFORMED, "input.fund_pay_sumamt"),
    ("3201 cash missing", "3201", without("3201", "psn_cash_pay"), MALFORMED, "input.psn_cash_pay"),
    ("3202 limit 0", "3202", replaced("3202", limit=0), MALFORMED, "input.limit"),
    ("3202 limit 501", "3202", replaced("3202", limit=501), MALFORMED, "input.limit"),
    ("3202 limit missing", "3202", without("3202", "limit"), MALFORMED, "input.limit"),
    ("3202 limit str", "3202", replaced("3202", limit="10"), MALFORMED, "input.limit"),
    ("3202 after int", "3202", replaced("3202", after=5), MALFORMED, "input.after"),
    ("3202 bad date", "3202", replaced("3202", stmt_date="20250631"), MALFORMED, "input.stmt_date"),
]


@pytest.mark.parametrize(("infno", "raw", "code", "path"), [case[1:] for case in REJECTED], ids=[c[0] for c in REJECTED])
def test_rejected_inputs_name_the_field(infno: str, raw: dict[str, Any], code: ErrCode, path: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_input(infno, raw)
    assert caught.value.code is code
    assert caught.value.msg.startswith(path + ":"), caught.value.msg


@pytest.mark.parametrize("infno", ["9003", "2104", "", "21020", "X"])
def test_unknown_infno_is_unsupported(infno: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_input(infno, {})
    assert caught.value.code is ErrCode.UNSUPPORTED_INFNO


def test_input_not_a_map() -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_input("2102", [1, 2])
    assert caught.value.code is MALFORMED


def test_malformed_field_wins_over_amount_mismatch() -> None:
    raw = with_line(0, det_item_fee_sumamt=1)
    raw["items"][3]["pric"] = -5
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_input("2102", raw)
    assert caught.value.code is MALFORMED


@pytest.mark.parametrize("infno", sorted(protocol.INFNOS))
def test_every_valid_input_parses(infno: str) -> None:
    typed = protocol.parse_input(infno, valid_input(infno))
    assert type(typed).__name__.endswith("Input")


def test_settle_input_is_typed() -> None:
    raw = settle_input([bill_line(0, otc=False, rxno="RX1", chrgitm_lv="02"), bill_line(1, rxno="")])
    raw["unknown_extra"] = {"ignored": 1.5}
    typed = protocol.parse_input("2102", raw)
    assert isinstance(typed, protocol.SettleInput)
    assert typed.medfee_sumamt == 5000
    assert typed.items[0] == protocol.BillLine("L000", "XA01AAA0001", "02", False, "RX1", 2, 1250, 2500, "DR0001")
    assert typed.items[1].rxno is None, "an empty rxno counts as no prescription"
    assert isinstance(typed.cert, protocol.CardCredential)
    assert typed.cert.card_no == CARD["card_no"] and len(typed.cert.card_mac) == 16


def test_limits_are_inclusive() -> None:
    lines = [bill_line(i, cnt=1, pric=50, det_item_fee_sumamt=50) for i in range(200)]
    assert len(protocol.parse_input("2101", settle_input(lines)).items) == 200
    top = [bill_line(0, cnt=1, pric=10**10, det_item_fee_sumamt=10**10)]
    assert protocol.parse_input("2101", settle_input(top)).medfee_sumamt == 10**10
    assert protocol.parse_input("3202", replaced("3202", limit=500)).limit == 500
    assert protocol.parse_input("3202", replaced("3202", limit=1)).limit == 1
    zero = [bill_line(0, pric=0, det_item_fee_sumamt=0)]
    assert protocol.parse_input("2101", settle_input(zero)).medfee_sumamt == 0


@pytest.mark.parametrize(
    ("cert", "expected"),
    [
        ({"mdtrt_cert_type": "01", "mdtrt_cert_no": "tok"}, protocol.VoucherCredential("tok")),
        ({"mdtrt_cert_type": "02", "mdtrt_cert_no": "x"}, protocol.UnacceptedCredential("02")),
        ({"mdtrt_cert_type": ""}, protocol.UnacceptedCredential("")),
    ],
)
def test_credential_kinds(cert: dict[str, Any], expected: object) -> None:
    assert protocol.parse_input("1101", cert).cert == expected


def test_voucher_token_is_not_verified_by_the_parser() -> None:
    typed = protocol.parse_input("1101", {"mdtrt_cert_type": "01", "mdtrt_cert_no": "!!not-a-token"})
    assert typed.cert == protocol.VoucherCredential("!!not-a-token")
    assert protocol.parse_input("2207", settle_input(cert={"mdtrt_cert_type": "01", "mdtrt_cert_no": voucher_token()}))


def test_3202_after_is_optional() -> None:
    assert protocol.parse_input("3202", valid_input("3202")).after is None
    assert protocol.parse_input("3202", replaced("3202", after=None)).after is None
    assert protocol.parse_input("3202", replaced("3202", after="SETL-9")).after == "SETL-9"


def test_typed_inputs_are_frozen() -> None:
    typed = protocol.parse_input("2103", valid_input("2103"))
    with pytest.raises(AttributeError):
        typed.setl_id = "other"  # type: ignore[misc]
    assert not hasattr(typed, "__dict__"), "slotted"


def test_card_fields_for_1101_use_zero_amount() -> None:
    assert card_fields("1101", 0) == valid_input("1101")


# SPEC section 7's required fields per infno, written out here (not read from the parser's tables).
CARD_FIELDS = ["mdtrt_cert_type", "mdtrt_cert_no", "card_sn", "psn_no", "insutype", "insuplc_admdvs", "card_mac"]
REQUIRED_FIELDS = {
    "9001": ["opter", "x25519_pub"],
    "1101": CARD_FIELDS,
    "2102": [*CARD_FIELDS, "medfee_sumamt", "items"],
    "2103": ["setl_id", "psn_no"],
    "2601": ["omsgid", "oinfno"],
    "3201": ["stmt_date", "setl_cnt", "medfee_sumamt", "fund_pay_sumamt", "psn_cash_pay"],
    "3202": ["stmt_date", "limit"],
}
LINE_FIELDS = ["feedetl_sn", "med_list_codg", "chrgitm_lv", "otc", "cnt", "pric", "det_item_fee_sumamt", "bilg_dr_codg"]
# Optional since SPEC 13 (the catalogue decides them); still validated when sent.
V2_OPTIONAL_LINE_FIELDS = {"chrgitm_lv", "otc"}
REQUIRED_CASES = [(infno, field) for infno, fields in REQUIRED_FIELDS.items() for field in fields]


@pytest.mark.parametrize(("infno", "field"), REQUIRED_CASES, ids=[f"{i}-{f}" for i, f in REQUIRED_CASES])
def test_every_required_field_missing_nil_or_mistyped_is_named(infno: str, field: str) -> None:
    for value, why in ((None, "missing"), ([], None)):
        raw = replaced(infno, **{field: value})
        with pytest.raises(ProtocolError) as caught:
            protocol.parse_input(infno, raw)
        assert caught.value.code is MALFORMED
        assert caught.value.msg.startswith(f"input.{field}: " + (why or "")), caught.value.msg
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_input(infno, without(infno, field))
    assert caught.value.msg == f"input.{field}: missing"


@pytest.mark.parametrize("field", LINE_FIELDS)
def test_every_required_bill_line_field_missing_or_mistyped_is_named(field: str) -> None:
    for position in (0, 3):
        raw = with_line(position)
        raw["items"][position][field] = [1]
        with pytest.raises(ProtocolError) as caught:
            protocol.parse_input("2102", raw)
        assert caught.value.msg.startswith(f"input.items[{position}].{field}: "), caught.value.msg
        del raw["items"][position][field]
        if field in V2_OPTIONAL_LINE_FIELDS:
            assert getattr(protocol.parse_input("2102", raw).items[position], field) is None
            continue
        with pytest.raises(ProtocolError) as caught:
            protocol.parse_input("2102", raw)
        assert caught.value.msg == f"input.items[{position}].{field}: missing"
