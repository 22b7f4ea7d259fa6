"""`yibao-load`: the benchmark sweep (`bench`) and single open-loop runs (`run`).

`bench` builds a throw-away region with `yibao-gateway init`, starts the bare baseline server, the
durable floor (the same server journaling each request before answering) and the gateway side by
side (same pinning), sweeps them interleaved rung by rung (same machine state), and writes
latest.json/latest.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from functools import partial

import trio

from load_tests.gateway_target import INFNOS, GatewayTarget
from load_tests.http import parse_url
from load_tests.openloop import OpenLoopConfig, RunResult, Target, run_open_loop
from load_tests.report import build_report, half_rate_per_s, summary_table, write_report
from load_tests.servers import (
    Pinning,
    ServerProcess,
    choose_pinning,
    cpu_ticks,
    gateway_command,
    start_baseline,
    start_gateway,
    steal_share,
)
from load_tests.sweep import Series, Sweep, SweepConfig, ensure_step, sweep
from load_tests.targets import FixedTarget

INIT_TIMEOUT_S = 120.0
# Above this share of CPU time stolen by the host, a run's capacities and latencies are not ours.
STEAL_SHARE_MAX = 0.02
FLOOR_NAME = "baseline"
# The same server answering only once each request's body is journaled and fsynced
# (load_tests/baseline.py): a reference for what durability alone costs; it has no goals.
DURABLE_FLOOR_NAME = "baseline-durable"


def init_region(region_dir: pathlib.Path, seed: int, profile: str = "small") -> None:
    """Run `yibao-gateway init --out DIR --profile P --seed N`; raise with its stderr on failure."""
    argv = [*gateway_command(), "init", "--out", str(region_dir), "--profile", profile, "--seed", str(seed)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=INIT_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"yibao-gateway init failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


def pin_generator(pinning: Pinning) -> None:
    """Pin this process (the generator) to its CPU, when pinning is possible."""
    if pinning.generator_cpu is not None:
        os.sched_setaffinity(0, {pinning.generator_cpu})


async def _sweep_all(servers: list[ServerProcess], series: list[Series], config: SweepConfig) -> list[Sweep]:
    """Sweep every series (the floor first), then probe half the floor's capacity on each, and
    half its own capacity on each of the others.

    Every server is stopped at the end, also on failure, and its stderr tail shown.
    """
    try:
        sweeps = await sweep(series, config)
        probe_rate_per_s = half_rate_per_s(sweeps[0].capacity_rate_per_s)
        for one in series:
            await ensure_step(one, probe_rate_per_s, config)
        for one in series[1:]:
            await ensure_step(one, half_rate_per_s(one.capacity_rate_per_s), config)
        return [one.result() for one in series]
    finally:
        for server in servers:
            stderr = server.stop()
            if stderr.strip():
                print(f"[{server.name} stderr tail]\n{stderr.strip()[-800:]}", file=sys.stderr)


async def bench(out_dir: pathlib.Path, config: SweepConfig, infnos: list[str], profile: str) -> dict:
    """Sweep the baseline and the gateway (one series per infno), interleaved; write the report."""
    pinning = choose_pinning()
    pin_generator(pinning)
    print(f"seed {config.seed}; pinning server cpu {pinning.server_cpu}, generator cpu {pinning.generator_cpu}")
    started_s = time.monotonic()
    ticks_before = cpu_ticks()
    with tempfile.TemporaryDirectory(prefix="yibao-bench-") as tmp:
        region_dir = pathlib.Path(tmp) / "region"
        init_region(region_dir, config.seed, profile)
        gateway_targets = [GatewayTarget(region_dir, infno, config.seed) for infno in infnos]
        # Every series gets the same number of connections; a small region's terminals may hold
        # fewer sessions than asked for (8 per terminal), so the smallest bound wins.
        connections = min([config.connections, *(t.slots_max() for t in gateway_targets)])
        if connections != config.connections:
            print(f"connections lowered to {connections}: the region's terminals hold no more sessions")
            config = dataclasses.replace(config, connections=connections)
        servers = [await start_baseline(pinning)]
        try:
            servers.append(await start_baseline(pinning, pathlib.Path(tmp) / "durable-floor"))
            servers.append(await start_gateway(region_dir, pinning))
        except BaseException:
            for server in servers:
                server.stop()
            raise
        series = [Series(servers[0], FixedTarget(FLOOR_NAME)), Series(servers[1], FixedTarget(DURABLE_FLOOR_NAME))]
        series += [Series(servers[2], target) for target in gateway_targets]
        sweeps = await _sweep_all(servers, series, config)
    report = build_report(sweeps, FLOOR_NAME, config.seed, config, pinning, DURABLE_FLOOR_NAME)
    report["method"]["wall_s"] = round(time.monotonic() - started_s, 1)
    report["machine"]["steal_share"] = steal_share(ticks_before, cpu_ticks())
    json_path, png_path = write_report(report, out_dir)
    print(summary_table(report))
    if report["machine"]["steal_share"] > STEAL_SHARE_MAX:
        print(f"the host stole {report['machine']['steal_share']:.0%} of this machine's CPU time during the run: "
              "capacities and latencies measure its other tenants too; run again when it is quiet")
    print(f"wrote {json_path} and {png_path} after {report['method']['wall_s']:.0f} s")
    return report


def describe_run(result: RunResult) -> str:
    """A human summary of one open-loop run."""
    lat = result.latency_ms()
    errors = ", ".join(f"{k} {v}" for k, v in sorted(result.errors.items())) or "none"
    return (f"target {result.config.rate_per_s:.0f}/s achieved {result.achieved_rate_per_s:.1f}/s; "
            f"ok {result.ok}/{result.scheduled}, unfinished {result.unfinished}, errors: {errors}\n"
            f"latency ms (from intended send time): p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  "
            f"p99 {lat['p99']:.3f}  p99.9 {lat['p99_9']:.3f}  max {lat['max']:.3f}  mean {lat['mean']:.3f}")


async def run_once(args: argparse.Namespace) -> RunResult:
    """One open-loop run as `yibao-load run` describes it."""
    endpoint, path = parse_url(args.url)
    target: Target
    if args.target == "fixed":
        target = FixedTarget("fixed", path)
    else:
        if args.region is None:
            raise SystemExit("--region DIR is required for gateway targets")
        target = GatewayTarget(args.region, args.target.removeprefix("gateway-"), args.seed)
    config = OpenLoopConfig(args.rate, args.seconds, args.connections, args.timeout, arrival=args.arrival,
                            seed=args.seed)
    result = await run_open_loop(endpoint, target, config)
    print(describe_run(result))
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yibao-load", description="Open-loop load tests of yibao-gateway.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="sweep the baseline and the gateway; write latest.json/png")
    b.add_argument("--out", type=pathlib.Path, default=pathlib.Path("load_tests/results"))
    b.add_argument("--seconds-per-step", type=float, default=SweepConfig.seconds_per_step)
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--connections", type=int, default=32)
    b.add_argument("--start-rate", type=float, default=SweepConfig.start_rate_per_s)
    b.add_argument("--step-factor", type=float, default=SweepConfig.step_factor)
    b.add_argument("--steps-max", type=int, default=SweepConfig.steps_max)
    b.add_argument("--infno", action="append", choices=INFNOS, help="gateway traffic (repeatable); default both 2102 and 1101")
    b.add_argument("--profile", choices=("small", "pengzhou"), default="small")
    r = sub.add_parser("run", help="one open-loop run against a loopback URL")
    r.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8600/fsi/v1/tx")
    r.add_argument("--rate", type=float, required=True, help="requests per second")
    r.add_argument("--seconds", type=float, required=True)
    r.add_argument("--connections", type=int, default=32)
    r.add_argument("--timeout", type=float, default=2.0, help="per-request timeout, seconds")
    r.add_argument("--arrival", choices=("uniform", "poisson"), default="uniform")
    r.add_argument("--target", choices=("fixed", "gateway-2102", "gateway-1101"), default="fixed")
    r.add_argument("--region", type=pathlib.Path, help="region dir (yibao-gateway init) for gateway targets")
    r.add_argument("--seed", type=int, default=1)
    o = sub.add_parser("overload", help="the overload campaign: S, then multiples of S; writes overload.json/md")
    o.add_argument("--out", type=pathlib.Path, default=pathlib.Path("load_tests/results"))
    o.add_argument("--seconds", type=float, default=20.0, help="seconds per overload step")
    o.add_argument("--multiples", default="4,8", help="comma-separated multiples of S")
    o.add_argument("--connections", type=int, default=512)
    o.add_argument("--sustainable", type=float, help="S in settlements/s (skips the ladder)")
    o.add_argument("--sustainable-p99-ms", type=float, default=10.0)
    o.add_argument("--seed", type=int, default=1)
    return parser


def _overload(args: argparse.Namespace) -> None:
    from load_tests.campaign import CampaignConfig, run_campaign   # imports this module
    config = CampaignConfig(seconds=args.seconds, multiples=tuple(float(m) for m in args.multiples.split(",")),
                            connections=args.connections, sustainable_per_s=args.sustainable,
                            sustainable_p99_ms=args.sustainable_p99_ms, seed=args.seed)
    trio.run(run_campaign, config, args.out)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `yibao-load`."""
    args = _parser().parse_args(argv)
    if args.command == "overload":
        _overload(args)
    elif args.command == "bench":
        config = SweepConfig(start_rate_per_s=args.start_rate, step_factor=args.step_factor,
                             steps_max=args.steps_max, seconds_per_step=args.seconds_per_step,
                             connections=args.connections, seed=args.seed)
        trio.run(partial(bench, args.out, config, args.infno or list(INFNOS), args.profile))
    else:
        print(f"seed {args.seed}")
        trio.run(run_once, args)


if __name__ == "__main__":
    main()
