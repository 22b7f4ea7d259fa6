"""The traffic model: shares, bill shape, determinism by seed, the day profile, who the bills are for."""

from __future__ import annotations

import itertools

import pytest
from sim_helpers import small_region

from simulators import traffic
from simulators.region import Region
from simulators.traffic import (
    FLAT,
    LINES_MAX,
    LINES_MIN,
    PHARMACY_DAY,
    S_PER_DAY,
    S_PER_HOUR,
    TIMEOUT_SHARE,
    DayProfile,
    TrafficModel,
)

BILLS = 2000
VOUCHER_SHARE_TOLERANCE = 0.03  # about 3.4 standard deviations at n=2000, p=0.2
RATE_PER_S = 10.0


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    return small_region(tmp_path_factory.mktemp("traffic"))


def settles(region: Region, seed: int, count: int, timeout_share: float = TIMEOUT_SHARE) -> list[dict]:
    model = TrafficModel(region, seed, RATE_PER_S, timeout_share=timeout_share)
    stream = (model.next_intent(float(n)) for n in itertools.count())
    return list(itertools.islice((i for i in stream if i["kind"] == "settle"), count))


def test_voucher_share_is_about_a_fifth(region: Region) -> None:
    bills = settles(region, 7, BILLS)
    share = sum(b["credential"] == "voucher" for b in bills) / BILLS
    assert abs(share - 0.20) < VOUCHER_SHARE_TOLERANCE, share


def test_bills_have_one_to_eight_consistent_positive_lines(region: Region) -> None:
    bills = settles(region, 8, BILLS)
    lengths = {len(b["items"]) for b in bills}
    assert lengths == set(range(LINES_MIN, LINES_MAX + 1))
    for line in (item for b in bills for item in b["items"]):
        assert all(isinstance(line[k], int) and line[k] > 0 for k in ("cnt", "pric", "det_item_fee_sumamt"))
        assert line["det_item_fee_sumamt"] == line["cnt"] * line["pric"]
        assert line["chrgitm_lv"] in {"01", "02", "03"}
    classes = {item["chrgitm_lv"] for b in bills for item in b["items"]}
    assert classes == {"01", "02", "03"}


def test_pharmacy_lines_mix_otc_rx_with_and_without_rxno(region: Region) -> None:
    pharmacy_lines = [item for b in settles(region, 9, BILLS) for item in b["items"]
                      if region.institutions[b["dev_no"][:12]].kind == "pharmacy"]
    kinds = {(item["otc"], "rxno" in item) for item in pharmacy_lines}
    assert kinds == {(True, False), (False, True), (False, False)}


def test_clinic_lines_name_a_doctor_and_carry_no_traceability_codes(region: Region) -> None:
    for bill in settles(region, 10, 500):
        institution = region.institutions[bill["dev_no"][:12]]
        if institution.kind != "pharmacy":
            assert all(i["bilg_dr_codg"] in institution.doctors and "drug_trac_codg" not in i for i in bill["items"])


def test_same_seed_same_stream_other_seed_other_stream(region: Region) -> None:
    first = list(TrafficModel(region, 5, RATE_PER_S).intents(60.0))
    assert first == list(TrafficModel(region, 5, RATE_PER_S).intents(60.0))
    assert first != list(TrafficModel(region, 6, RATE_PER_S).intents(60.0))


def test_poisson_arrivals_match_the_rate_and_cancels_refer_back(region: Region) -> None:
    intents = list(TrafficModel(region, 11, RATE_PER_S).intents(300.0))
    assert 0.9 * 3000 < len(intents) < 1.1 * 3000
    assert all(a["t_s"] < b["t_s"] for a, b in itertools.pairwise(intents))
    seqs = {i["seq"]: i["kind"] for i in intents}
    cancels = [i for i in intents if i["kind"] == "cancel"]
    assert cancels and all(seqs[c["of_seq"]] == "settle" and c["of_seq"] < c["seq"] for c in cancels)
    assert any(i.get("retries") for i in intents)


def test_rate_must_be_positive(region: Region) -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        TrafficModel(region, 1, 0.0)


def test_day_profile_shapes_the_rate(region: Region) -> None:
    def arrivals(start_s_of_day: float) -> int:
        model = TrafficModel(region, 12, RATE_PER_S, PHARMACY_DAY, start_s_of_day)
        return sum(1 for _ in model.intents(600.0))

    night, morning = arrivals(3 * S_PER_HOUR), arrivals(9.5 * S_PER_HOUR)
    # 03:00 weighs 1 and 09:30 weighs 20 of a daily mean of 246/24: 6000 × 0.098 ≈ 585 and 6000 × 1.95 ≈ 11707.
    assert 500 < night < 680 and 11200 < morning < 12200, (night, morning)
    factors = [PHARMACY_DAY.factor(h * S_PER_HOUR) for h in range(24)]
    assert abs(sum(factors) / 24 - 1.0) < 1e-9
    assert factors.index(max(factors)) in (9, 10, 18) and min(factors) == factors[3]
    # Two peaks (morning, evening) above the lunch dip; the night far below both.
    assert min(max(factors[8:12]), max(factors[17:21])) > 1.5 * factors[13] > 10 * factors[2]


def test_mean_rate_over_a_day_and_flat_profile(region: Region) -> None:
    model = TrafficModel(region, 13, 0.5, PHARMACY_DAY, 0.0)
    per_day = sum(1 for _ in model.intents(float(S_PER_DAY)))
    assert 0.95 * 43200 < per_day < 1.05 * 43200
    flat = TrafficModel(region, 13, RATE_PER_S, FLAT, 3 * S_PER_HOUR)
    assert flat.rate_at(0.0) == flat.rate_at(10 * S_PER_HOUR) == RATE_PER_S
    with pytest.raises(ValueError, match="24 positive"):
        DayProfile("bad", (1,) * 23)


def test_bills_go_to_derived_persons_and_sample_regulars(region: Region) -> None:
    population = region.population
    assert population.size == 2000 and len(population.sample) == 42
    people = [b["psn_no"] for b in settles(region, 14, BILLS)]
    derived = [p for p in people if p not in population.sample_by_psn_no]
    regulars = len(people) - len(derived)
    # SAMPLE_SHARE 0.3 plus the sample's own 42/2000 of the uniform draws: about 31.5 %; then the
    # who-pays bills (mutual aid, refused links, chronic patients) go to sample persons too.
    redirected = traffic.MUTUAL_AID_SHARE + traffic.REFUSED_LINK_SHARE + traffic.CHRONIC_SHARE
    assert abs(regulars / BILLS - (0.315 + redirected * 0.685)) < 0.04, regulars
    assert all(population.person(p).psn_no == p for p in people)


def test_timeout_share_is_near_the_constant_and_retries_skip_timeouts(region: Region) -> None:
    bills = settles(region, 15, 40_000)
    share = sum(b["timeout"] for b in bills) / len(bills)
    # n = 40 000, p = 0.005: sd ≈ 0.00035, so ±0.0015 is over 4 sd.
    assert abs(share - TIMEOUT_SHARE) < 0.0015, share
    assert all(b["retries"] == 0 for b in bills if b["timeout"])
    assert any(b["retries"] for b in bills) and all(isinstance(b["timeout"], bool) for b in bills)


def without_timeout(bill: dict) -> dict:
    return {k: v for k, v in bill.items() if k not in ("timeout", "retries")}


def test_timeout_share_changes_only_which_bills_time_out(region: Region) -> None:
    usual, often = settles(region, 16, 300), settles(region, 16, 300, timeout_share=0.5)
    assert 100 < sum(b["timeout"] for b in often) < 200 and sum(b["timeout"] for b in usual) < 10
    assert [without_timeout(b) for b in usual] == [without_timeout(b) for b in often]
    with pytest.raises(ValueError, match="timeout_share"):
        TrafficModel(region, 1, RATE_PER_S, timeout_share=1.5)
