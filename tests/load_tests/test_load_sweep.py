"""The sweep's search: down the ladder when the first step fails, bisection, and the probe step."""

from __future__ import annotations

import os

import trio
from load_tests_support import start_baseline_in

from load_tests.http import Endpoint
from load_tests.sweep import SweepConfig, ensure_step, process_cpu_s, rates_below, rates_to_try, step_at, sweep
from load_tests.targets import FixedTarget

SERVICE_S = 0.010  # one request at a time, 10 ms each: the server's capacity is 100/s


class InProcessServer:
    """Stands in for a ServerProcess: an in-process server, whose CPU is this process's."""

    name = "in-process"

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def cpu_s(self) -> float:
        return process_cpu_s(os.getpid())

    def require_running(self) -> None:
        """The server runs in this process's nursery: it is running while the test is."""


def test_ladders() -> None:
    config = SweepConfig(start_rate_per_s=100, step_factor=2, steps_max=4, rate_min_per_s=10)
    assert rates_to_try(config) == [100, 200, 400, 800]
    assert rates_below(config) == [50, 25, 12]


async def test_sweep_goes_down_when_the_first_step_fails_and_probes_on_request() -> None:
    lock = trio.Lock()

    async def one_at_a_time() -> None:
        async with lock:
            await trio.sleep(SERVICE_S)

    # 160/s and 107/s exceed the 100/s the server can do, so their queues grow through the step
    # and p99 leaves the bound; 71/s is served without queueing.
    config = SweepConfig(start_rate_per_s=160, step_factor=1.5, steps_max=3, refine_steps=0, rate_min_per_s=50,
                         seconds_per_step=1.0, connections=8, p99_ms_max=30.0, warmup_s=0.2, pause_s=0.05)
    lines: list[str] = []
    async with trio.open_nursery() as nursery:
        server = InProcessServer(await start_baseline_in(nursery, one_at_a_time))
        result = await sweep(server, FixedTarget(), config, log=lines.append)
        probe = await ensure_step(server, FixedTarget(), result, 35, config, log=lines.append)
        again = await ensure_step(server, FixedTarget(), result, 71, config, log=lines.append)
        nursery.cancel_scope.cancel()
    rates = [step.result.config.rate_per_s for step in result.steps]
    assert rates == [160, 107, 71, 35]
    assert [step.passed for step in result.steps] == [False, False, True, True]
    assert result.capacity_rate_per_s == 71
    assert probe is step_at(result, 35) and again is step_at(result, 71)
    assert len(lines) == 4 and "FAIL" in lines[0] and "PASS" in lines[2]
    # The probe does not move the capacity, and its requests were all served well inside the bound.
    assert probe.result.ok == probe.result.scheduled == 35
    assert result.cpu_us_per_request is not None and result.cpu_us_per_request > 0
