"""A Redis Cluster on loopback for `make run-cluster`, the chaos tests and `make bench-cluster`.

Debian's `redis-server`: `primaries` primaries with `replicas` replicas each on consecutive ports
of 127.0.0.1, every node with `appendonly yes` and `min-replicas-to-write 1`, created with
`redis-cli --cluster create ... --cluster-replicas N --cluster-yes`. The node timeout is short
(`NODE_TIMEOUT_MS`) so a dead primary is replaced within about two seconds; every replica may
take over however long it was cut off (`cluster-replica-validity-factor 0`), since a replica
only ever acknowledges what it holds, and the region journal waits for those acknowledgements.

Command line (what the Makefile calls)::

    python -m load_tests.redis_cluster up --dir DIR [--port 7000] [--primaries 3] [--replicas 2]
    python -m load_tests.redis_cluster down --dir DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

__all__ = ["LocalCluster", "NODE_TIMEOUT_MS", "free_base_port", "redis_available"]

HOST = "127.0.0.1"
NODE_TIMEOUT_MS = 2000
START_DEADLINE_S = 30.0


def redis_available() -> str | None:
    """None when redis-server and redis-cli are on PATH, else the reason they are not."""
    missing = [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]
    return f"{' and '.join(missing)} not installed (Debian package redis-server)" if missing else None


def free_base_port(nodes: int = 9) -> int:
    """A base port in 20000-29000 with `nodes` node ports and their bus ports (+10000) free."""
    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(200):
        base = rng.randrange(20000, 29000 - nodes)
        if all(_bindable(base + n) and _bindable(base + n + 10000) for n in range(nodes)):
            return base
    raise RuntimeError("no free port range for a Redis Cluster")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def node_config(port: int, directory: pathlib.Path) -> str:
    """The redis.conf of one node."""
    return "\n".join([
        f"port {port}", f"bind {HOST}", "protected-mode yes", f"dir {directory}",
        "cluster-enabled yes", f"cluster-config-file nodes-{port}.conf",
        f"cluster-node-timeout {NODE_TIMEOUT_MS}", "cluster-replica-validity-factor 0",
        "cluster-require-full-coverage no", "cluster-allow-replica-migration no",
        "appendonly yes", "appendfsync everysec", 'save ""',
        "min-replicas-to-write 1", "min-replicas-max-lag 10",
        f"pidfile {directory / 'redis.pid'}", f"logfile {directory / 'redis.log'}",
        "daemonize no", "",
    ])


@dataclasses.dataclass
class LocalCluster:
    """Nodes on ports `base_port ...`; `start` runs them as children (or daemons, for `up`)."""

    directory: pathlib.Path
    base_port: int = 7000
    primaries: int = 3
    replicas: int = 2
    processes: dict[int, subprocess.Popen[bytes]] = dataclasses.field(default_factory=dict)

    @property
    def ports(self) -> list[int]:
        return [self.base_port + n for n in range(self.primaries * (1 + self.replicas))]

    @property
    def seeds(self) -> list[str]:
        return [f"{HOST}:{port}" for port in self.ports]

    def node_dir(self, port: int) -> pathlib.Path:
        return self.directory / str(port)

    def start(self, daemon: bool = False) -> None:
        """Start every node and create the cluster (once: a restarted directory keeps its nodes)."""
        fresh = not any(self.node_dir(port).joinpath(f"nodes-{port}.conf").exists() for port in self.ports)
        try:
            for port in self.ports:
                self.start_node(port, daemon)
            for port in self.ports:
                self._wait_ping(port)
            if fresh:
                self._create()
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise

    def start_node(self, port: int, daemon: bool = False) -> None:
        """Start (or restart, keeping its files) the node on `port`."""
        directory = self.node_dir(port)
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "redis.conf"
        config.write_text(node_config(port, directory.resolve()))
        command = ["redis-server", str(config)] + (["--daemonize", "yes"] if daemon else [])
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        if daemon:
            process.wait(timeout=START_DEADLINE_S)
        else:
            self.processes[port] = process

    def _wait_ping(self, port: int) -> None:
        deadline = time.monotonic() + START_DEADLINE_S
        while self.cli(port, "PING") != "PONG":
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis on port {port} did not start; see {self.node_dir(port)}/redis.log")
            time.sleep(0.05)

    def _create(self) -> None:
        done = subprocess.run(["redis-cli", "--cluster", "create", *self.seeds, "--cluster-replicas",
                               str(self.replicas), "--cluster-yes"], capture_output=True, text=True,
                              timeout=START_DEADLINE_S)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-500:]} {done.stderr[-500:]}")

    def cli(self, port: int, *args: str) -> str:
        """One redis-cli command on `port`; its output stripped ("" when the node is down)."""
        try:
            done = subprocess.run(["redis-cli", "-h", HOST, "-p", str(port), *args],
                                  capture_output=True, text=True, timeout=10)
        except subprocess.TimeoutExpired:
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    def wait_healthy(self, deadline_s: float = START_DEADLINE_S) -> None:
        """Until every slot is served and every primary has all its replicas attached."""
        deadline = time.monotonic() + deadline_s
        while not self.healthy():
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not become healthy: " + self.cli(self.ports[0], "CLUSTER", "NODES"))
            time.sleep(0.1)

    def healthy(self) -> bool:
        alive = [port for port in self.ports if self.cli(port, "PING") == "PONG"]
        if not alive or "cluster_state:ok" not in self.cli(alive[0], "CLUSTER", "INFO"):
            return False
        primaries = [port for port in alive if "role:master" in self.cli(port, "INFO", "replication")]
        # A replica counts for min-replicas-to-write only once it has acknowledged (within a second).
        return len(primaries) == self.primaries and all(
            f"min_slaves_good_slaves:{self.replicas}" in self.cli(port, "INFO", "replication") for port in primaries)

    def primary_of(self, key: str) -> int:
        """The port of the primary currently serving `key`'s slot."""
        for port in self.ports:
            if self.cli(port, "PING") != "PONG":
                continue
            slot = int(self.cli(port, "CLUSTER", "KEYSLOT", key))
            for line in self.cli(port, "CLUSTER", "NODES").splitlines():
                fields = line.split()
                if "master" in fields[2] and "fail" not in fields[2] and _serves(fields[8:], slot):
                    return int(fields[1].split("@")[0].rsplit(":", 1)[1])
        raise RuntimeError(f"no primary serves {key!r}")

    def replicas_of(self, primary_port: int) -> list[int]:
        """Ports of the replicas of the primary on `primary_port`."""
        node_id = self.cli(primary_port, "CLUSTER", "MYID")
        return [int(fields[1].split("@")[0].rsplit(":", 1)[1])
                for fields in (line.split() for line in self.cli(primary_port, "CLUSTER", "NODES").splitlines())
                if fields[3] == node_id and "fail" not in fields[2]]

    def signal(self, port: int, signum: int) -> None:
        """Send `signum` to the node on `port` (SIGSTOP / SIGCONT to stall it)."""
        process = self.processes.get(port)
        if process is not None:
            process.send_signal(signum)
        else:
            _signal_pidfile(self.node_dir(port) / "redis.pid", signum)

    def kill9(self, port: int) -> None:
        """SIGKILL the node on `port` (a child of this object, or a daemon by its pid file)."""
        process = self.processes.pop(port, None)
        if process is not None:
            process.kill()
            process.wait()
            return
        _signal_pidfile(self.node_dir(port) / "redis.pid", signal.SIGKILL)

    def stop(self) -> None:
        """Stop every node this object started, and any daemon of its directory."""
        for port in self.ports:
            process = self.processes.pop(port, None)
            if process is not None:
                process.kill()
                process.wait()
            else:
                _signal_pidfile(self.node_dir(port) / "redis.pid", signal.SIGKILL)


def _serves(ranges: list[str], slot: int) -> bool:
    for item in ranges:
        if item.startswith("["):
            continue
        low, _, high = item.partition("-")
        if int(low) <= slot <= int(high or low):
            return True
    return False


def _signal_pidfile(path: pathlib.Path, signum: int) -> None:
    try:
        os.kill(int(path.read_text().strip()), signum)
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.redis_cluster")
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("--dir", required=True, type=pathlib.Path)
    parser.add_argument("--port", type=int, default=7000)
    parser.add_argument("--primaries", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.dir, args.port, args.primaries, args.replicas)
    if args.action == "down":
        cluster.stop()
        return 0
    reason = redis_available()
    if reason is not None:
        print(f"redis_cluster: {reason}", file=sys.stderr)
        return 2
    cluster.start(daemon=True)
    print(f"Redis Cluster up: {' '.join(cluster.seeds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
