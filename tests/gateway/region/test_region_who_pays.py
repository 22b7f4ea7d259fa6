"""`init` writes SPEC 13's who-pays data: a pooling policy for employees, pharmacies outside
outpatient pooling, an accounts file for the whole population with a realistic spread of balances,
family links among sample persons, and `[paths] accounts` pointing at it."""

from __future__ import annotations

import pathlib
import statistics
import tomllib
from typing import Any

import pytest

from gateway.accounts_file import load_accounts
from gateway.config import load_config
from gateway.files import load_registry
from gateway.region import init_region


@pytest.fixture(scope="module", params=["small", "pengzhou"])
def region(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, Any]:
    out_dir = tmp_path_factory.mktemp(request.param) / "region"
    return out_dir, init_region(out_dir, request.param, seed=3)


def test_accounts_cover_the_population_with_a_realistic_spread(region: tuple[pathlib.Path, Any]) -> None:
    out_dir, summary = region
    config = load_config(out_dir / "gateway.toml")
    assert config.paths.accounts == out_dir.resolve() / "accounts.csv"
    sim = tomllib.loads((out_dir / "sim.toml").read_text(encoding="utf-8"))
    size = sim["population"]["size"]
    opening = load_accounts(config.paths.accounts)
    assert len(opening) == summary.counts["accounts"] == size
    assert all(opening.get(p["psn_no"]) is not None for p in sim["persons"])
    local = f"510182{size:010d}"
    assert opening.get(local) is not None
    rows = (out_dir / "accounts.csv").read_text(encoding="utf-8").splitlines()[1:]
    balances = [int(row.split(",")[1]) for row in rows]
    zero_share = balances.count(0) / len(balances)
    assert 0.10 < zero_share < 0.20
    assert 100_000 < statistics.median(b for b in balances if b) < 220_000
    assert max(balances) > 1_000_000 and max(balances) <= 10_000_000


def test_pooling_links_and_non_pooling_pharmacies(region: tuple[pathlib.Path, Any]) -> None:
    out_dir, summary = region
    registry = load_registry(str(out_dir / "registry.toml"))
    pooling = registry.policy.pooling["310"]
    assert (pooling.deductible_fen, pooling.annual_cap_fen) == (20_000, 200_000)
    assert "390" not in registry.policy.pooling
    pharmacies = [i for i in registry.institutions.values() if i.kind == "pharmacy"]
    off = [i for i in pharmacies if not i.outpatient_pooling]
    assert 0 < len(off) < len(pharmacies) / 2
    sim = tomllib.loads((out_dir / "sim.toml").read_text(encoding="utf-8"))
    sample = {p["psn_no"] for p in sim["persons"]}
    links = registry.family_links
    assert len(links) == summary.counts["family links"] >= 4
    assert all(link.owner in sample and link.member in sample for link in links)
    assert all(link.owner not in registry.blocked_persons for link in links)
    assert str(links[0].valid_to) < "2024-01-01" and str(links[1].valid_from) > "2034-12-31"
