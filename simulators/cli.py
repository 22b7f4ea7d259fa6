"""`yibao-sim`: drive simulated POS traffic against a gateway and check it with an oracle.

    yibao-sim run --region DIR [--url URL] --seconds N --rate R --seed S
    yibao-sim record --region DIR --out TRACE --seconds N --rate R --seed S
    yibao-sim replay TRACE --region DIR [--url URL] [--speed X]

Exit status: 0 clean run, 1 an oracle violation (the report lists each), 2 bad usage or an
unreadable region/trace or an unreachable gateway.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from simulators.region import RegionReadError, load_region
from simulators.runner import RunResult, read_trace, run, write_trace
from simulators.traffic import TrafficModel

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
        if name == "run":
            command.add_argument("--url", help="gateway data URL (default: the region's gateway.toml)")
        else:
            command.add_argument("--out", required=True)
    replay = commands.add_parser("replay")
    replay.add_argument("trace")
    replay.add_argument("--region", required=True)
    replay.add_argument("--url")
    replay.add_argument("--speed", type=float, default=1.0)
    return parser


def _finish(result: RunResult) -> int:
    print(result.table)
    if result.ok:
        return EXIT_OK
    print(f"yibao-sim: {len(result.oracle.violations)} oracle violation(s), see above", file=sys.stderr)
    return EXIT_VIOLATION


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `yibao-sim`; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        region = load_region(args.region)
        if args.command == "record":
            model = TrafficModel(region, args.seed, args.rate)
            count = write_trace(args.out, model.intents(args.seconds))
            print(f"yibao-sim: seed {args.seed}: {count} intents written to {args.out}")
            return EXIT_OK
        if args.command == "run":
            print(f"yibao-sim: seed {args.seed}", flush=True)
            intents = TrafficModel(region, args.seed, args.rate).intents(args.seconds)
            return _finish(run(region, intents, args.url))
        if args.speed <= 0:
            raise ValueError("--speed must be positive")
        return _finish(run(region, list(read_trace(args.trace)), args.url, args.speed))
    except (RegionReadError, ValueError, KeyError, OSError) as error:
        print(f"yibao-sim: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
