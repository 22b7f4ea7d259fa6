"""`yibao-gateway admin ...`: the admin API from a shell (JSON over HTTP with urllib).

The admin URL comes from `--url`, or from `--config gateway.toml` (its listen.admin); the bearer
token from `--token-file` (first line) or the environment variable YIBAO_ADMIN_TOKEN. Answers are
printed as JSON on stdout; any failure prints one line on stderr and exits non-zero (1 for an
HTTP or connection error, 2 for a usage error).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["main"]

TOKEN_ENV = "YIBAO_ADMIN_TOKEN"
TIMEOUT_S = 30.0
# Change fields whose values are integers; every other field is sent as a string.
INT_FIELDS = frozenset({"monthly_cap_fen", "otc_allowance_fen", "coverage_permille"})
_ENTITIES = {"suspend": ("institution", "operator"), "resume": ("institution", "operator"),
             "block": ("card", "person"), "unblock": ("card", "person"), "revoke": ("terminal",)}
_COLLECTIONS = {"institution": "institutions", "operator": "operators", "terminal": "terminals",
                "card": "cards", "person": "persons", "change": "changes"}


class CliError(Exception):
    """One line for stderr; `code` is the exit status."""

    def __init__(self, msg: str, code: int = 1) -> None:
        super().__init__(msg)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:   # one line, no usage dump, exit 2
        raise CliError(f"usage: {message} (see yibao-gateway admin --help)", 2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="yibao-gateway admin", description="Admin API actions (docs/admin.md).")
    parser.add_argument("--url", help="admin base URL, e.g. http://127.0.0.1:8601")
    parser.add_argument("--config", help="gateway.toml: the admin URL is its listen.admin")
    parser.add_argument("--token-file", help=f"file holding the bearer token (default: ${TOKEN_ENV})")
    actions = parser.add_subparsers(dest="action", required=True, parser_class=_Parser)
    for verb, entities in _ENTITIES.items():
        sub = actions.add_parser(verb, help=f"{verb} {' / '.join(entities)} (immediate, journaled)")
        sub.add_argument("entity", choices=entities)
        sub.add_argument("id")
        sub.add_argument("--reason", default="")
    show = actions.add_parser("show", help="look up an institution, person, terminal, operator, card or change")
    show.add_argument("entity", choices=tuple(_COLLECTIONS))
    show.add_argument("id")
    propose = actions.add_parser("propose", help="propose a policy change: KIND field=value ...")
    propose.add_argument("kind")
    propose.add_argument("fields", nargs="*", metavar="field=value")
    propose.add_argument("--reason", default="")
    for verb in ("approve", "reject"):
        sub = actions.add_parser(verb, help=f"{verb} a proposed change (role policy)")
        sub.add_argument("id")
        if verb == "reject":
            sub.add_argument("--reason", default="")
    changes = actions.add_parser("changes", help="list proposed changes")
    changes.add_argument("--status", choices=("proposed", "applied", "rejected", "expired"))
    audit = actions.add_parser("audit", help="read the audit trail")
    audit.add_argument("--after", type=int, default=0)
    audit.add_argument("--limit", type=int, default=100)
    rotate = actions.add_parser("rotate-key", help="rotate the gateway's response-signing key")
    rotate.add_argument("--reason", default="")
    snapshot = actions.add_parser("snapshot", help="write a snapshot now")
    snapshot.add_argument("--reason", default="")
    actions.add_parser("keys", help="list the gateway's signing keys")
    return parser


def _field(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise CliError(f"usage: expected field=value, got {text!r}", 2)
    if name in INT_FIELDS:
        if not re.fullmatch(r"-?[0-9]+", value):
            raise CliError(f"usage: {name} must be an integer, got {value!r}", 2)
        return name, int(value)
    return name, value


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    """(method, path with query, JSON body) for the parsed action."""
    quote = lambda text: urllib.parse.quote(text, safe="")  # noqa: E731
    action = args.action
    if action in _ENTITIES:
        return "POST", f"/admin/v1/{_COLLECTIONS[args.entity]}/{quote(args.id)}/{action}", {"reason": args.reason}
    if action == "show":
        return "GET", f"/admin/v1/{_COLLECTIONS[args.entity]}/{quote(args.id)}", None
    if action == "propose":
        body = dict(_field(text) for text in args.fields)
        return "POST", "/admin/v1/changes", {"kind": args.kind, **body, "reason": args.reason}
    if action in ("approve", "reject"):
        body = {"reason": args.reason} if action == "reject" else {}
        return "POST", f"/admin/v1/changes/{quote(args.id)}/{action}", body
    if action == "changes":
        query = f"?status={args.status}" if args.status else ""
        return "GET", f"/admin/v1/changes{query}", None
    if action == "audit":
        return "GET", f"/admin/v1/audit?after={args.after}&limit={args.limit}", None
    if action == "rotate-key":
        return "POST", "/admin/v1/keys/rotate", {"reason": args.reason}
    if action == "snapshot":
        return "POST", "/admin/v1/snapshot", {"reason": args.reason}
    assert action == "keys", action
    return "GET", "/admin/v1/keys", None


def _base_url(args: argparse.Namespace) -> str:
    if args.url:
        return args.url.rstrip("/")
    if not args.config:
        raise CliError("usage: give --url or --config gateway.toml", 2)
    from gateway.config import ConfigError, load_config
    try:
        admin = load_config(args.config).listen.admin
    except (ConfigError, OSError) as exc:
        raise CliError(str(exc).splitlines()[0] if str(exc) else repr(exc)) from None
    host = "127.0.0.1" if admin.host in ("0.0.0.0", "") else admin.host
    return f"http://{host}:{admin.port}"


def _token(args: argparse.Namespace) -> str:
    if args.token_file:
        try:
            token = pathlib.Path(args.token_file).read_text(encoding="utf-8").splitlines()[:1]
        except OSError as exc:
            raise CliError(f"{args.token_file}: cannot read the token: {exc.strerror or exc}") from None
        if token and token[0].strip():
            return token[0].strip()
        raise CliError(f"{args.token_file}: empty token file")
    token_env = os.environ.get(TOKEN_ENV, "").strip()
    if not token_env:
        raise CliError(f"no token: give --token-file or set {TOKEN_ENV}", 2)
    return token_env


def _send(url: str, method: str, token: str, body: dict[str, Any] | None) -> Any:
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
            return json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise CliError(f"HTTP {exc.code}: {_error_text(exc.read())}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"cannot reach {url}: {reason}") from None
    except ValueError:
        raise CliError(f"{url}: the answer is not JSON") from None


def _error_text(raw: bytes) -> str:
    try:
        payload = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:200]
    if isinstance(payload, dict) and "error" in payload:
        field = f" (field {payload['field']})" if payload.get("field") else ""
        return f"{payload['error']}{field}"
    return str(payload)[:200]


def main(argv: list[str]) -> int:
    """Run one admin action; returns the exit status (0 on success)."""
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as exc:   # --help printed its text
            return exc.code if isinstance(exc.code, int) else 0
        method, path, body = _request(args)
        answer = _send(_base_url(args) + path, method, _token(args), body)
    except CliError as exc:
        print(f"yibao-gateway admin: {exc}", file=sys.stderr)
        return exc.code
    print(json.dumps(answer, indent=2, ensure_ascii=False))
    return 0
