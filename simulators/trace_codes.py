"""Traceability codes (药品追溯码) as the oracle follows them, and fresh codes for every run.

Who holds a code (SPEC 13 "Traceability"): a pharmacy's 2102 holds the codes of its whole-package
lines (`trdn_flag` "0"), cut or not; a cancellation or a reversal releases them; a 2601 that
re-instates a cancellation holds them again. Terminals overlap, so the oracle keeps, per 2102,
two sets of logical-time intervals (ticks, see oracle.py):

- `may`: when the gateway may have held its codes: from the tick the 2102 was first sent until its
  release is certain (a cancellation answered, a reversal answered); a 2102 refused outright
  never held anything;
- `sure`: when it certainly held them: from the tick its answer (0) arrived until a cancellation
  or reversal of it was sent; from the answer of a 2601 that re-instated its cancellation on.

A request sent at tick s and answered at tick r must answer TRACE_CODE_REUSED when one of its
whole-package codes is held by a settlement `sure` over all of [s, r] (and within the retention,
by its `setl_time`), and must not when no settlement `may` hold one of them at any point of
[s, r]. Between the two either answer is right.

Fresh codes: a trace holds the codes the model drew; a run sends them through `CodeSalt`, a
bijection on 20-digit codes that keeps the 7-digit product prefix and shifts the 13-digit serial
by a per-run offset. A code sold twice in the stream is sold twice in the run, and a second run
against the same gateway (which remembers sold codes for `trace_retention_days`) sells new ones.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Mapping
from typing import Any

CODE_DIGITS = 20
PRODUCT_DIGITS = 7
SERIAL_SPACE = 10 ** (CODE_DIGITS - PRODUCT_DIGITS)

Key = tuple[str, str]          # (institution, msgid) of a 2102


class CodeSalt:
    """A per-run bijection on 20-digit codes (other strings pass unchanged)."""

    def __init__(self, offset: int | None = None) -> None:
        self.offset = random.SystemRandom().randrange(SERIAL_SPACE) if offset is None else offset % SERIAL_SPACE

    def code(self, code: str) -> str:
        """The code this run sends for `code`."""
        if len(code) != CODE_DIGITS or not code.isascii() or not code.isdigit():
            return code
        serial = (int(code[PRODUCT_DIGITS:]) + self.offset) % SERIAL_SPACE
        return f"{code[:PRODUCT_DIGITS]}{serial:0{CODE_DIGITS - PRODUCT_DIGITS}d}"

    def items(self, items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Bill lines with their codes as this run sends them."""
        return [{**item, "drug_trac_codg": [self.code(c) for c in item["drug_trac_codg"]]}
                if item.get("drug_trac_codg") else dict(item) for item in items]


def whole_package_codes(items: Iterable[Mapping[str, Any]]) -> list[str]:
    """The codes a pharmacy request checks and its settlement holds: those of `trdn_flag` "0" lines."""
    return [code for item in items if item.get("trdn_flag", "0") != "1" for code in item.get("drug_trac_codg", ())]


def _close(spans: list[list[int | None]], tick: int) -> None:
    if spans and spans[-1][1] is None:
        spans[-1][1] = tick


def _open(spans: list[list[int | None]], tick: int) -> None:
    if not spans or spans[-1][1] is not None:
        spans.append([tick, None])


@dataclasses.dataclass
class Holder:
    """One pharmacy 2102 and the ticks over which it may / surely held its codes."""

    key: Key
    codes: tuple[str, ...]
    setl_id: str = ""
    setl_time_ms: int = 0
    may: list[list[int | None]] = dataclasses.field(default_factory=list)
    sure: list[list[int | None]] = dataclasses.field(default_factory=list)

    def surely_through(self, sent: int, received: int) -> bool:
        """Held from before `sent` until after `received`."""
        return any(start < sent and (end is None or end > received) for start, end in self.sure)  # type: ignore[operator]

    def maybe_during(self, sent: int, received: int) -> bool:
        """Perhaps held at some instant between `sent` and `received`."""
        return any(start < received and (end is None or end > sent) for start, end in self.may)  # type: ignore[operator]


@dataclasses.dataclass
class Verdict:
    """What the held codes allow a request to be answered: `must` (a code surely held, with its
    holder) says TRACE_CODE_REUSED is due; `may` empty says it is wrong."""

    must: list[tuple[str, Holder]]
    may: list[tuple[str, Holder]]


class HeldCodes:
    """Every pharmacy 2102 of the run with codes, by code and by settlement."""

    def __init__(self) -> None:
        self.by_code: dict[str, list[Holder]] = {}
        self.by_key: dict[Key, Holder] = {}
        self.by_setl_id: dict[tuple[str, str], Holder] = {}
        self.by_cancel: dict[Key, Holder] = {}

    def sold_before(self, code: str, own: Key | None = None) -> bool:
        """True when an earlier 2102 of this run sent `code` on a whole-package line."""
        return any(holder.key != own for holder in self.by_code.get(code, ()))

    def sent(self, key: Key, codes: Iterable[str], tick: int) -> None:
        """A pharmacy 2102 left with these whole-package codes: from now on it may hold them."""
        unique = tuple(dict.fromkeys(codes))
        if not unique or key in self.by_key:
            return
        holder = Holder(key, unique)
        _open(holder.may, tick)
        self.by_key[key] = holder
        for code in unique:
            self.by_code.setdefault(code, []).append(holder)

    def settled(self, key: Key, setl_id: str, setl_time_ms: int, tick: int, seen: bool) -> None:
        """The 2102 answered 0 at `tick`; `seen` False for an answer the POS never saw (it is
        reversed next, so it is never sure)."""
        holder = self.by_key.get(key)
        if holder is None:
            return
        holder.setl_id, holder.setl_time_ms = setl_id, setl_time_ms
        self.by_setl_id[(key[0], setl_id)] = holder
        if seen:
            _open(holder.sure, tick)

    def refused(self, key: Key) -> None:
        """The 2102 was answered with a rejection: it never held anything."""
        holder = self.by_key.get(key)
        if holder is not None:
            holder.may.clear()
            holder.sure.clear()

    def cancel_sent(self, institution: str, setl_id: str, cancel_msgid: str, tick: int) -> None:
        """A cancellation of `setl_id` left: from now on the codes may be released."""
        holder = self.by_setl_id.get((institution, setl_id))
        if holder is not None:
            _close(holder.sure, tick)
            self.by_cancel[(institution, cancel_msgid)] = holder

    def cancelled(self, institution: str, setl_id: str, tick: int) -> None:
        """The cancellation was answered 0: the codes are free."""
        holder = self.by_setl_id.get((institution, setl_id))
        if holder is not None:
            _close(holder.may, tick)

    def reversed(self, institution: str, omsgid: str, sent: int, received: int) -> None:
        """A 2601 of `omsgid` sent at `sent` was answered at `received`: a reversed 2102 holds
        nothing from then on; a reversed cancellation holds its settlement's codes again."""
        holder = self.by_key.get((institution, omsgid))
        if holder is not None:
            _close(holder.sure, sent)
            _close(holder.may, received)
            return
        holder = self.by_cancel.get((institution, omsgid))
        if holder is not None:
            _open(holder.may, sent)
            _open(holder.sure, received)

    def verdict(self, codes: Iterable[str], own: Key | None, sent: int, received: int, now_ms: int,
                retention_ms: int) -> Verdict:
        """For a request sent at `sent` and answered at `received` (at about `now_ms`): the codes
        surely held throughout (within the retention) and those perhaps held at some instant."""
        must: list[tuple[str, Holder]] = []
        may: list[tuple[str, Holder]] = []
        for code in dict.fromkeys(codes):
            for holder in self.by_code.get(code, ()):
                if holder.key == own:
                    continue
                if holder.maybe_during(sent, received):
                    may.append((code, holder))
                if holder.surely_through(sent, received) and holder.setl_time_ms > now_ms - retention_ms:
                    must.append((code, holder))
        return Verdict(must, may)
