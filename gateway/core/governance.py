"""Maker-checker proposals and the admin audit trail: durable state of the admin API.

Policy changes (grades, caps, allowances, coverage, enrolment, filings) need two different admins
of role policy: one proposes (record `change_propose`), another approves (`change_approve`, which
applies the change in the same commit) or any policy admin rejects (`change_reject`; the proposer
rejecting is a withdrawal). A proposal not approved within `PROPOSAL_TTL_MS` of gateway time is
expired: it can no longer be approved, and is shown as "expired".

Every admin record appends one entry to the audit trail (who, role, what, when, before/after,
reason, change id). Entries are numbered from 1 in journal order, so `after=N` paging is stable
across restarts. Both structures are bounded: the oldest decided proposals and the oldest audit
entries are dropped beyond their caps (admin actions are rare; the caps are far above a year's).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

# 72 hours of gateway time: long enough for a weekend, short enough that stale intent dies.
PROPOSAL_TTL_MS = 72 * 3_600_000
PROPOSALS_MAX = 10_000
AUDIT_ENTRIES_MAX = 200_000

STATUS_PROPOSED = "proposed"
STATUS_APPLIED = "applied"
STATUS_REJECTED = "rejected"
STATUS_EXPIRED = "expired"


REFUSED_UNKNOWN = "unknown"          # no such change
REFUSED_CONFLICT = "conflict"        # not pending, or no longer applicable
REFUSED_SEPARATION = "separation"    # the proposer approving their own change


class AdminRefusal(Exception):
    """An admin request the state refuses; `reason` is one of REFUSED_* (the admin shell maps it)."""

    def __init__(self, reason: str, msg: str, field: str | None = None) -> None:
        super().__init__(msg)
        self.reason = reason
        self.msg = msg
        self.field = field


class FieldError(ValueError):
    """A value the core refuses, naming its field as data (`field`), with what is wrong (`msg`)."""

    def __init__(self, field: str, msg: str) -> None:
        super().__init__(f"{field}: {msg}")
        self.field = field
        self.msg = msg


@dataclasses.dataclass
class Proposal:
    """One proposed policy change and what became of it."""

    id: str
    change: dict[str, Any]
    proposer: str
    reason: str
    proposed_ms: int
    expires_ms: int
    status: str = STATUS_PROPOSED
    decided_by: str = ""
    decided_ms: int = 0
    decision_reason: str = ""

    def status_at(self, now_ms: int) -> str:
        """The status as seen at `now_ms`: a pending proposal past its expiry is "expired"."""
        if self.status == STATUS_PROPOSED and now_ms >= self.expires_ms:
            return STATUS_EXPIRED
        return self.status

    def view(self, now_ms: int) -> dict[str, Any]:
        """The JSON-able form the admin API answers with."""
        return {"id": self.id, "status": self.status_at(now_ms), "change": dict(self.change),
                "proposer": self.proposer, "reason": self.reason, "proposed_ms": self.proposed_ms,
                "expires_ms": self.expires_ms, "decided_by": self.decided_by or None,
                "decided_ms": self.decided_ms or None, "decision_reason": self.decision_reason}


class Governance:
    """Proposals by id (in proposal order), the audit trail, and the newest rotated key (id, sealed key)."""

    def __init__(self) -> None:
        self.proposals: dict[str, Proposal] = {}
        self.audit: collections.deque[dict[str, Any]] = collections.deque(maxlen=AUDIT_ENTRIES_MAX)
        self.audit_seq = 0
        self.rotated_kid: str | None = None
        # The newest rotation's private key, sealed (cluster mode: opaque bytes only the shell can
        # open); None when that rotation kept its key in a file (the embedded default).
        self.rotated_key_sealed: bytes | None = None

    # -- proposals ---------------------------------------------------------------------------

    def pending(self, change_id: str, actor: str, now_ms: int, approving: bool) -> Proposal:
        """The proposal `change_id` if it may still be decided by `actor`; raises AdminRefusal."""
        proposal = self.proposals.get(change_id)
        if proposal is None:
            raise AdminRefusal(REFUSED_UNKNOWN, f"no change {change_id!r}")
        status = proposal.status_at(now_ms)
        if status != STATUS_PROPOSED:
            raise AdminRefusal(REFUSED_CONFLICT, f"change {change_id} is {status}")
        if approving and proposal.proposer == actor:
            raise AdminRefusal(REFUSED_SEPARATION, "the proposer cannot approve their own change (two admins are needed)")
        return proposal

    def add(self, proposal: Proposal) -> None:
        """Store a new proposal, dropping the oldest decided ones beyond PROPOSALS_MAX."""
        assert proposal.id not in self.proposals, proposal.id
        self.proposals[proposal.id] = proposal
        if len(self.proposals) > PROPOSALS_MAX:
            for old in [p.id for p in self.proposals.values() if p.status != STATUS_PROPOSED]:
                del self.proposals[old]
                if len(self.proposals) <= PROPOSALS_MAX:
                    break

    def decide(self, change_id: str, status: str, actor: str, now_ms: int, reason: str) -> Proposal:
        """Mark a pending proposal applied or rejected (the commit function checked it may be)."""
        proposal = self.proposals[change_id]
        assert proposal.status_at(now_ms) == STATUS_PROPOSED, (change_id, proposal.status)
        proposal.status, proposal.decided_by, proposal.decided_ms = status, actor, now_ms
        proposal.decision_reason = reason
        return proposal

    # -- audit -------------------------------------------------------------------------------

    def record_audit(self, op: int, at_ms: int, actor: str, role: str, action: str, target: dict[str, Any],
                     before: Any = None, after: Any = None, reason: str = "", change_id: str | None = None) -> None:
        """Append one audit entry (numbered from 1)."""
        self.audit_seq += 1
        self.audit.append({"seq": self.audit_seq, "op": op, "at_ms": at_ms, "actor": actor, "role": role,
                           "action": action, "target": target, "before": before, "after": after,
                           "reason": reason, "change_id": change_id})

    def audit_page(self, after_seq: int, limit: int) -> tuple[list[dict[str, Any]], int | None]:
        """Entries with seq > after_seq, oldest first, at most `limit`; and the next `after` or None."""
        entries = self.audit
        first_seq = entries[0]["seq"] if entries else self.audit_seq + 1
        start = max(0, after_seq + 1 - first_seq)
        page = [dict(entries[i]) for i in range(start, min(len(entries), start + limit))]
        more = start + limit < len(entries)
        return page, (page[-1]["seq"] if more and page else None)

    # -- snapshot ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A msgpack-able copy."""
        snap = {"proposals": [dataclasses.asdict(p) for p in self.proposals.values()],
                "audit": [dict(entry) for entry in self.audit], "audit_seq": self.audit_seq,
                "rotated_kid": self.rotated_kid}
        if self.rotated_key_sealed is not None:
            # Only when there is one: embedded snapshots keep exactly their former shape.
            snap["rotated_key_sealed"] = self.rotated_key_sealed
        return snap

    @classmethod
    def restore(cls, snap: dict[str, Any] | None) -> Governance:
        """Rebuild from `snapshot()` output (None: a snapshot from before governance existed)."""
        governance = cls()
        if snap is None:
            return governance
        for fields in snap["proposals"]:
            proposal = Proposal(**fields)
            governance.proposals[proposal.id] = proposal
        governance.audit.extend(snap["audit"])
        governance.audit_seq = snap["audit_seq"]
        governance.rotated_kid = snap["rotated_kid"]
        governance.rotated_key_sealed = snap.get("rotated_key_sealed")
        return governance
