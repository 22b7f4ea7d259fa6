"""The oracle passes a clean history and catches each kind of forged violation."""

from __future__ import annotations

from sim_helpers import ALLOWANCE_A_FEN, CAP_FEN, NOON_MS, setlinfo

from simulators.oracle import Oracle, Totals, shanghai_day

PHARMACY, CLINIC = "P51018200001", "C51018200001"
PERSON = "5101820000000001"
HOUR_MS = 3_600_000


def oracle() -> Oracle:
    return Oracle({PHARMACY: ALLOWANCE_A_FEN, CLINIC: 0}, {PHARMACY: CAP_FEN, CLINIC: CAP_FEN})


def test_noon_is_a_shanghai_day() -> None:
    assert shanghai_day(NOON_MS) == "20251123"
    assert shanghai_day(NOON_MS + 12 * HOUR_MS) == "20251124"


def test_clean_history_passes_and_totals_balance() -> None:
    o = oracle()
    o.on_settle("a", PHARMACY, "m1", setlinfo("S1", PERSON, 10000, 8000, 8000, 12000), 10000, b"one")
    o.on_retry("a retry", PHARMACY, "m1", b"one")
    o.on_settle("b", PHARMACY, "m2", setlinfo("S2", PERSON, 9000, 4000, 4000, 4000), 9000, b"two")
    o.on_cancel("c", PHARMACY, "S1", {"medfee_sumamt": -10000, "fund_pay_sumamt": -8000, "psn_cash_pay": -2000})
    # The cancel gave 8000 back to the day: 12000 − 4000 may be granted again.
    o.on_settle("d", PHARMACY, "m3", setlinfo("S3", PERSON, 9000, 8000, 8000, 8000), 9000, b"three")
    o.on_settle("e", CLINIC, "m4", setlinfo("S4", PERSON, 5000, 3500, 0, 0), 5000, b"four")
    o.on_presettle("f", PHARMACY, setlinfo("", PERSON, 100, 0, 0, 0), 100, NOON_MS)
    expected = Totals(2, 18000, 12000, 6000)
    assert o.standing_totals(PHARMACY, "20251123") == expected
    o.on_totals(PHARMACY, expected, "0", {"setl_cnt": 2, "medfee_sumamt": 18000, "fund_pay_sumamt": 12000,
                                          "psn_cash_pay": 6000})
    assert o.violations == []


def test_over_allowance_is_caught() -> None:
    o = oracle()
    o.on_settle("a", PHARMACY, "m1", setlinfo("S1", PERSON, 10000, 9000, 9000, 12000), 10000, b"one")
    o.on_settle("b", PHARMACY, "m2", setlinfo("S2", PERSON, 10000, 5000, 5000, 5000), 10000, b"two")
    assert len(o.violations) == 1 and "allowance 12000, used earlier today 9000" in o.violations[0]


def test_otc_pay_over_the_stated_limit_is_caught() -> None:
    o = oracle()
    o.on_settle("a", PHARMACY, "m1", setlinfo("S1", PERSON, 10000, 3000, 3000, 2000), 10000, b"one")
    assert len(o.violations) == 1


def test_earlier_day_does_not_count_against_today() -> None:
    o = oracle()
    yesterday = NOON_MS - 24 * HOUR_MS
    o.on_settle("a", PHARMACY, "m1", setlinfo("S1", PERSON, 20000, 12000, 12000, 12000, yesterday), 20000, b"1")
    o.on_settle("b", PHARMACY, "m2", setlinfo("S2", PERSON, 20000, 12000, 12000, 12000), 20000, b"2")
    assert o.violations == []


def test_over_cap_is_caught() -> None:
    o = oracle()
    for n in range(3):
        info = setlinfo(f"S{n}", f"51018200000000{n:02d}", 30000, 20000, 0, 0)
        o.on_settle(f"s{n}", CLINIC, f"m{n}", info, 30000, b"x")
    assert len(o.violations) == 1 and "over cap 50000" in o.violations[0]


def test_amount_mismatch_is_caught() -> None:
    o = oracle()
    forged = {**setlinfo("S1", PERSON, 10000, 3000, 3000, 12000), "psn_cash_pay": 6000}
    o.on_settle("a", PHARMACY, "m1", forged, 10000, b"one")
    o.on_presettle("b", PHARMACY, setlinfo("", PERSON, 9999, 0, 0, 0), 10000, NOON_MS)
    assert len(o.violations) == 2 and all("do not add up" in v for v in o.violations)


def test_retry_with_different_bytes_is_caught() -> None:
    o = oracle()
    o.on_settle("a", PHARMACY, "m1", setlinfo("S1", PERSON, 10000, 3000, 3000, 12000), 10000, b"one")
    o.on_retry("a retry", PHARMACY, "m1", b"one, but re-signed")
    assert len(o.violations) == 1 and "different bytes" in o.violations[0]


def test_wrong_cancel_amounts_and_double_cancel_are_caught() -> None:
    o = oracle()
    o.on_settle("a", PHARMACY, "m1", setlinfo("S1", PERSON, 10000, 3000, 3000, 12000), 10000, b"one")
    o.on_cancel("c", PHARMACY, "S1", {"medfee_sumamt": -10000, "fund_pay_sumamt": -2000, "psn_cash_pay": -8000})
    o.on_cancel("c again", PHARMACY, "S1", {"medfee_sumamt": -10000, "fund_pay_sumamt": -3000, "psn_cash_pay": -7000})
    assert len(o.violations) == 2


def test_unbalanced_totals_are_caught() -> None:
    o = oracle()
    o.on_totals(PHARMACY, Totals(1, 100, 50, 50), "1", {"setl_cnt": 2, "medfee_sumamt": 200,
                                                        "fund_pay_sumamt": 100, "psn_cash_pay": 100})
    assert len(o.violations) == 1 and "3201" in o.violations[0]
