"""The durable floor: the baseline that answers only once the request's body is in its journal."""

from __future__ import annotations

import errno
import os
import pathlib

import trio

from load_tests.baseline import FrameSigner, serve_baseline
from load_tests.http import Endpoint, HttpConnection
from load_tests.servers import choose_pinning, start_baseline
from load_tests.targets import MSGPACK, TX_PATH, fixed_request_body
from gateway.journal import FaultyFileOps, Journal


async def _start(nursery: trio.Nursery, journal: Journal) -> Endpoint:
    port = await nursery.start(lambda task_status: serve_baseline(0, signer=FrameSigner(), journal=journal,
                                                                  task_status=task_status))
    return Endpoint("127.0.0.1", port)


async def test_every_answered_body_is_in_the_journal_in_order(tmp_path: pathlib.Path) -> None:
    bodies = [fixed_request_body() for _ in range(12)]
    async with trio.open_nursery() as nursery:
        endpoint = await _start(nursery, Journal(tmp_path, fsync=True))
        conn = await HttpConnection.connect(endpoint)
        statuses = [(await conn.request("POST", TX_PATH, body, MSGPACK)).status for body in bodies]
        await conn.aclose()
        nursery.cancel_scope.cancel()
    assert statuses == [200] * len(bodies)
    records = Journal(tmp_path).read_only().records
    assert [record["body"] for record in records] == bodies
    assert [record["op"] for record in records] == list(range(1, len(bodies) + 1))


async def test_no_answer_goes_out_before_its_record_is_durable(tmp_path: pathlib.Path) -> None:
    """With every fsync failing nothing is durable, so nothing may be answered 200."""
    file_ops = FaultyFileOps()
    file_ops.fail("fsync", errno.EIO, times=None)
    async with trio.open_nursery() as nursery:
        endpoint = await _start(nursery, Journal(tmp_path, fsync=True, file_ops=file_ops))
        conn = await HttpConnection.connect(endpoint)
        first = await conn.request("POST", TX_PATH, fixed_request_body(), MSGPACK)
        second = await conn.request("POST", TX_PATH, fixed_request_body(), MSGPACK)
        await conn.aclose()
        nursery.cancel_scope.cancel()
    assert (first.status, first.body) == (500, b"not durable\n")
    assert second.status == 500              # the journal stays failed: later records are refused
    assert file_ops.calls.get("fsync", 0) >= 1
    assert os.path.isdir(tmp_path / "journal")


async def test_the_bench_starts_the_durable_floor_as_a_process(tmp_path: pathlib.Path) -> None:
    """`python -m load_tests.baseline --journal DIR`, as `yibao-load bench` starts it."""
    server = await start_baseline(choose_pinning(), tmp_path / "floor")
    try:
        assert server.endpoint is not None
        conn = await HttpConnection.connect(server.endpoint)
        body = fixed_request_body()
        answer = await conn.request("POST", TX_PATH, body, MSGPACK)
        await conn.aclose()
    finally:
        server.stop()
    assert answer.status == 200 and server.name == "baseline-durable"
    assert [record["body"] for record in Journal(tmp_path / "floor").read_only().records] == [body]
