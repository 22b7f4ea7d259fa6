"""The oracle's settlement v2 checks (SPEC 13 "Bill lines v2" and "Traceability").

Modes (`V2_MODES`), because a gateway may not read every v2 line field yet:
- "off": no v2 checks (a gateway before SPEC 13, or a scripted one in tests);
- "catalogue": the catalogue cut, with `hosp_appr_flag`, `drug_trac_codg` and `trdn_flag` read as
  absent (a gateway whose decoder does not know them yet); TRACE_CODE_REUSED is then never due;
- "full": every v2 rule on the lines as sent, and TRACE_CODE_REUSED.

Per 2101/2102/2206/2207 answer 0, with the expected cut of simulators/catalogue.py on the business
day of `setl_time`:
- each `detlcutinfo` row exactly: `cut_reason`, `fulamt_ownpay_amt`, `overlmt_amt`,
  `preselfpay_amt`, `inscp_scp_amt`, the used `chrgitm_lv` and `otc`, `drug_trac_codg` echoed;
- the warnings that are cut reasons or CATALOGUE_OVERRIDE: each cut reason once, in the order the
  lines first raise it, then CATALOGUE_OVERRIDE once when a row contradicts what was sent;
- `setlinfo`: `overlmt_selfpay` = Σ overlmt_amt, and its fulamt/preselfpay/inscp sums;
- the fund within the lines: `otc_pay` ≤ Σ in-scope of OTC lines and `rx_pay` ≤ floor(Σ in-scope of
  prescription lines with an rxno × coverage / 1000) at pharmacies; `otc_pay` 0 and the fund ≤
  floor(Σ in-scope × coverage / 1000) at clinics and hospitals.
Per pharmacy 2101/2102 answer ("full"), with the held codes of simulators/trace_codes.py: a code
surely held over the whole request makes TRACE_CODE_REUSED due (an answer 0 is a violation); one
that no settlement may have held makes it wrong; its `err_msg` never names the holding settlement.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from simulators.catalogue import (
    CATALOGUE_OVERRIDE,
    CUT_REASONS,
    DAY_MS,
    ExpectedLine,
    LineRules,
    cut_bill,
    cut_warnings,
    shanghai_date,
)
from simulators.trace_codes import HeldCodes, Key, whole_package_codes

V2_MODES = ("off", "catalogue", "full")
TRACE_CODE_REUSED = "TRACE_CODE_REUSED"
PRE_SETTLE_INFNOS = frozenset({"2101", "2206"})
PERMILLE = 1000


class Place(Protocol):
    """Where a bill is settled (simulators.region.Institution satisfies it)."""

    code: str
    kind: str


def _ignore(_: str) -> None:
    """A violation sink that drops everything (until the oracle binds its own)."""


class V2Oracle:
    """SPEC 13's line and traceability checks, fed by the terminals; violations go to `report`."""

    def __init__(self, mode: str = "off", rules: LineRules | None = None,
                 report: Callable[[str], None] = _ignore) -> None:
        if mode not in V2_MODES:
            raise ValueError(f"v2 checks must be one of {', '.join(V2_MODES)}, got {mode!r}")
        if mode != "off" and rules is None:
            raise ValueError(f"v2 checks {mode!r} need the region's line rules")
        self.mode, self.rules, self.report = mode, rules, report
        self.held = HeldCodes()
        # What the pre-settlements sent, line by line (the run summary prints it).
        self.counts: collections.Counter[str] = collections.Counter()

    @property
    def full(self) -> bool:
        """True when the line fields are read as sent and traceability codes are checked."""
        return self.mode == "full"

    def on_settle_sent(self, place: Place, msgid: str, items: Sequence[Mapping[str, Any]], tick: int) -> None:
        """A 2102/2207 left at `tick`: a pharmacy's may hold its whole-package codes from now on."""
        if self.mode != "off" and place.kind == "pharmacy":
            self.held.sent((place.code, msgid), whole_package_codes(items), tick)

    def on_answer(self, infno: str, where: str, place: Place, items: Sequence[Mapping[str, Any]],
                  answer: Mapping[str, Any] | None, sent: int, received: int, msgid: str = "",
                  seen: bool = True) -> None:
        """Check the final answer to a 2101/2102/2206/2207 (None: unverifiable, already a violation).

        `msgid`: the settlement's (2102/2207); `seen` False for an answer the POS never saw (a
        time-out: it is reversed next)."""
        if self.mode == "off":
            return
        if infno in PRE_SETTLE_INFNOS:
            self._count(place, items)
        key = (place.code, msgid) if msgid else None
        if answer is None or answer["infcode"] == -1:
            return
        if place.kind == "pharmacy":
            self._check_trace(where, items, answer, key, sent, received)
        if answer["infcode"] != 0:
            if key is not None:
                self.held.refused(key)
            return
        output = answer["output"]
        setlinfo = output["setlinfo"]
        if key is not None:
            self.held.settled(key, setlinfo.get("setl_id", ""), setlinfo["setl_time"], received, seen)
        assert self.rules is not None
        expected = cut_bill(items, self.rules, place.kind == "pharmacy", shanghai_date(setlinfo["setl_time"]),
                            line_fields=self.full)
        self._check_lines(where, expected, output.get("detlcutinfo"))
        self._check_warnings(where, expected, answer.get("warnings", ()))
        self._check_setlinfo(where, expected, setlinfo, place.kind == "pharmacy")

    def on_cancel_sent(self, institution: str, setl_id: str, msgid: str, tick: int) -> None:
        """A 2103/2208 with `msgid` of `setl_id` left at `tick`."""
        self.held.cancel_sent(institution, setl_id, msgid, tick)

    def on_cancelled(self, institution: str, setl_id: str, tick: int) -> None:
        """The cancellation of `setl_id` was answered 0 at `tick`."""
        self.held.cancelled(institution, setl_id, tick)

    def on_reversal(self, institution: str, omsgid: str, sent: int, received: int) -> None:
        """A 2601 of `omsgid` sent at `sent` was answered `reversed` at `received`."""
        self.held.reversed(institution, omsgid, sent, received)

    def _count(self, place: Place, items: Sequence[Mapping[str, Any]]) -> None:
        assert self.rules is not None
        counts, catalogue = self.counts, self.rules.catalogue
        counts["bills"] += 1
        for item in items:
            counts["lines"] += 1
            codes = item.get("drug_trac_codg", ())
            counts["codes"] += len(codes)
            counts["coded lines"] += bool(codes)
            counts["split lines"] += item.get("trdn_flag") == "1"
            if place.kind == "pharmacy" and item.get("trdn_flag") != "1":
                counts["resold codes"] += sum(self.held.sold_before(code) for code in codes)
            if catalogue is None:
                continue
            if item["med_list_codg"] not in catalogue.rows:
                counts["not in catalogue"] += 1
                continue
            row = catalogue.latest(item["med_list_codg"])
            counts["over cap"] += row.pric_uplmt_fen is not None and item["pric"] > row.pric_uplmt_fen
            counts["restricted"] += row.lmt_used
            counts["unapproved"] += row.lmt_used and item.get("hosp_appr_flag") != "1"
            counts["overrides"] += item.get("chrgitm_lv") != row.chrgitm_lv or item.get("otc") != row.otc

    def _check_trace(self, where: str, items: Sequence[Mapping[str, Any]], answer: Mapping[str, Any],
                     own: Key | None, sent: int, received: int) -> None:
        reused = answer["infcode"] == -2 and answer["err_code"] == TRACE_CODE_REUSED
        if not self.full:
            if reused:
                self.report(f"{where}: {TRACE_CODE_REUSED}, but this gateway does not read traceability codes")
            return
        if answer["infcode"] != 0 and not reused:
            return  # refused by an earlier rule (the person, the credential): no verdict on codes
        assert self.rules is not None
        now_ms = answer["output"]["setlinfo"]["setl_time"] if answer["infcode"] == 0 else 0
        verdict = self.held.verdict(whole_package_codes(items), own, sent, received, now_ms,
                                    self.rules.trace_retention_days * DAY_MS)
        if not reused and verdict.must:
            code, holder = verdict.must[0]
            self.report(f"{where}: sold traceability code {code}, held by standing settlement {holder.setl_id} "
                        f"throughout; expected {TRACE_CODE_REUSED}")
        if reused and not verdict.may:
            self.report(f"{where}: {TRACE_CODE_REUSED}, but no settlement may have held any of its codes")
        if reused:
            message = answer.get("err_msg", "")
            named = [h.setl_id for _, h in verdict.may if h.setl_id and h.setl_id in message]
            named += [h.key[1] for _, h in verdict.may if h.key[1] in message]
            if named:
                self.report(f"{where}: {TRACE_CODE_REUSED} err_msg names another settlement: {message!r}")

    def _check_lines(self, where: str, expected: Sequence[ExpectedLine], rows: Any) -> None:
        if not isinstance(rows, list) or len(rows) != len(expected):
            self.report(f"{where}: detlcutinfo {rows!r}, expected {len(expected)} rows")
            return
        for line, row in zip(expected, rows, strict=True):
            want = line.answer_row()
            got = {key: row.get(key) for key in want} if isinstance(row, dict) else row
            if got != want:
                self.report(f"{where}: line {line.feedetl_sn} cut as {got}, expected {want}")

    def _check_warnings(self, where: str, expected: Sequence[ExpectedLine], warnings: Sequence[str]) -> None:
        ours = (*CUT_REASONS, CATALOGUE_OVERRIDE)
        got = [code for code in warnings if code in ours]
        want = cut_warnings(expected)
        if got != want:
            self.report(f"{where}: line warnings {got}, expected {want}")

    def _check_setlinfo(self, where: str, expected: Sequence[ExpectedLine], setlinfo: Mapping[str, Any],
                        pharmacy: bool) -> None:
        assert self.rules is not None
        sums = {"overlmt_selfpay": sum(line.overlmt_amt for line in expected),
                "fulamt_ownpay_amt": sum(line.fulamt_ownpay_amt for line in expected),
                "preselfpay_amt": sum(line.preselfpay_amt for line in expected),
                "inscp_scp_amt": sum(line.inscp_scp_amt for line in expected)}
        got = {key: setlinfo.get(key) for key in sums}
        if got != sums:
            self.report(f"{where}: setlinfo line sums {got}, expected {sums}")
        coverage = self.rules.coverage_permille.get(setlinfo.get("insutype", ""), 0)
        otc, rx = setlinfo["otc_pay"], setlinfo["rx_pay"]
        if pharmacy:
            otc_scope = sum(line.inscp_scp_amt for line in expected if line.otc)
            rx_scope = sum(line.inscp_scp_amt for line in expected if not line.otc and line.has_rxno)
            rx_most = rx_scope * coverage // PERMILLE
            if otc > otc_scope or rx > rx_most:
                self.report(f"{where}: otc_pay {otc} / rx_pay {rx} over the lines' in-scope amounts: "
                            f"OTC {otc_scope}, prescription {rx_scope} at coverage {coverage}")
            return
        fund_most = sum(line.inscp_scp_amt for line in expected) * coverage // PERMILLE
        if otc != 0 or setlinfo["fund_pay_sumamt"] > fund_most:
            self.report(f"{where}: fund {setlinfo['fund_pay_sumamt']} (otc_pay {otc}) over the lines' "
                        f"in-scope amounts at coverage {coverage}: at most {fund_most}, otc_pay 0")

    def summary_lines(self) -> list[str]:
        """The run summary's v2 lines: the mode and what the pre-settlements sent."""
        if self.mode == "off":
            return ["v2 checks off"]
        c = self.counts
        return [f"v2 checks {self.mode}  lines {c['lines']}  not in catalogue {c['not in catalogue']}  "
                f"over cap {c['over cap']}  restricted {c['restricted']} (unapproved {c['unapproved']})  "
                f"class/OTC override {c['overrides']}",
                f"trace codes {c['codes']} on {c['coded lines']} lines  split-package lines {c['split lines']}  "
                f"resold codes {c['resold codes']}"]
