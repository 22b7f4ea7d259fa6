"""SPEC sections 3, 4 and 6 over HTTP against the composed gateway: statuses of signed error Frames
(BAD_MAC, a business rejection) and concurrent duplicates of one settlement."""

from __future__ import annotations

import datetime
import pathlib
import time

import msgpack
import trio

from gateway.config import load_config
from gateway.server.app import Gateway
from http_client import RawClient, request
from protocol import SHANGHAI, Frame, decode_frame, encode_frame
from protocol.terminal import verify_answer
from server_region import MSGPACK, RegionClient, make_region


async def start(nursery: trio.Nursery, tmp_path: pathlib.Path) -> tuple[Gateway, RegionClient]:
    gateway = Gateway(load_config(make_region(tmp_path) / "gateway.toml"))
    ports = await nursery.start(gateway.run)
    return gateway, RegionClient(tmp_path / "region", ports["data"], ports["admin"])


async def exchange(client: RegionClient, raw: bytes):
    stream = await trio.open_tcp_stream("127.0.0.1", client.data_port)
    async with stream:
        raw_client = RawClient(stream)
        await raw_client.send(raw)
        return await raw_client.reply()


async def test_statuses_and_every_tx_answer_is_a_signed_frame(tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    gateway, client = await start(nursery, tmp_path)
    keys = await client.keys()
    term = await client.sign_in()
    good = decode_frame(term.request_frame("3201", client.new_msgid(term), {}, _now_ms()))
    bad_mac = encode_frame(Frame(1, "mac", good.key_id, good.body, b"\x00" * 32))
    cases = [
        (request("POST", "/fsi/v1/tx", b"\xc1", MSGPACK), 400, "MALFORMED_FRAME"),
        (request("POST", "/fsi/v1/tx", bad_mac, MSGPACK), 401, "BAD_MAC"),
        (request("POST", "/fsi/v1/tx", encode_frame(good), MSGPACK), 200, "MALFORMED_INPUT"),
        (request("POST", "/fsi/v1/tx", b"x", "application/json"), 415, "UNSUPPORTED_MEDIA_TYPE"),
        (request("POST", "/fsi/v1/tx", b"x" * 65_537, MSGPACK), 413, "BODY_TOO_LARGE"),
    ]
    for raw, status, code in cases:
        reply = await exchange(client, raw)
        env = verify_answer(reply.body, keys)
        assert (reply.status, env.err_code, env.infcode) == (status, code, -2), code
        assert reply.headers["content-type"] == MSGPACK
    gateway.stop()


async def test_concurrent_duplicates_get_the_first_answer(tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    gateway, client = await start(nursery, tmp_path)
    term = await client.sign_in()
    frame = client.settle_frame(term, client.new_msgid(term))
    answers: list[tuple[int, bytes]] = []

    async def post() -> None:
        answers.append(await client.post_tx(frame))

    async with trio.open_nursery() as copies:
        for _ in range(4):
            copies.start_soon(post)
    assert len({body for _, body in answers}) == 1 and {status for status, _ in answers} == {200}
    env = await client.verify(answers[0][1])
    assert env.infcode == 0
    day = _shanghai_day(env.output["setlinfo"]["setl_time"])
    detail = term.request_frame("3202", client.new_msgid(term), {"stmt_date": day, "limit": 10}, _now_ms())
    rows = msgpack.unpackb(decode_frame((await client.post_tx(detail))[1]).body)["output"]["rows"]
    assert len(rows) == 1
    gateway.stop()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _shanghai_day(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, SHANGHAI).strftime("%Y%m%d")
