"""`yibao-sim` against a real `yibao-gateway serve`: a short seeded run with zero oracle violations.

The gateway runs with --test-clock, set just before a Shanghai midnight, so the seeded run crosses
it: both days are reconciled (3201 and 3202) against the oracle. A raised time-out share makes
some settlements time out: they are reversed (2601) and their resends refused. Raised v2 shares
put restricted lines, prices over the cap and resold traceability codes on the bills; the oracle
checks SPEC 13's cut of every line, in the mode a probe finds ("full" once this tree's decoder
reads `hosp_appr_flag`, `drug_trac_codg` and `trdn_flag`, "catalogue" before: the test requires
the probe to agree with the decoder, so the full checks run as soon as the decoder has them).
"""

from __future__ import annotations

import datetime
import http.client
import json
import pathlib
import signal
import socket
import subprocess
import sys
import time
import tomllib

import pytest

from protocol import SHANGHAI, parse_input
from simulators.bill_lines import LineShares
from simulators.cli import main
from simulators.region import load_region
from simulators.runner import read_trace, run
from simulators.traffic import FLAT, TrafficModel

READY_DEADLINE_S = 30.0
EXIT_DEADLINE_S = 30.0
RUN_SECONDS = 15.0
RATE_PER_S = 6.0
# Far above the model's 0.5 %, so that a 15 s run sees settlements time out and get reversed.
TIMEOUT_SHARE = 0.1
SAMPLE = pathlib.Path(__file__).resolve().parents[2] / "simulators" / "traces" / "sample.jsonl"
# Far above the model's shares, so that a 15 s run resells codes and cuts restricted lines.
V2_SHARES = LineShares(not_in_catalogue=0.05, over_cap=0.5, unapproved=0.5, override=0.1, resale=0.3)
TRACE_CODE = "12345670000000000001"


def decoder_reads_v2_line_fields() -> bool:
    """True when this tree's protocol decoder keeps a line's `hosp_appr_flag`, `drug_trac_codg`
    and `trdn_flag` (the gateway then applies them): the oracle's full v2 checks are due."""
    item = {"feedetl_sn": "1", "med_list_codg": "X1", "chrgitm_lv": "01", "otc": True, "cnt": 1, "pric": 100,
            "det_item_fee_sumamt": 100, "bilg_dr_codg": "D1", "hosp_appr_flag": "1",
            "drug_trac_codg": [TRACE_CODE], "trdn_flag": "1"}
    raw = {"mdtrt_cert_type": "03", "mdtrt_cert_no": "510182000000000001", "card_sn": "0123456789ABCDEF",
           "psn_no": "5101820000000001", "insutype": "310", "insuplc_admdvs": "510182", "card_mac": bytes(16),
           "medfee_sumamt": 100, "items": [item]}
    [line] = parse_input("2101", raw).items  # type: ignore[union-attr]
    return (line.hosp_appr_flag, tuple(line.drug_trac_codg), line.trdn_flag) == ("1", (TRACE_CODE,), "1")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ready(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/readyz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


@pytest.fixture
def served_region(tmp_path: pathlib.Path):  # type: ignore[no-untyped-def]
    """A fresh `small` region (seed 1, as the sample trace) served on free ports."""
    region = tmp_path / "region"
    done = subprocess.run([sys.executable, "-m", "gateway", "init", "--out", str(region), "--profile", "small",
                           "--seed", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    port, admin_port = free_port(), free_port()
    config = region / "gateway.toml"
    text = config.read_text().replace("127.0.0.1:8600", f"127.0.0.1:{port}")
    config.write_text(text.replace("127.0.0.1:8601", f"127.0.0.1:{admin_port}"))
    (region / "admin_port").write_text(str(admin_port))
    server = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config), "--test-clock"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + READY_DEADLINE_S
        while not ready(port):
            assert server.poll() is None, f"gateway exited: {server.communicate()[1]}"
            assert time.monotonic() < deadline, "gateway not ready in time"
            time.sleep(0.05)  # readiness polling interval, bounded by the deadline
        yield region
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=EXIT_DEADLINE_S)
        assert server.returncode == 0, stderr
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


def set_gateway_clock(region_dir: pathlib.Path, now_ms: int) -> None:
    """POST /admin/v1/test/clock with the operator's token from sim.toml."""
    sim = tomllib.loads((region_dir / "sim.toml").read_text(encoding="utf-8"))
    token = next(a["token"] for a in sim["admins"] if a["role"] == "operator")
    connection = http.client.HTTPConnection("127.0.0.1", int((region_dir / "admin_port").read_text()), timeout=5)
    try:
        connection.request("POST", "/admin/v1/test/clock", body=json.dumps({"now_ms": now_ms}),
                           headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
        assert connection.getresponse().status == 200
    finally:
        connection.close()


def before_next_midnight_ms(lead_s: float) -> int:
    """`lead_s` before the next Asia/Shanghai midnight, Unix ms (less than a day ahead of now)."""
    now = datetime.datetime.now(tz=SHANGHAI)
    midnight = (now + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((midnight.timestamp() - lead_s) * 1000)


def test_seeded_run_across_midnight_settles_with_zero_violations(served_region: pathlib.Path) -> None:
    set_gateway_clock(served_region, before_next_midnight_ms(RUN_SECONDS / 2))
    region = load_region(served_region)
    model = TrafficModel(region, 4, RATE_PER_S, FLAT, timeout_share=TIMEOUT_SHARE, line_shares=V2_SHARES)
    result = run(region, model.intents(RUN_SECONDS), progress=None, span_s=RUN_SECONDS)
    assert result.oracle.violations == [], result.table
    # The probe found what this tree's decoder reads, and every line was checked in that mode.
    v2 = result.oracle.v2
    assert v2.mode == ("full" if decoder_reads_v2_line_fields() else "catalogue"), result.table
    assert min(v2.counts[k] for k in ("not in catalogue", "over cap", "unapproved", "overrides", "split lines",
                                      "resold codes")) > 0, result.table
    if v2.full:  # a resold code held by a standing settlement is refused as a whole
        refused = result.stats.outcomes[("2101", "TRACE_CODE_REUSED")] + result.stats.outcomes[
            ("2102", "TRACE_CODE_REUSED")]
        assert refused > 0, result.table
    # Timed-out settlements were applied, reversed, listed "reversed" by 3202 and refused on resend.
    assert result.oracle.reversed and result.oracle.reversals[("2102", "original found")] > 0, result.table
    resent = result.stats.outcomes[("2102", "ORIGINAL_REVERSED")] + result.stats.outcomes[("2207", "ORIGINAL_REVERSED")]
    assert resent > 0, result.table  # any other answer to a resend is a violation
    assert result.stats.settled() > RUN_SECONDS * RATE_PER_S / 4
    days = set().union(*(result.oracle.days(code) for code in region.institutions))
    assert len(days) == 2, days  # traffic on both sides of midnight
    # 3201 per institution and day at the start (baseline) and at the end; 3202 at the end.
    assert result.stats.outcomes[("3201", "ok")] == 2 * 2 * len(region.institutions)
    assert result.stats.outcomes[("3202", "ok")] >= 2 * len(region.institutions)
    sample = {p.psn_no for p in region.persons}
    assert any(s.psn_no not in sample for s in result.oracle.settlements.values())  # derived persons settle
    # The same gateway again, now with history: the 3201 baseline keeps reconciliation exact.
    replayed = run(region, list(read_trace(SAMPLE)), speed=20.0, progress=None)
    assert replayed.oracle.violations == [], replayed.table
    assert replayed.stats.settled() > 0


def test_cli_run_prints_seed_and_summary_and_exits_0(served_region: pathlib.Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["run", "--region", str(served_region), "--seconds", "3", "--rate", "5", "--seed", "9",
                   "--profile", "flat", "--timeout-share", "0.5"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert out.startswith("yibao-sim: seed 9\n") and "oracle violations 0" in out and "latency p50" in out
    assert "v2 checks full" in out or "v2 checks catalogue" in out
    assert "reversal of 2" in out and "ORIGINAL_REVERSED" in out


def test_cli_history_run_shows_year_on_year_figures(served_region: pathlib.Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["run", "--region", str(served_region), "--seconds", "6", "--rate", "6", "--seed", "5",
                   "--profile", "flat", "--timeout-share", "0", "--history"])
    out = capsys.readouterr().out
    assert status == 0, out
    last_year, this_year = out.split("\nlast year:\n")[1].split("\nthis year:\n")
    # Both runs' monthly reports equal the oracle's sums, and last year's averages are the history's.
    assert "oracle violations 0" in last_year and "oracle violations 0" in this_year, out
    assert "institution-months equal the oracle's sums" in this_year and "year on year" in this_year
    assert " per mille" in this_year and "AVG_BILL_OVER_LAST_YEAR alerts today: " in this_year
    # Run again on the same gateway: its ledgers have closed last year's months, so it refuses.
    assert main(["run", "--region", str(served_region), "--seconds", "1", "--rate", "1", "--seed", "5",
                 "--history"]) == 2
    assert "--history needs a gateway that has not settled" in capsys.readouterr().err


def test_cli_run_against_nothing_is_one_line_exit_2(tmp_path: pathlib.Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    subprocess.run([sys.executable, "-m", "gateway", "init", "--out", str(tmp_path / "r")], check=True,
                   capture_output=True, timeout=120)
    status = main(["run", "--region", str(tmp_path / "r"), "--url", f"http://127.0.0.1:{free_port()}",
                   "--seconds", "1", "--rate", "1", "--seed", "1"])
    assert status == 2 and capsys.readouterr().err.count("\n") == 1
