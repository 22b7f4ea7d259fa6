"""A fake region (registry.toml + sim.toml) and a fake gateway speaking just enough of the contract.

The fake gateway checks what the load generator must get right: the 9001 signature, the session
key agreement, every request's MAC, the input's shape and amounts, the card cryptogram, and that
no msgid repeats. It answers with frames signed the way the real gateway signs them.
"""

from __future__ import annotations

import base64
import json
import pathlib

import h11
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from protocol import (
    REQ_DOMAIN,
    ResponseEnvelope,
    card_key,
    decode_frame,
    decode_request_envelope,
    gateway_kid,
    parse_input,
    public_raw,
    seal_response,
    session_key,
    verify_card_mac,
    verify_mac,
    verify_sig,
    x25519_public_raw,
)

MASTER_KEY = bytes(range(32))
PHARMACY, CLINIC = "P51018200001", "H51018200001"


def _seed_b64(key: Ed25519PrivateKey) -> str:
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    return base64.b64encode(raw).decode()


def write_region(region_dir: pathlib.Path) -> dict[str, Ed25519PrivateKey]:
    """Write registry.toml and sim.toml; return dev_no -> terminal private key."""
    keys = {dev: Ed25519PrivateKey.generate() for dev in ("T-P1", "T-C1", "T-REVOKED")}
    pub = {dev: base64.b64encode(public_raw(k.public_key())).decode() for dev, k in keys.items()}
    registry = f'''
[[institutions]]
code = "{PHARMACY}"
name = "p"
kind = "pharmacy"
admdvs = "510182"
grade = "A"
monthly_cap_fen = 100000000
status = "active"
[[institutions]]
code = "{CLINIC}"
name = "c"
kind = "clinic"
admdvs = "510182"
monthly_cap_fen = 100000000
status = "active"
[[terminals]]
dev_no = "T-P1"
institution = "{PHARMACY}"
public_key = "{pub['T-P1']}"
status = "active"
[[terminals]]
dev_no = "T-C1"
institution = "{CLINIC}"
public_key = "{pub['T-C1']}"
status = "active"
[[terminals]]
dev_no = "T-REVOKED"
institution = "{PHARMACY}"
public_key = "{pub['T-REVOKED']}"
status = "revoked"
[[operators]]
code = "OP1"
institution = "{PHARMACY}"
status = "active"
[[operators]]
code = "OP2"
institution = "{CLINIC}"
status = "active"
[[filings]]
psn_no = "PSN-FILED"
admdvs = "51"
valid_from = "2000-01-01"
valid_to = "2999-12-31"
[[blocked_cards]]
card_no = "CARD-BLOCKED"
reason = "lost"
'''
    persons = [("PSN-LOCAL", "510182", "CARD-LOCAL"), ("PSN-FILED", "440300", "CARD-FILED"),
               ("PSN-UNFILED", "440300", "CARD-UNFILED"), ("PSN-BLOCKED", "510182", "CARD-BLOCKED")]
    person_rows = "".join(
        f'[[persons]]\npsn_no = "{p}"\ninsutype = "310"\ninsuplc_admdvs = "{a}"\ncard_no = "{c}"\ncard_sn = "SN-{c}"\n'
        for p, a, c in persons)
    master = base64.b64encode(MASTER_KEY).decode()
    terminal_rows = "".join(
        f'[[terminals]]\ndev_no = "{dev}"\ninstitution = "{inst}"\nprivate_key = "{_seed_b64(keys[dev])}"\nopter = "{op}"\n'
        for dev, inst, op in (("T-P1", PHARMACY, "OP1"), ("T-C1", CLINIC, "OP2"), ("T-REVOKED", PHARMACY, "OP1")))
    sim = f'seed = 1\ncard_master_keys = {{ "51" = "{master}", "44" = "{master}" }}\n{terminal_rows}{person_rows}'
    region_dir.mkdir(parents=True, exist_ok=True)
    (region_dir / "registry.toml").write_text(registry, encoding="utf-8")
    (region_dir / "sim.toml").write_text(sim, encoding="utf-8")
    return keys


class FakeGateway:
    """Answers /fsi/v1/keys, 9001 and MAC'd requests; records every problem it sees."""

    def __init__(self, terminal_keys: dict[str, Ed25519PrivateKey]) -> None:
        self.signing_key = Ed25519PrivateKey.generate()
        self.terminal_public = {dev: key.public_key() for dev, key in terminal_keys.items()}
        self.sessions: dict[str, bytes] = {}
        self.msgids: set[str] = set()
        self.problems: list[str] = []
        self.answered: dict[str, int] = {}

    def keys_json(self) -> bytes:
        raw = public_raw(self.signing_key.public_key())
        return json.dumps({"keys": [{"kid": gateway_kid(raw), "alg": "Ed25519", "status": "active",
                                     "public_key": base64.b64encode(raw).decode()}]}).encode()

    def answer(self, body: bytes) -> bytes:
        frame = decode_frame(body)
        env = decode_request_envelope(frame.body)
        if env.msgid in self.msgids:
            self.problems.append(f"msgid reused: {env.msgid}")
        self.msgids.add(env.msgid)
        self.answered[env.infno] = self.answered.get(env.infno, 0) + 1
        if env.infno == "9001":
            return self._sign_in(frame, env)
        key = self.sessions.get(frame.key_id)
        if key is None or not verify_mac(key, REQ_DOMAIN, frame.body, frame.tag):
            self.problems.append(f"bad MAC on {env.msgid}")
            return self._seal(env.msgid, -2, "BAD_MAC", None)
        parsed = parse_input(env.infno, env.input)
        cert = parsed.cert
        medfee_fen = getattr(parsed, "medfee_sumamt", 0)
        ckey = card_key(MASTER_KEY, cert.card_no, cert.card_sn)
        if not verify_card_mac(ckey, env.msgid, env.infno, env.fixmedins_code, medfee_fen, cert.psn_no,
                               cert.insutype, cert.insuplc_admdvs, cert.card_mac):
            self.problems.append(f"bad card_mac on {env.msgid}")
            return self._seal(env.msgid, -2, "CARD_INVALID", None)
        return self._seal(env.msgid, 0, "", {"psn_no": cert.psn_no})

    def _sign_in(self, frame, env) -> bytes:
        if not verify_sig(self.terminal_public[frame.key_id], REQ_DOMAIN, frame.body, frame.tag):
            self.problems.append("bad 9001 signature")
        own = X25519PrivateKey.generate()
        sign_no = f"S{len(self.sessions) + 1:06d}"
        self.sessions[sign_no] = session_key(own, env.input["x25519_pub"], sign_no)
        output = {"sign_no": sign_no, "sign_time": env.inf_time, "x25519_pub": x25519_public_raw(own),
                  "session_expires": env.inf_time + 3_600_000}
        return self._seal(env.msgid, 0, "", output)

    def _seal(self, msgid: str, infcode: int, err_code: str, output: dict | None) -> bytes:
        env = ResponseEnvelope(infcode, err_code, err_code, msgid, "510182" + "20250101000000" + "0000000001",
                               0, output, ())
        return seal_response(self.signing_key, env)


async def _handle(stream: trio.SocketStream, gateway: FakeGateway) -> None:
    conn = h11.Connection(h11.SERVER)
    async with stream:
        while True:
            body, request = b"", None
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.ConnectionClosed):
                    return
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            answer = gateway.keys_json() if request.method == b"GET" else gateway.answer(body)
            out = conn.send(h11.Response(status_code=200, headers=[("Content-Length", str(len(answer)))]))
            await stream.send_all(out + conn.send(h11.Data(data=answer)) + conn.send(h11.EndOfMessage()))
            conn.start_next_cycle()


async def serve_fake_gateway(gateway: FakeGateway, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve `gateway` on a free loopback port; `task_status.started(port)`."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, lambda s: _handle(s, gateway), listeners)
        task_status.started(listeners[0].socket.getsockname()[1])
