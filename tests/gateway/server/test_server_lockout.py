"""One address holding idle keep-alive connections must not lock anyone else out (real sockets).

The hostile client is 127.0.0.1; the terminal binds its sockets to 127.0.0.2, so the listener sees
two source addresses on loopback.
"""

from __future__ import annotations

import contextlib
import pathlib
from typing import AsyncIterator

import pytest
import trio
import trio.testing

from gateway.config import ConfigError, load_config
from gateway.server.app import Gateway
from gateway.server.listener import Listener
from protocol import ErrCode
from server_region import RegionClient, make_region, start_gateway, with_limits

CONNECTIONS_MAX = 64
# The hostile client opens this many more idle connections than the whole listener may hold.
IDLE_OVER_CAP = 76
# Everything the terminal does below normally takes well under a second on loopback.
TERMINAL_DEADLINE_S = 5.0


@contextlib.asynccontextmanager
async def idle_connections(port: int, count: int) -> AsyncIterator[list[trio.SocketStream]]:
    """`count` connections from 127.0.0.1 that send nothing, once the listener has taken them all;
    closed on the way out, also when the test fails."""
    streams: list[trio.SocketStream] = []
    try:
        for _ in range(count):
            streams.append(await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.1"))
        await trio.testing.wait_all_tasks_blocked()
        yield streams
    finally:
        for stream in streams:
            await trio.aclose_forcefully(stream)


def data_listener(gateway: Gateway) -> Listener:
    assert gateway.data_listener is not None
    return gateway.data_listener


async def test_idle_connections_of_one_address_do_not_lock_out_another(
        tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    region = make_region(tmp_path)
    with_limits(region, connections_max=CONNECTIONS_MAX)
    gateway, hostile = await start_gateway(nursery, region)
    terminal = RegionClient(region, hostile.data_port, hostile.admin_port, local_address="127.0.0.2")
    async with idle_connections(hostile.data_port, CONNECTIONS_MAX + IDLE_OVER_CAP) as idle:
        started_s = trio.current_time()
        with trio.fail_after(TERMINAL_DEADLINE_S):
            health = await terminal.get("/healthz")
            metrics_status, metrics = await terminal.get("/metrics")
            term = await terminal.sign_in()
            status, answer = await terminal.post_tx(terminal.settle_frame(term, terminal.new_msgid(term)))
            envelope = await terminal.verify(answer)
        elapsed_s = trio.current_time() - started_s
        assert health == (200, b"ok\n"), health
        assert metrics_status == 200 and b"# TYPE yb_connections_open gauge" in metrics, metrics[:80]
        assert (status, envelope.infcode, envelope.err_code) == (200, 0, ""), envelope
        assert elapsed_s < TERMINAL_DEADLINE_S
        # The listener never held more than its cap: the longest-idle connections were closed to
        # make room, the first IDLE_OVER_CAP of them for the hostile client's own newer ones.
        listener = data_listener(gateway)
        assert listener.open_connections <= CONNECTIONS_MAX
        assert listener.idle_closed >= IDLE_OVER_CAP
        with trio.fail_after(TERMINAL_DEADLINE_S):
            for stream in idle[:IDLE_OVER_CAP]:
                assert await stream.receive_some(1) == b""
    gateway.stop()


async def test_one_address_is_capped_and_gives_way_to_itself(tmp_path: pathlib.Path,
                                                             nursery: trio.Nursery) -> None:
    region = make_region(tmp_path)
    with_limits(region, connections_max=CONNECTIONS_MAX, connections_per_address_max=4)
    gateway, hostile = await start_gateway(nursery, region)
    terminal = RegionClient(region, hostile.data_port, hostile.admin_port, local_address="127.0.0.2")
    listener = data_listener(gateway)
    async with idle_connections(hostile.data_port, 5) as held:
        # The fifth connection from 127.0.0.1 closed the longest-idle one of the same address.
        with trio.fail_after(TERMINAL_DEADLINE_S):
            assert await held[0].receive_some(1) == b""
        assert (listener.open_connections, listener.idle_closed) == (4, 1)
        for stream in held[1:]:
            await stream.send_all(b"POST /fsi/v1/tx HTTP/1.1\r\nhost: x\r\n")  # busy from now on
        await trio.testing.wait_all_tasks_blocked()
        # All four busy: a new connection from 127.0.0.1 gets one answer, as usual for health, a
        # signed refusal for a transaction (its signature checked with keys fetched from
        # 127.0.0.2, which is served as usual, with nothing closed for it).
        assert await hostile.get("/healthz") == (200, b"ok\n")
        status, answer = await hostile.post_tx(b"frame")
        assert status == 503 and (await terminal.verify(answer)).err_code == ErrCode.OVERLOADED.wire
        assert listener.idle_closed == 1
    gateway.stop()


def test_connections_per_address_max_is_a_limits_key(tmp_path: pathlib.Path) -> None:
    config_path = tmp_path / "gateway.toml"
    config_path.write_text('admdvs = "510182"\n', encoding="utf-8")
    assert load_config(config_path).limits.connections_per_address_max == 256
    config_path.write_text('admdvs = "510182"\n[limits]\nconnections_per_address_max = 8\n')
    assert load_config(config_path).limits.connections_per_address_max == 8
    config_path.write_text('admdvs = "510182"\n[limits]\nconnections_per_address_max = 0\n')
    with pytest.raises(ConfigError, match="'limits.connections_per_address_max' must be at least 1"):
        load_config(config_path)
