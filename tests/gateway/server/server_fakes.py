"""Small fakes of the core and the journal that follow the seams of docs/design.md.

The fake core answers by the first byte of the body: b"S" → a state-changing answer with a
record, b"R" → a replay that waits on an earlier op, anything else → a read-only answer. Answers
are msgpack so tests can check what came back.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import trio

from gateway.config import LimitsConfig
from gateway.journal.errors import JournalFailed, JournalFull
from gateway.metrics import GatewayMetrics
from gateway.server.clock import SettableClock, WallClock
from gateway.server.runtime import Runtime


@dataclasses.dataclass(frozen=True)
class FakeFacts:
    infno: str = "2102"
    msgid: str = ""
    outcome: str = "ok"
    err_code: str = ""
    kind: str = "pharmacy"
    grade: str = "A"
    cert_type: str = "03"
    medfee_fen: int = 1000
    fund_fen: int = 600
    cash_fen: int = 400
    fulamt_fen: int = 0
    preselfpay_fen: int = 0
    overlmt_fen: int = 0
    acct_fen: int = 0
    bound_by: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    idempotent_replay: bool = False


@dataclasses.dataclass(frozen=True)
class FakeRecord:
    op: int
    t: str = "settle"

    def to_wire(self) -> dict[str, Any]:
        return {"op": self.op, "t": self.t}


@dataclasses.dataclass(frozen=True)
class FakeTxResult:
    http_status: int
    response: bytes
    record: FakeRecord | None
    wait_op: int
    facts: FakeFacts


class FakeSealer:
    """Stand-in for gateway.sealer.Sealer: the FakeCore answers whole requests itself."""

    def answer(self, core: FakeCore, body: bytes, now_ms: int) -> FakeTxResult:
        return core.handle_tx(body, now_ms)

    def error_response(self, code: Any, now_ms: int, msgid: str | None = None) -> bytes:
        return msgpack.packb({"err_code": code.wire, "infcode": code.infcode, "now_ms": now_ms})


class FakeCore:
    """Deterministic stand-in for gateway.core.Core."""

    def __init__(self) -> None:
        self.last_op = 0
        self.sessions_active = 3
        self.bodies: list[bytes] = []
        self.gate: trio.Event | None = None

    def handle_tx(self, body: bytes, now_ms: int) -> FakeTxResult:
        self.bodies.append(body)
        answer = msgpack.packb({"ok": body[:16], "now_ms": now_ms})
        if body.startswith(b"S"):
            self.last_op += 1
            return FakeTxResult(200, answer, FakeRecord(self.last_op), self.last_op, FakeFacts())
        if body.startswith(b"R"):
            return FakeTxResult(200, answer, None, self.last_op,
                                FakeFacts(idempotent_replay=True))
        return FakeTxResult(200, answer, None, 0, FakeFacts(infno="1101"))

    def public_keys(self) -> list[dict[str, Any]]:
        return [{"kid": "gw-0123456789abcdef", "alg": "Ed25519", "public_key": "AAAA",
                 "status": "active"}]

    def snapshot(self) -> dict[str, Any]:
        return {"last_op": self.last_op}


class FakeJournal:
    """In-memory journal: records become durable when `run` flushes them (every group_commit_s)."""

    def __init__(self, queue_records_max: int = 1000, group_commit_s: float = 0.002) -> None:
        self.records: list[dict[str, Any]] = []
        self.durable_op = 0
        self.failed = False
        self.queue_records_max = queue_records_max
        self.group_commit_s = group_commit_s
        self.snapshots: list[tuple[dict[str, Any], int]] = []
        self._changed = trio.Event()
        self.hold = False

    def check_room(self) -> None:
        if self.failed:
            raise JournalFailed("journal failed")
        if len(self.records) - self.durable_op >= self.queue_records_max:
            raise JournalFull("queue full")

    def append(self, record: dict[str, Any]) -> None:
        self.check_room()
        self.records.append(record)

    async def wait_durable(self, op: int) -> None:
        while self.durable_op < op:
            if self.failed:
                raise JournalFailed("journal failed")
            await self._changed.wait()
        if self.failed and self.durable_op < op:
            raise JournalFailed("journal failed")

    def fail(self) -> None:
        self.failed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.group_commit_s)
            if not self.hold and not self.failed and self.records:
                self.durable_op = self.records[-1]["op"]
                self._wake()

    async def snapshot_of(self, source: FakeCore) -> None:
        state, op = source.snapshot(), source.last_op
        await self.wait_durable(op)
        self.snapshots.append((state, op))


def make_runtime(*, clock: WallClock | None = None, limits: LimitsConfig | None = None,
                 journal: FakeJournal | None = None) -> Runtime:
    runtime = Runtime(core=FakeCore(), sealer=FakeSealer(), journal=journal or FakeJournal(),  # type: ignore[arg-type]
                      clock=clock or SettableClock(lambda: 1_700_000_000_000),
                      metrics=GatewayMetrics(), limits=limits or LimitsConfig())
    runtime.recovered = True
    return runtime
