"""Strict loading of registry.toml and secrets.toml."""

from __future__ import annotations

import pathlib

import pytest

from core_world import SECRETS_TOML, registry_toml
from gateway.core import RegistryError
from gateway.files import load_registry, load_secrets


def _load(tmp_path: pathlib.Path, text: str):
    path = tmp_path / "registry.toml"
    path.write_text(text, encoding="utf-8")
    return load_registry(str(path))


def test_loads_the_test_region(tmp_path: pathlib.Path) -> None:
    registry = _load(tmp_path, registry_toml())
    assert registry.policy.coverage("999") == 0 and registry.institutions["C51018200001"].grade is None
    (tmp_path / "s.toml").write_text(SECRETS_TOML, encoding="utf-8")
    assert len(load_secrets(str(tmp_path / "s.toml")).card_master_keys["51"]) == 32


@pytest.mark.parametrize("old, new, where", [
    ('grade = "A"', 'grade = "F"', "institutions[0].grade"),
    ('kind = "pharmacy"\nadmdvs', 'kind = "shop"\nadmdvs', "institutions[0].kind"),
    ("monthly_cap_fen = 1000000", "monthly_cap_fen = -5", "institutions[0].monthly_cap_fen"),
    ("monthly_cap_fen = 1000000", 'monthly_cap_fen = "5"', "institutions[0].monthly_cap_fen"),
    ('name = "Pharmacy One"', 'name = "Pharmacy One"\ncolour = "red"', "institutions[0].colour"),
    ('code = "P51018200002"', 'code = "P51018200001"', "institutions[1].code"),
    ('valid_to = "2024-03-31"', 'valid_to = "2024-02-30"', "filings[0].valid_to"),
    ("selfpay_prop_permille = 100", "selfpay_prop_permille = 1001", "policy.selfpay_prop_permille"),
    ('status = "revoked"', 'status = "gone"', "terminals[3].status"),
])
def test_bad_entries_name_file_entry_and_field(tmp_path: pathlib.Path, old: str, new: str, where: str) -> None:
    text = registry_toml()
    assert old in text
    with pytest.raises(RegistryError) as info:
        _load(tmp_path, text.replace(old, new, 1))
    message = str(info.value)
    assert "registry.toml" in message and where in message and "\n" not in message


def test_missing_field_and_bad_key(tmp_path: pathlib.Path) -> None:
    with pytest.raises(RegistryError, match=r"institutions\[2\].monthly_cap_fen: missing"):
        _load(tmp_path, registry_toml().replace("monthly_cap_fen = 500000\n", ""))
    with pytest.raises(RegistryError, match="card_master_keys.51"):
        (tmp_path / "s.toml").write_text(SECRETS_TOML.replace('"51" = "', '"51" = "AA'), encoding="utf-8")
        load_secrets(str(tmp_path / "s.toml"))
