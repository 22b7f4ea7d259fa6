"""Open-loop load generation: requests leave on a fixed schedule, whatever the server does.

A closed-loop generator ("send, wait for the answer, send the next") slows down exactly when the
server does, so the requests that would have met a stall are never sent and never measured
(coordinated omission). Here a scheduler task releases request i at its intended time
`t0 + i / rate`; a pool of connection workers takes released requests in order; each latency is
measured from the INTENDED time, so time spent queued behind a slow server counts. The run is
bounded in count (`rate * duration`) and in time (`duration + drain`): it stops by itself.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Protocol

import trio
from hdrh.histogram import HdrHistogram

from load_tests.http import ConnectionLost, Endpoint, HttpConnection, HttpProtocolError, HttpResponse

LATENCY_US_MIN = 1
LATENCY_US_MAX = 60_000_000
LATENCY_SIGNIFICANT_DIGITS = 3
REQUESTS_PER_RUN_MAX = 5_000_000
CONNECTIONS_MAX = 1024
# Opening every connection and preparing its slot (a sign-in) must not take longer than this.
SETUP_TIMEOUT_S = 30.0
EARLY_RELEASE_S = 0.001
SUMMARY_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99_9": 99.9}


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request to send."""

    method: str
    path: str
    body: bytes = b""
    content_type: str | None = None


class Slot(Protocol):
    """What one connection worker sends, and how it judges each answer."""

    def build(self) -> Request:
        """Return the next request (fresh msgid etc.)."""

    def error_kind(self, response: HttpResponse) -> str | None:
        """Return None for a success, else a short error name to count (e.g. "http_503")."""


class Target(Protocol):
    """A kind of traffic: prepares one Slot per connection before the clock starts."""

    name: str

    async def open_slot(self, index: int, conn: HttpConnection) -> Slot:
        """Prepare slot `index` (e.g. sign a terminal in over `conn`); not measured."""


@dataclasses.dataclass(frozen=True, slots=True)
class OpenLoopConfig:
    """One open-loop run: `rate_per_s` for `duration_s` over `connections` keep-alive connections."""

    rate_per_s: float
    duration_s: float
    connections: int = 32
    timeout_s: float = 2.0
    drain_s: float = 3.0
    arrival: str = "uniform"  # "uniform" spacing, or "poisson" (exponential gaps from `seed`)
    seed: int = 1

    def __post_init__(self) -> None:
        assert self.rate_per_s > 0 and self.duration_s > 0, "rate and duration must be positive"
        assert 1 <= self.connections <= CONNECTIONS_MAX, f"connections must be 1..{CONNECTIONS_MAX}"
        assert self.request_count <= REQUESTS_PER_RUN_MAX, f"over {REQUESTS_PER_RUN_MAX} requests per run"
        assert self.arrival in ("uniform", "poisson"), f"unknown arrival {self.arrival!r}"

    @property
    def request_count(self) -> int:
        return max(1, round(self.rate_per_s * self.duration_s))


@dataclasses.dataclass
class RunResult:
    """The outcome of one run; `histogram` holds successful latencies in microseconds."""

    config: OpenLoopConfig
    histogram: HdrHistogram
    scheduled: int
    ok: int
    errors: Counter[str]
    elapsed_s: float
    generator_cpu_s: float

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def unfinished(self) -> int:
        """Requests neither answered nor failed when the run's time bound hit."""
        return self.scheduled - self.ok - self.error_count

    @property
    def error_ratio(self) -> float:
        """Errors and unfinished requests over all scheduled ones."""
        return (self.error_count + self.unfinished) / self.scheduled

    @property
    def achieved_rate_per_s(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def latency_ms(self) -> dict[str, float]:
        """p50/p90/p99/p99.9/max/mean latency in milliseconds (0 when nothing succeeded)."""
        if self.histogram.get_total_count() == 0:
            return {**{k: 0.0 for k in SUMMARY_PERCENTILES}, "max": 0.0, "mean": 0.0}
        out = {k: self.histogram.get_value_at_percentile(p) / 1000 for k, p in SUMMARY_PERCENTILES.items()}
        out["max"] = self.histogram.get_max_value() / 1000
        out["mean"] = self.histogram.get_mean_value() / 1000
        return out


def new_histogram() -> HdrHistogram:
    """A latency histogram: 1 µs .. 60 s at 3 significant digits."""
    return HdrHistogram(LATENCY_US_MIN, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)


def count_at_or_above(histogram: HdrHistogram, value_us: int) -> int:
    """Return how many recorded values are >= value_us (within the histogram's precision)."""
    return sum(item.count_at_value_iterated_to for item in histogram.get_recorded_iterator()
               if item.value_iterated_to >= value_us)


def intended_offsets_s(config: OpenLoopConfig) -> Iterator[float]:
    """Yield each request's intended send time, in seconds after the run's start."""
    if config.arrival == "uniform":
        for i in range(config.request_count):
            yield i / config.rate_per_s
        return
    rng = random.Random(config.seed)
    offset_s = 0.0
    for _ in range(config.request_count):
        yield offset_s
        offset_s += rng.expovariate(config.rate_per_s)


def require_loopback(endpoint: Endpoint) -> None:
    """Refuse any target that is not this machine: a load test must never leave loopback."""
    if endpoint.host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(endpoint.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"load tests only run against loopback, not {endpoint.host!r}")


class _Run:
    """Shared state of one run: the histogram and counters all workers write to."""

    def __init__(self, config: OpenLoopConfig) -> None:
        self.config = config
        self.histogram = new_histogram()
        self.ok = 0
        self.errors: Counter[str] = Counter()

    def record_ok(self, intended_s: float, done_s: float) -> None:
        latency_us = int((done_s - intended_s) * 1_000_000)
        self.histogram.record_value(min(max(latency_us, LATENCY_US_MIN), LATENCY_US_MAX))
        self.ok += 1


async def _worker(run: _Run, endpoint: Endpoint, target: Target, index: int,
                  intended: trio.MemoryReceiveChannel[float], *, task_status: trio.TaskStatus[None]) -> None:
    conn = await HttpConnection.connect(endpoint)
    slot = await target.open_slot(index, conn)
    task_status.started()
    try:
        async for intended_s in intended:
            if not conn.reusable:
                await conn.aclose()
                conn = await _reconnect(run, endpoint)
                if conn is None:
                    continue
            await _one_request(run, conn, slot, intended_s)
    finally:
        await conn.aclose()


async def _reconnect(run: _Run, endpoint: Endpoint) -> HttpConnection | None:
    try:
        with trio.fail_after(run.config.timeout_s):
            return await HttpConnection.connect(endpoint)
    except (OSError, trio.TooSlowError):
        run.errors["connect"] += 1
        return None


async def _one_request(run: _Run, conn: HttpConnection, slot: Slot, intended_s: float) -> None:
    request = slot.build()
    send_s = trio.current_time()
    response = None
    with trio.move_on_after(run.config.timeout_s):
        try:
            response = await conn.request(request.method, request.path, request.body, request.content_type)
        except (ConnectionLost, HttpProtocolError, trio.BrokenResourceError, OSError):
            run.errors["io"] += 1
            return
    if response is None:
        run.errors["timeout"] += 1
        return
    kind = slot.error_kind(response)
    if kind is None:
        run.record_ok(min(intended_s, send_s), trio.current_time())
    else:
        run.errors[kind] += 1


async def release_on_schedule(config: OpenLoopConfig, start_s: float, send: trio.MemorySendChannel[float]) -> None:
    """Send each request's intended time (trio clock) into `send` when it is due; then close it."""
    # Release every request whose time has come, then sleep until the next one: when the loop is
    # behind, a whole batch goes out at once instead of being spread (and under-counted) later.
    # The OS timer behind trio's sleep has millisecond granularity and wakes late, so a request is
    # released up to EARLY_RELEASE_S before its time; the worker then measures from the earlier
    # of the intended and the actual send time, so an early send never hides any waiting.
    async with send:
        for offset_s in intended_offsets_s(config):
            intended_s = start_s + offset_s
            if intended_s - EARLY_RELEASE_S > trio.current_time():
                await trio.sleep_until(intended_s - EARLY_RELEASE_S)
            send.send_nowait(intended_s)


async def run_open_loop(endpoint: Endpoint, target: Target, config: OpenLoopConfig,
                        on_clock_start: Callable[[], None] | None = None) -> RunResult:
    """Run one open-loop load test against `endpoint` (loopback only) and return its result.

    Slots are prepared (connections opened, terminals signed in) before the clock starts. The run
    ends when every scheduled request is answered or failed, or at `duration + drain` seconds.
    `on_clock_start`, if given, is called once the slots are ready, just before the first request
    is due: a caller measuring the server's CPU starts there, so slot preparation is not counted.
    """
    require_loopback(endpoint)
    run = _Run(config)
    send, receive = trio.open_memory_channel[float](config.request_count)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(SETUP_TIMEOUT_S):
            for index in range(config.connections):
                await nursery.start(_worker, run, endpoint, target, index, receive.clone())
        await receive.aclose()
        if on_clock_start is not None:
            on_clock_start()
        cpu_start_s = time.process_time()
        start_s = trio.current_time()
        nursery.cancel_scope.deadline = start_s + config.duration_s + config.drain_s
        nursery.start_soon(release_on_schedule, config, start_s, send)
    elapsed_s = max(trio.current_time() - start_s, config.duration_s)
    cpu_s = time.process_time() - cpu_start_s
    return RunResult(config, run.histogram, config.request_count, run.ok, run.errors, elapsed_s, cpu_s)
