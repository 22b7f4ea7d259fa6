"""The seeded traffic model: what happens at the counters, independent of the gateway's answers.

An intent is a plain dict (JSON-ready, so a trace is a list of them):
- settle: `{"t_s", "seq", "kind": "settle", "dev_no", "psn_no", "credential": "card"|"voucher",
  "items": [...], "retries": int, "timeout": bool, "acct": bool, "payer": psn_no|null}`; `retries` is
  how many extra copies of the final settlement the terminal sends with the same msgid (a POS that
  timed out and resent); `timeout` true marks a settlement whose answer never reaches the POS: the
  terminal reverses it (2601) and resends the msgid once to see it refused (a trace without the key
  has no time-outs); `acct` true pays the patient's part from an account (SPEC 13), `payer` another
  person's (family mutual aid: a linked owner, or now and then someone without a link, whom the
  gateway must refuse); a trace without the keys pays everything in cash;
- cancel: `{"t_s", "seq", "kind": "cancel", "of_seq": int}`, the cancellation of an earlier
  settle intent (skipped by the terminal when that settlement was not committed).

`t_s` is the offset in seconds from the start of the run. Arrivals are a Poisson process whose
rate follows a Shanghai time-of-day profile (`DayProfile`): `rate_per_s` is the mean over a whole
day, the hour's weight scales it, and offset 0 is `start_s_of_day` seconds after Shanghai midnight.
The non-homogeneous process is drawn by thinning: candidates at the peak rate, each kept with
probability weight(hour) / peak weight. `FLAT` keeps every candidate (a constant rate).

Persons: SAMPLE_SHARE of the bills go to the region's sample persons (the regulars, who include
the blocked cards, blocked persons and cross-province patients with and without filings); the rest
to a person drawn uniformly from the whole population (region.Population, derived persons too).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
from collections.abc import Iterator
from typing import Any

from simulators.bill_lines import LineDrawer, LineShares
from simulators.catalogue import region_catalogue
from simulators.region import Person, Region

VOUCHER_SHARE = 0.20
CANCEL_SHARE = 0.01
RETRY_SHARE = 0.03
# Settlements whose answer is lost on the way back (the POS times out, reverses, retries the msgid).
TIMEOUT_SHARE = 0.005
LINES_MIN, LINES_MAX = 1, 8
# Class mix of bill lines: 甲 "01", 乙 "02", 丙 "03".
CLASS_WEIGHTS = {"01": 55, "02": 35, "03": 10}
OTC_SHARE_AT_PHARMACY = 0.75
RX_WITH_RXNO_SHARE = 0.70
# Unit price: lognormal around 12 yuan (median), cut to a sane range of fen.
PRICE_MEDIAN_FEN = 1200
PRICE_SIGMA = 0.9
PRICE_MAX_FEN = 200_000
COUNT_MAX = 3
DRUG_CODES = tuple(f"XA{n:02d}" for n in range(1, 30)) + tuple(f"ZB{n:02d}" for n in range(1, 15))
SAMPLE_SHARE = 0.30
# Who pays (SPEC 13): most bills are paid from the personal account; a family member's now and then
# (a linked owner), rarely someone without a link (refused). A few regulars with chronic conditions
# bring large prescription bills that take them through the pooling deductible into its annual cap.
ACCT_SHARE = 0.80
MUTUAL_AID_SHARE = 0.06
REFUSED_LINK_SHARE = 0.01
CHRONIC_SHARE = 0.02
CHRONIC_PATIENTS = 5
CHRONIC_LINES = (3, 6)
CHRONIC_PRICE_FEN = (30_000, 150_000)
HOURS_PER_DAY = 24
S_PER_HOUR = 3600
S_PER_DAY = HOURS_PER_DAY * S_PER_HOUR


@dataclasses.dataclass(frozen=True)
class DayProfile:
    """Relative arrival weights for the 24 Shanghai hours (hour 0 is 00:00-01:00)."""

    name: str
    weights: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.weights) != HOURS_PER_DAY or min(self.weights) <= 0:
            raise ValueError("a day profile has 24 positive hourly weights")

    def factor(self, s_of_day: float) -> float:
        """The rate multiplier at `s_of_day` seconds after Shanghai midnight (mean 1.0 over a day)."""
        hour = int(s_of_day % S_PER_DAY) // S_PER_HOUR
        return self.weights[hour] * HOURS_PER_DAY / sum(self.weights)

    def peak_factor(self) -> float:
        """The largest multiplier of the day."""
        return max(self.weights) * HOURS_PER_DAY / sum(self.weights)


# Retail pharmacy counters in a county town: shut or nearly so at night, a morning peak (9-11 h,
# shopping and after the clinic's morning consultations), a lunch dip, an evening peak (17-20 h,
# after work). The weights are relative; factor() normalises them to a daily mean of 1.
PHARMACY_DAY = DayProfile("pharmacy", (2, 1, 1, 1, 1, 2, 5, 10, 16, 20, 20, 16,
                                       12, 11, 12, 13, 15, 18, 20, 19, 14, 9, 5, 3))
FLAT = DayProfile("flat", (1,) * HOURS_PER_DAY)
PROFILES = {profile.name: profile for profile in (PHARMACY_DAY, FLAT)}


def _price_fen(rng: random.Random) -> int:
    price = int(rng.lognormvariate(math.log(PRICE_MEDIAN_FEN), PRICE_SIGMA))
    return min(PRICE_MAX_FEN, max(1, price))


def _line(rng: random.Random, serial: int, doctor: str, otc: bool, price_permille: int = 1000) -> dict[str, Any]:
    """One line with the given OTC flag: count, price (scaled by `price_permille`), a drug code and
    class, and for a prescription line (70 %) an rxno."""
    classes, weights = zip(*CLASS_WEIGHTS.items(), strict=True)
    count, price = rng.randint(1, COUNT_MAX), max(1, _price_fen(rng) * price_permille // 1000)
    item: dict[str, Any] = {
        "feedetl_sn": str(serial), "med_list_codg": rng.choice(DRUG_CODES),
        "chrgitm_lv": rng.choices(classes, weights)[0], "otc": otc, "cnt": count, "pric": price,
        "det_item_fee_sumamt": count * price, "bilg_dr_codg": doctor,
    }
    if not otc and rng.random() < RX_WITH_RXNO_SHARE:
        item["rxno"] = f"RX{rng.randrange(10**10):010d}"
    return item


def bill_items(rng: random.Random, pharmacy: bool, doctors: tuple[str, ...], opter: str,
               lines: LineDrawer | None = None, t_s: float = 0.0, price_permille: int = 1000) -> list[dict[str, Any]]:
    """Draw 1..8 bill lines; each `det_item_fee_sumamt == cnt * pric` (positive ints).

    With `lines` (the region has a catalogue) the lines are v2 lines drawn from it (bill_lines.py);
    without, codes come from DRUG_CODES and class and OTC flag are drawn per line. `price_permille`
    scales the drawn unit prices (the draws are the same whatever it is; a price over a row's cap
    stays over it)."""
    base = _line if price_permille == 1000 else functools.partial(_line, price_permille=price_permille)
    items = []
    for serial in range(1, rng.randint(LINES_MIN, LINES_MAX) + 1):
        doctor = rng.choice(doctors) if doctors else opter
        if lines is None:
            items.append(base(rng, serial, doctor, pharmacy and rng.random() < OTC_SHARE_AT_PHARMACY))
        else:
            items.append(lines.line(rng, serial, pharmacy, doctor, base))
    if lines is not None:
        lines.finish_bill(rng, items, pharmacy, t_s)
    return items


def _chronic_items(rng: random.Random, doctors: tuple[str, ...], lines: LineDrawer | None = None,
                   pharmacy: bool = False) -> list[dict[str, Any]]:
    """A large prescription bill (a chronic condition's month of medicine); with `lines` (the region
    has a catalogue) its drugs are listed prescription drugs as the catalogue has them."""
    items = []
    for serial in range(1, rng.randint(*CHRONIC_LINES) + 1):
        count, price = rng.randint(1, COUNT_MAX), rng.randint(*CHRONIC_PRICE_FEN)
        item = {"feedetl_sn": str(serial), "med_list_codg": rng.choice(DRUG_CODES), "chrgitm_lv": "01",
                "otc": False, "rxno": f"RX{rng.randrange(10**10):010d}", "cnt": count, "pric": price,
                "det_item_fee_sumamt": count * price, "bilg_dr_codg": rng.choice(doctors)}
        if lines is not None:
            lines.prescription_line(rng, item, pharmacy)
        items.append(item)
    return items


class TrafficModel:
    """A deterministic stream of intents for one region: the same seed gives the same stream."""

    def __init__(self, region: Region, seed: int, rate_per_s: float, profile: DayProfile = FLAT,
                 start_s_of_day: float = 0.0, timeout_share: float = TIMEOUT_SHARE,
                 line_shares: LineShares = LineShares(), price_permille: int = 1000) -> None:
        """`rate_per_s`: the mean arrival rate over a day; `profile` shapes it by the Shanghai hour
        of `start_s_of_day` (seconds after Shanghai midnight at offset 0) + the offset;
        `timeout_share`: the probability that a settlement times out (0..1); `line_shares`: how
        often the v2 line cases are drawn when the region has a catalogue (bill_lines.py);
        `price_permille`: unit prices scaled by it (a cheaper year for `--history`)."""
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        if not 0.0 <= timeout_share <= 1.0:
            raise ValueError("timeout_share must be between 0 and 1")
        self.timeout_share = timeout_share
        self.price_permille = price_permille
        self.region = region
        self.rate_per_s = rate_per_s
        self.profile = profile
        self.start_s_of_day = start_s_of_day
        self._rng = random.Random(seed)
        self._seq = 0
        self._settles: list[int] = []
        catalogue = region_catalogue(region)
        self._lines = LineDrawer(catalogue, line_shares) if catalogue is not None else None

    def rate_at(self, t_s: float) -> float:
        """The arrival rate (per s) at offset `t_s`."""
        return self.rate_per_s * self.profile.factor(self.start_s_of_day + t_s)

    def intents(self, seconds: float) -> Iterator[dict[str, Any]]:
        """Yield intents with (profile-shaped) Poisson arrival offsets in [0, seconds)."""
        peak_per_s = self.rate_per_s * self.profile.peak_factor()
        t_s = 0.0
        while True:
            t_s += self._rng.expovariate(peak_per_s)
            if t_s >= seconds:
                return
            if self._rng.random() * peak_per_s < self.rate_at(t_s):
                yield self.next_intent(round(t_s, 6))

    def next_intent(self, t_s: float) -> dict[str, Any]:
        """Draw one intent at offset `t_s` (a cancellation of an earlier settlement ~1 % of the time)."""
        self._seq += 1
        if self._settles and self._rng.random() < CANCEL_SHARE:
            return {"t_s": t_s, "seq": self._seq, "kind": "cancel", "of_seq": self._rng.choice(self._settles)}
        self._settles.append(self._seq)
        return self._settle(t_s)

    def _settle(self, t_s: float) -> dict[str, Any]:
        rng = self._rng
        terminal = rng.choice(self.region.terminals)
        institution = self.region.institutions[terminal.institution]
        person = self._person(rng)
        credential = "voucher" if self.region.issuers and rng.random() < VOUCHER_SHARE else "card"
        items = bill_items(rng, institution.kind == "pharmacy", institution.doctors, terminal.opter, self._lines, t_s,
                           self.price_permille)
        retries = 1 if rng.random() < RETRY_SHARE else 0
        # Drawn whatever the share, so that changing the share changes nothing else in the stream.
        timeout = rng.random() < self.timeout_share
        psn_no, payer, acct, items = self._who_pays(rng, person.psn_no, items, institution.doctors or (terminal.opter,),
                                                    institution.kind == "pharmacy")
        return {"t_s": t_s, "seq": self._seq, "kind": "settle", "dev_no": terminal.dev_no,
                "psn_no": psn_no, "credential": credential, "items": items,
                "retries": 0 if timeout else retries, "timeout": timeout, "acct": acct, "payer": payer}

    def _who_pays(self, rng: random.Random, psn_no: str, items: list[dict[str, Any]],
                  doctors: tuple[str, ...], pharmacy: bool) -> tuple[str, str | None, bool, list[dict[str, Any]]]:
        """(patient, payer, account used, items): mutual aid or a refused link replaces the patient
        by a linked member; a chronic patient's bill by large prescription lines."""
        acct, draw = rng.random() < ACCT_SHARE, rng.random()
        links, linked, locals_ = self._who_pays_people
        if draw < MUTUAL_AID_SHARE and links:
            owner, member = rng.choice(links)
            return member, owner, True, items
        if draw < MUTUAL_AID_SHARE + REFUSED_LINK_SHARE and len(locals_) > 1:
            member, stranger = rng.sample(locals_, 2)
            if (stranger, member) not in linked:
                return member, stranger, True, items
        if draw > 1 - CHRONIC_SHARE and locals_:
            return rng.choice(locals_[:CHRONIC_PATIENTS]), None, acct, _chronic_items(rng, doctors, self._lines, pharmacy)
        return psn_no, None, acct, items

    @functools.cached_property
    def _who_pays_people(self) -> tuple[list[tuple[str, str]], set[tuple[str, str]], list[str]]:
        """(owner, member) of the family links valid through the region's sample years, every linked
        pair, and the sample persons of the region's own place (whose cards work here; a blocked
        one is refused before any who-pays rule, which the oracle allows)."""
        links = [(link.owner, link.member) for link in self.region.family_links
                 if link.valid_from <= "2024-01-01" and "2034-12-31" <= link.valid_to]
        linked = {(link.owner, link.member) for link in self.region.family_links}
        home = self.region.population.home_admdvs
        return links, linked, [p.psn_no for p in self.region.population.sample if p.insuplc_admdvs == home]

    def _person(self, rng: random.Random) -> Person:
        population = self.region.population
        if rng.random() < SAMPLE_SHARE:
            return rng.choice(population.sample)
        return population.serial_person(rng.randint(1, population.size))
