"""The fund's catalogue as the simulators read it, and SPEC 13's line cut computed independently.

The simulator never imports gateway/: it reads the region's catalogue CSV itself (gateway.toml
`[paths] catalogue`, header `med_list_codg,name,chrgitm_lv,otc,selfpay_prop_permille,
pric_uplmt_fen,lmt_used,valid_from,valid_to`) with the csv module, and cuts each bill line by the
words of SPEC 13 "Bill lines v2":

1. DOCTOR_SUSPENDED: `bilg_dr_codg` is a suspended operator or doctor;
2. NOT_IN_CATALOGUE: the catalogue is on and has no row for the code valid on the business day;
3. RX_REQUIRED: at a pharmacy, the used OTC flag is not true and the line has no `rxno`;
4. RESTRICTED_USE: the row says `lmt_used` "1" and `hosp_appr_flag` is not "1";
5. TRACE_CODE_MISSING: at a pharmacy, from `trace_required_from` on, the line has no code.

A cut line is all own-pay. Otherwise `allowed = cnt × min(pric, cap)` (no cap: pric) and
`overlmt = det − allowed`; "03" is all own-pay, "02" pays `ceil(allowed × prop / 1000)` first
(the row's share, else the policy's), "01" is all in scope. The used class and OTC flag are the
row's when the code has one, else the terminal's; a row that contradicts what was sent is a
catalogue override.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import pathlib
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from protocol import SHANGHAI
from simulators.region import Region, RegionReadError

HEADER = ("med_list_codg", "name", "chrgitm_lv", "otc", "selfpay_prop_permille", "pric_uplmt_fen", "lmt_used",
          "valid_from", "valid_to")
CLASSES = ("01", "02", "03")
FLAGS = ("0", "1")
PERMILLE = 1000
DAY_MS = 86_400_000
TRACE_RETENTION_DAYS_DEFAULT = 400

DOCTOR_SUSPENDED = "DOCTOR_SUSPENDED"
NOT_IN_CATALOGUE = "NOT_IN_CATALOGUE"
RX_REQUIRED = "RX_REQUIRED"
RESTRICTED_USE = "RESTRICTED_USE"
TRACE_CODE_MISSING = "TRACE_CODE_MISSING"
CUT_REASONS = (DOCTOR_SUSPENDED, NOT_IN_CATALOGUE, RX_REQUIRED, RESTRICTED_USE, TRACE_CODE_MISSING)
CATALOGUE_OVERRIDE = "CATALOGUE_OVERRIDE"


def shanghai_date(ms: int) -> datetime.date:
    """The Asia/Shanghai calendar day of a Unix millisecond timestamp."""
    return datetime.datetime.fromtimestamp(ms // 1000, tz=SHANGHAI).date()


class Row(NamedTuple):
    """One catalogue row; dates inclusive, None open."""

    med_list_codg: str
    chrgitm_lv: str
    otc: bool
    selfpay_prop_permille: int | None
    pric_uplmt_fen: int | None
    lmt_used: bool
    valid_from: datetime.date | None
    valid_to: datetime.date | None

    def valid_on(self, day: datetime.date) -> bool:
        """True when `day` lies within the row's span."""
        return (self.valid_from is None or self.valid_from <= day) and (self.valid_to is None or day <= self.valid_to)


class Catalogue:
    """The rows by code; `lookup` finds the row valid on a day."""

    def __init__(self, rows: Sequence[Row]) -> None:
        self.rows: dict[str, list[Row]] = {}
        for row in rows:
            self.rows.setdefault(row.med_list_codg, []).append(row)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.rows.values())

    def lookup(self, code: str, day: datetime.date) -> Row | None:
        """The row of `code` valid on `day`, or None (no such code, or a gap in its rows)."""
        return next((row for row in self.rows.get(code, ()) if row.valid_on(day)), None)

    def latest(self, code: str) -> Row:
        """The row of `code` that starts last (what a till's product master holds for it)."""
        return max(self.rows[code], key=lambda row: row.valid_from or datetime.date.min)


def _optional_int(text: str, where: str) -> int | None:
    if text == "":
        return None
    if not text.isascii() or not text.isdigit():
        raise RegionReadError(f"{where}: not an integer: {text!r}")
    return int(text)


def _optional_date(text: str, where: str) -> datetime.date | None:
    if text == "":
        return None
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise RegionReadError(f"{where}: not a YYYY-MM-DD date: {text!r}") from None


def _one_of(text: str, allowed: Sequence[str], where: str) -> str:
    if text not in allowed:
        raise RegionReadError(f"{where}: expected one of {', '.join(allowed)}, got {text!r}")
    return text


def _row(fields: list[str], where: str) -> Row:
    if len(fields) != len(HEADER):
        raise RegionReadError(f"{where}: row: {len(fields)} fields, expected {len(HEADER)}")
    code, _name, level, otc, prop, cap, restricted, valid_from, valid_to = fields
    if not code:
        raise RegionReadError(f"{where}: med_list_codg: empty")
    return Row(code, _one_of(level, CLASSES, f"{where}: chrgitm_lv"), _one_of(otc, FLAGS, f"{where}: otc") == "1",
               _optional_int(prop, f"{where}: selfpay_prop_permille"),
               _optional_int(cap, f"{where}: pric_uplmt_fen"),
               _one_of(restricted, FLAGS, f"{where}: lmt_used") == "1",
               _optional_date(valid_from, f"{where}: valid_from"), _optional_date(valid_to, f"{where}: valid_to"))


def parse_catalogue(text: str, name: str = "catalogue") -> Catalogue:
    """The rows of a catalogue CSV text (a leading byte order mark, CRLF and blank lines accepted).

    Raises:
        RegionReadError: the header or a row is not of SPEC 13's form (one line naming `name:LINE`).
    """
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None or tuple(header) != HEADER:
            raise RegionReadError(f"{name}:1: header: expected {','.join(HEADER)}")
        rows = [_row(fields, f"{name}:{reader.line_num}") for fields in reader if fields]
    except csv.Error as error:
        raise RegionReadError(f"{name}:{reader.line_num}: row: {error}") from None
    return Catalogue(rows)


@dataclasses.dataclass(frozen=True)
class LineRules:
    """What SPEC 13's cut needs besides the line and its row: the region's policy and doctors."""

    catalogue: Catalogue | None
    selfpay_prop_permille: int
    coverage_permille: Mapping[str, int]
    suspended: frozenset[str] = frozenset()
    trace_required_from: datetime.date | None = None
    trace_retention_days: int = TRACE_RETENTION_DAYS_DEFAULT

    def trace_required(self, day: datetime.date) -> bool:
        """True when pharmacy lines need a traceability code on `day`."""
        return self.trace_required_from is not None and self.trace_required_from <= day


def _toml(path: pathlib.Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise RegionReadError(f"{path}: {error}") from None


def _policy_date(value: Any, where: str) -> datetime.date | None:
    if value is None or isinstance(value, datetime.date):
        return value
    return _optional_date(str(value), where)


def read_catalogue(path: pathlib.Path) -> Catalogue:
    """The catalogue file at `path`.

    Raises:
        RegionReadError: unreadable, or not of SPEC 13's form.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RegionReadError(f"{path}: cannot read: {error}") from None
    return parse_catalogue(text, str(path))


def region_catalogue(region: Region) -> Catalogue | None:
    """The catalogue of `region` (gateway.toml `[paths] catalogue`, relative to that file), or
    None when the key or gateway.toml is absent (the feature is off).

    Raises:
        RegionReadError: a file is unreadable or the catalogue is not of SPEC 13's form.
    """
    config_path = region.path / "gateway.toml"
    config = _toml(config_path) if config_path.exists() else {}
    catalogue_name = config.get("paths", {}).get("catalogue")
    return read_catalogue(config_path.parent / catalogue_name) if catalogue_name else None


def load_line_rules(region: Region) -> LineRules:
    """The catalogue of `region` and its registry's policy keys and suspended operators.

    Raises:
        RegionReadError: a file is unreadable or the catalogue is not of SPEC 13's form.
    """
    catalogue = region_catalogue(region)
    registry = _toml(region.path / "registry.toml")
    policy = registry.get("policy", {})
    suspended = frozenset(op["code"] for op in registry.get("operators", []) if op.get("status") == "suspended")
    return LineRules(catalogue, region.policy.selfpay_prop_permille, dict(region.policy.coverage_permille), suspended,
                     _policy_date(policy.get("trace_required_from"), "registry.toml: trace_required_from"),
                     int(policy.get("trace_retention_days", TRACE_RETENTION_DAYS_DEFAULT)))


class ExpectedLine(NamedTuple):
    """One `detlcutinfo` row as SPEC 13 has it, and what the oracle needs besides."""

    feedetl_sn: str
    cut_reason: str
    fulamt_ownpay_amt: int
    overlmt_amt: int
    preselfpay_amt: int
    inscp_scp_amt: int
    chrgitm_lv: str | None
    otc: bool | None
    drug_trac_codg: list[str]
    overridden: bool
    has_rxno: bool

    def answer_row(self) -> dict[str, Any]:
        """The keys of the answer's detlcutinfo row."""
        return {"feedetl_sn": self.feedetl_sn, "cut_reason": self.cut_reason,
                "fulamt_ownpay_amt": self.fulamt_ownpay_amt, "overlmt_amt": self.overlmt_amt,
                "preselfpay_amt": self.preselfpay_amt, "inscp_scp_amt": self.inscp_scp_amt,
                "chrgitm_lv": self.chrgitm_lv, "otc": self.otc, "drug_trac_codg": self.drug_trac_codg}


def without_v2_fields(line: Mapping[str, Any]) -> dict[str, Any]:
    """The line as a gateway that does not read `hosp_appr_flag`, `drug_trac_codg` and `trdn_flag`
    sees it (each at its default: "0", none, "0")."""
    return {k: v for k, v in line.items() if k not in ("hosp_appr_flag", "drug_trac_codg", "trdn_flag")}


def _reason(line: Mapping[str, Any], row: Row | None, otc: bool | None, rules: LineRules, pharmacy: bool,
            day: datetime.date) -> str:
    """SPEC 13's five rules, each a question about the line; the first that says yes cuts it."""
    checks = (
        (DOCTOR_SUSPENDED, line["bilg_dr_codg"] in rules.suspended),
        (NOT_IN_CATALOGUE, rules.catalogue is not None and row is None),
        (RX_REQUIRED, pharmacy and otc is not True and not line.get("rxno")),
        (RESTRICTED_USE, row is not None and row.lmt_used and line.get("hosp_appr_flag", "0") != "1"),
        (TRACE_CODE_MISSING, pharmacy and rules.trace_required(day) and not line.get("drug_trac_codg")),
    )
    return next((reason for reason, applies in checks if applies), "")


def cut_line(line: Mapping[str, Any], rules: LineRules, pharmacy: bool, day: datetime.date) -> ExpectedLine:
    """The expected cut of one bill line (a dict as sent) on business `day`."""
    row = rules.catalogue.lookup(line["med_list_codg"], day) if rules.catalogue is not None else None
    sent_level, sent_otc = line.get("chrgitm_lv"), line.get("otc")
    level, otc = (sent_level, sent_otc) if row is None else (row.chrgitm_lv, row.otc)
    overridden = row is not None and ((sent_level is not None and sent_level != row.chrgitm_lv)
                                      or (sent_otc is not None and sent_otc != row.otc))
    det = line["det_item_fee_sumamt"]
    codes = list(line.get("drug_trac_codg", ()))
    has_rxno = bool(line.get("rxno"))
    reason = _reason(line, row, otc, rules, pharmacy, day)
    if reason:
        return ExpectedLine(line["feedetl_sn"], reason, det, 0, 0, 0, level, otc, codes, overridden, has_rxno)
    unit = line["pric"]
    if row is not None and row.pric_uplmt_fen is not None:
        unit = min(unit, row.pric_uplmt_fen)
    allowed = line["cnt"] * unit
    own = first = scope = 0
    if level == "03":
        own = allowed
    elif level == "02":
        prop = rules.selfpay_prop_permille
        if row is not None and row.selfpay_prop_permille is not None:
            prop = row.selfpay_prop_permille
        first = (allowed * prop + PERMILLE - 1) // PERMILLE
        scope = allowed - first
    else:
        scope = allowed
    return ExpectedLine(line["feedetl_sn"], "", own, det - allowed, first, scope, level, otc, codes, overridden,
                        has_rxno)


def cut_bill(items: Sequence[Mapping[str, Any]], rules: LineRules, pharmacy: bool, day: datetime.date,
             line_fields: bool = True) -> list[ExpectedLine]:
    """The expected cut of every line; `line_fields` False reads the lines as a gateway that
    ignores `hosp_appr_flag`, `drug_trac_codg` and `trdn_flag` does."""
    return [cut_line(item if line_fields else without_v2_fields(item), rules, pharmacy, day) for item in items]


def cut_warnings(lines: Sequence[ExpectedLine]) -> list[str]:
    """Each cut reason once, in the order the lines first raise it, then CATALOGUE_OVERRIDE once."""
    warnings = list(dict.fromkeys(line.cut_reason for line in lines if line.cut_reason))
    return warnings + [CATALOGUE_OVERRIDE] * any(line.overridden for line in lines)
