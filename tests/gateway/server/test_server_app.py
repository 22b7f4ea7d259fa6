"""The composed gateway in-process: a fresh `init` region, real listeners, real journal on disk."""

from __future__ import annotations

import gc
import json
import pathlib
import socket
import time

import pytest
import trio

from gateway.config import load_config
from gateway.server.app import Gateway, StartupError
from protocol import ErrCode
from server_region import RegionClient, make_region


async def start(nursery: trio.Nursery, region: pathlib.Path, **kwargs: object) -> tuple[Gateway, RegionClient]:
    gateway = Gateway(load_config(region / "gateway.toml"), **kwargs)  # type: ignore[arg-type]
    ports = await nursery.start(gateway.run)
    return gateway, RegionClient(region, ports["data"], ports["admin"])


async def test_settlement_verifies_with_published_key_and_replays_byte_for_byte(
        tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    region = make_region(tmp_path)
    gateway, client = await start(nursery, region)
    assert (await client.get("/readyz"))[0] == 200
    term = await client.sign_in()
    frame = client.settle_frame(term, client.new_msgid(term))
    status, answer = await client.post_tx(frame)
    env = await client.verify(answer)
    assert (status, env.infcode, env.err_code) == (200, 0, "")
    assert env.output["setlinfo"]["fund_pay_sumamt"] > 0
    assert (await client.post_tx(frame))[1] == answer
    metrics = (await client.get("/metrics"))[1].decode()
    assert "yb_idempotent_replays_total 1.0" in metrics
    assert any(line.startswith("yb_settlements_total{") and line.endswith(" 1.0")
               for line in metrics.splitlines())
    gateway.stop()


async def test_restart_keeps_acknowledged_answers_and_ends_sessions(tmp_path: pathlib.Path) -> None:
    region = make_region(tmp_path)
    async with trio.open_nursery() as nursery:
        gateway, client = await start(nursery, region)
        term = await client.sign_in()
        mid = client.new_msgid(term)
        status, answer = await client.post_tx(client.settle_frame(term, mid))
        assert (await client.verify(answer)).infcode == 0
        gateway.stop()
    async with trio.open_nursery() as nursery:
        gateway, client2 = await start(nursery, region)
        _, stale = await client2.post_tx(client.settle_frame(term, client.new_msgid(term)))
        assert (await client2.verify(stale)).err_code == ErrCode.SESSION_UNKNOWN.wire
        fresh = await client2.sign_in()
        _, again = await client2.post_tx(client.settle_frame(fresh, mid))
        assert again == answer
        gateway.stop()


async def test_drain_writes_a_snapshot_and_restart_starts_from_it(tmp_path: pathlib.Path) -> None:
    region = make_region(tmp_path)
    async with trio.open_nursery() as nursery:
        gateway, client = await start(nursery, region)
        term = await client.sign_in()
        for _ in range(3):
            _, answer = await client.post_tx(client.settle_frame(term, client.new_msgid(term)))
            assert (await client.verify(answer)).infcode == 0
        gateway.stop()
    snapshots = list((region / "data" / "snapshots").iterdir())
    assert snapshots, "draining writes a snapshot"
    async with trio.open_nursery() as nursery:
        gateway, client = await start(nursery, region)
        assert gateway.runtime.core.last_op >= 3
        gateway.stop()


async def test_test_clock_exists_only_with_the_flag(tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    region = make_region(tmp_path)
    gateway, client = await start(nursery, region)
    body = json.dumps({"now_ms": 1_900_000_000_000}).encode()
    status, _ = await client.admin_post("/admin/v1/test/clock", body, role="operator")
    assert status == 404
    gateway.stop()


async def test_test_clock_moves_the_gateway_clock(tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    region = make_region(tmp_path)
    gateway, client = await start(nursery, region, test_clock=True)
    target_ms = int(time.time() * 1000) + 40 * 86_400_000
    body = json.dumps({"now_ms": target_ms}).encode()
    assert (await client.admin_post("/admin/v1/test/clock", body, role="viewer"))[0] == 403
    assert (await client.admin_post("/admin/v1/test/clock", body, role="operator"))[0] == 200
    assert abs(gateway.runtime.clock.now_ms() - target_ms) < 5_000
    gateway.stop()


async def test_port_in_use_is_one_clear_line(tmp_path: pathlib.Path) -> None:
    region = make_region(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = (region / "gateway.toml").read_text().replace('data = "127.0.0.1:0"',
                                                              f'data = "127.0.0.1:{port}"')
        (region / "gateway.toml").write_text(text)
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}"):
            await Gateway(load_config(region / "gateway.toml")).run()


def test_bad_registry_is_one_line_naming_the_file(tmp_path: pathlib.Path) -> None:
    region = make_region(tmp_path)
    registry = region / "registry.toml"
    registry.write_text(registry.read_text().replace('kind = "pharmacy"', 'kind = "shop"', 1))
    with pytest.raises(StartupError) as caught:
        Gateway(load_config(region / "gateway.toml"))
    assert "registry.toml" in str(caught.value) and "\n" not in str(caught.value)


async def test_a_refusal_is_logged_with_its_msgid(tmp_path: pathlib.Path, nursery: trio.Nursery,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    region = make_region(tmp_path)
    gateway, client = await start(nursery, region)
    term = await client.sign_in()
    mid = client.new_msgid(term)
    assert (await client.verify((await client.post_tx(client.settle_frame(term, mid)))[1])).infcode == 0
    other = term.request_frame("1101", mid, {"mdtrt_cert_type": "99"}, int(time.time() * 1000))
    assert (await client.verify((await client.post_tx(other))[1])).err_code
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    refused = [line for line in lines if line["event"] == "tx_refused"]
    assert refused and refused[-1]["msgid"] == mid and refused[-1]["fields"]["err_code"]
    gateway.stop()


async def test_the_start_up_heap_is_frozen_out_of_full_collections(tmp_path: pathlib.Path,
                                                                   nursery: trio.Nursery) -> None:
    # serve's gateway freezes what recovery built (freeze_heap): a full collection then walks only
    # what came after, not the region's tens of thousands of objects. Settlements still work.
    region = make_region(tmp_path)
    try:
        gateway, client = await start(nursery, region, freeze_heap=True)
        institutions = gateway.runtime.core.state.overlay.institutions
        assert gc.is_tracked(institutions)
        collectable = {id(obj) for obj in gc.get_objects()}
        assert id(institutions) not in collectable
        assert id(gateway.runtime.core.state) not in collectable
        term = await client.sign_in()
        status, answer = await client.post_tx(client.settle_frame(term, client.new_msgid(term)))
        assert (status, (await client.verify(answer)).infcode) == (200, 0)
    finally:
        gc.unfreeze()


async def test_an_embedded_gateway_leaves_the_heap_alone(tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    gateway, _ = await start(nursery, make_region(tmp_path))
    assert gc.get_freeze_count() == 0
    assert id(gateway.runtime.core.state.overlay.institutions) in {id(obj) for obj in gc.get_objects()}


class _SlowDataListener(Gateway):
    """Opens its data listener 0.3 s after the admin one says what it says."""

    admin_port: int | None = None

    async def _start_listener(self, nursery: trio.Nursery, name: str) -> int:
        if name == "data":
            await trio.sleep(0.3)
        port = await super()._start_listener(nursery, name)
        if name == "admin":
            self.admin_port = port
        return port


async def test_readyz_says_ready_only_once_the_data_listener_is_open(tmp_path: pathlib.Path,
                                                                     nursery: trio.Nursery) -> None:
    # A balancer (HAProxy in cluster mode) sends traffic where /readyz says 200 or "standby": the
    # data port must be listening by then. Polled while the data listener is slow to open.
    gateway = _SlowDataListener(load_config(make_region(tmp_path) / "gateway.toml"))
    nursery.start_soon(gateway.run)
    while gateway.admin_port is None:
        await trio.sleep(0.005)
    client = RegionClient(tmp_path / "region", 0, gateway.admin_port)
    answers = []
    with trio.fail_after(10):
        while True:
            status, body = await client.get("/readyz", gateway.admin_port)
            answers.append((status, body, gateway.data_listener is not None))
            if status == 200:
                break
            await trio.sleep(0.01)
    assert all(listening for status, text, listening in answers if status == 200 or b"standby" in text), answers
    assert any(not listening for _, _, listening in answers), "the poll never saw the slow start"
