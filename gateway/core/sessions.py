"""Terminal sessions opened by 9001. Not durable: terminals sign in again after a restart (SPEC §4).

A terminal holds at most SESSIONS_PER_TERMINAL_MAX sessions (the oldest is evicted beyond that) and
the table as a whole has a cap (the oldest session overall is evicted). An ended, evicted or
forgotten sign_no is simply absent, and absent answers SESSION_UNKNOWN; a session past its TTL but
still in the table answers SESSION_EXPIRED until it is purged (after EXPIRED_GRACE_MS).
"""

from __future__ import annotations

import collections
import dataclasses

SESSIONS_PER_TERMINAL_MAX = 8
# How long an expired session is still reported as SESSION_EXPIRED before being forgotten.
EXPIRED_GRACE_MS = 3_600_000


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    """One signed-in session."""

    sign_no: str
    dev_no: str
    opter: str
    institution: str
    key: bytes
    created_ms: int
    expires_ms: int


class SessionTable:
    """Sessions by sign_no, in creation order, with a per-terminal index."""

    def __init__(self, sessions_max: int) -> None:
        assert sessions_max >= SESSIONS_PER_TERMINAL_MAX
        self.sessions_max = sessions_max
        self._by_sign_no: collections.OrderedDict[str, Session] = collections.OrderedDict()
        self._by_terminal: dict[str, collections.deque[str]] = {}

    def __len__(self) -> int:
        return len(self._by_sign_no)

    def get(self, sign_no: str) -> Session | None:
        """The session, or None when unknown, ended or evicted."""
        return self._by_sign_no.get(sign_no)

    def open(self, session: Session) -> None:
        """Add a new session, evicting the terminal's oldest beyond 8 and the table's oldest when full."""
        assert session.sign_no not in self._by_sign_no
        self.purge(session.created_ms)
        own = self._by_terminal.setdefault(session.dev_no, collections.deque())
        if len(own) >= SESSIONS_PER_TERMINAL_MAX:
            self.end(own[0])
        if len(self._by_sign_no) >= self.sessions_max:
            self.end(next(iter(self._by_sign_no)))
        self._by_sign_no[session.sign_no] = session
        self._by_terminal.setdefault(session.dev_no, collections.deque()).append(session.sign_no)

    def end(self, sign_no: str) -> None:
        """End a session (9002 or eviction); unknown sign_nos are ignored."""
        session = self._by_sign_no.pop(sign_no, None)
        if session is None:
            return
        own = self._by_terminal[session.dev_no]
        own.remove(sign_no)
        if not own:
            del self._by_terminal[session.dev_no]

    def purge(self, now_ms: int) -> None:
        """Forget sessions that expired more than EXPIRED_GRACE_MS ago (oldest first)."""
        while self._by_sign_no:
            oldest = next(iter(self._by_sign_no.values()))
            if oldest.expires_ms + EXPIRED_GRACE_MS > now_ms:
                return
            self.end(oldest.sign_no)
