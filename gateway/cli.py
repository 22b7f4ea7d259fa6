"""`yibao-gateway`: init a region, serve it, make a signing key, run admin actions.

Expected failures (a bad config file, a port in use, a corrupt journal, an existing region) print
one line `yibao-gateway: <what and where>` on stderr and exit 2; nothing prints a traceback for
them. Exit codes: 0 done, 1 an unexpected error (its traceback goes to the JSON log), 2 refused.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any

import trio

__all__ = ["main"]

EXIT_REFUSED = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yibao-gateway",
                                     description="Real-time medical-insurance POS settlement gateway.")
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init", help="write a runnable region directory")
    init.add_argument("--out", required=True, type=pathlib.Path, help="directory to create")
    init.add_argument("--profile", default="small", choices=("small", "pengzhou"),
                      help="small: a handful of institutions; pengzhou: 415 pharmacies, 122 clinics")
    init.add_argument("--seed", default=1, type=int, help="same seed, same keys and files")

    serve = commands.add_parser("serve", help="serve the data and admin listeners")
    serve.add_argument("--config", required=True, type=pathlib.Path, help="path to gateway.toml")
    serve.add_argument("--test-clock", action="store_true",
                       help="tests only: enable POST /admin/v1/test/clock to set the gateway clock")

    keygen = commands.add_parser("keygen", help="write a new Ed25519 signing key (PKCS8 PEM)")
    keygen.add_argument("--out", required=True, type=pathlib.Path, help="PEM file to create")

    commands.add_parser("admin", help="admin API actions (yibao-gateway admin --help)",
                        add_help=False)
    _report_parser(commands)
    return parser


def _report_parser(commands: Any) -> None:
    report = commands.add_parser("report", help="supervision reports, offline from a data directory")
    reports = report.add_subparsers(dest="report", required=True)
    for name, options in (("monthly", ("month", "by")), ("alerts", ("date",)), ("clearing", ("month",))):
        command = reports.add_parser(name, help=f"the body of GET /admin/v1/{_REPORT_PATHS[name]}")
        command.add_argument("--config", required=True, type=pathlib.Path, help="path to gateway.toml")
        for option in options:
            command.add_argument(f"--{option}", required=True, help=_REPORT_OPTIONS[option])
        command.add_argument("--format", default="json", choices=("json", "csv"),
                             help="json (default): the admin API's body; csv: a header row, then one row each")


_REPORT_PATHS = {"monthly": "reports/monthly", "alerts": "alerts", "clearing": "clearing"}
_REPORT_OPTIONS = {"month": "YYYYMM", "date": "YYYYMMDD", "by": "institution, doctor or operator"}


def _refuse(message: str) -> int:
    print(f"yibao-gateway: {message}", file=sys.stderr)
    return EXIT_REFUSED


def _init(args: argparse.Namespace) -> int:
    from gateway.region import RegionError, init_region

    try:
        summary = init_region(args.out, args.profile, args.seed)
    except RegionError as exc:
        return _refuse(str(exc))
    counts = ", ".join(f"{kind} {count}" for kind, count in summary.counts.items())
    print(f"region '{summary.profile}' (seed {summary.seed}) written to {summary.out_dir}: {counts}; "
          f"gateway key {summary.kid}")
    print(f"serve it: yibao-gateway serve --config {summary.out_dir / 'gateway.toml'}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config
    from gateway.server.app import StartupError, serve

    try:
        config = load_config(args.config)
        trio.run(lambda: serve(config, test_clock=args.test_clock))
    except KeyboardInterrupt:  # Ctrl-C before the signal handler is installed: nothing to drain
        return 130
    except BaseException as exc:  # noqa: BLE001 - sorted below: expected failures get one line
        expected = _expected_failure(exc, (ConfigError, StartupError))
        if expected is None:
            raise
        return _refuse(str(expected))
    return 0


def _expected_failure(exc: BaseException, kinds: tuple[type[Exception], ...]) -> BaseException | None:
    """The first of `kinds` in `exc`, looking inside exception groups (trio's nurseries)."""
    if isinstance(exc, kinds):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _expected_failure(inner, kinds)
            if found is not None:
                return found
    return None


def _keygen(args: argparse.Namespace) -> int:
    from gateway.region import RegionError, keygen

    try:
        kid = keygen(args.out)
    except RegionError as exc:
        return _refuse(str(exc))
    print(f"wrote {args.out}: kid {kid}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config
    from gateway.core import FieldError
    from gateway.journal import JournalCorrupt
    from gateway.reports import REPORTS, check_params, recovered_core, render, report_body
    from gateway.server.app import StartupError

    params = {name: getattr(args, name) for name in REPORTS[args.report][0]}
    try:
        check_params(args.report, params)
        config = load_config(args.config)
        body = report_body(recovered_core(config), args.report, params)
    except FieldError as exc:
        return _refuse(f"--{exc.field}: {exc.msg}")
    except (ConfigError, StartupError, JournalCorrupt, ValueError) as exc:
        return _refuse(str(exc))
    sys.stdout.buffer.write(render(body, args.format))
    sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["admin"]:
        from gateway.admin.cli import main as admin_main

        return admin_main(argv[1:])
    args = _parser().parse_args(argv)
    handlers = {"init": _init, "serve": _serve, "keygen": _keygen, "report": _report}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
