"""A short sweep against the baseline subprocess, its JSON report and its PNG."""

from __future__ import annotations

import json
import os
import pathlib

import matplotlib.image
from hdrh.histogram import HdrHistogram

from load_tests.report import (
    SCHEMA,
    build_report,
    cpu_ratio_at_equal_rates,
    cpu_us_per_request,
    summary_table,
    write_report,
)
from load_tests.servers import choose_pinning, start_baseline
from load_tests.sweep import Series, Sweep, SweepConfig, sweep
from load_tests.targets import FixedTarget

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STEP_KEYS = {"target_rate_per_s", "achieved_rate_per_s", "seconds", "scheduled", "ok", "errors", "error_count",
             "unfinished", "error_ratio", "latency_ms", "server_cpu_us_per_request", "generator_cpu_share",
             "passed", "histogram_us"}


async def test_sweep_report_and_plot(tmp_path: pathlib.Path) -> None:
    pinning = choose_pinning()
    config = SweepConfig(start_rate_per_s=100, step_factor=2, steps_max=2, refine_steps=0, seconds_per_step=1.0,
                         connections=4, warmup_s=0.3, pause_s=0.1, p99_ms_max=1000.0, seed=11)
    server = await start_baseline(pinning)
    try:
        if pinning.server_cpu is not None:
            assert os.sched_getaffinity(server.pid) == {pinning.server_cpu}
        [floor] = await sweep([Series(server, FixedTarget())], config, log=lambda line: None)
    finally:
        server.stop()
    # A second series, so ratios have something to compare: the same steps under another name.
    other = Sweep("gateway-2102", floor.steps[:1], floor.steps[0].result.config.rate_per_s)
    report = build_report([floor, other], "baseline", config.seed, config, pinning)
    json_path, png_path = write_report(report, tmp_path / "results")

    loaded = json.loads(json_path.read_text())
    assert loaded["schema"] == SCHEMA and loaded["seed"] == 11 and loaded["floor"] == "baseline"
    assert loaded["machine"]["nproc"] == os.cpu_count() and loaded["machine"]["python"].count(".") == 2
    assert loaded["method"]["p99_ms_max"] == 1000.0 and loaded["method"]["latency_from"] == "intended send time"
    base = loaded["servers"]["baseline"]
    assert [row["target_rate_per_s"] for row in base["steps"]] == [100, 200]
    assert base["capacity_rate_per_s"] == 200
    for row in base["steps"]:
        assert set(row) == STEP_KEYS
        assert row["ok"] == row["scheduled"] and row["passed"]
        assert set(row["latency_ms"]) == {"p50", "p90", "p99", "p99_9", "max", "mean"}
        assert HdrHistogram.decode(row["histogram_us"]).get_total_count() == row["ok"]
        assert row["server_cpu_us_per_request"] > 0
    assert base["cpu_us_per_request"] > 0
    ratios = loaded["ratios"]["gateway-2102"]
    assert ratios["capacity"] == 0.5
    assert set(loaded["ratios"]) == {"gateway-2102"}
    # Half the floor's capacity (200/s) is 100/s, a step both series ran.
    assert loaded["method"]["half_floor_capacity_rate_per_s"] == 100
    first_row = base["steps"][0]
    assert base["at_half_floor_capacity"]["latency_ms"] == first_row["latency_ms"]
    assert ratios["p99_ms_at_half_floor_capacity"] == first_row["latency_ms"]["p99"]
    # The same step under two names: equal CPU at the one rate both ran.
    assert ratios["cpu_us_per_request"] == 1.0 and ratios["cpu_ratio_rates_per_s"] == [100]
    met = loaded["targets"]["met"]["gateway-2102"]
    # Issue goals per series: 2102 at >= 0.5x the floor's capacity and <= 2.0x its CPU.
    assert loaded["targets"]["goals"]["gateway-2102"] == {
        "capacity_ratio_min": 0.5, "cpu_ratio_max": 2.0, "p99_ms_at_half_capacity_max": 1000.0}
    assert met["capacity"] is True and met["cpu_us_per_request"] is True
    assert met["p99_at_half_floor_capacity"] is True and met["all"] is False
    # The second series' own capacity is 100/s: half of it (50/s) was never run, so no verdict.
    assert loaded["servers"]["gateway-2102"]["at_half_own_capacity"] is None
    assert ratios["p99_ms_at_half_own_capacity"] is None and met["p99_at_half_own_capacity"] is False
    assert base["at_half_own_capacity"]["latency_ms"] == first_row["latency_ms"]
    table = summary_table(loaded)
    assert "gateway-2102" in table and "p99 ms @100/s" in table and "p99 ms @cap/2" in table
    assert loaded["durable_floor"] is None and "against" not in table

    # With the durable floor: a reference, compared like the others, judged against no goals; the
    # gateway's CPU and capacity are also given against it.
    durable = Sweep("baseline-durable", floor.steps, floor.capacity_rate_per_s)
    with_durable = build_report([floor, durable, other], "baseline", config.seed, config, pinning, "baseline-durable")
    assert with_durable["durable_floor"] == "baseline-durable"
    assert set(with_durable["ratios"]) == {"baseline-durable", "gateway-2102"}
    assert set(with_durable["targets"]["goals"]) == set(with_durable["targets"]["met"]) == {"gateway-2102"}
    against = with_durable["ratios"]["gateway-2102"]
    assert against["cpu_us_per_request_vs_durable_floor"] == 1.0 and against["cpu_vs_durable_floor_rates_per_s"] == [100]
    assert against["capacity_vs_durable_floor"] == 0.5
    assert "cpu_us_per_request_vs_durable_floor" not in with_durable["ratios"]["baseline-durable"]
    table = summary_table(with_durable)
    assert "(durable floor)" in table
    assert "gateway-2102 against baseline-durable: cpu ratio 1.00, capacity ratio 0.500" in table

    png = png_path.read_bytes()
    assert png.startswith(PNG_MAGIC)
    height, width, _ = matplotlib.image.imread(png_path).shape
    assert width > height > 300


def _row(rate_per_s: float, cpu_us: float, achieved_share: float = 1.0, error_ratio: float = 0.0) -> dict:
    return {"target_rate_per_s": rate_per_s, "achieved_rate_per_s": rate_per_s * achieved_share,
            "error_ratio": error_ratio, "server_cpu_us_per_request": cpu_us}


def test_cpu_is_compared_at_equal_rates_the_servers_kept_up_with() -> None:
    floor = [_row(100, 1000), _row(150, 900), _row(225, 800), _row(340, 700, achieved_share=0.5)]
    gateway = [_row(100, 3000), _row(150, 1800), _row(225, 4000, error_ratio=0.2), _row(340, 100),
               _row(50, 5000)]
    ratio, rates = cpu_ratio_at_equal_rates(gateway, floor, 0.01)
    # 225/s: the gateway fell behind; 340/s: the floor did; 50/s: the floor never ran it.
    assert rates == [100, 150] and ratio == 2.5
    # The per-server figure is the median over the steps it kept up with.
    assert cpu_us_per_request(gateway, 0.01) == (1800 + 3000) / 2  # 225/s left out
    assert cpu_us_per_request([_row(100, 10, error_ratio=0.5)], 0.01) == 10
    # No common rate: the ratio of the two medians.
    assert cpu_ratio_at_equal_rates([_row(60, 2000)], floor, 0.01) == (round(2000 / 900, 4), [])
