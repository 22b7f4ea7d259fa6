"""A small region for core tests: registry + secrets files, keys, terminals and request builders."""

from __future__ import annotations

import base64
import datetime
import pathlib
import random
from typing import Any

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gateway.core import Core, CoreConfig, Record, from_wire
from gateway.core.accounts import parse_accounts
from gateway.files import load_registry, load_secrets
from gateway.core.catalogue import parse_catalogue
from gateway.sealer import KeyRing, Sealer, TxResult
from protocol import (
    ResponseEnvelope, TerminalSession, VoucherClaims, card_key, decode_frame, decode_response_envelope,
    mint_voucher, msgid,
)

P1, P2, C1 = "P51018200001", "P51018200002", "C51018200001"
ADMDVS = "510182"
# 2024-03-15 10:00:00 Asia/Shanghai.
T0_MS = int(datetime.datetime(2024, 3, 15, 2, 0, tzinfo=datetime.timezone.utc).timestamp() * 1000)


def _seed_key(n: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def pub_b64(key: Ed25519PrivateKey) -> str:
    from protocol import public_raw
    return b64(public_raw(key.public_key()))


TERMINALS = {"T1": (P1, 11, "active"), "T2": (P2, 12, "active"), "T3": (C1, 13, "active"),
             "T4": (P1, 14, "revoked"), "T5": (P1, 15, "active")}
MASTER_51 = bytes(range(32))
ISSUER = _seed_key(40)


def terminals_toml(terminals: dict[str, tuple[str, int, str]]) -> str:
    return "".join(
        f'[[terminals]]\ndev_no = "{dev}"\ninstitution = "{inst}"\npublic_key = "{pub_b64(_seed_key(seed))}"\n'
        f'status = "{status}"\n' for dev, (inst, seed, status) in terminals.items())


def registry_toml(p2_cap_fen: int = 20_000, policy_extra: str = "") -> str:
    terminals = terminals_toml(TERMINALS)
    return f'''
[policy]
otc_allowance_fen = {{ A = 12000, B = 9000, C = 6000, D = 6000, E = 6000 }}
coverage_permille = {{ "310" = 700, "390" = 500 }}
selfpay_prop_permille = 100
warn_person_day_permille = 800
warn_institution_month_permille = 900
{policy_extra}

[[institutions]]
code = "{P1}"
name = "Pharmacy One"
kind = "pharmacy"
admdvs = "{ADMDVS}"
grade = "A"
monthly_cap_fen = 1000000
status = "active"

[[institutions]]
code = "{P2}"
name = "Pharmacy Two"
kind = "pharmacy"
admdvs = "{ADMDVS}"
grade = "C"
monthly_cap_fen = {p2_cap_fen}
status = "active"

[[institutions]]
code = "{C1}"
name = "Clinic One"
kind = "clinic"
admdvs = "{ADMDVS}"
monthly_cap_fen = 500000
status = "active"

{terminals}
[[operators]]
code = "OP1"
institution = "{P1}"
status = "active"

[[operators]]
code = "DR1"
institution = "{P1}"
status = "suspended"

[[operators]]
code = "OPS"
institution = "{P1}"
status = "suspended"

[[voucher_issuers]]
kid = "iss1"
public_key = "{pub_b64(ISSUER)}"

[[filings]]
psn_no = "X001"
admdvs = "51"
valid_from = "2024-01-01"
valid_to = "2024-03-31"

[[blocked_cards]]
card_no = "CBLK"
reason = "lost"

[[blocked_persons]]
psn_no = "PBLK"
reason = "deceased"
'''


SECRETS_TOML = f'''
card_master_keys = {{ "51" = "{b64(MASTER_51)}", "44" = "{b64(bytes(range(1, 33)))}" }}

[[admins]]
name = "alice"
role = "policy"
token_sha256 = "{"a" * 64}"
'''


def card(psn_no: str = "PSN1", insutype: str = "310", admdvs: str = ADMDVS, card_no: str | None = None) -> dict[str, str]:
    return {"card_no": card_no or "C" + psn_no, "card_sn": "SN" + psn_no, "psn_no": psn_no,
            "insutype": insutype, "insuplc_admdvs": admdvs}


def line(sn: str, fee: int, lv: str = "01", otc: bool = True, rxno: str | None = None, cnt: int = 1,
         dr: str = "OP1") -> dict[str, Any]:
    item = {"feedetl_sn": sn, "med_list_codg": "X" + sn, "chrgitm_lv": lv, "otc": otc, "cnt": cnt,
            "pric": fee // cnt, "det_item_fee_sumamt": fee, "bilg_dr_codg": dr}
    if rxno is not None:
        item["rxno"] = rxno
    return item


class World:
    """One core over the test region, with signed-in terminals and request helpers."""

    def __init__(self, tmp_path: pathlib.Path, p2_cap_fen: int = 20_000, seed: int = 7,
                 catalogue_csv: str | None = None, trace_required_from: str | None = None, extra_toml: str = "",
                 extra_terminals: dict[str, tuple[str, int, str]] | None = None, accounts_csv: str | None = None,
                 **config: Any) -> None:
        """`extra_toml` is appended to the registry (with `extra_terminals` enrolled);
        `accounts_csv` is an accounts file's text (None: accounts are off)."""
        extra = "" if trace_required_from is None else f'trace_required_from = "{trace_required_from}"'
        self.terminals = {**TERMINALS, **(extra_terminals or {})}
        (tmp_path / "registry.toml").write_text(registry_toml(p2_cap_fen, extra) + extra_toml
                                                + terminals_toml(extra_terminals or {}), encoding="utf-8")
        (tmp_path / "secrets.toml").write_text(SECRETS_TOML, encoding="utf-8")
        self.accounts = None if accounts_csv is None else parse_accounts(accounts_csv.encode(), "accounts.csv")
        self.registry = load_registry(str(tmp_path / "registry.toml"))
        self.secrets = load_secrets(str(tmp_path / "secrets.toml"))
        self.gateway_key = _seed_key(50)
        self.config = CoreConfig(admdvs=ADMDVS, **config)
        self.seed = seed
        # The catalogue file as loaded once; each core gets its own copy, as serve does.
        self.catalogue = None if catalogue_csv is None else parse_catalogue(catalogue_csv, "catalogue.csv")
        self.sealer = Sealer(ADMDVS, KeyRing(self.gateway_key), self.config.refid_block)
        self.core = self.make_core()
        self.serial = 0
        self.records: list[Record] = []

    def make_core(self, gateway_key: Ed25519PrivateKey | None = None) -> Core:
        """A fresh core publishing `gateway_key` (default: the world's), with seeded randomness."""
        rng = random.Random(self.seed)
        key = gateway_key or self.gateway_key
        return Core(config=self.config, registry=self.registry, secrets=self.secrets,
                    active_public_raw=KeyRing(key).active_public_raw, random_bytes=rng.randbytes,
                    catalogue=None if self.catalogue is None else self.catalogue.copy(), accounts=self.accounts)

    def restart(self, core: Core) -> None:
        """Continue with `core` (restored from a snapshot) as a restarted gateway would: a new sealer."""
        self.core = core
        self.sealer = Sealer(ADMDVS, KeyRing(self.gateway_key), self.config.refid_block)
        self.sealer.follow(core)

    def assert_replay_and_restore(self) -> None:
        """Replaying the kept records (through their wire form), and restoring a snapshot, reproduce the state."""
        replayed = self.make_core()
        for record in self.records:
            replayed.commit(from_wire(msgpack.unpackb(msgpack.packb(record.to_wire(), use_bin_type=True), raw=False)))
        assert replayed.snapshot() == self.core.snapshot()
        restored = self.make_core()
        restored.restore(msgpack.unpackb(msgpack.packb(self.core.snapshot(), use_bin_type=True), raw=False))
        assert restored.snapshot() == self.core.snapshot()

    def handle_tx(self, body: bytes, now_ms: int) -> TxResult:
        """Decide, seal and commit one request as the data path does (without the journal)."""
        return self.sealer.answer(self.core, body, now_ms)

    def commit(self, record: Record) -> Record:
        """Commit an admin record as the admin path does, and keep it as the journal would."""
        placed = self.sealer.commit_record(self.core, record)
        self.records.append(placed)
        return placed

    def keep(self, result: Any) -> None:
        """Remember the result's record, as the journal would."""
        if result.record is not None:
            self.records.append(result.record)

    def next_msgid(self, institution: str, now_ms: int) -> str:
        self.serial += 1
        return msgid(institution, now_ms, self.serial)

    def terminal(self, dev_no: str = "T1", opter: str = "OP1") -> TerminalSession:
        institution, seed, _ = self.terminals[dev_no]
        return TerminalSession(dev_no=dev_no, fixmedins_code=institution, admdvs=ADMDVS, opter=opter,
                               opter_type="1", private_key=_seed_key(seed))

    def sign_in(self, dev_no: str = "T1", opter: str = "OP1", now_ms: int = T0_MS) -> TerminalSession:
        term = self.terminal(dev_no, opter)
        frame = term.signin_frame(self.next_msgid(term.fixmedins_code, now_ms), now_ms,
                                  X25519PrivateKey.from_private_bytes(bytes([self.serial % 250 + 1]) * 32))
        result = self.handle_tx(frame, now_ms)
        self.keep(result)
        env = term.on_signin_answer(result.response)
        assert env.infcode == 0, env
        return term

    def send(self, term: TerminalSession, infno: str, input_: dict[str, Any], now_ms: int = T0_MS,
             msgid_: str | None = None) -> tuple[Any, ResponseEnvelope]:
        mid = msgid_ or self.next_msgid(term.fixmedins_code, now_ms)
        result = self.handle_tx(term.request_frame(infno, mid, input_, now_ms), now_ms)
        self.keep(result)
        return result, decode_response_envelope(decode_frame(result.response).body)

    def card_fields(self, term: TerminalSession, mid: str, infno: str, medfee: int,
                    who: dict[str, str]) -> dict[str, Any]:
        key = card_key(MASTER_51 if who["insuplc_admdvs"].startswith("51") else bytes(range(1, 33)),
                       who["card_no"], who["card_sn"])
        return term.card_input(key, mid, infno, medfee, who)

    def settle(self, term: TerminalSession, items: list[dict[str, Any]], who: dict[str, str] | None = None,
               infno: str = "2102", now_ms: int = T0_MS, msgid_: str | None = None,
               cert: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> tuple[Any, ResponseEnvelope]:
        """`extra`: further input fields (e.g. SPEC 13's acct_used_flag)."""
        mid = msgid_ or self.next_msgid(term.fixmedins_code, now_ms)
        medfee = sum(i["det_item_fee_sumamt"] for i in items)
        fields = cert if cert is not None else self.card_fields(term, mid, infno, medfee, who or card())
        return self.send(term, infno, {**fields, "medfee_sumamt": medfee, "items": items, **(extra or {})},
                         now_ms, mid)

    def voucher(self, psn_no: str = "PSN9", org: str = P1, now_ms: int = T0_MS, tid: str = "tid-1",
                insutype: str = "310") -> dict[str, Any]:
        iat = now_ms // 1000
        token = mint_voucher("iss1", ISSUER, VoucherClaims(tid, psn_no, insutype, ADMDVS, org, iat, iat + 600))
        return {"mdtrt_cert_type": "01", "mdtrt_cert_no": token}
