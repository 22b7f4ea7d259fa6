"""A rotated key sealed in the region's journal (gateway/cluster/keyseal.py): it opens only with the
region's secret and for its own kid, replays and snapshots deterministically, and a standby that
applied the rotation signs with it (RegionNode.adopt_key)."""

from __future__ import annotations

import pathlib
import sys
import types

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "core"))

from core_world import ADMDVS, T0_MS, World  # noqa: E402

from gateway.cluster.keyseal import KeySeal, KeySealError  # noqa: E402
from gateway.cluster.node import RegionNode  # noqa: E402
from gateway.core import Secrets, from_wire  # noqa: E402
from gateway.core.records import KeyRotateRecord  # noqa: E402
from gateway.sealer import KeyRing, Sealer  # noqa: E402
from protocol import ErrCode, decode_frame, gateway_kid, public_raw  # noqa: E402

OTHER_SECRETS = Secrets(card_master_keys={"51": bytes(range(100, 132))}, admins=())


def kid_of(key: Ed25519PrivateKey) -> str:
    return gateway_kid(public_raw(key.public_key()))


def test_a_sealed_key_opens_only_with_its_regions_secret_and_for_its_kid(tmp_path: pathlib.Path) -> None:
    world = World(tmp_path)
    seal, key = KeySeal(world.secrets, ADMDVS), Ed25519PrivateKey.generate()
    sealed = seal.seal(key)
    assert key.private_bytes_raw() not in sealed
    assert seal.open(sealed, kid_of(key)).private_bytes_raw() == key.private_bytes_raw()
    assert seal.seal(key) != sealed                                      # a fresh nonce each time
    refusals = [
        (KeySeal(OTHER_SECRETS, ADMDVS), sealed, kid_of(key)),            # another card master key
        (KeySeal(world.secrets, "510183"), sealed, kid_of(key)),          # another region
        (seal, sealed, kid_of(Ed25519PrivateKey.generate())),             # moved to another kid
        (seal, sealed[:-1] + bytes([sealed[-1] ^ 1]), kid_of(key)),       # altered
        (seal, sealed[:-1], kid_of(key)),                                  # torn
    ]
    for opener, blob, kid in refusals:
        with pytest.raises(KeySealError):
            opener.open(blob, kid)


def test_a_region_without_its_provinces_card_master_key_cannot_seal() -> None:
    with pytest.raises(KeySealError, match="province 44"):
        KeySeal(OTHER_SECRETS, "440100")


def test_key_rotate_records_of_version_1_still_read_and_unknown_versions_do_not() -> None:
    v1 = {"op": 9, "t": "key_rotate", "kid": "gw-b", "public_key": b"b" * 32, "retired_kid": "gw-a",
          "retired_public_key": b"a" * 32, "now_ms": T0_MS}
    record = from_wire(v1)
    assert isinstance(record, KeyRotateRecord) and record.sealed_key is None
    assert from_wire(record.to_wire()) == record and record.to_wire()["v"] == 2
    with pytest.raises(ValueError, match="version 3"):
        from_wire({**v1, "v": 3})


def rotate_sealed(world: World, seal: KeySeal) -> tuple[Ed25519PrivateKey, KeyRotateRecord]:
    """The leader's side: a rotation journaling its key sealed (as AdminApi does in cluster mode)."""
    key = Ed25519PrivateKey.generate()
    record = world.sealer.commit_record(world.core, world.core.rotate_key(
        public_raw(key.public_key()), T0_MS, actor="otto", role="operator", sealed_key=seal.seal(key)))
    world.records.append(record)
    assert isinstance(record, KeyRotateRecord)
    return key, record


def standby_of(world: World, seal: KeySeal) -> RegionNode:
    """A standby that started from the key file (the region's first key) and applied the journal."""
    core = world.make_core()
    for record in world.records:
        core.commit(from_wire(record.to_wire()))
    runtime = types.SimpleNamespace(core=core, sealer=Sealer(ADMDVS, KeyRing(world.gateway_key),
                                                             core.config.refid_block))
    return RegionNode(runtime, None, None, seal, node_id="gw-b", lease_ms=3000,  # type: ignore[arg-type]
                      rebuild=lambda recovery: core)


def test_replay_and_snapshots_keep_the_sealed_key(tmp_path: pathlib.Path) -> None:
    world = World(tmp_path)
    _, record = rotate_sealed(world, KeySeal(world.secrets, ADMDVS))
    assert world.core.state.governance.rotated_key_sealed == record.sealed_key
    assert world.core.snapshot()["governance"]["rotated_key_sealed"] == record.sealed_key
    world.assert_replay_and_restore()


def test_an_embedded_snapshot_keeps_its_former_shape(tmp_path: pathlib.Path) -> None:
    world = World(tmp_path)
    world.records.append(world.sealer.commit_record(world.core, world.core.rotate_key(
        public_raw(Ed25519PrivateKey.generate().public_key()), T0_MS)))
    assert "rotated_key_sealed" not in world.core.snapshot()["governance"]
    world.assert_replay_and_restore()


def test_a_standby_signs_with_the_key_the_journal_carries(tmp_path: pathlib.Path) -> None:
    world = World(tmp_path)
    seal = KeySeal(world.secrets, ADMDVS)
    first_kid = kid_of(world.gateway_key)
    key, _ = rotate_sealed(world, seal)
    node = standby_of(world, seal)
    runtime = node.runtime
    assert runtime.sealer.keyring.active_kid == first_kid           # what the key file gave it
    node.adopt_key()
    assert runtime.sealer.keyring.active_kid == kid_of(key)
    assert [(k["kid"], k["status"]) for k in runtime.core.public_keys()] == [
        (kid_of(key), "active"), (first_kid, "retired")]
    refusal = decode_frame(runtime.sealer.error_response(ErrCode.DRAINING, T0_MS))
    assert refusal.key_id == kid_of(key)
    node.adopt_key()                                                  # nothing new: nothing changes
    assert runtime.sealer.keyring.active_kid == kid_of(key)


def test_a_node_with_another_secret_does_not_adopt_a_key_it_cannot_open(tmp_path: pathlib.Path) -> None:
    world = World(tmp_path)
    rotate_sealed(world, KeySeal(world.secrets, ADMDVS))
    node = standby_of(world, KeySeal(OTHER_SECRETS, ADMDVS))
    with pytest.raises(KeySealError):
        node.adopt_key()                   # at start and at a takeover: it does not start, or lead
    node._follow_key()                     # while following: logged, and it follows on
    assert node.runtime.sealer.keyring.active_kid == kid_of(world.gateway_key)
