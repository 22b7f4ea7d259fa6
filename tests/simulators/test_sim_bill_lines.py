"""v2 bill lines: catalogue codes as a till sends them, the seeded special cases, traceability codes."""

from __future__ import annotations

import collections
import itertools
import pathlib
from typing import Any

import pytest
from sim_helpers import small_region

from simulators.bill_lines import DRUG_PREFIXES, RESALE_AFTER_S, SERVICE_PREFIX, LineShares
from simulators.catalogue import Catalogue, region_catalogue
from simulators.region import Region
from simulators.traffic import DRUG_CODES, TrafficModel

BILLS = 3000


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    return small_region(tmp_path_factory.mktemp("lines"))


@pytest.fixture(scope="module")
def catalogue(region: Region) -> Catalogue:
    found = region_catalogue(region)
    assert found is not None
    return found


def settles(region: Region, seed: int, count: int, shares: LineShares = LineShares()) -> list[dict[str, Any]]:
    """`count` settle intents one second apart."""
    model = TrafficModel(region, seed, 10.0, line_shares=shares)
    stream = (model.next_intent(float(n)) for n in itertools.count())
    return list(itertools.islice((i for i in stream if i["kind"] == "settle"), count))


@pytest.fixture(scope="module")
def bills(region: Region) -> list[dict[str, Any]]:
    return settles(region, 31, BILLS)


def is_pharmacy(region: Region, bill: dict[str, Any]) -> bool:
    return region.institutions[bill["dev_no"][:12]].kind == "pharmacy"


def lines(bills: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for bill in bills for item in bill["items"]]


def share(part: int, whole: int) -> float:
    assert whole > 0
    return part / whole


def test_listed_lines_carry_their_rows_class_and_flag_but_now_and_then(bills: list, catalogue: Catalogue) -> None:
    items = lines(bills)
    listed = [i for i in items if i["med_list_codg"] in catalogue.rows]
    unlisted = [i for i in items if i["med_list_codg"] not in catalogue.rows]
    assert abs(share(len(unlisted), len(items)) - 0.02) < 0.008  # n ≈ 13 500: sd ≈ 0.0012
    assert all(len(i["med_list_codg"]) == 23 and i["med_list_codg"][0] == "X" for i in unlisted)
    overridden = [i for i in listed if (i["chrgitm_lv"], i["otc"]) != (catalogue.latest(i["med_list_codg"]).chrgitm_lv,
                                                                       catalogue.latest(i["med_list_codg"]).otc)]
    assert abs(share(len(overridden), len(listed)) - 0.03) < 0.01
    assert all((i["chrgitm_lv"], i["otc"]) in {("01", True), ("02", False)} for i in overridden)
    assert all(i["det_item_fee_sumamt"] == i["cnt"] * i["pric"] > 0 for i in items)


def test_prices_keep_to_the_cap_but_now_and_then(bills: list, catalogue: Catalogue) -> None:
    capped = [i for i in lines(bills) if i["med_list_codg"] in catalogue.rows
              and catalogue.latest(i["med_list_codg"]).pric_uplmt_fen]
    over = [i for i in capped if i["pric"] > catalogue.latest(i["med_list_codg"]).pric_uplmt_fen]  # type: ignore[operator]
    assert len(capped) > 300 and abs(share(len(over), len(capped)) - 0.20) < 0.07


def test_restricted_lines_are_mostly_sent_approved(bills: list, catalogue: Catalogue) -> None:
    items = [i for i in lines(bills) if i["med_list_codg"] in catalogue.rows]
    restricted = [i for i in items if catalogue.latest(i["med_list_codg"]).lmt_used]
    assert all("hosp_appr_flag" not in i for i in items if i not in restricted)
    unapproved = [i for i in restricted if i["hosp_appr_flag"] == "0"]
    assert {i["hosp_appr_flag"] for i in restricted} == {"0", "1"}
    assert len(restricted) > 200 and abs(share(len(unapproved), len(restricted)) - 0.20) < 0.08


def test_pharmacy_drugs_carry_a_code_per_package_sold_once_unless_resold(region: Region, bills: list) -> None:
    first_sold: dict[str, float] = {}
    resold = coded = drugs = 0
    for bill in bills:
        pharmacy = is_pharmacy(region, bill)
        for item in bill["items"]:
            codes = item.get("drug_trac_codg", [])
            assert pharmacy or not codes
            assert not pharmacy or not item["med_list_codg"].startswith(SERVICE_PREFIX)
            if not pharmacy or not item["med_list_codg"].startswith(DRUG_PREFIXES):
                assert not codes
                continue
            drugs += 1
            coded += bool(codes)
            assert all(len(c) == 20 and c.isdigit() for c in codes)
            if item.get("trdn_flag") == "1":
                assert len(codes) == 1
                continue
            assert "trdn_flag" not in item and len(codes) in (0, item["cnt"])
            for code in codes:
                if code in first_sold:
                    resold += 1
                    assert item["cnt"] == 1 and first_sold[code] <= bill["t_s"] - RESALE_AFTER_S
                else:
                    first_sold[code] = bill["t_s"]
    assert abs(share(coded, drugs) - 0.90) < 0.02
    pharmacy_bills = sum(is_pharmacy(region, b) for b in bills)
    assert abs(share(resold, pharmacy_bills) - 0.03) < 0.015


def test_split_packages_repeat_the_opened_packages_code(region: Region, bills: list) -> None:
    split = [i for i in lines(bills) if i.get("trdn_flag") == "1"]
    assert split and len({i["drug_trac_codg"][0] for i in split}) < len(split)
    counter = collections.Counter((i["bilg_dr_codg"], i["med_list_codg"]) for i in split)
    same = next(key for key, n in counter.items() if n > 1)
    assert len({i["drug_trac_codg"][0] for i in split if (i["bilg_dr_codg"], i["med_list_codg"]) == same}) == 1


def test_shares_are_probabilities_and_steer_the_cases(region: Region) -> None:
    with pytest.raises(ValueError, match="resale"):
        LineShares(resale=1.5)
    none = LineShares(not_in_catalogue=0, over_cap=0, unapproved=0, override=0, coded=0, resale=0)
    items = lines(settles(region, 32, 300, none))
    assert all("drug_trac_codg" not in i and i.get("hosp_appr_flag", "1") == "1" for i in items)


def test_without_a_catalogue_bills_are_drawn_as_before(tmp_path: pathlib.Path) -> None:
    region = small_region(tmp_path)
    config = region.path / "gateway.toml"
    config.write_text(config.read_text().replace('catalogue = "catalogue.csv"\n', ""))
    items = lines(settles(region, 33, 200))
    assert all(i["med_list_codg"] in DRUG_CODES and "drug_trac_codg" not in i for i in items)
