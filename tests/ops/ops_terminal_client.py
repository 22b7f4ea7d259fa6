"""A small POS client for the ops tests: signs in one terminal and settles card bills over HTTP.

It reads a region made by `yibao-gateway init` (registry.toml for the public data, sim.toml for the
terminals' and cards' keys) and speaks the wire protocol through protocol.terminal.TerminalSession,
so every answer's signature is verified against GET /fsi/v1/keys.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import pathlib
import time
import tomllib
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol import ResponseEnvelope, card_key
from protocol.terminal import TerminalSession, msgid

MSGPACK = "application/msgpack"
HTTP_TIMEOUT_S = 10.0
OTC_PRICE_FEN = 1500


@dataclasses.dataclass(frozen=True)
class Region:
    """What the client needs from a region directory."""

    registry: dict[str, Any]
    sim: dict[str, Any]

    @classmethod
    def load(cls, region_dir: pathlib.Path) -> Region:
        """Read registry.toml and sim.toml from `region_dir`."""
        with (region_dir / "registry.toml").open("rb") as registry_file:
            registry = tomllib.load(registry_file)
        with (region_dir / "sim.toml").open("rb") as sim_file:
            sim = tomllib.load(sim_file)
        return cls(registry, sim)

    def pharmacy_terminal(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return (institution, sim terminal) for an active terminal of an active pharmacy."""
        institutions = {inst["code"]: inst for inst in self.registry["institutions"]}
        active_terminals = {t["dev_no"] for t in self.registry["terminals"] if t["status"] == "active"}
        suspended_operators = {o["code"] for o in self.registry.get("operators", []) if o["status"] != "active"}
        for terminal in self.sim["terminals"]:
            institution = institutions.get(terminal["institution"])
            if (institution and institution["kind"] == "pharmacy" and institution["status"] == "active"
                    and terminal["dev_no"] in active_terminals and terminal["opter"] not in suspended_operators):
                return institution, terminal
        raise LookupError("the region has no active pharmacy terminal")

    def local_cards(self, province: str) -> list[dict[str, Any]]:
        """Return sample persons of `province` whose card and person are not blocked."""
        blocked_cards = {c["card_no"] for c in self.registry.get("blocked_cards", [])}
        blocked_persons = {p["psn_no"] for p in self.registry.get("blocked_persons", [])}
        return [
            person for person in self.sim["persons"]
            if person["insuplc_admdvs"][:2] == province
            and person["card_no"] not in blocked_cards and person["psn_no"] not in blocked_persons
        ]


class PosClient:
    """One pharmacy terminal talking to a running gateway."""

    def __init__(self, region: Region, data_host: str, data_port: int) -> None:
        self.region = region
        self.institution, terminal = region.pharmacy_terminal()
        seed = base64.b64decode(terminal["private_key"])
        self.session = TerminalSession(
            dev_no=terminal["dev_no"], fixmedins_code=self.institution["code"],
            admdvs=self.institution["admdvs"], opter=terminal["opter"], opter_type="1",
            private_key=Ed25519PrivateKey.from_private_bytes(seed),
        )
        self._connection = http.client.HTTPConnection(data_host, data_port, timeout=HTTP_TIMEOUT_S)
        self._serial = 0

    def close(self) -> None:
        """Close the keep-alive connection."""
        self._connection.close()

    def sign_in(self) -> ResponseEnvelope:
        """Fetch the gateway keys, then sign in (9001); returns the verified answer."""
        self._connection.request("GET", "/fsi/v1/keys")
        keys = json.loads(self._connection.getresponse().read())["keys"]
        self.session.gateway_public_keys = {
            key["kid"]: Ed25519PublicKey.from_public_bytes(base64.b64decode(key["public_key"]))
            for key in keys
        }
        frame = self.session.signin_frame(self._next_msgid(), _now_ms())
        return self.session.on_signin_answer(self._post(frame))

    def settle_otc(self, person: dict[str, Any]) -> ResponseEnvelope:
        """Settle (2102) a one-line OTC bill paid with `person`'s card; returns the verified answer."""
        message_id = self._next_msgid()
        master_key = base64.b64decode(self.region.sim["card_master_keys"][person["insuplc_admdvs"][:2]])
        key = card_key(master_key, person["card_no"], person["card_sn"])
        line = {
            "feedetl_sn": "1", "med_list_codg": "XA01AAA001", "chrgitm_lv": "01", "otc": True,
            "cnt": 1, "pric": OTC_PRICE_FEN, "det_item_fee_sumamt": OTC_PRICE_FEN,
            "bilg_dr_codg": self.session.opter,
        }
        input_ = {
            **self.session.card_input(key, message_id, "2102", OTC_PRICE_FEN, person),
            "medfee_sumamt": OTC_PRICE_FEN, "items": [line],
        }
        frame = self.session.request_frame("2102", message_id, input_, _now_ms())
        return self.session.verify_answer(self._post(frame))

    def _post(self, frame: bytes) -> bytes:
        self._connection.request("POST", "/fsi/v1/tx", body=frame, headers={"Content-Type": MSGPACK})
        return self._connection.getresponse().read()

    def _next_msgid(self) -> str:
        self._serial += 1
        return msgid(self.session.fixmedins_code, _now_ms(), self._serial)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
