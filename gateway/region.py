"""Region directories: what `yibao-gateway init` and `yibao-gateway keygen` write.

A region holds everything one gateway and its simulators need (SPEC section 10, docs/design.md
"Region files"):

| file                  | mode | read by                                                          |
|-----------------------|------|------------------------------------------------------------------|
| `gateway.toml`        | 0644 | the gateway (`gateway.config.load_config`)                       |
| `registry.toml`       | 0644 | the gateway: policy, institutions, terminals, operators, filings |
| `secrets.toml`        | 0600 | the gateway: card master keys, admins' token hashes              |
| `gateway_ed25519.pem` | 0600 | the gateway: its response-signing key (PKCS8 PEM, Ed25519)       |
| `sim.toml`            | 0600 | simulators, load tests, admin CLI: private keys, tokens, persons |
| `catalogue.csv`       | 0644 | the gateway: the fund's catalogue (SPEC section 13, docs/catalogue.md) |
| `accounts.csv`        | 0644 | the gateway: personal accounts' opening balances (SPEC section 13) |

Profiles: `small` (five pharmacies, one per grade A..E, plus a second grade-B one; two clinics;
one hospital; the grade-E pharmacy has a cap a short simulator run exhausts) and `pengzhou`
(415 pharmacies with Zhoushan's grade mix, 122 clinics, 2 hospitals, all in admdvs 510182).
The catalogue: `small` has a few dozen rows, one for each case the rules tell apart; `pengzhou`
has PENGZHOU_ROWS rows in the national code formats (gateway/catalogue_sample.py). Both hold
the codes that the simulators, the load generator and the end-to-end tests sell.

Who pays (SPEC 13): the policy has outpatient pooling for employees (insutype 310: a deductible of
200 yuan and a cap of 2,000 yuan a year); about a quarter of the pharmacies (the `small` profile's
grade-D one) are not outpatient-pooling pharmacies. `accounts.csv` holds an opening balance for every
person of the population (the sample and the local persons the simulators derive, `[population]`
size in all): a realistic spread, ACCOUNT_ZERO_PERMILLE of them empty and the rest log-normal around
ACCOUNT_MEDIAN_FEN. `[[family_links]]` link sample locals two by two (owner pays for member), one
link of each profile having ended before the sample dates and one starting in the future.

Identifier formats, all fixed length:
- institution code (12): kind letter (P pharmacy, C clinic, H hospital) + admdvs (6) + 5-digit
  serial, e.g. "P51018200001";
- `dev_no`: institution code + "-T" + 2 digits ("P51018200001-T01");
- operator code: institution code + "-OP" + 2 digits for clerks (the terminals' `opter`), + "-DR"
  + 2 digits for doctors (the bill lines' `bilg_dr_codg`);
- `psn_no` (16 digits): the person's `insuplc_admdvs` (6) + a 10-digit serial;
- `card_no` (18 digits): `insuplc_admdvs` (6) + a 12-digit serial; `card_sn`: 16 uppercase hex
  digits (the chip serial). Sample persons use serials 1..N; a simulator that derives further
  persons from `[population]` numbers them from N + 1.

Determinism: the layout comes from `random.Random(seed)` and every key and token from
sha256(profile, seed, label), so the same profile and seed give byte-identical files. Whoever
knows the seed can rebuild every secret: a seeded region is for development, tests and load runs;
`keygen` (random) makes the keys of a real deployment.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import pathlib
import random
from typing import Any

import tomli_w
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.catalogue_sample import PENGZHOU_ROWS, catalogue_csv, generated_rows, small_rows
from gateway.core.registry import (
    ALERT_INSTITUTIONS_PER_DAY_DEFAULT, AVG_BILL_YOY_MAX_PERMILLE_DEFAULT, LARGE_BILL_FEN_DEFAULT, RELATIONS,
)
from protocol import gateway_kid, public_raw

__all__ = ["PROFILES", "RegionError", "RegionSummary", "account_balance_fen", "accounts_csv", "init_region", "keygen"]

PROFILES = ("small", "pengzhou")
ADMDVS = "510182"
DATA_LISTEN = "127.0.0.1:8600"
ADMIN_LISTEN = "127.0.0.1:8601"
CATALOGUE_FILE = "catalogue.csv"
ACCOUNTS_FILE = "accounts.csv"
FILES = ("gateway.toml", "registry.toml", "secrets.toml", "gateway_ed25519.pem", "sim.toml", CATALOGUE_FILE,
         ACCOUNTS_FILE)
SECRET_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644
# Card issuers: Sichuan (home), Zhejiang and Beijing, whose insured come here as cross-province patients.
PROVINCES = ("51", "33", "11")
# Places of insurance of cross-province persons (Ningbo, Beijing) and of same-province non-locals
# (Chengdu's Jinniu and Wenjiang districts: no filing needed inside the province).
CROSS_PROVINCE_ADMDVS = ("330200", "110100")
SAME_PROVINCE_ADMDVS = ("510106", "510115")
POLICY = {
    "otc_allowance_fen": {"A": 12000, "B": 9000, "C": 6000, "D": 6000, "E": 6000},
    "coverage_permille": {"310": 700, "390": 500},
    "selfpay_prop_permille": 100,
    "warn_person_day_permille": 800,
    "warn_institution_month_permille": 900,
    # Supervision alert thresholds (SPEC 13/14), the defaults written out.
    "large_bill_fen": LARGE_BILL_FEN_DEFAULT,
    "alert_institutions_per_day": ALERT_INSTITUTIONS_PER_DAY_DEFAULT,
    "avg_bill_yoy_max_permille": AVG_BILL_YOY_MAX_PERMILLE_DEFAULT,
    # Outpatient pooling for employees: 200 yuan deductible, 2,000 yuan a year pooled at most.
    "pooling": {"310": {"deductible_fen": 20_000, "annual_cap_fen": 200_000}},
}
# Personal accounts: a share is empty (new or resident insured), the rest spread log-normally.
ACCOUNT_ZERO_PERMILLE = 150
ACCOUNT_MEDIAN_FEN = 150_000
ACCOUNT_SIGMA = 1.0
ACCOUNT_FEN_MAX = 10_000_000
# Pharmacies that are not outpatient-pooling (门诊统筹) pharmacies, per thousand.
NO_POOLING_PHARMACY_PERMILLE = 250
LINK_VALID = ("2024-01-01", "2034-12-31")
LINK_ENDED = ("2023-01-01", "2023-12-31")
LINK_FUTURE = ("2035-01-01", "2035-12-31")
ADMINS = (("alice", "policy"), ("bob", "policy"), ("olivia", "operator"), ("victor", "viewer"))
VOUCHER_ISSUERS = ("ec-nhsa-1", "ec-sc-1")
# Filing windows are fixed dates (not "today") so that the files depend on the seed alone.
FILING_VALID = ("2024-01-01", "2034-12-31")
FILING_EXPIRED = ("2022-01-01", "2023-12-31")
TOWNS = ("天彭", "致和", "濛阳", "丽春", "九尺", "敖平", "隆丰", "升平", "通济", "丹景山", "桂花",
         "磁峰", "龙门山", "葛仙山", "军乐", "白鹿", "新兴", "红岩", "小鱼洞", "湔江")
PHARMACY_WORDS = ("康源", "仁济", "惠民", "百草", "安康", "济生", "寿春", "德仁")
CLINIC_WORDS = ("卫生院", "社区卫生服务中心", "中医诊所", "综合门诊部")
# Zhoushan's credit-grade mix (A ≈ 18 %, B ≈ 46 %), the rest spread over C, D and E.
PENGZHOU_GRADE_PERMILLE = {"A": 180, "B": 460, "C": 240, "D": 80, "E": 40}
PENGZHOU_PHARMACIES = 415
PENGZHOU_CLINICS = 122
PENGZHOU_HOSPITALS = 2
# Monthly fund caps (fen) per grade and kind before the per-institution spread of 60..140 %.
PENGZHOU_CAP_BASE_FEN = {"A": 6_000_000, "B": 4_000_000, "C": 2_500_000, "D": 1_500_000,
                         "E": 800_000, "clinic": 3_000_000, "hospital": 50_000_000}


class RegionError(Exception):
    """A region cannot be written (exists already, bad profile, file system refusal); one line."""


@dataclasses.dataclass(frozen=True)
class RegionSummary:
    """What `init_region` wrote, for the CLI's one-line report."""

    out_dir: pathlib.Path
    profile: str
    seed: int
    counts: dict[str, int]
    kid: str


@dataclasses.dataclass(frozen=True)
class _Shape:
    """The plan of one institution before keys are derived."""

    code: str
    name: str
    kind: str
    grade: str | None
    monthly_cap_fen: int
    terminals: int
    doctors: int
    outpatient_pooling: bool = True


@dataclasses.dataclass(frozen=True)
class _Profile:
    institutions: tuple[_Shape, ...]
    population_size: int
    employee_share_permille: int
    cross_province_share_permille: int
    local_persons: int
    blocked_cards: int
    blocked_persons: int


class _Keys:
    """Key and token derivation: sha256 over (profile, seed, label), so a seed rebuilds a region."""

    def __init__(self, profile: str, seed: int) -> None:
        self.prefix = f"yibao-region/v1|{profile}|{seed}|"

    def raw32(self, label: str) -> bytes:
        return hashlib.sha256((self.prefix + label).encode("utf-8")).digest()

    def ed25519(self, label: str) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.raw32(label))

    def token(self, label: str) -> str:
        return "ybadm_" + base64.urlsafe_b64encode(self.raw32(label)[:24]).decode("ascii")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _public_b64(key: Ed25519PrivateKey) -> str:
    return _b64(public_raw(key.public_key()))


def _private_b64(key: Ed25519PrivateKey) -> str:
    return _b64(key.private_bytes_raw())


# -- profiles ------------------------------------------------------------------------------------

def _code(kind: str, serial: int) -> str:
    return f"{kind[0].upper()}{ADMDVS}{serial:05d}"


def _small_profile() -> _Profile:
    # Caps: generous everywhere but at the grade-E pharmacy, whose 300 yuan a month a simulator
    # exhausts within a few dozen settlements at most, so the institution_month bound shows up in short runs.
    pharmacies = (("A", 2_000_000, 2), ("B", 1_200_000, 1), ("C", 800_000, 1), ("D", 500_000, 1),
                  ("E", 30_000, 1), ("B", 1_000_000, 1))
    shapes = [_Shape(_code("pharmacy", n), f"{TOWNS[n - 1]}{PHARMACY_WORDS[n - 1]}药房", "pharmacy", grade,
                     cap_fen, terminals, 0, outpatient_pooling=grade != "D")
              for n, (grade, cap_fen, terminals) in enumerate(pharmacies, start=1)]
    shapes += [_Shape(_code("clinic", n), f"彭州市{TOWNS[n + 6]}{CLINIC_WORDS[n - 1]}", "clinic", None,
                      1_500_000, 1, 2) for n in (1, 2)]
    shapes.append(_Shape(_code("hospital", 1), "彭州市中心医院", "hospital", None, 10_000_000, 1, 3))
    return _Profile(tuple(shapes), population_size=2_000, employee_share_permille=400,
                    cross_province_share_permille=50, local_persons=30, blocked_cards=1, blocked_persons=1)


def _spread_cap(rng: random.Random, base_fen: int) -> int:
    """A cap of 60..140 % of `base_fen`, rounded down to whole 100 yuan."""
    return base_fen * rng.randint(60, 140) // 100 // 10_000 * 10_000


def _pengzhou_grades(rng: random.Random) -> list[str]:
    counts = {g: (PENGZHOU_PHARMACIES * p + 500) // 1000 for g, p in PENGZHOU_GRADE_PERMILLE.items()}
    counts["C"] += PENGZHOU_PHARMACIES - sum(counts.values())  # rounding remainder
    grades = [g for g, count in counts.items() for _ in range(count)]
    rng.shuffle(grades)
    return grades


def _pengzhou_profile(rng: random.Random) -> _Profile:
    shapes = []
    for n, grade in enumerate(_pengzhou_grades(rng), start=1):
        name = f"{rng.choice(TOWNS)}{rng.choice(PHARMACY_WORDS)}药房{n:03d}店"
        # A quarter of the pharmacies run two tills.
        terminals = 2 if rng.random() < 0.25 else 1
        shapes.append(_Shape(_code("pharmacy", n), name, "pharmacy", grade,
                             _spread_cap(rng, PENGZHOU_CAP_BASE_FEN[grade]), terminals, 0,
                             outpatient_pooling=rng.randrange(1000) >= NO_POOLING_PHARMACY_PERMILLE))
    for n in range(1, PENGZHOU_CLINICS + 1):
        name = f"彭州市{rng.choice(TOWNS)}{rng.choice(CLINIC_WORDS)}{n:03d}"
        shapes.append(_Shape(_code("clinic", n), name, "clinic", None,
                             _spread_cap(rng, PENGZHOU_CAP_BASE_FEN["clinic"]), 1, rng.randint(1, 3)))
    for n, name in enumerate(("彭州市中心医院", "彭州市中医医院"), start=1):
        shapes.append(_Shape(_code("hospital", n), name, "hospital", None,
                             _spread_cap(rng, PENGZHOU_CAP_BASE_FEN["hospital"]), 6, 20))
    return _Profile(tuple(shapes), population_size=500_000, employee_share_permille=350,
                    cross_province_share_permille=20, local_persons=2_000, blocked_cards=5, blocked_persons=3)


# -- the region's content ------------------------------------------------------------------------

@dataclasses.dataclass
class _Region:
    """Every table of the region files, as plain TOML-ready dicts."""

    institutions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    terminals: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    sim_terminals: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    operators: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    persons: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    filings: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    blocked_cards: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    blocked_persons: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    family_links: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _add_institution(region: _Region, shape: _Shape, keys: _Keys) -> None:
    institution = {"code": shape.code, "name": shape.name, "kind": shape.kind, "admdvs": ADMDVS}
    if shape.grade is not None:
        institution["grade"] = shape.grade
    institution.update(monthly_cap_fen=shape.monthly_cap_fen, status="active")
    if not shape.outpatient_pooling:
        institution["outpatient_pooling"] = False
    region.institutions.append(institution)
    for n in range(1, shape.terminals + 1):
        dev_no, opter = f"{shape.code}-T{n:02d}", f"{shape.code}-OP{n:02d}"
        key = keys.ed25519(f"terminal/{dev_no}")
        region.terminals.append({"dev_no": dev_no, "institution": shape.code, "public_key": _public_b64(key),
                                 "status": "active"})
        region.sim_terminals.append({"dev_no": dev_no, "institution": shape.code,
                                     "private_key": _private_b64(key), "opter": opter})
        region.operators.append({"code": opter, "institution": shape.code, "status": "active"})
    for n in range(1, shape.doctors + 1):
        region.operators.append({"code": f"{shape.code}-DR{n:02d}", "institution": shape.code, "status": "active"})


def _suspend_one_doctor(region: _Region) -> None:
    """Suspend the last doctor of the first clinic, so DOCTOR_SUSPENDED cuts can be exercised."""
    first_clinic = next(i["code"] for i in region.institutions if i["kind"] == "clinic")
    doctor = [op for op in region.operators if op["code"].startswith(first_clinic + "-DR")][-1]
    doctor["status"] = "suspended"


def _person(serial: int, insuplc_admdvs: str, insutype: str, rng: random.Random) -> dict[str, str]:
    return {"psn_no": f"{insuplc_admdvs}{serial:010d}", "insutype": insutype, "insuplc_admdvs": insuplc_admdvs,
            "card_no": f"{insuplc_admdvs}{serial:012d}", "card_sn": f"{rng.getrandbits(64):016X}"}


def _insutype(rng: random.Random, profile: _Profile) -> str:
    return "310" if rng.randrange(1000) < profile.employee_share_permille else "390"


def _filing(psn_no: str, admdvs: str, window: tuple[str, str]) -> dict[str, str]:
    return {"psn_no": psn_no, "admdvs": admdvs, "valid_from": window[0], "valid_to": window[1]}


def _cross_province_cases(psn_no: str, case: int) -> list[dict[str, str]]:
    """The filings of the `case`-th cross-province person: each way a filing can help or not."""
    cases: tuple[tuple[tuple[str, tuple[str, str]], ...], ...] = (
        (("51", FILING_VALID),),            # filed for the whole province: treated here
        ((ADMDVS, FILING_VALID),),          # filed for this county: treated here
        (),                                 # not filed: CROSS_PROVINCE_NOT_FILED
        ((ADMDVS, FILING_EXPIRED),),        # filing expired: CROSS_PROVINCE_NOT_FILED
        (("510106", FILING_VALID),),        # filed for another county only: not valid here
    )
    return [_filing(psn_no, admdvs, window) for admdvs, window in cases[case % len(cases)]]


def _add_persons(region: _Region, profile: _Profile, rng: random.Random) -> None:
    """The fixed sample of persons: locals, same-province non-locals, cross-province cases, blocks."""
    places = [ADMDVS] * profile.local_persons + list(SAME_PROVINCE_ADMDVS)
    cross_count = max(len(CROSS_PROVINCE_ADMDVS) * 5,
                      profile.local_persons * profile.cross_province_share_permille // 1000)
    places += [CROSS_PROVINCE_ADMDVS[n % len(CROSS_PROVINCE_ADMDVS)] for n in range(cross_count)]
    for serial, place in enumerate(places, start=1):
        region.persons.append(_person(serial, place, _insutype(rng, profile), rng))
    cross = [p for p in region.persons if p["insuplc_admdvs"][:2] != ADMDVS[:2]]
    for case, person in enumerate(cross):
        region.filings.extend(_cross_province_cases(person["psn_no"], case))
    # Blocks fall on locals from the end of the local run, so the first locals stay usable.
    locals_ = [p for p in region.persons if p["insuplc_admdvs"] == ADMDVS]
    blocked = locals_[-(profile.blocked_cards + profile.blocked_persons):]
    for person in blocked[:profile.blocked_cards]:
        region.blocked_cards.append({"card_no": person["card_no"], "reason": "reported lost"})
    for person in blocked[profile.blocked_cards:]:
        region.blocked_persons.append({"psn_no": person["psn_no"], "reason": "insurance suspended"})


def _add_family_links(region: _Region, rng: random.Random) -> None:
    """Link sample locals two by two (a third of the pairs): owner pays for member; the first link has
    ended, the second starts in the future, the rest are valid through the sample years."""
    blocked = {row["psn_no"] for row in region.blocked_persons}
    locals_ = [p["psn_no"] for p in region.persons if p["insuplc_admdvs"] == ADMDVS and p["psn_no"] not in blocked]
    pairs = [(locals_[n], locals_[n + 1]) for n in range(0, len(locals_) - 1, 2)]
    for index, (owner, member) in enumerate(pairs[:max(4, len(pairs) // 3)]):
        window = LINK_ENDED if index == 0 else LINK_FUTURE if index == 1 else LINK_VALID
        region.family_links.append({"owner": owner, "member": member, "relation": rng.choice(RELATIONS),
                                    "valid_from": window[0], "valid_to": window[1]})


def account_balance_fen(rng: random.Random) -> int:
    """One opening balance of init's spread (see the module docstring)."""
    if rng.randrange(1000) < ACCOUNT_ZERO_PERMILLE:
        return 0
    return min(ACCOUNT_FEN_MAX, int(rng.lognormvariate(0.0, ACCOUNT_SIGMA) * ACCOUNT_MEDIAN_FEN))


def accounts_csv(region: _Region, population_size: int, seed: int) -> bytes:
    """accounts.csv: the sample persons and the local persons serials N + 1..size, in psn_no order."""
    rng = random.Random(f"accounts/{seed}")
    psn_nos = [p["psn_no"] for p in region.persons]
    psn_nos += [f"{ADMDVS}{serial:010d}" for serial in range(len(region.persons) + 1, population_size + 1)]
    rows = "".join(f"{psn_no},{account_balance_fen(rng)}\n" for psn_no in sorted(psn_nos))
    return ("psn_no,balance_fen\n" + rows).encode()


def _build(profile_name: str, seed: int) -> tuple[_Profile, _Region]:
    rng = random.Random(seed)
    profile = _small_profile() if profile_name == "small" else _pengzhou_profile(rng)
    keys = _Keys(profile_name, seed)
    region = _Region()
    for shape in profile.institutions:
        _add_institution(region, shape, keys)
    _suspend_one_doctor(region)
    _add_persons(region, profile, rng)
    _add_family_links(region, rng)
    return profile, region


# -- TOML output ---------------------------------------------------------------------------------

def _toml(comment: str, document: dict[str, Any]) -> str:
    """A TOML document: `comment` as `#` lines, then `document` (dicts become tables, lists of
    dicts arrays of tables or inline arrays, as the writer finds them readable)."""
    return "".join(f"# {line}\n" for line in comment.splitlines()) + tomli_w.dumps(document)


def _gateway_toml() -> str:
    comment = ("yibao-gateway configuration (SPEC section 10). Paths are relative to this file.\n"
               "Further [limits] and [journal] keys and their defaults: see gateway/config.py.\n"
               "connections_per_address_max: the simulator's terminals all connect from 127.0.0.1, so\n"
               "one address may use every connection here; a real region keeps the default (256).")
    return _toml(comment, {
        "admdvs": ADMDVS,
        "listen": {"data": DATA_LISTEN, "admin": ADMIN_LISTEN},
        "paths": {"registry": "registry.toml", "secrets": "secrets.toml",
                  "signing_key": "gateway_ed25519.pem", "data_dir": "data", "catalogue": CATALOGUE_FILE,
                  "accounts": ACCOUNTS_FILE},
        "limits": {"body_bytes_max": 65536, "session_ttl_s": 43200, "connections_per_address_max": 1024},
        "journal": {"fsync": True, "group_commit_ms": 2},
    })


def _registry_toml(region: _Region, keys: _Keys, profile: str, seed: int) -> str:
    comment = (f"Region registry (public data), profile {profile}, seed {seed}. The gateway never rewrites\n"
               "this file: admin changes are journaled and applied on top of it at start.")
    issuers = [{"kid": kid, "public_key": _public_b64(keys.ed25519(f"issuer/{kid}"))} for kid in VOUCHER_ISSUERS]
    return _toml(comment, {
        "policy": POLICY, "institutions": region.institutions, "terminals": region.terminals,
        "operators": region.operators, "voucher_issuers": issuers, "filings": region.filings,
        "blocked_cards": region.blocked_cards, "blocked_persons": region.blocked_persons,
        "family_links": region.family_links,
    })


def _master_keys(keys: _Keys) -> dict[str, str]:
    return {province: _b64(keys.raw32(f"card-master/{province}")) for province in PROVINCES}


def _secrets_toml(keys: _Keys) -> str:
    admins = [{"name": name, "role": role,
               "token_sha256": hashlib.sha256(keys.token(f"admin/{name}").encode("utf-8")).hexdigest()}
              for name, role in ADMINS]
    return _toml("Gateway secrets: card master keys per province and admin token hashes. Keep it 0600.",
                 {"card_master_keys": _master_keys(keys), "admins": admins})


def _sim_toml(region: _Region, profile: _Profile, keys: _Keys, seed: int) -> str:
    comment = ("Simulator secrets (never read by the gateway): terminal and voucher-issuer private keys,\n"
               "admin tokens, card master keys and a fixed sample of insured persons. Keep it 0600.")
    top = {"gateway_url": f"http://{DATA_LISTEN}", "admin_url": f"http://{ADMIN_LISTEN}", "seed": seed,
           "card_master_keys": _master_keys(keys)}
    issuers = [{"kid": kid, "private_key": _private_b64(keys.ed25519(f"issuer/{kid}"))} for kid in VOUCHER_ISSUERS]
    admins = [{"name": name, "role": role, "token": keys.token(f"admin/{name}")} for name, role in ADMINS]
    population = {"size": profile.population_size, "seed": seed,
                  "employee_share_permille": profile.employee_share_permille,
                  "cross_province_share_permille": profile.cross_province_share_permille}
    return _toml(comment, {**top, "terminals": region.sim_terminals, "voucher_issuers": issuers,
                           "admins": admins, "population": population, "persons": region.persons})


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


# -- files ---------------------------------------------------------------------------------------

def _write_new(path: pathlib.Path, data: bytes, mode: int) -> None:
    """Create `path` (never replacing a file) with `data`, made durable; secret modes are forced."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        raise RegionError(f"{path}: already exists; refusing to overwrite it") from None
    except OSError as exc:
        raise RegionError(f"{path}: cannot create: {exc.strerror or exc}") from None
    try:
        if mode == SECRET_FILE_MODE:
            os.fchmod(fd, mode)  # independent of the umask: nobody else may read a secret
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as exc:
        raise RegionError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _fsync_dir(directory: pathlib.Path) -> None:
    """Make the new directory entries durable (the files themselves were fsynced when written)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise RegionError(f"{directory}: cannot sync the directory: {exc.strerror or exc}") from None


def _prepare_dir(out_dir: pathlib.Path) -> None:
    if (out_dir / "gateway.toml").exists():
        raise RegionError(f"{out_dir}: already holds a region (gateway.toml); refusing to overwrite it")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RegionError(f"{out_dir}: cannot create the directory: {exc.strerror or exc}") from None
    for name in FILES:
        if (out_dir / name).exists():
            raise RegionError(f"{out_dir / name}: already exists; refusing to overwrite it")


def _catalogue_rows(profile: str, seed: int) -> list[tuple[str, ...]]:
    return small_rows() if profile == "small" else generated_rows(PENGZHOU_ROWS, seed)


def _counts(region: _Region, catalogue_rows: int, accounts: int) -> dict[str, int]:
    kinds = [i["kind"] for i in region.institutions]
    return {"pharmacies": kinds.count("pharmacy"), "clinics": kinds.count("clinic"),
            "hospitals": kinds.count("hospital"), "terminals": len(region.terminals),
            "operators": len(region.operators), "voucher issuers": len(VOUCHER_ISSUERS),
            "filings": len(region.filings), "persons": len(region.persons), "admins": len(ADMINS),
            "catalogue rows": catalogue_rows, "accounts": accounts, "family links": len(region.family_links)}


def init_region(out_dir: pathlib.Path, profile: str = "small", seed: int = 1) -> RegionSummary:
    """Write a runnable region into `out_dir` (created if missing).

    Args:
        out_dir: the region directory; it must not already hold any of the region files.
        profile: one of PROFILES.
        seed: drives the layout and every key and token; the same seed gives the same files.
    Returns:
        a RegionSummary (counts by kind, the gateway key's kid).
    Raises:
        RegionError: unknown profile, an existing region or region file, or a file-system refusal.
    """
    if profile not in PROFILES:
        raise RegionError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    out_dir = pathlib.Path(out_dir)
    _prepare_dir(out_dir)
    shape, region = _build(profile, seed)
    keys = _Keys(profile, seed)
    gateway_key = keys.ed25519("gateway/signing")
    # gateway.toml goes last: its presence is what marks a finished region.
    _write_new(out_dir / "registry.toml", _registry_toml(region, keys, profile, seed).encode(), PUBLIC_FILE_MODE)
    _write_new(out_dir / "secrets.toml", _secrets_toml(keys).encode(), SECRET_FILE_MODE)
    _write_new(out_dir / "gateway_ed25519.pem", _pem(gateway_key), SECRET_FILE_MODE)
    _write_new(out_dir / "sim.toml", _sim_toml(region, shape, keys, seed).encode(), SECRET_FILE_MODE)
    catalogue = _catalogue_rows(profile, seed)
    _write_new(out_dir / CATALOGUE_FILE, catalogue_csv(catalogue).encode(), PUBLIC_FILE_MODE)
    accounts = accounts_csv(region, shape.population_size, seed)
    _write_new(out_dir / ACCOUNTS_FILE, accounts, PUBLIC_FILE_MODE)
    _write_new(out_dir / "gateway.toml", _gateway_toml().encode(), PUBLIC_FILE_MODE)
    _fsync_dir(out_dir)
    counts = _counts(region, len(catalogue), accounts.count(b"\n") - 1)
    return RegionSummary(out_dir=out_dir, profile=profile, seed=seed, counts=counts,
                         kid=gateway_kid(public_raw(gateway_key.public_key())))


def keygen(path: pathlib.Path) -> str:
    """Write a new random Ed25519 signing key as PKCS8 PEM (mode 0600) at `path`.

    Returns:
        the key's kid (`protocol.gateway_kid` of its public key).
    Raises:
        RegionError: `path` exists (never overwritten) or cannot be written.
    """
    path = pathlib.Path(path)
    key = Ed25519PrivateKey.generate()
    _write_new(path, _pem(key), SECRET_FILE_MODE)
    return gateway_kid(public_raw(key.public_key()))
