"""The core test region with SPEC 13's who-pays data: a pooling policy for insutype 310, a pharmacy
without outpatient pooling, accounts and family links (see core_world for the rest)."""

from __future__ import annotations

import pathlib
from typing import Any

from core_world import ADMDVS, World

P3 = "P51018200003"          # a grade-B pharmacy whose rx lines outpatient pooling does not pay
DEDUCTIBLE_FEN = 20_000
ANNUAL_CAP_FEN = 200_000
EXTRA_TERMINALS = {"T6": (P3, 16, "active")}
WHO_PAYS_TOML = f'''
[policy.pooling."310"]
deductible_fen = {DEDUCTIBLE_FEN}
annual_cap_fen = {ANNUAL_CAP_FEN}

[[institutions]]
code = "{P3}"
name = "Pharmacy Three"
kind = "pharmacy"
admdvs = "{ADMDVS}"
grade = "B"
monthly_cap_fen = 1000000
status = "active"
outpatient_pooling = false

[[family_links]]
owner = "OWN1"
member = "MEM1"
relation = "parent"
valid_from = "2024-01-01"
valid_to = "2024-12-31"

[[family_links]]
owner = "OWN2"
member = "MEM1"
relation = "spouse"
valid_from = "2023-01-01"
valid_to = "2024-03-14"

[[family_links]]
owner = "PBLK"
member = "MEM1"
relation = "child"
valid_from = "2024-01-01"
valid_to = "2024-12-31"

[[family_links]]
owner = "OWN3"
member = "MEM1"
relation = "parent"
valid_from = "2024-03-15"
valid_to = "2024-03-15"
'''
# Opening balances; MEM1 has none, OWN2's link has expired, PBLK is a blocked person.
BALANCES = {"PSN1": 50_000, "OWN1": 100_000, "OWN2": 100_000, "OWN3": 100_000, "PBLK": 100_000,
            "H1": 30_000, "H2": 5_000, "H3": 0}
ACCOUNTS_CSV = "psn_no,balance_fen\n" + "".join(f"{psn},{fen}\n" for psn, fen in BALANCES.items())


def who_pays_world(tmp_path: pathlib.Path, accounts: bool = True, **config: Any) -> World:
    """A World over the who-pays region (accounts off when `accounts` is False)."""
    return World(tmp_path, extra_toml=WHO_PAYS_TOML, extra_terminals=EXTRA_TERMINALS,
                 accounts_csv=ACCOUNTS_CSV if accounts else None, **config)


def rx(sn: str, fee: int, lv: str = "01") -> dict[str, Any]:
    """A prescription line (with rxno) of `fee` fen."""
    return {"feedetl_sn": sn, "med_list_codg": "X" + sn, "chrgitm_lv": lv, "otc": False, "rxno": "RX" + sn,
            "cnt": 1, "pric": fee, "det_item_fee_sumamt": fee, "bilg_dr_codg": "OP1"}
