"""One simulated POS terminal: sign-in, the settlement flows, cancellations, 3201 and 3202.

A terminal sends one message at a time on its own connection; many terminals run at once (one
trio task each, see runner.py). Every answer is verified against the gateway's published keys
before it is believed; a bad signature is an oracle violation. SESSION_UNKNOWN/SESSION_EXPIRED
make the terminal sign in again and resend; an answer with infcode -1 (outcome unknown) is resent
with the same msgid, and reversed (2601) when it stays unknown. A settlement marked `timeout` in its
intent is handled as one whose answer was lost: not used, reversed, and its msgid resent once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocol import ProtocolError, TerminalSession, VoucherClaims, card_key, mint_voucher, msgid
from simulators.oracle import Oracle, Totals, shanghai_day
from simulators.region import Institution, Person, Region, TerminalSpec
from simulators.report import Stats

SESSION_ERRORS = ("SESSION_UNKNOWN", "SESSION_EXPIRED")
ATTEMPTS_MAX = 5
# Back-off between resends of an unknown outcome (-1, 429/503): short, the gateway sheds briefly.
RETRY_PAUSE_S = 0.2
VOUCHER_TTL_S = 600
# 3202 page size asked for; the gateway answers at most 200 rows a page whatever this says.
DETAIL_LIMIT = 500
DETAIL_PAGES_MAX = 10_000

Answer = tuple[dict[str, Any] | None, bytes]


class Transport(Protocol):
    """What a terminal needs from its connection (GatewayClient, or a scripted gateway in tests)."""

    async def post_frame(self, frame: bytes) -> tuple[int, bytes, float]: ...

    async def aclose(self) -> None: ...


class SimClock:
    """The terminals' clock, kept in step with the gateway's at every sign-in (a POS syncs with
    the platform when it signs in); so a gateway whose clock was moved (--test-clock) sees fresh
    inf_time and vouchers, and business days are the gateway's."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def now_ms(self) -> int:
        """The gateway's time as best known, Unix ms."""
        return int(time.time() * 1000) + self.offset_ms

    def sync(self, gateway_ms: int, sent_local_ms: int, received_local_ms: int) -> None:
        """Take the gateway's `sign_time` seen between two local instants."""
        self.offset_ms = gateway_ms - (sent_local_ms + received_local_ms) // 2


class MsgidSource:
    """Per-institution msgid serials: terminals of one institution share its msgid space."""

    def __init__(self) -> None:
        self._serials: dict[str, int] = {}

    def next(self, fixmedins_code: str, now_ms: int) -> str:
        """A fresh msgid for `fixmedins_code` at `now_ms`."""
        serial = self._serials.get(fixmedins_code, 0) + 1
        self._serials[fixmedins_code] = serial
        return msgid(fixmedins_code, now_ms, serial)


class SimTerminal:
    """One POS: a TerminalSession, a keep-alive connection, and the flows of SPEC section 7."""

    def __init__(self, spec: TerminalSpec, region: Region, client: Transport,
                 keys: Mapping[str, Ed25519PublicKey], oracle: Oracle, stats: Stats, msgids: MsgidSource,
                 clock: SimClock | None = None) -> None:
        self.spec, self.region, self.client = spec, region, client
        self.institution: Institution = region.institutions[spec.institution]
        self.session = TerminalSession(spec.dev_no, self.institution.code, self.institution.admdvs,
                                       spec.opter, "1", spec.private_key, keys)
        self.oracle, self.stats, self.msgids = oracle, stats, msgids
        self.clock = clock or SimClock()

    def _now_ms(self) -> int:
        return self.clock.now_ms()

    async def _post(self, infno: str, frame: bytes) -> Answer:
        """POST, verify, count; (None, raw) when the answer is not believable (a violation)."""
        status, raw, latency_s = await self.client.post_frame(frame)
        try:
            envelope = self.session.verify_answer(raw)
        except ProtocolError as error:
            self.oracle.violation(f"{infno} at {self.spec.dev_no}: HTTP {status}: unverifiable answer: {error}")
            self.stats.count(infno, "UNVERIFIABLE", latency_s)
            return None, raw
        self.stats.count(infno, envelope.err_code or "ok", latency_s)
        answer = {"infcode": envelope.infcode, "err_code": envelope.err_code, "err_msg": envelope.err_msg,
                  "output": envelope.output or {}, "warnings": list(envelope.warnings)}
        return answer, raw

    async def sign_in(self) -> bool:
        """9001: open a session and sync the clock with sign_time; False when refused."""
        sent_ms = int(time.time() * 1000)
        now_ms = self._now_ms()
        frame = self.session.signin_frame(self.msgids.next(self.institution.code, now_ms), now_ms)
        status, raw, latency_s = await self.client.post_frame(frame)
        try:
            envelope = self.session.on_signin_answer(raw)
        except ProtocolError as error:
            self.oracle.violation(f"9001 at {self.spec.dev_no}: HTTP {status}: unverifiable answer: {error}")
            self.stats.count("9001", "UNVERIFIABLE", latency_s)
            return False
        self.stats.count("9001", envelope.err_code or "ok", latency_s)
        sign_time = (envelope.output or {}).get("sign_time")
        if envelope.infcode == 0 and isinstance(sign_time, int) and sign_time > 0:
            self.clock.sync(sign_time, sent_ms, int(time.time() * 1000))
        return envelope.infcode == 0

    async def exchange(self, infno: str, mid: str, input_: Callable[[], dict[str, Any]]) -> Answer:
        """Send one message until it has a definitive answer: re-sign-in on a lost session,
        resend the same msgid on -1. Returns the last (answer, raw bytes)."""
        answer: Answer = (None, b"")
        for _ in range(ATTEMPTS_MAX):
            if self.session.sign_no is None and not await self.sign_in():
                return None, b""
            answer = await self._post(infno, self.session.request_frame(infno, mid, input_(), self._now_ms()))
            decoded = answer[0]
            if decoded is None:
                return answer
            if decoded["err_code"] in SESSION_ERRORS:
                self.session.end_session()
                continue
            if decoded["infcode"] != -1:
                return answer
            await trio.sleep(RETRY_PAUSE_S)
        return answer

    def _credential(self, person: Person, kind: str, token: str | None) -> Callable[[str, str, int], dict[str, Any]]:
        def build(mid: str, infno: str, medfee_fen: int) -> dict[str, Any]:
            if kind == "voucher" and token is not None:
                return {"mdtrt_cert_type": "01", "mdtrt_cert_no": token}
            master = self.region.card_master_keys[person.insuplc_admdvs[:2]]
            key = card_key(master, person.card_no, person.card_sn)
            return self.session.card_input(key, mid, infno, medfee_fen, person.card())
        return build

    def _voucher(self, person: Person, tid: str) -> str | None:
        if not self.region.issuers:
            return None
        kid = sorted(self.region.issuers)[int(tid[-4:]) % len(self.region.issuers)]
        iat_s = self._now_ms() // 1000
        claims = VoucherClaims(tid, person.psn_no, person.insutype, person.insuplc_admdvs,
                               self.institution.code, iat_s, iat_s + VOUCHER_TTL_S)
        return mint_voucher(kid, self.region.issuers[kid], claims)

    async def settle(self, intent: Mapping[str, Any], person: Person) -> dict[str, Any] | None:
        """Run one settle intent; return the committed setlinfo (with `msgid`) or None."""
        pharmacy = self.institution.kind == "pharmacy"
        items = intent["items"]
        # Who pays (SPEC 13): the account and whose; a trace without the keys pays in cash.
        paying = (bool(intent.get("acct", False)), intent.get("payer"))
        who_pays = {"acct_used_flag": "1"} if paying[0] else {}
        if paying[0] and paying[1] is not None:
            who_pays["acct_payer_psn_no"] = paying[1]
        bill_fen = sum(item["det_item_fee_sumamt"] for item in items)
        mid_first = self.msgids.next(self.institution.code, self._now_ms())
        token = self._voucher(person, mid_first) if intent["credential"] == "voucher" else None
        credential = self._credential(person, intent["credential"], token)
        pre_infno, infno = ("2101", "2102") if pharmacy else ("2206", "2207")
        where = f"{self.spec.dev_no} seq {intent['seq']}"
        if pharmacy:
            answer, _ = await self.exchange("1101", mid_first, lambda: credential(mid_first, "1101", 0))
            if answer is None or answer["infcode"] != 0:
                return None
        mid_pre = self.msgids.next(self.institution.code, self._now_ms())
        sent_tick = self.oracle.tick()
        answer, _ = await self.exchange(pre_infno, mid_pre, lambda: {
            **credential(mid_pre, pre_infno, bill_fen), "medfee_sumamt": bill_fen, "items": items, **who_pays})
        received_tick = self.oracle.tick()
        self.oracle.v2.on_answer(pre_infno, f"{pre_infno} {where}", self.institution, items, answer, sent_tick,
                                 received_tick)
        if answer is not None and paying[0]:
            self.oracle.on_payer_answer(f"{pre_infno} {where}", person.psn_no, paying[1],
                                        shanghai_day(self._now_ms()), answer)
        if answer is None or answer["infcode"] != 0:
            return None
        self.oracle.on_presettle(f"{pre_infno} {where}", self.institution.code, answer["output"]["setlinfo"],
                                 bill_fen, sent_tick, received_tick, paying)
        mid = self.msgids.next(self.institution.code, self._now_ms())

        def build() -> dict[str, Any]:
            return {**credential(mid, infno, bill_fen), "medfee_sumamt": bill_fen, "items": items, **who_pays}

        self.oracle.on_settle_sent(self.institution.code, mid)
        sent_tick = self.oracle.tick()
        self.oracle.v2.on_settle_sent(self.institution, mid, items, sent_tick)
        answer, raw = await self.exchange(infno, mid, build)
        received_tick = self.oracle.tick()
        self.oracle.v2.on_answer(infno, f"{infno} {where}", self.institution, items, answer, sent_tick,
                                 received_tick, msgid=mid, seen=not intent.get("timeout", False))
        if answer is not None and paying[0]:
            self.oracle.on_payer_answer(f"{infno} {where}", person.psn_no, paying[1], shanghai_day(self._now_ms()),
                                        answer)
        if intent.get("timeout", False):
            await self._timed_out(where, infno, mid, build, answer, bill_fen, (sent_tick, received_tick), paying)
            return None
        if answer is not None and answer["infcode"] == -1:
            await self.reverse(mid, infno, where)
        if answer is None or answer["infcode"] != 0:
            return None
        setlinfo = answer["output"]["setlinfo"]
        self.oracle.on_settle(f"{infno} {where}", self.institution.code, mid, setlinfo, bill_fen, raw,
                              sent_tick, received_tick, paying)
        for _ in range(intent.get("retries", 0)):
            again, again_raw = await self.exchange(infno, mid, build)
            if again is not None:
                self.oracle.on_retry(f"{infno} retry {where}", self.institution.code, mid, again_raw)
        return {**setlinfo, "msgid": mid}

    async def _timed_out(self, where: str, infno: str, mid: str, build: Callable[[], dict[str, Any]],
                         unseen: dict[str, Any] | None, bill_fen: int, ticks: tuple[int, int],
                         paying: tuple[bool, str | None] = (False, None)) -> None:
        """The settlement's answer never reached this POS: the sale is not made. Reverse the msgid
        (2601), then resend it once, as a POS retrying its lost message would.

        The oracle hears of the unseen answer only as one that never stood: until the 2601 answer
        the settlement may or may not be applied, and after it it must not be."""
        applied: bool | None = None  # unknown: -1 throughout, or an unverifiable answer
        if unseen is not None and unseen["infcode"] == 0:
            applied = True
            self.oracle.on_unseen_settle(f"{infno} {where}", self.institution.code, mid,
                                         unseen["output"]["setlinfo"], bill_fen, *ticks, paying)
        elif unseen is not None and unseen["infcode"] != -1:
            applied = False
        if not await self.reverse(mid, infno, where, applied):
            return
        again, _ = await self.exchange(infno, mid, build)
        if again is not None:
            self.oracle.on_resend_after_reversal(f"{infno} resend {where}", mid, again)

    async def person_info(self, person: Person) -> dict[str, Any] | None:
        """1101 of `person` (with its card); the output, or None when refused."""
        mid = self.msgids.next(self.institution.code, self._now_ms())
        credential = self._credential(person, "card", None)
        answer, _ = await self.exchange("1101", mid, lambda: credential(mid, "1101", 0))
        if answer is None or answer["infcode"] != 0:
            return None
        return answer["output"]

    async def reverse(self, omsgid: str, oinfno: str, where: str, applied: bool | None = None) -> bool:
        """2601 of `omsgid`, whose answer this POS never saw; True when the gateway reversed it.

        `applied`: True when the original's answer was 0, False when it was a rejection, None when
        unknown (the oracle checks `original_found` against it)."""
        mid = self.msgids.next(self.institution.code, self._now_ms())
        sent_tick = self.oracle.tick()
        answer, _ = await self.exchange("2601", mid, lambda: {"omsgid": omsgid, "oinfno": oinfno})
        if answer is None or answer["infcode"] != 0:
            self.oracle.violation(f"2601 of {omsgid} at {self.spec.dev_no}: outcome still unknown")
            return False
        self.oracle.on_reversal(f"2601 {where}", self.institution.code, omsgid, oinfno, applied, answer["output"])
        self.oracle.v2.on_reversal(self.institution.code, omsgid, sent_tick, self.oracle.tick())
        return True

    async def cancel(self, setl_id: str, psn_no: str) -> bool:
        """2103 (pharmacy) or 2208 (clinic, hospital) of a settlement made here; True when done."""
        infno = "2103" if self.institution.kind == "pharmacy" else "2208"
        mid = self.msgids.next(self.institution.code, self._now_ms())
        self.oracle.on_cancel_sent(self.institution.code, setl_id)
        self.oracle.v2.on_cancel_sent(self.institution.code, setl_id, mid, self.oracle.tick())
        answer, _ = await self.exchange(infno, mid, lambda: {"setl_id": setl_id, "psn_no": psn_no})
        if answer is not None and answer["infcode"] == -1:
            await self.reverse(mid, infno, f"{self.spec.dev_no} cancel of {setl_id}")
        if answer is None or answer["infcode"] != 0:
            return False
        self.oracle.on_cancel(f"{infno} {self.spec.dev_no}", self.institution.code, setl_id, answer["output"])
        self.oracle.v2.on_cancelled(self.institution.code, setl_id, self.oracle.tick())
        return True

    async def totals(self, stmt_date: str, claimed: Totals) -> tuple[str, dict[str, Any]] | None:
        """3201 with `claimed` totals; (stmt_rslt, gateway totals) or None when refused."""
        mid = self.msgids.next(self.institution.code, self._now_ms())
        answer, _ = await self.exchange("3201", mid, lambda: {
            "stmt_date": stmt_date, "setl_cnt": claimed.setl_cnt, "medfee_sumamt": claimed.medfee_sumamt,
            "fund_pay_sumamt": claimed.fund_pay_sumamt, "psn_cash_pay": claimed.psn_cash_pay})
        if answer is None or answer["infcode"] != 0:
            return None
        return answer["output"]["stmt_rslt"], answer["output"]["gateway"]

    async def detail(self, stmt_date: str) -> list[dict[str, Any]] | None:
        """3202 page after page (`next` passed as `after`) until `next` is nil; the pages, or None
        when one was refused."""
        pages: list[dict[str, Any]] = []
        after: str | None = None
        for _ in range(DETAIL_PAGES_MAX):
            mid = self.msgids.next(self.institution.code, self._now_ms())
            input_ = {"stmt_date": stmt_date, "limit": DETAIL_LIMIT, **({"after": after} if after else {})}
            answer, _ = await self.exchange("3202", mid, lambda: input_)
            if answer is None or answer["infcode"] != 0:
                return None
            pages.append(answer["output"])
            after = answer["output"].get("next")
            if after is None:
                return pages
        return None
