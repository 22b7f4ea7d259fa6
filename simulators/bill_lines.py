"""Bill lines of settlement v2: what a till that knows the fund's catalogue puts on a bill.

A till sends the catalogue's code with its row's class and OTC flag (the row that starts last: a
till's product master), prices within the row's cap (限价), approval (`hosp_appr_flag` "1") on
most restricted lines (限定支付), and at pharmacies the traceability codes (药品追溯码) of the
packages it sells: one 20-digit code per package (`cnt` codes), or the code of an opened package
on a split-package line (`trdn_flag` "1", 拆零). Now and then, by small seeded shares (`LineShares`):
a code the catalogue does not list, a price over the cap, a restricted line without approval, a
class or OTC flag other than the row's (the fraud the catalogue is there to stop), a drug line
without codes, and at pharmacies a bill reselling a code sold on an earlier bill (一码多售).

Codes: 7 digits naming the product (from its code) + a 13-digit package serial. Whole packages take
serials 1, 2, ... in the order they are drawn, so a stream never repeats one by itself; an opened
package's serial comes from the pharmacy and the product, so split lines repeat it. A run shifts
every serial by its own offset (simulators/trace_codes.py `CodeSalt`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import random
from collections.abc import Callable
from typing import Any

from simulators.catalogue import Catalogue, Row

# The till's own OTC flag for a product the fund does not list.
UNLISTED_OTC_SHARE = 0.5
UNLISTED_CODE_DIGITS = 22
# Codes are checked at pharmacies on drugs: Western ("X...") and Chinese patent medicines ("Z...").
DRUG_PREFIXES = ("X", "Z")
SERVICE_PREFIX = "00"     # medical service items: never sold at a pharmacy
PRODUCT_SPACE = 10 ** 7
SERIAL_DIGITS = 13
SPLIT_SERIAL_BASE = 9 * 10 ** 12   # opened packages' serials, apart from whole packages' 1, 2, ...
# A resale takes a code from a bill at least this much earlier in the stream, so that bill has
# usually been answered when the resale is sent.
RESALE_AFTER_S = 2.0
RESALE_POOL = 1000

# base(rng, serial, doctor, otc) -> a line with feedetl_sn, cnt, pric, det_item_fee_sumamt,
# bilg_dr_codg and (for prescription lines, as the till decides) rxno; code and class are replaced.
BaseLine = Callable[[random.Random, int, str, bool], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class LineShares:
    """How often each v2 case is drawn (probabilities, 0..1)."""

    not_in_catalogue: float = 0.02   # of lines: a code the catalogue does not list
    over_cap: float = 0.20           # of lines whose row has a price cap: a price over it
    unapproved: float = 0.20         # of restricted lines: hosp_appr_flag "0"
    override: float = 0.03           # of listed lines: a class / OTC flag other than the row's
    coded: float = 0.90              # of pharmacy drug lines: with traceability codes
    split: float = 0.10              # of coded lines: a split package (trdn_flag "1")
    resale: float = 0.03             # of pharmacy bills: one line resells an earlier code

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if not 0.0 <= getattr(self, field.name) <= 1.0:
                raise ValueError(f"share {field.name} must be between 0 and 1")


def product_prefix(med_list_codg: str) -> str:
    """The 7-digit product part of the traceability codes of a catalogue code."""
    digest = hashlib.sha256(f"yb-sim/product/v1\n{med_list_codg}".encode()).digest()
    return f"{int.from_bytes(digest[:8], 'big') % PRODUCT_SPACE:07d}"


class LineDrawer:
    """Draws v2 bill lines from a catalogue; remembers sold codes for resales (one per stream)."""

    def __init__(self, catalogue: Catalogue, shares: LineShares = LineShares()) -> None:
        self.catalogue, self.shares = catalogue, shares
        codes = sorted(catalogue.rows)
        self.codes = {True: [c for c in codes if not c.startswith(SERVICE_PREFIX)] or codes, False: codes}
        self._serial = 0
        self._sold: collections.deque[tuple[float, dict[str, Any]]] = collections.deque(maxlen=RESALE_POOL)

    def _unlisted_code(self, rng: random.Random) -> str:
        while True:
            code = f"X{rng.randrange(10 ** UNLISTED_CODE_DIGITS):0{UNLISTED_CODE_DIGITS}d}"
            if code not in self.catalogue.rows:
                return code

    def line(self, rng: random.Random, serial: int, pharmacy: bool, doctor: str, base: BaseLine) -> dict[str, Any]:
        """One line: a listed code as the till knows it, or now and then an unlisted one."""
        shares = self.shares
        if rng.random() < shares.not_in_catalogue:
            item = base(rng, serial, doctor, rng.random() < UNLISTED_OTC_SHARE)
            item["med_list_codg"] = self._unlisted_code(rng)
            row = None
        else:
            code = rng.choice(self.codes[pharmacy])
            row = self.catalogue.latest(code)
            level, otc = row.chrgitm_lv, row.otc
            if rng.random() < shares.override:
                level, otc = ("01", True) if (row.chrgitm_lv, row.otc) != ("01", True) else ("02", False)
            item = base(rng, serial, doctor, otc)
            item.update(med_list_codg=code, chrgitm_lv=level)
            self._price(rng, item, row)
            if row.lmt_used:
                item["hosp_appr_flag"] = "0" if rng.random() < shares.unapproved else "1"
        if pharmacy and item["med_list_codg"].startswith(DRUG_PREFIXES) and rng.random() < shares.coded:
            self._codes(rng, item, doctor)  # the counter's opened packages
        return item

    def prescription_line(self, rng: random.Random, item: dict[str, Any], pharmacy: bool) -> None:
        """Make `item` (a prescription line with cnt, pric and rxno) a listed, unrestricted
        prescription drug with its row's class, its price within the row's cap and, at a pharmacy,
        its packages' codes: the chronic bills of who pays (SPEC 13) that outpatient pooling pays."""
        code = rng.choice(self._prescription_codes)
        row = self.catalogue.latest(code)
        item.update(med_list_codg=code, chrgitm_lv=row.chrgitm_lv, otc=False)
        if row.pric_uplmt_fen:
            item["pric"] = min(item["pric"], row.pric_uplmt_fen)
            item["det_item_fee_sumamt"] = item["cnt"] * item["pric"]
        if pharmacy and rng.random() < self.shares.coded:
            self._codes(rng, item, item["bilg_dr_codg"])

    @functools.cached_property
    def _prescription_codes(self) -> list[str]:
        rows = [self.catalogue.latest(code) for code in self.codes[True] if code.startswith(DRUG_PREFIXES)]
        found = [row.med_list_codg for row in rows
                 if not row.otc and not row.lmt_used and row.chrgitm_lv in ("01", "02")]
        return found or self.codes[True]

    def _price(self, rng: random.Random, item: dict[str, Any], row: Row) -> None:
        cap = row.pric_uplmt_fen
        if not cap:
            return
        if rng.random() < self.shares.over_cap:
            item["pric"] = cap + 1 + rng.randrange(max(1, cap // 2))
        else:
            item["pric"] = min(item["pric"], cap)
        item["det_item_fee_sumamt"] = item["cnt"] * item["pric"]

    def _codes(self, rng: random.Random, item: dict[str, Any], counter: str) -> None:
        prefix = product_prefix(item["med_list_codg"])
        if rng.random() < self.shares.split:
            opened = hashlib.sha256(f"yb-sim/opened/v1\n{counter}\n{item['med_list_codg']}".encode()).digest()
            serial = SPLIT_SERIAL_BASE + int.from_bytes(opened[:8], "big") % 10 ** 12
            item.update(drug_trac_codg=[f"{prefix}{serial:0{SERIAL_DIGITS}d}"], trdn_flag="1")
            return
        codes = []
        for _ in range(item["cnt"]):
            self._serial += 1
            codes.append(f"{prefix}{self._serial:0{SERIAL_DIGITS}d}")
        item["drug_trac_codg"] = codes

    def finish_bill(self, rng: random.Random, items: list[dict[str, Any]], pharmacy: bool, t_s: float) -> None:
        """At a pharmacy: now and then resell an earlier bill's code on the last line; remember
        this bill's whole-package lines for later resales."""
        if not pharmacy:
            return
        earlier = []
        if rng.random() < self.shares.resale:
            earlier = [line for at_s, line in self._sold if at_s <= t_s - RESALE_AFTER_S]
        if earlier:
            sold = rng.choice(earlier)
            last = items[-1]
            items[-1] = {**sold, "feedetl_sn": last["feedetl_sn"], "bilg_dr_codg": last["bilg_dr_codg"], "cnt": 1,
                         "det_item_fee_sumamt": sold["pric"], "drug_trac_codg": [rng.choice(sold["drug_trac_codg"])]}
        for item in items:
            if item.get("drug_trac_codg") and item.get("trdn_flag") != "1":
                self._sold.append((t_s, item))
