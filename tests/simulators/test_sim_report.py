"""The summary table: counter traffic latency is reported apart from the sign-in and reconciliation bursts."""

from __future__ import annotations

from simulators.oracle import Oracle
from simulators.report import Stats, summary


def test_bursts_do_not_hide_in_counter_latency() -> None:
    stats = Stats()
    for _ in range(99):
        stats.count("2102", "ok", 0.002)
    stats.count("2101", "ok", 0.004)
    for _ in range(50):
        stats.count("3201", "ok", 0.400)   # the end-of-day burst queues behind itself
    stats.count("9001", "ok", 0.300)
    table = summary(stats, Oracle({}, {}), {})
    counter_line = next(line for line in table.splitlines() if line.endswith("counter requests"))
    assert counter_line.startswith("latency p50 2.0 ms") and "over 100 counter" in counter_line
    assert "400" not in counter_line and "300" not in counter_line
    assert "latency p50 400.0 ms  p99 400.0 ms over 51 sign-in and reconciliation requests" in table
