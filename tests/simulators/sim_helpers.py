"""Shared helpers of the simulator tests: a small seeded region and a forged settlement."""

from __future__ import annotations

import pathlib
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gateway.region import init_region
from protocol import x25519_public_raw
from simulators.region import Region, load_region

ALLOWANCE_A_FEN = 12000
CAP_FEN = 50000
NOON_MS = 1_763_870_400_000  # 2025-11-23 12:00 Asia/Shanghai: far from a day or month edge


def small_region(tmp_path: pathlib.Path, seed: int = 1) -> Region:
    """Write the `small` profile into tmp_path and read it back the simulator's way."""
    init_region(tmp_path / "region", "small", seed)
    return load_region(tmp_path / "region")


def setlinfo(setl_id: str, psn_no: str, medfee: int, fund: int, otc: int, limit: int,
             at_ms: int = NOON_MS) -> dict[str, Any]:
    """A settlement answer as the gateway would word it (rx_pay is the fund beyond otc_pay)."""
    return {"setl_id": setl_id, "psn_no": psn_no, "setl_time": at_ms, "medfee_sumamt": medfee,
            "fund_pay_sumamt": fund, "psn_cash_pay": medfee - fund, "otc_pay": otc, "rx_pay": fund - otc,
            "crt_payb_lmt_amt": limit}


def signin_output(sign_no: str, sign_time_ms: int) -> dict[str, Any]:
    """A 9001 answer's output as a fake gateway words it (a fresh X25519 key each time)."""
    return {"sign_no": sign_no, "sign_time": sign_time_ms, "session_expires": 0,
            "x25519_pub": x25519_public_raw(X25519PrivateKey.generate())}
