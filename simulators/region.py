"""Read a region directory (sim.toml, registry.toml, gateway.toml) into what simulators need.

The simulator never imports gateway/: it reads the same TOML files the gateway reads, keeping only
the public registry facts (institutions, grades, caps, policy, doctors) and its own secrets
(terminal and voucher-issuer private keys, card master keys, sample persons).

Persons: sim.toml lists a fixed sample (serials 1..N, including the blocked ones and the
cross-province ones with and without filings in registry.toml) and a `[population]` section
(size, seed, employee and cross-province shares). `Population` derives persons N + 1..size from
that section alone: the same region gives the same persons, whatever the run's seed. The gateway
keeps no list of persons: it believes a card whose cryptogram verifies under the province's master
key (SPEC section 7, Credentials), so a derived person's card is as good as a sample person's. No
derived person is blocked or filed: a derived cross-province person is refused with
CROSS_PROVINCE_NOT_FILED, as an unfiled patient from another province is.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import pathlib
import tomllib
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


class RegionReadError(Exception):
    """A region directory is missing a file or a key the simulator needs; one line."""


@dataclasses.dataclass(frozen=True)
class Institution:
    """One registered institution: `kind` is pharmacy/clinic/hospital, `grade` A..E or None."""

    code: str
    kind: str
    admdvs: str
    grade: str | None
    monthly_cap_fen: int
    doctors: tuple[str, ...]
    outpatient_pooling: bool = True       # a pharmacy whose prescriptions outpatient pooling pays


@dataclasses.dataclass(frozen=True)
class TerminalSpec:
    """One enrolled POS terminal and its private key."""

    dev_no: str
    institution: str
    opter: str
    private_key: Ed25519PrivateKey


@dataclasses.dataclass(frozen=True)
class Person:
    """One insured person with a card (the card fields are what a card credential carries)."""

    psn_no: str
    insutype: str
    insuplc_admdvs: str
    card_no: str
    card_sn: str

    def card(self) -> dict[str, str]:
        """The mapping TerminalSession.card_input expects."""
        return dataclasses.asdict(self)


PERMILLE = 1000
PSN_SERIAL_DIGITS = 10
CARD_SERIAL_DIGITS = 12


@dataclasses.dataclass(frozen=True)
class Population:
    """The region's insured: the sample from sim.toml (serials 1..N) and derived persons N + 1..size.

    A derived person is drawn from sha256(seed, serial): cross-province (at one of the sample's
    cross-province places) with `cross_province_share_permille`, else local (the institutions'
    admdvs); employee insurance "310" with `employee_share_permille`, else resident "390".
    """

    sample: tuple[Person, ...]
    size: int
    seed: int
    employee_share_permille: int
    cross_province_share_permille: int
    home_admdvs: str
    cross_places: tuple[str, ...]

    @functools.cached_property
    def sample_by_psn_no(self) -> dict[str, Person]:
        """The sample persons by psn_no."""
        return {p.psn_no: p for p in self.sample}

    def serial_person(self, serial: int) -> Person:
        """The person with `serial` (1..size): a sample person up to N, derived beyond.

        Raises:
            KeyError: serial outside 1..size.
        """
        if not 1 <= serial <= max(self.size, len(self.sample)):
            raise KeyError(f"serial {serial} outside the population 1..{self.size}")
        if serial <= len(self.sample):
            return self.sample[serial - 1]
        digest = hashlib.sha256(f"yb-sim/person/v1\n{self.seed}\n{serial}".encode()).digest()
        cross = bool(self.cross_places) and _permille(digest[0:4]) < self.cross_province_share_permille
        place = self.cross_places[digest[4] % len(self.cross_places)] if cross else self.home_admdvs
        insutype = "310" if _permille(digest[8:12]) < self.employee_share_permille else "390"
        return Person(f"{place}{serial:0{PSN_SERIAL_DIGITS}d}", insutype, place,
                      f"{place}{serial:0{CARD_SERIAL_DIGITS}d}", digest[16:24].hex().upper())

    def person(self, psn_no: str) -> Person:
        """The person named `psn_no` (a trace names persons by psn_no).

        Raises:
            KeyError: no such person in this population.
        """
        if psn_no in self.sample_by_psn_no:
            return self.sample_by_psn_no[psn_no]
        serial_text = psn_no[-PSN_SERIAL_DIGITS:]
        found = self.serial_person(int(serial_text)) if serial_text.isdigit() else None
        if found is None or found.psn_no != psn_no:
            raise KeyError(f"person {psn_no} not in this region's population")
        return found


def _permille(four_bytes: bytes) -> int:
    return int.from_bytes(four_bytes, "big") % PERMILLE


@dataclasses.dataclass(frozen=True)
class Policy:
    """The registry's [policy]: OTC allowance per pharmacy grade (fen per person per day), and
    outpatient pooling per insutype: (deductible_fen, annual_cap_fen) (SPEC 13)."""

    otc_allowance_fen: dict[str, int]
    coverage_permille: dict[str, int]
    selfpay_prop_permille: int
    pooling: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class FamilyLink:
    """A registry `[[family_links]]` row: `owner`'s account may pay for `member` (dates YYYY-MM-DD)."""

    owner: str
    member: str
    valid_from: str
    valid_to: str

    def valid_on(self, date: str) -> bool:
        """Whether the link holds on the Shanghai date `date` (YYYY-MM-DD)."""
        return self.valid_from <= date <= self.valid_to


@dataclasses.dataclass(frozen=True)
class Region:
    """Everything a simulator run needs from one region directory."""

    path: pathlib.Path
    gateway_url: str
    institutions: dict[str, Institution]
    terminals: tuple[TerminalSpec, ...]
    persons: tuple[Person, ...]
    population: Population
    issuers: dict[str, Ed25519PrivateKey]
    card_master_keys: dict[str, bytes]
    policy: Policy
    family_links: tuple[FamilyLink, ...] = ()
    # Opening balances of the accounts file (SPEC 13), read here, not asked of the gateway; None
    # when the region has no accounts.
    opening_fen: dict[str, int] | None = None
    # The admin API (SPEC 11/14): its URL and the admins' tokens by role, from sim.toml.
    admin_url: str = ""
    admin_tokens: dict[str, str] = dataclasses.field(default_factory=dict)

    def allowance_fen(self, institution_code: str) -> int:
        """The daily OTC allowance at this institution (0 at clinics and hospitals)."""
        grade = self.institutions[institution_code].grade
        return self.policy.otc_allowance_fen.get(grade, 0) if grade else 0


def _load(path: pathlib.Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise RegionReadError(f"{path}: {error}") from None


def _key(text: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(text))


def _listen_url(region_dir: pathlib.Path, sim: dict[str, Any], listener: str) -> str:
    """Prefer gateway.toml's listen.data / listen.admin: tests and operators rewrite ports there,
    not in sim.toml (whose gateway_url / admin_url come next)."""
    config_path = region_dir / "gateway.toml"
    if config_path.exists():
        listen = _load(config_path).get("listen", {}).get(listener)
        if isinstance(listen, str):
            return f"http://{listen}"
    if listener == "data":
        return str(sim.get("gateway_url", "http://127.0.0.1:8600"))
    return str(sim.get("admin_url", "http://127.0.0.1:8601"))


def _institutions(registry: dict[str, Any]) -> dict[str, Institution]:
    doctors: dict[str, list[str]] = {}
    for operator in registry.get("operators", []):
        if "-DR" in operator["code"] and operator.get("status", "active") == "active":
            doctors.setdefault(operator["institution"], []).append(operator["code"])
    return {
        row["code"]: Institution(row["code"], row["kind"], row["admdvs"], row.get("grade"),
                                 int(row["monthly_cap_fen"]), tuple(doctors.get(row["code"], ())),
                                 bool(row.get("outpatient_pooling", True)))
        for row in registry.get("institutions", [])
        if row.get("status", "active") == "active"
    }


def _accounts(region_dir: pathlib.Path) -> dict[str, int] | None:
    """The opening balances of gateway.toml's `[paths] accounts` file (None: no accounts)."""
    config_path = region_dir / "gateway.toml"
    name = _load(config_path).get("paths", {}).get("accounts") if config_path.exists() else None
    if not isinstance(name, str):
        return None
    path = region_dir / name
    try:
        lines = path.read_text(encoding="utf-8").splitlines()[1:]
    except OSError as error:
        raise RegionReadError(f"{path}: {error}") from None
    balances = {}
    for line in lines:
        psn_no, _, fen = line.strip().partition(",")
        if psn_no:
            balances[psn_no.strip('"')] = int(fen)
    return balances


def _population(sim: dict[str, Any], persons: tuple[Person, ...],
                institutions: dict[str, Institution]) -> Population:
    """The [population] section (absent: the sample alone) around the sample persons."""
    places = [i.admdvs for i in institutions.values()]
    home = max(sorted(set(places)), key=places.count) if places else persons[0].insuplc_admdvs
    cross = tuple(sorted({p.insuplc_admdvs for p in persons if p.insuplc_admdvs[:2] != home[:2]}))
    section = sim.get("population", {})
    return Population(persons, max(len(persons), int(section.get("size", len(persons)))),
                      int(section.get("seed", sim.get("seed", 0))),
                      int(section.get("employee_share_permille", PERMILLE // 2)),
                      int(section.get("cross_province_share_permille", 0)), home, cross)


def load_region(region_dir: str | pathlib.Path) -> Region:
    """Read a region directory written by `yibao-gateway init`.

    Raises:
        RegionReadError: a file is missing or unreadable, or a required key is absent.
    """
    path = pathlib.Path(region_dir)
    sim, registry = _load(path / "sim.toml"), _load(path / "registry.toml")
    try:
        institutions = _institutions(registry)
        terminals = tuple(
            TerminalSpec(t["dev_no"], t["institution"], t["opter"], _key(t["private_key"]))
            for t in sim["terminals"] if t["institution"] in institutions
        )
        persons = tuple(Person(p["psn_no"], p["insutype"], p["insuplc_admdvs"], p["card_no"], p["card_sn"])
                        for p in sim["persons"])
        issuers = {i["kid"]: _key(i["private_key"]) for i in sim.get("voucher_issuers", [])}
        masters = {k: base64.b64decode(v) for k, v in sim["card_master_keys"].items()}
        raw_policy = registry["policy"]
        policy = Policy({k: int(v) for k, v in raw_policy["otc_allowance_fen"].items()},
                        {k: int(v) for k, v in raw_policy["coverage_permille"].items()},
                        int(raw_policy["selfpay_prop_permille"]),
                        {k: (int(v["deductible_fen"]), int(v["annual_cap_fen"]))
                         for k, v in raw_policy.get("pooling", {}).items()})
        links = tuple(FamilyLink(row["owner"], row["member"], str(row["valid_from"]), str(row["valid_to"]))
                      for row in registry.get("family_links", []))
    except KeyError as error:
        raise RegionReadError(f"{path}: missing key {error}") from None
    if not terminals or not persons:
        raise RegionReadError(f"{path}: no terminals or no persons in sim.toml")
    population = _population(sim, persons, institutions)
    tokens = {a["role"]: a["token"] for a in reversed(sim.get("admins", [])) if "role" in a and "token" in a}
    return Region(path, _listen_url(path, sim, "data"), institutions, terminals, persons, population, issuers,
                  masters, policy, links, _accounts(path), _listen_url(path, sim, "admin"), tokens)
