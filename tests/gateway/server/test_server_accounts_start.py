"""SPEC 13 "Data" at start, accounts: `[paths] accounts` is optional; an accounts file that cannot be
read or is invalid stops `serve` with exit 2 and one line naming the file, the line and the field."""

from __future__ import annotations

import pathlib

import pytest

from gateway.accounts_file import load_accounts
from gateway.config import load_config
from gateway.core.accounts import AccountsError
from gateway.server.app import load_files
from server_region import make_region
from test_server_catalogue_start import serve_refusal


def test_the_region_accounts_are_loaded_at_start_and_absent_means_off(tmp_path: pathlib.Path) -> None:
    region = make_region(tmp_path)
    files = load_files(load_config(region / "gateway.toml"))
    assert files.accounts is not None and len(files.accounts) == 2000
    config = region / "gateway.toml"
    config.write_text(config.read_text(encoding="utf-8").replace('accounts = "accounts.csv"\n', ""), encoding="utf-8")
    assert load_files(load_config(config)).accounts is None


@pytest.mark.parametrize("line, field", [("5101820000000001,-5\n", "balance_fen"), ("a b,5\n", "psn_no"),
                                         ("5101820000000001,1,2\n", "row")])
def test_serve_with_a_bad_accounts_row_exits_2_naming_file_line_and_field(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], line: str, field: str) -> None:
    region = make_region(tmp_path)
    accounts = region / "accounts.csv"
    lines = accounts.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[7] = line
    accounts.write_text("".join(lines), encoding="utf-8")
    err = serve_refusal(region / "gateway.toml", capsys)
    assert err.startswith(f"{accounts.resolve()}:8: {field}: "), err


def test_serve_with_a_duplicate_account_names_the_second_line(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    region = make_region(tmp_path)
    accounts = region / "accounts.csv"
    text = accounts.read_text(encoding="utf-8")
    accounts.write_text(text + text.splitlines(keepends=True)[3], encoding="utf-8")
    err = serve_refusal(region / "gateway.toml", capsys)
    psn_no = text.splitlines()[3].split(",")[0]
    assert err == f"{accounts.resolve()}:{text.count(chr(10)) + 1}: psn_no: {psn_no} appears twice"


def test_serve_with_a_missing_accounts_file_exits_2_naming_the_file(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    region = make_region(tmp_path)
    (region / "accounts.csv").unlink()
    err = serve_refusal(region / "gateway.toml", capsys)
    assert err == f"{(region / 'accounts.csv').resolve()}: cannot read: No such file or directory"


def test_the_file_reader_bounds_the_size(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "accounts.csv"
    path.write_bytes(b"psn_no,balance_fen\n1,2\n")
    assert load_accounts(path).get("1") == 2
    monkeypatch.setattr("gateway.accounts_file.ACCOUNTS_FILE_BYTES_MAX", 10)
    with pytest.raises(AccountsError) as caught:
        load_accounts(path)
    assert str(caught.value) == f"{path}: larger than 10 bytes (ACCOUNTS_FILE_BYTES_MAX)"
