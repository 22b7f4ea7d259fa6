"""Benchmark reports: a JSON document, a summary table and a PNG of latency curves.

The JSON carries every step's HdrHistogram (base64, the standard HdrHistogram encoding), so the
plot is drawn from the JSON alone and any percentile can be recomputed later.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import platform
import statistics
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only, also on CI machines

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import matplotlib.ticker  # noqa: E402
from hdrh.histogram import HdrHistogram  # noqa: E402

from load_tests.servers import Pinning  # noqa: E402
from load_tests.sweep import Step, Sweep, SweepConfig  # noqa: E402

# v4: the durable floor as a reference series; v3: goals per series; v2: half-own-capacity probes
SCHEMA = "yibao-load/bench/v4"
# Spectrum x positions: percentiles 0 .. 99.999 as 1/(1-p), the classic HdrHistogram plot.
SPECTRUM_DECADES = 5
SPECTRUM_POINTS_PER_DECADE = 20
SPECTRUM_TICKS = {2: "50%", 10: "90%", 100: "99%", 1000: "99.9%", 10000: "99.99%", 100000: "99.999%"}
# The gateway's goals relative to the floor, per series: it must sustain at least this share of
# the floor's capacity, and spend at most this multiple of the floor's CPU per request. A series
# not named here is held to DEFAULT_GOALS.
SERIES_GOALS = {
    "gateway-2102": {"capacity_ratio_min": 0.5, "cpu_ratio_max": 2.0},
    "gateway-1101": {"capacity_ratio_min": 0.7, "cpu_ratio_max": 1.4},
}
DEFAULT_GOALS = {"capacity_ratio_min": 0.8, "cpu_ratio_max": 1.25}
# A step the server "kept up with" achieved at least this share of the offered rate.
KEPT_UP_SHARE = 0.9
SERIES_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")


def machine_facts(pinning: Pinning) -> dict[str, Any]:
    """nproc, Python version, platform, and the CPU pinning used."""
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pinning": dataclasses.asdict(pinning),
    }


def step_row(step: Step) -> dict[str, Any]:
    """One step as a JSON row (latencies in ms, the histogram in base64 HdrHistogram encoding)."""
    r = step.result
    return {
        "target_rate_per_s": r.config.rate_per_s,
        "achieved_rate_per_s": round(r.achieved_rate_per_s, 1),
        "seconds": r.config.duration_s,
        "scheduled": r.scheduled,
        "ok": r.ok,
        "errors": dict(sorted(r.errors.items())),
        "error_count": r.error_count,
        "unfinished": r.unfinished,
        "error_ratio": round(r.error_ratio, 6),
        "latency_ms": {k: round(v, 3) for k, v in r.latency_ms().items()},
        "server_cpu_us_per_request": _round(step.server_cpu_us_per_request),
        "generator_cpu_share": round(r.generator_cpu_s / r.elapsed_s, 3),
        "passed": step.passed,
        "histogram_us": r.histogram.encode().decode("ascii") if r.histogram.get_total_count() else "",
    }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 4)


def half_rate_per_s(capacity_rate_per_s: float) -> float:
    """The rate of a half-capacity probe: half a capacity, rounded to a whole rate."""
    return float(round(capacity_rate_per_s / 2))


def _row_at(rows: list[dict[str, Any]], rate_per_s: float) -> dict[str, Any] | None:
    near = [row for row in rows if rate_per_s and abs(row["target_rate_per_s"] - rate_per_s) <= 0.01 * rate_per_s]
    return near[-1] if near else None


def unsaturated(row: dict[str, Any], error_ratio_max: float) -> bool:
    """The server kept up in this step: few errors and nearly the offered rate achieved."""
    return row["error_ratio"] < error_ratio_max and row["achieved_rate_per_s"] >= KEPT_UP_SHARE * row["target_rate_per_s"]


def cpu_us_per_request(rows: list[dict[str, Any]], error_ratio_max: float) -> float | None:
    """The median server CPU µs per request over the steps the server kept up with (else all steps).

    An overloaded step also burns CPU on requests that end unfinished: queueing waste, not the
    cost of a request. The median keeps one step disturbed by another process from moving it.
    """
    kept_up = [row for row in rows if unsaturated(row, error_ratio_max)] or rows
    costs = [row["server_cpu_us_per_request"] for row in kept_up if row["server_cpu_us_per_request"] is not None]
    return statistics.median(costs) if costs else None


def cpu_ratio_at_equal_rates(rows: list[dict[str, Any]], floor_rows: list[dict[str, Any]],
                             error_ratio_max: float) -> tuple[float | None, list[float]]:
    """Median of (CPU µs per request / the floor's) over offered rates both servers kept up with.

    Per-request CPU falls as the rate rises (fixed per-wakeup and idle costs spread over more
    requests), so two servers are only compared at the same offered rate. Returns the ratio and
    the rates used; with no common rate, the ratio of the two medians and no rates.
    """
    ratios, rates = [], []
    for row in rows:
        floor_row = _row_at(floor_rows, row["target_rate_per_s"])
        if floor_row is None or not (unsaturated(row, error_ratio_max) and unsaturated(floor_row, error_ratio_max)):
            continue
        if row["server_cpu_us_per_request"] and floor_row["server_cpu_us_per_request"]:
            ratios.append(row["server_cpu_us_per_request"] / floor_row["server_cpu_us_per_request"])
            rates.append(row["target_rate_per_s"])
    if ratios:
        return round(statistics.median(ratios), 4), sorted(set(rates))
    return _ratio(cpu_us_per_request(rows, error_ratio_max), cpu_us_per_request(floor_rows, error_ratio_max)), []


def _targets(ratios: dict[str, Any], p99_ms_max: float, durable_floor_name: str | None) -> dict[str, Any]:
    """Each series but the floors against its goals: capacity ratio, CPU ratio, p99 at half capacity.

    "p99 ≤ 10 ms at half that capacity" is judged both ways it can be read: at half the floor's
    capacity (what a server at the capacity goal would face) and at half the series' own.
    The durable floor is measured and compared, never judged.
    """
    verdicts, all_goals = {}, {}
    for name, ratio in ratios.items():
        if name == durable_floor_name:
            continue
        goals = {**SERIES_GOALS.get(name, DEFAULT_GOALS), "p99_ms_at_half_capacity_max": p99_ms_max}
        all_goals[name] = goals
        checks = {
            "capacity": ratio["capacity"] is not None and ratio["capacity"] >= goals["capacity_ratio_min"],
            "cpu_us_per_request": ratio["cpu_us_per_request"] is not None
            and ratio["cpu_us_per_request"] <= goals["cpu_ratio_max"],
            "p99_at_half_floor_capacity": ratio["p99_ms_at_half_floor_capacity"] is not None
            and ratio["p99_ms_at_half_floor_capacity"] <= p99_ms_max,
            "p99_at_half_own_capacity": ratio["p99_ms_at_half_own_capacity"] is not None
            and ratio["p99_ms_at_half_own_capacity"] <= p99_ms_max,
        }
        verdicts[name] = {**checks, "all": all(checks.values())}
    return {"goals": all_goals, "met": verdicts}


def build_report(sweeps: list[Sweep], floor_name: str, seed: int, sweep_config: SweepConfig,
                 pinning: Pinning, durable_floor_name: str | None = None) -> dict[str, Any]:
    """Assemble the report; ratios are each non-floor server's over the floor's.

    Args:
        sweeps: one Sweep per server/traffic, the floor among them.
        floor_name: the name of the floor sweep ("baseline").
        seed: the run's seed.
        sweep_config: the sweep parameters (recorded under "method").
        pinning: the CPU pinning used.
        durable_floor_name: the durable floor's sweep, if run: a reference with no goals of its
            own, against which each other series' CPU and capacity are also given.
    """
    error_ratio_max = sweep_config.error_ratio_max
    servers = {}
    for s in sweeps:
        rows = [step_row(step) for step in s.steps]
        servers[s.name] = {"capacity_rate_per_s": s.capacity_rate_per_s,
                           "cpu_us_per_request": _round(cpu_us_per_request(rows, error_ratio_max)), "steps": rows}
    half_floor_rate = half_rate_per_s(servers[floor_name]["capacity_rate_per_s"])
    for server in servers.values():
        server["at_half_floor_capacity"] = _probe(server["steps"], half_floor_rate)
        server["at_half_own_capacity"] = _probe(server["steps"], half_rate_per_s(server["capacity_rate_per_s"]))
    floor = servers[floor_name]
    ratios = {}
    for name, server in servers.items():
        if name == floor_name:
            continue
        cpu_ratio, cpu_rates = cpu_ratio_at_equal_rates(server["steps"], floor["steps"], error_ratio_max)
        ratios[name] = {
            "capacity": _ratio(server["capacity_rate_per_s"], floor["capacity_rate_per_s"]),
            "cpu_us_per_request": cpu_ratio,
            "cpu_ratio_rates_per_s": cpu_rates,
            "p99_ms_at_half_floor_capacity": _p99(server["at_half_floor_capacity"]),
            "p99_ms_at_half_own_capacity": _p99(server["at_half_own_capacity"]),
        }
    if durable_floor_name is not None:
        durable = servers[durable_floor_name]
        for name, ratio in ratios.items():
            if name == durable_floor_name:
                continue
            ratio["cpu_us_per_request_vs_durable_floor"], ratio["cpu_vs_durable_floor_rates_per_s"] = \
                cpu_ratio_at_equal_rates(servers[name]["steps"], durable["steps"], error_ratio_max)
            ratio["capacity_vs_durable_floor"] = _ratio(servers[name]["capacity_rate_per_s"],
                                                        durable["capacity_rate_per_s"])
    return {
        "schema": SCHEMA,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "floor": floor_name,
        "durable_floor": durable_floor_name,
        "machine": machine_facts(pinning),
        "method": {**dataclasses.asdict(sweep_config), "latency_from": "intended send time",
                   "half_floor_capacity_rate_per_s": half_floor_rate},
        "servers": servers,
        "ratios": ratios,
        "targets": _targets(ratios, sweep_config.p99_ms_max, durable_floor_name),
    }


def _probe(rows: list[dict[str, Any]], rate_per_s: float) -> dict[str, Any] | None:
    """The step run at `rate_per_s` (a half-capacity probe), summarised; None if there is none."""
    row = _row_at(rows, rate_per_s)
    return None if row is None else {
        "target_rate_per_s": row["target_rate_per_s"], "achieved_rate_per_s": row["achieved_rate_per_s"],
        "latency_ms": row["latency_ms"], "error_ratio": row["error_ratio"]}


def _p99(probe: dict[str, Any] | None) -> float | None:
    return None if probe is None else probe["latency_ms"]["p99"]


def summary_table(report: dict[str, Any]) -> str:
    """A fixed-width table per server: capacity, CPU µs/request, ratios to the floor, p99s, goals met."""
    half_rate = report["method"]["half_floor_capacity_rate_per_s"]
    lines = [f"{'server':<18}{'capacity/s':>11}{'cpu us/req':>11}{'cap ratio':>10}{'cpu ratio':>10}"
             f"{'p99 ms @cap':>12}{f'p99 ms @{half_rate:.0f}/s':>15}{'p99 ms @cap/2':>14}  goals met"]
    for name, server in report["servers"].items():
        ratio = report["ratios"].get(name, {"capacity": 1.0, "cpu_us_per_request": 1.0})
        at_capacity = _row_at([row for row in server["steps"] if row["passed"]], server["capacity_rate_per_s"])
        p99_cap = at_capacity["latency_ms"]["p99"] if at_capacity else None
        p99_half_floor = _p99(server.get("at_half_floor_capacity"))
        p99_half_own = _p99(server.get("at_half_own_capacity"))
        met = report["targets"]["met"].get(name)
        verdict = ("(floor)" if name == report["floor"] else "(durable floor)" if met is None
                   else ", ".join(k for k, v in met.items() if v and k != "all") or "none")
        lines.append(f"{name:<18}{server['capacity_rate_per_s']:>11.0f}{_fmt(server['cpu_us_per_request'], 0):>11}"
                     f"{_fmt(ratio['capacity'], 3):>10}{_fmt(ratio['cpu_us_per_request'], 2):>10}"
                     f"{_fmt(p99_cap, 2):>12}{_fmt(p99_half_floor, 2):>15}{_fmt(p99_half_own, 2):>14}  {verdict}")
    for name, ratio in report["ratios"].items():
        if "cpu_us_per_request_vs_durable_floor" in ratio:   # every series but the floors, with one run
            lines.append(f"{name} against {report['durable_floor']}: cpu ratio "
                         f"{_fmt(ratio['cpu_us_per_request_vs_durable_floor'], 2)}, "
                         f"capacity ratio {_fmt(ratio['capacity_vs_durable_floor'], 3)}")
    return "\n".join(lines)


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def spectrum(histogram: HdrHistogram) -> tuple[list[float], list[float]]:
    """(x = 1/(1-p), latency ms) pairs from p = 0 up to the last percentile the count resolves."""
    count = histogram.get_total_count()
    xs, ys = [], []
    for i in range(SPECTRUM_DECADES * SPECTRUM_POINTS_PER_DECADE + 1):
        x = 10 ** (i / SPECTRUM_POINTS_PER_DECADE)
        if x > count:
            break
        xs.append(x)
        ys.append(histogram.get_value_at_percentile(100.0 * (1 - 1 / x)) / 1000)
    xs.append(max(count, 1))
    ys.append(histogram.get_max_value() / 1000)
    return xs, ys


# Plain numbers on the log latency axes ("10", "0.5"), not powers of ten.
_MS_FORMATTER = matplotlib.ticker.FuncFormatter(lambda value, _pos: f"{value:g}")


def plot_report(report: dict[str, Any], png_path: pathlib.Path) -> None:
    """Draw the percentile spectra (every step, all servers) and latency vs throughput to a PNG."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 6))
    for colour, (name, server) in zip(SERIES_COLOURS, report["servers"].items()):
        _plot_spectra(left, name, server, colour)
        _plot_throughput(right, name, server, colour)
    p99_ms_max = report["method"]["p99_ms_max"]
    _style_spectrum_axes(left, p99_ms_max)
    right.axhline(p99_ms_max, color="grey", linestyle=":", label=f"p99 bound {p99_ms_max:g} ms")
    half_rate_per_s = report["method"]["half_floor_capacity_rate_per_s"]
    if half_rate_per_s:
        right.axvline(half_rate_per_s, color="grey", linestyle="--", alpha=0.5,
                      label=f"half floor capacity {half_rate_per_s:.0f}/s")
    right.set_xlabel("achieved throughput (requests/s)")
    right.set_ylabel("latency from intended send time (ms)")
    right.set_yscale("log")
    right.yaxis.set_major_formatter(_MS_FORMATTER)
    right.set_title("Latency vs throughput (solid p99, dashed p50)")
    right.legend(fontsize="small")
    right.grid(True, which="both", alpha=0.3)
    figure.suptitle(f"yibao-gateway open-loop bench, seed {report['seed']}, {report['created_utc']}")
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)


def _plot_spectra(axes: Any, name: str, server: dict[str, Any], colour: str) -> None:
    rows = [row for row in server["steps"] if row["histogram_us"]]
    for index, row in enumerate(rows):
        xs, ys = spectrum(HdrHistogram.decode(row["histogram_us"]))
        at_capacity = row["passed"] and row["target_rate_per_s"] == server["capacity_rate_per_s"]
        label = f"{name} @ {row['target_rate_per_s']:.0f}/s (capacity)" if at_capacity else None
        alpha = 0.25 + 0.75 * (index + 1) / len(rows)
        axes.plot(xs, ys, color=colour, alpha=alpha, linewidth=2.5 if at_capacity else 1.0, label=label)


def _style_spectrum_axes(axes: Any, p99_ms_max: float) -> None:
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xticks(list(SPECTRUM_TICKS), list(SPECTRUM_TICKS.values()))
    axes.yaxis.set_major_formatter(_MS_FORMATTER)
    axes.axhline(p99_ms_max, color="grey", linestyle=":")
    axes.set_xlabel("percentile")
    axes.set_ylabel("latency from intended send time (ms)")
    axes.set_title("Latency by percentile, every step (darker = higher rate)")
    axes.grid(True, which="both", alpha=0.3)
    if axes.get_legend_handles_labels()[0]:  # no labels when no server reached a capacity
        axes.legend(fontsize="small")


def _plot_throughput(axes: Any, name: str, server: dict[str, Any], colour: str) -> None:
    # One point per offered rate: the attempt that decided it (a pass, if a retry passed), so a
    # retried step does not draw a zigzag.
    deciding: dict[float, dict[str, Any]] = {}
    for row in server["steps"]:
        if row["ok"] and not deciding.get(row["target_rate_per_s"], {}).get("passed"):
            deciding[row["target_rate_per_s"]] = row
    rows = [deciding[rate] for rate in sorted(deciding)]
    rates = [row["achieved_rate_per_s"] for row in rows]
    axes.plot(rates, [row["latency_ms"]["p99"] for row in rows], "o-", color=colour, label=f"{name} p99")
    axes.plot(rates, [row["latency_ms"]["p50"] for row in rows], "s--", color=colour, alpha=0.6)
    if server["capacity_rate_per_s"]:
        axes.axvline(server["capacity_rate_per_s"], color=colour, alpha=0.4, linestyle="-.")


def write_report(report: dict[str, Any], out_dir: pathlib.Path, stem: str = "latest") -> tuple[pathlib.Path, pathlib.Path]:
    """Write `<stem>.json` and `<stem>.png` into `out_dir` (created if missing); return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / f"{stem}.json", out_dir / f"{stem}.png"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    plot_report(report, png_path)
    return json_path, png_path
