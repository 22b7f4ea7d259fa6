"""A fresh `init` region listening on free ports, and a small trio client that speaks to it."""

from __future__ import annotations

import base64
import itertools
import json
import pathlib
import re
import time
import tomllib
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.config import load_config
from gateway.region import init_region
from gateway.server.app import Gateway
from http_client import RawClient, request
from protocol import ResponseEnvelope, TerminalSession, card_key, msgid
from protocol.terminal import verify_answer

MSGPACK = "application/msgpack"
# One counter for the whole test process: a client built after a restart must not repeat a msgid
# (code + second + serial) that an earlier client used within the same second.
_SERIALS = itertools.count(1)


def with_limits(region: pathlib.Path, **limits: object) -> None:
    """Set keys of the [limits] table of the region's gateway.toml (replacing any the file has)."""
    config = region / "gateway.toml"
    text = config.read_text()
    for key in limits:
        text = re.sub(rf"^{re.escape(key)} = .*\n", "", text, flags=re.MULTILINE)
    lines = "".join(f"{key} = {value}\n" for key, value in limits.items())
    config.write_text(text.replace("[limits]\n", "[limits]\n" + lines, 1))


async def start_gateway(nursery: trio.Nursery, region: pathlib.Path) -> tuple[Gateway, RegionClient]:
    """Run the region's gateway in `nursery`; return it and a client of its ports."""
    gateway = Gateway(load_config(region / "gateway.toml"))
    ports = await nursery.start(gateway.run)
    return gateway, RegionClient(region, ports["data"], ports["admin"])


def make_region(tmp_path: pathlib.Path, profile: str = "small", seed: int = 1) -> pathlib.Path:
    """`init` a region under tmp_path whose listeners take any free loopback port."""
    region = tmp_path / "region"
    init_region(region, profile, seed)
    config = region / "gateway.toml"
    text = config.read_text(encoding="utf-8")
    text = text.replace('"127.0.0.1:8600"', '"127.0.0.1:0"').replace('"127.0.0.1:8601"', '"127.0.0.1:0"')
    config.write_text(text, encoding="utf-8")
    return region


class RegionClient:
    """Terminals, persons and admins of a region's sim.toml, talking HTTP to a running gateway."""

    def __init__(self, region: pathlib.Path, data_port: int, admin_port: int,
                 local_address: str | None = None) -> None:
        """`local_address`: the loopback address the client's sockets bind to (None: any)."""
        self.sim = tomllib.loads((region / "sim.toml").read_text(encoding="utf-8"))
        registry = tomllib.loads((region / "registry.toml").read_text(encoding="utf-8"))
        self.kinds = {i["code"]: i["kind"] for i in registry["institutions"]}
        self.admdvs = {i["code"]: i["admdvs"] for i in registry["institutions"]}
        self.data_port = data_port
        self.admin_port = admin_port
        self.local_address = local_address

    async def _exchange(self, port: int, raw: bytes) -> tuple[int, bytes]:
        stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=self.local_address)
        async with stream:
            client = RawClient(stream)
            await client.send(raw)
            reply = await client.reply()
        return reply.status, reply.body

    async def get(self, path: str, port: int | None = None) -> tuple[int, bytes]:
        return await self._exchange(port or self.data_port, request("GET", path))

    async def post_tx(self, frame: bytes) -> tuple[int, bytes]:
        return await self._exchange(self.data_port, request("POST", "/fsi/v1/tx", frame, MSGPACK))

    async def admin_post(self, path: str, body: bytes, role: str) -> tuple[int, bytes]:
        token = next(a["token"] for a in self.sim["admins"] if a["role"] == role)
        raw = request("POST", path, body, "application/json", f"authorization: Bearer {token}\r\n")
        return await self._exchange(self.admin_port, raw)

    async def keys(self) -> dict[str, Ed25519PublicKey]:
        _, body = await self.get("/fsi/v1/keys")
        return {k["kid"]: Ed25519PublicKey.from_public_bytes(base64.b64decode(k["public_key"]))
                for k in json.loads(body)["keys"]}

    async def verify(self, answer: bytes) -> ResponseEnvelope:
        """Decode an answer after checking its signature against GET /fsi/v1/keys."""
        return verify_answer(answer, await self.keys())

    def pharmacy_terminal(self) -> TerminalSession:
        spec = next(t for t in self.sim["terminals"] if self.kinds[t["institution"]] == "pharmacy")
        key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(spec["private_key"]))
        return TerminalSession(dev_no=spec["dev_no"], fixmedins_code=spec["institution"],
                               admdvs=self.admdvs[spec["institution"]], opter=spec["opter"],
                               opter_type="1", private_key=key)

    def new_msgid(self, term: TerminalSession) -> str:
        return msgid(term.fixmedins_code, int(time.time() * 1000), next(_SERIALS))

    async def sign_in(self) -> TerminalSession:
        term = self.pharmacy_terminal()
        _, answer = await self.post_tx(term.signin_frame(self.new_msgid(term), int(time.time() * 1000)))
        env = term.on_signin_answer(answer, await self.keys())
        assert env.infcode == 0, env
        return term

    def settle_frame(self, term: TerminalSession, mid: str) -> bytes:
        """A 3-line card 2102 for the first local sample person."""
        person = next(p for p in self.sim["persons"] if p["insuplc_admdvs"][:2] == term.admdvs[:2])
        master = base64.b64decode(self.sim["card_master_keys"][person["insuplc_admdvs"][:2]])
        items = [_line("1", 1200, "01"), _line("2", 800, "02"), _line("3", 500, "03")]
        medfee = sum(i["det_item_fee_sumamt"] for i in items)
        credential = term.card_input(card_key(master, person["card_no"], person["card_sn"]),
                                     mid, "2102", medfee, person)
        return term.request_frame("2102", mid, {**credential, "medfee_sumamt": medfee, "items": items},
                                  int(time.time() * 1000))


# Codes the sample catalogue holds with these classes, all OTC (gateway/catalogue_sample.py).
_CODE_OF_LEVEL = {"01": "XA01AAA001", "02": "XB02", "03": "CR030001"}


def _line(sn: str, fee_fen: int, level: str) -> dict[str, Any]:
    return {"feedetl_sn": sn, "med_list_codg": _CODE_OF_LEVEL[level], "chrgitm_lv": level, "otc": True,
            "cnt": 1, "pric": fee_fen, "det_item_fee_sumamt": fee_fen, "bilg_dr_codg": "D0001"}
