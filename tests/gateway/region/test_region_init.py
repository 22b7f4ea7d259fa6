"""`yibao-gateway init` regions: they load through the gateway's strict loaders, are deterministic,
never overwrite, keep secrets private, agree with their sim.toml, and run (a Core settles a 2102)."""

from __future__ import annotations

import base64
import collections
import datetime
import hashlib
import os
import pathlib
import random
import stat
import tomllib
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gateway.config import load_config
from gateway.core import Core, CoreConfig
from gateway.files import load_registry, load_secrets
from gateway.sealer import KeyRing, Sealer
from gateway.core.registry import Registry, Secrets
from gateway.region import FILES, PROFILES, RegionError, init_region, keygen
from protocol import (
    ResponseEnvelope, TerminalSession, VoucherClaims, card_key, gateway_kid, mint_voucher, msgid, public_raw,
)

SPEC_POLICY = {"otc_allowance_fen": {"A": 12000, "B": 9000, "C": 6000, "D": 6000, "E": 6000},
               "coverage_permille": {"310": 700, "390": 500}, "selfpay_prop_permille": 100,
               "warn_person_day_permille": 800, "warn_institution_month_permille": 900}
# 2025-06-16 10:00:00 Asia/Shanghai: inside the region's valid filing window.
NOW_MS = int(datetime.datetime(2025, 6, 16, 2, 0, tzinfo=datetime.timezone.utc).timestamp() * 1000)
TODAY = datetime.date(2025, 6, 16)


class Loaded:
    """A region as the gateway and the simulators read it."""

    def __init__(self, out_dir: pathlib.Path) -> None:
        self.config = load_config(out_dir / "gateway.toml")
        self.registry: Registry = load_registry(str(self.config.paths.registry))
        self.secrets: Secrets = load_secrets(str(self.config.paths.secrets))
        with (out_dir / "sim.toml").open("rb") as handle:
            self.sim: dict[str, Any] = tomllib.load(handle)
        key = serialization.load_pem_private_key(self.config.paths.signing_key.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        self.gateway_key = key

    def filed_here(self, psn_no: str) -> bool:
        return any(f.psn_no == psn_no and f.admdvs in ("510182", "51") and f.valid_from <= TODAY <= f.valid_to
                   for f in self.registry.filings)

    def eligible(self, person: dict[str, str]) -> bool:
        """The load test's and simulators' reading: unblocked, and home province or filed here."""
        return (person["card_no"] not in self.registry.blocked_cards
                and person["psn_no"] not in self.registry.blocked_persons
                and (person["insuplc_admdvs"][:2] == "51" or self.filed_here(person["psn_no"])))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, Any]:
    out_dir = tmp_path_factory.mktemp("small") / "region"
    return out_dir, init_region(out_dir, "small", seed=1)


@pytest.fixture(scope="module")
def pengzhou(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, Any]:
    out_dir = tmp_path_factory.mktemp("pengzhou") / "region"
    return out_dir, init_region(out_dir, "pengzhou", seed=7)


def test_small_region_loads_through_the_gateway_loaders(small: tuple[pathlib.Path, Any]) -> None:
    out_dir, summary = small
    region = Loaded(out_dir)
    assert region.config.admdvs == "510182"
    assert (str(region.config.listen.data), str(region.config.listen.admin)) == ("127.0.0.1:8600", "127.0.0.1:8601")
    assert region.config.journal.fsync is True and region.config.journal.group_commit_ms == 2
    assert region.config.paths.data_dir == out_dir.resolve() / "data"
    policy = region.registry.policy
    assert dict(policy.otc_allowance_fen) == SPEC_POLICY["otc_allowance_fen"]
    assert dict(policy.coverage_permille) == SPEC_POLICY["coverage_permille"]
    assert (policy.selfpay_prop_permille, policy.warn_person_day_permille,
            policy.warn_institution_month_permille) == (100, 800, 900)
    assert (policy.large_bill_fen, policy.alert_institutions_per_day, policy.avg_bill_yoy_max_permille) == (
        100000, 3, 1050)
    institutions = region.registry.institutions.values()
    assert {i.grade for i in institutions if i.kind == "pharmacy"} == set("ABCDE")
    assert collections.Counter(i.kind for i in institutions) == {"pharmacy": 6, "clinic": 2, "hospital": 1}
    assert all(len(code) == 12 and i.admdvs == "510182" for code, i in region.registry.institutions.items())
    assert summary.counts["pharmacies"] == 6 and summary.counts["terminals"] == len(region.registry.terminals)
    assert summary.kid == gateway_kid(public_raw(region.gateway_key.public_key()))
    assert set(region.secrets.card_master_keys) == {"51", "33", "11"}
    assert len(region.registry.blocked_cards) == 1 and len(region.registry.blocked_persons) == 1


def test_small_region_has_terminals_doctors_and_one_small_cap(small: tuple[pathlib.Path, Any]) -> None:
    registry = Loaded(small[0]).registry
    per_institution = collections.Counter(t.institution for t in registry.terminals.values())
    assert set(per_institution) == set(registry.institutions)
    assert sorted(per_institution.values())[-2:] == [1, 2]
    for code, institution in registry.institutions.items():
        doctors = [op for op in registry.operators.values() if op.institution == code and "-DR" in op.code]
        assert bool(doctors) == (institution.kind != "pharmacy")
    assert any(op.status == "suspended" for op in registry.operators.values())
    caps = sorted(i.monthly_cap_fen for i in registry.institutions.values())
    # One cap a short run can exhaust (a few grade-E allowances), the others 10x larger at least.
    assert caps[0] <= 10 * 6000 and caps[1] >= 10 * caps[0]


def test_pengzhou_counts_and_grade_shares(pengzhou: tuple[pathlib.Path, Any]) -> None:
    out_dir, summary = pengzhou
    region = Loaded(out_dir)
    institutions = list(region.registry.institutions.values())
    kinds = collections.Counter(i.kind for i in institutions)
    assert kinds["pharmacy"] == 415 and kinds["clinic"] == 122
    assert summary.counts["pharmacies"] == 415 and summary.counts["clinics"] == 122
    grades = collections.Counter(i.grade for i in institutions if i.kind == "pharmacy")
    assert abs(grades["A"] / 415 - 0.18) < 0.01 and abs(grades["B"] / 415 - 0.46) < 0.01
    assert set(grades) == set("ABCDE")
    assert all(i.admdvs == "510182" for i in institutions)
    assert {t.institution for t in region.registry.terminals.values()} == set(region.registry.institutions)
    clinic_doctors = {op.institution for op in region.registry.operators.values() if "-DR" in op.code}
    assert {i.code for i in institutions if i.kind == "clinic"} <= clinic_doctors
    assert len(region.sim["terminals"]) == len(region.registry.terminals)


@pytest.mark.parametrize("profile", PROFILES)
def test_same_seed_same_files_other_seed_other_keys(tmp_path: pathlib.Path, profile: str) -> None:
    first, second, other = (init_region(tmp_path / name, profile, seed)
                            for name, seed in (("a", 5), ("b", 5), ("c", 6)))
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert first.kid == second.kid != other.kid
    assert (tmp_path / "a" / "sim.toml").read_bytes() != (tmp_path / "c" / "sim.toml").read_bytes()


def test_refuses_to_overwrite_a_region(tmp_path: pathlib.Path) -> None:
    init_region(tmp_path, "small", 1)
    before = {name: (tmp_path / name).read_bytes() for name in FILES}
    with pytest.raises(RegionError, match="gateway.toml"):
        init_region(tmp_path, "small", 2)
    assert before == {name: (tmp_path / name).read_bytes() for name in FILES}


def test_refuses_a_directory_with_any_region_file(tmp_path: pathlib.Path) -> None:
    (tmp_path / "sim.toml").write_text("keep me\n", encoding="utf-8")
    with pytest.raises(RegionError, match="sim.toml") as caught:
        init_region(tmp_path, "small", 1)
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim.toml"]
    assert (tmp_path / "sim.toml").read_text(encoding="utf-8") == "keep me\n"


def test_refuses_an_unknown_profile(tmp_path: pathlib.Path) -> None:
    with pytest.raises(RegionError, match="profile"):
        init_region(tmp_path / "r", "nation", 1)
    assert not (tmp_path / "r").exists()


def test_secret_files_are_private_even_with_an_open_umask(tmp_path: pathlib.Path) -> None:
    old_umask = os.umask(0)
    try:
        init_region(tmp_path, "small", 1)
    finally:
        os.umask(old_umask)
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in FILES}
    assert modes == {"gateway.toml": 0o644, "registry.toml": 0o644, "secrets.toml": 0o600,
                     "gateway_ed25519.pem": 0o600, "sim.toml": 0o600, "catalogue.csv": 0o644,
                     "accounts.csv": 0o644}


def test_sim_terminal_keys_match_the_registry(small: tuple[pathlib.Path, Any]) -> None:
    region = Loaded(small[0])
    assert len(region.sim["terminals"]) == len(region.registry.terminals)
    for row in region.sim["terminals"]:
        terminal = region.registry.terminals[row["dev_no"]]
        private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(row["private_key"], validate=True))
        assert public_raw(private.public_key()) == terminal.public_key_raw
        assert terminal.institution == row["institution"]
        assert region.registry.operators[row["opter"]].institution == row["institution"]
    for row in region.sim["voucher_issuers"]:
        private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(row["private_key"], validate=True))
        assert public_raw(private.public_key()) == region.registry.voucher_issuers[row["kid"]]
    assert {k: base64.b64decode(v) for k, v in region.sim["card_master_keys"].items()} == \
        dict(region.secrets.card_master_keys)


def test_admin_tokens_hash_to_the_secrets(small: tuple[pathlib.Path, Any]) -> None:
    region = Loaded(small[0])
    stored = {a.name: (a.role, a.token_sha256) for a in region.secrets.admins}
    plain = {a["name"]: (a["role"], hashlib.sha256(a["token"].encode("utf-8")).hexdigest())
             for a in region.sim["admins"]}
    assert plain == stored
    roles = collections.Counter(role for role, _ in stored.values())
    assert roles["policy"] >= 2 and roles["operator"] >= 1 and roles["viewer"] >= 1


@pytest.mark.parametrize("profile", PROFILES)
def test_sample_persons_cover_cross_province_cases(tmp_path: pathlib.Path, profile: str) -> None:
    init_region(tmp_path, profile, 3)
    region = Loaded(tmp_path)
    persons = region.sim["persons"]
    assert len({p["psn_no"] for p in persons}) == len(persons) == len({p["card_no"] for p in persons})
    assert all(len(p["psn_no"]) == 16 and len(p["card_no"]) == 18 and p["psn_no"].isdigit() for p in persons)
    cross = [p for p in persons if p["insuplc_admdvs"][:2] != "51"]
    assert {p["insuplc_admdvs"][:2] for p in cross} == {"33", "11"}
    assert any(region.filed_here(p["psn_no"]) for p in cross)
    assert any(not region.filed_here(p["psn_no"]) for p in cross)
    sample = {p["card_no"] for p in persons} | {p["psn_no"] for p in persons}
    assert set(region.registry.blocked_cards) | set(region.registry.blocked_persons) <= sample
    assert {"size", "seed", "employee_share_permille", "cross_province_share_permille"} <= set(region.sim["population"])


def test_keygen_writes_a_private_pem_and_never_overwrites(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "next.pem"
    kid = keygen(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    assert kid == gateway_kid(public_raw(key.public_key()))
    before = path.read_bytes()
    with pytest.raises(RegionError, match="already exists"):
        keygen(path)
    assert path.read_bytes() == before
    assert keygen(tmp_path / "other.pem") != kid
    with pytest.raises(RegionError, match="cannot create"):
        keygen(tmp_path / "missing" / "k.pem")


# -- the region runs: a Core built from its files settles -------------------------------------------

class Till:
    """A Core over a region, and the sim.toml side: terminals, cards, voucher issuers."""

    def __init__(self, region: Loaded) -> None:
        self.region = region
        core_config = CoreConfig(admdvs=region.config.admdvs, session_ttl_s=region.config.limits.session_ttl_s)
        keyring = KeyRing(region.gateway_key)
        self.core = Core(config=core_config, registry=region.registry, secrets=region.secrets,
                         active_public_raw=keyring.active_public_raw, random_bytes=random.Random(1).randbytes)
        self.sealer = Sealer(region.config.admdvs, keyring, core_config.refid_block)
        self.gateway_keys = {gateway_kid(public_raw(region.gateway_key.public_key())): region.gateway_key.public_key()}
        self.serial = 0

    def sign_in(self, kind: str) -> TerminalSession:
        institutions = self.region.registry.institutions
        row = next(r for r in self.region.sim["terminals"] if institutions[r["institution"]].kind == kind)
        key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(row["private_key"]))
        term = TerminalSession(dev_no=row["dev_no"], fixmedins_code=row["institution"], admdvs="510182",
                               opter=row["opter"], opter_type="1", private_key=key,
                               gateway_public_keys=self.gateway_keys)
        frame = term.signin_frame(self.next_msgid(term), NOW_MS, X25519PrivateKey.from_private_bytes(b"\x07" * 32))
        assert term.on_signin_answer(self.sealer.answer(self.core, frame, NOW_MS).response).infcode == 0
        return term

    def next_msgid(self, term: TerminalSession) -> str:
        self.serial += 1
        return msgid(term.fixmedins_code, NOW_MS, self.serial)

    def settle(self, term: TerminalSession, infno: str, person: dict[str, str] | None = None,
               cert: dict[str, Any] | None = None) -> ResponseEnvelope:
        mid = self.next_msgid(term)
        items = [{"feedetl_sn": "1", "med_list_codg": "XA01", "chrgitm_lv": "01", "otc": True, "cnt": 2,
                  "pric": 1500, "det_item_fee_sumamt": 3000, "bilg_dr_codg": term.opter}]
        if cert is None:
            assert person is not None
            master = base64.b64decode(self.region.sim["card_master_keys"][person["insuplc_admdvs"][:2]])
            cert = term.card_input(card_key(master, person["card_no"], person["card_sn"]), mid, infno, 3000, person)
        frame = term.request_frame(infno, mid, {**cert, "medfee_sumamt": 3000, "items": items}, NOW_MS)
        return term.verify_answer(self.sealer.answer(self.core, frame, NOW_MS).response)


def test_small_region_settles_a_card_2102(small: tuple[pathlib.Path, Any]) -> None:
    region = Loaded(small[0])
    till = Till(region)
    term = till.sign_in("pharmacy")
    local = next(p for p in region.sim["persons"] if p["insuplc_admdvs"] == "510182" and region.eligible(p))
    answer = till.settle(term, "2102", local)
    assert (answer.infcode, answer.err_code) == (0, ""), answer
    setlinfo = answer.output["setlinfo"]
    assert setlinfo["psn_no"] == local["psn_no"] and setlinfo["fund_pay_sumamt"] == 3000


def test_small_region_persons_meet_the_gateway_rules(small: tuple[pathlib.Path, Any]) -> None:
    region = Loaded(small[0])
    till = Till(region)
    term = till.sign_in("pharmacy")
    persons = region.sim["persons"]
    filed = next(p for p in persons if p["insuplc_admdvs"][:2] != "51" and region.eligible(p))
    unfiled = next(p for p in persons if p["insuplc_admdvs"][:2] != "51" and not region.filed_here(p["psn_no"]))
    blocked_card = next(p for p in persons if p["card_no"] in region.registry.blocked_cards)
    blocked_person = next(p for p in persons if p["psn_no"] in region.registry.blocked_persons)
    assert till.settle(term, "2102", filed).infcode == 0
    assert till.settle(term, "2102", unfiled).err_code == "CROSS_PROVINCE_NOT_FILED"
    assert till.settle(term, "2102", blocked_card).err_code == "CARD_BLOCKED"
    assert till.settle(term, "2102", blocked_person).err_code == "PERSON_INELIGIBLE"


def test_small_region_clinic_settles_an_e_voucher_2207(small: tuple[pathlib.Path, Any]) -> None:
    region = Loaded(small[0])
    till = Till(region)
    term = till.sign_in("clinic")
    issuer = region.sim["voucher_issuers"][0]
    person = next(p for p in region.sim["persons"] if region.eligible(p))
    claims = VoucherClaims("tid-1", person["psn_no"], person["insutype"], person["insuplc_admdvs"],
                           term.fixmedins_code, NOW_MS // 1000, NOW_MS // 1000 + 600)
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(issuer["private_key"]))
    token = mint_voucher(issuer["kid"], key, claims)
    answer = till.settle(term, "2207", cert={"mdtrt_cert_type": "01", "mdtrt_cert_no": token})
    assert (answer.infcode, answer.err_code) == (0, ""), answer
    # The region pools employees' clinic bills (SPEC 13): a small bill may go to the deductible.
    setlinfo = answer.output["setlinfo"]
    assert setlinfo["fund_pay_sumamt"] + setlinfo["act_pay_dedc"] > 0


def test_cli_init_prints_a_summary_and_refuses_a_second_time(tmp_path: pathlib.Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    out_dir = tmp_path / "region"
    assert main(["init", "--out", str(out_dir), "--profile", "small", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "pharmacies 6" in printed and "gw-" in printed
    assert main(["init", "--out", str(out_dir)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
