"""The connection handler and data routes over in-memory streams (virtual time for timeouts)."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
import trio
import trio.testing

from gateway.config import LimitsConfig
from gateway.server.data import DataApp
from gateway.server.http import serve_connection
from gateway.server.runtime import Runtime, http_limits
from http_client import RawClient, request, tx
from server_fakes import FakeJournal, make_runtime


async def connect(nursery: trio.Nursery, runtime: Runtime, *, lockstep: bool = False) -> RawClient:
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client, server = pair()
    nursery.start_soon(serve_connection, server, DataApp(runtime), http_limits(runtime.limits),
                       runtime.drain)
    return RawClient(client)


async def start_journal(nursery: trio.Nursery, runtime: Runtime) -> FakeJournal:
    journal = runtime.journal
    assert isinstance(journal, FakeJournal)
    await nursery.start(journal.run)
    return journal


async def test_settlement_is_durable_before_its_answer(nursery: trio.Nursery) -> None:
    runtime = make_runtime()
    journal = await start_journal(nursery, runtime)
    client = await connect(nursery, runtime)
    await client.send(tx(b"S-first"))
    reply = await client.reply()
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/msgpack"
    assert msgpack.unpackb(reply.body)["ok"] == b"S-first"
    assert journal.durable_op == 1 and journal.records == [{"op": 1, "t": "settle"}]


async def test_keep_alive_serves_two_requests(nursery: trio.Nursery) -> None:
    runtime = make_runtime()
    await start_journal(nursery, runtime)
    client = await connect(nursery, runtime)
    for body in (b"Q-one", b"S-two"):
        await client.send(tx(body))
        reply = await client.reply()
        assert reply.status == 200 and msgpack.unpackb(reply.body)["ok"] == body
    assert runtime.core.bodies == [b"Q-one", b"S-two"]


@pytest.mark.parametrize(("raw", "status"), [
    (request("GET", "/nope"), 404),
    (request("GET", "/fsi/v1/tx"), 405),
    (request("POST", "/healthz", b"x"), 405),
    (request("GET", "/healthz"), 200),
    (request("GET", "/readyz"), 200),
])
async def test_routes_answer_plain_statuses(nursery: trio.Nursery, raw: bytes, status: int) -> None:
    client = await connect(nursery, make_runtime())
    await client.send(raw)
    reply = await client.reply()
    assert reply.status == status
    assert reply.headers["content-type"].startswith("text/plain")


async def test_keys_route_is_json(nursery: trio.Nursery) -> None:
    client = await connect(nursery, make_runtime())
    await client.send(request("GET", "/fsi/v1/keys"))
    reply = await client.reply()
    assert reply.status == 200
    assert b'"alg":"Ed25519"' in reply.body and reply.body.startswith(b'{"keys":[')


@pytest.mark.parametrize(("content_type", "status"), [
    ("text/plain", 415), (None, 415), ("application/json", 415),
    ("application/msgpack; charset=binary", 200), ("Application/MsgPack", 200),
])
async def test_content_type(nursery: trio.Nursery, content_type: str | None, status: int) -> None:
    client = await connect(nursery, make_runtime())
    await client.send(request("POST", "/fsi/v1/tx", b"Q", content_type))
    reply = await client.reply()
    assert reply.status == status
    if status == 415:
        assert msgpack.unpackb(reply.body)["err_code"] == "UNSUPPORTED_MEDIA_TYPE"


async def test_body_of_exactly_the_limit_is_read(nursery: trio.Nursery) -> None:
    runtime = make_runtime(limits=LimitsConfig(body_bytes_max=1000))
    client = await connect(nursery, runtime)
    await client.send(tx(b"Q" * 1000))
    assert (await client.reply()).status == 200
    assert runtime.core.bodies == [b"Q" * 1000]


async def test_one_byte_over_the_limit_is_413_frame(nursery: trio.Nursery) -> None:
    runtime = make_runtime(limits=LimitsConfig(body_bytes_max=1000))
    client = await connect(nursery, runtime)
    await client.send(tx(b"Q" * 1001))
    reply = await client.reply()
    assert reply.status == 413
    assert msgpack.unpackb(reply.body)["err_code"] == "BODY_TOO_LARGE"
    assert reply.headers["connection"] == "close"
    assert runtime.core.bodies == []


async def test_declared_length_over_limit_refused_without_body(nursery: trio.Nursery) -> None:
    runtime = make_runtime(limits=LimitsConfig(body_bytes_max=1000))
    client = await connect(nursery, runtime)
    # Only the head is sent: the answer must come without waiting for 10 MB of body.
    await client.send(b"POST /fsi/v1/tx HTTP/1.1\r\nhost: t\r\ncontent-type: application/msgpack\r\n"
                      b"content-length: 10000000\r\n\r\n")
    reply = await client.reply()
    assert reply.status == 413 and msgpack.unpackb(reply.body)["err_code"] == "BODY_TOO_LARGE"


async def test_chunked_body_over_limit_is_413(nursery: trio.Nursery) -> None:
    runtime = make_runtime(limits=LimitsConfig(body_bytes_max=1000))
    client = await connect(nursery, runtime)
    chunk = b"Q" * 600
    await client.send(b"POST /fsi/v1/tx HTTP/1.1\r\nhost: t\r\ncontent-type: application/msgpack\r\n"
                      b"transfer-encoding: chunked\r\n\r\n" + (b"258\r\n" + chunk + b"\r\n") * 2
                      + b"0\r\n\r\n")
    assert (await client.reply()).status == 413


async def test_requests_beyond_in_flight_cap_get_429(nursery: trio.Nursery) -> None:
    journal = FakeJournal()
    journal.hold = True  # the first settlement waits for durability and stays in flight
    runtime = make_runtime(limits=LimitsConfig(requests_in_flight_max=1), journal=journal)
    await start_journal(nursery, runtime)
    first, second = await connect(nursery, runtime), await connect(nursery, runtime)
    await first.send(tx(b"S-held"))
    await trio.testing.wait_all_tasks_blocked()
    assert runtime.in_flight == 1
    await second.send(tx(b"S-shed"))
    reply = await second.reply()
    assert reply.status == 429 and reply.headers["retry-after"] == "1"
    assert msgpack.unpackb(reply.body)["err_code"] == "OVERLOADED"
    journal.hold = False
    assert (await first.reply()).status == 200


async def test_journal_failure_answers_500_internal(nursery: trio.Nursery) -> None:
    runtime = make_runtime()
    failures = []
    runtime.on_journal_failure = lambda: failures.append(1)
    journal = runtime.journal
    journal.hold = True
    await start_journal(nursery, runtime)
    client = await connect(nursery, runtime)
    await client.send(tx(b"S-doomed"))
    await trio.testing.wait_all_tasks_blocked()
    journal.fail()
    reply = await client.reply()
    assert reply.status == 500 and msgpack.unpackb(reply.body)["err_code"] == "INTERNAL"
    assert failures == [1]
    await client.send(request("GET", "/readyz"))
    assert (await client.reply()).status == 503


async def test_draining_refuses_new_transactions(nursery: trio.Nursery) -> None:
    runtime = make_runtime()
    client = await connect(nursery, runtime)
    await client.send(request("GET", "/healthz"))
    await client.reply()
    runtime.drain.started = True  # as if drain began while this request was being read
    await client.send(tx(b"S-late"))
    reply = await client.reply()
    assert reply.status == 503 and reply.headers["retry-after"] == "5"
    assert msgpack.unpackb(reply.body)["err_code"] == "DRAINING"
    assert reply.headers["connection"] == "close" and await client.closed()


async def test_drain_closes_idle_keep_alive_connections(nursery: trio.Nursery) -> None:
    runtime = make_runtime()
    client = await connect(nursery, runtime)
    await client.send(request("GET", "/healthz"))
    await client.reply()
    await trio.testing.wait_all_tasks_blocked()
    runtime.drain.start()
    assert await client.closed()


async def test_pipelined_garbage_after_a_good_request(nursery: trio.Nursery) -> None:
    runtime = make_runtime()
    client = await connect(nursery, runtime)
    await client.send(tx(b"Q-good") + b"\x00\xffGARBAGE\r\n\r\n")
    assert (await client.reply()).status == 200
    assert (await client.reply()).status == 400
    assert await client.closed()


@pytest.mark.parametrize("garbage", [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n",
                                     b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
                                     b"GET /\x00 HTTP/1.1\r\n\r\n",
                                     b"POST /fsi/v1/tx HTTP/1.1\r\ncontent-length: -5\r\n\r\n"])
async def test_random_bytes_get_400_and_close(nursery: trio.Nursery, garbage: bytes) -> None:
    client = await connect(nursery, make_runtime())
    await client.send(garbage)
    reply = await client.reply()
    assert reply.status == 400
    assert await client.closed()


async def test_header_flood_gets_431(nursery: trio.Nursery) -> None:
    runtime = make_runtime(limits=LimitsConfig(header_bytes_max=1024))
    client = await connect(nursery, runtime)
    await client.send(b"GET /healthz HTTP/1.1\r\nhost: t\r\n" + b"x-flood: aaaaaaaaaa\r\n" * 200)
    reply = await client.reply()
    assert reply.status == 431
    assert await client.closed()


@pytest.mark.parametrize(("head_bytes", "status"), [(16384, 200), (16385, 431)])
async def test_default_head_cap_is_exact(nursery: trio.Nursery, head_bytes: int, status: int) -> None:
    # The default header_bytes_max (16384) counts the request line, header lines and blank line.
    client = await connect(nursery, make_runtime())
    start = b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-pad: "
    await client.send(start + b"p" * (head_bytes - len(start) - 4) + b"\r\n\r\n")
    assert (await client.reply()).status == status


async def test_slowloris_head_times_out(nursery: trio.Nursery, autojump_clock: trio.abc.Clock) -> None:
    runtime = make_runtime(limits=LimitsConfig(read_timeout_s=5.0))
    client = await connect(nursery, runtime)
    start = trio.current_time()
    await client.send(b"GET /healthz HTTP/1.1\r\nhost: t\r\n")
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(10):  # a byte a second never completes the head within the deadline
            await trio.sleep(1)
            await client.send(b"x")
    reply = await client.reply()
    assert reply.status == 408
    # 408 at the 5 s deadline, then 1 s of linger before the close the next send notices.
    assert 5.0 <= trio.current_time() - start <= 7.0


async def test_idle_connection_is_closed(nursery: trio.Nursery, autojump_clock: trio.abc.Clock) -> None:
    runtime = make_runtime(limits=LimitsConfig(idle_timeout_s=30.0))
    client = await connect(nursery, runtime)
    start = trio.current_time()
    assert await client.closed()
    assert trio.current_time() - start == pytest.approx(30.0)


async def test_slow_reader_is_dropped_after_write_timeout(autojump_clock: trio.abc.Clock) -> None:
    runtime = make_runtime(limits=LimitsConfig(write_timeout_s=3.0))
    client_stream, server = trio.testing.lockstep_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, DataApp(runtime), http_limits(runtime.limits),
                           runtime.drain)
        await client_stream.send_all(request("GET", "/metrics"))
        start = trio.current_time()
    # The client never reads: the server's task still ends, at the write deadline.
    assert trio.current_time() - start == pytest.approx(3.0)


async def test_replay_waits_for_the_original_to_be_durable(nursery: trio.Nursery) -> None:
    runtime = make_runtime()
    journal = runtime.journal
    journal.hold = True
    await start_journal(nursery, runtime)
    first, second = await connect(nursery, runtime), await connect(nursery, runtime)
    await first.send(tx(b"S-original"))
    await second.send(tx(b"R-duplicate"))
    await trio.testing.wait_all_tasks_blocked()
    assert runtime.in_flight == 2
    journal.hold = False
    assert (await second.reply()).status == 200 and (await first.reply()).status == 200
    assert journal.durable_op == 1


async def test_snapshot_after_every_n_records(nursery: trio.Nursery) -> None:
    from gateway.server.runtime import SnapshotScheduler

    runtime = make_runtime()
    runtime.snapshots = SnapshotScheduler(runtime, every_records=2)
    await start_journal(nursery, runtime)
    nursery.start_soon(runtime.snapshots.run)
    client = await connect(nursery, runtime)
    for body in (b"S1", b"S2", b"S3"):
        await client.send(tx(body))
        await client.reply()
    while runtime.snapshots.written < 1:
        await trio.sleep(0.01)
    assert runtime.journal.snapshots == [({"last_op": 2}, 2)]


async def test_metrics_count_answers(nursery: trio.Nursery) -> None:
    runtime = make_runtime()
    await start_journal(nursery, runtime)
    client = await connect(nursery, runtime)
    await client.send(tx(b"S1") + request("POST", "/fsi/v1/tx", b"x", "text/plain"))
    await client.reply()
    await client.reply()
    await client.send(request("GET", "/metrics"))
    text = (await client.reply()).body.decode()
    assert 'yb_requests_total{infno="2102",outcome="ok"} 1.0' in text
    assert 'yb_rejections_total{err_code="UNSUPPORTED_MEDIA_TYPE"} 1.0' in text
    assert "yb_sessions_active 3.0" in text
    assert dataclasses.is_dataclass(runtime.limits)
