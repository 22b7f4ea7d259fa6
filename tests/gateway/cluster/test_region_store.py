"""The region's keys and scripts on a real Redis Cluster (gateway/cluster/store.py): the lease,
the fenced append, WAIT, snapshots and trimming, standby serials, blocking reads."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator

import pytest
import trio

from gateway.cluster.store import Fenced, RegionStore, ReplicasShort, StoreError

_regions = itertools.count(510100)


@contextlib.asynccontextmanager
async def open_store(cluster, replicas_ack: int = 1, wait_timeout_ms: int = 1000) -> AsyncIterator[RegionStore]:  # type: ignore[no-untyped-def]
    """The store of a region no other test uses."""
    seeds = [("127.0.0.1", port) for port in cluster.ports[:3]]
    store = RegionStore(seeds, str(next(_regions)),
                        replicas_ack=replicas_ack, wait_timeout_ms=wait_timeout_ms, request_timeout_ms=3000)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_one_lease_at_a_time_and_a_new_epoch_for_every_leader(redis_cluster) -> None:  # type: ignore[no-untyped-def]
    async with open_store(redis_cluster) as store:
        first = await store.acquire("gw-a:1", 60_000)
        assert first >= 1
        assert await store.acquire("gw-b:1", 60_000) == 0
        held = f"{first} gw-a:1"
        assert await store.renew(held, 60_000)
        assert not await store.renew(f"{first} gw-b:1", 60_000)
        await store.release(f"{first} gw-b:1")      # not the holder: nothing happens
        assert await store.lease_value() == held
        await store.release(held)
        assert await store.acquire("gw-b:1", 60_000) == first + 1


async def test_a_stale_leader_cannot_append_even_before_the_new_one_does(redis_cluster) -> None:  # type: ignore[no-untyped-def]
    async with open_store(redis_cluster) as store:
        old = await store.acquire("gw-a:1", 300)
        await store.append(f"{old} gw-a:1", old, 1, [b"r1", b"r2"])
        await trio.sleep(0.4)                       # the lease lapses in the store
        new = await store.acquire("gw-b:1", 60_000)
        assert new == old + 1
        with pytest.raises(Fenced):
            await store.append(f"{old} gw-a:1", old, 3, [b"stale"])
        assert [(op, epoch) for op, epoch, _ in await store.read(0)] == [(1, old), (2, old)]
        await store.append(f"{new} gw-b:1", new, 3, [b"r3"])
        assert await store.head() == 3


async def test_an_append_must_continue_the_journal(redis_cluster) -> None:  # type: ignore[no-untyped-def]
    async with open_store(redis_cluster) as store:
        epoch = await store.acquire("gw-a:1", 60_000)
        value = f"{epoch} gw-a:1"
        await store.append(value, epoch, 1, [b"r1"])
        for first_op in (1, 3):
            with pytest.raises(StoreError, match="GAP"):
                await store.append(value, epoch, first_op, [b"x"])
        assert await store.head() == 1


async def test_wait_short_of_replicas_is_reported_and_the_batch_is_in_doubt(redis_cluster) -> None:  # type: ignore[no-untyped-def]
    # There are two replicas: a WAIT for three falls short.
    async with open_store(redis_cluster, replicas_ack=3, wait_timeout_ms=100) as store:
        epoch = await store.acquire("gw-a:1", 60_000)
        with pytest.raises(ReplicasShort, match="2 of 3"):
            await store.append(f"{epoch} gw-a:1", epoch, 1, [b"r1"])
        assert await store.head() == 1      # on the primary: a retry must find it, not apply it twice


async def test_a_snapshot_trims_the_journal_behind_it(redis_cluster) -> None:  # type: ignore[no-untyped-def]
    async with open_store(redis_cluster) as store:
        epoch = await store.acquire("gw-a:1", 60_000)
        value = f"{epoch} gw-a:1"
        await store.append(value, epoch, 1, [b"r1", b"r2", b"r3", b"r4"])
        assert await store.snapshot() is None
        await store.put_snapshot(value, 2, b"state at 2")
        assert await store.snapshot() == b"state at 2"
        assert [op for op, _, _ in await store.read(0)] == [3, 4]
        with pytest.raises(Fenced):
            await store.put_snapshot(f"{epoch} gw-b:1", 4, b"not the leader")


async def test_standby_serial_blocks_never_overlap(redis_cluster) -> None:  # type: ignore[no-untyped-def]
    async with open_store(redis_cluster) as store:
        ends = [await store.reserve_serials(10_000) for _ in range(3)]
        assert ends == [10_000, 20_000, 30_000]


async def test_a_blocking_read_wakes_on_the_next_record(redis_cluster) -> None:  # type: ignore[no-untyped-def]
    async with open_store(redis_cluster) as store:
        epoch = await store.acquire("gw-a:1", 60_000)
        assert await store.read_blocking(0, 50) == []
        async with trio.open_nursery() as nursery:
            got: list = []

            async def follow() -> None:
                got.extend(await store.read_blocking(0, 5000))

            nursery.start_soon(follow)
            await trio.sleep(0.2)
            await store.append(f"{epoch} gw-a:1", epoch, 1, [b"r1"])
        assert got == [(1, epoch, b"r1")]
