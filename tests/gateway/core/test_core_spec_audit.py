"""Conformance of a real Core to SPEC sections 2-8, rule by rule, for rules no other core test pins.

Requests are built as a terminal builds them (TerminalSession) and then altered field by field, so
that each test breaks exactly the rule it names, or exactly the two rules whose precedence it checks.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core_world import ADMDVS, C1, P1, P2, T0_MS, World, card, line
from gateway.core.clock import local_stamp
from protocol import (
    REQ_DOMAIN, RESP_DOMAIN, ErrCode, Frame, decode_frame, decode_response_envelope, encode_frame, gateway_kid,
    limits, mac, public_raw, sign, verify_sig,
)

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
ERROR_KEYS = {"infcode", "err_code", "err_msg", "inf_refmsgid", "respond_time", "warnings"}


def answer(world: World, data: bytes, now_ms: int = T0_MS):
    result = world.core.handle_tx(data, now_ms)
    world.keep(result)
    return result.http_status, decode_response_envelope(decode_frame(result.response).body)


def crafted(world: World, term, infno: str, input_: dict[str, Any], now_ms: int = T0_MS, *,
            tag: bytes | None = None, key_id: str | None = None, auth: str = "mac", drop: tuple[str, ...] = (),
            **override: Any) -> bytes:
    """A request frame of `term`'s session with envelope fields overridden or dropped, re-MACed."""
    mid = override.pop("msgid", None) or world.next_msgid(term.fixmedins_code, now_ms)
    body = msgpack.unpackb(decode_frame(term.request_frame(infno, mid, input_, now_ms)).body, raw=False)
    body.update(override)
    for field in drop:
        body.pop(field, None)
    raw = msgpack.packb(body, use_bin_type=True)
    tag = tag if tag is not None else mac(term.session_key, REQ_DOMAIN, raw)
    return encode_frame(Frame(1, auth, key_id if key_id is not None else term.sign_no, raw, tag))


def _ok(env) -> dict[str, Any]:
    assert env.infcode == 0, (env.err_code, env.err_msg)
    return env.output


# -- section 8: the error table ---------------------------------------------------------------------

SPEC_TABLE = {
    **{c: (-2, 400) for c in ("MALFORMED_FRAME", "MALFORMED_ENVELOPE")},
    "BODY_TOO_LARGE": (-2, 413), "UNSUPPORTED_MEDIA_TYPE": (-2, 415),
    **{c: (-2, 401) for c in ("UNKNOWN_TERMINAL", "BAD_SIGNATURE", "BAD_MAC", "SESSION_UNKNOWN",
                              "SESSION_EXPIRED", "SESSION_MISMATCH", "TERMINAL_REVOKED")},
    "OVERLOADED": (-1, 429), "DRAINING": (-1, 503), "INTERNAL": (-1, 500),
    **{c: (-2, 200) for c in (
        "MALFORMED_INPUT", "AMOUNT_MISMATCH", "UNSUPPORTED_INFNO", "STALE_REQUEST", "MSGID_REUSED",
        "ORIGINAL_REVERSED", "INSTITUTION_UNKNOWN", "INSTITUTION_SUSPENDED", "OPERATOR_SUSPENDED",
        "WRONG_INSTITUTION_KIND", "CREDENTIAL_NOT_ACCEPTED", "VOUCHER_INVALID", "VOUCHER_EXPIRED",
        "VOUCHER_WRONG_INSTITUTION", "VOUCHER_ALREADY_USED", "CARD_INVALID", "CARD_BLOCKED",
        "PERSON_INELIGIBLE", "CROSS_PROVINCE_NOT_FILED", "SETTLEMENT_NOT_FOUND", "ALREADY_CANCELLED",
        "CANCEL_WINDOW_CLOSED")},
}


def test_error_codes_are_exactly_the_spec_table() -> None:
    assert {c.wire: (c.infcode, c.http_status) for c in ErrCode} == SPEC_TABLE


# -- sections 4 and 5: every answer is a signed Frame carrying the required keys ---------------------

def test_an_error_answer_is_signed_and_carries_every_required_key(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    result = world.core.handle_tx(crafted(world, t, "3201", {}, msgid=mid, inf_time=T0_MS - DAY_MS - 1), T0_MS)
    frame = decode_frame(result.response)
    public = Ed25519PublicKey.from_public_bytes(public_raw(world.gateway_key.public_key()))
    assert (frame.auth, frame.key_id) == ("sig", gateway_kid(public_raw(world.gateway_key.public_key())))
    assert verify_sig(public, RESP_DOMAIN, frame.body, frame.tag)
    body = msgpack.unpackb(frame.body, raw=False)
    assert ERROR_KEYS <= set(body) and "output" not in body
    assert (body["infcode"], body["err_code"], body["msgid"], body["warnings"]) == (-2, "STALE_REQUEST", mid, [])
    assert isinstance(body["err_msg"], str) and body["err_msg"]
    assert body["respond_time"] == T0_MS
    refid = body["inf_refmsgid"]
    assert len(refid) == 30 and refid[:6] == ADMDVS and refid[6:20] == local_stamp(T0_MS) and refid[20:].isdigit()


def test_a_success_answer_carries_every_required_key_and_an_empty_warning_list(world: World) -> None:
    t = world.sign_in()
    result, _ = world.send(t, "3201", {"stmt_date": "20240315", "setl_cnt": 0, "medfee_sumamt": 0,
                                       "fund_pay_sumamt": 0, "psn_cash_pay": 0})
    body = msgpack.unpackb(decode_frame(result.response).body, raw=False)
    assert ERROR_KEYS | {"msgid", "output"} <= set(body)
    assert (body["infcode"], body["err_code"], body["warnings"]) == (0, "", [])


def test_inf_refmsgids_are_never_reused_across_answers(world: World) -> None:
    t = world.sign_in()
    refids = set()
    for _ in range(5):
        refids.add(world.send(t, "3201", {})[1].inf_refmsgid)
        refids.add(answer(world, b"\x00")[1].inf_refmsgid)
    assert len(refids) == 10


# -- section 4: frames -----------------------------------------------------------------------------

@pytest.mark.parametrize("auth, tag_len", [("rsa", 32), ("MAC", 32), ("mac", 31), ("mac", 64), ("sig", 32),
                                           ("sig", 63)])
def test_unknown_auth_word_or_wrong_tag_length_is_malformed_frame(world: World, auth: str, tag_len: int) -> None:
    t = world.sign_in()
    data = crafted(world, t, "3201", {}, auth=auth, tag=b"\x00" * tag_len)
    status, env = answer(world, data)
    assert (status, env.err_code, env.infcode, env.msgid) == (400, "MALFORMED_FRAME", -2, None)


def test_integer_the_frame_cannot_hold_is_malformed_frame(world: World) -> None:
    # A uint64 beyond int64 in the Frame's version slot: the outer Frame holds no such integer.
    data = b"\x95\xcf" + (2**64 - 1).to_bytes(8, "big") + msgpack.packb("mac") + msgpack.packb("k") + \
        msgpack.packb(b"x") + msgpack.packb(b"\x00" * 32)
    assert answer(world, data)[:1] == (400,)
    assert answer(world, data)[1].err_code == "MALFORMED_FRAME"


# -- section 5: envelope shape ---------------------------------------------------------------------

@pytest.mark.parametrize("override, drop", [
    ({"msgid": P2 + "202403151000000001"}, ()),                 # prefix is not fixmedins_code
    ({"msgid": P1 + "202402301000000001"}, ()),                 # 30 February
    ({"msgid": P1 + "202403152400000001"}, ()),                 # hour 24
    ({"msgid": P1 + "20240315100000001"}, ()),                  # 29 chars
    ({"msgid": P1 + "2024031510000000A1"}, ()),                 # serial not digits
    ({"opter_type": "4"}, ()),
    ({"opter_type": 1}, ()),
    ({"inf_time": str(T0_MS)}, ()),
    ({"inf_time": float(T0_MS)}, ()),
    ({"inf_time": 2**64 - 1}, ()),                              # decodes (uint64) but is outside int64
    ({"input": []}, ()),
    ({"fixmedins_code": P1 + "X", "msgid": P1 + "X" + "20240315100000001"}, ()),
    ({}, ("sign_no",)),
    ({}, ("opter",)),
    ({}, ("input",)),
    ({}, ("mdtrtarea_admvs",)),
])
def test_missing_or_mistyped_envelope_field_is_malformed_envelope(world: World, override, drop) -> None:
    t = world.sign_in()
    status, env = answer(world, crafted(world, t, "3201", {}, drop=drop, **override))
    assert (status, env.err_code, env.infcode) == (400, "MALFORMED_ENVELOPE", -2)


def test_envelope_shape_is_checked_before_the_institution_and_the_mac(world: World) -> None:
    t = world.sign_in()
    bad_shape = crafted(world, t, "3201", {}, tag=b"\x00" * 32, fixmedins_code="Z51018200009",
                        msgid="Z51018200009202403151000000001", opter_type="9")
    assert answer(world, bad_shape)[1].err_code == "MALFORMED_ENVELOPE"


def test_unknown_institution_is_answered_before_authentication(world: World) -> None:
    t = world.sign_in()
    data = crafted(world, t, "3201", {}, tag=b"\x00" * 32, fixmedins_code="Z51018200009",
                   msgid="Z51018200009202403151000000001", inf_time=0)
    status, env = answer(world, data)
    assert (status, env.err_code, env.msgid) == (200, "INSTITUTION_UNKNOWN", "Z51018200009202403151000000001")


def test_fixmedins_code_of_another_registered_institution_is_session_mismatch(world: World) -> None:
    t = world.sign_in()
    status, env = answer(world, crafted(world, t, "3201", {}, fixmedins_code=P2, msgid=P2 + "202403151000000001"))
    assert (status, env.err_code) == (401, "SESSION_MISMATCH")


# -- section 4: authentication, and precedence inside it ------------------------------------------

def test_sign_in_of_an_unenrolled_terminal_is_unknown_terminal(world: World) -> None:
    ghost = world.terminal("T1")
    ghost.dev_no = "NOPE"
    status, env = answer(world, ghost.signin_frame(world.next_msgid(P1, T0_MS), T0_MS))
    assert (status, env.err_code) == (401, "UNKNOWN_TERMINAL")


def test_sign_in_answer_fields_and_session_lifetime(world: World) -> None:
    term = world.terminal("T1")
    result = world.core.handle_tx(term.signin_frame(world.next_msgid(P1, T0_MS), T0_MS), T0_MS)
    out = _ok(term.on_signin_answer(result.response))
    assert out["sign_time"] == T0_MS and out["session_expires"] == T0_MS + 12 * HOUR_MS
    assert isinstance(out["x25519_pub"], bytes) and len(out["x25519_pub"]) == 32
    assert isinstance(out["sign_no"], str) and out["sign_no"] == term.sign_no
    assert world.send(term, "3201", {}, now_ms=T0_MS + 12 * HOUR_MS - 1)[1].err_code != "SESSION_EXPIRED"


def test_a_new_sign_in_keeps_older_sessions_and_sign_out_names_its_session(world: World) -> None:
    first = world.sign_in()
    second = world.sign_in()
    assert first.sign_no != second.sign_no
    out = _ok(world.send(first, "9002", {})[1])
    assert out == {"sign_no": first.sign_no, "sign_out_time": T0_MS}
    assert world.send(second, "3201", {})[1].err_code != "SESSION_UNKNOWN"
    status, env = answer(world, crafted(world, first, "9002", {}))
    assert (status, env.err_code) == (401, "SESSION_UNKNOWN")


def test_ninth_session_evicts_only_the_oldest(world: World) -> None:
    sessions = [world.sign_in() for _ in range(9)]
    assert world.send(sessions[0], "3201", {})[1].err_code == "SESSION_UNKNOWN"
    assert world.send(sessions[1], "3201", {})[1].err_code == "MALFORMED_INPUT"   # authenticated


def test_session_is_checked_before_the_mac(world: World) -> None:
    t = world.sign_in()
    expired_ms = T0_MS + 12 * HOUR_MS
    data = crafted(world, t, "3201", {}, expired_ms, tag=b"\x00" * 32)
    assert answer(world, data, expired_ms)[1].err_code == "SESSION_EXPIRED"


def test_mac_is_checked_before_session_mismatch(world: World) -> None:
    t = world.sign_in()
    data = crafted(world, t, "3201", {}, tag=b"\x00" * 32, dev_no="T5")
    assert answer(world, data)[1].err_code == "BAD_MAC"


def test_unknown_session_is_checked_before_sign_no_mismatch(world: World) -> None:
    # SPEC 5: authentication runs terminal, signature, session, MAC, mismatch, revoked; sign_no vs
    # key_id is a SESSION_MISMATCH, so an unknown session named by the frame answers first.
    t = world.sign_in()
    data = crafted(world, t, "3201", {}, key_id="f" * 32, sign_no="e" * 32)
    assert answer(world, data)[1].err_code == "SESSION_UNKNOWN"


def test_bad_mac_is_checked_before_sign_no_mismatch(world: World) -> None:
    t = world.sign_in()
    data = crafted(world, t, "3201", {}, tag=b"\x00" * 32, sign_no="e" * 32)
    assert answer(world, data)[1].err_code == "BAD_MAC"


def test_mismatch_is_checked_before_revocation(world: World) -> None:
    t = world.sign_in("T5")
    world.core.admin_apply({"kind": "terminal.revoke", "dev_no": "T5"}, T0_MS)
    assert answer(world, crafted(world, t, "3201", {}, opter="OTHER"))[1].err_code == "SESSION_MISMATCH"
    assert answer(world, crafted(world, t, "9002", {}))[1].err_code == "TERMINAL_REVOKED"


def test_authentication_is_checked_before_freshness(world: World) -> None:
    t = world.sign_in()
    stale_ms = T0_MS - DAY_MS - 1
    assert answer(world, crafted(world, t, "3201", {}, tag=b"\x00" * 32, inf_time=stale_ms))[1].err_code == "BAD_MAC"
    signer = world.terminal("T1")
    frame = decode_frame(signer.signin_frame(world.next_msgid(P1, stale_ms), stale_ms))
    forged = encode_frame(Frame(1, "sig", frame.key_id, frame.body, b"\x01" * 64))
    assert answer(world, forged)[1].err_code == "BAD_SIGNATURE"
    assert answer(world, signer.signin_frame(world.next_msgid(P1, stale_ms), stale_ms))[1].err_code == \
        "STALE_REQUEST"


# -- section 5: freshness edges --------------------------------------------------------------------

@pytest.mark.parametrize("offset_ms, code", [(-DAY_MS, "MALFORMED_INPUT"), (300_000, "MALFORMED_INPUT"),
                                             (-DAY_MS - 1, "STALE_REQUEST"), (300_001, "STALE_REQUEST")])
def test_freshness_window_is_inclusive(world: World, offset_ms: int, code: str) -> None:
    t = world.sign_in()
    env = answer(world, crafted(world, t, "3201", {}, inf_time=T0_MS + offset_ms))[1]
    assert env.err_code == code   # MALFORMED_INPUT: fresh, and then refused for its empty input


# -- section 6: idempotency ------------------------------------------------------------------------

def _settle_frame(world: World, term, mid: str, fee_fen: int = 1000, infno: str = "2102",
                  who: dict[str, str] | None = None, now_ms: int = T0_MS) -> bytes:
    fields = world.card_fields(term, mid, infno, fee_fen, who or card())
    return term.request_frame(infno, mid, {**fields, "medfee_sumamt": fee_fen, "items": [line("1", fee_fen)]},
                              now_ms)


def test_replay_through_another_terminal_and_session_is_byte_for_byte(world: World) -> None:
    t1, t5 = world.sign_in("T1"), world.sign_in("T5")
    mid = world.next_msgid(P1, T0_MS)
    first = world.core.handle_tx(_settle_frame(world, t1, mid), T0_MS)
    world.keep(first)
    again = world.core.handle_tx(_settle_frame(world, t5, mid, now_ms=T0_MS + 60_000), T0_MS + 60_000)
    assert again.response == first.response and again.record is None


def test_replay_answers_before_operator_and_institution_suspension(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    first = world.core.handle_tx(_settle_frame(world, t, mid), T0_MS)
    world.keep(first)
    world.core.admin_apply({"kind": "operator.suspend", "operator": "OP1"}, T0_MS)
    world.core.admin_apply({"kind": "institution.suspend", "institution": P1}, T0_MS)
    assert world.core.handle_tx(_settle_frame(world, t, mid), T0_MS).response == first.response
    reused = world.core.handle_tx(_settle_frame(world, t, mid, fee_fen=2000), T0_MS)
    assert decode_response_envelope(decode_frame(reused.response).body).err_code == "MSGID_REUSED"


def test_same_msgid_under_another_infno_is_msgid_reused(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    info = _ok(world.settle(t, [line("1", 1000)], msgid_=mid)[1])["setlinfo"]
    env = world.send(t, "2103", {"setl_id": info["setl_id"], "psn_no": "PSN1"}, msgid_=mid)[1]
    assert (env.err_code, env.infcode) == ("MSGID_REUSED", -2)


def test_a_rejected_msgid_is_evaluated_afresh(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    wrong_mac = world.card_fields(t, mid, "2102", 999, card())
    assert world.settle(t, [line("1", 1000)], msgid_=mid, cert=wrong_mac)[1].err_code == "CARD_INVALID"
    assert _ok(world.settle(t, [line("1", 2000)], msgid_=mid)[1])["setlinfo"]["fund_pay_sumamt"] == 2000


def test_pre_settle_and_queries_are_not_recorded(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    assert world.settle(t, [line("1", 1000)], infno="2101", msgid_=mid)[1].infcode == 0
    again = world.settle(t, [line("1", 3000)], infno="2101", msgid_=mid)[1]
    assert _ok(again)["setlinfo"]["medfee_sumamt"] == 3000
    assert _ok(world.settle(t, [line("1", 500)], msgid_=mid)[1])["setlinfo"]["fund_pay_sumamt"] == 500


def test_cancel_and_reversal_replays_are_byte_for_byte_and_change_nothing(world: World) -> None:
    t = world.sign_in()
    setl_mid = world.next_msgid(P1, T0_MS)
    info = _ok(world.settle(t, [line("1", 1000)], msgid_=setl_mid)[1])["setlinfo"]
    cancel_mid = world.next_msgid(P1, T0_MS)
    cancel_input = {"setl_id": info["setl_id"], "psn_no": "PSN1"}
    first, _ = world.send(t, "2103", cancel_input, msgid_=cancel_mid)
    snap = world.core.snapshot()
    assert world.send(t, "2103", cancel_input, msgid_=cancel_mid)[0].response == first.response
    assert world.send(t, "2103", {**cancel_input, "psn_no": "PSN2"}, msgid_=cancel_mid)[1].err_code == "MSGID_REUSED"
    rev_mid = world.next_msgid(P1, T0_MS)
    rev, _ = world.send(t, "2601", {"omsgid": cancel_mid, "oinfno": "2103"}, msgid_=rev_mid)
    snap = world.core.snapshot()
    assert world.send(t, "2601", {"omsgid": cancel_mid, "oinfno": "2103"}, msgid_=rev_mid)[0].response == rev.response
    assert world.core.snapshot()["ledger"] == snap["ledger"]


@pytest.mark.parametrize("infno, input_", [("1101", {}), ("9002", {}), ("2101", {})])
def test_any_request_carrying_a_reversed_msgid_is_original_reversed(world: World, infno, input_) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    assert _ok(world.send(t, "2601", {"omsgid": mid, "oinfno": "2102"})[1])["original_found"] is False
    assert world.send(t, infno, input_, msgid_=mid)[1].err_code == "ORIGINAL_REVERSED"


def test_tombstone_outlives_the_freshness_window(tmp_path) -> None:
    world = World(tmp_path, session_ttl_s=10**7)
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    world.send(t, "2601", {"omsgid": mid, "oinfno": "2102"})
    late_ms = T0_MS + 24 * HOUR_MS
    # Sent 24 h after the reversal, with inf_time at the oldest fresh instant.
    data = _settle_frame(world, t, mid, now_ms=T0_MS)
    assert answer(world, data, late_ms)[1].err_code == "ORIGINAL_REVERSED"


# -- section 2: money -------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("pric", True), ("pric", -1), ("pric", "100"), ("pric", 100.0), ("pric", 10**10 + 1),
    ("det_item_fee_sumamt", False), ("det_item_fee_sumamt", -100), ("cnt", 0), ("cnt", True),
    ("chrgitm_lv", "04"), ("otc", 1), ("feedetl_sn", 7), ("det_item_fee_sumamt", 2**64 - 1),
])
def test_bad_line_values_are_malformed_input(world: World, field: str, value: Any) -> None:
    t = world.sign_in()
    env = world.settle(t, [{**line("1", 100), field: value}])[1]
    assert (env.err_code, env.infcode) == ("MALFORMED_INPUT", -2)


def test_amount_of_exactly_ten_to_the_ten_fen_is_accepted(world: World) -> None:
    t = world.sign_in("T3")
    info = _ok(world.settle(t, [line("1", 10**10, otc=False)], infno="2206")[1])["setlinfo"]
    assert info["medfee_sumamt"] == 10**10 and info["fund_pay_sumamt"] == 500_000


@pytest.mark.parametrize("medfee", [True, -1, 1.0, "100", 10**10 + 1])
def test_bad_medfee_sumamt_is_malformed_input(world: World, medfee: Any) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    fields = world.card_fields(t, mid, "2102", 100, card())
    env = world.send(t, "2102", {**fields, "medfee_sumamt": medfee, "items": [line("1", 100)]}, msgid_=mid)[1]
    assert env.err_code == "MALFORMED_INPUT"


@pytest.mark.parametrize("items", [[], [line(str(i), 1) for i in range(201)], [line("1", 1), line("1", 2)]])
def test_bill_line_count_and_unique_serials(world: World, items) -> None:
    t = world.sign_in()
    assert world.settle(t, items)[1].err_code == "MALFORMED_INPUT"


def test_two_hundred_lines_are_accepted(world: World) -> None:
    t = world.sign_in()
    assert world.settle(t, [line(str(i), 1) for i in range(200)])[1].infcode == 0


def test_medfee_not_the_sum_of_lines_is_amount_mismatch(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    fields = world.card_fields(t, mid, "2102", 101, card())
    env = world.send(t, "2102", {**fields, "medfee_sumamt": 101, "items": [line("1", 100)]}, msgid_=mid)[1]
    assert env.err_code == "AMOUNT_MISMATCH"


@pytest.mark.parametrize("input_", [
    {"stmt_date": "20240315", "setl_cnt": 0, "medfee_sumamt": 1.5, "fund_pay_sumamt": 0, "psn_cash_pay": 0},
    {"stmt_date": "20240315", "setl_cnt": 0, "medfee_sumamt": 0, "fund_pay_sumamt": -1, "psn_cash_pay": 0},
    {"stmt_date": "20240230", "setl_cnt": 0, "medfee_sumamt": 0, "fund_pay_sumamt": 0, "psn_cash_pay": 0},
])
def test_bad_totals_input_is_malformed_input(world: World, input_) -> None:
    t = world.sign_in()
    assert world.send(t, "3201", input_)[1].err_code == "MALFORMED_INPUT"


@pytest.mark.parametrize("input_", [{"stmt_date": "20240315", "limit": 0}, {"stmt_date": "20240315", "limit": 501},
                                    {"stmt_date": "2024-03-15", "limit": 10}, {"stmt_date": "20241315", "limit": 10}])
def test_bad_detail_input_is_malformed_input(world: World, input_) -> None:
    t = world.sign_in()
    assert world.send(t, "3202", input_)[1].err_code == "MALFORMED_INPUT"


# -- section 7: settlement arithmetic -----------------------------------------------------------------

def test_self_pay_first_rounds_up_and_fund_rounds_down(world: World) -> None:
    t = world.sign_in()
    env = world.settle(t, [line("1", 1001, lv="02", otc=False, rxno="R")])[1]
    info, cut = _ok(env)["setlinfo"], env.output["detlcutinfo"][0]
    # preselfpay = ceil(1001 * 100 / 1000) = 101; inscp = 900; rx_pay = floor(900 * 700 / 1000) = 630.
    assert (cut["preselfpay_amt"], cut["inscp_scp_amt"], cut["fulamt_ownpay_amt"], cut["cut_reason"]) == \
        (101, 900, 0, "")
    assert (info["rx_pay"], info["psn_cash_pay"]) == (630, 371)
    odd = _ok(world.settle(t, [line("1", 999, otc=False, rxno="R")], who=card("P3", insutype="390"))[1])
    assert odd["setlinfo"]["rx_pay"] == 499   # floor(999 * 500 / 1000)


def test_settlement_output_layout(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    env = world.settle(t, [line("1", 1000), line("2", 500, lv="03")], msgid_=mid)[1]
    info = _ok(env)["setlinfo"]
    assert {"setl_id", "mdtrt_id", "psn_no", "insutype", "insuplc_admdvs", "setl_time", "medfee_sumamt",
            "fulamt_ownpay_amt", "preselfpay_amt", "inscp_scp_amt", "fund_pay_sumamt", "otc_pay", "rx_pay",
            "acct_pay", "psn_cash_pay", "crt_payb_lmt_amt", "person_day_remaining",
            "institution_month_remaining", "bound_by", "medins_setl_id"} <= set(info)
    assert info["medins_setl_id"] == mid and info["acct_pay"] == 0 and info["setl_time"] == T0_MS
    assert (info["fulamt_ownpay_amt"], info["inscp_scp_amt"], info["psn_cash_pay"]) == (500, 1000, 500)
    assert env.output["detlcutinfo"][1] == {"feedetl_sn": "2", "fulamt_ownpay_amt": 500, "preselfpay_amt": 0,
                                            "inscp_scp_amt": 0, "cut_reason": ""}
    pre = _ok(world.settle(t, [line("1", 1000)], infno="2101")[1])["setlinfo"]
    assert "setl_id" not in pre and "mdtrt_id" not in pre


@pytest.mark.parametrize("dev_no, grade, allowance_fen", [("T1", None, 12000), ("T2", None, 6000),
                                                          ("T2", "B", 9000), ("T2", "D", 6000), ("T2", "E", 6000)])
def test_allowance_follows_the_grade(world: World, dev_no: str, grade: str | None, allowance_fen: int) -> None:
    if grade is not None:
        world.core.admin_apply({"kind": "institution.grade", "institution": P2, "grade": grade}, T0_MS)
    t = world.sign_in(dev_no)
    mid = world.next_msgid(t.fixmedins_code, T0_MS)
    out = _ok(world.send(t, "1101", world.card_fields(t, mid, "1101", 0, card("Q1")), msgid_=mid)[1])
    assert (out["otc_allowance_day"], out["otc_used_day"], out["otc_remaining_day"]) == (allowance_fen, 0,
                                                                                         allowance_fen)
    assert out["cross_province"] is False


def test_allowance_exactly_used_is_not_bound_but_warns_reached(world: World) -> None:
    t = world.sign_in()
    env = world.settle(t, [line("1", 12000)])[1]
    info = _ok(env)["setlinfo"]
    assert (info["otc_pay"], info["bound_by"], info["person_day_remaining"]) == (12000, [], 0)
    assert env.warnings == ("PERSON_DAY_LIMIT_REACHED",)


def test_day_warning_thresholds_and_warning_when_the_bill_adds_nothing(world: World) -> None:
    t = world.sign_in()
    assert world.settle(t, [line("1", 9599)], infno="2101")[1].warnings == ()
    _ok(world.settle(t, [line("1", 12000)])[1])
    env = world.settle(t, [line("1", 100, lv="03")])[1]
    assert _ok(env)["setlinfo"]["fund_pay_sumamt"] == 0 and env.warnings == ("PERSON_DAY_LIMIT_REACHED",)


def test_month_near_cap_warning_at_ninety_percent(world: World) -> None:
    t = world.sign_in("T2")   # P2: cap 20 000 fen, grade C (6 000 a day)
    for who in ("M1", "M2"):
        _ok(world.settle(t, [line("1", 6000)], who=card(who))[1])
    below = world.settle(t, [line("1", 5999)], who=card("M3"), infno="2101")[1]
    assert below.warnings == ("PERSON_DAY_NEAR_LIMIT",)   # month: 17 999 of 20 000 is under 90 %
    env = world.settle(t, [line("1", 6000)], who=card("M3"), infno="2101")[1]
    assert env.warnings == ("PERSON_DAY_LIMIT_REACHED", "INSTITUTION_MONTH_NEAR_CAP")
    assert env.output["setlinfo"]["institution_month_remaining"] == 2000


def test_clinic_bound_by_month_and_no_day_warnings(tmp_path) -> None:
    world = World(tmp_path)
    world.core.admin_apply({"kind": "institution.monthly_cap", "institution": C1, "monthly_cap_fen": 1000}, T0_MS)
    t = world.sign_in("T3")
    env = world.settle(t, [line("1", 20000)], infno="2207")[1]
    info = _ok(env)["setlinfo"]
    assert (info["fund_pay_sumamt"], info["otc_pay"], info["rx_pay"], info["bound_by"]) == \
        (1000, 0, 1000, ["institution_month"])
    assert env.warnings == ("INSTITUTION_MONTH_CAP_REACHED",)


def test_doctor_suspended_cut_applies_at_clinics_too(world: World) -> None:
    world.core.admin_apply({"kind": "operator.enrol", "code": "DRC", "institution": C1}, T0_MS)
    world.core.admin_apply({"kind": "operator.suspend", "operator": "DRC"}, T0_MS)
    t = world.sign_in("T3")
    env = world.settle(t, [line("1", 1000, otc=False, dr="DRC"), line("2", 1000, otc=False)], infno="2206")[1]
    cuts = [c["cut_reason"] for c in _ok(env)["detlcutinfo"]]
    assert cuts == ["DOCTOR_SUSPENDED", ""] and env.warnings == ("DOCTOR_SUSPENDED",)


@pytest.mark.parametrize("dev_no, infno", [("T3", "2102"), ("T3", "2101"), ("T1", "2206"), ("T1", "2207"),
                                           ("T1", "2208")])
def test_settlement_infnos_follow_the_institution_kind(world: World, dev_no: str, infno: str) -> None:
    t = world.sign_in(dev_no)
    assert world.settle(t, [line("1", 100)], infno=infno)[1].err_code == "WRONG_INSTITUTION_KIND"


def test_suspended_clinic_may_sign_in_and_reconcile_but_not_settle(world: World) -> None:
    world.core.admin_apply({"kind": "institution.suspend", "institution": C1}, T0_MS)
    t = world.sign_in("T3")
    assert world.send(t, "3202", {"stmt_date": "20240315", "limit": 5})[1].infcode == 0
    for infno in ("2206", "2207"):
        assert world.settle(t, [line("1", 100)], infno=infno)[1].err_code == "INSTITUTION_SUSPENDED"


def test_kind_is_checked_before_suspension(world: World) -> None:
    world.core.admin_apply({"kind": "institution.suspend", "institution": P1}, T0_MS)
    t = world.sign_in()
    assert world.settle(t, [line("1", 100)], infno="2207")[1].err_code == "WRONG_INSTITUTION_KIND"


def test_person_blocked_is_checked_before_filing(world: World) -> None:
    t = world.sign_in()
    assert world.settle(t, [line("1", 100)], who=card("PBLK", admdvs="440100"))[1].err_code == "PERSON_INELIGIBLE"


def test_cross_province_applies_to_person_info(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    unfiled = world.card_fields(t, mid, "1101", 0, card("Y1", admdvs="440100"))
    assert world.send(t, "1101", unfiled, msgid_=mid)[1].err_code == "CROSS_PROVINCE_NOT_FILED"
    mid = world.next_msgid(P1, T0_MS)
    filed = world.card_fields(t, mid, "1101", 0, card("X001", admdvs="440100"))
    assert _ok(world.send(t, "1101", filed, msgid_=mid)[1])["cross_province"] is True


# -- section 7: vouchers ----------------------------------------------------------------------------

def test_queries_and_pre_settlements_do_not_use_up_a_voucher(world: World) -> None:
    t = world.sign_in()
    token = world.voucher()
    assert _ok(world.send(t, "1101", token)[1])["psn_no"] == "PSN9"
    assert world.settle(t, [line("1", 100)], infno="2101", cert=token)[1].infcode == 0
    assert world.settle(t, [line("1", 100)], cert=token)[1].infcode == 0
    assert world.settle(t, [line("1", 100)], cert=token)[1].err_code == "VOUCHER_ALREADY_USED"


# -- section 7: cancel, reversal, reconciliation -----------------------------------------------------

def test_cancel_output_is_flat_and_negated(world: World) -> None:
    t = world.sign_in()
    info = _ok(world.settle(t, [line("1", 1000), line("2", 2000, otc=False, rxno="R")])[1])["setlinfo"]
    out = _ok(world.send(t, "2103", {"setl_id": info["setl_id"], "psn_no": "PSN1"}, now_ms=T0_MS + 1000)[1])
    assert out == {"setl_id": info["setl_id"], "cancel_time": T0_MS + 1000, "medfee_sumamt": -3000,
                   "fund_pay_sumamt": -info["fund_pay_sumamt"], "psn_cash_pay": -info["psn_cash_pay"],
                   "otc_pay": -1000, "rx_pay": -1400}


def test_only_the_settling_institution_may_cancel(world: World) -> None:
    t1, t2 = world.sign_in("T1"), world.sign_in("T2")
    info = _ok(world.settle(t1, [line("1", 1000)])[1])["setlinfo"]
    assert world.send(t2, "2103", {"setl_id": info["setl_id"], "psn_no": "PSN1"})[1].err_code == \
        "SETTLEMENT_NOT_FOUND"


def test_reversal_input_rules(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    _ok(world.settle(t, [line("1", 1000)], msgid_=mid)[1])
    for oinfno in ("2101", "1101", "2601", "9001"):
        assert world.send(t, "2601", {"omsgid": mid, "oinfno": oinfno})[1].err_code == "MALFORMED_INPUT"
    assert world.send(t, "2601", {"omsgid": mid, "oinfno": "2103"})[1].err_code == "SETTLEMENT_NOT_FOUND"
    assert world.send(t, "2601", {"omsgid": mid, "oinfno": "2102"})[1].infcode == 0


def test_clinic_reversal_of_a_settlement(world: World) -> None:
    t = world.sign_in("T3")
    mid = world.next_msgid(C1, T0_MS)
    _ok(world.settle(t, [line("1", 1000, otc=False)], infno="2207", msgid_=mid)[1])
    assert _ok(world.send(t, "2601", {"omsgid": mid, "oinfno": "2207"})[1]) == {"reversed": True,
                                                                                "original_found": True}
    assert world.core.state.ledger.institution_month_used(C1, world.core.state.settlements.get(
        world.core.setl_id(1)).month) == 0


def test_totals_balance_only_on_standing_settlements(world: World) -> None:
    t = world.sign_in()
    kept = _ok(world.settle(t, [line("1", 1000)])[1])["setlinfo"]
    gone = _ok(world.settle(t, [line("1", 3000)], who=card("PSN2"))[1])["setlinfo"]
    _ok(world.send(t, "2103", {"setl_id": gone["setl_id"], "psn_no": "PSN2"})[1])
    theirs = {"stmt_date": "20240315", "setl_cnt": 1, "medfee_sumamt": 1000,
              "fund_pay_sumamt": kept["fund_pay_sumamt"], "psn_cash_pay": kept["psn_cash_pay"]}
    out = _ok(world.send(t, "3201", theirs)[1])
    assert out["stmt_rslt"] == "0" and out["gateway"] == {k: v for k, v in theirs.items() if k != "stmt_date"}
    assert _ok(world.send(t, "3201", {**theirs, "setl_cnt": 2})[1])["stmt_rslt"] == "1"


def test_detail_last_page_has_nil_next(world: World) -> None:
    t = world.sign_in()
    ids = [_ok(world.settle(t, [line("1", 100)], who=card(f"D{i}"))[1])["setlinfo"]["setl_id"] for i in range(3)]
    page = _ok(world.send(t, "3202", {"stmt_date": "20240315", "limit": 2})[1])
    assert [r["setl_id"] for r in page["rows"]] == ids[:2] and page["next"] == ids[1]
    last = _ok(world.send(t, "3202", {"stmt_date": "20240315", "after": page["next"], "limit": 2})[1])
    assert [r["setl_id"] for r in last["rows"]] == ids[2:] and last["next"] is None
    exact = _ok(world.send(t, "3202", {"stmt_date": "20240315", "limit": 3})[1])
    assert exact["next"] is None


def test_limits_are_the_spec_numbers() -> None:
    assert (limits.AMOUNT_FEN_MAX, limits.ITEMS_MAX, limits.DETAIL_LIMIT_MAX) == (10**10, 200, 500)
    assert (limits.FRESH_PAST_MS, limits.FRESH_FUTURE_MS) == (DAY_MS, 300_000)


# -- further rules: map keys, operator suspension, retention, ledgers ---------------------------------

def test_non_string_key_in_the_envelope_is_malformed_envelope(world: World) -> None:
    t = world.sign_in()
    body = msgpack.unpackb(decode_frame(t.request_frame("3201", world.next_msgid(P1, T0_MS), {}, T0_MS)).body)
    body[7] = "x"
    raw = msgpack.packb(body, use_bin_type=True)
    data = encode_frame(Frame(1, "mac", t.sign_no, raw, mac(t.session_key, REQ_DOMAIN, raw)))
    assert answer(world, data)[:1] == (400,)
    assert answer(world, data)[1].err_code == "MALFORMED_ENVELOPE"


def test_sign_in_input_rules(world: World) -> None:
    term = world.terminal("T1")
    for x25519_pub in (b"\x09" * 31, "k" * 32, None):
        body = msgpack.unpackb(decode_frame(term.signin_frame(world.next_msgid(P1, T0_MS), T0_MS)).body)
        body["input"]["x25519_pub"] = x25519_pub
        raw = msgpack.packb(body, use_bin_type=True)
        data = encode_frame(Frame(1, "sig", "T1", raw, sign(term.private_key, REQ_DOMAIN, raw)))
        status, env = answer(world, data)
        assert (status, env.err_code) == (200, "MALFORMED_INPUT")


@pytest.mark.parametrize("infno, input_", [("1101", {}), ("3201", {}), ("3202", {}), ("2103", {}),
                                           ("2601", {}), ("2101", {})])
def test_suspended_operator_is_refused_on_every_infno_but_sign_out(world: World, infno, input_) -> None:
    t = world.sign_in()
    world.core.admin_apply({"kind": "operator.suspend", "operator": "OP1"}, T0_MS)
    assert world.send(t, infno, input_)[1].err_code == "OPERATOR_SUSPENDED"


def test_stored_answer_is_replayed_after_twenty_five_hours(tmp_path) -> None:
    world = World(tmp_path)
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    first = world.core.handle_tx(_settle_frame(world, t, mid), T0_MS)
    world.keep(first)
    late_ms = T0_MS + 25 * HOUR_MS
    t2 = world.sign_in(now_ms=late_ms)
    again = world.core.handle_tx(_settle_frame(world, t2, mid, now_ms=late_ms), late_ms)
    assert again.response == first.response


def test_tombstone_is_kept_twenty_five_hours(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    world.send(t, "2601", {"omsgid": mid, "oinfno": "2102"})
    late_ms = T0_MS + 25 * HOUR_MS
    t2 = world.sign_in(now_ms=late_ms)
    assert answer(world, _settle_frame(world, t2, mid, now_ms=late_ms), late_ms)[1].err_code == "ORIGINAL_REVERSED"


def test_reversal_replay_with_other_input_is_msgid_reused(world: World) -> None:
    t = world.sign_in()
    rev_mid = world.next_msgid(P1, T0_MS)
    _ok(world.send(t, "2601", {"omsgid": world.next_msgid(P1, T0_MS), "oinfno": "2102"}, msgid_=rev_mid)[1])
    other = {"omsgid": world.next_msgid(P1, T0_MS), "oinfno": "2102"}
    assert world.send(t, "2601", other, msgid_=rev_mid)[1].err_code == "MSGID_REUSED"


def test_reversing_a_cancelled_settlement_gives_back_nothing_twice(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    info = _ok(world.settle(t, [line("1", 3000)], msgid_=mid)[1])["setlinfo"]
    _ok(world.send(t, "2103", {"setl_id": info["setl_id"], "psn_no": "PSN1"})[1])
    assert _ok(world.send(t, "2601", {"omsgid": mid, "oinfno": "2102"})[1])["original_found"] is True
    ledger = world.core.state.ledger
    month = world.core.state.settlements.get(info["setl_id"]).month
    assert ledger.person_day_used("PSN1", 19797) == 0 and ledger.institution_month_used(P1, month) == 0
    out = _ok(world.send(t, "3201", {"stmt_date": "20240315", "setl_cnt": 0, "medfee_sumamt": 0,
                                     "fund_pay_sumamt": 0, "psn_cash_pay": 0})[1])
    assert out["stmt_rslt"] == "0"


def test_reversed_settlement_is_out_of_totals(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    _ok(world.settle(t, [line("1", 3000)], msgid_=mid)[1])
    _ok(world.send(t, "2601", {"omsgid": mid, "oinfno": "2102"})[1])
    out = _ok(world.send(t, "3201", {"stmt_date": "20240315", "setl_cnt": 0, "medfee_sumamt": 0,
                                     "fund_pay_sumamt": 0, "psn_cash_pay": 0})[1])
    assert out == {"stmt_rslt": "0", "gateway": {"setl_cnt": 0, "medfee_sumamt": 0, "fund_pay_sumamt": 0,
                                                 "psn_cash_pay": 0}}


def test_both_limits_bind_at_once(tmp_path) -> None:
    world = World(tmp_path, p2_cap_fen=5000)
    t = world.sign_in("T2")   # grade C: 6 000 a day; cap 5 000
    env = world.settle(t, [line("1", 8000), line("2", 2000, otc=False, rxno="R")])[1]
    info = _ok(env)["setlinfo"]
    # otc wanted min(8 000, 6 000) = 6 000, rx 1 400; room 5 000: rx cut to 0, otc to 5 000.
    assert (info["otc_pay"], info["rx_pay"], info["fund_pay_sumamt"]) == (5000, 0, 5000)
    assert info["bound_by"] == ["person_day", "institution_month"]
    assert (info["crt_payb_lmt_amt"], info["person_day_remaining"], info["institution_month_remaining"]) == \
        (6000, 1000, 0)
    assert info["psn_cash_pay"] == 5000


def test_cancel_next_day_gives_back_to_the_settlement_day(world: World) -> None:
    last_ms = 1_710_518_399_999   # 2024-03-15 23:59:59.999 Shanghai
    t = world.sign_in(now_ms=last_ms)
    info = _ok(world.settle(t, [line("1", 12000)], now_ms=last_ms)[1])["setlinfo"]
    next_ms = last_ms + 1000
    _ok(world.settle(t, [line("1", 2000)], now_ms=next_ms)[1])
    _ok(world.send(t, "2103", {"setl_id": info["setl_id"], "psn_no": "PSN1"}, now_ms=next_ms)[1])
    mid = world.next_msgid(P1, next_ms)
    out = _ok(world.send(t, "1101", world.card_fields(t, mid, "1101", 0, card()), now_ms=next_ms, msgid_=mid)[1])
    assert (out["otc_used_day"], out["otc_remaining_day"]) == (2000, 10000)


def test_person_day_usage_counts_across_pharmacies_against_each_ones_grade(world: World) -> None:
    t1, t2 = world.sign_in("T1"), world.sign_in("T2")   # grades A (12 000) and C (6 000)
    _ok(world.settle(t1, [line("1", 6000)], who=card("G1"))[1])
    info = _ok(world.settle(t2, [line("1", 1000)], who=card("G1"))[1])["setlinfo"]
    assert (info["crt_payb_lmt_amt"], info["otc_pay"], info["bound_by"]) == (0, 0, ["person_day"])
