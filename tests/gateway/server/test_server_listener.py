"""Hostile clients against the real listener on loopback: they get a status or a closed socket,
and everyone else keeps being served."""

from __future__ import annotations

import pathlib

import trio

from gateway.server.app import Gateway
from http_client import RawClient, request
from protocol import ErrCode, decode_frame, decode_response_envelope
from server_region import RegionClient, make_region, start_gateway, with_limits


async def _answers_over_the_cap(gateway: Gateway, client: RegionClient) -> None:
    """One answer per new connection: a signed refusal for a transaction, health and metrics as
    usual, a plain 503 for other paths."""
    assert gateway.data_listener is not None and gateway.data_listener.open_connections == 3
    async with await trio.open_tcp_stream("127.0.0.1", client.data_port) as stream:
        refused = RawClient(stream)
        await refused.send(request("POST", "/fsi/v1/tx", b"frame", "application/msgpack"))
        reply = await refused.reply()
        envelope = decode_response_envelope(decode_frame(reply.body).body)
        assert (reply.status, envelope.err_code, envelope.infcode) == (503, ErrCode.OVERLOADED.wire, -1)
        assert reply.headers["retry-after"] and reply.headers["connection"] == "close"
        assert await refused.closed()
    assert await client.get("/healthz") == (200, b"ok\n")
    status, metrics = await client.get("/metrics")
    assert status == 200 and 'yb_shed_requests_total{reason="connections"} 1.0' in metrics.decode()
    assert await client.get("/fsi/v1/keys") == (503, b"too many connections\n")


async def test_busy_connections_over_the_cap_get_one_answer_each(tmp_path: pathlib.Path,
                                                                 nursery: trio.Nursery) -> None:
    region = make_region(tmp_path)
    with_limits(region, connections_max=3)
    gateway, client = await start_gateway(nursery, region)
    # Slowloris: connections in the middle of a head are busy, so none can be closed for room.
    held: list[trio.SocketStream] = []
    try:
        for _ in range(3):
            held.append(await trio.open_tcp_stream("127.0.0.1", client.data_port))
            await held[-1].send_all(b"POST /fsi/v1/tx HTTP/1.1\r\nhost: x\r\n")
        await trio.testing.wait_all_tasks_blocked()
        await _answers_over_the_cap(gateway, client)
        await held.pop().aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert (await client.get("/readyz"))[0] == 200
    finally:
        for stream in held:
            await trio.aclose_forcefully(stream)
    gateway.stop()


async def test_garbage_and_oversized_clients_do_not_disturb_a_settlement(tmp_path: pathlib.Path,
                                                                        nursery: trio.Nursery) -> None:
    region = make_region(tmp_path)
    gateway, client = await start_gateway(nursery, region)
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
