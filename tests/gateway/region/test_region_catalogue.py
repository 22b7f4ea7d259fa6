"""The catalogues `init` writes: they load, cover every case (small) or a county's size (pengzhou),
are deterministic, and hold every code that today's traffic puts on bill lines."""

from __future__ import annotations

import collections
import csv
import datetime
import pathlib
import re

import pytest

from gateway.catalogue_file import load_catalogue
from gateway.config import load_config
from gateway.core.catalogue import Catalogue, Row
from gateway.catalogue_sample import LEGACY_ROWS, PENGZHOU_ROWS
from gateway.core.clock import date_day
from gateway.region import init_region

# The day the region tests settle on (inside every sample row's edition).
TODAY = date_day(datetime.date(2025, 6, 16))
# The code formats of the national lists (see catalogue_sample's docstring).
FORMATS = {"western": r"X[A-Z][0-9]{2}[A-Z]{2}[A-Z][0-9]{3}[A-Z][0-9]{3}[0-9]{9}",
           "chinese": r"Z[A-Z][0-9]{2}[A-Z]{2}[A-Z][0-9]{4}[0-9]{2}[0-9]{7}",
           "service": r"00[0-9]{13}", "consumable": r"C[0-9]{26}"}


def _region(tmp_path_factory: pytest.TempPathFactory, profile: str, seed: int) -> pathlib.Path:
    out_dir = tmp_path_factory.mktemp(profile) / "region"
    init_region(out_dir, profile, seed)
    return out_dir


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return _region(tmp_path_factory, "small", 1)


@pytest.fixture(scope="module")
def pengzhou(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return _region(tmp_path_factory, "pengzhou", 7)


def loaded(region: pathlib.Path) -> Catalogue:
    path = load_config(region / "gateway.toml").paths.catalogue
    assert path == region.resolve() / "catalogue.csv"
    return load_catalogue(path)


def every_row(catalogue: Catalogue, codes: set[str]) -> list[Row]:
    return [row for code in sorted(codes) for row in catalogue.rows_of(code)]


def codes_of(region: pathlib.Path) -> set[str]:
    with (region / "catalogue.csv").open(encoding="utf-8", newline="") as handle:
        return {record["med_list_codg"] for record in csv.DictReader(handle)}


@pytest.mark.parametrize("profile", ["small", "pengzhou"])
def test_traffic_codes_are_in_force_with_their_senders_class_and_otc(
        request: pytest.FixtureRequest, profile: str) -> None:
    catalogue = loaded(request.getfixturevalue(profile))
    for code, _, level, otc, *_ in LEGACY_ROWS:
        row = catalogue.lookup(code, TODAY)
        assert row is not None and (row.chrgitm_lv, row.otc) == (level, otc == "1"), code
    # The senders with fixed lines: the load generator, the end-to-end serve test, the ops client.
    fixed = {"LOAD010001": ("01", True), "LOAD020002": ("02", True), "LOAD030003": ("03", False),
             "XA01": ("01", True), "XB02": ("02", True), "XA01AAA001": ("01", True)}
    assert {code: (catalogue.lookup(code, TODAY).chrgitm_lv, catalogue.lookup(code, TODAY).otc)
            for code in fixed} == fixed
    simulator = [f"XA{n:02d}" for n in range(1, 30)] + [f"ZB{n:02d}" for n in range(1, 15)]
    assert all(catalogue.lookup(code, TODAY) is not None for code in simulator)
    crash_test = [f"CR{level}{n:04d}" for level in ("01", "02", "03") for n in (1, 2, 3)]
    assert all(catalogue.lookup(code, TODAY).chrgitm_lv == code[2:4] for code in crash_test)


def test_small_covers_every_case(small: pathlib.Path) -> None:
    catalogue = loaded(small)
    rows = every_row(catalogue, codes_of(small))
    assert 50 <= catalogue.rows_count == len(rows) <= 100
    assert {r.chrgitm_lv for r in rows} == {"01", "02", "03"} and {r.otc for r in rows} == {True, False}
    assert any(r.pric_uplmt_fen is not None for r in rows) and any(r.lmt_used for r in rows)
    assert any(r.selfpay_prop_permille is not None and r.chrgitm_lv == "02" for r in rows)
    assert any(r.valid_to is not None and r.valid_to < TODAY for r in rows)            # expired
    assert any(r.valid_from is not None and r.valid_from > TODAY for r in rows)        # future
    assert any(len(catalogue.rows_of(code)) == 2 for code in codes_of(small))          # successive
    families = {name for code in codes_of(small) for name, form in FORMATS.items() if re.fullmatch(form, code)}
    assert families == set(FORMATS)


def test_pengzhou_is_a_county_catalogue(pengzhou: pathlib.Path) -> None:
    catalogue = loaded(pengzhou)
    codes = codes_of(pengzhou)
    rows = every_row(catalogue, codes)
    assert catalogue.rows_count == PENGZHOU_ROWS >= 20_000
    legacy = {row[0] for row in LEGACY_ROWS}
    families = collections.Counter(next((name for name, form in FORMATS.items() if re.fullmatch(form, code)),
                                        "other") for code in codes - legacy)
    assert set(families) == set(FORMATS) and families["western"] > families["chinese"] > families["service"]
    levels = collections.Counter(r.chrgitm_lv for r in rows)
    assert all(levels[level] > PENGZHOU_ROWS // 20 for level in ("01", "02", "03"))
    assert PENGZHOU_ROWS // 5 < sum(r.otc for r in rows) < PENGZHOU_ROWS // 2
    assert sum(r.pric_uplmt_fen is not None for r in rows) > PENGZHOU_ROWS // 20
    assert sum(r.lmt_used for r in rows) > PENGZHOU_ROWS // 50
    assert sum(len(catalogue.rows_of(code)) == 2 for code in codes) > 50
    names = [r.name for r in rows if r.med_list_codg not in legacy]
    assert all(re.search(r"[\u4e00-\u9fff]", name) for name in names)


def test_the_same_seed_writes_the_same_catalogue(tmp_path: pathlib.Path, pengzhou: pathlib.Path) -> None:
    init_region(tmp_path / "again", "pengzhou", 7)
    init_region(tmp_path / "other", "pengzhou", 8)
    first = (pengzhou / "catalogue.csv").read_bytes()
    assert (tmp_path / "again" / "catalogue.csv").read_bytes() == first
    assert (tmp_path / "other" / "catalogue.csv").read_bytes() != first
