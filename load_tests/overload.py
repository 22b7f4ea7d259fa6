"""Overload runs: 2102 settlements offered far above what the gateway sustains, and what it makes of it.

The generator is open-loop (load_tests/openloop.py): request i is due at `i / rate`, whatever the
gateway does, and goes out on the first free connection. Every answer falls in one class:

- **ok**: HTTP 200, infcode 0 (a settlement the gateway admitted and completed): goodput;
- **shed**: HTTP 429 or 503 with `Retry-After`, a signed Frame saying OVERLOADED or DRAINING
  (infcode -1); every `verify_every`-th one per connection has its signature checked;
- **timeout**: no answer within `timeout_s` of sending (a terminal gives up and reconnects);
- **gave_up**: not sent at all: no connection was free within `timeout_s` of its due time (the
  cashier would have given up; sending it later would only measure the generator's own queue);
- anything else (a rejection, another status, a broken or unsigned answer) is an error.

Latency of admitted requests is measured from the moment the request was written to the socket to
the end of its answer: the time a request spends in the gateway, including the kernel's queue when
the gateway does not read it. It is also kept from the due time (which adds the generator's own
queueing when every connection is busy).

The request bodies are built before the clock starts (a 2102 costs the generator ~100 µs to build,
more than it can afford at several thousand per second). A body that was shed is used again: a
refusal records nothing, so the same msgid is evaluated afresh (SPEC section 6). A body that timed
out is never reused, since the gateway may have applied it.

Connections are spread over several loopback source addresses (127.0.0.1, 127.0.0.2 ...), as
terminals come from many addresses and the gateway caps connections per address.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import msgpack
import trio
from hdrh.histogram import HdrHistogram

from load_tests.gateway_target import GatewaySlot, GatewayTarget
from load_tests.http import ConnectionLost, Endpoint, HttpConnection, HttpProtocolError, HttpResponse
from load_tests.openloop import (CONNECTIONS_MAX, LATENCY_US_MAX, LATENCY_US_MIN, OpenLoopConfig,
                                 SETUP_TIMEOUT_S, new_histogram, release_on_schedule, require_loopback)
from load_tests.targets import MSGPACK, TX_PATH
from protocol import ProtocolError
from protocol.terminal import verify_answer

SHED_STATUSES = (429, 503)
SHED_CODES = ("OVERLOADED", "DRAINING")
# Connections per source address: well under the gateway's per-address cap (256 by default).
CONNECTIONS_PER_ADDRESS = 64
VERIFY_EVERY = 16
DRAIN_S = 3.0
# Under the gateway's idle timeout (30 s by default).
STALE_S = 20.0
LAG_PROBE_S = 0.005
# Opening one connection (and, for some, signing a terminal in) on a busy machine.
SETUP_PER_CONNECTION_S = 0.05


@dataclasses.dataclass(frozen=True)
class PoolConfig:
    """The load connections: how many, how many terminal sessions they share, how often an
    answer's signature is checked, and how long one request may take before it is given up."""

    connections: int = 512
    # Connection i uses session i % sessions: a session is not tied to a connection (SPEC 6).
    sessions: int = 64
    verify_every: int = VERIFY_EVERY
    timeout_s: float = 2.0

    def __post_init__(self) -> None:
        assert 1 <= self.sessions <= self.connections <= CONNECTIONS_MAX


@dataclasses.dataclass
class OverloadResult:
    """What one run saw. Histograms hold microseconds."""

    load: OpenLoopConfig
    elapsed_s: float
    ok: int
    shed: collections.Counter[int]            # by HTTP status
    timeouts: int
    gave_up: int
    errors: collections.Counter[str]
    from_send: HdrHistogram
    from_due: HdrHistogram
    shed_from_send: HdrHistogram
    built_on_demand: int
    generator_cpu_s: float
    generator_lag: HdrHistogram

    @property
    def offered(self) -> int:
        return self.load.request_count

    @property
    def goodput_per_s(self) -> float:
        return self.ok / self.load.duration_s

    @property
    def ok_share(self) -> float:
        return self.ok / self.offered

    @property
    def shed_count(self) -> int:
        return sum(self.shed.values())

    @property
    def unfinished(self) -> int:
        """Requests neither answered, failed nor given up when the run's time bound hit."""
        return (self.offered - self.ok - self.shed_count - self.timeouts - self.gave_up
                - sum(self.errors.values()))

    def p_ms(self, histogram: HdrHistogram, percentile: float) -> float:
        if histogram.get_total_count() == 0:
            return 0.0
        return histogram.get_value_at_percentile(percentile) / 1000

    def summary(self) -> dict[str, Any]:
        """The figures of the run as one JSON-ready dict (latencies in ms)."""
        load = self.load
        row: dict[str, Any] = {
            "offered_rate_per_s": load.rate_per_s, "seconds": load.duration_s,
            "connections": load.connections, "offered": self.offered, "ok": self.ok,
            "goodput_per_s": round(self.goodput_per_s, 1),
            "shed": {str(k): v for k, v in sorted(self.shed.items())},
            "shed_per_s": round(self.shed_count / load.duration_s, 1),
            "timeouts": self.timeouts, "gave_up": self.gave_up, "unfinished": self.unfinished,
            "errors": dict(self.errors),
            "admitted_ms": {name: round(self.p_ms(self.from_send, p), 2)
                            for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p99_9", 99.9))},
            "admitted_from_due_p99_ms": round(self.p_ms(self.from_due, 99), 2),
            "shed_p99_ms": round(self.p_ms(self.shed_from_send, 99), 2),
            "built_on_demand": self.built_on_demand,
            "generator_cpu_share": round(self.generator_cpu_s / self.elapsed_s, 3),
            "generator_lag_p99_ms": round(self.p_ms(self.generator_lag, 99), 2),
        }
        return row


class _Bodies:
    """One connection's request bodies: built ahead, shed ones reused, more built when they run out."""

    def __init__(self, slot: GatewaySlot) -> None:
        self.slot = slot
        self.fresh: collections.deque[bytes] = collections.deque()
        self.reusable: list[bytes] = []
        self.built_on_demand = 0

    def build_ahead(self, count: int) -> None:
        """Hold at least `count` unused bodies."""
        for _ in range(count - len(self.fresh) - len(self.reusable)):
            self.fresh.append(self.slot.build().body)

    def take(self) -> bytes:
        if self.reusable:
            return self.reusable.pop()
        if self.fresh:
            return self.fresh.popleft()
        self.built_on_demand += 1
        return self.slot.build().body


class _Tally:
    """The counters and histograms of one run, written by every connection."""

    def __init__(self) -> None:
        self.ok = 0
        self.shed: collections.Counter[int] = collections.Counter()
        self.timeouts = 0
        self.gave_up = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.from_send = new_histogram()
        self.from_due = new_histogram()
        self.shed_from_send = new_histogram()
        self.generator_lag = new_histogram()


async def _watch_lag(tally: _Tally) -> None:
    """Record how late the generator's own loop wakes from a short sleep: when it is late, every
    latency it measures is inflated by as much (a busy machine, not the gateway)."""
    while True:
        due_s = trio.current_time() + LAG_PROBE_S
        await trio.sleep_until(due_s)
        _record(tally.generator_lag, trio.current_time() - due_s)


def _record(histogram: HdrHistogram, seconds: float) -> None:
    histogram.record_value(min(max(int(seconds * 1_000_000), LATENCY_US_MIN), LATENCY_US_MAX))


def _answer_fields(response: HttpResponse, keys: dict[str, Any] | None) -> tuple[int, str] | None:
    """(infcode, err_code) of an answer Frame, its signature checked when `keys` is given;
    None when it does not decode or verify."""
    try:
        if keys is not None:
            envelope = verify_answer(response.body, keys)
            return envelope.infcode, envelope.err_code
        answer = msgpack.unpackb(msgpack.unpackb(response.body)[3])
        return answer["infcode"], answer["err_code"]
    except (ProtocolError, ValueError, TypeError, KeyError, IndexError):
        return None


def shed_problem(response: HttpResponse, keys: dict[str, Any] | None) -> str | None:
    """None when `response` is a proper shed answer (signed Frame, -1 OVERLOADED/DRAINING, Retry-After).

    The signature is checked when `keys` is given; otherwise the Frame is only decoded.
    """
    if not response.headers.get("retry-after", "").isdigit():
        return "shed_without_retry_after"
    fields = _answer_fields(response, keys)
    if fields is None:
        return "shed_bad_frame"
    infcode, err_code = fields
    if infcode != -1 or err_code not in SHED_CODES:
        return f"shed_{err_code or infcode}"
    return None


def settlement_problem(response: HttpResponse, keys: dict[str, Any] | None) -> str | None:
    """None for an HTTP 200 answer with infcode 0; else a short error name."""
    if response.status != 200:
        return f"http_{response.status}"
    fields = _answer_fields(response, keys)
    if fields is None:
        return "bad_answer"
    return None if fields[0] == 0 else f"infcode_{fields[1]}"


class _Connection:
    """One load connection: its bodies and its socket (reopened when lost)."""

    def __init__(self, pool: LoadPool, local_address: str) -> None:
        self.pool = pool
        self.local_address = local_address
        self.conn: HttpConnection | None = None
        self.bodies: _Bodies | None = None
        self.answers = 0
        self.used_s = 0.0     # when the connection last carried a request

    async def open(self, index: int, slots: list[GatewaySlot]) -> None:
        """Connect; sign in a new session while `slots` holds fewer than the pool's sessions,
        else share one."""
        self.conn = await HttpConnection.connect(self.pool.endpoint, self.local_address)
        self.used_s = trio.current_time()
        if len(slots) < self.pool.config.sessions:
            slots.append(await self.pool.target.open_slot(index, self.conn))
        self.bodies = _Bodies(slots[index % len(slots)])

    async def aclose(self) -> None:
        if self.conn is not None:
            await self.conn.aclose()
            self.conn = None

    async def serve(self, tally: _Tally, due: trio.MemoryReceiveChannel[float]) -> None:
        timeout_s = self.pool.config.timeout_s
        async for due_s in due:
            if trio.current_time() - due_s > timeout_s:
                tally.gave_up += 1
                continue
            await self._one(tally, due_s)

    async def _one(self, tally: _Tally, due_s: float) -> None:
        # A keep-alive connection left unused for long has been closed by the gateway (its idle
        # timeout): a terminal opens a new one rather than lose a request to it.
        if self.conn is not None and trio.current_time() - self.used_s > STALE_S:
            await self.aclose()
        if self.conn is None or not self.conn.reusable:
            await self.aclose()
            self.conn = await self._reconnect(tally)
            if self.conn is None:
                return
        assert self.bodies is not None
        body = self.bodies.take()
        sent_s = self.used_s = trio.current_time()
        response = None
        with trio.move_on_after(self.pool.config.timeout_s):
            try:
                response = await self.conn.request("POST", TX_PATH, body, MSGPACK)
            except (ConnectionLost, HttpProtocolError, trio.BrokenResourceError, OSError) as exc:
                tally.errors[f"io_{type(exc).__name__}"] += 1
                return
        if response is None:
            tally.timeouts += 1
            return
        self._judge(tally, response, body, due_s, sent_s, trio.current_time())

    def _judge(self, tally: _Tally, response: HttpResponse, body: bytes, due_s: float, sent_s: float,
               done_s: float) -> None:
        self.answers += 1
        verify = self.answers % self.pool.config.verify_every == 1
        keys = self.pool.target.gateway_keys if verify else None
        if response.status in SHED_STATUSES:
            problem = shed_problem(response, keys)
            if problem is None:
                tally.shed[response.status] += 1
                _record(tally.shed_from_send, done_s - sent_s)
                assert self.bodies is not None
                self.bodies.reusable.append(body)
            else:
                tally.errors[problem] += 1
            return
        problem = settlement_problem(response, keys)
        if problem is None:
            tally.ok += 1
            _record(tally.from_send, done_s - sent_s)
            _record(tally.from_due, done_s - min(due_s, sent_s))
        else:
            tally.errors[problem] += 1

    async def _reconnect(self, tally: _Tally) -> HttpConnection | None:
        try:
            with trio.fail_after(self.pool.config.timeout_s):
                return await HttpConnection.connect(self.pool.endpoint, self.local_address)
        except (OSError, trio.TooSlowError):
            tally.errors["connect"] += 1
            return None


def local_addresses(connections: int, per_address: int = CONNECTIONS_PER_ADDRESS) -> list[str]:
    """The loopback source address of each connection: 127.0.0.1 for the first `per_address`,
    127.0.0.2 for the next ..."""
    return [f"127.0.0.{index // per_address + 1}" for index in range(connections)]


class LoadPool:
    """Load connections opened and their terminals signed in once, for several runs.

    Use as `async with LoadPool(...) as pool:`; every run is bounded by its duration + drain.
    """

    def __init__(self, endpoint: Endpoint, target: GatewayTarget, config: PoolConfig) -> None:
        require_loopback(endpoint)
        self.endpoint = endpoint
        self.target = target
        self.config = config
        addresses = local_addresses(config.connections)
        self.connections = [_Connection(self, address) for address in addresses]

    async def __aenter__(self) -> LoadPool:
        slots: list[GatewaySlot] = []
        try:
            with trio.fail_after(SETUP_TIMEOUT_S + self.config.connections * SETUP_PER_CONNECTION_S):
                for index, connection in enumerate(self.connections):
                    await connection.open(index, slots)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for connection in self.connections:
            await connection.aclose()

    def build_ahead(self, expected_ok_per_s: float, duration_s: float) -> None:
        """Build enough bodies for `expected_ok_per_s` successes over `duration_s` (plus a margin)."""
        per_connection = math.ceil(expected_ok_per_s * duration_s * 1.25 / len(self.connections)) + 8
        for connection in self.connections:
            assert connection.bodies is not None
            connection.bodies.build_ahead(per_connection)

    async def run(self, rate_per_s: float, duration_s: float, drain_s: float = DRAIN_S,
                  on_clock_start: Callable[[], None] | None = None) -> OverloadResult:
        """Offer `rate_per_s` for `duration_s` (open loop); stop at duration + drain.

        `on_clock_start` is called just before the first request is due.
        """
        load = OpenLoopConfig(rate_per_s, duration_s, self.config.connections, self.config.timeout_s, drain_s)
        tally = _Tally()
        built_before = self._built_on_demand()

        send, receive = trio.open_memory_channel[float](load.request_count)
        async with trio.open_nursery() as nursery:
            for connection in self.connections:
                nursery.start_soon(connection.serve, tally, receive.clone())
            await receive.aclose()
            if on_clock_start is not None:
                on_clock_start()
            cpu_start_s = time.process_time()
            start_s = trio.current_time()
            nursery.cancel_scope.deadline = start_s + duration_s + drain_s
            nursery.start_soon(release_on_schedule, load, start_s, send)
            nursery.start_soon(_watch_lag, tally)
        # A request cut off by the deadline leaves its connection unusable; the next run reopens it.
        elapsed_s = max(trio.current_time() - start_s, duration_s)
        return OverloadResult(load, elapsed_s, tally.ok, tally.shed, tally.timeouts, tally.gave_up,
                              tally.errors, tally.from_send, tally.from_due, tally.shed_from_send,
                              self._built_on_demand() - built_before, time.process_time() - cpu_start_s,
                              tally.generator_lag)

    def _built_on_demand(self) -> int:
        return sum(c.bodies.built_on_demand for c in self.connections if c.bodies is not None)
