"""`yibao-sim`: drive simulated POS traffic against a gateway and check it with an oracle.

    yibao-sim run --region DIR [--url URL] --seconds N --rate R --seed S
                  [--profile pharmacy|flat] [--start HH:MM] [--timeout-share X] [--concurrency N]
                  [--v2-checks auto|off|catalogue|full] [--history]
    yibao-sim record --region DIR --out TRACE --seconds N --rate R --seed S
                  [--profile pharmacy|flat] [--start HH:MM] [--timeout-share X]
    yibao-sim replay TRACE --region DIR [--url URL] [--speed X] [--concurrency N]
                  [--v2-checks auto|off|catalogue|full]

Exit status: 0 clean run, 1 an oracle violation (the report lists each), 2 bad usage or an
unreadable region/trace or an unreachable gateway.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence
from typing import Any

from protocol import SHANGHAI
from simulators.oracle_v2 import V2_MODES
from simulators.probe import ProbeError
from simulators.region import Region, RegionReadError, load_region
from simulators.runner import RunResult, read_trace, run, run_with_history, write_trace
from simulators.supervision import HISTORY_PRICE_PERMILLE
from simulators.traffic import PROFILES, TIMEOUT_SHARE, TrafficModel

EXIT_OK, EXIT_VIOLATION, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yibao-sim", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "record"):
        command = commands.add_parser(name)
        command.add_argument("--region", required=True)
        command.add_argument("--seconds", type=float, required=True)
        command.add_argument("--rate", type=float, required=True, help="settle/cancel intents per second")
        command.add_argument("--seed", type=int, required=True)
        command.add_argument("--profile", choices=sorted(PROFILES), default="pharmacy",
                             help="time-of-day shape of the arrival rate (flat: constant)")
        command.add_argument("--start", type=_time_of_day,
                             help="Shanghai time of day at offset 0, HH:MM (default: now)")
        command.add_argument("--timeout-share", type=_share, default=TIMEOUT_SHARE,
                             help=f"share of settlements whose answer is lost (default {TIMEOUT_SHARE})")
        if name == "run":
            command.add_argument("--url", help="gateway data URL (default: the region's gateway.toml)")
            command.add_argument("--concurrency", type=_positive_int,
                                 help="at most N terminals busy at once (default: every terminal)")
            _v2_option(command)
            command.add_argument("--history", action="store_true",
                                 help="first settle the same length of traffic (seed + 1, cheaper) a year earlier "
                                      "under the gateway's test clock (serve --test-clock), for year-on-year figures")
        else:
            command.add_argument("--out", required=True)
    replay = commands.add_parser("replay")
    replay.add_argument("trace")
    replay.add_argument("--region", required=True)
    replay.add_argument("--url")
    replay.add_argument("--speed", type=float, default=1.0)
    replay.add_argument("--concurrency", type=_positive_int)
    _v2_option(replay)
    return parser


def _v2_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--v2-checks", choices=("auto", *V2_MODES), default="auto",
                         help="the oracle's SPEC 13 line checks (auto: as a probe pre-settlement shows)")


def _v2_checks(args: argparse.Namespace) -> str | None:
    return None if args.v2_checks == "auto" else str(args.v2_checks)


def _time_of_day(text: str) -> float:
    """HH:MM as seconds after midnight."""
    hours, _, minutes = text.partition(":")
    if not (hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60):
        raise argparse.ArgumentTypeError(f"expected HH:MM, got {text!r}")
    return float(int(hours) * 3600 + int(minutes) * 60)


def _share(text: str) -> float:
    """A probability, 0..1."""
    try:
        share = float(text)
    except ValueError:
        share = -1.0
    if not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text!r}")
    return share


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _start_s(args: argparse.Namespace) -> float:
    """--start, by default the current Shanghai minute (whole minutes, so `--start` can repeat it)."""
    if args.start is not None:
        return float(args.start)
    now = datetime.datetime.now(tz=SHANGHAI)
    return float(now.hour * 3600 + now.minute * 60)


def _model(region: Region, args: argparse.Namespace, start_s: float) -> TrafficModel:
    """The traffic model of `run`/`record`: profile-shaped from `start_s` (seconds into the day)."""
    return TrafficModel(region, args.seed, args.rate, PROFILES[args.profile], start_s, args.timeout_share)


def _hhmm(start_s: float) -> str:
    return f"{int(start_s) // 3600:02d}:{int(start_s) % 3600 // 60:02d}"


def _finish(result: RunResult) -> int:
    print(result.table)
    if result.ok:
        return EXIT_OK
    print(f"yibao-sim: {len(result.oracle.violations)} oracle violation(s), see above", file=sys.stderr)
    return EXIT_VIOLATION


def _history(region: Region, args: argparse.Namespace, start_s: float, intents: Any) -> int:
    """`run --history`: a year earlier first (seed + 1, prices scaled), then `intents` now."""
    print(f"yibao-sim: --history: seed {args.seed + 1}, unit prices at {HISTORY_PRICE_PERMILLE} per mille, "
          "a year before the gateway's clock", flush=True)
    history = TrafficModel(region, args.seed + 1, args.rate, PROFILES[args.profile], start_s, args.timeout_share,
                           price_permille=HISTORY_PRICE_PERMILLE).intents(args.seconds)
    last_year, this_year = run_with_history(region, history, intents, args.url, concurrency=args.concurrency,
                                            span_s=args.seconds, v2_checks=_v2_checks(args))
    print("last year:")
    print(last_year.table)
    print("this year:")
    return max(_finish(this_year), EXIT_OK if last_year.ok else EXIT_VIOLATION)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `yibao-sim`; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        region = load_region(args.region)
        if args.command == "record":
            start_s = _start_s(args)
            count = write_trace(args.out, _model(region, args, start_s).intents(args.seconds))
            print(f"yibao-sim: seed {args.seed}, start {_hhmm(start_s)}: {count} intents written to {args.out}")
            return EXIT_OK
        if args.command == "run":
            start_s = _start_s(args)
            # Seed, start and profile are what it takes to draw the same traffic again.
            print(f"yibao-sim: seed {args.seed}", flush=True)
            print(f"yibao-sim: --profile {args.profile} --start {_hhmm(start_s)}", flush=True)
            intents = _model(region, args, start_s).intents(args.seconds)
            if args.history:
                return _history(region, args, start_s, intents)
            return _finish(run(region, intents, args.url, concurrency=args.concurrency, span_s=args.seconds,
                               v2_checks=_v2_checks(args)))
        if args.speed <= 0:
            raise ValueError("--speed must be positive")
        intents = list(read_trace(args.trace))
        span_s = intents[-1]["t_s"] / args.speed if intents else 0.0
        return _finish(run(region, intents, args.url, args.speed, concurrency=args.concurrency, span_s=span_s,
                           v2_checks=_v2_checks(args)))
    except (RegionReadError, ValueError, KeyError, OSError, ProbeError) as error:
        print(f"yibao-sim: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
