"""Hostile clients against the real listener on loopback: they get a status or a closed socket,
and everyone else keeps being served."""

from __future__ import annotations

import pathlib

import trio

from gateway.config import load_config
from gateway.server.app import Gateway
from http_client import RawClient
from protocol import ErrCode, decode_frame, decode_response_envelope
from server_region import RegionClient, make_region


def with_limits(region: pathlib.Path, **limits: object) -> None:
    config = region / "gateway.toml"
    lines = "".join(f"{key} = {value}\n" for key, value in limits.items())
    config.write_text(config.read_text().replace("[limits]\n", "[limits]\n" + lines, 1))


async def start(nursery: trio.Nursery, region: pathlib.Path) -> tuple[Gateway, RegionClient]:
    gateway = Gateway(load_config(region / "gateway.toml"))
    ports = await nursery.start(gateway.run)
    return gateway, RegionClient(region, ports["data"], ports["admin"])


async def test_connections_over_the_cap_get_a_signed_overloaded(tmp_path: pathlib.Path,
                                                                nursery: trio.Nursery) -> None:
    region = make_region(tmp_path)
    with_limits(region, connections_max=3)
    gateway, client = await start(nursery, region)
    # Half-open connections that never send a byte hold their slots (slowloris).
    held = [await trio.open_tcp_stream("127.0.0.1", client.data_port) for _ in range(3)]
    await trio.testing.wait_all_tasks_blocked()
    refused = RawClient(await trio.open_tcp_stream("127.0.0.1", client.data_port))
    reply = await refused.reply()
    envelope = decode_response_envelope(decode_frame(reply.body).body)
    assert (reply.status, envelope.err_code, envelope.infcode) == (503, ErrCode.OVERLOADED.wire, -1)
    assert reply.headers["retry-after"] and reply.headers["connection"] == "close"
    assert "yb_shed_requests_total{reason=\"connections\"} 1.0" in (
        await client.get("/metrics", port=client.admin_port))[1].decode()
    await held.pop().aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert (await client.get("/readyz"))[0] == 200
    for stream in (*held, refused.stream):
        await stream.aclose()
    gateway.stop()


async def test_garbage_and_oversized_clients_do_not_disturb_a_settlement(tmp_path: pathlib.Path,
                                                                        nursery: trio.Nursery) -> None:
    region = make_region(tmp_path)
    gateway, client = await start(nursery, region)
    garbage = RawClient(await trio.open_tcp_stream("127.0.0.1", client.data_port))
    await garbage.send(b"\x00\xff" * 512 + b"\r\n\r\n")
    assert (await garbage.reply()).status == 400
    oversized = RawClient(await trio.open_tcp_stream("127.0.0.1", client.data_port))
    await oversized.send(b"POST /fsi/v1/tx HTTP/1.1\r\nhost: x\r\ncontent-type: application/msgpack"
                         b"\r\ncontent-length: 99999999\r\n\r\n")
    reply = await oversized.reply()
    assert reply.status == 413
    assert decode_response_envelope(decode_frame(reply.body).body).err_code == "BODY_TOO_LARGE"
    slow = await trio.open_tcp_stream("127.0.0.1", client.data_port)
    await slow.send_all(b"POST /fsi/v1/tx HTTP/1.1\r\nhost: x\r\n")  # and never more
    term = await client.sign_in()
    _, answer = await client.post_tx(client.settle_frame(term, client.new_msgid(term)))
    assert (await client.verify(answer)).infcode == 0
    for stream in (slow, garbage.stream, oversized.stream):
        await stream.aclose()
    gateway.stop()
