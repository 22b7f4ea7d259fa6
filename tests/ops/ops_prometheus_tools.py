"""Helpers for the ops tests: find Debian's prometheus/promtool, run them, query a live server.

Every wait polls with a deadline; nothing sleeps a fixed time hoping a process is ready.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
OPS_DIR = REPO_ROOT / "ops"
ALERTS_FILE = OPS_DIR / "prometheus" / "alerts.yml"
ALERTS_TEST_FILE = OPS_DIR / "prometheus" / "alerts.test.yml"
SCRAPE_EXAMPLE_FILE = OPS_DIR / "prometheus" / "prometheus.yml"
DASHBOARD_FILE = OPS_DIR / "grafana" / "yibao-gateway.json"

POLL_INTERVAL_S = 0.1
T = TypeVar("T")


def require_binary(name: str) -> str:
    """Return the path of `name` on PATH, or skip the test saying how to get it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(
            f"`{name}` not found on PATH: install Debian's prometheus package "
            "(`make ops-tools`, or apt-get install prometheus) to run the ops tests"
        )
    return path


def run_tool(argv: list[str], timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; never raises on a non-zero exit."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    probe: Callable[[], T | None], deadline_s: float, what: str, on_timeout: Callable[[], str] = str
) -> T:
    """Call `probe` until it returns something other than None, or fail after `deadline_s`."""
    end = time.monotonic() + deadline_s
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline_s}s waiting for {what}\n{on_timeout()}")
        time.sleep(POLL_INTERVAL_S)


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes] | None:
    """GET `url`; return (status, body), or None when nothing answers yet."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None


def prom_api(port: int, path: str, **params: str) -> Any | None:
    """Call the Prometheus HTTP API; return its `data`, or None when not (yet) successful."""
    query = urllib.parse.urlencode(params)
    answer = http_get(f"http://127.0.0.1:{port}/api/v1/{path}?{query}")
    if answer is None or answer[0] != 200:
        return None
    payload = json.loads(answer[1])
    return payload["data"] if payload.get("status") == "success" else None


def instant_vector(port: int, expr: str) -> list[tuple[dict[str, str], float]] | None:
    """Evaluate `expr` now; return [(labels, value)], or None when the API did not answer."""
    data = prom_api(port, "query", query=expr)
    if data is None or data.get("resultType") != "vector":
        return None
    return [(item["metric"], float(item["value"][1])) for item in data["result"]]


@contextlib.contextmanager
def running_prometheus(
    prometheus_bin: str, work_dir: pathlib.Path, config_text: str, startup_deadline_s: float = 30.0
) -> Iterator[int]:
    """Run a real Prometheus on a free loopback port with `config_text`; yield the port.

    Storage and logs live under `work_dir`; the process is stopped (then killed) on exit.
    """
    config_file = work_dir / "prometheus.yml"
    config_file.write_text(config_text, encoding="utf-8")
    port = free_port()
    log_file = work_dir / "prometheus.log"
    argv = [
        prometheus_bin,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={work_dir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with log_file.open("w", encoding="utf-8") as log_stream:
        process = subprocess.Popen(argv, stdout=log_stream, stderr=subprocess.STDOUT)
        try:
            wait_for(
                lambda: _ready_or_dead(process, port),
                startup_deadline_s,
                "prometheus /-/ready",
                lambda: log_file.read_text(encoding="utf-8"),
            )
            if process.poll() is not None:
                pytest.fail(f"prometheus exited early:\n{log_file.read_text(encoding='utf-8')}")
            yield port
        finally:
            stop_process(process)


def _ready_or_dead(process: subprocess.Popen[bytes], port: int) -> bool | None:
    if process.poll() is not None:
        return False
    answer = http_get(f"http://127.0.0.1:{port}/-/ready")
    return True if answer is not None and answer[0] == 200 else None


def stop_process(process: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
    """Terminate a child process we started, killing it if it ignores SIGTERM."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace_s)


def grafana_to_promql(expr: str, rate_interval: str = "1m") -> str:
    """Substitute the dashboard's Grafana template variables so Prometheus can run the query."""
    values = {"$__rate_interval": rate_interval, "$job": "yibao-gateway", "$instance": ".*"}
    for variable in sorted(values, key=len, reverse=True):
        expr = expr.replace(variable, values[variable])
    assert "$" not in expr, f"unknown template variable in {expr!r}"
    return expr


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (panel title/refId, raw expr) for every query of every panel."""
    return [
        (f"{panel['title']}/{target['refId']}", target["expr"])
        for panel in dashboard["panels"] if panel["type"] != "row"
        for target in panel["targets"]
    ]
