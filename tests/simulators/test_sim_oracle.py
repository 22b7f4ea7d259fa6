"""The oracle passes a clean history and catches each kind of forged violation, also under concurrency."""

from __future__ import annotations

from sim_helpers import ALLOWANCE_A_FEN, CAP_FEN, NOON_MS, setlinfo

from simulators.oracle import Oracle, Totals, shanghai_day

PHARMACY, CLINIC = "P51018200001", "C51018200001"
PERSON = "5101820000000001"
HOUR_MS = 3_600_000


def oracle() -> Oracle:
    return Oracle({PHARMACY: ALLOWANCE_A_FEN, CLINIC: 0}, {PHARMACY: CAP_FEN, CLINIC: CAP_FEN})


def settle(o: Oracle, where: str, institution: str, mid: str, info: dict, bill_fen: int, raw: bytes) -> None:
    """A settlement sent and answered before the next one is sent (one terminal, one at a time)."""
    sent = o.tick()
    o.on_settle(where, institution, mid, info, bill_fen, raw, sent, o.tick())


def cancel(o: Oracle, where: str, institution: str, setl_id: str, output: dict) -> None:
    o.on_cancel_sent(institution, setl_id)
    o.on_cancel(where, institution, setl_id, output)


def test_noon_is_a_shanghai_day() -> None:
    assert shanghai_day(NOON_MS) == "20251123"
    assert shanghai_day(NOON_MS + 12 * HOUR_MS) == "20251124"


def test_clean_history_passes_and_totals_balance() -> None:
    o = oracle()
    settle(o, "a", PHARMACY, "m1", setlinfo("S1", PERSON, 10000, 8000, 8000, 12000), 10000, b"one")
    o.on_retry("a retry", PHARMACY, "m1", b"one")
    settle(o, "b", PHARMACY, "m2", setlinfo("S2", PERSON, 9000, 4000, 4000, 4000), 9000, b"two")
    cancel(o, "c", PHARMACY, "S1", {"medfee_sumamt": -10000, "fund_pay_sumamt": -8000, "psn_cash_pay": -2000})
    # The cancel gave 8000 back to the day: 12000 − 4000 may be granted again.
    settle(o, "d", PHARMACY, "m3", setlinfo("S3", PERSON, 9000, 8000, 8000, 8000), 9000, b"three")
    settle(o, "e", CLINIC, "m4", setlinfo("S4", PERSON, 5000, 3500, 0, 0), 5000, b"four")
    o.on_presettle("f", PHARMACY, setlinfo("", PERSON, 100, 0, 0, 0), 100, o.tick(), o.tick())
    expected = Totals(2, 18000, 12000, 6000)
    assert o.standing_totals(PHARMACY, "20251123") == expected
    o.on_totals(PHARMACY, expected, "0", {"setl_cnt": 2, "medfee_sumamt": 18000, "fund_pay_sumamt": 12000,
                                          "psn_cash_pay": 6000})
    assert o.violations == []


def test_over_allowance_is_caught() -> None:
    o = oracle()
    settle(o, "a", PHARMACY, "m1", setlinfo("S1", PERSON, 10000, 9000, 9000, 12000), 10000, b"one")
    settle(o, "b", PHARMACY, "m2", setlinfo("S2", PERSON, 10000, 5000, 5000, 5000), 10000, b"two")
    # Caught twice: the limit offered, and the day's standing sum.
    assert len(o.violations) == 2 and "allowance 12000, standing before it was sent 9000" in o.violations[0]
    assert "standing otc_pay 14000" in o.violations[1]


def test_otc_pay_over_the_stated_limit_is_caught() -> None:
    o = oracle()
    settle(o, "a", PHARMACY, "m1", setlinfo("S1", PERSON, 10000, 3000, 3000, 2000), 10000, b"one")
    assert len(o.violations) == 1


def test_earlier_day_does_not_count_against_today() -> None:
    o = oracle()
    yesterday = NOON_MS - 24 * HOUR_MS
    settle(o, "a", PHARMACY, "m1", setlinfo("S1", PERSON, 20000, 12000, 12000, 12000, yesterday), 20000, b"1")
    settle(o, "b", PHARMACY, "m2", setlinfo("S2", PERSON, 20000, 12000, 12000, 12000), 20000, b"2")
    assert o.violations == []


def test_over_cap_is_caught() -> None:
    o = oracle()
    for n in range(3):
        info = setlinfo(f"S{n}", f"51018200000000{n:02d}", 30000, 20000, 0, 0)
        settle(o, f"s{n}", CLINIC, f"m{n}", info, 30000, b"x")
    # The third is caught twice: over the room left when it was sent, and the month's sum over the cap.
    assert len(o.violations) == 2 and "over room" in o.violations[0] and "over cap 50000" in o.violations[1]


def test_amount_mismatch_is_caught() -> None:
    o = oracle()
    forged = {**setlinfo("S1", PERSON, 10000, 3000, 3000, 12000), "psn_cash_pay": 6000}
    settle(o, "a", PHARMACY, "m1", forged, 10000, b"one")
    o.on_presettle("b", PHARMACY, setlinfo("", PERSON, 9999, 0, 0, 0), 10000, o.tick(), o.tick())
    assert len(o.violations) == 2 and all("do not add up" in v for v in o.violations)


def test_retry_with_different_bytes_is_caught() -> None:
    o = oracle()
    settle(o, "a", PHARMACY, "m1", setlinfo("S1", PERSON, 10000, 3000, 3000, 12000), 10000, b"one")
    o.on_retry("a retry", PHARMACY, "m1", b"one, but re-signed")
    assert len(o.violations) == 1 and "different bytes" in o.violations[0]


def test_wrong_cancel_amounts_and_double_cancel_are_caught() -> None:
    o = oracle()
    settle(o, "a", PHARMACY, "m1", setlinfo("S1", PERSON, 10000, 3000, 3000, 12000), 10000, b"one")
    cancel(o, "c", PHARMACY, "S1", {"medfee_sumamt": -10000, "fund_pay_sumamt": -2000, "psn_cash_pay": -8000})
    cancel(o, "c again", PHARMACY, "S1", {"medfee_sumamt": -10000, "fund_pay_sumamt": -3000, "psn_cash_pay": -7000})
    assert len(o.violations) == 2


def test_unbalanced_totals_are_caught() -> None:
    o = oracle()
    o.on_totals(PHARMACY, Totals(1, 100, 50, 50), "1", {"setl_cnt": 2, "medfee_sumamt": 200,
                                                        "fund_pay_sumamt": 100, "psn_cash_pay": 100})
    assert len(o.violations) == 1 and "3201" in o.violations[0]


def concurrent_pair(o: Oracle, first: dict, second: dict, institution: str = PHARMACY) -> None:
    """Two settlements sent before either is answered (two terminals at once)."""
    sent_a, sent_b = o.tick(), o.tick()
    o.on_settle("a", institution, "m1", first, first["medfee_sumamt"], b"one", sent_a, o.tick())
    o.on_settle("b", institution, "m2", second, second["medfee_sumamt"], b"two", sent_b, o.tick())


def test_overlapping_settlements_are_not_held_to_each_other() -> None:
    # Sent at once, each may see the whole allowance; together they stay within it.
    o = oracle()
    concurrent_pair(o, setlinfo("S1", PERSON, 10000, 5000, 5000, 12000), setlinfo("S2", PERSON, 10000, 7000, 7000, 12000))
    assert o.violations == []


def test_forged_over_allowance_under_concurrency_is_caught() -> None:
    # Each answer alone is plausible (nothing stood when either was sent), but the gateway cannot
    # have granted both in any order: 8000 + 8000 is over the day's 12000.
    o = oracle()
    concurrent_pair(o, setlinfo("S1", PERSON, 10000, 8000, 8000, 12000), setlinfo("S2", PERSON, 10000, 8000, 8000, 12000))
    assert len(o.violations) == 1 and "standing otc_pay 16000 over the largest allowance" in o.violations[0]


def test_forged_over_cap_under_concurrency_is_caught() -> None:
    o = oracle()
    concurrent_pair(o, setlinfo("S1", "5101820000000002", 40000, 30000, 0, 0),
                    setlinfo("S2", "5101820000000003", 40000, 30000, 0, 0), institution=CLINIC)
    assert len(o.violations) == 1 and "over cap 50000" in o.violations[0]


def test_a_cancel_in_flight_no_longer_counts_as_standing() -> None:
    # S1 used the whole day; its cancellation was sent before S2's answer came back, so the
    # gateway may have applied it first and granted S2 the full allowance again.
    o = oracle()
    settle(o, "a", PHARMACY, "m1", setlinfo("S1", PERSON, 20000, 12000, 12000, 12000), 20000, b"one")
    sent = o.tick()
    o.on_cancel_sent(PHARMACY, "S1")
    o.on_cancel("c", PHARMACY, "S1", {"medfee_sumamt": -20000, "fund_pay_sumamt": -12000, "psn_cash_pay": -8000})
    o.on_settle("b", PHARMACY, "m2", setlinfo("S2", PERSON, 20000, 12000, 12000, 12000), 20000, b"two", sent,
                o.tick())
    assert o.violations == []


def test_limit_above_what_stood_when_sent_is_caught() -> None:
    o = oracle()
    settle(o, "a", PHARMACY, "m1", setlinfo("S1", PERSON, 10000, 9000, 9000, 12000), 10000, b"one")
    # A pre-settle sent after S1 was answered cannot be offered more than 12000 − 9000.
    o.on_presettle("p", PHARMACY, setlinfo("", PERSON, 10000, 3000, 3000, 5000), 10000, o.tick(), o.tick())
    assert len(o.violations) == 1 and "crt_payb_lmt_amt 5000" in o.violations[0]


def row(setl_id: str, mid: str, medfee: int, fund: int, status: str = "settled") -> dict:
    return {"setl_id": setl_id, "msgid": mid, "psn_no": PERSON, "setl_time": NOON_MS, "medfee_sumamt": medfee,
            "fund_pay_sumamt": fund, "psn_cash_pay": medfee - fund, "status": status}


def detail_oracle() -> Oracle:
    o = oracle()
    o.on_settle_sent(PHARMACY, "m1")
    settle(o, "a", PHARMACY, "m1", setlinfo("S2", PERSON, 10000, 3000, 3000, 12000), 10000, b"one")
    o.on_settle_sent(PHARMACY, "m2")
    return o


def test_detail_pages_match_what_was_committed() -> None:
    o = detail_oracle()
    pages = [{"rows": [row("S1", "old", 500, 100)], "next": "S1"},
             {"rows": [row("S2", "m1", 10000, 3000), row("S3", "m2", 800, 0, "reversed")], "next": None}]
    o.on_detail(PHARMACY, "20251123", pages, Totals(1, 500, 100, 400))
    assert o.violations == []


def test_detail_mismatches_are_caught() -> None:
    o = detail_oracle()
    pages = [{"rows": [row("S2", "m1", 10000, 2000), row("S3", "m2", 800, 0)], "next": "S2"},
             {"rows": [row("S1", "old", 500, 100)], "next": None}]
    o.on_detail(PHARMACY, "20251123", pages, Totals())
    found = "\n".join(o.violations)
    assert "S2 listed as" in found  # wrong amounts
    assert "never answered as committed" in found  # an unconfirmed msgid that is not reversed
    assert "next 'S2', expected 'S3'" in found  # next is not the page's last row
    assert "ascending" in found
    assert "before the run" in found  # history does not add up to the baseline
    assert len(o.violations) == 5


def test_detail_page_over_200_rows_is_caught() -> None:
    o = oracle()
    rows = [row(f"S{n:04d}", f"h{n}", 100, 0) for n in range(201)]
    o.on_detail(PHARMACY, "20251123", [{"rows": rows, "next": None}], Totals(201, 20100, 0, 20100))
    assert len(o.violations) == 1 and "201 rows" in o.violations[0]


def timed_out(o: Oracle, mid: str, info: dict, output: dict | None = None) -> None:
    """A settlement whose answer the POS never saw, then its 2601 (found, as the answer was 0)."""
    o.on_settle_sent(PHARMACY, mid)
    sent = o.tick()
    o.on_unseen_settle("t", PHARMACY, mid, info, info["medfee_sumamt"], sent, o.tick())
    o.on_reversal("r", PHARMACY, mid, "2102", True, output or {"reversed": True, "original_found": True})


def test_reversed_settlement_counts_nowhere_and_is_listed_reversed() -> None:
    o = oracle()
    timed_out(o, "m1", setlinfo("S1", PERSON, 20000, 12000, 12000, 12000))
    # The reversal gave the whole allowance back: another 12000 may be granted and stand.
    settle(o, "a", PHARMACY, "m2", setlinfo("S2", PERSON, 20000, 12000, 12000, 12000), 20000, b"two")
    o.on_resend_after_reversal("resend", "m1", {"infcode": -2, "err_code": "ORIGINAL_REVERSED"})
    assert o.standing_totals(PHARMACY, "20251123") == Totals(1, 20000, 12000, 8000)
    o.on_totals(PHARMACY, Totals(1, 20000, 12000, 8000), "0",
                {"setl_cnt": 1, "medfee_sumamt": 20000, "fund_pay_sumamt": 12000, "psn_cash_pay": 8000})
    pages = [{"rows": [row("S1", "m1", 20000, 12000, "reversed"), row("S2", "m2", 20000, 12000)], "next": None}]
    o.on_detail(PHARMACY, "20251123", pages, Totals())
    assert o.violations == [] and o.reversals == {("2102", "original found"): 1}


def test_gateway_still_counting_a_reversed_settlement_is_caught() -> None:
    o = oracle()
    timed_out(o, "m1", setlinfo("S1", PERSON, 20000, 12000, 12000, 12000))
    expected = o.standing_totals(PHARMACY, "20251123")
    o.on_totals(PHARMACY, expected, "1",
                {"setl_cnt": 1, "medfee_sumamt": 20000, "fund_pay_sumamt": 12000, "psn_cash_pay": 8000})
    o.on_detail(PHARMACY, "20251123", [{"rows": [row("S1", "m1", 20000, 12000)], "next": None}], Totals())
    o.on_resend_after_reversal("resend", "m1", {"infcode": 0, "err_code": ""})
    found = "\n".join(o.violations)
    assert "3201" in found and "S1 listed as" in found and "resend of reversed m1 answered infcode 0" in found
    assert len(o.violations) == 3


def test_wrong_reversal_answers_are_caught() -> None:
    o = oracle()
    timed_out(o, "m1", setlinfo("S1", PERSON, 100, 0, 0, 12000), {"reversed": True, "already_reversed": True})
    o.on_reversal("r2", PHARMACY, "m2", "2102", False, {"reversed": True, "original_found": True})
    o.on_reversal("r3", PHARMACY, "m3", "2102", None, {"reversed": True, "original_found": True})
    o.on_reversal("r4", PHARMACY, "m4", "2102", False, {"reversed": True, "original_found": False})
    assert len(o.violations) == 2
    assert "first 2601 of m1" in o.violations[0]
    assert "original_found True, but the original was refused" in o.violations[1]


def test_a_cancel_answered_after_a_regrant_does_not_inflate_the_day() -> None:
    # S1 used the whole day; its cancellation was applied first, then S2 was granted the day
    # again, and S2's answer arrived before the cancellation's: both are never standing together.
    o = oracle()
    settle(o, "a", PHARMACY, "m1", setlinfo("S1", PERSON, 20000, 12000, 12000, 12000), 20000, b"one")
    o.on_cancel_sent(PHARMACY, "S1")
    settle(o, "b", PHARMACY, "m2", setlinfo("S2", PERSON, 20000, 12000, 12000, 12000), 20000, b"two")
    o.on_cancel("c", PHARMACY, "S1", {"medfee_sumamt": -20000, "fund_pay_sumamt": -12000, "psn_cash_pay": -8000})
    assert o.violations == []
