"""Server subprocesses for the benchmark: start, pin to a core, read their CPU time, stop.

The server runs in its own process, pinned to one core when the machine has two or more, with the
generator pinned to another, so the two never steal each other's cycles. Its CPU time comes from
/proc/<pid>/stat (utime + stime, all threads), so CPU µs per request is the server's own cost,
independent of how busy the generator is.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys

import trio

from load_tests.http import ConnectionLost, Endpoint, HttpConnection, HttpProtocolError

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
READY_POLL_S = 0.1
_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True)
class Pinning:
    """Which CPU the server and the generator run on (None: not pinned)."""

    server_cpu: int | None
    generator_cpu: int | None


def choose_pinning() -> Pinning:
    """Server on the first allowed CPU, generator on the second; no pinning with one CPU."""
    if not hasattr(os, "sched_getaffinity"):
        return Pinning(None, None)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Pinning(None, None)
    return Pinning(cpus[0], cpus[1])


def pin_process_threads(pid: int, cpu: int) -> None:
    """Pin every thread of `pid` (those that exist now; later ones inherit) to `cpu`."""
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), {cpu})
        except ProcessLookupError:
            continue  # a thread that ended between the listing and the call


def process_cpu_s(pid: int) -> float:
    """utime + stime of `pid` (all its threads) in seconds, from /proc/<pid>/stat."""
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15 overall.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS_PER_S


def cpu_ticks(stat_text: str | None = None) -> tuple[int, int]:
    """(all CPU time, time stolen by the hypervisor) in clock ticks, from /proc/stat's `cpu` line.

    Steal is the time this machine's virtual CPUs were ready to run but the host ran something
    else: while it is high, latencies and capacities measure the host's other tenants, not us.
    (0, 0) where /proc/stat is missing.
    """
    if stat_text is None:
        try:
            stat_text = pathlib.Path("/proc/stat").read_text()
        except OSError:
            return 0, 0
    fields = [int(value) for value in stat_text.splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already within user and nice]
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0


def steal_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of CPU time the host stole between two `cpu_ticks` readings (0 when unknown)."""
    total, stolen = after[0] - before[0], after[1] - before[1]
    return round(stolen / total, 4) if total > 0 else 0.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """A server subprocess: its endpoint, pid and CPU counter; stopped on exit of `async with`."""

    def __init__(self, name: str, argv: list[str], pinning: Pinning, cwd: pathlib.Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.pinning = pinning
        self.cwd = cwd
        self.process: subprocess.Popen[str] | None = None
        self.endpoint: Endpoint | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "server not started"
        return self.process.pid

    def cpu_s(self) -> float:
        return process_cpu_s(self.pid)

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, text=True)
        if self.pinning.server_cpu is not None:
            pin_process_threads(self.pid, self.pinning.server_cpu)

    def pin_again(self) -> None:
        """Re-pin once ready: threads the server started during boot may predate the first pin."""
        if self.pinning.server_cpu is not None:
            pin_process_threads(self.pid, self.pinning.server_cpu)

    def stop(self) -> str:
        """Terminate the server (SIGTERM, then SIGKILL) and return its stderr tail."""
        if self.process is None:
            return ""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        stderr = self.process.stderr.read() if self.process.stderr else ""
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return stderr[-2000:]

    def require_running(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.stop()}")


async def start_baseline(pinning: Pinning, journal_dir: pathlib.Path | None = None) -> ServerProcess:
    """Start `python -m load_tests.baseline --port 0` and wait for its "listening on" line.

    With `journal_dir`, the durable floor: each answer waits for its request's record in a journal there.
    """
    durable = [] if journal_dir is None else ["--journal", str(journal_dir)]
    server = ServerProcess("baseline" if journal_dir is None else "baseline-durable",
                           [sys.executable, "-m", "load_tests.baseline", "--port", "0", *durable], pinning)
    server.start()
    assert server.process is not None and server.process.stdout is not None
    stdout = server.process.stdout
    with trio.fail_after(READY_TIMEOUT_S):
        line = await trio.to_thread.run_sync(stdout.readline, abandon_on_cancel=True)
    match = re.search(r"listening on ([\d.]+):(\d+)", line)
    if match is None:
        server.require_running()
        raise RuntimeError(f"baseline printed {line!r} instead of its port")
    server.endpoint = Endpoint(match.group(1), int(match.group(2)))
    server.pin_again()
    return server


def gateway_command() -> list[str]:
    """The `yibao-gateway` console script next to this interpreter (or on PATH)."""
    beside = pathlib.Path(sys.executable).with_name("yibao-gateway")
    found = str(beside) if beside.exists() else shutil.which("yibao-gateway")
    if found is None:
        raise RuntimeError("yibao-gateway is not installed (pip install -e .)")
    return [found]


def retarget_listeners(config_path: pathlib.Path, data_port: int, admin_port: int) -> None:
    """Rewrite gateway.toml's [listen] data/admin addresses to the given loopback ports."""
    text = config_path.read_text(encoding="utf-8")
    text, data_count = re.subn(r'(?m)^data\s*=\s*"[^"]*"', f'data = "127.0.0.1:{data_port}"', text)
    text, admin_count = re.subn(r'(?m)^admin\s*=\s*"[^"]*"', f'admin = "127.0.0.1:{admin_port}"', text)
    if data_count != 1 or admin_count != 1:
        raise RuntimeError(f"{config_path}: expected one [listen] data and one admin line")
    config_path.write_text(text, encoding="utf-8")


async def start_gateway(region_dir: pathlib.Path, pinning: Pinning) -> ServerProcess:
    """Start `yibao-gateway serve` on free loopback ports and wait until /readyz answers 200."""
    config_path = region_dir / "gateway.toml"
    retarget_listeners(config_path, free_port(), free_port())
    data_port = int(re.search(r'data = "127\.0\.0\.1:(\d+)"', config_path.read_text()).group(1))
    server = ServerProcess("gateway", [*gateway_command(), "serve", "--config", str(config_path)], pinning)
    server.start()
    server.endpoint = Endpoint("127.0.0.1", data_port)
    with trio.fail_after(READY_TIMEOUT_S):
        while not await _ready(server.endpoint):
            server.require_running()
            await trio.sleep(READY_POLL_S)
    server.pin_again()
    return server


async def _ready(endpoint: Endpoint) -> bool:
    try:
        conn = await HttpConnection.connect(endpoint)
    except OSError:
        return False
    try:
        return (await conn.request("GET", "/readyz")).status == 200
    except (OSError, trio.BrokenResourceError, ConnectionLost, HttpProtocolError):
        return False
    finally:
        await conn.aclose()
