"""Loading `registry.toml` and `secrets.toml` (SPEC section 10) into frozen, typed structures.

Loading is strict: unknown keys, missing fields, wrong types or values and duplicates raise
RegistryError with one line naming the file, the entry and the field. The files are the starting
point only: admin changes live in the core's overlay (see overlay.py), never in these objects.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.core.schema import Entry, RegistryError, check_int, decode_key32, entries, unique

GRADES = ("A", "B", "C", "D", "E")
KINDS = ("pharmacy", "clinic", "hospital")
ROLES = ("viewer", "operator", "policy")
CAP_FEN_MAX = 10**14
INSTITUTION_CODE = r"[0-9A-Za-z]{12}"
ADMDVS = r"\d{6}"
NAME = r"[^\x00-\x1f]{1,64}"
ID = r"[0-9A-Za-z_.:\-]{1,64}"
INSUTYPE = r"\d{1,8}"


TRACE_RETENTION_DAYS_DEFAULT = 400
TRACE_RETENTION_DAYS_MAX = 3660
LARGE_BILL_FEN_DEFAULT = 100_000
LARGE_BILL_FEN_MAX = 10**10
ALERT_INSTITUTIONS_PER_DAY_DEFAULT = 3
AVG_BILL_YOY_MAX_PERMILLE_DEFAULT = 1050
RELATIONS = ("spouse", "parent", "child")


@dataclasses.dataclass(frozen=True)
class Pooling:
    """Outpatient pooling (门诊统筹) of one insutype: yearly deductible and cap of pooled payment."""

    deductible_fen: int
    annual_cap_fen: int


@dataclasses.dataclass(frozen=True)
class Policy:
    """Fund policy: daily OTC allowance per pharmacy grade, coverage per insurance type, thresholds."""

    otc_allowance_fen: Mapping[str, int]
    coverage_permille: Mapping[str, int]
    selfpay_prop_permille: int
    warn_person_day_permille: int
    warn_institution_month_permille: int
    trace_required_from: datetime.date | None = None     # pharmacy lines need a trace code from this day
    trace_retention_days: int = TRACE_RETENTION_DAYS_DEFAULT
    # Supervision thresholds (SPEC 14 alerts), optional in the file.
    large_bill_fen: int = LARGE_BILL_FEN_DEFAULT
    alert_institutions_per_day: int = ALERT_INSTITUTIONS_PER_DAY_DEFAULT
    avg_bill_yoy_max_permille: int = AVG_BILL_YOY_MAX_PERMILLE_DEFAULT
    pooling: Mapping[str, Pooling] = dataclasses.field(default_factory=dict)

    def coverage(self, insutype: str) -> int:
        """Coverage in permille for an insurance type; types the policy does not name get 0."""
        return self.coverage_permille.get(insutype, 0)


@dataclasses.dataclass(frozen=True)
class Institution:
    """A designated pharmacy, clinic or hospital."""

    code: str
    name: str
    kind: str
    admdvs: str
    grade: str | None
    monthly_cap_fen: int
    status: str
    outpatient_pooling: bool = True        # pharmacies: rx lines paid by outpatient pooling
    held: bool = False                     # payment hold (SPEC 14): settlement goes on, the fund holds payment


@dataclasses.dataclass(frozen=True)
class Terminal:
    """A POS terminal enrolled for one institution, with its Ed25519 public key."""

    dev_no: str
    institution: str
    public_key_raw: bytes
    status: str

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The terminal's key as a cryptography object."""
        return Ed25519PublicKey.from_public_bytes(self.public_key_raw)


@dataclasses.dataclass(frozen=True)
class Operator:
    """A clerk or doctor (工号) of one institution."""

    code: str
    institution: str
    status: str


@dataclasses.dataclass(frozen=True)
class Filing:
    """A cross-province filing (备案): where a person may be treated, between two dates inclusive."""

    psn_no: str
    admdvs: str
    valid_from: datetime.date
    valid_to: datetime.date


@dataclasses.dataclass(frozen=True)
class FamilyLink:
    """Family mutual aid (家庭共济): `owner`'s account may pay for `member`, between two dates inclusive."""

    owner: str
    member: str
    relation: str
    valid_from: datetime.date
    valid_to: datetime.date


@dataclasses.dataclass(frozen=True)
class Registry:
    """The public registry as loaded from its file."""

    policy: Policy
    institutions: Mapping[str, Institution]
    terminals: Mapping[str, Terminal]
    operators: Mapping[str, Operator]
    voucher_issuers: Mapping[str, bytes]
    filings: tuple[Filing, ...]
    blocked_cards: Mapping[str, str]
    blocked_persons: Mapping[str, str]
    family_links: tuple[FamilyLink, ...] = ()


@dataclasses.dataclass(frozen=True)
class Admin:
    """An admin API principal; only the sha256 of the bearer token is stored."""

    name: str
    role: str
    token_sha256: str


@dataclasses.dataclass(frozen=True)
class Secrets:
    """Gateway secrets: card master keys per province (2 digits) and admin principals."""

    card_master_keys: Mapping[str, bytes]
    admins: tuple[Admin, ...]


def parse_policy(file: str, table: Any) -> Policy:
    """Validate the [policy] table."""
    entry = Entry(file, "policy", table)
    entry.only(["otc_allowance_fen", "coverage_permille", "selfpay_prop_permille",
                "warn_person_day_permille", "warn_institution_month_permille", "trace_required_from",
                "trace_retention_days", "large_bill_fen", "alert_institutions_per_day",
                "avg_bill_yoy_max_permille", "pooling"])
    allowance = Entry(file, "policy.otc_allowance_fen", entry.raw("otc_allowance_fen"))
    allowance.only(GRADES)
    coverage = Entry(file, "policy.coverage_permille", entry.raw("coverage_permille"))
    for insutype in coverage.table:
        if not isinstance(insutype, str) or not insutype.isdigit() or len(insutype) > 8:
            raise coverage.error(str(insutype), "insutype must be 1..8 digits")
    return Policy(
        otc_allowance_fen={g: allowance.integer(g, 0, CAP_FEN_MAX) for g in GRADES},
        coverage_permille={t: coverage.integer(t, 0, 1000) for t in coverage.table},
        selfpay_prop_permille=entry.integer("selfpay_prop_permille", 0, 1000),
        warn_person_day_permille=entry.integer("warn_person_day_permille", 0, 1000),
        warn_institution_month_permille=entry.integer("warn_institution_month_permille", 0, 1000),
        trace_required_from=entry.date("trace_required_from", None),
        trace_retention_days=entry.integer("trace_retention_days", 1, TRACE_RETENTION_DAYS_MAX,
                                           TRACE_RETENTION_DAYS_DEFAULT),
        # A bill of 0 would be "large" every time, and a person is "at many institutions" from two on.
        large_bill_fen=entry.integer("large_bill_fen", 1, LARGE_BILL_FEN_MAX, LARGE_BILL_FEN_DEFAULT),
        alert_institutions_per_day=entry.integer("alert_institutions_per_day", 2, 1000,
                                                 ALERT_INSTITUTIONS_PER_DAY_DEFAULT),
        avg_bill_yoy_max_permille=entry.integer("avg_bill_yoy_max_permille", 0, 1_000_000,
                                                AVG_BILL_YOY_MAX_PERMILLE_DEFAULT),
        pooling=_pooling(file, entry.raw("pooling", {})),
    )


def _pooling(file: str, table: Any) -> dict[str, Pooling]:
    """Validate [policy.pooling."INSUTYPE"] tables."""
    pooling = Entry(file, "policy.pooling", table)
    result: dict[str, Pooling] = {}
    for insutype in pooling.table:
        if not isinstance(insutype, str) or not insutype.isdigit() or len(insutype) > 8:
            raise pooling.error(str(insutype), "insutype must be 1..8 digits")
        one = Entry(file, f"policy.pooling.{insutype}", pooling.raw(insutype))
        one.only(["deductible_fen", "annual_cap_fen"])
        result[insutype] = Pooling(deductible_fen=one.integer("deductible_fen", 0, CAP_FEN_MAX),
                                   annual_cap_fen=one.integer("annual_cap_fen", 0, CAP_FEN_MAX))
    return result


def parse_institution(entry: Entry) -> Institution:
    """Validate one [[institutions]] entry."""
    entry.only(["code", "name", "kind", "admdvs", "grade", "monthly_cap_fen", "status", "outpatient_pooling"])
    kind = entry.choice("kind", KINDS)
    grade = None
    if kind == "pharmacy" or "grade" in entry.table:
        grade = entry.choice("grade", GRADES)
    return Institution(
        code=entry.text("code", INSTITUTION_CODE), name=entry.text("name", NAME), kind=kind,
        admdvs=entry.text("admdvs", ADMDVS), grade=grade,
        monthly_cap_fen=entry.integer("monthly_cap_fen", 0, CAP_FEN_MAX),
        status=entry.choice("status", ("active", "suspended")),
        outpatient_pooling=_flag(entry, "outpatient_pooling", True),
    )


def _flag(entry: Entry, field: str, default: bool) -> bool:
    value = entry.raw(field, default)
    if not isinstance(value, bool):
        raise entry.error(field, "must be true or false")
    return value


def parse_family_link(entry: Entry) -> FamilyLink:
    """Validate one [[family_links]] entry."""
    entry.only(["owner", "member", "relation", "valid_from", "valid_to"])
    link = FamilyLink(owner=entry.text("owner", ID), member=entry.text("member", ID),
                      relation=entry.choice("relation", RELATIONS), valid_from=entry.date("valid_from"),
                      valid_to=entry.date("valid_to"))
    if link.valid_to < link.valid_from:
        raise entry.error("valid_to", "is before valid_from")
    if link.owner == link.member:
        raise entry.error("member", "is the owner")
    return link


def parse_terminal(entry: Entry) -> Terminal:
    """Validate one [[terminals]] entry."""
    entry.only(["dev_no", "institution", "public_key", "status"])
    return Terminal(dev_no=entry.text("dev_no", ID), institution=entry.text("institution", INSTITUTION_CODE),
                    public_key_raw=entry.key32("public_key"),
                    status=entry.choice("status", ("active", "revoked")))


def parse_operator(entry: Entry) -> Operator:
    """Validate one [[operators]] entry."""
    entry.only(["code", "institution", "status"])
    return Operator(code=entry.text("code", ID), institution=entry.text("institution", INSTITUTION_CODE),
                    status=entry.choice("status", ("active", "suspended")))


def parse_filing(entry: Entry) -> Filing:
    """Validate one [[filings]] entry."""
    entry.only(["psn_no", "admdvs", "valid_from", "valid_to"])
    filing = Filing(psn_no=entry.text("psn_no", ID), admdvs=entry.text("admdvs", r"\d{2}|\d{6}"),
                    valid_from=entry.date("valid_from"), valid_to=entry.date("valid_to"))
    if filing.valid_to < filing.valid_from:
        raise entry.error("valid_to", "is before valid_from")
    return filing


def _blocked(file: str, data: Mapping[str, Any], name: str, key: str) -> dict[str, str]:
    blocked: dict[str, str] = {}
    seen: dict[Any, str] = {}
    for entry in entries(file, data, name):
        entry.only([key, "reason"])
        value = entry.text(key, ID)
        unique(entry, key, value, seen)
        blocked[value] = entry.text("reason", r"[^\x00-\x1f]{0,200}", default="")
    return blocked


def _keyed(file: str, data: Mapping[str, Any], name: str, key: str, parse: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    seen: dict[Any, str] = {}
    for entry in entries(file, data, name):
        item = parse(entry)
        unique(entry, key, getattr(item, key), seen)
        result[getattr(item, key)] = item
    return result


def _issuers(file: str, data: Mapping[str, Any]) -> dict[str, bytes]:
    issuers: dict[str, bytes] = {}
    seen: dict[Any, str] = {}
    for entry in entries(file, data, "voucher_issuers"):
        entry.only(["kid", "public_key"])
        kid = entry.text("kid", ID)
        unique(entry, "kid", kid, seen)
        issuers[kid] = entry.key32("public_key")
    return issuers


def _check_references(file: str, registry: Registry) -> None:
    for table, items in (("terminals", registry.terminals), ("operators", registry.operators)):
        for index, item in enumerate(items.values()):
            if item.institution not in registry.institutions:
                raise RegistryError(f"{file}: {table}[{index}].institution: unknown institution "
                                    f"{item.institution!r}")


def parse_registry(data: Mapping[str, Any], file: str) -> Registry:
    """Validate a parsed registry document; raises RegistryError (one line) on any problem."""
    top = Entry(file, "registry", data)
    top.only(["policy", "institutions", "terminals", "operators", "voucher_issuers", "filings",
              "blocked_cards", "blocked_persons", "family_links"])
    registry = Registry(
        policy=parse_policy(file, top.raw("policy")),
        institutions=_keyed(file, data, "institutions", "code", parse_institution),
        terminals=_keyed(file, data, "terminals", "dev_no", parse_terminal),
        operators=_keyed(file, data, "operators", "code", parse_operator),
        voucher_issuers=_issuers(file, data),
        filings=tuple(parse_filing(e) for e in entries(file, data, "filings")),
        blocked_cards=_blocked(file, data, "blocked_cards", "card_no"),
        blocked_persons=_blocked(file, data, "blocked_persons", "psn_no"),
        family_links=tuple(parse_family_link(e) for e in entries(file, data, "family_links")),
    )
    _check_references(file, registry)
    return registry


def parse_secrets(data: Mapping[str, Any], file: str) -> Secrets:
    """Validate a parsed secrets document; raises RegistryError (one line) on any problem."""
    top = Entry(file, "secrets", data)
    top.only(["card_master_keys", "admins"])
    keys_entry = Entry(file, "card_master_keys", top.raw("card_master_keys"))
    master_keys: dict[str, bytes] = {}
    for province in keys_entry.table:
        if not isinstance(province, str) or len(province) != 2 or not province.isdigit():
            raise keys_entry.error(str(province), "province must be 2 digits")
        master_keys[province] = decode_key32(keys_entry, province, keys_entry.text(province))
    admins: list[Admin] = []
    seen_names: dict[Any, str] = {}
    seen_tokens: dict[Any, str] = {}
    for entry in entries(file, data, "admins"):
        entry.only(["name", "role", "token_sha256"])
        admin = Admin(name=entry.text("name", ID), role=entry.choice("role", ROLES),
                      token_sha256=entry.text("token_sha256", r"[0-9a-f]{64}"))
        unique(entry, "name", admin.name, seen_names)
        unique(entry, "token_sha256", admin.token_sha256, seen_tokens)
        admins.append(admin)
    return Secrets(card_master_keys=master_keys, admins=tuple(admins))


__all__ = ["Admin", "FamilyLink", "Filing", "Institution", "Operator", "Policy", "Pooling", "Registry", "RegistryError",
           "Secrets", "Terminal", "parse_registry", "parse_secrets",
           "check_int", "GRADES", "KINDS"]
