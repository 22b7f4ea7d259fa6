"""The composition of a running gateway: files → core → journal recovery → listeners → drain.

Start-up order (each step logged as one JSON line):

1. read registry.toml, secrets.toml, the catalogue and the accounts (if configured) and the
   signing key (a bad file stops here with one line);
2. bind the admin listener, so /healthz, /readyz (503) and /metrics answer while recovering;
3. recover: newest valid snapshot + journal records after it, replayed into a fresh core in a
   worker thread (a torn tail is truncated and counted; corruption before the tail stops start);
4. start the journal's writer, the snapshot task and the data listener; /readyz turns 200.

The data listener opens only after recovery: every answer on it is signed with a fresh
inf_refmsgid serial, and serials are only safe once the journal says where the last run stopped.

A journal write or fsync failure makes the gateway not ready and rebuilds the core from disk
(snapshot + durable records), so memory never runs ahead of what was acknowledged; sessions are
carried over, since they are not journaled state. SIGTERM or SIGINT drains: stop accepting,
refuse new transactions with DRAINING, let in-flight answers finish within drain_timeout_s, make
the journal durable, write a snapshot (fast restart), exit 0.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import os
import pathlib
import signal
import time
from collections.abc import Callable
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.admin import AdminApi, finish_pending_rotation
from gateway.admin.keyfiles import KeyFileError, read_key
from gateway.accounts_file import load_accounts
from gateway.catalogue_file import load_catalogue
from gateway.config import GatewayConfig, LimitsConfig
from gateway.core import Core, CoreConfig, Registry, RegistryError, Secrets, from_wire
from gateway.core.accounts import AccountsError, OpeningBalances
from gateway.core.catalogue import Catalogue, CatalogueError
from gateway.files import load_registry, load_secrets
from gateway.journal import Journal, JournalCorrupt, JournalFailed, RealFileOps, Recovery
from gateway.metrics import GatewayMetrics, JournalMetrics
from gateway.server.admin_routes import AdminApp
from gateway.server.clock import SettableClock, WallClock
from gateway.server.data import COMMON_PATHS, RETRY_AFTER_OVERLOADED_S, TX_PATH, DataApp
from gateway.server.admission import Admission
from gateway.server.http import Gate, Request, Response, plain_response
from gateway.server.listener import Listener, OverCap
from gateway.server.logs import LOGGER, log_event
from gateway.runtime import Runtime, SnapshotScheduler
from gateway.sealer import KeyRing, Sealer
from gateway.server.runtime import http_limits

__all__ = ["Gateway", "StartupError", "admission_of", "fresh_core", "load_files", "load_signing_key", "serve"]

# Admin requests are small JSON documents; a handful of ops staff at once.
ADMIN_CONNECTIONS_MAX = 64
# After a journal failure, how long to wait between attempts to rebuild from disk.
REBUILD_RETRY_S = 1.0
# The snapshot written while draining must not hold the exit for long.
DRAIN_SNAPSHOT_TIMEOUT_S = 30.0


class StartupError(Exception):
    """The gateway cannot start; `str(err)` is one line for the operator (no traceback)."""


def load_signing_key(path: pathlib.Path) -> Ed25519PrivateKey:
    """Read the gateway's PKCS8 PEM Ed25519 key; raises StartupError naming the file."""
    try:
        return read_key(path)
    except KeyFileError as exc:
        raise StartupError(str(exc)) from None


@dataclasses.dataclass(frozen=True)
class Files:
    """What the gateway reads from the region directory at start."""

    registry: Registry
    secrets: Secrets
    # The catalogue as the file holds it (None: the feature is off). A core must be given
    # `catalogue.copy()`: admin changes mutate a core's catalogue in place, and a rebuilt core
    # starts again from the file's rows.
    catalogue: Catalogue | None = None
    # The accounts file's opening balances (None: off). They never change: every core shares them.
    accounts: OpeningBalances | None = None


def load_files(config: GatewayConfig) -> Files:
    """Read registry.toml, secrets.toml, the catalogue and the accounts; raises StartupError with the
    loader's one line."""
    paths = config.paths
    try:
        registry, secrets = load_registry(str(paths.registry)), load_secrets(str(paths.secrets))
        catalogue = None if paths.catalogue is None else load_catalogue(paths.catalogue)
        accounts = None if paths.accounts is None else load_accounts(paths.accounts)
    except (RegistryError, CatalogueError, AccountsError) as exc:
        raise StartupError(str(exc)) from None
    return Files(registry, secrets, catalogue, accounts)


def core_config(config: GatewayConfig) -> CoreConfig:
    """The core's limits and identity from gateway.toml."""
    return CoreConfig(admdvs=config.admdvs, session_ttl_s=config.limits.session_ttl_s)


def fresh_core(config: GatewayConfig, files: Files, active_public_raw: bytes) -> Core:
    """A core over the region's files (its own copy of the catalogue, see Files), before any journaled
    record (serve and `report` build it alike)."""
    catalogue = None if files.catalogue is None else files.catalogue.copy()
    return Core(core_config(config), files.registry, files.secrets, active_public_raw, os.urandom, catalogue,
                files.accounts)


def freeze_heap() -> None:
    """Put every object alive now out of the cyclic garbage collector's reach (`gc.freeze`).

    Called once the core is recovered (and again after a rebuild). The region's files and the
    recovered state are tens of thousands of tracked objects that live as long as the process;
    every full collection walked them all again, a pause of every connection (17-27 ms for the
    small sample region, 25 ms for pengzhou, measured). Frozen objects are still freed by
    reference counting when dropped (the core holds no reference cycles); `gc.unfreeze` first lets
    what an earlier freeze held be judged again, so an old core's cycles, were there any, go too.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class Gateway:
    """One gateway process: owns the runtime, the listeners and the background tasks."""

    def __init__(self, config: GatewayConfig, *, test_clock: bool = False,
                 file_ops: RealFileOps | None = None, freeze_heap: bool = False) -> None:
        """`file_ops` is the journal's file seam (tests pass a FaultyFileOps to inject ENOSPC/EIO);
        `freeze_heap`: the process is this gateway's own (`serve`), see `freeze_heap`."""
        self.config = config
        self._freeze_heap = freeze_heap
        self.files = load_files(config)
        load_signing_key(config.paths.signing_key)  # fail early on a bad key file
        self.metrics = GatewayMetrics()
        self.journal = self._make_journal(file_ops)
        clock = SettableClock() if test_clock else WallClock()
        keyring = KeyRing(load_signing_key(config.paths.signing_key))
        core_config = self._core_config()
        self.runtime = Runtime(core=self._fresh_core(keyring), sealer=Sealer(config.admdvs, keyring, core_config.refid_block),
                               journal=self.journal, clock=clock,
                               metrics=self.metrics, limits=config.limits,
                               on_journal_failure=self._on_journal_failure)
        self.runtime.snapshots = SnapshotScheduler(self.runtime, config.journal.snapshot_every_records)
        self.data_listener: Listener | None = None
        self.admin_listener: Listener | None = None
        self._rebuild_wanted = trio.Event()
        self._listeners_done: list[trio.Event] = []
        self._stop = trio.Event()

    def _make_journal(self, file_ops: RealFileOps | None) -> Journal:
        """The journal port: the local files (the embedded default; cluster mode overrides it)."""
        config = self.config
        return Journal(
            config.paths.data_dir, fsync=config.journal.fsync,
            group_commit_ms=config.journal.group_commit_ms,
            batch_records_max=config.journal.batch_records_max,
            queue_records_max=config.journal.queue_records_max,
            file_ops=file_ops, observer=JournalMetrics(self.metrics), logger=LOGGER)

    def _core_config(self) -> CoreConfig:
        return core_config(self.config)

    def _fresh_core(self, keyring: KeyRing) -> Core:
        return fresh_core(self.config, self.files, keyring.active_public_raw)

    def _recovered_keyring(self, recovery: Recovery) -> KeyRing:
        """Worker thread, at start: the signing key, after finishing a rotation a crash interrupted."""
        try:
            # A rotation a crash interrupted: install its staged key if the journal has its record.
            finish_pending_rotation(self.config.paths.signing_key, recovery.snapshot, recovery.records)
        except KeyFileError as exc:
            raise StartupError(str(exc)) from None
        return KeyRing(load_signing_key(self.config.paths.signing_key))

    def _rebuilt_core(self, recovery: Recovery, keyring: KeyRing, sessions_from: Core | None = None) -> Core:
        """Worker thread: a fresh core with the snapshot and the durable records applied."""
        core = self._fresh_core(keyring)
        try:
            records = [from_wire(record) for record in recovery.records]
        except ValueError as exc:
            raise StartupError(f"{self.journal.journal_dir}: {exc}") from None
        core.rebuild(recovery.snapshot, records, sessions_from)
        if core.last_op != recovery.last_op:
            raise StartupError(f"{self.journal.journal_dir}: replay ended at op {core.last_op}, "
                               f"the journal at op {recovery.last_op}")
        return core

    # -- life cycle ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[dict[str, int]] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Serve until SIGTERM/SIGINT (or cancellation); reports {"data": port, "admin": port}."""
        config, runtime = self.config, self.runtime
        log_event("start", config=str(config.path), data=str(config.listen.data),
                  admin=str(config.listen.admin), fsync=config.journal.fsync,
                  test_clock=runtime.clock.settable)
        try:
            await self._serve(task_status)
        except BaseExceptionGroup as group:
            # A start-up failure inside the nursery: give the caller the one-line error itself.
            failure = _find(group, StartupError)
            if failure is None:
                raise
            raise failure from None
        self.journal.close()
        log_event("stop", last_op=runtime.core.last_op, durable_op=self.journal.durable_op)

    async def _serve(self, task_status: trio.TaskStatus[dict[str, int]]) -> None:
        runtime = self.runtime
        async with trio.open_nursery() as nursery:
            admin_port = await self._start_listener(nursery, "admin")
            await self._recover()
            await nursery.start(self.journal.run)
            assert runtime.snapshots is not None
            nursery.start_soon(runtime.snapshots.run)
            self._start_role(nursery)
            data_port = await self._start_listener(nursery, "data")
            # Only now may /readyz say ready (or "standby"): a client it lets in finds the data
            # port listening. No await between here and the first accepted request.
            runtime.recovered = True
            log_event("ready", data_port=data_port, admin_port=admin_port,
                      last_op=runtime.core.last_op)
            task_status.started({"data": data_port, "admin": admin_port})
            await self._wait_for_stop()
            await self._drain()
            nursery.cancel_scope.cancel()

    def _start_role(self, nursery: trio.Nursery) -> None:
        """Alone, the gateway serves, and rebuilds its memory from disk after a journal failure."""
        nursery.start_soon(self._rebuild_loop)

    async def _start_listener(self, nursery: trio.Nursery, name: str) -> int:
        runtime, limits = self.runtime, self.config.limits
        gate = None
        if name == "data":
            data_app = DataApp(runtime)
            app: Any = data_app
            address, cap, refusal = self.config.listen.data, limits.connections_max, data_app.overflow_refusal
            over_cap = OverCap(data_app, COMMON_PATHS, functools.partial(_data_over_cap, data_app))
            gate = Gate(admission_of(limits), data_app)
            nursery.start_soon(gate.admission.run)
        else:
            admin_app = AdminApp(runtime, self.files.secrets.admins, self._admin_api())
            app = admin_app
            address, cap, refusal = self.config.listen.admin, ADMIN_CONNECTIONS_MAX, admin_app.overflow_refusal
            over_cap = OverCap(admin_app, COMMON_PATHS, lambda request: admin_app.overflow_refusal())
        listener = Listener(name, address, app, http_limits(limits), runtime.drain, cap, refusal,
                            self.metrics.connections_open.inc,
                            connections_per_address_max=limits.connections_per_address_max,
                            over_cap=over_cap, gate=gate)
        try:
            port: int = await nursery.start(self._run_listener, listener)
        except OSError as exc:
            raise StartupError(f"cannot listen on {address} ({name}): "
                               f"{exc.strerror or exc}") from None
        setattr(self, f"{name}_listener", listener)
        return port

    def _admin_api(self) -> AdminApi:
        """The admin routes; a key rotation keeps its key where `_key_sealer` says."""
        return AdminApi(self.runtime, self.files.secrets.admins, self.config.paths.signing_key,
                        seal_key=self._key_sealer())

    def _key_sealer(self) -> Callable[[Ed25519PrivateKey], bytes] | None:
        """How a rotated key is sealed into its record; None (alone): it is kept in the signing_key file."""
        return None

    async def _run_listener(self, listener: Listener, *,
                            task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Run `listener`; once it has stopped accepting and its connections ended, say so."""
        done = trio.Event()
        self._listeners_done.append(done)
        try:
            await listener.run(task_status=task_status)
        finally:
            done.set()

    async def _recover(self) -> None:
        """Rebuild the core from disk before anything is answered on the data listener."""
        started_s = time.perf_counter()
        try:
            recovery = await self._read_journal()
        except JournalCorrupt as exc:
            raise StartupError(f"journal corrupt before its tail, refusing to start: {exc}") from None
        keyring = await trio.to_thread.run_sync(self._recovered_keyring, recovery)
        core = await trio.to_thread.run_sync(self._rebuilt_core, recovery, keyring)
        self.runtime.core = core
        self.runtime.sealer = Sealer(self.config.admdvs, keyring, core.config.refid_block)
        self.runtime.sealer.follow(core)
        self._settle_heap()   # before the data listener opens: no connection waits for it
        log_event("recovered", snapshot_op=recovery.snapshot_op, records=recovery.records_replayed,
                  last_op=recovery.last_op, torn_tail_bytes=recovery.torn_tail_bytes,
                  duration_s=round(time.perf_counter() - started_s, 6))

    async def _read_journal(self) -> Recovery:
        """The durable state to start from: the newest snapshot and the records after it."""
        return await trio.to_thread.run_sync(self.journal.recover)

    # -- journal failure -------------------------------------------------------------------

    def _on_journal_failure(self) -> None:
        """Called by the routes when the journal refused a change the core had applied."""
        self.runtime.rebuilding = True
        self._rebuild_wanted.set()

    async def _rebuild_loop(self) -> None:
        """Roll memory back to what is durable, retrying while the disk keeps failing."""
        while True:
            await self._rebuild_wanted.wait()
            self._rebuild_wanted = trio.Event()
            while True:
                try:
                    await self._rebuild()
                    break
                except (JournalFailed, OSError) as exc:
                    log_event("rebuild_failed", error=type(exc).__name__, detail=str(exc)[:200])
                    await trio.sleep(REBUILD_RETRY_S)

    async def _rebuild(self) -> None:
        runtime = self.runtime
        runtime.rebuilding = True
        old = runtime.core
        recovery = await self.journal.reopen()
        # Sessions are not journaled state: they carry over, so terminals need not sign in again.
        core = await trio.to_thread.run_sync(self._rebuilt_core, recovery, runtime.sealer.keyring, old)
        runtime.core = core
        # Answers sealed before the failure may have used serials of a reservation that never
        # became durable: continue after them, so no inf_refmsgid is ever handed out twice.
        runtime.sealer.follow(core, after_failure=True)
        del old
        self._settle_heap()
        runtime.rebuilding = False
        log_event("rebuilt", last_op=core.last_op, records=recovery.records_replayed)

    def _settle_heap(self) -> None:
        if self._freeze_heap:
            freeze_heap()

    # -- drain -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Start the graceful drain, as SIGTERM does (for embedding and tests)."""
        self._stop.set()

    async def _wait_for_stop(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_signals)
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log_event("drain", signal=signal.Signals(signum).name)
                self._stop.set()
                return

    async def _drain(self) -> None:
        """Stop accepting, finish in-flight answers, make everything durable, snapshot."""
        runtime = self.runtime
        runtime.drain.start()
        listeners = [x for x in (self.data_listener, self.admin_listener) if x is not None]
        for listener in listeners:
            listener.stop_accepting()
        with trio.move_on_after(self.config.limits.drain_timeout_s):
            for done in self._listeners_done:
                await done.wait()
        for listener in listeners:
            listener.cancel_connections()
        try:
            await self.journal.drain()
        except JournalFailed as exc:
            log_event("drain_journal_failed", detail=str(exc)[:200])
            return
        if runtime.writable():
            with trio.move_on_after(DRAIN_SNAPSHOT_TIMEOUT_S):
                assert runtime.snapshots is not None
                await runtime.snapshots.take()


def admission_of(limits: LimitsConfig) -> Admission:
    """The data listener's admission gate, from gateway.toml [limits]."""
    return Admission(limit_max=limits.requests_in_flight_max, target_s=limits.admission_target_ms / 1000,
                     wait_max_s=limits.admission_wait_max_ms / 1000, sheds_per_answer=limits.sheds_per_answer,
                     close_after_s=limits.read_timeout_s)


def _data_over_cap(data_app: DataApp, request: Request) -> Response:
    """A request on a data connection over a cap: a signed OVERLOADED Frame for a transaction,
    plain text elsewhere (SPEC section 3: only /fsi/v1/tx answers are Frames)."""
    if request.path == TX_PATH:
        return data_app.overflow_refusal()
    return plain_response(503, "too many connections",
                          ("retry-after", str(RETRY_AFTER_OVERLOADED_S)), close=True)


def _find(group: BaseExceptionGroup, kind: type[Exception]) -> Exception | None:
    """The first `kind` exception inside a (nested) exception group."""
    for inner in group.exceptions:
        if isinstance(inner, kind):
            return inner
        if isinstance(inner, BaseExceptionGroup):
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


async def serve(config: GatewayConfig, *, test_clock: bool = False,
                task_status: trio.TaskStatus[dict[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
    """Build a Gateway from `config` (a region node when it has [cluster]) and run it (see Gateway.run)."""
    # The process is this gateway's own: its start-up heap is frozen once recovered (freeze_heap).
    if config.cluster is None:
        await Gateway(config, test_clock=test_clock, freeze_heap=True).run(task_status=task_status)
        return
    # Imported only in cluster mode: it brings in the Redis client.
    from gateway.cluster.gateway import ClusterGateway

    await ClusterGateway(config, test_clock=test_clock, freeze_heap=True).run(task_status=task_status)

