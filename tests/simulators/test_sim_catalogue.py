"""The simulators' own catalogue reader and SPEC 13 line cut, against hand-computed lines."""

from __future__ import annotations

import datetime
import pathlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sim_helpers import small_region
from v2_helpers import CATALOGUE, CODE, CSV, DAY, NO_CATALOGUE, RULES, RX, TRACED, line

from simulators.catalogue import (
    CATALOGUE_OVERRIDE,
    Catalogue,
    LineRules,
    cut_bill,
    cut_line,
    cut_warnings,
    load_line_rules,
    parse_catalogue,
    without_v2_fields,
)
from simulators.region import RegionReadError

# (what, line, rules, pharmacy, day) -> (cut_reason, fulamt, overlmt, preselfpay, inscp, used class, used otc, override)
CASES = [
    ("listed OTC, sent as listed", line("X1", 1000), RULES, True, DAY, ("", 0, 0, 0, 1000, "01", True, False)),
    ("capped 02: over the cap own-pay, 20 % of the allowed self-pay first",
     line("X2", 2000, lv="02", otc=False, **RX), RULES, True, DAY, ("", 0, 500, 300, 1200, "02", False, False)),
    ("under the cap: the row's share rounds up", line("X2", 1001, cnt=3, lv="02", otc=False, **RX), RULES, True, DAY,
     ("", 0, 0, 601, 2402, "02", False, False)),
    ("the worked example's line 2: sent 01/OTC, the row wins", line("X2", 2000, **RX), RULES, True, DAY,
     ("", 0, 500, 300, 1200, "02", False, True)),
    ("prescription drug without rxno at a pharmacy", line("X2", 2000, lv="02", otc=False), RULES, True, DAY,
     ("RX_REQUIRED", 2000, 0, 0, 0, "02", False, False)),
    ("an empty rxno counts as absent", line("X2", 2000, lv="02", otc=False, rxno=""), RULES, True, DAY,
     ("RX_REQUIRED", 2000, 0, 0, 0, "02", False, False)),
    ("no rxno needed at a clinic", line("X2", 2000, lv="02", otc=False), RULES, False, DAY,
     ("", 0, 500, 300, 1200, "02", False, False)),
    ("the row's OTC flag, not the till's, decides RX_REQUIRED", line("X2", 2000, otc=True), RULES, True, DAY,
     ("RX_REQUIRED", 2000, 0, 0, 0, "02", False, True)),
    ("restricted, not approved", line("X3", 500), RULES, True, DAY,
     ("RESTRICTED_USE", 500, 0, 0, 0, "01", True, False)),
    ("restricted, approved", line("X3", 500, hosp_appr_flag="1"), RULES, True, DAY,
     ("", 0, 0, 0, 500, "01", True, False)),
    ("restricted, approval flag \"0\"", line("X3", 500, hosp_appr_flag="0"), RULES, True, DAY,
     ("RESTRICTED_USE", 500, 0, 0, 0, "01", True, False)),
    ("RX_REQUIRED comes before RESTRICTED_USE", line("X8", 700, lv="02", otc=False), RULES, True, DAY,
     ("RX_REQUIRED", 700, 0, 0, 0, "02", False, False)),
    ("restricted 02 approved: the policy's share", line("X8", 1000, lv="02", otc=False, hosp_appr_flag="1", **RX),
     RULES, True, DAY, ("", 0, 0, 100, 900, "02", False, False)),
    ("not in the catalogue: the till's class and flag", line("X9", 300), RULES, True, DAY,
     ("NOT_IN_CATALOGUE", 300, 0, 0, 0, "01", True, False)),
    ("a suspended doctor comes first", line("X9", 300, bilg_dr_codg="DR-S"), RULES, True, DAY,
     ("DOCTOR_SUSPENDED", 300, 0, 0, 0, "01", True, False)),
    ("DOCTOR_SUSPENDED before RX_REQUIRED", line("X2", 300, lv="02", otc=False, bilg_dr_codg="DR-S"), RULES, True,
     DAY, ("DOCTOR_SUSPENDED", 300, 0, 0, 0, "02", False, False)),
    ("丙类 over its cap: allowed all own-pay, the rest over the cap", line("X4", 1000, cnt=2, lv="03"), RULES, True,
     DAY, ("", 1600, 400, 0, 0, "03", True, False)),
    ("the row valid today: the revised cap", line("X5", 1000), RULES, True, DAY, ("", 0, 100, 0, 900, "01", True, False)),
    ("the row valid on its last day: the old cap", line("X5", 1000), RULES, True, datetime.date(2025, 6, 30),
     ("", 0, 0, 0, 1000, "01", True, False)),
    ("a row from 2031 is not valid today", line("X6", 400, lv="02"), RULES, True, DAY,
     ("NOT_IN_CATALOGUE", 400, 0, 0, 0, "02", True, False)),
    ("a cap of 0: everything over the cap", line("X7", 300, cnt=2), RULES, True, DAY,
     ("", 0, 600, 0, 0, "01", True, False)),
    ("override of the class alone", line("X1", 1000, lv="03"), RULES, True, DAY, ("", 0, 0, 0, 1000, "01", True, True)),
    ("trace codes required: a pharmacy line without one", line("X1", 1000), TRACED, True, DAY,
     ("TRACE_CODE_MISSING", 1000, 0, 0, 0, "01", True, False)),
    ("trace codes required: with one", line("X1", 1000, drug_trac_codg=[CODE]), TRACED, True, DAY,
     ("", 0, 0, 0, 1000, "01", True, False)),
    ("a split-package code is a code", line("X1", 1000, drug_trac_codg=[CODE], trdn_flag="1"), TRACED, True, DAY,
     ("", 0, 0, 0, 1000, "01", True, False)),
    ("trace codes are not required before the day", line("X1", 1000), TRACED, True, datetime.date(2024, 12, 31),
     ("", 0, 0, 0, 1000, "01", True, False)),
    ("nor at a clinic", line("X1", 1000), TRACED, False, DAY, ("", 0, 0, 0, 1000, "01", True, False)),
    ("RESTRICTED_USE before TRACE_CODE_MISSING", line("X3", 500), TRACED, True, DAY,
     ("RESTRICTED_USE", 500, 0, 0, 0, "01", True, False)),
    ("without a catalogue: v1, the till decides", line("X9", 1000, lv="02", otc=False, **RX), NO_CATALOGUE, True, DAY,
     ("", 0, 0, 100, 900, "02", False, False)),
    ("without a catalogue nothing is restricted or capped", line("X3", 500), NO_CATALOGUE, True, DAY,
     ("", 0, 0, 0, 500, "01", True, False)),
]


@pytest.mark.parametrize(("what", "sent", "rules", "pharmacy", "day", "expected"), CASES, ids=[c[0] for c in CASES])
def test_cut_line_by_hand(what: str, sent: dict, rules: LineRules, pharmacy: bool, day: datetime.date,
                          expected: tuple) -> None:
    cut = cut_line(sent, rules, pharmacy, day)
    assert (cut.cut_reason, cut.fulamt_ownpay_amt, cut.overlmt_amt, cut.preselfpay_amt, cut.inscp_scp_amt,
            cut.chrgitm_lv, cut.otc, cut.overridden) == expected, what
    assert cut.drug_trac_codg == sent.get("drug_trac_codg", [])


def test_the_protocol_guides_worked_example() -> None:
    # docs/protocol.md section 10a: four lines sent as 01/OTC at a grade-A pharmacy.
    items = [line("X1", 1000), line("X2", 2000, **RX), line("X3", 500), line("X9", 300)]
    for n, item in enumerate(items, start=1):
        item["feedetl_sn"] = str(n)
    cuts = cut_bill(items, RULES, True, DAY)
    assert [(c.cut_reason, c.fulamt_ownpay_amt, c.overlmt_amt, c.preselfpay_amt, c.inscp_scp_amt) for c in cuts] == [
        ("", 0, 0, 0, 1000), ("", 0, 500, 300, 1200), ("RESTRICTED_USE", 500, 0, 0, 0),
        ("NOT_IN_CATALOGUE", 300, 0, 0, 0)]
    assert cut_warnings(cuts) == ["RESTRICTED_USE", "NOT_IN_CATALOGUE", CATALOGUE_OVERRIDE]


def test_warnings_name_each_reason_once_in_first_seen_order() -> None:
    items = [line("X9", 100), line("X3", 100), line("X9", 100), line("X1", 100)]
    assert cut_warnings(cut_bill(items, RULES, True, DAY)) == ["NOT_IN_CATALOGUE", "RESTRICTED_USE"]
    assert cut_warnings(cut_bill([line("X1", 100)], RULES, True, DAY)) == []


def test_a_gateway_that_ignores_the_v2_fields_sees_them_absent() -> None:
    sent = [line("X3", 500, hosp_appr_flag="1", drug_trac_codg=[CODE], trdn_flag="1")]
    assert without_v2_fields(sent[0]) == line("X3", 500)
    [as_sent] = cut_bill(sent, TRACED, True, DAY)
    [ignored] = cut_bill(sent, TRACED, True, DAY, line_fields=False)
    assert (as_sent.cut_reason, as_sent.drug_trac_codg) == ("", [CODE])
    assert (ignored.cut_reason, ignored.drug_trac_codg) == ("RESTRICTED_USE", [])


@given(code=st.sampled_from(["X1", "X2", "X3", "X4", "X5", "X6", "X7", "X8", "X9"]),
       pric=st.integers(0, 10**6), cnt=st.integers(1, 1000), lv=st.sampled_from(["01", "02", "03"]),
       otc=st.booleans(), rx=st.booleans(), approved=st.booleans(), pharmacy=st.booleans(),
       day=st.dates(datetime.date(2024, 1, 1), datetime.date(2032, 1, 1)))
def test_every_line_adds_up(code: str, pric: int, cnt: int, lv: str, otc: bool, rx: bool, approved: bool,
                            pharmacy: bool, day: datetime.date) -> None:
    sent = line(code, pric, cnt, lv, otc, **(RX if rx else {}), hosp_appr_flag="1" if approved else "0")
    cut = cut_line(sent, TRACED, pharmacy, day)
    parts = (cut.fulamt_ownpay_amt, cut.overlmt_amt, cut.preselfpay_amt, cut.inscp_scp_amt)
    assert sum(parts) == cnt * pric and min(parts) >= 0
    assert not cut.cut_reason or parts == (cnt * pric, 0, 0, 0)


def test_lookup_by_day_inclusive_with_gaps() -> None:
    assert CATALOGUE.lookup("X5", datetime.date(2025, 6, 30)).pric_uplmt_fen == 1000  # type: ignore[union-attr]
    assert CATALOGUE.lookup("X5", datetime.date(2025, 7, 1)).pric_uplmt_fen == 900  # type: ignore[union-attr]
    assert CATALOGUE.lookup("X1", datetime.date(2023, 12, 31)) is None
    assert CATALOGUE.lookup("X6", datetime.date(2031, 1, 1)) is not None
    assert CATALOGUE.lookup("nope", DAY) is None
    assert CATALOGUE.latest("X5").pric_uplmt_fen == 900 and len(CATALOGUE) == 9
    assert CATALOGUE.rows["X2"][0].selfpay_prop_permille == 200  # a quoted name with a comma


@pytest.mark.parametrize(("text", "message"), [
    ("", ":1: header"),
    ("med_list_codg,name\nX1,a\n", ":1: header"),
    (CSV.replace("X4,丙类药,03,1,,800", "X4,丙类药,04,1,,800"), ":6: chrgitm_lv"),
    (CSV.replace("X7,零限价,01,1,,0,0", "X7,零限价,01,1,,-5,0"), ":10: pric_uplmt_fen"),
    (CSV.replace("2031-01-01", "2031-02-30"), ":9: valid_from"),
    (CSV.replace("X1,维生素C片,01,1,,,0", "X1,维生素C片,01,1,,0"), ":2: row: 8 fields"),
    (CSV.replace('"阿莫西林胶囊 0.25g, 24粒"', '"unterminated'), r":\d+: row"),
])
def test_bad_catalogues_are_refused_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(RegionReadError, match=message):
        parse_catalogue(text, "catalogue.csv")


def test_the_region_catalogue_is_read_the_simulators_way(tmp_path: pathlib.Path) -> None:
    region = small_region(tmp_path)
    rules = load_line_rules(region)
    assert isinstance(rules.catalogue, Catalogue) and len(rules.catalogue) == 74
    assert "XA01" in rules.catalogue.rows and any(r.lmt_used for rs in rules.catalogue.rows.values() for r in rs)
    assert rules.suspended and all("-DR" in code for code in rules.suspended)  # init suspends one clinic doctor
    assert rules.trace_required_from is None and rules.trace_retention_days == 400
    config = region.path / "gateway.toml"
    config.write_text(config.read_text().replace('catalogue = "catalogue.csv"\n', ""))
    assert load_line_rules(region).catalogue is None
