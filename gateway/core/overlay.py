"""The admin overlay: the registry file as the starting point plus journaled admin changes.

`Overlay` holds the effective (current) views the rules read, and a compact, msgpack-able record
of what admin changes altered (per entity, last value wins), which is what snapshots carry.
`apply` validates a change completely before touching anything, so a bad change (FieldError naming
the field) leaves no trace.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import re
from typing import Any

from gateway.core.governance import FieldError
from gateway.core.registry import (
    CAP_FEN_MAX, GRADES, ID, INSTITUTION_CODE, INSUTYPE, RELATIONS, FamilyLink, Filing, Operator, Policy, Pooling,
    Registry, Terminal,
)

# Keys any change may carry for the audit trail; the core keeps them in the record unchanged.
AUDIT_KEYS = ("kind", "actor", "reason", "change_id")
_FIELDS = {
    "institution.suspend": ("institution",), "institution.resume": ("institution",),
    "operator.suspend": ("operator",), "operator.resume": ("operator",),
    "terminal.revoke": ("dev_no",),
    "card.block": ("card_no",), "card.unblock": ("card_no",),
    "person.block": ("psn_no",), "person.unblock": ("psn_no",),
    "institution.hold": ("institution",), "institution.release": ("institution",),
    "institution.grade": ("institution", "grade"),
    "institution.monthly_cap": ("institution", "monthly_cap_fen"),
    "policy.otc_allowance": ("grade", "otc_allowance_fen"),
    "policy.coverage": ("insutype", "coverage_permille"),
    "terminal.enrol": ("dev_no", "institution", "public_key"),
    "operator.enrol": ("code", "institution"),
    "filing.add": ("psn_no", "admdvs", "valid_from", "valid_to"),
    # SPEC 13 "Who pays v2": outpatient pooling and family mutual aid.
    "policy.pooling": ("insutype", "deductible_fen", "annual_cap_fen"),
    "institution.outpatient_pooling": ("institution", "enabled"),
    "family.link": ("owner", "member", "relation", "valid_from", "valid_to"),
    "family.unlink": ("owner", "member"),
}
# The day a family.unlink was applied, kept in the overlay's own record of it, so that a replay
# (which has no clock) ends the link on the same day.
_UNLINK_DAY_KEY = "applied_on"
CHANGE_KINDS = tuple(_FIELDS)
# Immediate, protective actions (role operator), named by their verb; the other kinds are policy
# changes that go through maker-checker proposals (role policy, two different admins).
PROTECTIVE_VERBS = ("suspend", "resume", "revoke", "block", "hold", "release")
PROTECTIVE_KINDS = tuple(k for k in CHANGE_KINDS if k.endswith(PROTECTIVE_VERBS))
POLICY_KINDS = tuple(k for k in CHANGE_KINDS if k not in PROTECTIVE_KINDS)


def _text(change: dict[str, Any], field: str, pattern: str) -> str:
    value = change.get(field)
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise FieldError(field, f"bad value {value!r}")
    return value


def _int(change: dict[str, Any], field: str, low: int, high: int) -> int:
    value = change.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FieldError(field, f"must be an integer within [{low}, {high}]")
    return value


def _date(change: dict[str, Any], field: str) -> datetime.date:
    text = _text(change, field, r"\d{4}-\d{2}-\d{2}")
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise FieldError(field, f"not a real date {text!r}") from None


def _key32(change: dict[str, Any], field: str) -> bytes:
    text = _text(change, field, r"[A-Za-z0-9+/=]{40,48}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FieldError(field, "not standard base64") from None
    if len(raw) != 32:
        raise FieldError(field, "must decode to 32 bytes")
    return raw


class Overlay:
    """Effective registry views plus the admin changes applied on top of the file."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.policy: Policy = registry.policy
        self.institutions = dict(registry.institutions)
        self.terminals = dict(registry.terminals)
        self.operators = dict(registry.operators)
        self.voucher_issuers = dict(registry.voucher_issuers)
        self.filings: dict[str, list[Filing]] = {}
        for filing in registry.filings:
            self.filings.setdefault(filing.psn_no, []).append(filing)
        self.blocked_cards = set(registry.blocked_cards)
        self.blocked_persons = set(registry.blocked_persons)
        # Family mutual aid: links by (owner, member), and the pairs each person is part of.
        self.family_links: dict[tuple[str, str], tuple[FamilyLink, ...]] = {}
        self.family_pairs: dict[str, set[tuple[str, str]]] = {}
        for link in registry.family_links:
            self._add_link(link)
        self.changes: list[dict[str, Any]] = []

    def apply(self, change: dict[str, Any], today: datetime.date | None = None) -> None:
        """Validate and apply one admin change (see CHANGE_KINDS); raises FieldError naming the field.

        `today`: the business day it is applied on (family.unlink ends links from the next day).
        """
        action = self._plan(change, today)
        action()
        recorded = dict(change)
        if change.get("kind") == "family.unlink" and today is not None:
            recorded[_UNLINK_DAY_KEY] = today.isoformat()
        self.changes.append(recorded)

    def check(self, change: dict[str, Any], today: datetime.date | None = None) -> None:
        """Validate a change without applying it (on `today`); raises FieldError naming the field."""
        self._plan(change, today)

    def _plan(self, change: dict[str, Any], today: datetime.date | None = None) -> Any:
        if not isinstance(change, dict):
            raise FieldError("change", "must be an object")
        kind = change.get("kind")
        if kind not in _FIELDS:
            raise FieldError("kind", f"must be one of {list(CHANGE_KINDS)}")
        for key in change:
            if key not in _FIELDS[kind] and key not in AUDIT_KEYS:
                raise FieldError(key, f"unknown field for {kind}")
        for key in ("actor", "reason", "change_id"):
            if key in change and not isinstance(change[key], str):
                raise FieldError(key, "must be a string")
        if kind == "family.unlink":
            assert today is not None, "family.unlink needs the day it is applied on"
            return self._plan_family_unlink(change, today)
        return getattr(self, "_plan_" + kind.replace(".", "_"))(change)

    def _institution(self, change: dict[str, Any]) -> str:
        code = _text(change, "institution", INSTITUTION_CODE)
        if code not in self.institutions:
            raise FieldError("institution", f"unknown institution {code!r}")
        return code

    def _set_institution(self, code: str, **fields: Any) -> Any:
        return lambda: self.institutions.__setitem__(code, dataclasses.replace(self.institutions[code], **fields))

    def _plan_institution_suspend(self, change: dict[str, Any]) -> Any:
        return self._set_institution(self._institution(change), status="suspended")

    def _plan_institution_resume(self, change: dict[str, Any]) -> Any:
        return self._set_institution(self._institution(change), status="active")

    def _plan_institution_hold(self, change: dict[str, Any]) -> Any:
        return self._set_institution(self._institution(change), held=True)

    def _plan_institution_release(self, change: dict[str, Any]) -> Any:
        return self._set_institution(self._institution(change), held=False)

    def _plan_institution_grade(self, change: dict[str, Any]) -> Any:
        code = self._institution(change)
        if self.institutions[code].kind != "pharmacy":
            raise FieldError("institution", "grades apply to pharmacies only")
        grade = _text(change, "grade", "|".join(GRADES))
        return self._set_institution(code, grade=grade)

    def _plan_institution_monthly_cap(self, change: dict[str, Any]) -> Any:
        code = self._institution(change)
        return self._set_institution(code, monthly_cap_fen=_int(change, "monthly_cap_fen", 0, CAP_FEN_MAX))

    def _operator(self, change: dict[str, Any]) -> str:
        code = _text(change, "operator", ID)
        if code not in self.operators:
            raise FieldError("operator", f"unknown operator {code!r}")
        return code

    def _plan_operator_suspend(self, change: dict[str, Any]) -> Any:
        code = self._operator(change)
        return lambda: self.operators.__setitem__(code, dataclasses.replace(self.operators[code], status="suspended"))

    def _plan_operator_resume(self, change: dict[str, Any]) -> Any:
        code = self._operator(change)
        return lambda: self.operators.__setitem__(code, dataclasses.replace(self.operators[code], status="active"))

    def _plan_terminal_revoke(self, change: dict[str, Any]) -> Any:
        dev_no = _text(change, "dev_no", ID)
        if dev_no not in self.terminals:
            raise FieldError("dev_no", f"unknown terminal {dev_no!r}")
        return lambda: self.terminals.__setitem__(dev_no, dataclasses.replace(self.terminals[dev_no], status="revoked"))

    def _plan_card_block(self, change: dict[str, Any]) -> Any:
        return lambda card_no=_text(change, "card_no", ID): self.blocked_cards.add(card_no)

    def _plan_card_unblock(self, change: dict[str, Any]) -> Any:
        return lambda card_no=_text(change, "card_no", ID): self.blocked_cards.discard(card_no)

    def _plan_person_block(self, change: dict[str, Any]) -> Any:
        return lambda psn_no=_text(change, "psn_no", ID): self.blocked_persons.add(psn_no)

    def _plan_person_unblock(self, change: dict[str, Any]) -> Any:
        return lambda psn_no=_text(change, "psn_no", ID): self.blocked_persons.discard(psn_no)

    def _plan_policy_otc_allowance(self, change: dict[str, Any]) -> Any:
        grade = _text(change, "grade", "|".join(GRADES))
        allowance = dict(self.policy.otc_allowance_fen)
        allowance[grade] = _int(change, "otc_allowance_fen", 0, CAP_FEN_MAX)
        return lambda: setattr(self, "policy", dataclasses.replace(self.policy, otc_allowance_fen=allowance))

    def _plan_policy_coverage(self, change: dict[str, Any]) -> Any:
        coverage = dict(self.policy.coverage_permille)
        coverage[_text(change, "insutype", INSUTYPE)] = _int(change, "coverage_permille", 0, 1000)
        return lambda: setattr(self, "policy", dataclasses.replace(self.policy, coverage_permille=coverage))

    def _plan_terminal_enrol(self, change: dict[str, Any]) -> Any:
        dev_no = _text(change, "dev_no", ID)
        if dev_no in self.terminals:
            raise FieldError("dev_no", f"terminal {dev_no!r} is already enrolled")
        terminal = Terminal(dev_no, self._institution(change), _key32(change, "public_key"), "active")
        return lambda: self.terminals.__setitem__(dev_no, terminal)

    def _plan_operator_enrol(self, change: dict[str, Any]) -> Any:
        code = _text(change, "code", ID)
        if code in self.operators:
            raise FieldError("code", f"operator {code!r} is already enrolled")
        operator = Operator(code, self._institution(change), "active")
        return lambda: self.operators.__setitem__(code, operator)

    def _plan_filing_add(self, change: dict[str, Any]) -> Any:
        filing = Filing(_text(change, "psn_no", ID), _text(change, "admdvs", r"\d{2}|\d{6}"),
                        _date(change, "valid_from"), _date(change, "valid_to"))
        if filing.valid_to < filing.valid_from:
            raise FieldError("valid_to", "is before valid_from")
        return lambda: self.filings.setdefault(filing.psn_no, []).append(filing)

    def _plan_policy_pooling(self, change: dict[str, Any]) -> Any:
        pooling = dict(self.policy.pooling)
        pooling[_text(change, "insutype", INSUTYPE)] = Pooling(_int(change, "deductible_fen", 0, CAP_FEN_MAX),
                                                                 _int(change, "annual_cap_fen", 0, CAP_FEN_MAX))
        return lambda: setattr(self, "policy", dataclasses.replace(self.policy, pooling=pooling))

    def _plan_institution_outpatient_pooling(self, change: dict[str, Any]) -> Any:
        code = self._institution(change)
        if self.institutions[code].kind != "pharmacy":
            raise FieldError("institution", "outpatient_pooling applies to pharmacies only")
        enabled = change.get("enabled")
        if not isinstance(enabled, bool):
            raise FieldError("enabled", "must be true or false")
        return self._set_institution(code, outpatient_pooling=enabled)

    def _pair(self, change: dict[str, Any]) -> tuple[str, str]:
        owner, member = _text(change, "owner", ID), _text(change, "member", ID)
        if owner == member:
            raise FieldError("member", "is the owner")
        return owner, member

    def _plan_family_link(self, change: dict[str, Any]) -> Any:
        owner, member = self._pair(change)
        link = FamilyLink(owner, member, _text(change, "relation", "|".join(RELATIONS)),
                          _date(change, "valid_from"), _date(change, "valid_to"))
        if link.valid_to < link.valid_from:
            raise FieldError("valid_to", "is before valid_from")
        for other in self.family_links.get((owner, member), ()):
            if link.valid_from <= other.valid_to and other.valid_from <= link.valid_to:
                raise FieldError("valid_from", f"overlaps the link valid {other.valid_from}..{other.valid_to}")
        return lambda: self._add_link(link)

    def _plan_family_unlink(self, change: dict[str, Any], today: datetime.date) -> Any:
        pair = self._pair(change)
        links = self.family_links.get(pair, ())
        # Links still in force after today end today; links not yet begun are dropped.
        kept = tuple(link if link.valid_to <= today else dataclasses.replace(link, valid_to=today)
                     for link in links if link.valid_from <= today)
        if kept == links:
            raise FieldError("member", f"no link of {pair[0]} paying for {pair[1]} is in force after {today}")
        return lambda: self._set_links(pair, kept)

    def _add_link(self, link: FamilyLink) -> None:
        pair = (link.owner, link.member)
        self._set_links(pair, tuple(sorted((*self.family_links.get(pair, ()), link),
                                           key=lambda one: one.valid_from)))

    def _set_links(self, pair: tuple[str, str], links: tuple[FamilyLink, ...]) -> None:
        if links:
            self.family_links[pair] = links
            for psn_no in pair:
                self.family_pairs.setdefault(psn_no, set()).add(pair)
            return
        self.family_links.pop(pair, None)
        for psn_no in pair:
            pairs = self.family_pairs.get(psn_no, set())
            pairs.discard(pair)
            if not pairs:
                self.family_pairs.pop(psn_no, None)

    def linked(self, owner: str, member: str, date: datetime.date) -> bool:
        """True when a family link lets `owner`'s account pay for `member` on `date`."""
        return any(link.valid_from <= date <= link.valid_to for link in self.family_links.get((owner, member), ()))

    def links_of(self, psn_no: str) -> list[FamilyLink]:
        """Every link `psn_no` is owner or member of, by owner, member and start."""
        return [link for pair in sorted(self.family_pairs.get(psn_no, ())) for link in self.family_links[pair]]

    def value_of(self, change: dict[str, Any]) -> dict[str, Any]:
        """What the change's target looks like now, for the audit trail's before/after.

        `change` must have passed `check`; the answer is JSON-able and names only the fields the
        change kind can alter.
        """
        kind = change["kind"]
        if kind.startswith("institution."):
            field = {"institution.grade": "grade", "institution.monthly_cap": "monthly_cap_fen",
                     "institution.hold": "held", "institution.release": "held",
                     "institution.outpatient_pooling": "outpatient_pooling"}.get(kind, "status")
            return {field: getattr(self.institutions[change["institution"]], field)}
        if kind in ("operator.suspend", "operator.resume"):
            return {"status": self.operators[change["operator"]].status}
        if kind in ("terminal.revoke", "terminal.enrol"):
            terminal = self.terminals.get(change["dev_no"])
            return {"status": None if terminal is None else terminal.status}
        if kind == "operator.enrol":
            operator = self.operators.get(change["code"])
            return {"status": None if operator is None else operator.status}
        if kind.startswith("card."):
            return {"blocked": change["card_no"] in self.blocked_cards}
        if kind.startswith("person."):
            return {"blocked": change["psn_no"] in self.blocked_persons}
        if kind == "policy.otc_allowance":
            return {"otc_allowance_fen": self.policy.otc_allowance_fen.get(change["grade"])}
        if kind == "policy.coverage":
            return {"coverage_permille": self.policy.coverage(change["insutype"])}
        if kind == "policy.pooling":
            pooling = self.policy.pooling.get(change["insutype"])
            return {"pooling": None if pooling is None else dataclasses.asdict(pooling)}
        if kind.startswith("family."):
            return {"links": [link_view(link) for link in self.family_links.get((change["owner"], change["member"]), ())]}
        assert kind == "filing.add", kind
        return {"filings": [[f.admdvs, f.valid_from.isoformat(), f.valid_to.isoformat()]
                            for f in self.filings.get(change["psn_no"], ())]}

    def filed(self, psn_no: str, institution_admdvs: str, date: datetime.date) -> bool:
        """True when a filing lets `psn_no` be treated in `institution_admdvs` on `date`."""
        return any(f.valid_from <= date <= f.valid_to and f.admdvs in (institution_admdvs, institution_admdvs[:2])
                   for f in self.filings.get(psn_no, ()))

    def operator_suspended(self, code: str) -> bool:
        """True when `code` is a registered operator/doctor whose status is suspended."""
        operator = self.operators.get(code)
        return operator is not None and operator.status == "suspended"

    def snapshot(self) -> list[dict[str, Any]]:
        """The applied admin changes, in order (admin changes are rare; replaying them is exact)."""
        return [dict(change) for change in self.changes]

    @classmethod
    def restore(cls, registry: Registry, changes: list[dict[str, Any]]) -> Overlay:
        """Rebuild the overlay: the registry file, then the changes in order."""
        overlay = cls(registry)
        for change in changes:
            change = dict(change)
            applied_on = change.pop(_UNLINK_DAY_KEY, None)
            overlay.apply(change, None if applied_on is None else datetime.date.fromisoformat(applied_on))
        return overlay


def link_view(link: FamilyLink) -> dict[str, str]:
    """A family link as typed JSON values (as the registry file and family.link write them)."""
    return {"owner": link.owner, "member": link.member, "relation": link.relation,
            "valid_from": link.valid_from.isoformat(), "valid_to": link.valid_to.isoformat()}
