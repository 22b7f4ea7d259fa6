"""Every journaled record kind, one frozen dataclass each: the journal's durable contract.

A record is what `Core.commit` applies, live and in replay alike. Its wire form (`to_wire`) is a
msgpack-able map `{"op", "t": KIND, ...fields}`; `from_wire` reads it back, also from journals and
snapshots written before records were typed (those carry no "v": version 1). A later change to a
kind's fields bumps its VERSION and teaches `from_wire` the older shapes (OLDEST_VERSION: the
fields added since have defaults); nothing else reads wire maps.

Fields every record may carry: `op` (its place in the journal, set by the shell just before the
commit) and `refid_to` (an inf_refmsgid reservation riding on the record, 0 for none; see
gateway/sealer.py). Records that answer a terminal carry `response`, the exact signed answer bytes
an idempotent retry gets back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

__all__ = [
    "AdminNoteRecord", "AdminRecord", "AlertRecord", "CancelRecord", "ChangeApproveRecord", "ChangeProposeRecord",
    "ChangeRejectRecord", "Idem", "KeyRotateRecord", "RECORD_TYPES", "Record", "RefidRecord", "ReverseRecord",
    "SettleRecord", "Voucher", "from_wire",
]


class Idem(NamedTuple):
    """The idempotency key of an answered state change: msgid, fingerprint, infno and its subject.

    `subject` is the setl_id a settlement or cancellation concerns, or the omsgid a reversal names.
    """

    msgid: str
    fingerprint: bytes
    infno: str
    subject: str


class Voucher(NamedTuple):
    """An e-voucher a settlement used up: its identity key and expiry (after which it is forgotten)."""

    key: str
    exp_ms: int


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Record:
    """Fields every kind has. Subclasses set KIND (the wire "t") and VERSION."""

    KIND: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    OLDEST_VERSION: ClassVar[int] = 1     # the oldest shape from_wire still reads
    op: int = 0
    refid_to: int = 0

    def to_wire(self) -> dict[str, Any]:
        """The msgpack-able map the journal and snapshots store."""
        wire: dict[str, Any] = {"op": self.op, "t": self.KIND}
        if self.refid_to:
            wire["refid_to"] = self.refid_to
        if self.VERSION != 1:
            wire["v"] = self.VERSION
        for field in _PAYLOAD_FIELDS[type(self)]:
            wire[field] = getattr(self, field)
        return wire

    def sealed(self, op: int, refid_to: int = 0, response: bytes | None = None) -> Record:
        """This record placed at `op`, with a reservation and (for answered changes) the signed answer."""
        changes: dict[str, Any] = {"op": op, "refid_to": refid_to}
        if response is not None and "response" in _PAYLOAD_FIELDS[type(self)]:
            changes["response"] = response
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class SettleRecord(Record):
    """2102/2207: a settlement applied. `setl` is the settlement in `Settlement.to_dict()` form."""

    KIND: ClassVar[str] = "settle"
    now_ms: int
    setl: Mapping[str, Any]
    setl_n: int
    person_limit_fen: int | None        # the allowance the split was cut by (None: no limit checked)
    cap_fen: int | None                 # the institution's monthly cap it was cut by
    voucher: Voucher | None
    idem: Idem
    response: bytes = b""
    # [deductible_fen, annual_cap_fen] of the pooling policy the split was cut by (SPEC 13);
    # None: no policy (and in records written before pooling existed).
    pooling_fen: list[int] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class CancelRecord(Record):
    """2103/2208: a settlement cancelled."""

    KIND: ClassVar[str] = "cancel"
    now_ms: int
    setl_id: str
    idem: Idem
    response: bytes = b""


REVERSE_ACTIONS = ("unsettle", "reinstate", "none")


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ReverseRecord(Record):
    """2601: an original reversed (`action` says what that undid) and its msgid tombstoned."""

    KIND: ClassVar[str] = "reverse"
    now_ms: int
    omsgid: str
    action: str                         # one of REVERSE_ACTIONS
    setl_id: str                        # "" when no settlement is concerned
    idem: Idem
    response: bytes = b""

    def __post_init__(self) -> None:
        assert self.action in REVERSE_ACTIONS, self.action


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class RefidRecord(Record):
    """Only an inf_refmsgid reservation (`refid_to`), for answers that journal nothing else."""

    KIND: ClassVar[str] = "refid"


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class AdminRecord(Record):
    """An admin change applied at once (protective actions) or by an approval of old journals."""

    KIND: ClassVar[str] = "admin"
    now_ms: int
    change: Mapping[str, Any]           # {"kind": one of overlay.CHANGE_KINDS, ...fields}
    actor: str = ""
    role: str = ""
    reason: str = ""
    change_id: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class KeyRotateRecord(Record):
    """The gateway's signing key rotated: kids and public keys, and never a private key in plaintext.

    `sealed_key` (version 2): in cluster mode the new private key, sealed under the region's secret
    (gateway/cluster/keyseal.py), so that every process of the region signs with it; None in the
    embedded default, where the key lives in the signing_key file. Version 1 records lack it.
    """

    KIND: ClassVar[str] = "key_rotate"
    VERSION: ClassVar[int] = 2
    kid: str
    public_key: bytes
    retired_kid: str
    retired_public_key: bytes
    now_ms: int | None = None           # None only in records older than the audit trail
    actor: str = ""
    role: str = ""
    reason: str = ""
    sealed_key: bytes | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ChangeProposeRecord(Record):
    """A maker-checker proposal (not applied until approved)."""

    KIND: ClassVar[str] = "change_propose"
    now_ms: int
    id: str
    change: Mapping[str, Any]
    actor: str
    role: str
    reason: str
    expires_ms: int


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ChangeApproveRecord(Record):
    """A proposal approved by a second admin, and so applied."""

    KIND: ClassVar[str] = "change_approve"
    now_ms: int
    id: str
    actor: str
    role: str


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ChangeRejectRecord(Record):
    """A proposal rejected (or withdrawn by its proposer)."""

    KIND: ClassVar[str] = "change_reject"
    now_ms: int
    id: str
    actor: str
    role: str
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class AdminNoteRecord(Record):
    """An admin action that changes no business state (e.g. a snapshot request), for the audit trail."""

    KIND: ClassVar[str] = "admin_note"
    now_ms: int
    action: str
    detail: Mapping[str, Any]
    actor: str
    role: str
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class AlertRecord(Record):
    """A supervision alert raised by a refusal, which journals nothing else (SPEC 14; supervision.py).

    A refused request (e.g. TRACE_CODE_REUSED) changes no state, but the alert it raises must
    survive a restart: the refusal's answer carries this record, and waits until it is durable.
    """

    KIND: ClassVar[str] = "alert"
    now_ms: int
    code: str
    subject: str
    detail: Mapping[str, Any]


RECORD_TYPES: dict[str, type[Record]] = {cls.KIND: cls for cls in (
    SettleRecord, CancelRecord, ReverseRecord, RefidRecord, AdminRecord, KeyRotateRecord,
    ChangeProposeRecord, ChangeApproveRecord, ChangeRejectRecord, AdminNoteRecord, AlertRecord)}
_COMMON = frozenset({"op", "refid_to"})
_PAYLOAD_FIELDS: dict[type[Record], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls) if f.name not in _COMMON) for cls in RECORD_TYPES.values()}
# Wire values that come back from msgpack as lists and are NamedTuples in the record.
_TUPLE_FIELDS = {"idem": Idem, "voucher": Voucher}


def from_wire(wire: Mapping[str, Any]) -> Record:
    """The typed record of a journaled map (any version this build knows).

    Raises:
        ValueError: an unknown kind or version, or fields that do not fit the kind.
    """
    cls = RECORD_TYPES.get(wire.get("t", ""))
    if cls is None:
        raise ValueError(f"record kind {wire.get('t')!r} is unknown")
    version = wire.get("v", 1)
    if not cls.OLDEST_VERSION <= version <= cls.VERSION:
        raise ValueError(f"record kind {cls.KIND!r} version {version} is unknown")
    fields: dict[str, Any] = {"op": wire["op"], "refid_to": wire.get("refid_to", 0)}
    for name in _PAYLOAD_FIELDS[cls]:
        if name in wire:
            value = wire[name]
            tuple_type = _TUPLE_FIELDS.get(name)
            fields[name] = tuple_type(*value) if tuple_type is not None and value is not None else value
    try:
        return cls(**fields)
    except TypeError as exc:
        raise ValueError(f"record op {wire.get('op')} of kind {cls.KIND!r}: {exc}") from None
