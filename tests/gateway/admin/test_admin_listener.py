"""The admin API over a real admin Listener on loopback, and the CLI against it."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
import trio

from admin_world import ADMINS, P1, P2, AdminWorld, aw  # noqa: F401
from gateway.admin.cli import main as cli_main
from gateway.config import HostPort
from gateway.server.admin_routes import AdminApp
from gateway.server.http import Drain, HttpLimits, plain_response
from gateway.server.listener import Listener


async def _serve(aw: AdminWorld, nursery: trio.Nursery) -> int:
    assert aw.runtime is not None and aw.api is not None
    app = AdminApp(aw.runtime, ADMINS, aw.api)
    listener = Listener("admin", HostPort("127.0.0.1", 0), app, HttpLimits(body_bytes_max=4096), Drain(), 8,
                        lambda: plain_response(503, "busy"), lambda delta: None)
    port: int = await nursery.start(listener.run)
    return port


async def _http(port: int, method: str, target: str, token: str | None, body: bytes = b"") -> tuple[int, Any]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (f"{method} {target} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    await stream.send_all(head + body)
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    await stream.aclose()
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    return int(head_bytes.split(b" ")[1]), json.loads(payload) if payload.startswith((b"{", b"[")) else payload


async def test_routes_over_a_real_listener(aw: AdminWorld, nursery: trio.Nursery) -> None:
    port = await _serve(aw, nursery)
    assert (await _http(port, "GET", f"/admin/v1/institutions/{P1}", None))[0] == 401
    assert (await _http(port, "POST", f"/admin/v1/institutions/{P1}/suspend", "tok-viewer", b"{}"))[0] == 403
    status, answer = await _http(port, "POST", f"/admin/v1/institutions/{P1}/suspend", "tok-operator",
                                 b'{"reason": "over the wire"}')
    assert (status, answer["after"]) == (200, {"status": "suspended"})
    await _http(port, "POST", "/admin/v1/cards/C1/block", "tok-operator", b"{}")
    status, page = await _http(port, "GET", "/admin/v1/audit?after=1&limit=1", "tok-viewer")
    assert status == 200 and [e["action"] for e in page["entries"]] == ["card.block"]
    status, answer = await _http(port, "POST", "/admin/v1/changes", "tok-policy", b"{bad")
    assert (status, answer["field"]) == (400, "body")
    assert (await _http(port, "POST", "/admin/v1/changes", "tok-policy", b"x" * 5000))[0] == 413


def _run_cli(argv: list[str]) -> int:
    return cli_main(argv)


async def test_cli_against_the_listener(aw: AdminWorld, nursery: trio.Nursery, tmp_path: pathlib.Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    port = await _serve(aw, nursery)
    url = f"http://127.0.0.1:{port}"
    operator_token = tmp_path / "operator.token"
    operator_token.write_text("tok-operator\n", encoding="utf-8")

    async def run(*argv: str, token: str = "tok-policy") -> tuple[int, Any, str]:
        capsys.readouterr()
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("YIBAO_ADMIN_TOKEN", token)
            code = await trio.to_thread.run_sync(_run_cli, ["--url", url, *argv])
        out, err = capsys.readouterr()
        # The server's JSON log lines share stderr with the CLI in this process; keep the CLI's.
        err = "".join(line for line in err.splitlines(keepends=True) if not line.startswith('{"ts"'))
        return code, json.loads(out) if code == 0 else None, err

    code, answer, _ = await run("--token-file", str(operator_token), "suspend", "institution", P1, "--reason", "cli")
    assert code == 0 and answer["after"] == {"status": "suspended"}
    code, answer, _ = await run("show", "institution", P1, token="tok-viewer")
    assert code == 0 and answer["status"] == "suspended"
    code, proposal, _ = await run("propose", "institution.monthly_cap", f"institution={P2}", "monthly_cap_fen=777")
    assert code == 0 and proposal["status"] == "proposed"
    code, _, err = await run("approve", proposal["id"])
    assert code == 1 and err.count("\n") == 1 and "HTTP 403" in err and "Traceback" not in err
    code, applied, _ = await run("approve", proposal["id"], token="tok-policy2")
    assert code == 0 and applied["after"] == {"monthly_cap_fen": 777}
    code, listed, _ = await run("changes", "--status", "applied", token="tok-viewer")
    assert [c["id"] for c in listed["changes"]] == [proposal["id"]]
    code, audit, _ = await run("audit", "--limit", "1", token="tok-viewer")
    assert code == 0 and audit["next"] == 1
    for argv in (["block", "card", "C7"], ["unblock", "person", "P7"], ["revoke", "terminal", "T5"],
                 ["resume", "institution", P1], ["rotate-key"], ["snapshot"], ["keys"], ["show", "person", "P7"]):
        code, _, err = await run(*argv)
        assert code == 0, (argv, err)
    code, _, err = await run("propose", "institution.monthly_cap", "monthly_cap_fen=abc")
    assert code == 2 and "integer" in err
    code, _, err = await run("propose", "institution.monthly_cap", f"institution={P2}", "monthly_cap_fen=-5")
    assert code == 1 and "monthly_cap_fen" in err


async def test_cli_errors_are_one_line(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("YIBAO_ADMIN_TOKEN", raising=False)
    assert cli_main(["--url", "http://127.0.0.1:9", "keys"]) == 2
    assert "YIBAO_ADMIN_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("YIBAO_ADMIN_TOKEN", "t")
    code = await trio.to_thread.run_sync(cli_main, ["--url", "http://127.0.0.1:9", "keys"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("yibao-gateway admin: cannot reach") and err.count("\n") == 1
    assert cli_main(["keys"]) == 2
    assert cli_main(["--url", "http://x", "explode"]) == 2
    assert cli_main(["--config", str(tmp_path / "missing.toml"), "keys"]) == 1
    assert cli_main(["--url", "http://x", "--token-file", str(tmp_path / "none"), "keys"]) == 1
    assert "Traceback" not in capsys.readouterr().err


async def test_cli_reads_the_admin_address_from_gateway_toml(
        aw: AdminWorld, nursery: trio.Nursery, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    port = await _serve(aw, nursery)
    config = tmp_path / "gateway.toml"
    config.write_text(f'admdvs = "510182"\n[listen]\ndata = "127.0.0.1:0"\nadmin = "127.0.0.1:{port}"\n'
                      '[paths]\nregistry = "registry.toml"\nsecrets = "secrets.toml"\n'
                      'signing_key = "gateway_ed25519.pem"\ndata_dir = "data"\n', encoding="utf-8")
    monkeypatch.setenv("YIBAO_ADMIN_TOKEN", "tok-viewer")
    code = await trio.to_thread.run_sync(cli_main, ["--config", str(config), "show", "terminal", "T1"])
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out)["institution"] == P1
