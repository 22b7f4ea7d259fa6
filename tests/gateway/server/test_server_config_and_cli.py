"""SPEC sections 3 and 10 held against the real gateway: statuses and paths of both listeners (HEAD
and oversized bodies included), the keys document, the default body limit, gateway.toml defaults
and strictness, `serve` refusing unknown keys in any of its files with one line, `init` and
`keygen`, and the test clock with and without --test-clock.
"""

from __future__ import annotations

import base64
import json
import pathlib
import subprocess
import sys
import time
import tomllib

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.cli import main
from gateway.config import ConfigError, HostPort, LimitsConfig, load_config
from gateway.server.app import Gateway
from gateway.server.data import DataApp
from gateway.server.http import Request, serve_connection
from gateway.server.runtime import http_limits
from http_client import RawClient, request
from protocol import ErrCode, TerminalSession
from protocol.terminal import verify_answer
from server_fakes import make_runtime
from server_region import RegionClient, make_region

MSGPACK = "application/msgpack"


async def start(nursery: trio.Nursery, region: pathlib.Path, **kwargs: object) -> tuple[Gateway, RegionClient]:
    gateway = Gateway(load_config(region / "gateway.toml"), **kwargs)  # type: ignore[arg-type]
    ports = await nursery.start(gateway.run)
    return gateway, RegionClient(region, ports["data"], ports["admin"])


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        client = RawClient(stream)
        await client.send(raw)
        reply = await client.reply()
    return reply.status, reply.headers, reply.body


def bearer(client: RegionClient, role: str) -> str:
    token = next(a["token"] for a in client.sim["admins"] if a["role"] == role)
    return f"authorization: Bearer {token}\r\n"


# -- section 3: the data listener -----------------------------------------------------------------

PLAIN_STATUSES = [
    ("GET", "/", 404), ("GET", "/fsi/v1/nothing", 404), ("GET", "/fsi/v1/tx/", 404),
    ("GET", "/fsi/v1/tx", 405), ("PUT", "/fsi/v1/tx", 405), ("POST", "/fsi/v1/keys", 405),
    ("POST", "/metrics", 405), ("POST", "/healthz", 405), ("DELETE", "/readyz", 405),
    ("GET", "/healthz", 200), ("GET", "/readyz", 200),
]


async def test_data_listener_statuses_paths_and_plain_bodies(tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    gateway, client = await start(nursery, make_region(tmp_path))
    for method, path, expected in PLAIN_STATUSES:
        body = b"x" if method in ("POST", "PUT") else b""
        status, headers, _ = await exchange(client.data_port, request(method, path, body, "text/plain" if body else None))
        assert status == expected, (method, path, status)
        assert headers["content-type"].startswith("text/plain"), (method, path)
    status, headers, body = await exchange(client.data_port, request("GET", "/metrics"))
    assert status == 200 and headers["content-type"].startswith("text/plain") and b"yb_build_info" in body
    # The admin API never listens on the data port, even with a valid token.
    for method, path in (("GET", "/admin/v1/audit"), ("POST", "/admin/v1/snapshot")):
        raw = request(method, path, b"{}" if method == "POST" else b"", "application/json", bearer(client, "policy"))
        assert (await exchange(client.data_port, raw))[0] == 404, path
    # And the admin listener does not take transactions.
    term = client.pharmacy_terminal()
    signin = term.signin_frame(client.new_msgid(term), int(time.time() * 1000))
    assert (await exchange(client.admin_port, request("POST", "/fsi/v1/tx", signin, MSGPACK)))[0] == 404
    gateway.stop()


async def test_admin_listener_health_readiness_and_metrics_follow_the_same_rules(
        tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    gateway, client = await start(nursery, make_region(tmp_path))
    for method, path, expected in [("GET", "/healthz", 200), ("GET", "/readyz", 200), ("GET", "/metrics", 200),
                                   ("POST", "/healthz", 405), ("POST", "/metrics", 405), ("PUT", "/readyz", 405),
                                   ("GET", "/nope", 404), ("GET", "/fsi/v1/keys", 404)]:
        body = b"x" if method != "GET" else b""
        status, headers, _ = await exchange(client.admin_port, request(method, path, body, "text/plain" if body else None))
        assert status == expected, (method, path, status)
        assert headers["content-type"].startswith("text/plain"), (method, path)
    gateway.stop()


async def test_keys_document_has_exactly_the_spec_shape(tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    region = make_region(tmp_path)
    gateway, client = await start(nursery, region)
    status, headers, body = await exchange(client.data_port, request("GET", "/fsi/v1/keys"))
    assert (status, headers["content-type"]) == (200, "application/json")
    document = json.loads(body)
    assert list(document) == ["keys"] and len(document["keys"]) == 1
    key = document["keys"][0]
    assert set(key) == {"kid", "alg", "public_key", "status"}
    assert (key["alg"], key["status"]) == ("Ed25519", "active") and key["kid"]
    raw = base64.b64decode(key["public_key"], validate=True)
    assert len(raw) == 32 and base64.b64encode(raw).decode() == key["public_key"]
    gateway.stop()


async def test_every_tx_answer_is_a_signed_frame_with_the_spec_status(
        tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    gateway, client = await start(nursery, make_region(tmp_path))
    keys = await client.keys()
    stranger = TerminalSession(dev_no="TUNKNOWN01", fixmedins_code=client.pharmacy_terminal().fixmedins_code,
                               admdvs="510182", opter="OPX", opter_type="1",
                               private_key=Ed25519PrivateKey.generate())
    unknown = stranger.signin_frame(client.new_msgid(stranger), int(time.time() * 1000))
    term = await client.sign_in()
    declined = term.request_frame("1101", client.new_msgid(term), {"mdtrt_cert_type": "99"}, int(time.time() * 1000))
    cases = [
        (b"\xc1 not msgpack", MSGPACK, 400, ErrCode.MALFORMED_FRAME),
        (unknown, MSGPACK, 401, ErrCode.UNKNOWN_TERMINAL),
        (unknown, "application/json", 415, ErrCode.UNSUPPORTED_MEDIA_TYPE),
        (declined, MSGPACK, 200, ErrCode.CREDENTIAL_NOT_ACCEPTED),
    ]
    for frame, content_type, expected_status, code in cases:
        status, headers, answer = await exchange(client.data_port, request("POST", "/fsi/v1/tx", frame, content_type))
        envelope = verify_answer(answer, keys)
        assert (status, headers["content-type"], envelope.err_code) == (expected_status, MSGPACK, code.wire)
        assert envelope.infcode == -2
    gateway.stop()


async def test_the_default_body_limit_is_64_kib_exactly(tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    gateway, client = await start(nursery, make_region(tmp_path))
    keys = await client.keys()
    limit = 64 * 1024
    # Exactly the limit is read (and found undecodable); one byte more is refused unread.
    for size, expected_status, code in ((limit, 400, ErrCode.MALFORMED_FRAME),
                                        (limit + 1, 413, ErrCode.BODY_TOO_LARGE)):
        status, _, answer = await exchange(client.data_port, request("POST", "/fsi/v1/tx", b"\xc1" * size, MSGPACK))
        assert (status, verify_answer(answer, keys).err_code) == (expected_status, code.wire), size
    gateway.stop()


@pytest.mark.parametrize(("method", "path", "status"), [
    ("POST", "/fsi/v1/tx", 413), ("POST", "/nope", 404), ("POST", "/fsi/v1/keys", 405), ("PUT", "/fsi/v1/tx", 405),
])
async def test_an_oversized_body_does_not_change_what_the_path_is(
        nursery: trio.Nursery, method: str, path: str, status: int) -> None:
    runtime = make_runtime(limits=LimitsConfig(body_bytes_max=1000))
    client_stream, server_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(serve_connection, server_stream, DataApp(runtime), http_limits(runtime.limits), runtime.drain)
    client = RawClient(client_stream)
    await client.send(request(method, path, b"Q" * 1001, MSGPACK))
    reply = await client.reply()
    assert reply.status == status
    if status == 413:
        assert reply.headers["content-type"] == MSGPACK
    else:
        assert reply.headers["content-type"].startswith("text/plain")


async def test_readyz_is_503_while_draining() -> None:
    runtime = make_runtime()
    app = DataApp(runtime)
    ready = Request("GET", "/readyz", {}, b"")
    assert (await app.handle(ready)).status == 200
    runtime.drain.start()
    assert (await app.handle(ready)).status == 503
    assert (await app.handle(Request("GET", "/healthz", {}, b""))).status == 200


async def head_then_get(stream: trio.abc.Stream, path: str) -> tuple[bytes, int]:
    """Send HEAD path then GET /healthz on one connection; return the HEAD answer's head and the GET status."""
    client = RawClient(stream)
    await client.send(f"HEAD {path} HTTP/1.1\r\nhost: t\r\n\r\nGET /healthz HTTP/1.1\r\nhost: t\r\n\r\n".encode())
    with trio.fail_after(5):
        while client.buffer.count(b"\r\n\r\n") < 2:
            await client._fill()
    head, client.buffer = client.buffer.split(b"\r\n\r\n", 1)
    # The HEAD answer has no body, so the next bytes are the GET answer.
    return head, (await client.reply()).status


@pytest.mark.parametrize(("path", "status"), [("/healthz", 405), ("/fsi/v1/tx", 405), ("/nope", 404)])
async def test_head_is_another_method_answered_without_a_body(nursery: trio.Nursery, path: str, status: int) -> None:
    runtime = make_runtime()
    client_stream, server_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(serve_connection, server_stream, DataApp(runtime), http_limits(runtime.limits), runtime.drain)
    head, next_status = await head_then_get(client_stream, path)
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    assert next_status == 200, "the connection stays usable after a HEAD"


# -- section 10: gateway.toml ----------------------------------------------------------------------

def test_gateway_toml_defaults_are_the_spec_values(tmp_path: pathlib.Path) -> None:
    config_path = tmp_path / "gateway.toml"
    config_path.write_text('admdvs = "510182"\n', encoding="utf-8")
    config = load_config(config_path)
    assert (config.listen.data, config.listen.admin) == (HostPort("127.0.0.1", 8600), HostPort("127.0.0.1", 8601))
    base = tmp_path.resolve()
    assert (config.paths.registry, config.paths.secrets, config.paths.signing_key, config.paths.data_dir) == (
        base / "registry.toml", base / "secrets.toml", base / "gateway_ed25519.pem", base / "data")
    assert (config.paths.catalogue, config.paths.accounts) == (None, None)   # SPEC 13: absent → off
    assert (config.limits.body_bytes_max, config.limits.session_ttl_s) == (65536, 43200)
    assert (config.journal.fsync, config.journal.group_commit_ms) == (True, 2)


def test_init_writes_the_spec_files_with_the_spec_keys(tmp_path: pathlib.Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "region"
    assert main(["init", "--out", str(out), "--profile", "small", "--seed", "7"]) == 0
    capsys.readouterr()
    assert {"gateway.toml", "registry.toml", "secrets.toml", "gateway_ed25519.pem", "sim.toml"} <= {
        p.name for p in out.iterdir()}
    gateway_toml = tomllib.loads((out / "gateway.toml").read_text(encoding="utf-8"))
    assert gateway_toml["listen"] == {"data": "127.0.0.1:8600", "admin": "127.0.0.1:8601"}
    assert gateway_toml["paths"] == {"registry": "registry.toml", "secrets": "secrets.toml",
                                     "signing_key": "gateway_ed25519.pem", "data_dir": "data",
                                     "catalogue": "catalogue.csv",
                                     "accounts": "accounts.csv"}   # SPEC 13: init writes v2's data
    assert (out / "gateway_ed25519.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    registry = tomllib.loads((out / "registry.toml").read_text(encoding="utf-8"))
    assert set(registry["policy"]) == {"otc_allowance_fen", "coverage_permille", "selfpay_prop_permille",
                                       "warn_person_day_permille", "warn_institution_month_permille",
                                       # SPEC 13's supervision thresholds (section 14)
                                       "large_bill_fen", "alert_institutions_per_day", "avg_bill_yoy_max_permille",
                                       "pooling"}   # SPEC 13 outpatient pooling
    secrets = tomllib.loads((out / "secrets.toml").read_text(encoding="utf-8"))
    assert {a["role"] for a in secrets["admins"]} == {"viewer", "operator", "policy"}
    assert all(set(a) == {"name", "role", "token_sha256"} for a in secrets["admins"])


def test_keygen_writes_a_pkcs8_ed25519_pem_and_refuses_to_overwrite(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    pem = tmp_path / "next_ed25519.pem"
    assert main(["keygen", "--out", str(pem)]) == 0
    capsys.readouterr()
    key = serialization.load_pem_private_key(pem.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    assert pem.read_text().startswith("-----BEGIN PRIVATE KEY-----")   # PKCS8, not OpenSSH or raw
    before = pem.read_bytes()
    assert main(["keygen", "--out", str(pem)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("yibao-gateway: ") and pem.read_bytes() == before


@pytest.mark.parametrize(("text", "key"), [
    ('admdvs = "510182"\ncolour = 1\n', "colour"),
    ('admdvs = "510182"\n[listen]\nmetrics = "127.0.0.1:9"\n', "listen.metrics"),
    ('admdvs = "510182"\n[paths]\njournal = "j"\n', "paths.journal"),
    ('admdvs = "510182"\n[limits]\nbody_bytes = 5\n', "limits.body_bytes"),
    ('admdvs = "510182"\n[journal]\nfsync_always = true\n', "journal.fsync_always"),
    ('admdvs = "510182"\n[tuning]\nx = 1\n', "tuning"),
])
def test_an_unknown_gateway_toml_key_is_one_line_naming_file_and_key(
        tmp_path: pathlib.Path, text: str, key: str) -> None:
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(config_path)
    assert str(caught.value) == f"{config_path}: unknown key '{key}'"


# (file, text to add where, the key the refusal must name)
UNKNOWN_KEYS = [
    ("gateway.toml", ("[limits]\n", "[limits]\nbody_limit = 1\n"), "limits.body_limit"),
    ("registry.toml", ("[policy]\n", "[policy]\nbonus_permille = 1\n"), "bonus_permille"),
    ("registry.toml", ("[[institutions]]\n", "[[institutions]]\nowner = \"x\"\n"), "owner"),
    ("registry.toml", ("[[terminals]]\n", "[[terminals]]\nmodel = \"x\"\n"), "model"),
    ("secrets.toml", ("[[admins]]\n", "[[admins]]\nemail = \"x\"\n"), "email"),
]


@pytest.mark.parametrize(("name", "edit", "key"), UNKNOWN_KEYS)
def test_serve_refuses_an_unknown_key_in_any_file_with_one_line(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], name: str, edit: tuple[str, str],
        key: str) -> None:
    region = make_region(tmp_path)
    path = region / name
    text = path.read_text(encoding="utf-8")
    assert edit[0] in text
    path.write_text(text.replace(edit[0], edit[1], 1), encoding="utf-8")
    code = main(["serve", "--config", str(region / "gateway.toml")])
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and err.endswith("\n"), err   # one line, nothing else on stderr
    assert err.startswith("yibao-gateway: ") and str(path) in err and key in err, err


def test_serve_subprocess_refuses_an_unknown_registry_key(tmp_path: pathlib.Path) -> None:
    region = make_region(tmp_path)
    registry = region / "registry.toml"
    registry.write_text("colour = \"blue\"\n" + registry.read_text(encoding="utf-8"), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(region / "gateway.toml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and done.stdout == "", done.stderr
    assert str(registry) in done.stderr and "colour" in done.stderr, done.stderr


# -- section 10: the test clock --------------------------------------------------------------------

async def test_without_the_flag_the_test_clock_is_404_for_anyone(tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    gateway, client = await start(nursery, make_region(tmp_path))
    body = json.dumps({"now_ms": 1_900_000_000_000}).encode()
    for extra in ("", bearer(client, "viewer"), bearer(client, "operator"), bearer(client, "policy"),
                  "authorization: Bearer wrong\r\n"):
        for method in ("POST", "GET"):
            raw = request(method, "/admin/v1/test/clock", body if method == "POST" else b"", "application/json", extra)
            assert (await exchange(client.admin_port, raw))[0] == 404, (method, extra)
    gateway.stop()


async def test_with_the_flag_the_clock_is_set_by_operator_or_policy_and_runs_on(
        tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    gateway, client = await start(nursery, make_region(tmp_path), test_clock=True)
    target_ms = 1_900_000_000_000
    body = json.dumps({"now_ms": target_ms}).encode()

    async def post(extra: str, payload: bytes = body) -> tuple[int, bytes]:
        status, _, answer = await exchange(
            client.admin_port, request("POST", "/admin/v1/test/clock", payload, "application/json", extra))
        return status, answer

    assert (await post(""))[0] == 401
    assert (await post("authorization: Bearer wrong\r\n"))[0] == 401
    assert (await post(bearer(client, "viewer")))[0] == 403
    for bad in (b"{}", b'{"now_ms": "1"}', b'{"now_ms": 1.5}', b'{"now_ms": true}', b"nope"):
        assert (await post(bearer(client, "operator"), bad))[0] == 400, bad
    for role in ("operator", "policy"):
        status, answer = await post(bearer(client, role))
        assert (status, json.loads(answer)) == (200, {"now_ms": target_ms})
    first_ms = gateway.runtime.clock.now_ms()
    assert target_ms <= first_ms < target_ms + 5_000
    await trio.sleep(0.02)
    assert gateway.runtime.clock.now_ms() > first_ms, "the clock runs on from the value set"
    gateway.stop()
