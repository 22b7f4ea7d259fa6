"""Every rejection code of the pipeline, and precedence between two failing rules."""

from __future__ import annotations

import msgpack
import pytest

from core_world import C1, P1, T0_MS, World, card, line
from protocol import REQ_DOMAIN, decode_frame, decode_response_envelope, encode_frame, Frame, mac

DAY_MS = 86_400_000


def answer(world: World, data: bytes, now_ms: int = T0_MS):
    result = world.handle_tx(data, now_ms)
    return result.http_status, decode_response_envelope(decode_frame(result.response).body)


def test_undecodable_frame_has_no_msgid(world: World) -> None:
    status, env = answer(world, b"\xc1garbage")
    assert (status, env.err_code, env.msgid, env.infcode) == (400, "MALFORMED_FRAME", None, -2)


def test_body_not_a_map_is_malformed_envelope(world: World) -> None:
    data = encode_frame(Frame(1, "mac", "x", msgpack.packb([1, 2]), b"\x00" * 32))
    assert answer(world, data)[1].err_code == "MALFORMED_ENVELOPE"


def _frame(world: World, term, infno_: str, input_, now_ms: int = T0_MS, **override) -> bytes:
    mid = override.pop("msgid", None) or world.next_msgid(term.fixmedins_code, now_ms)
    data = term.request_frame(infno_, mid, input_, now_ms)
    frame = decode_frame(data)
    if not override:
        return data
    body = msgpack.unpackb(frame.body, raw=False)
    body.update(override)
    raw = msgpack.packb(body, use_bin_type=True)
    return encode_frame(Frame(1, "mac", frame.key_id, raw, mac(term.session_key, REQ_DOMAIN, raw)))


@pytest.mark.parametrize("override, code, status", [
    ({"fixmedins_code": "Z51018200009", "msgid": "Z51018200009202403151000000001"}, "INSTITUTION_UNKNOWN", 200),
    ({"mdtrtarea_admvs": "510100"}, "MALFORMED_ENVELOPE", 400),
    ({"dev_no": "T5"}, "SESSION_MISMATCH", 401),
    ({"opter": "OTHER"}, "SESSION_MISMATCH", 401),
    ({"sign_no": "nope"}, "SESSION_MISMATCH", 401),
    ({"inf_time": T0_MS - DAY_MS - 1}, "STALE_REQUEST", 200),
    ({"inf_time": T0_MS + 300_001}, "STALE_REQUEST", 200),
    ({"infno": "7777"}, "UNSUPPORTED_INFNO", 200),
    ({"infno": "2207"}, "WRONG_INSTITUTION_KIND", 200),
])
def test_envelope_and_session_rules(world: World, override, code, status) -> None:
    t = world.sign_in()
    assert answer(world, _frame(world, t, "2101", {}, **override))[:1] == (status,)
    assert answer(world, _frame(world, t, "2101", {}, **override))[1].err_code == code


def test_bad_mac_and_unknown_and_expired_session(world: World) -> None:
    t = world.sign_in()
    frame = decode_frame(t.request_frame("3201", world.next_msgid(P1, T0_MS), {}, T0_MS))
    forged = encode_frame(Frame(1, "mac", frame.key_id, frame.body, b"\x00" * 32))
    assert answer(world, forged) [1].err_code == "BAD_MAC"
    expired = T0_MS + world.config.session_ttl_s * 1000
    assert answer(world, _frame(world, t, "3201", {}, now_ms=expired), expired)[1].err_code == "SESSION_EXPIRED"
    t.sign_no = "f" * 32
    assert answer(world, _frame(world, t, "3201", {}))[1].err_code == "SESSION_UNKNOWN"


def test_sign_in_rules(world: World) -> None:
    revoked = world.terminal("T4")
    data = revoked.signin_frame(world.next_msgid(P1, T0_MS), T0_MS)
    status, env = answer(world, data)
    assert (status, env.err_code) == (401, "TERMINAL_REVOKED")
    foreign = world.terminal("T3")
    foreign.fixmedins_code = P1   # a clinic terminal signing in for the pharmacy
    assert answer(world, foreign.signin_frame(world.next_msgid(P1, T0_MS), T0_MS))[1].err_code == "UNKNOWN_TERMINAL"
    good = world.terminal("T1")
    frame = decode_frame(good.signin_frame(world.next_msgid(P1, T0_MS), T0_MS))
    bad = encode_frame(Frame(1, "sig", frame.key_id, frame.body, b"\x01" * 64))
    assert answer(world, bad)[1].err_code == "BAD_SIGNATURE"
    suspended = world.terminal("T1", opter="OPS")
    assert answer(world, suspended.signin_frame(world.next_msgid(P1, T0_MS), T0_MS))[1].err_code == "OPERATOR_SUSPENDED"


def test_revoked_terminal_sessions_answer_revoked(world: World) -> None:
    t = world.sign_in("T5")
    world.commit(world.core.admin_apply({"kind": "terminal.revoke", "dev_no": "T5"}, T0_MS))
    assert answer(world, _frame(world, t, "3201", {}))[1].err_code == "TERMINAL_REVOKED"


def test_sessions_per_terminal_capped_at_eight(world: World) -> None:
    first = world.sign_in()
    for _ in range(8):
        world.sign_in()
    assert world.core.sessions_active == 8
    assert answer(world, _frame(world, first, "9002", {}))[1].err_code == "SESSION_UNKNOWN"


@pytest.mark.parametrize("who, items, code", [
    (card(card_no="CBLK"), [line("1", 100)], "CARD_BLOCKED"),
    (card("PBLK"), [line("1", 100)], "PERSON_INELIGIBLE"),
    (card("Y001", admdvs="440100"), [line("1", 100)], "CROSS_PROVINCE_NOT_FILED"),
])
def test_credential_and_person_rules(world: World, who, items, code) -> None:
    t = world.sign_in()
    assert world.settle(t, items, who=who)[1].err_code == code


def test_filing_valid_until_its_last_day(world: World) -> None:
    t = world.sign_in()
    assert world.settle(t, [line("1", 100)], who=card("X001", admdvs="440100"))[1].infcode == 0
    after_ms = T0_MS + 17 * DAY_MS   # 2024-04-01
    t = world.sign_in(now_ms=after_ms)
    env = world.settle(t, [line("1", 100)], who=card("X001", admdvs="440100"), now_ms=after_ms)[1]
    assert env.err_code == "CROSS_PROVINCE_NOT_FILED"


def test_card_mac_and_credential_types(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    fields = world.card_fields(t, mid, "2102", 999, card())   # mac over the wrong amount
    assert world.settle(t, [line("1", 100)], msgid_=mid, cert=fields)[1].err_code == "CARD_INVALID"
    other = {"mdtrt_cert_type": "02", "mdtrt_cert_no": "x"}
    assert world.settle(t, [line("1", 100)], cert=other)[1].err_code == "CREDENTIAL_NOT_ACCEPTED"
    assert world.settle(t, [line("1", 100)], cert=world.voucher(org="P51018200002"))[1].err_code == \
        "VOUCHER_WRONG_INSTITUTION"
    late = T0_MS + 700_000
    t2 = world.sign_in(now_ms=late)
    assert world.settle(t2, [line("1", 100)], cert=world.voucher(), now_ms=late)[1].err_code == "VOUCHER_EXPIRED"
    assert world.settle(t, [line("1", 100)], cert={"mdtrt_cert_type": "01", "mdtrt_cert_no": "@@"})[1].err_code \
        == "VOUCHER_INVALID"


@pytest.mark.parametrize("items, code", [
    ([{**line("1", 100), "pric": 7}], "AMOUNT_MISMATCH"),
    ([{**line("1", 100), "det_item_fee_sumamt": 1.5}], "MALFORMED_INPUT"),
])
def test_input_rules(world: World, items, code) -> None:
    t = world.sign_in()
    assert world.settle(t, items, cert=world.card_fields(t, "x", "2102", 0, card()))[1].err_code == code


def test_cancel_wrong_kind_and_unknown(world: World) -> None:
    c = world.sign_in("T3")
    assert world.send(c, "2103", {"setl_id": "1", "psn_no": "P"})[1].err_code == "WRONG_INSTITUTION_KIND"
    assert world.send(c, "2208", {"setl_id": "1", "psn_no": "P"})[1].err_code == "SETTLEMENT_NOT_FOUND"
    assert world.send(c, "2101", {})[1].err_code == "WRONG_INSTITUTION_KIND"
    assert C1


# Precedence: two failing rules, the earlier answers.
def test_precedence_stale_beats_idempotent_replay(tmp_path) -> None:
    world = World(tmp_path, session_ttl_s=10**7)
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    fields = world.card_fields(t, mid, "2102", 100, card())
    data = t.request_frame("2102", mid, {**fields, "medfee_sumamt": 100, "items": [line("1", 100)]}, T0_MS)
    assert answer(world, data)[1].infcode == 0
    assert answer(world, data, T0_MS + DAY_MS)[1].infcode == 0          # still fresh: stored answer
    assert answer(world, data, T0_MS + DAY_MS + 1)[1].err_code == "STALE_REQUEST"


def test_precedence_operator_suspension_beats_wrong_kind_and_input(world: World) -> None:
    t = world.sign_in()
    world.commit(world.core.admin_apply({"kind": "operator.suspend", "operator": "OP1"}, T0_MS))
    assert world.send(t, "2207", {"bad": 1})[1].err_code == "OPERATOR_SUSPENDED"
    assert world.send(t, "9002", {})[1].infcode == 0


def test_precedence_suspension_beats_input_and_credential(world: World) -> None:
    t = world.sign_in()
    world.commit(world.core.admin_apply({"kind": "institution.suspend", "institution": P1}, T0_MS))
    assert world.send(t, "2102", {"garbage": True})[1].err_code == "INSTITUTION_SUSPENDED"


def test_precedence_input_beats_credential_beats_person(world: World) -> None:
    t = world.sign_in()
    bad_cert = {"mdtrt_cert_type": "02", "mdtrt_cert_no": "x"}
    assert world.settle(t, [{**line("1", 100), "pric": 3}], cert=bad_cert)[1].err_code == "AMOUNT_MISMATCH"
    assert world.settle(t, [line("1", 100)], who=card("PBLK", card_no="CBLK"))[1].err_code == "CARD_BLOCKED"


def test_precedence_reversed_beats_msgid_reuse(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    world.settle(t, [line("1", 100)], msgid_=mid)
    world.send(t, "2601", {"omsgid": mid, "oinfno": "2102"})
    assert world.send(t, "3201", {}, msgid_=mid)[1].err_code == "ORIGINAL_REVERSED"


def test_admin_changes_validate(world: World) -> None:
    with pytest.raises(ValueError, match="monthly_cap_fen"):
        world.commit(world.core.admin_apply({"kind": "institution.monthly_cap", "institution": P1, "monthly_cap_fen": -1}, T0_MS))
    with pytest.raises(ValueError, match="institution"):
        world.commit(world.core.admin_apply({"kind": "institution.grade", "institution": "NOPE", "grade": "A"}, T0_MS))
    with pytest.raises(ValueError, match="bogus"):
        world.commit(world.core.admin_apply({"kind": "card.block", "card_no": "C", "bogus": 1}, T0_MS))
    op = world.core.last_op
    world.commit(world.core.admin_apply({"kind": "policy.otc_allowance", "grade": "A", "otc_allowance_fen": 100}, T0_MS))
    world.commit(world.core.admin_apply({"kind": "filing.add", "psn_no": "Z9", "admdvs": "510182",
                                         "valid_from": "2024-03-01", "valid_to": "2024-03-31"}, T0_MS))
    assert world.core.last_op == op + 2
    t = world.sign_in()
    info = world.settle(t, [line("1", 5000)], who=card("Z9", admdvs="440100"))[1].output["setlinfo"]
    assert info["otc_pay"] == 100
