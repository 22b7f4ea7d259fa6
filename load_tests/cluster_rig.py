"""One region in cluster mode on this machine: a Redis Cluster, gateways of the region, HAProxy.

Used by `make run-cluster` / `make stop-cluster`, the chaos tests and `make bench-cluster`.
Everything listens on 127.0.0.1.

- `node_config(region_dir, name, ...)` writes `gateway-<name>.toml` beside the region's
  gateway.toml: the same files, its own listeners, `data_dir` and `[cluster] node_id`;
- `haproxy_config(...)` is ops/haproxy/haproxy.cfg with the ports replaced (and the check
  interval, for tests);
- `up` / `down`: the whole set as daemons, with pid files under `--dir`.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

from load_tests.redis_cluster import HOST, LocalCluster, redis_available

__all__ = ["haproxy_config", "node_config", "SAMPLE_HAPROXY"]

SAMPLE_HAPROXY = pathlib.Path(__file__).resolve().parents[1] / "ops" / "haproxy" / "haproxy.cfg"
# The sample's ports, in the order haproxy_config() takes replacements.
_SAMPLE_PORTS = {"data": 8600, "admin": 8601, "a_data": 8610, "a_admin": 8611, "b_data": 8620, "b_admin": 8621}


def node_config(region_dir: pathlib.Path, name: str, data_port: int, admin_port: int, seeds: list[str], *,
                lease_ms: int = 3000, extra_journal: str = "") -> pathlib.Path:
    """Write `gateway-<name>.toml` for node `gw-<name>` of the region in `region_dir`; returns its path."""
    text = (region_dir / "gateway.toml").read_text()
    text = re.sub(r'(?m)^data = "[^"]*"$', f'data = "{HOST}:{data_port}"', text, count=1)
    text = re.sub(r'(?m)^admin = "[^"]*"$', f'admin = "{HOST}:{admin_port}"', text, count=1)
    text = re.sub(r'(?m)^data_dir = "[^"]*"$', f'data_dir = "data-{name}"', text, count=1)
    if extra_journal:
        text = re.sub(r"(?m)^\[journal\]$", "[journal]\n" + extra_journal, text, count=1)
    seed_list = ", ".join(f'"{seed}"' for seed in seeds)
    text += f'\n[cluster]\nredis = [{seed_list}]\nnode_id = "gw-{name}"\nlease_ms = {lease_ms}\n'
    path = region_dir / f"gateway-{name}.toml"
    path.write_text(text)
    return path


def haproxy_config(ports: dict[str, int], check_ms: int | None = None) -> str:
    """The sample HAProxy config with `ports` (keys as _SAMPLE_PORTS) in place of the sample's."""
    text = SAMPLE_HAPROXY.read_text()
    for key, sample in _SAMPLE_PORTS.items():
        text = text.replace(f"{HOST}:{sample}", f"{HOST}:{ports[key]}")
    if check_ms is not None:
        text = re.sub(r"inter \d+ms fastinter \d+ms downinter \d+ms fall \d+",
                      f"inter {check_ms}ms fastinter {check_ms}ms downinter {check_ms}ms fall 1", text)
    return text


def haproxy_available() -> str | None:
    """None when haproxy is installed, else why not."""
    from shutil import which

    return None if which("haproxy") else "haproxy not installed (Debian package haproxy)"


def _spawn(command: list[str], log: pathlib.Path, pid_file: pathlib.Path) -> None:
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out, start_new_session=True)
    pid_file.write_text(str(process.pid))


def _stop(pid_file: pathlib.Path) -> None:
    try:
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
    except (OSError, ValueError):
        pass
    pid_file.unlink(missing_ok=True)


def up(region_dir: pathlib.Path, run_dir: pathlib.Path) -> None:
    """Redis Cluster on 7000-7008, gateways gw-a and gw-b of the region, HAProxy on 8600/8601."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(run_dir / "redis")
    cluster.start(daemon=True)
    for name in ("a", "b"):
        config = node_config(region_dir, name, _SAMPLE_PORTS[f"{name}_data"], _SAMPLE_PORTS[f"{name}_admin"],
                             cluster.seeds[:3])
        _spawn([sys.executable, "-m", "gateway", "serve", "--config", str(config)],
               run_dir / f"gw-{name}.log", run_dir / f"gw-{name}.pid")
        time.sleep(1.0)   # gw-a takes the lease first: the sample's leader is predictable
    _spawn(["haproxy", "-db", "-f", str(SAMPLE_HAPROXY)], run_dir / "haproxy.log", run_dir / "haproxy.pid")
    print(f"Redis Cluster {' '.join(cluster.seeds)}; gateways gw-a (8610/8611), gw-b (8620/8621); "
          f"HAProxy data http://{HOST}:8600 admin http://{HOST}:8601; logs in {run_dir}")


def down(run_dir: pathlib.Path) -> None:
    """Stop HAProxy, the gateways (SIGTERM: they drain) and the Redis nodes."""
    _stop(run_dir / "haproxy.pid")
    for name in ("a", "b"):
        _stop(run_dir / f"gw-{name}.pid")
    time.sleep(1.0)
    LocalCluster(run_dir / "redis").stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.cluster_rig")
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("--region", type=pathlib.Path, default=pathlib.Path("region"))
    parser.add_argument("--dir", type=pathlib.Path, default=pathlib.Path("build/cluster"))
    args = parser.parse_args(argv)
    if args.action == "down":
        down(args.dir)
        return 0
    missing = redis_available() or haproxy_available()
    if missing is not None:
        print(f"cluster_rig: {missing}", file=sys.stderr)
        return 2
    up(args.region, args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
