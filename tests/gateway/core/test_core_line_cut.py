"""The v2 line cut of SPEC 13, rule by rule and in its order (gateway/core/settlement.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, strategies as st

from gateway.core.catalogue import Row
from gateway.core.settlement import CATALOGUE_OVERRIDE, LineCut, LineRules, _cut_warnings, cut_line


@dataclasses.dataclass(frozen=True)
class L:
    """A bill line as protocol decodes it (defaults: one 甲类 OTC unit of 10 yuan, doctor D1)."""

    feedetl_sn: str = "1"
    med_list_codg: str = "C1"
    chrgitm_lv: str | None = "01"
    otc: bool | None = True
    rxno: str | None = None
    cnt: int = 1
    pric: int = 1000
    det_item_fee_sumamt: int = 1000
    bilg_dr_codg: str = "D1"
    hosp_appr_flag: str = "0"
    drug_trac_codg: tuple[str, ...] = ("T1",)
    trdn_flag: str = "0"


def row(lv: str = "01", otc: bool = True, prop: int | None = None, cap: int | None = None,
        lmt: bool = False) -> Row:
    return Row("C1", "name", lv, otc, prop, cap, lmt, None, None)


def rules(pharmacy: bool = True, catalogue_on: bool = True, trace_required: bool = True,
          suspended: tuple[str, ...] = ()) -> LineRules:
    return LineRules(pharmacy=pharmacy, catalogue_on=catalogue_on, trace_required=trace_required,
                     selfpay_prop_permille=100, doctor_suspended=lambda code: code in suspended)


def parts(cut: LineCut) -> tuple[int, int, int, int, str]:
    return cut.fulamt_ownpay_amt, cut.overlmt_amt, cut.preselfpay_amt, cut.inscp_scp_amt, cut.cut_reason


# (case, line changes, row or None, rules changes, expected (fulamt, overlmt, preselfpay, inscp, reason))
CASES: list[tuple[str, dict[str, Any], Row | None, dict[str, Any], tuple[int, int, int, int, str]]] = [
    ("uncut 01", {}, row(), {}, (0, 0, 0, 1000, "")),
    ("uncut 02, policy share", {}, row("02"), {}, (0, 0, 100, 900, "")),
    ("uncut 02, row share rounds up", {"cnt": 3, "pric": 333, "det_item_fee_sumamt": 999}, row("02", prop=150),
     {}, (0, 0, 150, 849, "")),
    ("uncut 03", {}, row("03"), {}, (1000, 0, 0, 0, "")),
    ("price cap", {"cnt": 2, "pric": 1000, "det_item_fee_sumamt": 2000}, row(cap=800), {}, (0, 400, 0, 1600, "")),
    ("price cap on 02", {"cnt": 2, "pric": 1000, "det_item_fee_sumamt": 2000}, row("02", cap=800), {},
     (0, 400, 160, 1440, "")),
    ("price cap on 03", {}, row("03", cap=600), {}, (600, 400, 0, 0, "")),
    ("cap above price", {}, row(cap=5000), {}, (0, 0, 0, 1000, "")),
    ("cap of 0", {}, row(cap=0), {}, (0, 1000, 0, 0, "")),
    ("1 suspended doctor first", {"bilg_dr_codg": "DX", "drug_trac_codg": ()}, None, {"suspended": ("DX",)},
     (1000, 0, 0, 0, "DOCTOR_SUSPENDED")),
    ("2 not in catalogue", {"otc": False, "drug_trac_codg": ()}, None, {}, (1000, 0, 0, 0, "NOT_IN_CATALOGUE")),
    ("2 catalogue off: no such cut", {}, None, {"catalogue_on": False}, (0, 0, 0, 1000, "")),
    ("3 rx required by the row's flag", {"drug_trac_codg": ()}, row(otc=False, lmt=True), {},
     (1000, 0, 0, 0, "RX_REQUIRED")),
    ("3 rx present", {"rxno": "R1"}, row(otc=False), {}, (0, 0, 0, 1000, "")),
    ("3 clinics need no rxno", {}, row(otc=False), {"pharmacy": False}, (0, 0, 0, 1000, "")),
    ("4 restricted", {"drug_trac_codg": ()}, row(lmt=True), {}, (1000, 0, 0, 0, "RESTRICTED_USE")),
    ("4 restricted, approved", {"hosp_appr_flag": "1"}, row(lmt=True), {}, (0, 0, 0, 1000, "")),
    ("5 trace code missing", {"drug_trac_codg": ()}, row(), {}, (1000, 0, 0, 0, "TRACE_CODE_MISSING")),
    ("5 not yet required", {"drug_trac_codg": ()}, row(), {"trace_required": False}, (0, 0, 0, 1000, "")),
    ("5 clinics need no code", {"drug_trac_codg": ()}, row(), {"pharmacy": False}, (0, 0, 0, 1000, "")),
    ("cut ignores the cap", {"drug_trac_codg": ()}, row(cap=100), {}, (1000, 0, 0, 0, "TRACE_CODE_MISSING")),
]


@pytest.mark.parametrize("case, changes, catalogue_row, rule_changes, expected", CASES, ids=[c[0] for c in CASES])
def test_each_rule_and_its_order(case: str, changes: dict[str, Any], catalogue_row: Row | None,
                                 rule_changes: dict[str, Any], expected: tuple[int, int, int, int, str]) -> None:
    cut = cut_line(L(**changes), catalogue_row, rules(**rule_changes))
    assert parts(cut) == expected


def test_the_row_decides_class_and_otc_and_an_override_is_noticed() -> None:
    cut = cut_line(L(chrgitm_lv="01", otc=True, rxno="R"), row("03", otc=False), rules())
    assert (cut.chrgitm_lv, cut.otc, cut.overridden) == ("03", False, True)
    same = cut_line(L(chrgitm_lv=None, otc=None), row("02"), rules())
    assert (same.chrgitm_lv, same.otc, same.overridden) == ("02", True, False)
    unknown = cut_line(L(chrgitm_lv="02", otc=True), None, rules())
    assert (unknown.chrgitm_lv, unknown.otc, unknown.overridden) == ("02", True, False)


def test_cut_reasons_warn_once_each_then_the_override() -> None:
    cuts = [cut_line(L(feedetl_sn=str(n), **changes), r, rules()) for n, (changes, r) in enumerate([
        ({"drug_trac_codg": ()}, row()), ({}, None), ({"drug_trac_codg": ()}, row()),
        ({"chrgitm_lv": "02"}, row())])]
    assert _cut_warnings(cuts) == ["TRACE_CODE_MISSING", "NOT_IN_CATALOGUE", CATALOGUE_OVERRIDE]


@given(cnt=st.integers(1, 50), pric=st.integers(0, 10**6), cap=st.none() | st.integers(0, 10**6),
       lv=st.sampled_from(["01", "02", "03"]), prop=st.none() | st.integers(0, 1000),
       found=st.booleans(), lmt=st.booleans(), appr=st.booleans(), traced=st.booleans(), rx=st.booleans(),
       otc=st.booleans(), pharmacy=st.booleans())
def test_every_line_adds_up(cnt: int, pric: int, cap: int | None, lv: str, prop: int | None, found: bool,
                            lmt: bool, appr: bool, traced: bool, rx: bool, otc: bool, pharmacy: bool) -> None:
    line = L(cnt=cnt, pric=pric, det_item_fee_sumamt=cnt * pric, hosp_appr_flag="1" if appr else "0",
             drug_trac_codg=("T",) if traced else (), rxno="R" if rx else None)
    cut = cut_line(line, row(lv, otc, prop, cap, lmt) if found else None, rules(pharmacy=pharmacy))
    det = cut.fulamt_ownpay_amt + cut.overlmt_amt + cut.preselfpay_amt + cut.inscp_scp_amt
    assert det == line.det_item_fee_sumamt
    assert min(cut.fulamt_ownpay_amt, cut.overlmt_amt, cut.preselfpay_amt, cut.inscp_scp_amt) >= 0
    if cut.cut_reason:
        assert cut.fulamt_ownpay_amt == det
