"""A gateway process's part in its region: follow as a hot standby, take the lease, lead, step down.

One task runs the cycle, so the roles never overlap:

1. **standby**: the data listener refuses (DRAINING), /readyz says "standby"; the core applies the
   region journal's records as they arrive (XREAD BLOCK, then `Core.commit(from_wire(...))`,
   the replay path), while the node asks for the lease every `campaign` interval;
2. **takeover**: with the lease (a new epoch), read the journal to its end (nobody else can append
   now), sign with the newest rotation's key (sealed in the journal, gateway/cluster/keyseal.py;
   a node that cannot open it does not lead), continue inf_refmsgid serials after every
   reservation in it, open the journal for appends, and serve;
3. **leader**: renew the lease every `renew` interval; the moment the lease may have lapsed (no
   successful renewal within two thirds of a lease), the store refuses a renewal, or the journal
   fails (fenced, too few replicas, unreachable), step down: every answer still waiting
   answers -1, the lease is given up if still held, and the core is rebuilt from the journal
   (memory may hold changes that never reached it). Then back to 1.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import trio

from gateway.cluster.lease import Lease, lease_timings
from gateway.cluster.keyseal import KeySeal, KeySealError
from gateway.cluster.serials import STANDBY_BLOCK, StandbySerials
from gateway.cluster.store import RegionStore, StoreError
from gateway.core import Core, from_wire
from gateway.journal import JournalFailed, Recovery
from gateway.journal.framing import decode_payload
from gateway.journal.stream import StreamJournal
from gateway.logs import log_event
from gateway.refids import RefidAllocator
from gateway.runtime import Runtime

__all__ = ["RegionNode"]

# How long a standby's blocking read waits before it looks again (it wakes at once on a record).
FOLLOW_BLOCK_MS = 500
# Pause after a store error before the next attempt.
RETRY_S = 0.2
# How often the leader checks that its lease and journal still hold between renewals.
WATCH_S = 0.01


class RegionNode:
    """The role cycle of one process (see the module docstring)."""

    def __init__(self, runtime: Runtime, journal: StreamJournal, store: RegionStore, key_seal: KeySeal, *,
                 node_id: str, lease_ms: int, rebuild: Callable[[Recovery], Core]) -> None:
        """`rebuild`: a fresh core from a Recovery (worker-thread safe), as at start;
        `key_seal`: opens the rotated keys the journal carries."""
        self.runtime = runtime
        self.journal = journal
        self.store = store
        self.key_seal = key_seal
        self._unopened_kid: str | None = None     # a rotated key this standby could not open (logged once)
        self.node_id = node_id
        self.holder = f"{node_id}:{int(time.time() * 1000)}"   # this incarnation: a restart never reuses a lease
        self.lease_ms = lease_ms
        self.renew_s, self.campaign_s, _ = lease_timings(lease_ms)
        self.rebuild = rebuild
        self.serials = StandbySerials()
        self.lease: Lease | None = None
        self.stopping = False
        self._stale = False            # memory may differ from the journal: rebuild before following
        self.terms = 0                 # leaderships held by this process

    # -- the cycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Follow, lead, step down, for as long as the gateway runs (cancel to stop)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._serials_loop)
            while True:
                lease = await self._standby()
                await self._lead(lease)

    async def reserve_serials(self) -> None:
        """Reserve a block of standby serials (at start, before the data listener opens)."""
        self.serials.add_block(await self.store.reserve_serials(STANDBY_BLOCK))

    async def _serials_loop(self) -> None:
        while True:
            if self.serials.low:
                try:
                    await self.reserve_serials()
                except StoreError:
                    pass
            await trio.sleep(self.campaign_s)

    async def _standby(self) -> Lease:
        """Follow the journal until this process takes the lease; returns it."""
        self.runtime.standby = True
        self.runtime.sealer.refids = self.serials
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow)
            lease = await self._campaign()
            nursery.cancel_scope.cancel()
        return lease

    async def _campaign(self) -> Lease:
        while True:
            if not self.stopping and not self._stale:
                sent_s = time.monotonic()
                try:
                    epoch = await self.store.acquire(self.holder, self.lease_ms)
                except StoreError as exc:
                    log_event("lease_error", node=self.node_id, detail=str(exc)[:200])
                    epoch = 0
                if epoch:
                    return Lease(f"{epoch} {self.holder}", epoch, self.lease_ms, sent_s)
            await trio.sleep(self.campaign_s)

    async def _lead(self, lease: Lease) -> None:
        runtime = self.runtime
        try:
            await self._catch_up()
            # A leader must sign with the region's active key, never one the region retired.
            self.adopt_key()
            # The catch-up may have outlasted the lease's trusted span: renew before serving.
            sent_s = time.monotonic()
            if not await self.store.renew(lease.value, self.lease_ms):
                raise StoreError("the lease was lost while the journal's tail was read")
            lease.renewed(sent_s)
        except (StoreError, JournalFailed, KeySealError) as exc:
            log_event("takeover_failed", node=self.node_id, epoch=lease.epoch, detail=str(exc)[:200])
            await self.release(lease)
            await trio.sleep(RETRY_S)
            return
        self.lease = lease
        self.journal.lead(lease)
        sealer = runtime.sealer
        sealer.refids = RefidAllocator(runtime.core.config.refid_block)
        sealer.follow(runtime.core)
        runtime.standby = False
        self.terms += 1
        log_event("leader", node=self.node_id, epoch=lease.epoch, last_op=runtime.core.last_op)
        reason = await self._hold(lease)
        runtime.standby = True
        self.lease = None
        self.journal.stand_by(f"stepped down: {reason}")
        self._stale = True
        log_event("stepped_down", node=self.node_id, epoch=lease.epoch, reason=reason,
                  durable_op=self.journal.durable_op)
        await self.release(lease)

    async def _hold(self, lease: Lease) -> str:
        """Renew the lease until it is lost; returns why leadership ended."""
        async with trio.open_nursery() as nursery:
            outcome: list[str] = []

            async def renew() -> None:
                while True:
                    await trio.sleep(self.renew_s)
                    sent_s = time.monotonic()
                    try:
                        with trio.move_on_after(self.renew_s * 2):
                            if not await self.store.renew(lease.value, self.lease_ms):
                                outcome.append("the store no longer holds the lease for this node")
                                return
                            lease.renewed(sent_s)
                    except StoreError as exc:
                        log_event("lease_error", node=self.node_id, detail=str(exc)[:200])

            nursery.start_soon(renew)
            while not outcome:
                if not lease.valid():
                    outcome.append("the lease may have lapsed (no renewal in time)")
                elif not self.journal.leading:
                    outcome.append(f"the journal failed: {str(self.journal.failure)[:200]}")
                elif self.stopping:
                    outcome.append("draining")
                else:
                    await trio.sleep(WATCH_S)
            nursery.cancel_scope.cancel()
        return outcome[0]

    async def release(self, lease: Lease) -> None:
        """Give the lease up if still held (best effort, bounded)."""
        with trio.move_on_after(self.renew_s):
            try:
                await self.store.release(lease.value)
            except StoreError:
                pass

    # -- following -------------------------------------------------------------------------------

    async def _follow(self) -> None:
        """Apply the journal's records as they arrive (standby)."""
        while True:
            try:
                if self._stale:
                    await self._rebuild()
                entries = await self.store.read_blocking(self.journal.durable_op, FOLLOW_BLOCK_MS)
            except (StoreError, JournalFailed) as exc:
                log_event("follow_error", node=self.node_id, detail=str(exc)[:200])
                await trio.sleep(RETRY_S)
                continue
            self._apply(entries)
            self._follow_key()

    async def _catch_up(self) -> None:
        """Read the journal to its end (the lease is ours: nobody else can append now)."""
        if self._stale:
            await self._rebuild()
        while entries := await self.store.read(self.journal.durable_op):
            if not self._apply(entries):
                await self._rebuild()
        head = await self.store.head()
        if head != self.journal.durable_op:
            raise JournalFailed(f"the journal's head is op {head}, its records end at op {self.journal.durable_op}")

    def _apply(self, entries: list[tuple[int, int, bytes]]) -> bool:
        """Commit entries in op order; False (and a rebuild wanted) on a gap (trimmed behind a snapshot)."""
        core = self.runtime.core
        for op, _, payload in entries:
            if op <= self.journal.durable_op:
                continue
            if op != self.journal.durable_op + 1:
                self._stale = True
                return False
            core.commit(from_wire(decode_payload(payload)))
            self.journal.follow(op)
        return True

    def adopt_key(self) -> None:
        """Sign with the newest rotation's key when the journal carries it and this node does not yet.

        The key file every node starts from stays the region's first key; each rotation's key
        comes from its record (or the snapshot holding it), so all nodes sign alike.

        Raises:
            KeySealError: the sealed key does not open with this node's secrets.
        """
        runtime = self.runtime
        governance = runtime.core.state.governance
        kid, sealed = governance.rotated_kid, governance.rotated_key_sealed
        if sealed is None or kid is None or kid == runtime.sealer.keyring.active_kid:
            return
        runtime.sealer.activate(runtime.core, self.key_seal.open(sealed, kid))
        log_event("key_adopted", node=self.node_id, kid=kid)

    def _follow_key(self) -> None:
        """A standby's refusals are signed with the active key too; a key it cannot open is logged once."""
        try:
            self.adopt_key()
        except KeySealError as exc:
            kid = self.runtime.core.state.governance.rotated_kid
            if kid != self._unopened_kid:
                self._unopened_kid = kid
                log_event("key_unopened", node=self.node_id, kid=kid, detail=str(exc)[:200])

    async def _rebuild(self) -> None:
        """A fresh core from the store's snapshot and journal (sessions are not carried over)."""
        recovery = await self.journal.reopen()
        core = await trio.to_thread.run_sync(self.rebuild, recovery)
        self.runtime.core = core
        self._stale = False
        log_event("rebuilt", node=self.node_id, last_op=core.last_op, records=recovery.records_replayed)

    def status(self) -> dict[str, Any]:
        """For logs and tests."""
        return {"node": self.node_id, "leader": self.lease is not None, "terms": self.terms,
                "durable_op": self.journal.durable_op}
