"""Rate sweeps against a server subprocess: capacity and CPU cost per request.

The server runs in its own process, pinned to one core when the machine has two or more, with the
generator pinned to another, so the two never steal each other's cycles. Its CPU time comes from
/proc/<pid>/stat (utime + stime, all threads), so CPU µs per request is the server's own cost,
independent of how busy the generator is.

Capacity = the highest offered rate whose p99 latency (from intended send time) is at most
`p99_ms_max` with fewer than `error_ratio_max` errors. Rates rise geometrically until a step
fails, then a few bisection steps between the last pass and the first failure refine it.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shutil
import statistics
import socket
import subprocess
import sys
from collections.abc import Callable

import trio

from load_tests.http import ConnectionLost, Endpoint, HttpConnection, HttpProtocolError
from load_tests.openloop import OpenLoopConfig, RunResult, Target, run_open_loop

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
READY_POLL_S = 0.1
_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True)
class Pinning:
    """Which CPU the server and the generator run on (None: not pinned)."""

    server_cpu: int | None
    generator_cpu: int | None


def choose_pinning() -> Pinning:
    """Server on the first allowed CPU, generator on the second; no pinning with one CPU."""
    if not hasattr(os, "sched_getaffinity"):
        return Pinning(None, None)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Pinning(None, None)
    return Pinning(cpus[0], cpus[1])


def pin_process_threads(pid: int, cpu: int) -> None:
    """Pin every thread of `pid` (those that exist now; later ones inherit) to `cpu`."""
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), {cpu})
        except ProcessLookupError:
            continue  # a thread that ended between the listing and the call


def process_cpu_s(pid: int) -> float:
    """utime + stime of `pid` (all its threads) in seconds, from /proc/<pid>/stat."""
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15 overall.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS_PER_S


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """A server subprocess: its endpoint, pid and CPU counter; stopped on exit of `async with`."""

    def __init__(self, name: str, argv: list[str], pinning: Pinning, cwd: pathlib.Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.pinning = pinning
        self.cwd = cwd
        self.process: subprocess.Popen[str] | None = None
        self.endpoint: Endpoint | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "server not started"
        return self.process.pid

    def cpu_s(self) -> float:
        return process_cpu_s(self.pid)

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, text=True)
        if self.pinning.server_cpu is not None:
            pin_process_threads(self.pid, self.pinning.server_cpu)

    def pin_again(self) -> None:
        """Re-pin once ready: threads the server started during boot may predate the first pin."""
        if self.pinning.server_cpu is not None:
            pin_process_threads(self.pid, self.pinning.server_cpu)

    def stop(self) -> str:
        """Terminate the server (SIGTERM, then SIGKILL) and return its stderr tail."""
        if self.process is None:
            return ""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        stderr = self.process.stderr.read() if self.process.stderr else ""
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return stderr[-2000:]

    def require_running(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.stop()}")


async def start_baseline(pinning: Pinning) -> ServerProcess:
    """Start `python -m load_tests.baseline --port 0` and wait for its "listening on" line."""
    server = ServerProcess("baseline", [sys.executable, "-m", "load_tests.baseline", "--port", "0"], pinning)
    server.start()
    assert server.process is not None and server.process.stdout is not None
    stdout = server.process.stdout
    with trio.fail_after(READY_TIMEOUT_S):
        line = await trio.to_thread.run_sync(stdout.readline, abandon_on_cancel=True)
    match = re.search(r"listening on ([\d.]+):(\d+)", line)
    if match is None:
        server.require_running()
        raise RuntimeError(f"baseline printed {line!r} instead of its port")
    server.endpoint = Endpoint(match.group(1), int(match.group(2)))
    server.pin_again()
    return server


def gateway_command() -> list[str]:
    """The `yibao-gateway` console script next to this interpreter (or on PATH)."""
    beside = pathlib.Path(sys.executable).with_name("yibao-gateway")
    found = str(beside) if beside.exists() else shutil.which("yibao-gateway")
    if found is None:
        raise RuntimeError("yibao-gateway is not installed (pip install -e .)")
    return [found]


def retarget_listeners(config_path: pathlib.Path, data_port: int, admin_port: int) -> None:
    """Rewrite gateway.toml's [listen] data/admin addresses to the given loopback ports."""
    text = config_path.read_text(encoding="utf-8")
    text, data_count = re.subn(r'(?m)^data\s*=\s*"[^"]*"', f'data = "127.0.0.1:{data_port}"', text)
    text, admin_count = re.subn(r'(?m)^admin\s*=\s*"[^"]*"', f'admin = "127.0.0.1:{admin_port}"', text)
    if data_count != 1 or admin_count != 1:
        raise RuntimeError(f"{config_path}: expected one [listen] data and one admin line")
    config_path.write_text(text, encoding="utf-8")


async def start_gateway(region_dir: pathlib.Path, pinning: Pinning) -> ServerProcess:
    """Start `yibao-gateway serve` on free loopback ports and wait until /readyz answers 200."""
    config_path = region_dir / "gateway.toml"
    retarget_listeners(config_path, free_port(), free_port())
    data_port = int(re.search(r'data = "127\.0\.0\.1:(\d+)"', config_path.read_text()).group(1))
    server = ServerProcess("gateway", [*gateway_command(), "serve", "--config", str(config_path)], pinning)
    server.start()
    server.endpoint = Endpoint("127.0.0.1", data_port)
    with trio.fail_after(READY_TIMEOUT_S):
        while not await _ready(server.endpoint):
            server.require_running()
            await trio.sleep(READY_POLL_S)
    server.pin_again()
    return server


async def _ready(endpoint: Endpoint) -> bool:
    try:
        conn = await HttpConnection.connect(endpoint)
    except OSError:
        return False
    try:
        return (await conn.request("GET", "/readyz")).status == 200
    except (OSError, trio.BrokenResourceError, ConnectionLost, HttpProtocolError):
        return False
    finally:
        await conn.aclose()


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """How to sweep: geometric rates from `start_rate_per_s`, `seconds_per_step` each."""

    start_rate_per_s: float = 100.0
    step_factor: float = 1.5
    rate_min_per_s: float = 5.0
    steps_max: int = 12
    refine_steps: int = 2
    seconds_per_step: float = 4.0
    connections: int = 32
    p99_ms_max: float = 10.0
    error_ratio_max: float = 0.01
    warmup_s: float = 1.0
    pause_s: float = 0.5
    arrival: str = "uniform"
    seed: int = 1


@dataclasses.dataclass
class Step:
    """One sweep step: the generator's result and the server's CPU seconds over it."""

    result: RunResult
    server_cpu_s: float
    passed: bool

    @property
    def server_cpu_us_per_request(self) -> float | None:
        return self.server_cpu_s / self.result.ok * 1e6 if self.result.ok else None


@dataclasses.dataclass
class Sweep:
    """All steps of one server's sweep (in the order run) and the capacity found."""

    name: str
    steps: list[Step]
    capacity_rate_per_s: float

    @property
    def cpu_us_per_request(self) -> float | None:
        """The median of the passing steps' server CPU µs per request (all steps if none passed).

        Passing steps only: in an overloaded step the server also burns CPU on requests that end
        unfinished, which is queueing waste rather than the cost of a request. The median keeps
        one step disturbed by another process on the machine from moving the figure.
        """
        passed = [s.server_cpu_us_per_request for s in self.steps if s.passed]
        costs = [c for c in (passed or [s.server_cpu_us_per_request for s in self.steps]) if c is not None]
        return statistics.median(costs) if costs else None


def step_passes(result: RunResult, config: SweepConfig) -> bool:
    """The capacity criterion: p99 within bound and errors (incl. unfinished) under the ratio."""
    return result.latency_ms()["p99"] <= config.p99_ms_max and result.error_ratio < config.error_ratio_max


async def run_step(server: ServerProcess, target: Target, rate_per_s: float, seconds: float,
                   config: SweepConfig) -> Step:
    """One open-loop run at `rate_per_s`, with the server's CPU measured over it.

    The CPU window opens when the generator's clock starts (after its connections are open and
    its terminals signed in) and closes when the run ends, drain included.
    """
    server.require_running()
    assert server.endpoint is not None
    run_config = OpenLoopConfig(rate_per_s, seconds, config.connections, arrival=config.arrival, seed=config.seed)
    cpu_at_start_s: list[float] = []
    result = await run_open_loop(server.endpoint, target, run_config,
                                 on_clock_start=lambda: cpu_at_start_s.append(server.cpu_s()))
    cpu_s = server.cpu_s() - cpu_at_start_s[0]
    return Step(result, cpu_s, step_passes(result, config))


def rates_to_try(config: SweepConfig) -> list[float]:
    """The geometric ladder of offered rates, upwards from the start rate."""
    return [round(config.start_rate_per_s * config.step_factor**i) for i in range(config.steps_max)]


def rates_below(config: SweepConfig) -> list[float]:
    """The ladder downwards from the start rate (exclusive), to `rate_min_per_s`."""
    rates = []
    rate_per_s = config.start_rate_per_s / config.step_factor
    while rate_per_s >= config.rate_min_per_s and len(rates) < config.steps_max:
        rates.append(round(rate_per_s))
        rate_per_s /= config.step_factor
    return rates


class _Stepper:
    """Runs and logs the steps of one sweep, keeping them in the order run."""

    def __init__(self, server: ServerProcess, target: Target, config: SweepConfig,
                 log: Callable[[str], None]) -> None:
        self.server, self.target, self.config, self.log = server, target, config, log
        self.steps: list[Step] = []

    async def run(self, rate_per_s: float) -> Step:
        await trio.sleep(self.config.pause_s)
        step = await run_step(self.server, self.target, rate_per_s, self.config.seconds_per_step, self.config)
        self.steps.append(step)
        self.log(describe_step(self.target.name, step))
        return step



async def sweep(server: ServerProcess, target: Target, config: SweepConfig,
                log: Callable[[str], None] = print) -> Sweep:
    """Sweep `target` against `server`: warm up, climb the ladder until a step fails, refine.

    When the very first step fails the ladder goes down instead, until a step passes or the rate
    reaches `rate_min_per_s`, so a slow server still gets a capacity rather than 0.

    Returns:
        The Sweep; capacity 0 when no step passed.
    """
    await run_step(server, target, config.start_rate_per_s, config.warmup_s, config)
    stepper = _Stepper(server, target, config, log)
    for rate_per_s in rates_to_try(config):
        if not (await stepper.run(rate_per_s)).passed:
            break
    if not stepper.steps[0].passed:
        for rate_per_s in rates_below(config):
            if (await stepper.run(rate_per_s)).passed:
                break
    for _ in range(config.refine_steps):
        low, high = _bracket(stepper.steps)
        if low is None or high is None or high / low < 1.05:
            break
        await stepper.run(round((low * high) ** 0.5))
    passed = [step.result.config.rate_per_s for step in stepper.steps if step.passed]
    return Sweep(target.name, stepper.steps, max(passed, default=0.0))


def step_at(result: Sweep, rate_per_s: float) -> Step | None:
    """The last step of `result` offered `rate_per_s` (within 1 %), if any."""
    near = [s for s in result.steps if abs(s.result.config.rate_per_s - rate_per_s) <= 0.01 * rate_per_s]
    return near[-1] if near else None


async def ensure_step(server: ServerProcess, target: Target, result: Sweep, rate_per_s: float,
                      config: SweepConfig, log: Callable[[str], None] = print) -> Step | None:
    """Make sure `result` holds a step at `rate_per_s` (run one if not); None for a rate <= 0.

    Used for the half-floor-capacity probe: the floor's capacity is known only after its sweep.
    The new step never changes the sweep's capacity: it is a measurement at a chosen rate.
    """
    if rate_per_s <= 0:
        return None
    found = step_at(result, rate_per_s)
    if found is not None:
        return found
    stepper = _Stepper(server, target, config, log)
    step = await stepper.run(rate_per_s)
    result.steps.append(step)
    return step


def _bracket(steps: list[Step]) -> tuple[float | None, float | None]:
    passed = [s.result.config.rate_per_s for s in steps if s.passed]
    low = max(passed, default=None)
    failed = [s.result.config.rate_per_s for s in steps if not s.passed]
    above = [rate for rate in failed if low is None or rate > low]
    return low, min(above, default=None)


def describe_step(name: str, step: Step) -> str:
    """One log line for a step."""
    r = step.result
    lat = r.latency_ms()
    cpu = step.server_cpu_us_per_request
    return (f"{name:>13} target {r.config.rate_per_s:7.0f}/s achieved {r.achieved_rate_per_s:7.0f}/s "
            f"p50 {lat['p50']:7.2f} p99 {lat['p99']:8.2f} max {lat['max']:8.2f} ms "
            f"errors {r.error_count + r.unfinished:5d} cpu {cpu or 0:6.0f} us/req {'PASS' if step.passed else 'FAIL'}")
