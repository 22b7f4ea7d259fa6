"""inf_refmsgid serials for a standby's own refusals, unique across the region's processes.

The leader's serials come from reservations in the region's journal (gateway/refids.py), which a
new leader continues after. A standby appends nothing, yet it signs every refusal (DRAINING) with
a serial too. Its serials come from a separate range, above every serial a leader hands out
(STANDBY_SERIAL_BASE), in blocks taken from a region-wide counter in the store (INCRBY), so two
standbys never share one. A standby that could not reserve a block (the store unreachable since
its start, or since its blocks were used up) has no serial to sign with: `take` raises
SerialsExhausted, and the data listener answers a plain 503 with Retry-After instead of a Frame
(gateway/server/data.py).
"""

from __future__ import annotations

import collections

from gateway.refids import RefidAllocator, SerialsExhausted

__all__ = ["STANDBY_SERIAL_BASE", "StandbySerials"]

# A leader would need nine billion answers to reach this range (serials are 10 digits).
STANDBY_SERIAL_BASE = 9_000_000_000
STANDBY_SERIAL_SPAN = 1_000_000_000
STANDBY_BLOCK = 10_000


class StandbySerials(RefidAllocator):
    """Serials from reserved blocks of the standby range; the Sealer's allocator on a standby."""

    def __init__(self) -> None:
        super().__init__(STANDBY_BLOCK)
        self._blocks: collections.deque[int] = collections.deque()

    def add_block(self, end: int) -> None:
        """A block reserved in the store: the counter's value after INCRBY STANDBY_BLOCK."""
        self._blocks.append(end - STANDBY_BLOCK)

    @property
    def low(self) -> bool:
        """True when fewer than half a block is left: time to reserve another."""
        return not self._blocks and self.reserved_to - self.next < STANDBY_BLOCK // 2

    def take(self) -> int:
        """The next serial (raises SerialsExhausted when no block is reserved)."""
        if self.next >= self.reserved_to:
            if not self._blocks:
                raise SerialsExhausted("no standby serials reserved (the region's store is unreachable)")
            self.next = self._blocks.popleft()
            self.reserved_to = self.next + STANDBY_BLOCK
        serial = self.next
        self.next += 1
        return STANDBY_SERIAL_BASE + serial % STANDBY_SERIAL_SPAN

    def attach(self, op: int) -> int:
        return 0

    def wait_op(self, serial: int) -> int:
        return 0
