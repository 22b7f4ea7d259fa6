"""The real `yibao-gateway` commands as a user runs them: init, serve, settle, SIGTERM."""

from __future__ import annotations

import base64
import http.client
import json
import pathlib
import signal
import socket
import subprocess
import sys
import time
import tomllib
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol import TerminalSession, card_key, msgid
from protocol.terminal import verify_answer

READY_DEADLINE_S = 30.0
EXIT_DEADLINE_S = 30.0


def gateway(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True,
                          timeout=120, **kwargs)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def init(tmp_path: pathlib.Path) -> tuple[pathlib.Path, int]:
    region = tmp_path / "region"
    done = gateway("init", "--out", str(region), "--profile", "small", "--seed", "3")
    assert done.returncode == 0, done.stderr
    port = free_port()
    config = region / "gateway.toml"
    text = config.read_text().replace("127.0.0.1:8600", f"127.0.0.1:{port}")
    config.write_text(text.replace("127.0.0.1:8601", f"127.0.0.1:{free_port()}"))
    return region, port


def call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"content-type": "application/msgpack"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_ready(port: int, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + READY_DEADLINE_S
    while time.monotonic() < deadline:
        assert server.poll() is None, f"gateway exited: {server.communicate()[1]}"
        try:
            if call(port, "GET", "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)  # polling interval of the readiness probe, bounded by the deadline
    raise AssertionError("gateway not ready in time")


def settle_once(region: pathlib.Path, port: int) -> tuple[dict[str, Any], bytes]:
    """Sign a terminal in, settle a 2-line bill by card, verify the answer with /fsi/v1/keys."""
    sim = tomllib.loads((region / "sim.toml").read_text())
    registry = tomllib.loads((region / "registry.toml").read_text())
    pharmacies = {i["code"]: i for i in registry["institutions"] if i["kind"] == "pharmacy"}
    spec = next(t for t in sim["terminals"] if t["institution"] in pharmacies)
    institution = pharmacies[spec["institution"]]
    term = TerminalSession(dev_no=spec["dev_no"], fixmedins_code=institution["code"],
                           admdvs=institution["admdvs"], opter=spec["opter"], opter_type="1",
                           private_key=Ed25519PrivateKey.from_private_bytes(
                               base64.b64decode(spec["private_key"])))
    keys = {k["kid"]: Ed25519PublicKey.from_public_bytes(base64.b64decode(k["public_key"]))
            for k in json.loads(call(port, "GET", "/fsi/v1/keys")[1])["keys"]}
    now_ms = int(time.time() * 1000)
    status, answer = call(port, "POST", "/fsi/v1/tx",
                          term.signin_frame(msgid(term.fixmedins_code, now_ms, 1), now_ms))
    assert status == 200 and term.on_signin_answer(answer, keys).infcode == 0
    person = next(p for p in sim["persons"] if p["insuplc_admdvs"][:2] == "51")
    master = base64.b64decode(sim["card_master_keys"]["51"])
    mid = msgid(term.fixmedins_code, now_ms, 2)
    items = [{"feedetl_sn": "1", "med_list_codg": "XA01", "chrgitm_lv": "01", "otc": True, "cnt": 2,
              "pric": 1500, "det_item_fee_sumamt": 3000, "bilg_dr_codg": spec["opter"]},
             {"feedetl_sn": "2", "med_list_codg": "XB02", "chrgitm_lv": "02", "otc": True, "cnt": 1,
              "pric": 990, "det_item_fee_sumamt": 990, "bilg_dr_codg": spec["opter"]}]
    credential = term.card_input(card_key(master, person["card_no"], person["card_sn"]), mid,
                                 "2102", 3990, person)
    frame = term.request_frame("2102", mid, {**credential, "medfee_sumamt": 3990, "items": items}, now_ms)
    status, answer = call(port, "POST", "/fsi/v1/tx", frame)
    envelope = verify_answer(answer, keys)
    assert (status, envelope.infcode, envelope.err_code) == (200, 0, ""), envelope
    return envelope.output["setlinfo"], answer


def test_fresh_region_serves_a_verified_settlement_and_drains_on_sigterm(tmp_path: pathlib.Path) -> None:
    region, port = init(tmp_path)
    server = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config",
                               str(region / "gateway.toml")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(port, server)
        setlinfo, _ = settle_once(region, port)
        assert setlinfo["medfee_sumamt"] == 3990
        assert setlinfo["fund_pay_sumamt"] + setlinfo["psn_cash_pay"] == 3990
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=EXIT_DEADLINE_S)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, stderr
    events = [json.loads(line)["event"] for line in stderr.splitlines() if line.startswith("{")]
    assert events.index("drain") < events.index("stop")
    assert "Traceback" not in stderr


def test_unknown_config_key_is_refused_in_one_line(tmp_path: pathlib.Path) -> None:
    region, _ = init(tmp_path)
    config = region / "gateway.toml"
    config.write_text(config.read_text() + "\n[tuning]\nfsync_everything = true\n")
    done = gateway("serve", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.strip() == f"yibao-gateway: {config}: unknown key 'tuning'"


def test_port_in_use_is_refused_in_one_line(tmp_path: pathlib.Path) -> None:
    region, port = init(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = gateway("serve", "--config", str(region / "gateway.toml"))
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"yibao-gateway: cannot listen on 127.0.0.1:{port} (data): Address already in use"
    assert "Traceback" not in done.stderr


def test_init_refuses_to_overwrite_a_region(tmp_path: pathlib.Path) -> None:
    region, _ = init(tmp_path)
    done = gateway("init", "--out", str(region))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
