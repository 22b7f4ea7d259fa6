"""`make bench-accounts` runs end to end (on a small accounts file) and prints every figure."""

from __future__ import annotations

import pytest

from gateway import bench_accounts


def test_the_bench_prints_its_figures(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in (("BENCH_ROWS", 3000), ("LOOKUPS", 300), ("RECORDS", 2000), ("SETTLEMENTS", 50),
                        ("LOAD_REPEATS", 1), ("COMPARE_ROUNDS", 1)):
        monkeypatch.setattr(bench_accounts, name, value)
    bench_accounts.main()
    out = capsys.readouterr().out
    for figure in ("accounts: 3000 rows", "(a) load:", "peak RSS after the load", "opening-balance look-up",
                   "person-year record retained", "changed balance retained", "business apply", "v2"):
        assert figure in out, out
    assert 60 < bench_accounts.bytes_per_year_record() < 400
