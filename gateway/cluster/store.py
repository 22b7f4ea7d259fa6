"""A region's keys on a Redis Cluster and the scripts that change them (docs/cluster.md).

Every key of region `A` carries the hash tag `{A}`, so all of them live in one slot, on one
primary, and one script can check and change several atomically:

    {A}:lease     "<epoch> <node_id>:<nonce>" of the leader, set-if-absent with an expiry (PX)
    {A}:epoch     the last epoch handed out (INCR on every new leader)
    {A}:head      the newest op appended to the journal
    {A}:journal   the region's journal: a Stream, one entry per record, entry id "<op>-0",
                  fields e (the appending leader's epoch) and r (the record's msgpack wire form)
    {A}:snapshot  the newest snapshot (the journal's checksummed snapshot frame); the journal is
                  trimmed behind it
    {A}:standby_serials  blocks of inf_refmsgid serials for standbys' refusals (INCRBY)

An append is one script that checks the caller's lease (its epoch and nonce: a stale leader's
append fails, always) and the journal's head, then adds the batch; it is sent in one pipeline
with `WAIT replicas_ack wait_timeout_ms` on the same connection, so the WAIT counts exactly the
replicas that hold that batch. Lua numbers are doubles: ops stay far below 2**53, and records are
opaque bytes, so no amount ever passes through Lua arithmetic.

The client is valkey-glide, which runs under trio (through anyio). Blocking reads (XREAD BLOCK)
get a client of their own: glide multiplexes one connection per node, and a blocked command
would hold up everything behind it.
"""

from __future__ import annotations

from typing import Any

from glide import (BackoffStrategy, ClusterBatch, ClusterBatchOptions, GlideClusterClient, GlideClusterClientConfiguration,
                   LogLevel, Logger, NodeAddress, Script, SlotKeyRoute, SlotType, StreamReadOptions)
from glide import GlideError

__all__ = ["Fenced", "RegionStore", "ReplicasShort", "StoreError"]

# Entries read per XRANGE/XREAD call while recovering or following.
READ_COUNT = 1000

_ACQUIRE = Script("""
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], string.format('%d', epoch) .. ' ' .. ARGV[1], 'PX', ARGV[2])
return epoch
""")
_RENEW = Script("""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
""")
_RELEASE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
""")
# KEYS: lease, head, journal. ARGV: lease value, expected head, first op, epoch, records...
APPEND_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED the lease is not held by this leader')
end
local head = redis.call('GET', KEYS[2]) or '0'
if head ~= ARGV[2] then
  return redis.error_reply('GAP the journal head is ' .. head .. ', not ' .. ARGV[2])
end
local op = tonumber(ARGV[3])
for i = 5, #ARGV do
  redis.call('XADD', KEYS[3], string.format('%d-0', op), 'e', ARGV[4], 'r', ARGV[i])
  op = op + 1
end
redis.call('SET', KEYS[2], string.format('%d', op - 1))
return op - 1
"""
# KEYS: lease, snapshot, journal. ARGV: lease value, op, snapshot frame.
SNAPSHOT_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED the lease is not held by this leader')
end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('XTRIM', KEYS[3], 'MINID', string.format('%d-0', tonumber(ARGV[2]) + 1))
return 1
"""


class StoreError(Exception):
    """The region's store could not be reached, or refused a change (an operating error)."""


class Fenced(StoreError):
    """The caller's lease is gone: another leader may be appending. Nothing was changed."""


class ReplicasShort(StoreError):
    """WAIT reached fewer replicas than required: the batch is on the primary only (in doubt)."""


class RegionStore:
    """One region's keys and scripts on a Redis Cluster (see the module docstring)."""

    def __init__(self, seeds: list[tuple[str, int]], admdvs: str, *, replicas_ack: int,
                 wait_timeout_ms: int, request_timeout_ms: int) -> None:
        tag = "{" + admdvs + "}"
        self.lease_key, self.epoch_key = f"{tag}:lease", f"{tag}:epoch"
        self.head_key, self.journal_key, self.snapshot_key = f"{tag}:head", f"{tag}:journal", f"{tag}:snapshot"
        self.serials_key = f"{tag}:standby_serials"
        self.replicas_ack = replicas_ack
        self.wait_timeout_ms = wait_timeout_ms
        self._route = SlotKeyRoute(SlotType.PRIMARY, self.journal_key)
        # Reconnection back-off capped at 0.8 s: after a failover the dead node's address comes
        # back as a replica, and the client must not be waiting out a long back-off by then.
        self._config = lambda timeout_ms: GlideClusterClientConfiguration(
            [NodeAddress(host, port) for host, port in seeds], request_timeout=timeout_ms,
            reconnect_strategy=BackoffStrategy(num_of_retries=3, factor=100, exponent_base=2))
        self._request_timeout_ms = request_timeout_ms
        self._client: GlideClusterClient | None = None
        self._blocking: GlideClusterClient | None = None

    async def open(self) -> None:
        """Connect (raises StoreError when no seed answers)."""
        Logger.set_logger_config(LogLevel.OFF)
        try:
            self._client = await GlideClusterClient.create(self._config(self._request_timeout_ms))
        except GlideError as exc:
            raise StoreError(f"cannot reach the Redis Cluster: {exc}") from None

    async def close(self) -> None:
        for client in (self._client, self._blocking):
            if client is not None:
                try:
                    await client.close()
                except GlideError:
                    pass
        self._client = self._blocking = None

    @property
    def client(self) -> GlideClusterClient:
        assert self._client is not None, "RegionStore.open() first"
        return self._client

    async def _call(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.client.invoke_script(script, keys=keys, args=args)
        except GlideError as exc:
            raise StoreError(str(exc)[:300]) from None

    # -- the lease -----------------------------------------------------------------------------

    async def acquire(self, holder: str, lease_ms: int) -> int:
        """Take the lease if nobody holds it; returns the new epoch, or 0 when it is held."""
        return int(await self._call(_ACQUIRE, [self.lease_key, self.epoch_key], [holder, str(lease_ms)]))

    async def renew(self, value: str, lease_ms: int) -> bool:
        """Extend the lease if `value` (as `acquire` set it) still holds it."""
        return int(await self._call(_RENEW, [self.lease_key], [value, str(lease_ms)])) == 1

    async def release(self, value: str) -> None:
        """Give the lease up if `value` still holds it (a clean step-down: a standby takes over at once)."""
        await self._call(_RELEASE, [self.lease_key], [value])

    async def lease_value(self) -> str | None:
        try:
            value = await self.client.get(self.lease_key)
        except GlideError as exc:
            raise StoreError(str(exc)[:300]) from None
        return None if value is None else value.decode()

    async def reserve_serials(self, count: int) -> int:
        """INCRBY the standby serial counter by `count`; returns its new value (the block's end)."""
        try:
            return int(await self.client.incrby(self.serials_key, count))
        except GlideError as exc:
            raise StoreError(str(exc)[:300]) from None

    # -- the journal ---------------------------------------------------------------------------

    async def append(self, lease_value: str, epoch: int, first_op: int, payloads: list[bytes]) -> None:
        """Append records `first_op ...` under the lease, then WAIT for the replicas.

        Raises:
            Fenced: the lease is not `lease_value` (nothing appended).
            ReplicasShort: appended on the primary, but fewer than replicas_ack replicas confirmed.
            StoreError: anything else (unreachable, a gap in the journal, ...): outcome unknown.
        """
        batch = ClusterBatch(is_atomic=False)
        batch.custom_command(["EVAL", APPEND_LUA, "3", self.lease_key, self.head_key, self.journal_key,
                              lease_value, str(first_op - 1), str(first_op), str(epoch), *payloads])
        batch.custom_command(["WAIT", str(self.replicas_ack), str(self.wait_timeout_ms)])
        await self._fenced_then_wait(batch)

    async def put_snapshot(self, lease_value: str, op: int, frame: bytes) -> None:
        """Store the snapshot holding every op up to `op` and trim the journal behind it (fenced, WAITed)."""
        batch = ClusterBatch(is_atomic=False)
        batch.custom_command(["EVAL", SNAPSHOT_LUA, "3", self.lease_key, self.snapshot_key, self.journal_key,
                              lease_value, str(op), frame])
        batch.custom_command(["WAIT", str(self.replicas_ack), str(self.wait_timeout_ms)])
        await self._fenced_then_wait(batch)

    async def _fenced_then_wait(self, batch: ClusterBatch) -> None:
        # One pipeline on the slot's primary: the WAIT follows the script on the same connection.
        try:
            done, acked = await self.client.exec(batch, raise_on_error=False,
                                                 options=ClusterBatchOptions(route=self._route))
        except GlideError as exc:
            raise StoreError(f"append: {str(exc)[:300]}") from None
        if isinstance(done, Exception):
            text = str(done)
            raise (Fenced if "FENCED" in text else StoreError)(text[:300])
        if isinstance(acked, Exception):
            raise StoreError(f"WAIT: {str(acked)[:300]}")
        if int(acked) < self.replicas_ack:
            raise ReplicasShort(f"WAIT reached {acked} of {self.replicas_ack} replicas "
                                f"within {self.wait_timeout_ms} ms")

    async def head(self) -> int:
        """The newest op in the journal (0 when empty)."""
        try:
            value = await self.client.get(self.head_key)
        except GlideError as exc:
            raise StoreError(str(exc)[:300]) from None
        return 0 if value is None else int(value)

    async def snapshot(self) -> bytes | None:
        """The newest snapshot frame, or None."""
        try:
            return await self.client.get(self.snapshot_key)
        except GlideError as exc:
            raise StoreError(str(exc)[:300]) from None

    async def read(self, after_op: int, count: int = READ_COUNT) -> list[tuple[int, int, bytes]]:
        """Up to `count` entries after `after_op`, as (op, epoch, record bytes)."""
        try:
            entries = await self.client.custom_command(
                ["XRANGE", self.journal_key, f"{after_op + 1}-0", "+", "COUNT", str(count)], self._route)
        except GlideError as exc:
            raise StoreError(str(exc)[:300]) from None
        return [_entry(entry_id, fields) for entry_id, fields in (entries or {}).items()]

    async def read_blocking(self, after_op: int, block_ms: int,
                            count: int = READ_COUNT) -> list[tuple[int, int, bytes]]:
        """Entries after `after_op`, waiting up to `block_ms` for the first (XREAD BLOCK)."""
        try:
            if self._blocking is None:
                self._blocking = await GlideClusterClient.create(self._config(block_ms + self._request_timeout_ms))
            found = await self._blocking.xread({self.journal_key: f"{after_op}-0"},
                                               StreamReadOptions(block_ms=block_ms, count=count))
        except GlideError as exc:
            raise StoreError(str(exc)[:300]) from None
        if not found:
            return []
        entries = next(iter(found.values()))
        return [_entry(entry_id, fields) for entry_id, fields in entries.items()]


def _entry(entry_id: bytes, fields: list[list[bytes]]) -> tuple[int, int, bytes]:
    """(op, epoch, record) of one journal entry (glide gives its fields as [name, value] pairs)."""
    values = dict(fields)
    return int(entry_id.split(b"-")[0]), int(values[b"e"]), values[b"r"]
