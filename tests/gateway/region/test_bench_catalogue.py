"""`make bench-catalogue` runs end to end (on a small catalogue) and prints every figure."""

from __future__ import annotations

import pytest

from gateway import bench_catalogue as catalogue_bench


def test_the_bench_prints_its_figures(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(catalogue_bench, "BENCH_ROWS", 2000)
    monkeypatch.setattr(catalogue_bench, "LOOKUPS", 500)
    catalogue_bench.main()
    out = capsys.readouterr().out
    for figure in ("catalogue: 2000 rows", "load (bytes -> index): median", "peak RSS added",
                   "bytes per row", "ns per call (known code)"):
        assert figure in out, out
