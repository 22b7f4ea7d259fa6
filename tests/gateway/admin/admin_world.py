"""A real core + real journal + Runtime + AdminApi for the admin tests, with restart support."""

from __future__ import annotations

import hashlib
import json
import pathlib
import sys
from typing import Any

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "core"))

from core_world import C1, P1, P2, T0_MS, World, card, line  # noqa: E402

from gateway.admin import AdminApi, finish_pending_rotation  # noqa: E402
from gateway.admin.keyfiles import read_key  # noqa: E402
from gateway.config import LimitsConfig  # noqa: E402
from gateway.core.registry import Admin  # noqa: E402
from gateway.journal import Journal  # noqa: E402
from gateway.metrics import GatewayMetrics  # noqa: E402
from gateway.server.clock import WallClock  # noqa: E402
from gateway.core import from_wire  # noqa: E402
from gateway.runtime import Runtime, SnapshotScheduler  # noqa: E402
from gateway.sealer import KeyRing, Sealer  # noqa: E402

__all__ = ["ADMINS", "AdminWorld", "aw", "C1", "P1", "P2", "T0_MS", "TOKENS", "card", "line"]

TOKENS = {"viewer": "tok-viewer", "operator": "tok-operator", "policy": "tok-policy", "policy2": "tok-policy2"}
ADMINS = [Admin("vera", "viewer", hashlib.sha256(b"tok-viewer").hexdigest()),
          Admin("otto", "operator", hashlib.sha256(b"tok-operator").hexdigest()),
          Admin("paula", "policy", hashlib.sha256(b"tok-policy").hexdigest()),
          Admin("peter", "policy", hashlib.sha256(b"tok-policy2").hexdigest())]


class AdminWorld:
    """The core test region served by a real journal; `restart()` rebuilds everything from disk."""

    def __init__(self, tmp_path: pathlib.Path, nursery: trio.Nursery, world: World | None = None) -> None:
        """`world`: the core test region to serve (default: core_world's)."""
        self.world = world or World(tmp_path)
        self.tmp_path = tmp_path
        self.nursery = nursery
        self.key_path = tmp_path / "gateway_ed25519.pem"
        self.key_path.write_bytes(self.world.gateway_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self.now_ms = T0_MS
        self.metrics = GatewayMetrics()
        self.failures = 0
        self._scope: trio.CancelScope | None = None
        self.runtime: Runtime | None = None
        self.api: AdminApi | None = None
        self.rotation_outcome = ""
        self.recovery: Any = None

    @property
    def core(self) -> Any:
        assert self.runtime is not None
        return self.runtime.core

    async def start(self) -> None:
        """Recover from disk (finishing a pending key rotation first) and start the writer."""
        journal = Journal(self.tmp_path / "data", fsync=True, group_commit_ms=0)
        recovery = journal.recover()
        self.recovery = recovery
        self.rotation_outcome = finish_pending_rotation(self.key_path, recovery.snapshot, recovery.records)
        key = read_key(self.key_path)
        core = self.world.make_core(key)
        core.rebuild(recovery.snapshot, [from_wire(record) for record in recovery.records], None)
        self.world.core = core
        self.world.sealer = Sealer(core.config.admdvs, KeyRing(key), core.config.refid_block)
        self.world.sealer.follow(core)
        self.runtime = Runtime(core=core, sealer=self.world.sealer, journal=journal,
                               clock=WallClock(lambda: self.now_ms),
                               metrics=self.metrics, limits=LimitsConfig(), recovered=True,
                               on_journal_failure=self._on_failure)
        self.runtime.snapshots = SnapshotScheduler(self.runtime, 10_000)
        self.api = AdminApi(self.runtime, ADMINS, self.key_path)
        self._scope = await self.nursery.start(self._run_journal, journal)

    async def _run_journal(self, journal: Journal, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await journal.run()
        journal.close()

    def _on_failure(self) -> None:
        self.failures += 1

    async def stop(self) -> None:
        """Stop as a crash would after everything acknowledged is durable (no snapshot)."""
        assert self.runtime is not None and self._scope is not None
        self._scope.cancel()
        await trio.testing.wait_all_tasks_blocked()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def call(self, method: str, path: str, who: str | None = "policy", body: Any = None,
                   raw: bytes | None = None) -> tuple[int, Any]:
        """One admin request through AdminApi.handle; returns (status, decoded JSON)."""
        assert self.api is not None
        headers = {} if who is None else {"authorization": f"Bearer {TOKENS.get(who, who)}"}
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        status, answer_headers, answer = await self.api.handle(method, path, headers, data)
        assert ("content-type", "application/json") in answer_headers
        return status, json.loads(answer)

    async def settle(self, items: list[dict[str, Any]], who: dict[str, str] | None = None,
                     dev_no: str = "T1", opter: str = "OP1") -> Any:
        """Sign in and settle at the current test time, journaled as the data path would be."""
        term = self.world.sign_in(dev_no, opter, self.now_ms)
        _, env = self.world.settle(term, items, who, now_ms=self.now_ms)
        await self.flush()
        return env

    async def sign_in(self, dev_no: str = "T1", opter: str = "OP1") -> Any:
        """A signed-in terminal session (its records journaled)."""
        term = self.world.sign_in(dev_no, opter, self.now_ms)
        await self.flush()
        return term

    async def flush(self) -> None:
        """Journal the records the world produced through the core directly; wait until durable."""
        assert self.runtime is not None
        for record in self.world.records:
            self.runtime.journal.append(record.to_wire())
        self.world.records.clear()
        await self.runtime.journal.drain()


@pytest.fixture
async def aw(tmp_path: pathlib.Path, nursery: trio.Nursery) -> AdminWorld:
    """A started AdminWorld (import this fixture into a test module)."""
    world = AdminWorld(tmp_path, nursery)
    await world.start()
    return world
