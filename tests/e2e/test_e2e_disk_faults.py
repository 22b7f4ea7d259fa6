"""Disk faults through the whole server: ENOSPC/EIO on journal writes and fsyncs.

The gateway runs in-process (gateway.server.app.Gateway) on a real region, with the journal's
file seam replaced by a FaultyFileOps. While the disk fails, every state-changing request
answers -1 INTERNAL (HTTP 500) and nothing it did becomes visible; once the fault clears, the
gateway rebuilds its state from disk, /readyz returns to 200, and every settlement acknowledged
before the fault is intact, byte for byte.
"""

from __future__ import annotations

import errno
import pathlib
import random

import pytest
import trio

from e2e_kill9_checks import Checker
from e2e_kill9_support import Book, Region, Sent, TerminalLink, gateway_keys, http_status, now_ms
from gateway.config import load_config
from gateway.journal import FaultyFileOps
from gateway.server.app import Gateway

SETTLEMENTS_BEFORE_FAULT = 4      # per pharmacy
FAILING_ROUNDS = 3                # rounds of one settlement per pharmacy while the disk fails
RECOVERY_DEADLINE_S = 30.0        # the rebuild retries once a second (REBUILD_RETRY_S)
READY_POLL_INTERVAL_S = 0.02


async def settle_round(checker: Checker, book: Book) -> list[tuple[Sent, int, int, str]]:
    """One new 2102 from every pharmacy at once; (sent, HTTP status, infcode, err_code) each."""
    outcomes: list[tuple[Sent, int, int, str]] = []

    async def settle(link: TerminalLink) -> None:
        sent = book.settlement(link.terminal)
        status, body, envelope = await link.send(sent)
        book.take_answer(sent, body, envelope)
        outcomes.append((sent, status, envelope.infcode, envelope.err_code))

    async with trio.open_nursery() as nursery:
        for link in checker.links.values():
            nursery.start_soon(settle, link)
    return outcomes


async def readyz(region: Region) -> int | None:
    return await http_status(region.data, "/readyz")


async def wait_ready(region: Region) -> None:
    """Poll /readyz until 200 (the rebuild runs on the gateway's own schedule)."""
    with trio.fail_after(RECOVERY_DEADLINE_S):
        while await readyz(region) != 200:
            await trio.sleep(READY_POLL_INTERVAL_S)


@pytest.mark.parametrize(("op_name", "errno_code", "partial_bytes"), [
    ("fsync", errno.EIO, 0),
    ("write", errno.ENOSPC, 0),
    ("write", errno.ENOSPC, 13),    # part of the batch reaches the file before the error
])
async def test_disk_fault_answers_internal_hides_the_change_and_recovers(
        tmp_path: pathlib.Path, op_name: str, errno_code: int, partial_bytes: int) -> None:
    region = Region(tmp_path / "region", seed=7)
    book = Book(region, random.Random(7))
    file_ops = FaultyFileOps()
    gateway = Gateway(load_config(region.config_path), file_ops=file_ops)
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.run)
        keys = await gateway_keys(region.data)
        async with Checker(book, region, keys, now_ms()) as checker:
            for _ in range(SETTLEMENTS_BEFORE_FAULT):
                assert {o[1:] for o in await settle_round(checker, book)} == {(200, 0, "")}
            acked_before = list(book.acked)

            rule = file_ops.fail(op_name, errno_code, times=None, partial_bytes=partial_bytes)
            for _ in range(FAILING_ROUNDS):
                outcomes = await settle_round(checker, book)
                assert {o[1:] for o in outcomes} == {(500, -1, "INTERNAL")}, outcomes
                if op_name == "fsync":
                    # Cutting the journal back needs an fsync too, so the rebuild cannot finish.
                    assert await readyz(region) == 503
            assert len(book.in_doubt) == FAILING_ROUNDS * len(checker.links)

            rule.times = rule.fired                       # the disk is healthy again
            cleared_ms = now_ms()
            await wait_ready(region)
            # Nothing that was answered -1 is visible; everything acknowledged still holds.
            await checker.check_totals(with_detail=True)
            await checker.recheck_acked(acked_before)
            # The sessions survived the rebuild, and each failed request, re-sent, is applied
            # now, for the first time.
            checker.restarted_ms = cleared_ms
            await checker.resolve_in_doubt()
            assert checker.counts.in_doubt_found_applied == 0
            assert checker.counts.in_doubt_applied_now == FAILING_ROUNDS * len(checker.links)
            await checker.check_totals(with_detail=True)
            assert not book.unexpected, book.unexpected
        gateway.stop()
