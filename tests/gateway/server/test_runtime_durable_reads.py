"""No answer may depend on state that is not yet durable (docs/design.md, "every answer waits").

A settlement is committed in memory at once (so the next request sees it) but acknowledged only
once its batch is fsynced. Answers that journal nothing themselves — a 1101 that reports the
settlement's use of the day's allowance, a 2102 refused VOUCHER_ALREADY_USED because of it — read
that state too: they must wait for the same fsync. Here the fsync is held open and then fails,
the journal's failure rolls the settlement back, and neither answer may have left in the meantime.
"""

from __future__ import annotations

import errno
import pathlib
import sys
import threading
from typing import Any

import pytest
import trio

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "core"))

from core_world import P1, T0_MS, World, card, line  # noqa: E402
from gateway.config import LimitsConfig  # noqa: E402
from gateway.core import from_wire  # noqa: E402
from gateway.journal import Journal, JournalFailed, RealFileOps  # noqa: E402
from gateway.metrics import GatewayMetrics  # noqa: E402
from gateway.runtime import Runtime  # noqa: E402
from gateway.server.clock import WallClock  # noqa: E402
from protocol import decode_frame, decode_response_envelope  # noqa: E402

FSYNC_HELD_S = 0.2          # long enough for an answer that does not wait to have been sent


class HeldFsync(RealFileOps):
    """Real file operations whose fsyncs wait for `release` and then fail when `fail` is set."""

    def __init__(self) -> None:
        self.holding = False
        self.fail = False
        self.release = threading.Event()

    def fsync(self, fd: int) -> None:
        if self.holding:
            self.release.wait()
            if self.fail:
                raise OSError(errno.EIO, "injected EIO on fsync")
        super().fsync(fd)


def _envelope(result: Any) -> Any:
    return decode_response_envelope(decode_frame(result.response).body)


async def test_reads_wait_for_the_settlement_they_saw_and_never_leave_when_it_is_rolled_back(
        tmp_path: pathlib.Path) -> None:
    world = World(tmp_path)
    file_ops = HeldFsync()
    journal = Journal(tmp_path / "data", fsync=True, group_commit_ms=0, file_ops=file_ops)
    journal.recover()
    runtime = Runtime(core=world.core, sealer=world.sealer, journal=journal, clock=WallClock(lambda: T0_MS),
                      metrics=GatewayMetrics(), limits=LimitsConfig(), recovered=True)
    sent: dict[str, Any] = {}
    refused: dict[str, str] = {}

    async def answer(name: str, body: bytes) -> None:
        # The data path's two steps: decide/seal/commit, then the commit gate.
        result = world.handle_tx(body, T0_MS)
        try:
            await runtime.make_durable(result.record, result.wait_op)
        except JournalFailed as exc:
            refused[name] = type(exc).__name__
            return
        sent[name] = _envelope(result)

    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        term = world.sign_in()
        for record in world.records:          # the sign-in's serial reservation
            await runtime.make_durable(record, record.op)
        world.records.clear()
        voucher = world.voucher("PSN9", org=P1)
        items = [line("1", 3000)]
        file_ops.holding = True
        mid = world.next_msgid(P1, T0_MS)
        nursery.start_soon(answer, "settle", term.request_frame(
            "2102", mid, {**voucher, "medfee_sumamt": 3000, "items": items}, T0_MS))
        await trio.sleep(0.01)        # the settlement is committed in memory, its fsync held
        assert world.core.state.ledger.person_day_used("PSN9", world.core.state.settlements.get(
            world.core.view.setl_id(1)).day) == 3000
        mid = world.next_msgid(P1, T0_MS)
        nursery.start_soon(answer, "query", term.request_frame("1101", mid, dict(voucher), T0_MS))
        mid = world.next_msgid(P1, T0_MS)
        nursery.start_soon(answer, "reuse", term.request_frame(
            "2102", mid, {**voucher, "medfee_sumamt": 3000, "items": items}, T0_MS))
        await trio.sleep(FSYNC_HELD_S)
        early = sorted(sent)
        file_ops.fail = True
        file_ops.release.set()          # before any assertion: the writer thread must not stay held
        assert early == [], f"answered before the state they read was durable: {early}"
        with trio.fail_after(5):
            while len(refused) < 3:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert sent == {} and refused == {"settle": "JournalFailed", "query": "JournalFailed",
                                      "reuse": "JournalFailed"}

    # The rebuild after a journal failure: back to what is durable, so the settlement never
    # happened and the voucher is unused after all.
    file_ops.holding = False
    recovery = await journal.reopen()
    rebuilt = world.make_core()
    rebuilt.rebuild(recovery.snapshot, [from_wire(r) for r in recovery.records], world.core)
    assert rebuilt.state.settlements.snapshot() == []
    world.restart(rebuilt)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        mid = world.next_msgid(P1, T0_MS)
        await answer("retry", term.request_frame("2102", mid, {**voucher, "medfee_sumamt": 3000, "items": items},
                                                 T0_MS))
        nursery.cancel_scope.cancel()
    assert (sent["retry"].infcode, sent["retry"].err_code) == (0, "")
    journal.close()


@pytest.mark.parametrize("infno", ["1101", "3201"])
async def test_a_read_with_nothing_in_flight_is_answered_at_once(tmp_path: pathlib.Path, infno: str) -> None:
    """The wait costs nothing when the state read is already durable."""
    world = World(tmp_path)
    journal = Journal(tmp_path / "data", fsync=True, group_commit_ms=0)
    journal.recover()
    runtime = Runtime(core=world.core, sealer=world.sealer, journal=journal, clock=WallClock(lambda: T0_MS),
                      metrics=GatewayMetrics(), limits=LimitsConfig(), recovered=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        term = world.sign_in()
        for record in world.records:
            await runtime.make_durable(record, record.op)
        world.records.clear()
        mid = world.next_msgid(P1, T0_MS)
        fields = world.card_fields(term, mid, "1101", 0, card()) if infno == "1101" else {
            "stmt_date": "20240315", "setl_cnt": 0, "medfee_sumamt": 0, "fund_pay_sumamt": 0, "psn_cash_pay": 0}
        result = world.handle_tx(term.request_frame(infno, mid, fields, T0_MS), T0_MS)
        assert result.wait_op <= journal.durable_op
        with trio.fail_after(1):
            await runtime.make_durable(result.record, result.wait_op)
        assert _envelope(result).infcode == 0
        nursery.cancel_scope.cancel()
    journal.close()
