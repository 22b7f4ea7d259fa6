"""Conformance of a real Core to SPEC sections 2, 4, 5, 6 and 8 (frames, envelopes, sessions,
idempotency, money, the error table), rule by rule, for rules no other core test pins.

Requests are built as a terminal builds them (TerminalSession) and then altered field by field, so
that each test breaks exactly the rule it names, or exactly the two rules whose precedence it checks.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core_world import ADMDVS, P1, P2, T0_MS, World, card, line
from gateway.core.clock import local_stamp
from protocol import (
    REQ_DOMAIN, RESP_DOMAIN, ErrCode, Frame, decode_frame, decode_response_envelope, encode_frame, gateway_kid,
    mac, public_raw, sign, verify_sig,
)

from wire_helpers import DAY_MS, ERROR_KEYS, HOUR_MS, SPEC8, answer, crafted, ok_output, settle_frame


# -- section 8: the error table ---------------------------------------------------------------------

def test_error_codes_are_exactly_the_spec_table() -> None:
    assert {c.wire: (c.infcode, c.http_status) for c in ErrCode} == SPEC8


# -- sections 4 and 5: every answer is a signed Frame carrying the required keys ---------------------

def test_an_error_answer_is_signed_and_carries_every_required_key(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    result = world.handle_tx(crafted(world, t, "3201", {}, msgid=mid, inf_time=T0_MS - DAY_MS - 1), T0_MS)
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
    result = world.handle_tx(term.signin_frame(world.next_msgid(P1, T0_MS), T0_MS), T0_MS)
    out = ok_output(term.on_signin_answer(result.response))
    assert out["sign_time"] == T0_MS and out["session_expires"] == T0_MS + 12 * HOUR_MS
    assert isinstance(out["x25519_pub"], bytes) and len(out["x25519_pub"]) == 32
    assert isinstance(out["sign_no"], str) and out["sign_no"] == term.sign_no
    assert world.send(term, "3201", {}, now_ms=T0_MS + 12 * HOUR_MS - 1)[1].err_code != "SESSION_EXPIRED"


def test_a_new_sign_in_keeps_older_sessions_and_sign_out_names_its_session(world: World) -> None:
    first = world.sign_in()
    second = world.sign_in()
    assert first.sign_no != second.sign_no
    out = ok_output(world.send(first, "9002", {})[1])
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
    world.commit(world.core.admin_apply({"kind": "terminal.revoke", "dev_no": "T5"}, T0_MS))
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


def test_replay_through_another_terminal_and_session_is_byte_for_byte(world: World) -> None:
    t1, t5 = world.sign_in("T1"), world.sign_in("T5")
    mid = world.next_msgid(P1, T0_MS)
    first = world.handle_tx(settle_frame(world, t1, mid), T0_MS)
    world.keep(first)
    again = world.handle_tx(settle_frame(world, t5, mid, now_ms=T0_MS + 60_000), T0_MS + 60_000)
    assert again.response == first.response and again.record is None


def test_replay_answers_before_operator_and_institution_suspension(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    first = world.handle_tx(settle_frame(world, t, mid), T0_MS)
    world.keep(first)
    world.commit(world.core.admin_apply({"kind": "operator.suspend", "operator": "OP1"}, T0_MS))
    world.commit(world.core.admin_apply({"kind": "institution.suspend", "institution": P1}, T0_MS))
    assert world.handle_tx(settle_frame(world, t, mid), T0_MS).response == first.response
    reused = world.handle_tx(settle_frame(world, t, mid, fee_fen=2000), T0_MS)
    assert decode_response_envelope(decode_frame(reused.response).body).err_code == "MSGID_REUSED"


def test_same_msgid_under_another_infno_is_msgid_reused(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    info = ok_output(world.settle(t, [line("1", 1000)], msgid_=mid)[1])["setlinfo"]
    env = world.send(t, "2103", {"setl_id": info["setl_id"], "psn_no": "PSN1"}, msgid_=mid)[1]
    assert (env.err_code, env.infcode) == ("MSGID_REUSED", -2)


def test_a_rejected_msgid_is_evaluated_afresh(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    wrong_mac = world.card_fields(t, mid, "2102", 999, card())
    assert world.settle(t, [line("1", 1000)], msgid_=mid, cert=wrong_mac)[1].err_code == "CARD_INVALID"
    assert ok_output(world.settle(t, [line("1", 2000)], msgid_=mid)[1])["setlinfo"]["fund_pay_sumamt"] == 2000


def test_pre_settle_and_queries_are_not_recorded(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    assert world.settle(t, [line("1", 1000)], infno="2101", msgid_=mid)[1].infcode == 0
    again = world.settle(t, [line("1", 3000)], infno="2101", msgid_=mid)[1]
    assert ok_output(again)["setlinfo"]["medfee_sumamt"] == 3000
    assert ok_output(world.settle(t, [line("1", 500)], msgid_=mid)[1])["setlinfo"]["fund_pay_sumamt"] == 500


def test_cancel_and_reversal_replays_are_byte_for_byte_and_change_nothing(world: World) -> None:
    t = world.sign_in()
    setl_mid = world.next_msgid(P1, T0_MS)
    info = ok_output(world.settle(t, [line("1", 1000)], msgid_=setl_mid)[1])["setlinfo"]
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
    assert ok_output(world.send(t, "2601", {"omsgid": mid, "oinfno": "2102"})[1])["original_found"] is False
    assert world.send(t, infno, input_, msgid_=mid)[1].err_code == "ORIGINAL_REVERSED"


def test_tombstone_outlives_the_freshness_window(tmp_path) -> None:
    world = World(tmp_path, session_ttl_s=10**7)
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    world.send(t, "2601", {"omsgid": mid, "oinfno": "2102"})
    late_ms = T0_MS + 24 * HOUR_MS
    # Sent 24 h after the reversal, with inf_time at the oldest fresh instant.
    data = settle_frame(world, t, mid, now_ms=T0_MS)
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
    info = ok_output(world.settle(t, [line("1", 10**10, otc=False)], infno="2206")[1])["setlinfo"]
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
    world.commit(world.core.admin_apply({"kind": "operator.suspend", "operator": "OP1"}, T0_MS))
    assert world.send(t, infno, input_)[1].err_code == "OPERATOR_SUSPENDED"


def test_stored_answer_is_replayed_after_twenty_five_hours(tmp_path) -> None:
    world = World(tmp_path)
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    first = world.handle_tx(settle_frame(world, t, mid), T0_MS)
    world.keep(first)
    late_ms = T0_MS + 25 * HOUR_MS
    t2 = world.sign_in(now_ms=late_ms)
    again = world.handle_tx(settle_frame(world, t2, mid, now_ms=late_ms), late_ms)
    assert again.response == first.response


def test_tombstone_is_kept_twenty_five_hours(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    world.send(t, "2601", {"omsgid": mid, "oinfno": "2102"})
    late_ms = T0_MS + 25 * HOUR_MS
    t2 = world.sign_in(now_ms=late_ms)
    assert answer(world, settle_frame(world, t2, mid, now_ms=late_ms), late_ms)[1].err_code == "ORIGINAL_REVERSED"


def test_reversal_replay_with_other_input_is_msgid_reused(world: World) -> None:
    t = world.sign_in()
    rev_mid = world.next_msgid(P1, T0_MS)
    ok_output(world.send(t, "2601", {"omsgid": world.next_msgid(P1, T0_MS), "oinfno": "2102"}, msgid_=rev_mid)[1])
    other = {"omsgid": world.next_msgid(P1, T0_MS), "oinfno": "2102"}
    assert world.send(t, "2601", other, msgid_=rev_mid)[1].err_code == "MSGID_REUSED"
