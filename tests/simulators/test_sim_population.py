"""Persons derived from [population]: deterministic, the configured mix, and cards the gateway accepts."""

from __future__ import annotations

import base64
import pathlib
import tomllib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sim_helpers import small_region

from protocol import TerminalSession, card_key, msgid, verify_card_mac
from simulators.region import Region, load_region

SIZE = 2000
SAMPLE = 42


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    return small_region(tmp_path_factory.mktemp("population"))


def test_derivation_is_deterministic_and_numbered_after_the_sample(region: Region, tmp_path: pathlib.Path) -> None:
    again = load_region(small_region(tmp_path).path)
    derived = [region.population.serial_person(n) for n in range(SAMPLE + 1, SIZE + 1)]
    assert derived == [again.population.serial_person(n) for n in range(SAMPLE + 1, SIZE + 1)]
    assert region.population.serial_person(1) == region.persons[0]
    assert len({p.psn_no for p in derived} | {p.psn_no for p in region.persons}) == SIZE
    for person in derived:
        assert len(person.psn_no) == 16 and person.psn_no[:6] == person.insuplc_admdvs
        assert len(person.card_no) == 18 and person.card_no[:6] == person.insuplc_admdvs
        assert int(person.psn_no[6:]) > SAMPLE and len(person.card_sn) == 16
    with pytest.raises(KeyError):
        region.population.serial_person(SIZE + 1)
    with pytest.raises(KeyError):
        region.population.person("5101820000009999")


def test_mix_follows_the_population_section(region: Region) -> None:
    derived = [region.population.serial_person(n) for n in range(SAMPLE + 1, SIZE + 1)]
    employees = sum(p.insutype == "310" for p in derived) / len(derived)
    cross = [p for p in derived if p.insuplc_admdvs[:2] != "51"]
    assert abs(employees - 0.400) < 0.05, employees  # employee_share_permille = 400
    assert abs(len(cross) / len(derived) - 0.050) < 0.02  # cross_province_share_permille = 50
    assert {p.insuplc_admdvs for p in cross} == {"330200", "110100"}
    assert {p.insuplc_admdvs for p in derived if p not in cross} == {"510182"}


def test_derived_cards_verify_under_the_gateways_master_keys(region: Region) -> None:
    """The gateway knows no list of persons: a card is good when its cryptogram verifies under the
    master key of its province (secrets.toml), is not blocked, and (cross-province) is filed."""
    secrets = tomllib.loads((region.path / "secrets.toml").read_text(encoding="utf-8"))
    registry = tomllib.loads((region.path / "registry.toml").read_text(encoding="utf-8"))
    masters = {k: base64.b64decode(v) for k, v in secrets["card_master_keys"].items()}
    blocked = {c["card_no"] for c in registry.get("blocked_cards", [])} | {
        p["psn_no"] for p in registry.get("blocked_persons", [])}
    filed = {f["psn_no"] for f in registry.get("filings", [])}
    session = TerminalSession("P51018200001-T01", "P51018200001", "510182", "op", "1",
                              Ed25519PrivateKey.generate())
    for serial in range(SAMPLE + 1, SIZE + 1, 37):
        person = region.population.serial_person(serial)
        mid = msgid("P51018200001", 1_763_870_400_000, serial)
        cert = session.card_input(card_key(region.card_master_keys[person.insuplc_admdvs[:2]], person.card_no,
                                           person.card_sn), mid, "2101", 1234, person.card())
        gateway_key = card_key(masters[person.insuplc_admdvs[:2]], person.card_no, person.card_sn)
        assert verify_card_mac(gateway_key, mid, "2101", "P51018200001", 1234, person.psn_no, person.insutype,
                               person.insuplc_admdvs, cert["card_mac"])
        assert person.card_no not in blocked and person.psn_no not in blocked and person.psn_no not in filed
