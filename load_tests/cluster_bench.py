"""`make bench-cluster`: what cluster mode costs and what it buys, measured in one run.

1. **2102, embedded default vs cluster mode.** Closed loop, `CONNECTIONS` connections, fresh 2102
   settlements for `--seconds`: once against one gateway on its local journal (fsync on), once
   against the leader of a region of two gateways (leader + hot standby) on a Redis Cluster of 3
   primaries with two replicas each (`replicas_ack = 1`). Throughput, p50 and p99 per run.
2. **Leader kill to first success.** The same region behind HAProxy (ops/haproxy/haproxy.cfg),
   lease_ms = 3000 (the default): under load, kill -9 the leader; the time from the kill to the
   first settlement acknowledged that was sent after it (target ≤ lease_ms + 1 s). `--kills` times.
3. **Several regions on several shards.** 1, 2, then 3 regions, each its own leader, whose hash
   tags (`{admdvs}`) fall on different primaries, `REGION_CONNECTIONS` clients each; total and
   per-region settlements/s, and each shard's primary's CPU per settlement.

Everything on 127.0.0.1. Writes load_tests/results/cluster.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

import trio

from load_tests.cli import init_region
from load_tests.cluster_rig import haproxy_config, node_config
from load_tests.gateway_target import GatewayTarget
from load_tests.http import Endpoint, HttpConnection
from load_tests.redis_cluster import LocalCluster, free_base_port, redis_available
from load_tests.servers import free_port, gateway_command, process_cpu_s

CONNECTIONS = 32
# Per region in the shards series: few enough that one region is bound by its round trips (group
# commit, WAIT), not by a CPU, so what more regions add shows on a 2-core machine too.
REGION_CONNECTIONS = 4
WARMUP_S = 1.0
READY_S = 60.0
SEED = 1
# Region codes whose hash tags land on the three shards of a fresh 3-primary cluster (slots
# 0-5460, 5461-10922, 10923-16383): {510182}, {510183}, {510181}; checked at run time.
REGION_CODES = ("510182", "510183", "510181")


class Gateway:
    """One `yibao-gateway serve` process on a config file."""

    def __init__(self, config: pathlib.Path, data_port: int, admin_port: int) -> None:
        self.config, self.data, self.admin = config, Endpoint("127.0.0.1", data_port), Endpoint("127.0.0.1", admin_port)
        self.log = config.with_suffix(".log")
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen([*gateway_command(), "serve", "--config", str(config)],
                                            stdout=subprocess.DEVNULL, stderr=out)

    async def readyz(self) -> int | None:
        try:
            conn = await HttpConnection.connect(self.admin)
        except OSError:
            return None
        try:
            return (await conn.request("GET", "/readyz")).status
        except Exception:
            return None
        finally:
            await conn.aclose()

    async def wait(self, statuses: tuple[int, ...] = (200,)) -> None:
        with trio.fail_after(READY_S):
            while await self.readyz() not in statuses:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.config.name} exited: {self.log.read_text()[-1500:]}")
                await trio.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def closed_loop(endpoint: Endpoint, target: GatewayTarget, connections: int, seconds: float,
                      cpu_pids: dict[str, list[int]] | None = None) -> dict[str, float]:
    """`connections` clients send fresh 2102s back to back; throughput and latency after warm-up.

    `cpu_pids`: name -> processes whose CPU time per settlement is reported as `<name>_cpu_us`
    (on a shared machine a steadier figure than throughput).
    """
    cpu_pids = cpu_pids or {}
    latencies: list[float] = []
    counts = {"errors": 0}
    measuring = {"on": False}

    async def client(index: int) -> None:
        conn = await HttpConnection.connect(endpoint)
        try:
            slot = await target.open_slot(index, conn)
            while True:
                request = slot.build()
                started = time.perf_counter()
                response = await conn.request(request.method, request.path, request.body, request.content_type)
                if measuring["on"]:
                    if slot.error_kind(response):
                        counts["errors"] += 1
                    else:
                        latencies.append(time.perf_counter() - started)
        finally:
            await conn.aclose()

    async with trio.open_nursery() as nursery:
        for index in range(connections):
            nursery.start_soon(client, index)
        await trio.sleep(WARMUP_S)
        cpu_before = {name: sum(process_cpu_s(pid) for pid in pids) for name, pids in cpu_pids.items()}
        measuring["on"] = True
        started_s = time.monotonic()
        await trio.sleep(seconds)
        measuring["on"] = False
        elapsed_s = time.monotonic() - started_s
        cpu_s = {name: sum(process_cpu_s(pid) for pid in pids) - cpu_before[name] for name, pids in cpu_pids.items()}
        nursery.cancel_scope.cancel()
    done = max(1, len(latencies))
    return {"settlements_per_s": round(len(latencies) / elapsed_s, 1), "errors": counts["errors"],
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
            **{f"{name}_cpu_us": round(spent * 1e6 / done) for name, spent in cpu_s.items()}}


def fresh_region(root: pathlib.Path, name: str, admdvs: str | None = None) -> pathlib.Path:
    region = root / name
    init_region(region, SEED)
    if admdvs is not None:
        config = region / "gateway.toml"
        config.write_text(re.sub(r'(?m)^admdvs = "\d+"', f'admdvs = "{admdvs}"', config.read_text()))
    return region


def cluster_nodes(region: pathlib.Path, cluster: LocalCluster, names: tuple[str, ...],
                  lease_ms: int = 3000) -> dict[str, Gateway]:
    nodes = {}
    for name in names:
        data_port, admin_port = free_port(), free_port()
        config = node_config(region, name, data_port, admin_port, cluster.seeds[:3], lease_ms=lease_ms)
        nodes[name] = Gateway(config, data_port, admin_port)
        time.sleep(0.5)          # the first one takes the lease
    return nodes


async def embedded_vs_cluster(root: pathlib.Path, cluster: LocalCluster, seconds: float,
                              rounds: int = 2) -> dict[str, Any]:
    """Both modes `rounds` times, alternating, so a busy neighbour weighs on both alike."""
    runs: dict[str, list[dict[str, float]]] = {"embedded": [], "cluster": []}
    redis_pids = [process.pid for process in cluster.processes.values()]
    for number in range(rounds):
        region = fresh_region(root, f"embedded{number}")
        data_port, admin_port = free_port(), free_port()
        config = node_config(region, "x", data_port, admin_port, [])
        config.write_text(config.read_text().split("\n[cluster]")[0] + "\n")   # the same file, no [cluster]
        alone = Gateway(config, data_port, admin_port)
        try:
            await alone.wait()
            runs["embedded"].append(await closed_loop(alone.data, GatewayTarget(region, "2102", SEED),
                                                      CONNECTIONS, seconds, {"gateway": [alone.process.pid]}))
        finally:
            alone.stop()
        region = fresh_region(root, f"cluster{number}")
        nodes = cluster_nodes(region, cluster, ("a", "b"))
        try:
            await nodes["a"].wait()
            await nodes["b"].wait((503,))
            runs["cluster"].append(await closed_loop(
                nodes["a"].data, GatewayTarget(region, "2102", SEED), CONNECTIONS, seconds,
                {"gateway": [nodes["a"].process.pid], "standby": [nodes["b"].process.pid], "redis": redis_pids}))
        finally:
            for node in nodes.values():
                node.stop()
    best = {mode: max(results, key=lambda run: run["settlements_per_s"]) for mode, results in runs.items()}
    return {"runs": runs, "ratio_best": round(best["cluster"]["settlements_per_s"]
                                              / best["embedded"]["settlements_per_s"], 2)}


async def leader_kills(root: pathlib.Path, cluster: LocalCluster, kills: int) -> list[float]:
    """Seconds from each kill -9 of the leader to the first settlement sent after it and acknowledged."""
    region = fresh_region(root, "failover")
    nodes = cluster_nodes(region, cluster, ("a", "b"))
    ports = {"data": free_port(), "admin": free_port(), "a_data": nodes["a"].data.port,
             "a_admin": nodes["a"].admin.port, "b_data": nodes["b"].data.port, "b_admin": nodes["b"].admin.port}
    cfg = root / "haproxy.cfg"
    cfg.write_text(haproxy_config(ports))
    haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    front = Endpoint("127.0.0.1", ports["data"])
    delays: list[float] = []
    try:
        await nodes["a"].wait()
        await nodes["b"].wait((503,))
        target = GatewayTarget(region, "2102", SEED)
        for _ in range(kills):
            leader = [name for name, node in nodes.items() if await node.readyz() == 200][0]
            acks: list[tuple[float, float]] = []
            async with trio.open_nursery() as nursery:
                for index in range(8):
                    nursery.start_soon(_resilient_client, front, target, index, acks)
                await trio.sleep(2.0)
                nodes[leader].stop()
                killed_s = time.monotonic()
                with trio.fail_after(30):
                    while not [a for s, a in acks if s > killed_s]:
                        await trio.sleep(0.01)
                delays.append(round(min(a for s, a in acks if s > killed_s) - killed_s, 3))
                nursery.cancel_scope.cancel()
            restarted = Gateway(nodes[leader].config, nodes[leader].data.port, nodes[leader].admin.port)
            nodes[leader] = restarted
            await restarted.wait((503,))
    finally:
        haproxy.kill()
        haproxy.wait()
        for node in nodes.values():
            node.stop()
    return delays


async def _resilient_client(front: Endpoint, target: GatewayTarget, index: int,
                            acks: list[tuple[float, float]]) -> None:
    """Settle through HAProxy, reconnecting and signing in again after any failure."""
    while True:
        try:
            conn = await HttpConnection.connect(front)
        except OSError:
            await trio.sleep(0.05)
            continue
        try:
            slot = await target.open_slot(index, conn)
            while True:
                request = slot.build()
                sent_s = time.monotonic()
                response = await conn.request(request.method, request.path, request.body, request.content_type)
                if slot.error_kind(response):
                    break
                acks.append((sent_s, time.monotonic()))
        except Exception:  # a dead leader, a standby's refusal, an unknown session: start over
            pass
        finally:
            await conn.aclose()
        await trio.sleep(0.05)


async def regions_on_shards(root: pathlib.Path, cluster: LocalCluster, seconds: float) -> list[dict[str, Any]]:
    """1, 2, 3 regions at once, one leader each, each region's keys on its own shard."""
    rows = []
    for count in (1, 2, 3):
        regions = [fresh_region(root, f"shard{count}-{n}", REGION_CODES[n]) for n in range(count)]
        leaders = [cluster_nodes(region, cluster, ("a",))["a"] for region in regions]
        shard_pids = [[cluster.processes[cluster.primary_of("{" + REGION_CODES[n] + "}:journal")].pid]
                      for n in range(count)]
        try:
            for leader in leaders:
                await leader.wait()
            results: list[dict[str, float]] = [{} for _ in regions]

            async def run(n: int) -> None:
                results[n] = await closed_loop(leaders[n].data, GatewayTarget(regions[n], "2102", SEED),
                                               REGION_CONNECTIONS, seconds, {"redis": shard_pids[n]})

            async with trio.open_nursery() as nursery:
                for n in range(count):
                    nursery.start_soon(run, n)
        finally:
            for leader in leaders:
                leader.stop()
        shards = [cluster.primary_of("{" + REGION_CODES[n] + "}:journal") for n in range(count)]
        rows.append({"regions": count, "primaries": shards,
                     "total_per_s": round(sum(r["settlements_per_s"] for r in results), 1),
                     "per_region": results})
    return rows


async def main_async(seconds: float, kills: int, out: pathlib.Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="yibao-cluster-bench-") as tmp:
        root = pathlib.Path(tmp)
        cluster = LocalCluster(root / "redis", free_base_port())
        cluster.start()
        try:
            compare = await embedded_vs_cluster(root, cluster, seconds)
            print(f"{'2102':<12}{'settle/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}  CPU us per settlement")
            for name, results in compare["runs"].items():
                for run in results:
                    cpu = ", ".join(f"{key[:-7]} {value}" for key, value in run.items() if key.endswith("_cpu_us"))
                    print(f"{name:<12}{run['settlements_per_s']:>10.0f}{run['p50_ms']:>9.2f}{run['p99_ms']:>9.2f}"
                          f"{run['errors']:>8}  {cpu}")
            print(f"cluster / embedded (best runs) {compare['ratio_best']:.2f}, {CONNECTIONS} connections")
            delays = await leader_kills(root, cluster, kills)
            print(f"leader kill -9 to first success (lease_ms 3000, target <= 4.0 s): {delays} s")
            shards = await regions_on_shards(root, cluster, seconds)
            for row in shards:
                print(f"{row['regions']} region(s) on primaries {row['primaries']}: {row['total_per_s']:.0f}/s total "
                      f"({', '.join(str(r['settlements_per_s']) for r in row['per_region'])})")
        finally:
            cluster.stop()
    report = {"seconds": seconds, "connections": CONNECTIONS, "compare": compare,
              "leader_kill_to_first_success_s": delays, "regions_on_shards": shards}
    out.mkdir(parents=True, exist_ok=True)
    (out / "cluster.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.cluster_bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("load_tests/results"))
    args = parser.parse_args(argv)
    missing = redis_available()
    if missing is not None:
        print(f"bench-cluster: {missing}", file=sys.stderr)
        return 2
    trio.run(main_async, args.seconds, args.kills, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
