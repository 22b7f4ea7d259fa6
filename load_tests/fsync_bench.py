"""`make bench-journal`: settlement throughput with the journal's fsync on vs off.

Closed loop on purpose: 64 connections (or as many sessions as the region's pharmacy terminals
hold) each send a fresh 2102, wait for its answer, send the next. The question is how much of the
throughput the fsync costs once group commit shares each fsync among the settlements waiting for
it, so the clients must keep the journal busy. Both runs use a fresh region with the same seed.

Prints throughput per run, the ratio on/off (target ≥ 0.9), the fsync p50/p99 and the mean batch
size from the server's own /metrics, and writes load_tests/results/fsync.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
import tempfile
import time

import trio

from load_tests.cli import init_region
from load_tests.gateway_target import GatewayTarget
from load_tests.http import HttpConnection
from load_tests.servers import ServerProcess, choose_pinning, start_gateway

CONNECTIONS = 64
WARMUP_S = 1.0


def histogram_quantile(metrics_text: str, name: str, quantile: float) -> float | None:
    """Upper bucket bound holding `quantile` of a Prometheus histogram's observations."""
    buckets = [(float("inf") if le == "+Inf" else float(le), float(count)) for le, count in
               re.findall(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', metrics_text, re.M)]
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    return next(le for le, count in buckets if count >= quantile * total)


def histogram_mean(metrics_text: str, name: str) -> float | None:
    total = re.search(rf"^{name}_sum (\S+)$", metrics_text, re.M)
    count = re.search(rf"^{name}_count (\S+)$", metrics_text, re.M)
    if not total or not count or float(count.group(1)) == 0:
        return None
    return float(total.group(1)) / float(count.group(1))


async def closed_loop(server: ServerProcess, target: GatewayTarget, connections: int,
                      seconds: float) -> dict[str, float]:
    """Run `connections` closed-loop clients for `seconds` after a warm-up; count good answers."""
    counts = {"ok": 0, "errors": 0}
    measuring = {"on": False}

    async def client(index: int) -> None:
        conn = await HttpConnection.connect(server.endpoint)
        try:
            slot = await target.open_slot(index, conn)
            while True:
                request = slot.build()
                response = await conn.request(request.method, request.path, request.body,
                                              request.content_type)
                if measuring["on"]:
                    counts["errors" if slot.error_kind(response) else "ok"] += 1
        finally:
            await conn.aclose()

    async with trio.open_nursery() as nursery:
        for index in range(connections):
            nursery.start_soon(client, index)
        await trio.sleep(WARMUP_S)
        cpu_before_s, started_s = server.cpu_s(), time.monotonic()
        measuring["on"] = True
        await trio.sleep(seconds)
        measuring["on"] = False
        elapsed_s, cpu_s = time.monotonic() - started_s, server.cpu_s() - cpu_before_s
        nursery.cancel_scope.cancel()
    done = counts["ok"]
    return {"settlements_per_s": done / elapsed_s, "errors": counts["errors"],
            "cpu_us_per_settlement": cpu_s * 1e6 / done if done else float("nan")}


async def one_run(fsync: bool, seconds: float, seed: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="yibao-fsync-") as tmp:
        region = pathlib.Path(tmp) / "region"
        init_region(region, seed)
        config = region / "gateway.toml"
        config.write_text(re.sub(r"(?m)^fsync = \w+", f"fsync = {'true' if fsync else 'false'}",
                                 config.read_text()))
        target = GatewayTarget(region, "2102", seed)
        connections = min(CONNECTIONS, target.slots_max())
        server = await start_gateway(region, choose_pinning())
        try:
            figures = await closed_loop(server, target, connections, seconds)
            conn = await HttpConnection.connect(server.endpoint)
            metrics = (await conn.request("GET", "/metrics")).body.decode()
            await conn.aclose()
        finally:
            server.stop()
    return {"fsync": fsync, "connections": connections, **figures,
            "fsync_p50_s": histogram_quantile(metrics, "yb_journal_fsync_duration_seconds", 0.5),
            "fsync_p99_s": histogram_quantile(metrics, "yb_journal_fsync_duration_seconds", 0.99),
            "batch_records_mean": histogram_mean(metrics, "yb_journal_batch_records")}


async def main_async(seconds: float, seed: int, out: pathlib.Path) -> dict[str, object]:
    on = await one_run(True, seconds, seed)
    off = await one_run(False, seconds, seed)
    ratio = on["settlements_per_s"] / off["settlements_per_s"]  # type: ignore[operator]
    report = {"seconds": seconds, "seed": seed, "fsync_on": on, "fsync_off": off, "ratio_on_off": ratio}
    print(f"{'run':<10}{'settle/s':>10}{'cpu us':>9}{'fsync p50':>11}{'fsync p99':>11}{'batch':>8}")
    for name, run in (("fsync on", on), ("fsync off", off)):
        p50, p99 = run["fsync_p50_s"], run["fsync_p99_s"]
        print(f"{name:<10}{run['settlements_per_s']:>10.0f}{run['cpu_us_per_settlement']:>9.0f}"
              f"{'-' if p50 is None else f'≤{p50 * 1000:.1f} ms':>11}"
              f"{'-' if p99 is None else f'≤{p99 * 1000:.1f} ms':>11}"
              f"{run['batch_records_mean'] or 0:>8.1f}")
    print(f"ratio on/off {ratio:.2f} (target ≥ 0.90), {on['connections']} connections")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.fsync_bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("load_tests/results/fsync.json"))
    args = parser.parse_args(argv)
    trio.run(main_async, args.seconds, args.seed, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
