"""SPEC 13 "Data" at start: `[paths] catalogue` and `accounts` are optional; a catalogue that cannot be
read or is invalid stops `serve` with exit 2 and one line naming the file, the line and the field."""

from __future__ import annotations

import pathlib

import pytest

from gateway.catalogue_file import load_catalogue
from gateway.cli import main
from gateway.config import ConfigError, load_config
from gateway.core.catalogue import CatalogueError
from gateway.server.app import load_files
from server_region import make_region


def set_paths(region: pathlib.Path, lines: str) -> pathlib.Path:
    """Replace the region's catalogue and accounts lines of [paths] with `lines`; returns gateway.toml."""
    config = region / "gateway.toml"
    text = config.read_text(encoding="utf-8")
    both = 'catalogue = "catalogue.csv"\naccounts = "accounts.csv"\n'
    assert both in text
    config.write_text(text.replace(both, lines), encoding="utf-8")
    return config


def serve_refusal(config: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> str:
    code = main(["serve", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("yibao-gateway: "), (code, err)
    return err.removeprefix("yibao-gateway: ").rstrip("\n")


def test_paths_resolve_relative_to_the_config_and_absent_means_off(tmp_path: pathlib.Path) -> None:
    region = make_region(tmp_path / "on")
    config = load_config(set_paths(region, 'catalogue = "data/../cat.csv"\naccounts = "accounts.csv"\n'))
    assert config.paths.catalogue == region.resolve() / "data/../cat.csv"
    assert config.paths.accounts == region.resolve() / "accounts.csv"
    config = load_config(set_paths(make_region(tmp_path / "off"), ""))
    assert (config.paths.catalogue, config.paths.accounts) == (None, None)
    assert load_files(config).catalogue is None


@pytest.mark.parametrize("line", ['catalogue = ""\n', "catalogue = 5\n", "accounts = true\n"])
def test_a_path_that_is_not_a_name_is_refused(tmp_path: pathlib.Path, line: str) -> None:
    config = set_paths(make_region(tmp_path), line)
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    key = line.split(" ")[0]
    assert str(caught.value) == f"{config}: key 'paths.{key}' must be a non-empty string"


def test_the_region_catalogue_is_loaded_at_start(tmp_path: pathlib.Path) -> None:
    files = load_files(load_config(make_region(tmp_path) / "gateway.toml"))
    assert files.catalogue is not None and files.catalogue.rows_count > 50


def test_serve_with_a_bad_catalogue_row_exits_2_naming_file_line_and_field(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    region = make_region(tmp_path)
    catalogue = region / "catalogue.csv"
    lines = catalogue.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[5] = lines[5].replace(",01,", ",04,", 1)
    catalogue.write_text("".join(lines), encoding="utf-8")
    assert serve_refusal(region / "gateway.toml", capsys) == (
        f"{catalogue.resolve()}:6: chrgitm_lv: must be \"01\", \"02\" or \"03\", got '04'")


def test_serve_with_an_overlapping_row_exits_2_naming_its_line_and_valid_from(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    region = make_region(tmp_path)
    catalogue = region / "catalogue.csv"
    text = catalogue.read_text(encoding="utf-8")
    catalogue.write_text(text + "XA01,阿莫西林胶囊,01,1,,,0,2025-01-01,\n", encoding="utf-8")
    err = serve_refusal(region / "gateway.toml", capsys)
    assert err.startswith(f"{catalogue.resolve()}:{text.count(chr(10)) + 1}: valid_from: XA01 2025-01-01..open")


def test_serve_with_a_missing_catalogue_exits_2_naming_the_file(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    region = make_region(tmp_path)
    (region / "catalogue.csv").unlink()
    err = serve_refusal(region / "gateway.toml", capsys)
    assert err == f"{(region / 'catalogue.csv').resolve()}: cannot read: No such file or directory"


def test_the_file_reader_bounds_the_size_and_names_non_utf8_lines(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cat.csv"
    path.write_bytes(b"med_list_codg,name,chrgitm_lv,otc,selfpay_prop_permille,pric_uplmt_fen,lmt_used,"
                     b"valid_from,valid_to\nXA01,\xb0\xa2,01,1,,,0,,\n")
    with pytest.raises(CatalogueError, match=f"^{path}:2: row: not UTF-8"):
        load_catalogue(path)
    monkeypatch.setattr("gateway.catalogue_file.CATALOGUE_FILE_BYTES_MAX", 10)
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(path)
    assert str(caught.value) == f"{path}: larger than 10 bytes (CATALOGUE_FILE_BYTES_MAX)"
