"""The overload campaign: the gateway's sustainable 2102 rate S, then several multiples of S.

Method (docs/benchmarks.md, "Overload"):

1. A pengzhou region (enough pharmacy terminals for hundreds of connections) and the gateway,
   pinned to one core, the generator to the other (load_tests/servers.py). One pool of load
   connections (load_tests/overload.py) serves every step.
2. **Sustainable rate S**: offered rates rise geometrically; S is the highest that passed: at
   least 99 % of requests settled (infcode 0) with p99 from their due time within
   `sustainable_p99_ms` (10 ms, the bench's capacity bound). A failing step is run once more.
   The gateway's CPU per settlement at S is kept as the cost of a settlement.
3. **Overload**: each multiple of S (4 and 8) is offered for `seconds`. Goodput is settlements
   per second; admitted p99 is measured from each request's send; the shed answers are counted
   and checked (signed OVERLOADED Frame, 429/503, Retry-After).
4. **Cost of a shed answer**: the gateway's CPU over an overload step, less the settlements'
   share at S's cost per settlement, divided by the shed answers. An estimate: a settlement in
   a large batch costs less than at S, so the shed cost is if anything overstated.

Goals (the issue): goodput >= 90 % of S, admitted p99 <= 100 ms, shed cost <= 25 % of a settlement.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import tempfile
import time
from typing import Any, Callable

import trio

from load_tests.cli import init_region, pin_generator
from load_tests.gateway_target import GatewayTarget
from load_tests.overload import DRAIN_S, LoadPool, OverloadResult, PoolConfig
from load_tests.report import machine_facts
from load_tests.servers import Pinning, ServerProcess, choose_pinning, start_gateway

SCHEMA = "yibao-load/overload/v1"
GOODPUT_SHARE_MIN = 0.9
ADMITTED_P99_MS_MAX = 100.0
SHED_COST_SHARE_MAX = 0.25
SETTLED_SHARE_MIN = 0.99
PAUSE_S = 1.0
RATE_MIN_PER_S = 10.0


@dataclasses.dataclass(frozen=True)
class CampaignConfig:
    """What to run: the ladder to find S, then `multiples` of S for `seconds` each."""

    seconds: float = 20.0
    multiples: tuple[float, ...] = (4.0, 8.0)
    connections: int = 512
    sessions: int = 64
    start_rate_per_s: float = 100.0
    step_factor: float = 1.25
    steps_max: int = 16
    step_seconds: float = 3.0
    sustainable_p99_ms: float = 10.0
    sustainable_per_s: float | None = None   # skip the ladder: S as given
    profile: str = "pengzhou"
    seed: int = 1


@dataclasses.dataclass
class Step:
    """One run and the gateway's CPU seconds over it."""

    result: OverloadResult
    server_cpu_s: float

    @property
    def cpu_us_per_ok(self) -> float | None:
        return self.server_cpu_s / self.result.ok * 1e6 if self.result.ok else None

    def row(self) -> dict[str, Any]:
        row = self.result.summary()
        row["server_cpu_s"] = round(self.server_cpu_s, 3)
        row["server_cpu_share"] = round(self.server_cpu_s / self.result.elapsed_s, 3)
        return row


async def measured_run(pool: LoadPool, server: ServerProcess, rate_per_s: float, seconds: float,
                       drain_s: float = DRAIN_S) -> Step:
    """One run of `pool` with the server's CPU measured from the first due request to the end."""
    server.require_running()
    cpu_at_start_s: list[float] = []
    result = await pool.run(rate_per_s, seconds, drain_s,
                            on_clock_start=lambda: cpu_at_start_s.append(server.cpu_s()))
    return Step(result, server.cpu_s() - cpu_at_start_s[0])


def sustainable(step: Step, p99_ms_max: float) -> bool:
    """The ladder's criterion: nearly everything settled, with p99 from due time within bound."""
    result = step.result
    return result.ok_share >= SETTLED_SHARE_MIN and result.p_ms(result.from_due, 99) <= p99_ms_max


async def find_sustainable(pool: LoadPool, server: ServerProcess, config: CampaignConfig,
                           log: Callable[[str], None]) -> tuple[float, list[Step]]:
    """Climb the ladder from the start rate (or, when that fails, walk down it until a step
    passes); return S (0 when nothing passed) and every step run."""
    steps: list[Step] = []

    async def passes(rate_per_s: float) -> bool:
        for _attempt in range(2):
            pool.build_ahead(rate_per_s, config.step_seconds)
            step = await measured_run(pool, server, rate_per_s, config.step_seconds)
            steps.append(step)
            passed = sustainable(step, config.sustainable_p99_ms)
            log(describe("ladder", step, passed))
            await _pause()
            if passed:
                return True
        return False

    best = 0.0
    for index in range(config.steps_max):
        rate_per_s = round(config.start_rate_per_s * config.step_factor**index)
        if not await passes(rate_per_s):
            break
        best = rate_per_s
    for index in range(1, config.steps_max if not best else 0):
        rate_per_s = round(config.start_rate_per_s / config.step_factor**index)
        if rate_per_s < RATE_MIN_PER_S:
            break
        if await passes(rate_per_s):
            best = rate_per_s
            break
    return best, steps


def shed_cost_us(step: Step, settle_cpu_us: float) -> float | None:
    """The gateway's CPU per shed answer over `step`, settlements counted at `settle_cpu_us`."""
    shed = step.result.shed_count
    if not shed:
        return None
    return max(0.0, step.server_cpu_s * 1e6 - step.result.ok * settle_cpu_us) / shed


def judge(rate_s: float, settle_cpu_us: float, step: Step) -> dict[str, Any]:
    """One overload step against the goals."""
    result = step.result
    cost_us = shed_cost_us(step, settle_cpu_us)
    goodput_share = result.goodput_per_s / rate_s if rate_s else 0.0
    row = {
        "multiple": round(result.load.rate_per_s / rate_s, 2) if rate_s else None,
        **step.row(),
        "goodput_share_of_sustainable": round(goodput_share, 3),
        "shed_cpu_us": None if cost_us is None else round(cost_us, 1),
        "shed_cost_share_of_settlement": None if cost_us is None else round(cost_us / settle_cpu_us, 3),
    }
    problems = sum(result.errors.values())
    row["met"] = {
        "goodput": goodput_share >= GOODPUT_SHARE_MIN,
        "admitted_p99": result.p_ms(result.from_send, 99) <= ADMITTED_P99_MS_MAX,
        "shed_cost": cost_us is not None and cost_us <= SHED_COST_SHARE_MAX * settle_cpu_us,
        "shed_answers_proper": problems == 0,
    }
    return row


async def run_campaign(config: CampaignConfig, out_dir: pathlib.Path,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole campaign against a fresh region; write overload.json and overload.md."""
    pinning = choose_pinning()
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    pin_generator(pinning)
    try:
        return await _run_pinned(config, out_dir, pinning, log)
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)


async def _run_pinned(config: CampaignConfig, out_dir: pathlib.Path, pinning: Pinning,
                      log: Callable[[str], None]) -> dict[str, Any]:
    started_s = time.monotonic()
    log(f"seed {config.seed}; pinning server cpu {pinning.server_cpu}, generator cpu {pinning.generator_cpu}")
    with tempfile.TemporaryDirectory(prefix="yibao-overload-") as tmp:
        region_dir = pathlib.Path(tmp) / "region"
        init_region(region_dir, config.seed, config.profile)
        server = await start_gateway(region_dir, pinning)
        try:
            report = await _campaign_steps(config, region_dir, server, log)
        finally:
            stderr = server.stop()
            if "Traceback" in stderr:
                log(f"[gateway stderr tail]\n{stderr[-800:]}")
    report.update(_facts(config, pinning, time.monotonic() - started_s))
    write_report(report, out_dir)
    log(summary_table(report))
    return report


async def _campaign_steps(config: CampaignConfig, region_dir: pathlib.Path, server: ServerProcess,
                          log: Callable[[str], None]) -> dict[str, Any]:
    assert server.endpoint is not None
    target = GatewayTarget(region_dir, "2102", config.seed)
    pool_config = PoolConfig(connections=config.connections, sessions=config.sessions)
    async with LoadPool(server.endpoint, target, pool_config) as pool:
        ladder: list[Step] = []
        if config.sustainable_per_s is None:
            rate_s, ladder = await find_sustainable(pool, server, config, log)
        else:
            rate_s = config.sustainable_per_s
            pool.build_ahead(rate_s, config.step_seconds)
            ladder = [await measured_run(pool, server, rate_s, config.step_seconds)]
            log(describe("given S", ladder[-1], sustainable(ladder[-1], config.sustainable_p99_ms)))
        at_s = next((s for s in reversed(ladder) if s.result.load.rate_per_s == rate_s), ladder[-1])
        settle_cpu_us = at_s.cpu_us_per_ok or 0.0
        overload = []
        for multiple in config.multiples if rate_s else ():
            await _pause()
            pool.build_ahead(rate_s, config.seconds)
            step = await measured_run(pool, server, multiple * rate_s, config.seconds)
            log(describe(f"{multiple:g}x S", step, None))
            overload.append(judge(rate_s, settle_cpu_us, step))
    return {
        "sustainable_rate_per_s": rate_s,
        "settlement_cpu_us": round(settle_cpu_us, 1),
        "ladder": [step.row() | {"sustainable": sustainable(step, config.sustainable_p99_ms)} for step in ladder],
        "overload": overload,
        "goals": {"goodput_share_min": GOODPUT_SHARE_MIN, "admitted_p99_ms_max": ADMITTED_P99_MS_MAX,
                  "shed_cost_share_max": SHED_COST_SHARE_MAX},
    }


def _facts(config: CampaignConfig, pinning: Pinning, wall_s: float) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_facts(pinning),
        "method": dataclasses.asdict(config) | {"wall_s": round(wall_s, 1),
                                                "latency_from": "send (admitted); due (ladder)"},
    }


async def _pause() -> None:
    await trio.sleep(PAUSE_S)


def describe(name: str, step: Step, passed: bool | None) -> str:
    """One log line for a step."""
    r = step.result
    verdict = "" if passed is None else (" PASS" if passed else " FAIL")
    return (f"{name:>8} offered {r.load.rate_per_s:6.0f}/s ok {r.goodput_per_s:6.0f}/s "
            f"shed {r.shed_count / r.load.duration_s:6.0f}/s timeouts {r.timeouts:5d} gave up {r.gave_up:6d} "
            f"errors {sum(r.errors.values()):4d} p50/p99 send {r.p_ms(r.from_send, 50):6.1f}/{r.p_ms(r.from_send, 99):6.1f} "
            f"due {r.p_ms(r.from_due, 99):7.1f} ms cpu {step.cpu_us_per_ok or 0:5.0f} us/ok "
            f"share {step.server_cpu_s / r.elapsed_s:4.2f} generator {r.generator_cpu_s / r.elapsed_s:4.2f} "
            f"lag p99 {r.p_ms(r.generator_lag, 99):.0f} ms{verdict}")


def summary_table(report: dict[str, Any]) -> str:
    """The campaign as a Markdown table."""
    lines = [f"sustainable 2102 rate S = {report['sustainable_rate_per_s']:.0f}/s, "
             f"{report['settlement_cpu_us']:.0f} us of gateway CPU per settlement there",
             "",
             "| offered | goodput (share of S) | admitted p50 / p99 | shed/s (429) | shed p99 | timeouts | gave up | shed CPU (share of a settlement) | goals met |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in report["overload"]:
        admitted = row["admitted_ms"]
        cost = "n/a" if row["shed_cpu_us"] is None else \
            f"{row['shed_cpu_us']:.0f} us ({row['shed_cost_share_of_settlement']:.2f})"
        met = ", ".join(name for name, ok in row["met"].items() if ok) or "none"
        lines.append(
            f"| {row['multiple']:g}x = {row['offered_rate_per_s']:.0f}/s | {row['goodput_per_s']:.0f}/s "
            f"({row['goodput_share_of_sustainable']:.2f}) | {admitted['p50']:.1f} / {admitted['p99']:.1f} ms | "
            f"{row['shed_per_s']:.0f} | {row['shed_p99_ms']:.1f} ms | {row['timeouts']} | {row['gave_up']} | "
            f"{cost} | {met} |")
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: pathlib.Path) -> pathlib.Path:
    """Write overload.json (and overload.md, the table) under `out_dir`; return the JSON's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "overload.json"
    path.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    (out_dir / "overload.md").write_text(summary_table(report) + "\n", encoding="utf-8")
    return path
