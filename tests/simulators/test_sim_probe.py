"""The v2 probe: which line, and what its answer says about the gateway."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from v2_helpers import CATALOGUE, CSV, DAY

from simulators.catalogue import parse_catalogue
from simulators.probe import ProbeError, probe_line, probe_row, verdict


def answered(**row: Any) -> dict[str, Any]:
    return {"infcode": 0, "err_code": "", "output": {"detlcutinfo": [row]}}


def test_the_probe_sends_a_restricted_row_approved_with_a_fresh_code() -> None:
    row = probe_row(CATALOGUE, DAY)
    assert row is not None and row.lmt_used and row.med_list_codg == "X3"
    line = probe_line(row, "OP1")
    assert line["hosp_appr_flag"] == "1" and line["rxno"] and line["det_item_fee_sumamt"] == line["pric"]
    assert len(line["drug_trac_codg"]) == 1 and line["drug_trac_codg"] != probe_line(row, "OP1")["drug_trac_codg"]
    assert probe_row(None, DAY) is None
    unrestricted = parse_catalogue("\n".join(CSV.splitlines()[:3]))   # the header, X1 and X2
    assert probe_row(unrestricted, DAY).med_list_codg == "X1"  # type: ignore[union-attr]
    assert probe_row(unrestricted, datetime.date(2023, 1, 1)).med_list_codg == "X2"  # type: ignore[union-attr]


@pytest.mark.parametrize(("restricted", "row", "mode"), [
    (True, {"cut_reason": "", "overlmt_amt": 0, "drug_trac_codg": ["C"]}, "full"),
    (True, {"cut_reason": "RESTRICTED_USE", "overlmt_amt": 0, "drug_trac_codg": []}, "catalogue"),
    (True, {"cut_reason": "RESTRICTED_USE", "overlmt_amt": 0, "drug_trac_codg": ["C"]}, "catalogue"),
    (True, {"cut_reason": "", "overlmt_amt": 0, "drug_trac_codg": []}, "catalogue"),
    (False, {"cut_reason": "", "overlmt_amt": 0, "drug_trac_codg": ["C"]}, "full"),
    (True, {"cut_reason": ""}, "off"),
])
def test_verdict(restricted: bool, row: dict, mode: str) -> None:
    assert verdict({"drug_trac_codg": ["C"]}, restricted, answered(**row)) == mode


def test_a_refused_probe_is_an_error() -> None:
    with pytest.raises(ProbeError, match="PERSON_INELIGIBLE"):
        verdict({}, True, {"infcode": -2, "err_code": "PERSON_INELIGIBLE", "output": {}})
    with pytest.raises(ProbeError, match="no verifiable answer"):
        verdict({}, True, None)
