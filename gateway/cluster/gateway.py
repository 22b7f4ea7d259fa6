"""The gateway in cluster mode (SPEC section 15): the same process, with the region's journal in Redis.

What differs from the embedded default (gateway/server/app.py), and only that:

- the journal is the region's stream (`StreamJournal` over a `RegionStore`), not local files;
  `[paths] data_dir` only holds the snapshot child's scratch file;
- recovery reads the region's snapshot and journal from the store, and the process starts as a
  standby; the `RegionNode` task then follows, takes the lease, leads and steps down;
- a journal failure is the node's to handle (step down, rebuild from the store, follow), not the
  local rebuild loop's;
- a key rotation journals its new key sealed under the region's secret (gateway/cluster/keyseal.py)
  instead of writing a key file, and every process signs with the newest rotation's key;
- on SIGTERM the drain finishes as usual, then the lease is given up so a standby takes over at
  once instead of after the lease lapses.
"""

from __future__ import annotations

from collections.abc import Callable

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.cluster.keyseal import KeySeal, KeySealError
from gateway.cluster.node import RegionNode
from gateway.cluster.store import RegionStore, StoreError
from gateway.config import GatewayConfig
from gateway.journal import JournalFailed, RealFileOps, Recovery
from gateway.journal.stream import StreamJournal
from gateway.logs import log_event
from gateway.metrics import JournalMetrics
from gateway.server.app import Gateway, StartupError
from gateway.server.logs import LOGGER

__all__ = ["ClusterGateway"]

# A request to the store that takes longer than this is failed (an append then answers -1).
REQUEST_TIMEOUT_MARGIN_MS = 500


class ClusterGateway(Gateway):
    """A region node: leader or hot standby of its region (see the module docstring)."""

    def __init__(self, config: GatewayConfig, *, test_clock: bool = False, freeze_heap: bool = False) -> None:
        assert config.cluster is not None
        cluster = config.cluster
        self.store = RegionStore([(seed.host, seed.port) for seed in cluster.redis], config.admdvs,
                                 replicas_ack=cluster.replicas_ack, wait_timeout_ms=cluster.wait_timeout_ms,
                                 request_timeout_ms=cluster.wait_timeout_ms + REQUEST_TIMEOUT_MARGIN_MS)
        super().__init__(config, test_clock=test_clock, freeze_heap=freeze_heap)
        try:
            self.key_seal = KeySeal(self.files.secrets, config.admdvs)
        except KeySealError as exc:
            raise StartupError(str(exc)) from None
        self.runtime.standby = True
        assert isinstance(self.journal, StreamJournal)
        self.node = RegionNode(self.runtime, self.journal, self.store, self.key_seal, node_id=cluster.node_id,
                               lease_ms=cluster.lease_ms,
                               rebuild=lambda recovery: self._rebuilt_core(recovery, self.runtime.sealer.keyring))

    def _make_journal(self, file_ops: RealFileOps | None) -> StreamJournal:
        journal_config = self.config.journal
        return StreamJournal(self.store, self.config.paths.data_dir,
                             group_commit_ms=journal_config.group_commit_ms,
                             batch_records_max=journal_config.batch_records_max,
                             queue_records_max=journal_config.queue_records_max,
                             file_ops=file_ops, observer=JournalMetrics(self.metrics), logger=LOGGER)

    async def _read_journal(self) -> Recovery:
        try:
            await self.store.open()
            await self.node.reserve_serials()
            return await self.journal.reopen()
        except (StoreError, JournalFailed) as exc:
            raise StartupError(f"cannot read the region's journal: {exc}") from None

    async def _recover(self) -> None:
        await super()._recover()
        try:
            self.node.adopt_key()
        except KeySealError as exc:
            raise StartupError(str(exc)) from None
        # Until it leads, this process signs its refusals with serials of the standby range.
        self.runtime.sealer.refids = self.node.serials

    def _key_sealer(self) -> Callable[[Ed25519PrivateKey], bytes]:
        """A rotation's key travels sealed in the region's journal."""
        return self.key_seal.seal

    def _start_role(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self.node.run)

    def _on_journal_failure(self) -> None:
        """The node sees the journal fail and steps down; memory is rebuilt from the store."""
        log_event("journal_failed_in_cluster", node=self.node.node_id)

    async def _drain(self) -> None:
        await super()._drain()
        self.node.stopping = True
        lease = self.node.lease
        if lease is not None:
            self.journal.stand_by("draining")
            await self.node.release(lease)
        await self.store.close()
