"""Settle / cancel / reverse / reconcile flows, idempotency, rollovers, snapshot and replay."""

from __future__ import annotations

import msgpack

from core_world import C1, P1, P2, T0_MS, World, card, line
from gateway.core import from_wire
from gateway.core.handlers import DETAIL_ROWS_PER_ANSWER_MAX
from protocol import ErrCode, public_raw

HOUR_MS = 3_600_000


def _ok(env):
    assert env.infcode == 0, (env.err_code, env.err_msg)
    return env.output


def test_settle_split_matches_spec(world: World) -> None:
    t = world.sign_in()
    r, env = world.settle(t, [line("1", 5000), line("2", 3000, lv="02", otc=False, rxno="RX1"),
                              line("3", 1000, lv="03")])
    info = _ok(env)["setlinfo"]
    # 乙类 self-pay first: ceil(3000 * 100 / 1000) = 300; rx_pay = floor(2700 * 700 / 1000) = 1890.
    assert (info["otc_pay"], info["rx_pay"], info["fund_pay_sumamt"], info["psn_cash_pay"]) == (5000, 1890, 6890, 2110)
    assert info["crt_payb_lmt_amt"] == 12000 and info["person_day_remaining"] == 7000
    assert info["setl_id"] < world.settle(t, [line("1", 100)])[1].output["setlinfo"]["setl_id"]
    assert r.record.op == world.core.last_op - 1 and r.facts.fund_fen == 6890


def test_person_day_binds_and_warns(world: World) -> None:
    t = world.sign_in()
    _ok(world.settle(t, [line("1", 10000)])[1])
    env = world.settle(t, [line("1", 5000)])[1]
    info = _ok(env)["setlinfo"]
    assert info["otc_pay"] == 2000 and info["bound_by"] == ["person_day"] and info["person_day_remaining"] == 0
    assert env.warnings == ("PERSON_DAY_LIMIT_REACHED",)


def test_near_limit_warning_on_pre_settle_changes_nothing(world: World) -> None:
    t = world.sign_in()
    r, env = world.settle(t, [line("1", 9600)], infno="2101")
    assert env.warnings == ("PERSON_DAY_NEAR_LIMIT",) and r.record is None or r.record.KIND == "refid"
    assert "setl_id" not in env.output["setlinfo"]
    assert world.core.state.ledger.person_day_used("PSN1", 19797) == 0


def test_institution_month_cuts_rx_before_otc(world: World) -> None:
    t = world.sign_in("T2")   # P2: cap 20 000 fen, grade C (6 000 a day)
    _ok(world.settle(t, [line("1", 20000, otc=False, rxno="R")], who=card("A1"))[1])  # rx 14 000
    env = world.settle(t, [line("1", 5000), line("2", 10000, otc=False, rxno="R")], who=card("A2"))[1]
    info = _ok(env)["setlinfo"]
    # room 6 000: otc 5 000 kept, rx 7 000 cut to 1 000.
    assert (info["otc_pay"], info["rx_pay"], info["bound_by"]) == (5000, 1000, ["institution_month"])
    assert "INSTITUTION_MONTH_CAP_REACHED" in env.warnings


def test_clinic_formula(world: World) -> None:
    t = world.sign_in("T3")
    info = _ok(world.settle(t, [line("1", 10000, otc=False), line("2", 1000, lv="02", otc=False)],
                            infno="2207")[1])["setlinfo"]
    # inscp = 10 000 + 900; fund = floor(10 900 * 0.7) = 7 630; no RX_REQUIRED cut at clinics.
    assert (info["otc_pay"], info["rx_pay"], info["crt_payb_lmt_amt"], info["person_day_remaining"]) == (0, 7630, 0, 0)


def test_cut_reasons_first_wins_and_warn_once(world: World) -> None:
    t = world.sign_in()
    env = world.settle(t, [line("1", 1000, otc=False, dr="DR1"), line("2", 1000, otc=False),
                           line("3", 1000, otc=False), line("4", 1000, dr="DR1")])[1]
    cuts = [c["cut_reason"] for c in _ok(env)["detlcutinfo"]]
    assert cuts == ["DOCTOR_SUSPENDED", "RX_REQUIRED", "RX_REQUIRED", "DOCTOR_SUSPENDED"]
    assert env.warnings == ("DOCTOR_SUSPENDED", "RX_REQUIRED")
    assert env.output["setlinfo"]["fund_pay_sumamt"] == 0


def test_idempotent_replay_bytes_and_reuse(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    first, _ = world.settle(t, [line("1", 1000)], msgid_=mid)
    snap = world.core.snapshot()
    again, _ = world.settle(t, [line("1", 1000)], msgid_=mid, now_ms=T0_MS + 5000)
    assert again.response == first.response and again.wait_op >= first.record.op and again.record is None
    assert again.facts.idempotent_replay and world.core.snapshot() == snap
    reused = world.settle(t, [line("1", 2000)], msgid_=mid)[1]
    assert reused.err_code == "MSGID_REUSED"


def test_cancel_restores_and_window(world: World) -> None:
    t = world.sign_in()
    before = world.core.snapshot()["ledger"]
    info = _ok(world.settle(t, [line("1", 3000)])[1])["setlinfo"]
    out = _ok(world.send(t, "2103", {"setl_id": info["setl_id"], "psn_no": "PSN1"})[1])
    assert out["fund_pay_sumamt"] == -3000 and out["otc_pay"] == -3000
    assert world.core.snapshot()["ledger"]["days"] == before["days"]
    again = world.send(t, "2103", {"setl_id": info["setl_id"], "psn_no": "PSN1"})[1]
    assert again.err_code == "ALREADY_CANCELLED"
    wrong = world.send(t, "2103", {"setl_id": info["setl_id"], "psn_no": "OTHER"})[1]
    assert wrong.err_code == "SETTLEMENT_NOT_FOUND"


def test_cancel_window_closes_at_month_end(world: World) -> None:
    # 2024-03-31 23:59:59.999 Shanghai = 2024-03-31 15:59:59.999 UTC.
    end_ms = 1_711_900_799_999
    t = world.sign_in(now_ms=end_ms)
    info = _ok(world.settle(t, [line("1", 3000)], now_ms=end_ms)[1])["setlinfo"]
    late = world.send(t, "2103", {"setl_id": info["setl_id"], "psn_no": "PSN1"}, now_ms=end_ms + 1)[1]
    assert late.err_code == "CANCEL_WINDOW_CLOSED"


def test_day_rollover_at_shanghai_midnight(world: World) -> None:
    last_ms = 1_710_518_399_999   # 2024-03-15 15:59:59.999 UTC = 23:59:59.999 Shanghai
    t = world.sign_in(now_ms=last_ms)
    assert _ok(world.settle(t, [line("1", 12000)], now_ms=last_ms)[1])["setlinfo"]["otc_pay"] == 12000
    same_day = _ok(world.settle(t, [line("1", 100)], now_ms=last_ms)[1])["setlinfo"]
    assert same_day["otc_pay"] == 0
    next_day = _ok(world.settle(t, [line("1", 100)], now_ms=last_ms + 1)[1])["setlinfo"]
    assert next_day["otc_pay"] == 100 and next_day["crt_payb_lmt_amt"] == 12000


def test_reversal_paths(world: World) -> None:
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    info = _ok(world.settle(t, [line("1", 3000)], msgid_=mid)[1])["setlinfo"]
    out = _ok(world.send(t, "2601", {"omsgid": mid, "oinfno": "2102"})[1])
    assert out == {"reversed": True, "original_found": True}
    assert world.core.state.ledger.person_day_used("PSN1", 19797) == 0
    assert _ok(world.send(t, "2601", {"omsgid": mid, "oinfno": "2102"})[1]) == {"reversed": True,
                                                                                 "already_reversed": True}
    assert world.settle(t, [line("1", 3000)], msgid_=mid)[1].err_code == "ORIGINAL_REVERSED"
    unknown = world.next_msgid(P1, T0_MS)
    assert _ok(world.send(t, "2601", {"omsgid": unknown, "oinfno": "2102"})[1])["original_found"] is False
    assert world.settle(t, [line("1", 10)], msgid_=unknown)[1].err_code == "ORIGINAL_REVERSED"
    rows = _ok(world.send(t, "3202", {"stmt_date": "20240315", "limit": 10})[1])["rows"]
    assert [r["status"] for r in rows] == ["reversed"] and rows[0]["setl_id"] == info["setl_id"]


def test_reversing_a_cancellation_reinstates(world: World) -> None:
    t = world.sign_in()
    info = _ok(world.settle(t, [line("1", 3000)])[1])["setlinfo"]
    cmid = world.next_msgid(P1, T0_MS)
    _ok(world.send(t, "2103", {"setl_id": info["setl_id"], "psn_no": "PSN1"}, msgid_=cmid)[1])
    assert _ok(world.send(t, "2601", {"omsgid": cmid, "oinfno": "2103"})[1])["original_found"] is True
    assert world.core.state.ledger.person_day_used("PSN1", 19797) == 3000
    wrong = world.send(t, "2601", {"omsgid": info["medins_setl_id"], "oinfno": "2207"})[1]
    assert wrong.err_code == "SETTLEMENT_NOT_FOUND"


def test_reconciliation_totals_and_paging(world: World) -> None:
    t = world.sign_in()
    ids = [_ok(world.settle(t, [line("1", 100 * (n + 1))], who=card(f"R{n}"))[1])["setlinfo"]["setl_id"]
           for n in range(5)]
    _ok(world.send(t, "2103", {"setl_id": ids[0], "psn_no": "R0"})[1])
    gateway = {"setl_cnt": 4, "medfee_sumamt": 1400, "fund_pay_sumamt": 1400, "psn_cash_pay": 0}
    out = _ok(world.send(t, "3201", {"stmt_date": "20240315", **gateway})[1])
    assert out == {"stmt_rslt": "0", "gateway": {**gateway, "acct_pay": 0}}   # acct_pay: SPEC 13
    assert _ok(world.send(t, "3201", {"stmt_date": "20240315", **gateway, "setl_cnt": 5})[1])["stmt_rslt"] == "1"
    page = _ok(world.send(t, "3202", {"stmt_date": "20240315", "limit": 3})[1])
    assert [r["setl_id"] for r in page["rows"]] == ids[:3] and page["next"] == ids[2]
    rest = _ok(world.send(t, "3202", {"stmt_date": "20240315", "limit": 3, "after": page["next"]})[1])
    assert [r["setl_id"] for r in rest["rows"]] == ids[3:] and rest["next"] is None


def test_voucher_single_use_even_after_cancel(world: World) -> None:
    t = world.sign_in()
    cert = world.voucher()
    assert _ok(world.settle(t, [line("1", 100)], infno="2101", cert=cert)[1])
    info = _ok(world.settle(t, [line("1", 100)], cert=cert)[1])["setlinfo"]
    _ok(world.send(t, "2103", {"setl_id": info["setl_id"], "psn_no": "PSN9"})[1])
    assert world.settle(t, [line("1", 100)], cert=cert)[1].err_code == "VOUCHER_ALREADY_USED"


def test_replay_and_snapshot_reproduce_state(world: World) -> None:
    t = world.sign_in()
    for n in range(6):
        r, env = world.settle(t, [line("1", 2500 * (n + 1)), line("2", 900, lv="02", otc=False, rxno="R")],
                              who=card(f"S{n % 2}"), now_ms=T0_MS + n * HOUR_MS)
    info = world.core.state.settlements.snapshot()[0]
    world.send(t, "2103", {"setl_id": info["setl_id"], "psn_no": info["psn_no"]})
    world.commit(world.core.admin_apply({"kind": "institution.grade", "institution": P1, "grade": "B"}, T0_MS))
    wire = [msgpack.unpackb(msgpack.packb(rec.to_wire(), use_bin_type=True), raw=False) for rec in world.records]
    other = world.make_core()
    for rec in wire:
        other.commit(from_wire(rec))
    assert other.snapshot() == world.core.snapshot()
    snap = msgpack.unpackb(msgpack.packb(world.core.snapshot(), use_bin_type=True), raw=False)
    restored = world.make_core()
    restored.restore(snap)
    assert restored.snapshot() == world.core.snapshot()
    assert restored.state.overlay.institutions[P1].grade == "B"


def test_refid_serials_never_reused_after_restart(world: World) -> None:
    t = world.sign_in()
    env = world.settle(t, [line("1", 100)])[1]
    records = [world.core.snapshot()]
    other = world.make_core()
    other.restore(records[0])
    term = world.terminal()
    world.restart(other)
    t = world.sign_in()
    env2 = world.settle(t, [line("1", 100)])[1]
    assert int(env2.inf_refmsgid[-10:]) >= int(env.inf_refmsgid[-10:]) + world.config.refid_block // 2
    assert term.dev_no == "T1"


def test_error_response_and_keys(world: World) -> None:
    data = world.sealer.error_response(ErrCode.OVERLOADED, T0_MS, msgid="m")
    from protocol import decode_frame, decode_response_envelope
    env = decode_response_envelope(decode_frame(data).body)
    assert (env.infcode, env.err_code, env.msgid, env.output) == (-1, "OVERLOADED", "m", None)
    keys = world.core.public_keys()
    assert keys[0]["status"] == "active" and keys[0]["kid"] == decode_frame(data).key_id


def test_key_rotation_keeps_old_answers_and_lists_retired(world: World) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    t = world.sign_in()
    mid = world.next_msgid(P1, T0_MS)
    first, _ = world.settle(t, [line("1", 100)], msgid_=mid)
    old_kid = world.core.public_keys()[0]["kid"]
    new_key = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32)
    record = world.commit(world.core.rotate_key(public_raw(new_key.public_key()), T0_MS))
    world.sealer.activate(world.core, new_key)
    assert "private" not in str(record.to_wire().keys())
    assert [k["status"] for k in world.core.public_keys()] == ["active", "retired"]
    assert world.core.public_keys()[1]["kid"] == old_kid
    assert world.settle(t, [line("1", 100)], msgid_=mid)[0].response == first.response


def test_suspended_institution_may_query_cancel_not_settle(world: World) -> None:
    t = world.sign_in()
    info = _ok(world.settle(t, [line("1", 100)])[1])["setlinfo"]
    world.commit(world.core.admin_apply({"kind": "institution.suspend", "institution": P1, "actor": "ops"}, T0_MS))
    assert world.settle(t, [line("1", 100)])[1].err_code == "INSTITUTION_SUSPENDED"
    mid = world.next_msgid(P1, T0_MS)
    assert _ok(world.send(t, "1101", world.card_fields(t, mid, "1101", 0, card()), msgid_=mid)[1])
    _ok(world.send(t, "2103", {"setl_id": info["setl_id"], "psn_no": "PSN1"})[1])


def test_person_info_for_pharmacy_and_clinic(world: World) -> None:
    t = world.sign_in()
    _ok(world.settle(t, [line("1", 2000)])[1])
    mid = world.next_msgid(P1, T0_MS)
    out = _ok(world.send(t, "1101", world.card_fields(t, mid, "1101", 0, card()), msgid_=mid)[1])
    assert (out["otc_allowance_day"], out["otc_used_day"], out["otc_remaining_day"]) == (12000, 2000, 10000)
    assert out["cross_province"] is False
    c = world.sign_in("T3")
    mid = world.next_msgid(C1, T0_MS)
    out = _ok(world.send(c, "1101", world.card_fields(c, mid, "1101", 0, card()), msgid_=mid)[1])
    assert (out["otc_allowance_day"], out["otc_used_day"], out["otc_remaining_day"]) == (0, 0, 0)


def test_sign_out_ends_session(world: World) -> None:
    t = world.sign_in()
    out = _ok(world.send(t, "9002", {})[1])
    assert out["sign_no"] == t.sign_no
    assert world.send(t, "9002", {})[1].err_code == "SESSION_UNKNOWN"
    assert world.core.sessions_active == 0
    assert P2


def test_a_full_detail_page_fits_what_a_terminal_can_decode(world: World) -> None:
    t = world.sign_in()
    for n in range(DETAIL_ROWS_PER_ANSWER_MAX + 5):
        _ok(world.settle(t, [line("1", 100)], who=card(f"D{n:04d}"))[1])
    result, env = world.send(t, "3202", {"stmt_date": "20240315", "limit": 500})
    page = _ok(env)
    assert len(page["rows"]) == DETAIL_ROWS_PER_ANSWER_MAX and page["next"] == page["rows"][-1]["setl_id"]
    assert len(result.response) < 65_536
    rest = _ok(world.send(t, "3202", {"stmt_date": "20240315", "limit": 500, "after": page["next"]})[1])
    assert len(rest["rows"]) == 5 and rest["next"] is None
