"""Goodput under overload: a real gateway (one core) offered six times what it completes.

The full campaign (S, then 4x and 8x S for 20 s each, docs/benchmarks.md "Overload") is the slow
test below (`make soak`) and `make bench-overload`; the short one takes a few seconds and holds generous bounds, so that a busy shared machine does not
make it fail, while a gateway that serves every request it reads (in arrival order, with no
admission by queue time) fails it by far: its admitted requests queue for as long as the
connections take to drain, and the refusals it makes when its in-flight cap is full cost the
settlements their CPU (goodput fell to 0.35-0.47 of the calibration, p50 0.6-0.8 s).

Calibration: CALIBRATION_CONNECTIONS connections send back to back for a moment; what they
complete per second is the gateway's throughput T right now on this machine. Then T x OFFERED
is offered open-loop over OVERLOAD_CONNECTIONS connections.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
from typing import Iterator

import pytest

from load_tests.campaign import CampaignConfig, Step, describe, measured_run, run_campaign
from load_tests.gateway_target import GatewayTarget
from load_tests.overload import LoadPool, PoolConfig
from load_tests.servers import Pinning, ServerProcess, choose_pinning, gateway_command, start_gateway

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU pinning (Linux)")

CALIBRATION_CONNECTIONS = 8
CALIBRATION_S = 2.0
CALIBRATION_RATE_PER_S = 3000.0
OVERLOAD_CONNECTIONS = 512
OFFERED = 6.0
OVERLOAD_S = 4.0
# The goals are 0.9 of the sustainable rate and p99 100 ms; these bounds leave room for a
# machine shared with other work, where the gateway may get a fraction of its core, in slices,
# that changes from one second to the next, and the generator wakes late. So goodput is also
# judged per CPU second the gateway got: settlements per CPU second under overload against the
# same at calibration (a gateway that spends its CPU on refusals and on requests nobody waits
# for any more fails that whatever the machine does). A failing attempt is run once more.
GOODPUT_SHARE_MIN = 0.3
CPU_EFFICIENCY_SHARE_MIN = 0.3
ADMITTED_P50_MS_MAX = 600.0
ADMITTED_P99_MS_MAX = 1500.0
ATTEMPTS = 2


@contextlib.contextmanager
def generator_pinned(pinning: Pinning) -> Iterator[None]:
    """Run this process (the generator) on its own core for the test, as the bench does."""
    before = os.sched_getaffinity(0)
    if pinning.generator_cpu is not None:
        os.sched_setaffinity(0, {pinning.generator_cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def init_small_region(region: pathlib.Path) -> None:
    done = subprocess.run([*gateway_command(), "init", "--out", str(region), "--profile", "small", "--seed", "3"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


async def test_goodput_holds_at_six_times_what_the_gateway_completes(tmp_path: pathlib.Path) -> None:
    region = tmp_path / "region"
    init_small_region(region)
    pinning = choose_pinning()
    server = await start_gateway(region, pinning)
    try:
        with generator_pinned(pinning):
            target = GatewayTarget(region, "2102", seed=3)
            for attempt in range(1, ATTEMPTS + 1):
                calibration, overload = await calibrate_then_overload(server, target)
                print(describe("calibrate", calibration, None))
                print(describe(f"{OFFERED:g}x", overload, None), dict(overload.result.errors), overload.result.shed)
                problem = check(calibration, overload)
                if problem is None:
                    break
                print(f"attempt {attempt}: {problem}")
    finally:
        server.stop()
    assert problem is None, problem


async def calibrate_then_overload(server: ServerProcess, target: GatewayTarget) -> tuple[Step, Step]:
    async with LoadPool(server.endpoint, target, PoolConfig(CALIBRATION_CONNECTIONS, 8)) as pool:
        pool.build_ahead(2000, CALIBRATION_S)
        # Far more than it completes, over few connections: each sends back to back.
        calibration = await measured_run(pool, server, CALIBRATION_RATE_PER_S, CALIBRATION_S, drain_s=1.0)
    throughput = calibration.result.goodput_per_s
    async with LoadPool(server.endpoint, target, PoolConfig(OVERLOAD_CONNECTIONS, 32)) as pool:
        pool.build_ahead(throughput, OVERLOAD_S)
        overload = await measured_run(pool, server, OFFERED * max(throughput, 1.0), OVERLOAD_S)
    return calibration, overload


def check(calibration: Step, overload: Step) -> str | None:
    """None when the overload step meets the bounds; else what it missed."""
    result = overload.result
    throughput = calibration.result.goodput_per_s
    p50_ms, p99_ms = result.p_ms(result.from_send, 50), result.p_ms(result.from_send, 99)
    if throughput <= 0 or result.errors:
        # Every answer must be a settlement or a proper shed (signed 429, Retry-After).
        return f"calibration {throughput}/s, errors {dict(calibration.result.errors)} {dict(result.errors)}"
    if result.goodput_per_s < GOODPUT_SHARE_MIN * throughput:
        return f"goodput {result.goodput_per_s:.0f}/s under {GOODPUT_SHARE_MIN} x {throughput:.0f}/s"
    efficiency = (result.ok / overload.server_cpu_s) / (calibration.result.ok / calibration.server_cpu_s)
    if efficiency < CPU_EFFICIENCY_SHARE_MIN:
        return f"settlements per CPU second under overload {efficiency:.2f} of calibration's"
    if p50_ms > ADMITTED_P50_MS_MAX or p99_ms > ADMITTED_P99_MS_MAX:
        return f"admitted p50 {p50_ms:.0f} ms, p99 {p99_ms:.0f} ms"
    if not result.shed_count:
        return "nothing was shed"
    return None


@pytest.mark.slow
async def test_overload_campaign(tmp_path: pathlib.Path) -> None:
    """S, then 4x and 8x S for 20 s each (load_tests/campaign.py), judged by the short test's
    bounds with S for the calibration; the table is printed and written under tmp_path."""
    report = await run_campaign(CampaignConfig(), tmp_path)
    assert report["sustainable_rate_per_s"] > 0, "no rate met the sustainable bound"
    for row in report["overload"]:
        admitted = row["admitted_ms"]
        assert not row["errors"], row["errors"]
        assert row["goodput_share_of_sustainable"] >= GOODPUT_SHARE_MIN, row
        assert admitted["p50"] <= ADMITTED_P50_MS_MAX and admitted["p99"] <= ADMITTED_P99_MS_MAX, row
        assert sum(row["shed"].values()) > 0, row
