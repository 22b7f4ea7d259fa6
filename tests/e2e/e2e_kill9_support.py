"""Harness for the whole-server durability tests: a real region, a real `serve` process, a client
that remembers every answer it got (and every request it got none for), and the checks of SPEC §9.

The client's `Book` is the oracle: a settlement stands when the client holds an infcode-0 answer
to its 2102 and no infcode-0 answer to a 2103/2601 undoing it. After a crash and a restart the
gateway must agree with the book exactly: same bytes for the same msgid, same totals.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import pathlib
import random
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from load_tests.http import (ConnectionLost, Endpoint, HttpConnection, HttpProtocolError, HttpResponse,
                             parse_head)
from protocol import ResponseEnvelope, TerminalSession, card_key
from protocol.terminal import SHANGHAI, msgid, verify_answer

TX_PATH = "/fsi/v1/tx"
MSGPACK = "application/msgpack"
READY_DEADLINE_S = 60.0
EXIT_DEADLINE_S = 60.0
READY_POLL_INTERVAL_S = 0.02
DETAIL_PAGE_ROWS = 500
# Whatever a dead or dying server does to a client connection.
CONNECTION_ERRORS = (ConnectionLost, HttpProtocolError, trio.BrokenResourceError, OSError)


def now_ms() -> int:
    """Wall-clock Unix milliseconds (what inf_time carries)."""
    return time.time_ns() // 1_000_000


def shanghai_date(at_ms: int, layout: str = "%Y%m%d") -> str:
    """The Asia/Shanghai business date of `at_ms` (default YYYYMMDD)."""
    return datetime.datetime.fromtimestamp(at_ms / 1000, tz=SHANGHAI).strftime(layout)


def read_accounts(path: pathlib.Path) -> dict[str, int]:
    """The opening balances of an accounts file (psn_no,balance_fen), read here independently."""
    rows = path.read_text(encoding="utf-8").splitlines()[1:] if path.exists() else []
    return {psn_no: int(fen) for psn_no, fen in (row.split(",") for row in rows if row)}


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the region ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Terminal:
    dev_no: str
    code: str
    admdvs: str
    opter: str
    private_key_b64: str

    def session(self, keys: dict[str, Ed25519PublicKey]) -> TerminalSession:
        """A fresh, signed-out TerminalSession for this terminal."""
        private_key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(self.private_key_b64))
        return TerminalSession(self.dev_no, self.code, self.admdvs, self.opter, "1", private_key, keys)


@dataclasses.dataclass(frozen=True)
class Card:
    fields: dict[str, str]
    key: bytes


class Region:
    """A directory written by `python -m gateway init`, with its listeners moved to free ports."""

    def __init__(self, root: pathlib.Path, seed: int, fsync: bool = True,
                 snapshot_every_records: int | None = None) -> None:
        self.root = root
        done = subprocess.run([sys.executable, "-m", "gateway", "init", "--out", str(root),
                               "--profile", "small", "--seed", str(seed)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        self.config_path = root / "gateway.toml"
        self.data_port, self.admin_port = free_port(), free_port()
        self.rewrite_config(fsync=fsync, snapshot_every_records=snapshot_every_records)
        self.sim = tomllib.loads((root / "sim.toml").read_text())
        registry = tomllib.loads((root / "registry.toml").read_text())
        self.institutions = {row["code"]: row for row in registry["institutions"]}
        pharmacies = {code for code, row in self.institutions.items()
                      if row["kind"] == "pharmacy" and row["status"] == "active"}
        self.terminals = [Terminal(t["dev_no"], t["institution"],
                                   self.institutions[t["institution"]]["admdvs"], t["opter"],
                                   t["private_key"])
                          for t in self.sim["terminals"] if t["institution"] in pharmacies]
        self.cards = self._eligible_cards(registry)
        self.viewer_token = next((a["token"] for a in self.sim.get("admins", [])), None)
        # SPEC 13 who pays: opening balances, pooling per insutype, and the valid family links
        # (owner -> members) between eligible persons (the client pays with them).
        self.opening_fen = read_accounts(root / "accounts.csv")
        self.pooling = registry["policy"].get("pooling", {})
        eligible = {card.fields["psn_no"] for card in self.cards}
        self.links: dict[str, list[str]] = {}
        for link in registry.get("family_links", []):
            if (link["owner"] in eligible and link["member"] in eligible
                    and link["valid_from"] <= shanghai_date(now_ms(), "%Y-%m-%d") <= link["valid_to"]):
                self.links.setdefault(link["member"], []).append(link["owner"])

    def rewrite_config(self, *, fsync: bool, snapshot_every_records: int | None = None) -> None:
        """Point listen.data/listen.admin at this region's ports and set [journal] fsync (and
        snapshot_every_records, when given)."""
        text = self.config_path.read_text()
        text = re.sub(r'(?m)^data = "[^"]*"$', f'data = "127.0.0.1:{self.data_port}"', text, count=1)
        text = re.sub(r'(?m)^admin = "[^"]*"$', f'admin = "127.0.0.1:{self.admin_port}"', text, count=1)
        journal = f"fsync = {'true' if fsync else 'false'}"
        if snapshot_every_records is not None:
            journal += f"\nsnapshot_every_records = {snapshot_every_records}"
        text = re.sub(r"(?m)^fsync = \w+$", journal, text, count=1)
        self.config_path.write_text(text)

    def _eligible_cards(self, registry: dict[str, Any]) -> list[Card]:
        """Sample persons of the pharmacies' own province whose card and person are not blocked."""
        blocked_cards = {row["card_no"] for row in registry.get("blocked_cards", [])}
        blocked_persons = {row["psn_no"] for row in registry.get("blocked_persons", [])}
        province = self.terminals[0].admdvs[:2]
        master = base64.b64decode(self.sim["card_master_keys"][province])
        return [Card(dict(p), card_key(master, p["card_no"], p["card_sn"]))
                for p in self.sim["persons"]
                if p["insuplc_admdvs"][:2] == province and p["card_no"] not in blocked_cards
                and p["psn_no"] not in blocked_persons]

    @property
    def data_dir(self) -> pathlib.Path:
        return self.root / "data"

    @property
    def data(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.data_port)

    @property
    def admin(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.admin_port)


# -- the server process ----------------------------------------------------------------------


class GatewayProcess:
    """`python -m gateway serve` on a region; stderr (JSON log lines) goes to a file per run."""

    def __init__(self, region: Region, run_number: int) -> None:
        self.region = region
        self.stderr_path = region.root / f"serve-{run_number:04d}.log"
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(region.config_path)],
                stdout=subprocess.DEVNULL, stderr=stderr)

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def wait_ready(self) -> None:
        """Poll GET /readyz until 200; fail if the process exits or the deadline passes."""
        with trio.move_on_after(READY_DEADLINE_S):
            while True:
                code = self.process.poll()
                assert code is None, f"gateway exited with {code}: {self.stderr_text()[-2000:]}"
                if await http_status(self.region.data, "/readyz") == 200:
                    return
                await trio.sleep(READY_POLL_INTERVAL_S)
        raise AssertionError(f"gateway not ready within {READY_DEADLINE_S} s")

    async def wait_exit(self) -> int:
        """Wait for the process to end; returns its exit code."""
        return await trio.to_thread.run_sync(lambda: self.process.wait(timeout=EXIT_DEADLINE_S))

    async def kill9(self) -> None:
        """SIGKILL: no drain, no flush, no snapshot."""
        self.process.send_signal(signal.SIGKILL)
        await self.wait_exit()

    async def terminate(self) -> int:
        """SIGTERM (graceful drain); returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return await self.wait_exit()

    def reap(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


async def http_status(endpoint: Endpoint, path: str) -> int | None:
    """GET `path` on a new connection; None when nothing answers."""
    response = await http_get(endpoint, path)
    return None if response is None else response.status


async def http_get(endpoint: Endpoint, path: str, token: str | None = None) -> HttpResponse | None:
    """GET `path` on a new connection (bearer `token` if given); None on connection errors.

    Written by hand rather than with HttpConnection because the admin API needs an
    Authorization header; the answer is read to EOF (`connection: close`).
    """
    auth = f"authorization: Bearer {token}\r\n" if token is not None else ""
    head = f"GET {path} HTTP/1.1\r\nhost: {endpoint.host_header}\r\n{auth}connection: close\r\n\r\n"
    try:
        stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
    except OSError:
        return None
    received = bytearray()
    try:
        await stream.send_all(head.encode())
        while chunk := await stream.receive_some(65536):
            received += chunk
    except CONNECTION_ERRORS:
        return None
    finally:
        await stream.aclose()
    if b"\r\n\r\n" not in received:
        return None
    head_bytes, body = bytes(received).split(b"\r\n\r\n", 1)
    status, headers = parse_head(head_bytes)
    return HttpResponse(status, headers, body)


def metric_value(metrics_text: str, name: str) -> float:
    """The value of an unlabelled sample `name` in a Prometheus exposition (0 when absent)."""
    for line in metrics_text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def gateway_keys(endpoint: Endpoint) -> dict[str, Ed25519PublicKey]:
    """The published gateway keys (GET /fsi/v1/keys)."""
    response = await http_get(endpoint, "/fsi/v1/keys")
    assert response is not None and response.status == 200
    return {k["kid"]: Ed25519PublicKey.from_public_bytes(base64.b64decode(k["public_key"]))
            for k in json.loads(response.body)["keys"]}


# -- the client's book -----------------------------------------------------------------------


@dataclasses.dataclass
class Sent:
    """One state-changing request as the client built it; re-sendable with a fresh MAC."""

    infno: str
    msgid: str
    code: str
    input: dict[str, Any]
    target: str | None = None         # the settlement msgid a 2103/2601 undoes
    answer: bytes | None = None       # the exact bytes of the infcode-0 answer, once held


@dataclasses.dataclass
class Settlement:
    msgid: str
    code: str
    psn_no: str
    setl_id: str
    setl_time_ms: int
    medfee_fen: int
    fund_fen: int
    cash_fen: int
    state: str = "settled"            # "settled" | "cancelled" | "reversed"
    claimed: bool = False             # a 2103/2601 for it has been sent
    # SPEC 13 who pays: the account payment, whose account, and what the person-year took.
    acct_fen: int = 0
    payer: str = ""
    insutype: str = ""
    dedc_fen: int = 0
    pool_fen: int = 0


class Book:
    """Everything the client sent and what it was told, across all kill/restart cycles."""

    def __init__(self, region: Region, rng: random.Random, who_pays: bool = False) -> None:
        """`who_pays`: most bills pay from an account, now and then a family member's (SPEC 13)."""
        self.region = region
        self.rng = rng
        self.who_pays = who_pays
        self.sent: dict[str, Sent] = {}
        self.acked: list[str] = []            # msgids with an infcode-0 answer, in answer order
        self.in_doubt: list[str] = []         # sent, no definitive answer yet
        self.settlements: dict[str, Settlement] = {}
        self.unexpected: list[str] = []       # definitive rejections the load never provokes
        self._serials: dict[str, int] = {}

    def new_msgid(self, code: str) -> str:
        """A never-used msgid of institution `code` (per-institution serial, shared by all tasks).

        The 4-digit serial wraps at 10 000; the msgid's seconds stamp keeps wrapped ones apart
        as long as one institution sends fewer than 10 000 messages a second.
        """
        serial = self._serials.get(code, 0)
        self._serials[code] = serial + 1
        return msgid(code, now_ms(), serial)

    def next_request(self, terminal: Terminal) -> Sent:
        """Mostly settlements; sometimes a cancel or reversal of an acknowledged settlement."""
        roll = self.rng.random()
        if roll < 0.25:
            standing = [s for s in self.settlements.values()
                        if s.code == terminal.code and s.state == "settled" and not s.claimed]
            if standing:
                return self._undo(terminal, self.rng.choice(standing), "2103" if roll < 0.15 else "2601")
        return self.settlement(terminal)

    def settlement(self, terminal: Terminal) -> Sent:
        """A new 2102 of a 1–3 line bill by a random eligible card, booked as sent."""
        new_msgid = self.new_msgid(terminal.code)
        card = self.rng.choice(self.region.cards)
        items = bill_items(self.rng, terminal.opter)
        if self.who_pays:
            items.append(prescription_item(self.rng, len(items) + 1, terminal.opter))
        for item in items:
            # A traceability code per package sold: random 20 digits, so every one is new.
            item["drug_trac_codg"] = [str(self.rng.randrange(10**19, 10**20)) for _ in range(item["cnt"])]
        total_fen = sum(item["det_item_fee_sumamt"] for item in items)
        credential = terminal.session({}).card_input(card.key, new_msgid, "2102", total_fen, card.fields)
        return self._record(Sent("2102", new_msgid, terminal.code,
                                 {**credential, "medfee_sumamt": total_fen, "items": items,
                                  **self._who_pays(card.fields["psn_no"])}))

    def _who_pays(self, psn_no: str) -> dict[str, str]:
        """Account payment for most bills; a linked owner's account for some of a member's."""
        if not self.who_pays or self.rng.random() < 0.2:
            return {}
        owners = self.region.links.get(psn_no, [])
        if owners and self.rng.random() < 0.5:
            return {"acct_used_flag": "1", "acct_payer_psn_no": self.rng.choice(owners)}
        return {"acct_used_flag": "1"}

    def trace_probe(self, terminal: Terminal, code: str) -> tuple[str, dict[str, Any]]:
        """A 2101 (changes nothing) of one line carrying `code`: (msgid, input). Not booked."""
        new_msgid = self.new_msgid(terminal.code)
        card = self.rng.choice(self.region.cards)
        items = bill_items(self.rng, terminal.opter)[:1]
        items[0]["drug_trac_codg"] = [code]
        total_fen = items[0]["det_item_fee_sumamt"]
        credential = terminal.session({}).card_input(card.key, new_msgid, "2101", total_fen, card.fields)
        return new_msgid, {**credential, "medfee_sumamt": total_fen, "items": items}

    def trace_codes(self, settlement: Settlement) -> list[str]:
        """The codes the 2102 of `settlement` sent."""
        return [code for item in self.sent[settlement.msgid].input["items"] for code in item["drug_trac_codg"]]

    def _undo(self, terminal: Terminal, settlement: Settlement, infno: str) -> Sent:
        settlement.claimed = True
        input_ = ({"setl_id": settlement.setl_id, "psn_no": settlement.psn_no} if infno == "2103"
                  else {"omsgid": settlement.msgid, "oinfno": "2102"})
        return self._record(Sent(infno, self.new_msgid(terminal.code), terminal.code, input_,
                                 target=settlement.msgid))

    def _record(self, sent: Sent) -> Sent:
        self.sent[sent.msgid] = sent
        return sent

    def take_answer(self, sent: Sent, body: bytes, envelope: ResponseEnvelope) -> bool:
        """Book an answer; returns False when the outcome is unknown (-1: still in doubt)."""
        if envelope.infcode == -1:
            self.in_doubt.append(sent.msgid)
            return False
        if envelope.infcode != 0:
            self.unexpected.append(f"{sent.infno} {sent.msgid}: {envelope.err_code} {envelope.err_msg}")
            return True
        sent.answer = body
        self.acked.append(sent.msgid)
        self._apply(sent, envelope.output or {})
        return True

    def _apply(self, sent: Sent, output: dict[str, Any]) -> None:
        if sent.infno == "2102":
            info = output["setlinfo"]
            self.settlements[sent.msgid] = Settlement(
                sent.msgid, sent.code, info["psn_no"], info["setl_id"], info["setl_time"],
                info["medfee_sumamt"], info["fund_pay_sumamt"], info["psn_cash_pay"],
                acct_fen=info.get("acct_pay", 0), payer=info.get("acct_payer_psn_no") or info["psn_no"],
                insutype=info["insutype"], dedc_fen=info.get("act_pay_dedc", 0), pool_fen=info["rx_pay"])
            return
        assert sent.target is not None
        if sent.infno == "2601":
            assert output.get("original_found") is True, (sent.msgid, output)
        self.settlements[sent.target].state = "cancelled" if sent.infno == "2103" else "reversed"

    def expected_replay_code(self, sent: Sent) -> str:
        """What a re-send of an acknowledged request must answer: "" (stored bytes) or an error."""
        settlement = self.settlements.get(sent.msgid)
        if settlement is not None and settlement.state == "reversed":
            return "ORIGINAL_REVERSED"
        return ""

    def standing(self, code: str) -> list[Settlement]:
        return [s for s in self.settlements.values() if s.code == code and s.state == "settled"]

    def totals(self, code: str, stmt_date: str) -> dict[str, int]:
        """The client's own 3201 totals: standing settlements of `code` on `stmt_date`."""
        rows = [s for s in self.standing(code) if shanghai_date(s.setl_time_ms) == stmt_date]
        return {"setl_cnt": len(rows), "medfee_sumamt": sum(s.medfee_fen for s in rows),
                "fund_pay_sumamt": sum(s.fund_fen for s in rows),
                "psn_cash_pay": sum(s.cash_fen for s in rows), "acct_pay": sum(s.acct_fen for s in rows)}

    def balance_fen(self, psn_no: str) -> int:
        """What the person's account must hold: the opening balance less standing account payments."""
        spent = sum(s.acct_fen for s in self.settlements.values() if s.state == "settled" and s.payer == psn_no)
        return self.region.opening_fen.get(psn_no, 0) - spent

    def year_used_fen(self, psn_no: str) -> tuple[int, int]:
        """(deductible used, pooled paid) of the person's standing settlements (one year: the test's)."""
        rows = [s for s in self.settlements.values() if s.state == "settled" and s.psn_no == psn_no]
        return sum(s.dedc_fen for s in rows), sum(s.pool_fen for s in rows)

    def dates(self, code: str) -> set[str]:
        """Business dates on which `code` has settlements in the book."""
        return {shanghai_date(s.setl_time_ms) for s in self.settlements.values() if s.code == code}

    def month_fund_fen(self, code: str) -> int:
        """Fund payments of `code`'s standing settlements (what its month ledger must hold)."""
        return sum(s.fund_fen for s in self.standing(code))


def bill_items(rng: random.Random, doctor: str) -> list[dict[str, Any]]:
    """A 1–3 line pharmacy bill mixing 甲/乙/丙 lines, OTC and prescribed."""
    items = []
    for number in range(1, rng.randint(1, 3) + 1):
        level = rng.choice(("01", "02", "03"))
        cnt, pric_fen = rng.randint(1, 3), rng.randint(100, 3000)
        item = {"feedetl_sn": str(number), "med_list_codg": f"CR{level}{number:04d}",
                "chrgitm_lv": level, "otc": rng.random() < 0.7, "cnt": cnt, "pric": pric_fen,
                "det_item_fee_sumamt": cnt * pric_fen, "bilg_dr_codg": doctor}
        if not item["otc"]:
            item["rxno"] = f"RX{rng.randrange(10**8):08d}"
        items.append(item)
    return items


def prescription_item(rng: random.Random, number: int, doctor: str) -> dict[str, Any]:
    """A prescription line the region's catalogue lists as 甲 and not OTC: outpatient pooling pays it
    after the deductible (SPEC 13), so persons go through the deductible within a run."""
    cnt, pric_fen = rng.randint(1, 2), rng.randint(3000, 15_000)
    return {"feedetl_sn": str(number), "med_list_codg": rng.choice(("XA04", "XA16", "XA24")), "chrgitm_lv": "01",
            "otc": False, "rxno": f"RX{rng.randrange(10**8):08d}", "cnt": cnt, "pric": pric_fen,
            "det_item_fee_sumamt": cnt * pric_fen, "bilg_dr_codg": doctor}


# -- terminals on the wire -------------------------------------------------------------------


# A terminal's pause before it sends again a request shed OVERLOADED, doubling up to the most.
BUSY_PAUSE_S = 0.02
BUSY_PAUSE_MAX_S = 0.5


class TerminalLink:
    """One keep-alive connection carrying one signed-in session of a terminal."""

    def __init__(self, terminal: Terminal, endpoint: Endpoint, keys: dict[str, Ed25519PublicKey]) -> None:
        self.terminal = terminal
        self.endpoint = endpoint
        self.keys = keys
        self.session = terminal.session(keys)
        self.conn: HttpConnection | None = None
        # How long a request answered -1 OVERLOADED (SPEC §5: retry the same msgid) is
        # sent again before that answer is returned; 0 returns the first answer.
        self.busy_wait_s = 0.0
        self.busy_resent = 0

    async def open(self, book: Book) -> ResponseEnvelope:
        """Connect and sign in (9001); returns the sign-in answer (infcode 0 on success)."""
        self.conn = await HttpConnection.connect(self.endpoint)
        at_ms = now_ms()
        frame = self.session.signin_frame(book.new_msgid(self.terminal.code), at_ms)
        response = await self.conn.request("POST", TX_PATH, frame, MSGPACK)
        return self.session.on_signin_answer(response.body)

    async def send(self, sent: Sent) -> tuple[int, bytes, ResponseEnvelope]:
        """Send (or re-send: same msgid and input, fresh inf_time and MAC) a booked request;
        returns (HTTP status, exact answer bytes, verified answer)."""
        return await self._post(sent.infno, sent.msgid, sent.input)

    async def query(self, book: Book, infno: str, input_: dict[str, Any]) -> ResponseEnvelope:
        """A read-only request (3201/3202) under a new msgid; must succeed."""
        _, _, envelope = await self._post(infno, book.new_msgid(self.terminal.code), input_)
        assert envelope.infcode == 0, (infno, input_, envelope)
        return envelope

    async def _post(self, infno: str, msgid_: str, input_: dict[str, Any]
                    ) -> tuple[int, bytes, ResponseEnvelope]:
        assert self.conn is not None
        deadline_s = trio.current_time() + self.busy_wait_s
        pause_s = BUSY_PAUSE_S
        while True:
            frame = self.session.request_frame(infno, msgid_, input_, now_ms())
            response = await self.conn.request("POST", TX_PATH, frame, MSGPACK)
            envelope = verify_answer(response.body, self.keys)
            if envelope.err_code != "OVERLOADED" or trio.current_time() + pause_s > deadline_s:
                return response.status, response.body, envelope
            self.busy_resent += 1
            await trio.sleep(pause_s)
            pause_s = min(2 * pause_s, BUSY_PAUSE_MAX_S)

    async def aclose(self) -> None:
        if self.conn is not None:
            await self.conn.aclose()


async def drive_terminal(book: Book, terminal: Terminal, endpoint: Endpoint,
                         keys: dict[str, Ed25519PublicKey]) -> None:
    """Closed-loop state-changing traffic until the server stops answering definitively."""
    link = TerminalLink(terminal, endpoint, keys)
    try:
        try:
            if (await link.open(book)).infcode != 0:
                return
        except CONNECTION_ERRORS:
            return
        while True:
            sent = book.next_request(terminal)
            try:
                _, body, envelope = await link.send(sent)
            except CONNECTION_ERRORS:
                book.in_doubt.append(sent.msgid)
                return
            if not book.take_answer(sent, body, envelope):
                return
    finally:
        await link.aclose()


async def run_load(book: Book, region: Region, keys: dict[str, Ed25519PublicKey],
                   interrupt: Any, deadline_s: float = 60.0) -> None:
    """One task per pharmacy terminal, each with its own connection and session, until
    `interrupt()` (an async callable that kills or stops the server) has made them all stop."""
    with trio.fail_after(deadline_s):
        async with trio.open_nursery() as nursery:
            for terminal in region.terminals:
                nursery.start_soon(drive_terminal, book, terminal, region.data, keys)
            nursery.start_soon(interrupt)
