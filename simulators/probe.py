"""Ask the gateway, by one pre-settlement, which of SPEC 13's line rules it applies.

The oracle's v2 checks (oracle_v2.py) expect the lines as the gateway reads them. A gateway whose
decoder does not know `hosp_appr_flag`, `drug_trac_codg` and `trdn_flag` cuts lines as if they were
absent; one before SPEC 13 answers no `overlmt_amt`. The probe sends one 2101 (2206 where there is
no pharmacy; a pre-settlement changes nothing) with one line: a restricted catalogue row valid
today (any row when none is restricted) sent approved, with an rxno and a fresh traceability code.

- no `overlmt_amt` in its `detlcutinfo` row: "off";
- the code echoed and the line not cut RESTRICTED_USE: "full";
- otherwise "catalogue" (the catalogue cut, the three fields read as absent).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from simulators.catalogue import RESTRICTED_USE, Catalogue, Row, region_catalogue, shanghai_date
from simulators.oracle import Oracle
from simulators.region import Person, Region, TerminalSpec
from simulators.report import Stats
from simulators.terminal import MsgidSource, SimClock, SimTerminal, Transport

PROBE_PRICE_FEN = 100
# Answers that say "not this person": the probe tries the next one.
PERSON_REFUSALS = frozenset({"PERSON_INELIGIBLE", "CARD_BLOCKED", "CROSS_PROVINCE_NOT_FILED"})
PERSONS_TRIED_MAX = 5


class ProbeError(Exception):
    """The gateway did not answer the probe with a pre-settlement; one line."""


def probe_row(catalogue: Catalogue | None, day: Any) -> Row | None:
    """A restricted row valid on `day`, else any row valid then, else None."""
    if catalogue is None:
        return None
    valid = [row for code in sorted(catalogue.rows) if (row := catalogue.lookup(code, day)) is not None]
    return next((row for row in valid if row.lmt_used), valid[0] if valid else None)


def probe_line(row: Row | None, doctor: str) -> dict[str, Any]:
    """The probe's one bill line for `row` (None: a code of the till's own)."""
    price = PROBE_PRICE_FEN
    if row is not None and row.pric_uplmt_fen is not None:
        price = min(price, row.pric_uplmt_fen)
    code = f"{random.SystemRandom().randrange(10 ** 20):020d}"
    return {"feedetl_sn": "1", "med_list_codg": row.med_list_codg if row else "PROBE",
            "chrgitm_lv": row.chrgitm_lv if row else "01", "otc": row.otc if row else True, "rxno": "RXPROBE",
            "cnt": 1, "pric": price, "det_item_fee_sumamt": price, "bilg_dr_codg": doctor,
            "hosp_appr_flag": "1", "drug_trac_codg": [code], "trdn_flag": "0"}


def verdict(line: Mapping[str, Any], restricted: bool, answer: Mapping[str, Any] | None) -> str:
    """The v2 mode a probe answer shows (see the module's docstring).

    Raises:
        ProbeError: the answer is not a pre-settlement.
    """
    if answer is None or answer["infcode"] != 0:
        raise ProbeError(f"the v2 probe was refused: {answer['err_code'] if answer else 'no verifiable answer'}")
    rows = answer["output"].get("detlcutinfo") or [{}]
    if "overlmt_amt" not in rows[0]:
        return "off"
    echoed = rows[0].get("drug_trac_codg") == line["drug_trac_codg"]
    approved = not restricted or rows[0].get("cut_reason") != RESTRICTED_USE
    return "full" if echoed and approved else "catalogue"


def _persons(region: Region, admdvs: str) -> Iterator[Person]:
    """Derived persons of the institution's province first (never blocked), then the sample."""
    population = region.population
    for serial in range(len(population.sample) + 1, population.size + 1):
        person = population.serial_person(serial)
        if person.insuplc_admdvs[:2] == admdvs[:2]:
            yield person
    yield from population.sample


async def probe_v2_checks(region: Region, client: Transport, keys: Mapping[str, Ed25519PublicKey],
                          msgids: MsgidSource, clock: SimClock) -> str:
    """Send the probe from a pharmacy terminal (else the first one) over `client`; its mode.

    Raises:
        ProbeError: sign-in or the pre-settlement was refused.
    """
    kinds = {code: institution.kind for code, institution in region.institutions.items()}
    spec: TerminalSpec = next((t for t in region.terminals if kinds[t.institution] == "pharmacy"), region.terminals[0])
    terminal = SimTerminal(spec, region, client, keys, Oracle({}, {}), Stats(), msgids, clock)
    if not await terminal.sign_in():
        raise ProbeError(f"the v2 probe could not sign in at {spec.dev_no}")
    row = probe_row(region_catalogue(region), shanghai_date(clock.now_ms()))
    line = probe_line(row, spec.opter)
    infno = "2101" if kinds[spec.institution] == "pharmacy" else "2206"
    answer = None
    for person, _ in zip(_persons(region, terminal.institution.admdvs), range(PERSONS_TRIED_MAX)):
        mid = msgids.next(spec.institution, clock.now_ms())
        credential = terminal._credential(person, "card", None)  # noqa: SLF001 (the terminal's card)
        answer, _raw = await terminal.exchange(infno, mid, lambda: {
            **credential(mid, infno, line["det_item_fee_sumamt"]), "medfee_sumamt": line["det_item_fee_sumamt"],
            "items": [line]})
        if answer is None or answer["err_code"] not in PERSON_REFUSALS:
            break
    return verdict(line, row is not None and row.lmt_used, answer)
