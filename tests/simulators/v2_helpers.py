"""Shared by the simulators' v2 tests: a hand-made catalogue, its rules and a bill-line builder."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from simulators.catalogue import LineRules, parse_catalogue

# X1 甲类 OTC; X2 乙类 prescription drug, own 20 % self-pay share, 15-yuan cap (the worked example of
# the protocol guide); X3 restricted 甲类 OTC; X4 丙类 OTC capped at 8 yuan; X5 a price revision
# (cap 10 yuan to 2025-06-30, 9 yuan from 2025-07-01); X6 listed from 2031; X7 capped at 0;
# X8 restricted 乙类 prescription drug.
CSV = """\ufeffmed_list_codg,name,chrgitm_lv,otc,selfpay_prop_permille,pric_uplmt_fen,lmt_used,valid_from,valid_to\r
X1,维生素C片,01,1,,,0,2024-01-01,\r
X2,"阿莫西林胶囊 0.25g, 24粒",02,0,200,1500,0,,\r
X3,限定药,01,1,,,1,,\r
\r
X4,丙类药,03,1,,800,0,,\r
X5,旧价,01,1,,1000,0,,2025-06-30\r
X5,新价,01,1,,900,0,2025-07-01,\r
X6,新药,01,1,,,0,2031-01-01,\r
X7,零限价,01,1,,0,0,,\r
X8,限定处方药,02,0,,,1,,\r
"""
CATALOGUE = parse_catalogue(CSV)
DAY = datetime.date(2025, 11, 23)
RULES = LineRules(CATALOGUE, 100, {"310": 700, "390": 500}, frozenset({"DR-S"}))
TRACED = dataclasses.replace(RULES, trace_required_from=datetime.date(2025, 1, 1))
NO_CATALOGUE = dataclasses.replace(RULES, catalogue=None)
CODE = "12345670000000000001"   # a traceability code


def line(code: str, pric: int, cnt: int = 1, lv: str = "01", otc: bool = True, **extra: Any) -> dict[str, Any]:
    return {"feedetl_sn": "1", "med_list_codg": code, "chrgitm_lv": lv, "otc": otc, "cnt": cnt, "pric": pric,
            "det_item_fee_sumamt": cnt * pric, "bilg_dr_codg": "DR-1", **extra}


RX = {"rxno": "RX1"}
