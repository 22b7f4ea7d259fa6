"""The open-loop generator against the baseline server over real loopback sockets."""

from __future__ import annotations

import msgpack
import pytest
import trio
from load_tests_support import start_baseline_in

from load_tests.baseline import RESP_DOMAIN, RESPONSE_BODY_BYTES, FrameSigner
from load_tests.http import Endpoint, HttpConnection, HttpProtocolError, body_length, parse_head, parse_url
from load_tests.openloop import (
    OpenLoopConfig,
    count_at_or_above,
    intended_offsets_s,
    require_loopback,
    run_open_loop,
)
from load_tests.targets import FixedTarget

STALL_S = 0.2


async def test_generator_holds_the_target_rate_against_the_baseline() -> None:
    async with trio.open_nursery() as nursery:
        endpoint = await start_baseline_in(nursery)
        config = OpenLoopConfig(rate_per_s=200, duration_s=2.0, connections=8)
        result = await run_open_loop(endpoint, FixedTarget(), config)
        nursery.cancel_scope.cancel()
    assert result.scheduled == 400
    assert result.ok == 400 and not result.errors and result.unfinished == 0
    assert 180 <= result.achieved_rate_per_s <= 201
    latency = result.latency_ms()
    assert result.histogram.get_total_count() == 400
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p99_9"] <= latency["max"]
    # Loopback answers on an idle-ish machine take well under the request timeout.
    assert latency["max"] < config.timeout_s * 1000


async def test_latency_counts_from_intended_time_through_a_stall() -> None:
    """A 200 ms stall must show up for every request scheduled during it, not only the in-flight ones."""
    stall = {"until": None}

    async def stall_once() -> None:
        if stall["until"] is None and trio.current_time() >= stall.setdefault("armed_at", trio.current_time() + 0.5):
            stall["until"] = trio.current_time() + STALL_S
        if stall["until"] is not None and trio.current_time() < stall["until"]:
            await trio.sleep_until(stall["until"])

    rate_per_s, connections = 400, 8
    async with trio.open_nursery() as nursery:
        endpoint = await start_baseline_in(nursery, stall_once)
        result = await run_open_loop(endpoint, FixedTarget(), OpenLoopConfig(rate_per_s, 1.5, connections))
        nursery.cancel_scope.cancel()
    assert stall["until"] is not None, "the stall never happened"
    assert result.ok == result.scheduled
    assert result.latency_ms()["max"] >= 180
    # Requests scheduled in the stall's first 100 ms waited at least 100 ms: about 40 of them. A
    # closed-loop generator would record only the `connections` requests that were in flight.
    slow = count_at_or_above(result.histogram, 100_000)
    assert slow >= 30 > connections
    assert result.latency_ms()["p99"] >= 100


async def test_a_silent_server_gives_timeouts_and_the_run_still_ends() -> None:
    async def never() -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        endpoint = await start_baseline_in(nursery, never)
        started_s = trio.current_time()
        config = OpenLoopConfig(rate_per_s=20, duration_s=0.5, connections=2, timeout_s=0.3, drain_s=1.0)
        result = await run_open_loop(endpoint, FixedTarget(), config)
        elapsed_s = trio.current_time() - started_s
        nursery.cancel_scope.cancel()
    assert result.ok == 0 and result.histogram.get_total_count() == 0
    assert result.errors["timeout"] >= 2
    assert result.error_ratio == 1.0
    assert elapsed_s <= config.duration_s + config.drain_s + 0.5


def test_schedules() -> None:
    uniform = list(intended_offsets_s(OpenLoopConfig(100, 1.0)))
    assert len(uniform) == 100 and uniform[0] == 0 and uniform[1] == pytest.approx(0.01)
    poisson = list(intended_offsets_s(OpenLoopConfig(1000, 5.0, arrival="poisson", seed=7)))
    assert poisson == list(intended_offsets_s(OpenLoopConfig(1000, 5.0, arrival="poisson", seed=7)))
    assert len(poisson) == 5000 and poisson[-1] == pytest.approx(5.0, rel=0.1)
    assert poisson != list(intended_offsets_s(OpenLoopConfig(1000, 5.0, arrival="poisson", seed=8)))


def test_only_loopback_targets() -> None:
    require_loopback(Endpoint("127.0.0.1", 1))
    require_loopback(Endpoint("::1", 1))
    for host in ("10.0.0.1", "example.org"):
        with pytest.raises(ValueError, match="loopback"):
            require_loopback(Endpoint(host, 1))


async def test_baseline_answers_a_signed_100_byte_frame_on_a_keep_alive_connection() -> None:
    signer = FrameSigner()
    async with trio.open_nursery() as nursery:
        endpoint = await start_baseline_in(nursery, signer=signer)
        conn = await HttpConnection.connect(endpoint)
        answers = [await conn.request("POST", "/fsi/v1/tx", msgpack.packb([1]), "application/msgpack")
                   for _ in range(3)]
        not_msgpack = await conn.request("POST", "/fsi/v1/tx", b"\xc1", "application/msgpack")
        wrong_method = await conn.request("PUT", "/fsi/v1/tx", b"")
        await conn.aclose()
        nursery.cancel_scope.cancel()
    assert [a.status for a in answers] == [200, 200, 200]
    version, auth, kid, body, tag = msgpack.unpackb(answers[0].body)
    assert (version, auth, len(body), len(tag)) == (1, "sig", RESPONSE_BODY_BYTES, 64)
    assert kid == signer.kid
    signer.public_key.verify(tag, RESP_DOMAIN + body)  # raises InvalidSignature when wrong
    assert len({msgpack.unpackb(a.body)[3] for a in answers}) == 3  # a fresh body per answer
    assert not_msgpack.status == 400 and wrong_method.status == 405


def test_http_head_parsing() -> None:
    status, headers = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close")
    assert status == 200 and headers == {"content-length": "5", "connection": "close"}
    assert body_length(200, headers, "POST") == 5 and body_length(204, {}, "GET") == 0
    for bad_head in (b"SPDY 200", b"HTTP/1.1 OK", b"HTTP/1.1 200 OK\r\nno colon"):
        with pytest.raises(HttpProtocolError):
            parse_head(bad_head)
    with pytest.raises(HttpProtocolError, match="chunked"):
        body_length(200, {"transfer-encoding": "chunked"}, "GET")
    with pytest.raises(HttpProtocolError, match="Content-Length"):
        body_length(200, {}, "GET")
    assert parse_url("http://127.0.0.1:8600/fsi/v1/tx") == (Endpoint("127.0.0.1", 8600), "/fsi/v1/tx")
    with pytest.raises(ValueError):
        parse_url("https://127.0.0.1/")
