"""One leadership term of a region: the lease value in the store, its epoch, and how long it surely lasts.

The store expires the lease `lease_ms` after the last renewal it executed. The leader cannot know
when that was, only when it *sent* the renewal (which is earlier), so it counts from the send and
stops believing `margin_ms` before: `valid()` is True only while the lease cannot yet have lapsed in
the store, even if this process was paused (SIGSTOP, a long GC, a swapped-out page) or its clock
runs somewhat fast against the store's. Monotonic time: wall-clock steps change nothing.
"""

from __future__ import annotations

import time

__all__ = ["Lease", "lease_timings"]


def lease_timings(lease_ms: int) -> tuple[float, float, float]:
    """(renew interval, campaign interval, margin) in seconds for a lease of `lease_ms`.

    A leader renews four times per lease and trusts it for two thirds of it; a standby asks for it
    six times per lease, so a dead leader's lease is taken within a sixth of a lease of lapsing.
    """
    lease_s = lease_ms / 1000.0
    return lease_s / 4, lease_s / 6, lease_s / 3


class Lease:
    """The lease as this process holds it (the journal's `LeaseView`)."""

    def __init__(self, value: str, epoch: int, lease_ms: int, sent_s: float) -> None:
        """`value`: what the store holds; `sent_s`: time.monotonic() when the acquiring call was sent."""
        self.value = value
        self.epoch = epoch
        _, _, margin_s = lease_timings(lease_ms)
        self._trusted_s = lease_ms / 1000.0 - margin_s
        self.valid_until_s = sent_s + self._trusted_s

    def valid(self) -> bool:
        """True while the lease surely has not lapsed in the store."""
        return time.monotonic() < self.valid_until_s

    def renewed(self, sent_s: float) -> None:
        """A renewal sent at `sent_s` (time.monotonic()) succeeded."""
        self.valid_until_s = max(self.valid_until_s, sent_s + self._trusted_s)
