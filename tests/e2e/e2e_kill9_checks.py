"""The checks of SPEC §9 after a restart (or a rebuild), held against the client's `Book`."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from e2e_kill9_support import Book, Region, Sent, TerminalLink, http_get, shanghai_date

# SPEC allows limit up to 500, but a 500-row 3202 answer outgrows the 64 KiB msgpack bound of
# protocol's own frame decoder (reported as a defect); 100 rows stay well inside it.
DETAIL_PAGE_ROWS = 100
BUSY_WAIT_S = 15.0
MONTH_USED_KEYS = ("month_used_fen", "institution_month_used_fen", "month_used", "used_fen")


@dataclasses.dataclass
class CheckCounts:
    in_doubt_found_applied: int = 0   # the re-send returned what was stored before the crash
    in_doubt_applied_now: int = 0     # it had not been applied: the re-send applied it
    acked_rechecked: int = 0
    totals_checked: int = 0
    admin_checked: int = 0
    trace_checked: int = 0            # traceability codes probed after a restart
    supervision_checked: int = 0      # institution-months of the monthly report held to the book
    who_pays_checked: int = 0


class Checker:
    """Holds the gateway to the book, over one signed-in link per pharmacy (async context)."""

    def __init__(self, book: Book, region: Region, keys: dict[str, Ed25519PublicKey],
                 restarted_ms: int) -> None:
        self.book, self.region, self.keys = book, region, keys
        self.restarted_ms = restarted_ms
        self.counts = CheckCounts()
        self.links: dict[str, TerminalLink] = {}

    async def __aenter__(self) -> Checker:
        for terminal in self.region.terminals:
            if terminal.code not in self.links:
                link = TerminalLink(terminal, self.region.data, self.keys)
                # A gateway still catching up (a failover, a busy machine) may shed a check:
                # like a terminal, the check sends it again; any other answer is held to the book.
                link.busy_wait_s = BUSY_WAIT_S
                self.links[terminal.code] = link
                answer = await link.open(self.book)
                assert answer.infcode == 0, answer
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for link in self.links.values():
            await link.aclose()

    async def _per_institution(self, msgids: list[str], check: Any) -> None:
        """Run `check(link, sent)` for each msgid: in order per institution, institutions at once."""
        by_code: dict[str, list[str]] = {}
        for msgid_ in msgids:
            by_code.setdefault(self.book.sent[msgid_].code, []).append(msgid_)

        async def run(code: str, group: list[str]) -> None:
            for msgid_ in group:
                await check(self.links[code], self.book.sent[msgid_])

        async with trio.open_nursery() as nursery:
            for code, group in by_code.items():
                nursery.start_soon(run, code, group)

    async def resolve_in_doubt(self) -> None:
        """Re-send every in-doubt request: it is applied once (before, or now), never twice."""
        pending, self.book.in_doubt = self.book.in_doubt, []
        await self._per_institution(pending, self._resolve)
        assert not self.book.in_doubt, "a re-sent request was answered -1 again"

    async def _resolve(self, link: TerminalLink, sent: Sent) -> None:
        _, body, envelope = await link.send(sent)
        assert envelope.infcode == 0, (f"in-doubt {sent.infno} {sent.msgid}: "
                                       f"{envelope.err_code} {envelope.err_msg}")
        _, again, _ = await link.send(sent)
        assert again == body, f"in-doubt {sent.infno} {sent.msgid}: a second re-send differs"
        # A stored answer carries the time it was first given; a fresh one is newer than the restart.
        if envelope.respond_time < self.restarted_ms:
            self.counts.in_doubt_found_applied += 1
        else:
            self.counts.in_doubt_applied_now += 1
        assert self.book.take_answer(sent, body, envelope)

    async def recheck_acked(self, msgids: list[str]) -> None:
        """Every acknowledged answer is still true: the same msgid returns the same bytes."""
        await self._per_institution(msgids, self._recheck)

    async def _recheck(self, link: TerminalLink, sent: Sent) -> None:
        _, body, envelope = await link.send(sent)
        expected = self.book.expected_replay_code(sent)
        if expected:
            assert envelope.err_code == expected, (sent.msgid, envelope)
        else:
            assert body == sent.answer, (f"acknowledged {sent.infno} {sent.msgid}: a re-send answered "
                                         f"{envelope.infcode} {envelope.err_code}, not the stored bytes")
        self.counts.acked_rechecked += 1

    async def check_trace_codes(self, per_institution_max: int = 12) -> None:
        """Held codes survived the crashes exactly: a standing settlement's code is refused
        TRACE_CODE_REUSED, a cancelled or reversed one's is free again (2101s: nothing changes)."""
        for code, link in self.links.items():
            settlements = [s for s in self.book.settlements.values() if s.code == code]
            for settlement in settlements[-per_institution_max:]:
                msgid_, input_ = self.book.trace_probe(link.terminal, self.book.trace_codes(settlement)[0])
                _, _, envelope = await link._post("2101", msgid_, input_)
                expected = "TRACE_CODE_REUSED" if settlement.state == "settled" else ""
                assert envelope.err_code == expected, (settlement, envelope)
                self.counts.trace_checked += 1

    async def check_totals(self, with_detail: bool = False) -> None:
        """3201 of each pharmacy and date agrees with the book (and, optionally, every 3202 row)."""
        for code, link in self.links.items():
            for stmt_date in sorted(self.book.dates(code)):
                ours = self.book.totals(code, stmt_date)
                output = (await link.query(self.book, "3201", {"stmt_date": stmt_date, **ours})).output
                assert output is not None and output["gateway"] == ours, (code, stmt_date, output, ours)
                assert output["stmt_rslt"] == "0", (code, stmt_date, output)
                self.counts.totals_checked += 1
                if with_detail:
                    await self._check_detail(link, code, stmt_date)

    async def _check_detail(self, link: TerminalLink, code: str, stmt_date: str) -> None:
        rows: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            input_: dict[str, Any] = {"stmt_date": stmt_date, "limit": DETAIL_PAGE_ROWS}
            if after is not None:
                input_["after"] = after
            output = (await link.query(self.book, "3202", input_)).output
            assert output is not None
            rows += output["rows"]
            after = output["next"]
            if after is None:
                break
        gateway = {row["msgid"]: row["status"] for row in rows}
        assert len(gateway) == len(rows), f"{code} {stmt_date}: one msgid settled twice"
        ours = {s.msgid: s.state for s in self.book.settlements.values()
                if s.code == code and shanghai_date(s.setl_time_ms) == stmt_date}
        assert gateway == ours, f"{code} {stmt_date}: 3202 rows differ from the book"

    async def check_who_pays(self) -> None:
        """SPEC 13: each person's balance and year ledger (1101) equal the book's standing sums."""
        link = next(iter(self.links.values()))
        for card in self.region.cards:
            psn_no = card.fields["psn_no"]
            session = link.session
            mid = self.book.new_msgid(link.terminal.code)
            cert = session.card_input(card.key, mid, "1101", 0, card.fields)
            _, _, envelope = await link._post("1101", mid, cert)
            assert envelope.infcode == 0, (psn_no, envelope)
            output = envelope.output
            assert output["acct_balance"] == self.book.balance_fen(psn_no), (psn_no, output)
            pooling = self.region.pooling.get(card.fields["insutype"])
            if pooling is None:
                assert output["pool_year_remaining"] is None, (psn_no, output)
                continue
            dedc_fen, pool_fen = self.book.year_used_fen(psn_no)
            assert output["pool_deductible_remaining"] == max(0, pooling["deductible_fen"] - dedc_fen), psn_no
            assert output["pool_year_remaining"] == max(0, pooling["annual_cap_fen"] - pool_fen), psn_no
            self.counts.who_pays_checked += 1

    async def check_admin_month(self) -> bool:
        """Month-used of each pharmacy (GET /admin/v1/institutions/{code}) equals the standing
        fund payments; returns False, checking nothing, while the admin API lacks the route."""
        for code in self.links:
            response = await http_get(self.region.admin, f"/admin/v1/institutions/{code}",
                                      self.region.viewer_token)
            assert response is not None
            if response.status == 404:
                return False
            assert response.status == 200, (code, response.status, response.body[:300])
            used_fen = month_used_fen(json.loads(response.body))
            assert used_fen == self.book.month_fund_fen(code), (code, used_fen)
            self.counts.admin_checked += 1
        return True

    async def check_supervision(self) -> None:
        """The monthly report (SPEC 14) equals the client's standing settlements, per institution and month."""
        months: dict[str, dict[str, list[Any]]] = {}
        for settlement in self.book.settlements.values():
            months.setdefault(shanghai_date(settlement.setl_time_ms)[:6], {}).setdefault(settlement.code, [])
            if settlement.state == "settled":
                months[shanghai_date(settlement.setl_time_ms)[:6]][settlement.code].append(settlement)
        for month, by_code in months.items():
            response = await http_get(self.region.admin, f"/admin/v1/reports/monthly?month={month}&by=institution",
                                      self.region.viewer_token)
            assert response is not None and response.status == 200, response
            rows = {row["key"]: row for row in json.loads(response.body)["rows"]}
            ours = {code: {"setl_cnt": len(group), "psn_cnt": len({s.psn_no for s in group}),
                           "medfee_fen": sum(s.medfee_fen for s in group), "fund_fen": sum(s.fund_fen for s in group),
                           "acct_fen": sum(s.acct_fen for s in group), "cash_fen": sum(s.cash_fen for s in group)}
                    for code, group in by_code.items() if group}
            theirs = {code: {key: row[key] for key in ("setl_cnt", "psn_cnt", "medfee_fen", "fund_fen", "acct_fen",
                                                       "cash_fen")}
                      for code, row in rows.items()}
            assert theirs == ours, (month, theirs, ours)
            self.counts.supervision_checked += 1


def month_used_fen(document: Any) -> int:
    """Find the institution's month-used figure (fen) in the admin look-up's JSON.

    Raises:
        KeyError: no key of MONTH_USED_KEYS holds an integer anywhere in the document.
    """
    if isinstance(document, dict):
        for key in MONTH_USED_KEYS:
            if isinstance(document.get(key), int):
                return int(document[key])
        children: list[Any] = list(document.values())
    elif isinstance(document, list):
        children = document
    else:
        children = []
    for child in children:
        if isinstance(child, (dict, list)):
            try:
                return month_used_fen(child)
            except KeyError:
                continue
    raise KeyError(f"no month-used figure ({' / '.join(MONTH_USED_KEYS)}) in the admin answer")
