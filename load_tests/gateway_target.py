"""Traffic for the real gateway: signed-in terminals sending 2102 settlements or 1101 queries.

Reads a region made by `yibao-gateway init` (registry.toml for who is active, sim.toml for the
terminals' private keys, the card master keys and the sample persons). Each load connection gets
its own terminal session (9001 before the clock starts); every request is a fresh msgid with a
correct card cryptogram, so the gateway does its full work: MAC check, input validation, card
check, the cut, ledgers and, for 2102, a journaled, fsynced settlement.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import pathlib
import random
import time
import tomllib
from typing import Any

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from load_tests.http import HttpConnection, HttpResponse
from load_tests.openloop import Request
from load_tests.targets import MSGPACK, TX_PATH
from protocol import ProtocolError, card_key
from protocol.terminal import SHANGHAI, TerminalSession, msgid, verify_answer

KEYS_PATH = "/fsi/v1/keys"
SIGN_IN_INFNO = "9001"
INFNOS = ("2102", "1101")
# SPEC section 4: at most 8 sessions per terminal; more slots than that per terminal would evict
# each other's sessions mid-run.
SESSIONS_PER_TERMINAL_MAX = 8
# Verifying an Ed25519 signature costs the generator about as much as sending a request, so only
# every Nth answer per slot (and the first) is verified; the rest are decoded for their infcode.
VERIFY_EVERY = 64


class RegionError(Exception):
    """The region cannot drive this traffic (no eligible terminals or persons)."""


@dataclasses.dataclass(frozen=True)
class TerminalSpec:
    dev_no: str
    fixmedins_code: str
    admdvs: str
    opter: str
    private_key_b64: str


@dataclasses.dataclass(frozen=True)
class Card:
    """A sample person's card, with its derived card key."""

    fields: dict[str, str]  # card_no, card_sn, psn_no, insutype, insuplc_admdvs
    key: bytes


def _load_toml(path: pathlib.Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        return tomllib.load(handle)


def _active(rows: list[dict[str, Any]], key: str) -> set[str]:
    return {row[key] for row in rows if row.get("status", "active") == "active"}


def _filed(filings: list[dict[str, Any]], psn_no: str, admdvs: str, today: str) -> bool:
    return any(
        f["psn_no"] == psn_no and f["admdvs"] in (admdvs, admdvs[:2]) and f["valid_from"] <= today <= f["valid_to"]
        for f in filings
    )


class Region:
    """The parts of a region directory that load generation needs."""

    def __init__(self, region_dir: pathlib.Path) -> None:
        self.registry = _load_toml(region_dir / "registry.toml")
        self.sim = _load_toml(region_dir / "sim.toml")
        self.institutions = {row["code"]: row for row in self.registry.get("institutions", [])}
        self.master_keys = {k: base64.b64decode(v) for k, v in self.sim.get("card_master_keys", {}).items()}

    def terminals(self, infno: str) -> list[TerminalSpec]:
        """Active terminals, at active institutions, with active operators, that may send `infno`."""
        active_terminals = _active(self.registry.get("terminals", []), "dev_no")
        active_operators = _active(self.registry.get("operators", []), "code")
        specs = []
        for row in self.sim.get("terminals", []):
            inst = self.institutions.get(row["institution"])
            if inst is None or inst.get("status", "active") != "active":
                continue
            if row["dev_no"] not in active_terminals or row["opter"] not in active_operators:
                continue
            if infno == "2102" and inst["kind"] != "pharmacy":
                continue
            specs.append(TerminalSpec(row["dev_no"], inst["code"], inst["admdvs"], row["opter"], row["private_key"]))
        return specs

    def cards_for(self, admdvs: str, today: str) -> list[Card]:
        """Sample persons who may be treated at an institution in `admdvs`, with unblocked cards."""
        blocked_cards = {row["card_no"] for row in self.registry.get("blocked_cards", [])}
        blocked_persons = {row["psn_no"] for row in self.registry.get("blocked_persons", [])}
        filings = self.registry.get("filings", [])
        cards = []
        for person in self.sim.get("persons", []):
            if person["card_no"] in blocked_cards or person["psn_no"] in blocked_persons:
                continue
            province = person["insuplc_admdvs"][:2]
            if province != admdvs[:2] and not _filed(filings, person["psn_no"], admdvs, today):
                continue
            master = self.master_keys.get(province)
            if master is None:
                continue
            fields = {k: person[k] for k in ("card_no", "card_sn", "psn_no", "insutype", "insuplc_admdvs")}
            cards.append(Card(fields, card_key(master, person["card_no"], person["card_sn"])))
        return cards


# Serial counters per institution for the whole process: targets created one after another
# (a bench step, then the next; 2102 then 1101) against the same gateway within one second must
# not draw the same serial either, or the gateway rightly answers MSGID_REUSED.
_SERIALS_NEXT: dict[str, int] = {}


class MsgidSerials:
    """One serial counter per institution, shared by every slot and every target in the process.

    A msgid is unique per institution (fixmedins_code + second + 4 digits); slots that share an
    institution must not draw the same serial in the same second.
    """

    def __init__(self) -> None:
        self._next = _SERIALS_NEXT

    def new_msgid(self, fixmedins_code: str, now_ms: int) -> str:
        serial = self._next.get(fixmedins_code, 0)
        self._next[fixmedins_code] = serial + 1
        return msgid(fixmedins_code, now_ms, serial)


def now_ms() -> int:
    """Wall-clock Unix milliseconds (what inf_time carries)."""
    return time.time_ns() // 1_000_000


def bill_items(rng: random.Random, doctor: str) -> list[dict[str, Any]]:
    """A 3-line pharmacy bill: an OTC 甲类 line, an OTC 乙类 line and a prescribed 丙类 line."""
    lines = [("01", True, None, rng.randint(1, 3), rng.randint(500, 3000)),
             ("02", True, None, rng.randint(1, 2), rng.randint(800, 2500)),
             ("03", False, f"RX{rng.randrange(10**8):08d}", 1, rng.randint(300, 1500))]
    items = []
    for number, (level, otc, rxno, cnt, pric_fen) in enumerate(lines, start=1):
        item = {"feedetl_sn": str(number), "med_list_codg": f"LOAD{level}{number:04d}", "chrgitm_lv": level,
                "otc": otc, "cnt": cnt, "pric": pric_fen, "det_item_fee_sumamt": cnt * pric_fen,
                "bilg_dr_codg": doctor}
        if rxno is not None:
            item["rxno"] = rxno
        items.append(item)
    return items


class GatewaySlot:
    """One connection's terminal session and request factory."""

    def __init__(self, target: GatewayTarget, session: TerminalSession, cards: list[Card], rng: random.Random):
        self._target = target
        self._session = session
        self._cards = cards
        self._rng = rng
        self._answers = 0

    def build(self) -> Request:
        """A fresh 2102 (3-line bill) or 1101 with a correct card_mac and a new msgid."""
        at_ms = now_ms()
        infno = self._target.infno
        new_msgid = self._target.serials.new_msgid(self._session.fixmedins_code, at_ms)
        card = self._rng.choice(self._cards)
        if infno == "2102":
            items = bill_items(self._rng, self._session.opter)
            total_fen = sum(item["det_item_fee_sumamt"] for item in items)
            input_ = {**self._session.card_input(card.key, new_msgid, infno, total_fen, card.fields),
                      "medfee_sumamt": total_fen, "items": items}
        else:
            input_ = self._session.card_input(card.key, new_msgid, infno, 0, card.fields)
        return Request("POST", TX_PATH, self._session.request_frame(infno, new_msgid, input_, at_ms), MSGPACK)

    def error_kind(self, response: HttpResponse) -> str | None:
        """None when the answer is HTTP 200 with infcode 0; sampled answers are signature-checked."""
        if response.status != 200:
            return f"http_{response.status}"
        self._answers += 1
        try:
            if self._answers % VERIFY_EVERY == 1:
                envelope = verify_answer(response.body, self._target.gateway_keys)
                infcode, err_code = envelope.infcode, envelope.err_code
            else:
                body = msgpack.unpackb(msgpack.unpackb(response.body)[3])
                infcode, err_code = body["infcode"], body["err_code"]
        except (ProtocolError, ValueError, TypeError, KeyError, IndexError):
            return "bad_answer"
        return None if infcode == 0 else f"infcode_{err_code}"


class GatewayTarget:
    """Traffic of one infno ("2102" or "1101") from the terminals of a region.

    Args:
        region_dir: a directory written by `yibao-gateway init`.
        infno: "2102" (settlement; pharmacies) or "1101" (person info; any institution).
        seed: seeds the choice of persons and bill amounts.
    """

    def __init__(self, region_dir: pathlib.Path, infno: str = "2102", seed: int = 1) -> None:
        assert infno in INFNOS, f"infno must be one of {INFNOS}"
        self.infno = infno
        self.name = f"gateway-{infno}"
        self.seed = seed
        self.region = Region(pathlib.Path(region_dir))
        self.serials = MsgidSerials()
        self.gateway_keys: dict[str, Ed25519PublicKey] = {}
        today = datetime.datetime.now(SHANGHAI).strftime("%Y-%m-%d")
        self._pairs = [(spec, cards) for spec in self.region.terminals(infno)
                       if (cards := self.region.cards_for(spec.admdvs, today))]
        if not self._pairs:
            raise RegionError(f"no active terminal with eligible card holders can send {infno}")

    def slots_max(self) -> int:
        """How many slots can hold a session at once without evicting each other."""
        return len(self._pairs) * SESSIONS_PER_TERMINAL_MAX

    async def open_slot(self, index: int, conn: HttpConnection) -> GatewaySlot:
        """Sign slot `index`'s terminal in over `conn` (9001) and return its request factory.

        Raises:
            RegionError: more slots than sessions the region's terminals may hold, or the sign-in
                was refused.
        """
        if index >= self.slots_max():
            raise RegionError(f"slot {index}: the region's terminals hold only {self.slots_max()} sessions")
        if not self.gateway_keys:
            self.gateway_keys = await fetch_gateway_keys(conn)
        spec, cards = self._pairs[index % len(self._pairs)]
        private_key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(spec.private_key_b64))
        session = TerminalSession(spec.dev_no, spec.fixmedins_code, spec.admdvs, spec.opter, "1", private_key,
                                  self.gateway_keys)
        at_ms = now_ms()
        frame = session.signin_frame(self.serials.new_msgid(spec.fixmedins_code, at_ms), at_ms)
        response = await conn.request("POST", TX_PATH, frame, MSGPACK)
        envelope = session.on_signin_answer(response.body)
        if envelope.infcode != 0:
            raise RegionError(f"sign-in of {spec.dev_no} refused: {envelope.err_code} {envelope.err_msg}")
        return GatewaySlot(self, session, cards, random.Random(f"{self.seed}/{index}"))


async def fetch_gateway_keys(conn: HttpConnection) -> dict[str, Ed25519PublicKey]:
    """GET /fsi/v1/keys and return kid -> public key (active and retired)."""
    response = await conn.request("GET", KEYS_PATH)
    if response.status != 200:
        raise RegionError(f"GET {KEYS_PATH} answered {response.status}")
    keys = json.loads(response.body)["keys"]
    return {k["kid"]: Ed25519PublicKey.from_public_bytes(base64.b64decode(k["public_key"])) for k in keys}
