"""Gateway key rotation: the new key signs, the old is listed retired, restarts and crash windows."""

from __future__ import annotations

import pytest

from admin_world import P1, AdminWorld, aw, card, line  # noqa: F401
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gateway.admin import keyfiles
from protocol import decode_frame, public_raw


def _statuses(aw: AdminWorld) -> dict[str, str]:
    return {k["kid"]: k["status"] for k in aw.core.public_keys()}


async def test_rotation_signs_with_the_new_key_and_keeps_replays(aw: AdminWorld) -> None:
    term = await aw.sign_in()
    mid = aw.world.next_msgid(P1, aw.now_ms)
    first, _ = aw.world.settle(term, [line("1", 100)], card("PSN1"), now_ms=aw.now_ms, msgid_=mid)
    await aw.flush()
    old_kid = decode_frame(first.response).key_id
    status, answer = await aw.call("POST", "/admin/v1/keys/rotate", "operator", {"reason": "yearly"})
    assert status == 200, answer
    new_kid = answer["kid"]
    assert answer["retired_kid"] == old_kid and new_kid != old_kid
    assert _statuses(aw) == {new_kid: "active", old_kid: "retired"}
    assert aw.core.public_keys()[0]["kid"] == new_kid
    assert keyfiles.key_kid(keyfiles.read_key(aw.key_path)) == new_kid
    assert keyfiles.key_kid(keyfiles.read_key(keyfiles.retired_path(aw.key_path, old_kid))) == old_kid
    assert not keyfiles.staged_path(aw.key_path).exists()
    fresh, _ = aw.world.settle(term, [line("2", 100)], card("PSN1"), now_ms=aw.now_ms)
    assert decode_frame(fresh.response).key_id == new_kid
    replay, _ = aw.world.settle(term, [line("1", 100)], card("PSN1"), now_ms=aw.now_ms, msgid_=mid)
    assert replay.response == first.response
    await aw.flush()
    await aw.restart()
    assert aw.rotation_outcome == "none"
    assert _statuses(aw) == {new_kid: "active", old_kid: "retired"}
    term = await aw.sign_in()
    again, _ = aw.world.settle(term, [line("1", 100)], card("PSN1"), now_ms=aw.now_ms, msgid_=mid)
    assert again.response == first.response
    _, audit = await aw.call("GET", "/admin/v1/audit", "viewer")
    entry = audit["entries"][-1]
    assert (entry["action"], entry["actor"], entry["before"], entry["after"], entry["reason"]) == (
        "key.rotate", "otto", {"active_kid": old_kid}, {"active_kid": new_kid}, "yearly")


async def test_two_rotations_list_both_retired_keys(aw: AdminWorld) -> None:
    kids = [aw.core.keys.active_kid]
    for _ in range(2):
        kids.append((await aw.call("POST", "/admin/v1/keys/rotate", "policy"))[1]["kid"])
    await aw.restart()
    assert _statuses(aw) == {kids[2]: "active", kids[0]: "retired", kids[1]: "retired"}
    assert (await aw.call("GET", "/admin/v1/keys", "viewer"))[1]["keys"][0]["kid"] == kids[2]


async def test_crash_after_staging_before_journal_discards_the_staged_key(aw: AdminWorld) -> None:
    old_kid = aw.core.keys.active_kid
    keyfiles.stage_key(aw.key_path, Ed25519PrivateKey.generate())
    await aw.restart()
    assert aw.rotation_outcome == "discarded"
    assert not keyfiles.staged_path(aw.key_path).exists()
    assert _statuses(aw) == {old_kid: "active"}


async def test_crash_after_journal_before_install_completes_at_start(
        aw: AdminWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    old_kid = aw.core.keys.active_kid

    def crash(path: object) -> str:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(keyfiles, "install_staged", crash)
    status, answer = await aw.call("POST", "/admin/v1/keys/rotate", "operator")
    assert status == 500 and "completes at the next start" in answer["error"]
    new_kid = aw.core.keys.active_kid
    assert new_kid != old_kid and keyfiles.staged_path(aw.key_path).exists()
    assert keyfiles.key_kid(keyfiles.read_key(aw.key_path)) == old_kid
    monkeypatch.undo()
    await aw.restart()
    assert aw.rotation_outcome == "installed"
    assert _statuses(aw) == {new_kid: "active", old_kid: "retired"}
    assert keyfiles.retired_path(aw.key_path, old_kid).exists()


async def test_crash_between_retired_copy_and_rename_completes_at_start(aw: AdminWorld) -> None:
    """install_staged is idempotent: the retired copy may already exist."""
    old_kid = aw.core.keys.active_kid
    new_key = Ed25519PrivateKey.generate()
    keyfiles.stage_key(aw.key_path, new_key)
    record = aw.world.commit(aw.core.rotate_key(public_raw(new_key.public_key()), aw.now_ms, actor="otto",
                                                role="operator"))
    aw.world.records.clear()
    aw.runtime.journal.append(record.to_wire())  # type: ignore[union-attr]
    await aw.runtime.journal.drain()  # type: ignore[union-attr]
    keyfiles.retired_path(aw.key_path, old_kid).write_bytes(aw.key_path.read_bytes())
    await aw.restart()
    assert aw.rotation_outcome == "installed"
    assert _statuses(aw) == {keyfiles.key_kid(new_key): "active", old_kid: "retired"}


async def test_rotation_refused_by_the_journal_discards_the_staged_key(aw: AdminWorld) -> None:
    from gateway.journal.errors import JournalFull

    class Full:
        def __getattr__(self, name: str) -> object:
            return getattr(inner, name)

        def check_room(self) -> None:
            raise JournalFull("full")

    assert aw.runtime is not None
    inner = aw.runtime.journal
    aw.runtime.journal = Full()  # type: ignore[assignment]
    old_kid = aw.core.keys.active_kid
    assert (await aw.call("POST", "/admin/v1/keys/rotate", "operator"))[0] == 503
    assert not keyfiles.staged_path(aw.key_path).exists()
    assert _statuses(aw) == {old_kid: "active"}


async def test_rotation_with_a_key_seal_journals_the_key_sealed_and_writes_no_file(aw: AdminWorld) -> None:
    """Cluster mode: the journal is the rotated key's only home (every node of the region reads it)."""
    from gateway.cluster.keyseal import KeySeal

    seal = KeySeal(aw.world.secrets, aw.core.config.admdvs)
    assert aw.api is not None
    aw.api.seal_key = seal.seal
    old_kid, key_file = aw.core.keys.active_kid, aw.key_path.read_bytes()
    status, answer = await aw.call("POST", "/admin/v1/keys/rotate", "operator", {"reason": "drill"})
    assert status == 200, answer
    new_kid = answer["kid"]
    assert _statuses(aw) == {new_kid: "active", old_kid: "retired"}
    term = await aw.sign_in()
    fresh, _ = aw.world.settle(term, [line("1", 100)], card("PSN1"), now_ms=aw.now_ms)
    assert decode_frame(fresh.response).key_id == new_kid
    await aw.flush()
    assert aw.key_path.read_bytes() == key_file
    assert sorted(p.name for p in aw.tmp_path.iterdir() if p.name.startswith(aw.key_path.name)) == [aw.key_path.name]
    await aw.restart()
    rotation = next(r for r in aw.recovery.records if r["t"] == "key_rotate")
    assert rotation["v"] == 2 and rotation["kid"] == new_kid
    assert keyfiles.key_kid(seal.open(rotation["sealed_key"], new_kid)) == new_kid
    assert aw.core.state.governance.rotated_key_sealed == rotation["sealed_key"]


async def test_finish_with_nothing_staged_removes_a_torn_temporary(aw: AdminWorld) -> None:
    torn = keyfiles.staged_path(aw.key_path).with_name(keyfiles.staged_path(aw.key_path).name + ".tmp")
    torn.write_bytes(b"-----BEGIN PRIV")
    assert keyfiles.finish_pending_rotation(aw.key_path, None, []) == "none"
    assert not torn.exists()


def test_newest_rotation_kid_prefers_records_over_snapshot() -> None:
    snap = {"governance": {"rotated_kid": "gw-a"}}
    assert keyfiles.newest_rotation_kid(snap, []) == "gw-a"
    assert keyfiles.newest_rotation_kid(snap, [{"t": "key_rotate", "kid": "gw-b"}, {"t": "settle"}]) == "gw-b"
    assert keyfiles.newest_rotation_kid(None, []) is None
    assert keyfiles.newest_rotation_kid({"version": 1}, []) is None


def test_unreadable_key_file_raises_key_file_error(tmp_path: object) -> None:
    import pathlib
    path = pathlib.Path(str(tmp_path)) / "k.pem"
    path.write_bytes(b"junk")
    with pytest.raises(keyfiles.KeyFileError, match="k.pem"):
        keyfiles.read_key(path)
    with pytest.raises(keyfiles.KeyFileError, match="cannot read"):
        keyfiles.read_key(path.with_name("missing.pem"))
