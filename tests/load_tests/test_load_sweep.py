"""The sweep's search: down the ladder when the first step fails, bisection, and the probe step."""

from __future__ import annotations

import os

import trio
from load_tests_support import start_baseline_in

from load_tests.http import Endpoint
from load_tests.servers import cpu_ticks, process_cpu_s, steal_share
from load_tests.sweep import Series, SweepConfig, ensure_step, rates_below, rates_to_try, step_at, sweep
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


async def test_series_are_interleaved_and_a_slow_one_goes_down_the_ladder() -> None:
    lock = trio.Lock()

    async def one_at_a_time() -> None:
        async with lock:
            await trio.sleep(SERVICE_S)

    # The slow server: 160/s and 107/s exceed the 100/s it can do, so its queue grows through the
    # step and p99 leaves the bound; 71/s is served without queueing. The fast one passes both rungs.
    config = SweepConfig(start_rate_per_s=160, step_factor=1.5, steps_max=2, refine_steps=0, rate_min_per_s=50,
                         failure_retries=1, seconds_per_step=1.0, connections=8, p99_ms_max=30.0, warmup_s=0.2,
                         pause_s=0.05)
    lines: list[str] = []
    async with trio.open_nursery() as nursery:
        fast = Series(InProcessServer(await start_baseline_in(nursery)), FixedTarget("fast"))
        slow = Series(InProcessServer(await start_baseline_in(nursery, one_at_a_time)), FixedTarget("slow"))
        fast_sweep, slow_sweep = await sweep([fast, slow], config, log=lines.append)
        probe = await ensure_step(slow, 35, config, log=lines.append)
        again = await ensure_step(slow, 71, config, log=lines.append)
        nursery.cancel_scope.cancel()
    order = [(line.split()[0], int(line.split()[2].removesuffix("/s"))) for line in lines]
    # Each failing rung of the slow server is tried twice before it counts as failed; having failed
    # its first rung, it climbs once more after the fast one before it goes down the ladder.
    assert order == [("fast", 160), ("slow", 160), ("slow", 160), ("fast", 240), ("slow", 160), ("slow", 160),
                     ("slow", 107), ("slow", 107), ("slow", 71), ("slow", 35)]
    assert [step.passed for step in fast_sweep.steps] == [True, True]
    assert [step.passed for step in slow_sweep.steps] == [False] * 6 + [True]
    assert (fast_sweep.capacity_rate_per_s, slow_sweep.capacity_rate_per_s) == (240, 71)
    # The probe ran once, at the new rate only; it is kept with the series but is not a sweep step.
    assert probe is step_at(slow.steps, 35) and again is step_at(slow.steps, 71) and len(slow.steps) == 8
    assert slow.result().capacity_rate_per_s == 71 and len(slow.result().steps) == 8
    assert probe.passed and probe.result.ok == probe.result.scheduled == 35
    assert all(step.server_cpu_us_per_request > 0 for step in slow.steps if step.result.ok)


def test_the_hosts_steal_is_read_from_proc_stat() -> None:
    stat = "cpu  100 5 40 800 10 1 4 50 7 0\ncpu0 50 2 20 400 5 0 2 25 3 0\n"
    assert cpu_ticks(stat) == (100 + 5 + 40 + 800 + 10 + 1 + 4 + 50, 50)
    assert steal_share((1000, 10), (2000, 110)) == 0.1
    assert steal_share((1000, 10), (1000, 10)) == 0.0
    total, stolen = cpu_ticks()
    assert total >= stolen >= 0
