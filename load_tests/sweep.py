"""Rate sweeps: capacity within a latency bound, and the server's CPU cost per request.

Capacity = the highest offered rate whose p99 latency (from intended send time) is at most
`p99_ms_max` with fewer than `error_ratio_max` errors. Rates rise geometrically until a step
fails (or fall, when the very first step fails), then bisection steps between the last pass and
the first failure refine it.

Several series (a server and its traffic) are swept together, interleaved rung by rung: the
floor's step at 225/s runs next to the gateway's step at 225/s, so both see the same machine
state even when other work on the machine comes and goes during the run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import trio

from load_tests.openloop import OpenLoopConfig, RunResult, Target, run_open_loop
from load_tests.servers import ServerProcess


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """How to sweep: geometric rates from `start_rate_per_s`, `seconds_per_step` each."""

    start_rate_per_s: float = 100.0
    step_factor: float = 1.5
    rate_min_per_s: float = 5.0
    steps_max: int = 12
    refine_steps: int = 2
    failure_retries: int = 1
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


@dataclasses.dataclass
class Series:
    """One server and the traffic swept against it, with its steps in the order run."""

    server: ServerProcess
    target: Target
    steps: list[Step] = dataclasses.field(default_factory=list)
    # Set when the sweep ends; steps run later (probes) do not change it.
    capacity_rate_per_s: float = 0.0

    async def run(self, rate_per_s: float, config: SweepConfig, log: Callable[[str], None]) -> Step:
        """Run, keep and log one step at `rate_per_s` (after the configured pause).

        A failing step is run again `config.failure_retries` times and the last attempt returned:
        one burst of other work on a shared machine must not end a ladder. Every attempt is kept.
        """
        for _attempt in range(1 + config.failure_retries):
            await trio.sleep(config.pause_s)
            step = await run_step(self.server, self.target, rate_per_s, config.seconds_per_step, config)
            self.steps.append(step)
            log(describe_step(self.target.name, step))
            if step.passed:
                break
        return step

    def result(self) -> Sweep:
        """A snapshot: the steps so far and the capacity the sweep found."""
        return Sweep(self.target.name, list(self.steps), self.capacity_rate_per_s)


async def sweep(series: list[Series], config: SweepConfig, log: Callable[[str], None] = print) -> list[Sweep]:
    """Sweep every series, interleaved: warm up, climb the ladder until a step fails, refine.

    Each rung runs once per series still climbing, in the order given. A series whose very
    first step fails climbs once more after the others; failing again, it goes down the ladder
    instead, until a step passes or the rate reaches `rate_min_per_s`, so a slow server still
    gets a capacity rather than 0.

    Returns:
        One Sweep per series, in order; capacity 0 when no step of it passed.
    """
    for one in series:
        await run_step(one.server, one.target, config.start_rate_per_s, config.warmup_s, config)
    await _climb(list(series), config, log)
    # The climb stops at a series' first failing rung, so no pass at all means the first failed.
    # That first rung ran at the very start, where whatever else was starting on the machine
    # could fail it (a floor of 6,000/s once failed 100/s twice there): such a series climbs once
    # more, after the others, before it is sent down the ladder.
    await _climb([one for one in series if not any(step.passed for step in one.steps)], config, log)
    descending = [one for one in series if not any(step.passed for step in one.steps)]
    for rate_per_s in rates_below(config):
        for one in list(descending):
            if (await one.run(rate_per_s, config, log)).passed:
                descending.remove(one)
        if not descending:
            break
    for _ in range(config.refine_steps):
        for one in series:
            low, high = _bracket(one.steps)
            if low is not None and high is not None and high / low >= 1.05:
                await one.run(round((low * high) ** 0.5), config, log)
    for one in series:
        one.capacity_rate_per_s = max((s.result.config.rate_per_s for s in one.steps if s.passed), default=0.0)
    return [one.result() for one in series]


async def _climb(climbing: list[Series], config: SweepConfig, log: Callable[[str], None]) -> None:
    """Run the ladder upwards, rung by rung for every series still climbing, until each fails one."""
    for rate_per_s in rates_to_try(config):
        for one in list(climbing):
            if not (await one.run(rate_per_s, config, log)).passed:
                climbing.remove(one)
        if not climbing:
            break


def step_at(steps: list[Step], rate_per_s: float) -> Step | None:
    """The last of `steps` offered `rate_per_s` (within 1 %), if any."""
    near = [s for s in steps if abs(s.result.config.rate_per_s - rate_per_s) <= 0.01 * rate_per_s]
    return near[-1] if near else None


async def ensure_step(one: Series, rate_per_s: float, config: SweepConfig,
                      log: Callable[[str], None] = print) -> Step | None:
    """Make sure `one` holds a step at `rate_per_s` (run one if not); None for a rate <= 0.

    Used for the half-floor-capacity probe: the floor's capacity is known only after the sweep.
    The probe is a measurement at a chosen rate; it does not change the capacity found.
    """
    if rate_per_s <= 0:
        return None
    return step_at(one.steps, rate_per_s) or await one.run(rate_per_s, config, log)


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
