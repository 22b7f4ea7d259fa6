"""A data directory written by the v1 record and snapshot formats still recovers, exactly.

The fixture (fixtures/v1_region) was written by the gateway before records became typed: a
snapshot at op 6, then records of every kind (settle, cancel, reverse of a cancellation, a
tombstone, admin changes, a maker-checker proposal and approval, a key rotation, an admin note,
refid reservations). `expected.json` holds what that gateway's state was after the last record.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.core import Core, CoreConfig, from_wire
from gateway.files import load_registry, load_secrets
from gateway.journal import Journal
from protocol import public_raw

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "v1_region"
ROTATED_KEY_SEED = 77          # the key the fixture's key_rotate record activated


def _recovered_core(tmp_path: pathlib.Path) -> tuple[Core, Journal]:
    region = tmp_path / "region"
    shutil.copytree(FIXTURE, region)
    journal = Journal(region / "data")
    recovery = journal.recover()
    core = Core(CoreConfig(admdvs="510182"), load_registry(str(region / "registry.toml")),
                load_secrets(str(region / "secrets.toml")),
                public_raw(Ed25519PrivateKey.from_private_bytes(bytes([ROTATED_KEY_SEED]) * 32).public_key()),
                random_bytes=lambda n: b"\x01" * n)
    assert recovery.snapshot is not None
    core.rebuild(recovery.snapshot, [from_wire(record) for record in recovery.records], None)
    return core, journal


def test_v1_data_directory_recovers_to_the_same_state(tmp_path: pathlib.Path) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))
    core, journal = _recovered_core(tmp_path)
    state = core.state
    assert core.last_op == expected["last_op"]
    assert json.loads(json.dumps(state.ledger.snapshot())) == expected["ledger"]
    settlements = sorted([row["setl_id"], row["status"], row["fund_pay_sumamt"]]
                         for row in state.settlements.snapshot())
    assert settlements == expected["settlements"]
    assert (len(state.tombstones), len(state.idempotency), len(state.governance.audit)) == (
        expected["tombstones"], expected["idempotency"], expected["audit"])
    assert core.keys.active_kid == expected["active_kid"]
    assert state.overlay.institutions["P51018200001"].grade == expected["grade_P1"]
    assert state.overlay.institutions["C51018200001"].monthly_cap_fen == expected["cap_C1"]
    assert sorted(state.overlay.blocked_persons) == expected["blocked"]
    entries = [state.idempotency.get(row[0]) for row in state.idempotency.snapshot()]
    stored = {entry.op: hashlib.sha256(entry.response).hexdigest() for entry in entries}
    for name, answer in expected["answers"].items():
        assert stored[answer["op"]] == answer["sha256"], name
    journal.close()
