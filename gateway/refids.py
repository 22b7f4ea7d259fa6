"""inf_refmsgid serials that are never reused, also across restarts.

Serials are reserved in blocks by journaled records (`"refid_to": N` on any record, or a record of
kind `refid`): a serial is only used once a record reserving it exists, and an answer that uses it
waits for that record's durability (`wait_op`). The next block is reserved when half of the current
one is used, so in steady state the reservation is long durable when its first serial is needed.
After a restart, numbering resumes at the end of everything ever reserved; the unused rest of the
last block is skipped.

One gap: `Sealer.error_response` (errors the server raises itself) has no record to carry a
reservation. When it needs a new block, the reservation rides on the next record; if the process
dies before one is written, those error answers' serials could be handed out again. Half a block
(50 000 by default) of server-raised errors in a row is needed to get there.
"""

from __future__ import annotations

import collections

SERIAL_MAX = 10**10


class SerialsExhausted(Exception):
    """No serial can be handed out without risking one being used twice (a cluster standby whose
    reserved blocks are used up while its region's store is out of reach): the answer that needed
    one cannot be a signed Frame."""


class RefidAllocator:
    """Live allocation of serials within journaled reservations."""

    def __init__(self, block: int) -> None:
        assert block >= 2
        self.block = block
        self.next = 0
        self.reserved_to = 0           # reserved, journaled or about to be (exclusive)
        self.unjournaled = 0           # a reservation end not yet attached to a record (0 = none)
        self._covers: collections.deque[tuple[int, int]] = collections.deque(maxlen=4)  # (to, op)

    def restart_from(self, durable_reserved_to: int) -> None:
        """After recovery: continue past everything reserved, skipping what may have been used."""
        if durable_reserved_to > self.reserved_to or self.next < durable_reserved_to:
            self.next = max(self.next, durable_reserved_to)
            self.reserved_to = max(self.reserved_to, durable_reserved_to)
            self.unjournaled = 0
            self._covers.clear()

    def forget_reservations(self) -> None:
        """After a journal failure: reservations not yet durable may be lost, so reserve afresh.

        Serials already handed out stay behind `next`; the next one taken starts a new block.
        """
        self.reserved_to = self.next
        self.unjournaled = 0
        self._covers.clear()

    def take(self) -> int:
        """The next serial; schedules a reservation when the current block runs low."""
        serial = self.next
        assert serial < SERIAL_MAX, "inf_refmsgid serials exhausted"
        self.next += 1
        if serial >= self.reserved_to:
            self.reserved_to = serial + self.block
            self.unjournaled = self.reserved_to
        elif self.reserved_to - self.next < self.block // 2 and not self.unjournaled:
            self.reserved_to += self.block
            self.unjournaled = self.reserved_to
        return serial

    def attach(self, op: int) -> int:
        """The pending reservation end to put on the record at `op` (0 when none is pending)."""
        reserved_to = self.unjournaled
        if reserved_to:
            self._covers.append((reserved_to, op))
            self.unjournaled = 0
        return reserved_to

    def wait_op(self, serial: int) -> int:
        """The op whose durability makes `serial` safe to send (0 when reserved before this run)."""
        for reserved_to, op in self._covers:
            if serial < reserved_to:
                return op
        return 0
