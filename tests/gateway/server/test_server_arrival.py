"""The kernel's receive stamp: how long a request's bytes waited in the socket before they were read."""

from __future__ import annotations

import sys
import time

import pytest
import trio
import trio.testing

from gateway.server import arrival


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_TIMESTAMPNS is Linux's")
async def test_bytes_left_unread_report_how_long_they_waited() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = trio.socket.socket()
    await client.connect(listener.getsockname())
    server_sock, _ = await listener.accept()
    stream = trio.SocketStream(server_sock)
    arrival.enable(stream)
    await _until_the_kernel_stamps(client, stream)
    await client.send(b"first")
    time.sleep(0.25)                  # the bytes sit in the socket, unread, meanwhile
    data, waited_s = await arrival.receive_stamped(stream, 100)
    assert data == b"first" and 0.2 <= waited_s <= 5
    await client.send(b"second")
    await trio.sleep(0.01)
    data, waited_s = await arrival.receive_stamped(stream, 100)
    assert data == b"second" and waited_s < 0.2
    client.close()
    assert (await arrival.receive_stamped(stream, 100))[0] == b""
    for sock in (server_sock, listener):
        sock.close()


async def _until_the_kernel_stamps(client: trio.socket.SocketType, stream: trio.SocketStream) -> None:
    """Wait until bytes are stamped on arrival, not on reading.

    When no socket on the machine had stamps on, the kernel turns them on a moment after the
    first asks (a deferred work item); bytes arriving in that moment are stamped when read, so
    their wait reads 0. The measured send must not fall in it. (If stamping never works, this
    times out and the test fails.)
    """
    with trio.fail_after(5):
        while True:
            await client.send(b"w")
            await trio.sleep(0.02)
            data, waited_s = await arrival.receive_stamped(stream, 100)
            assert data == b"w"
            if waited_s >= 0.01:
                return


async def test_a_stream_without_a_socket_reports_no_wait() -> None:
    a, b = trio.testing.memory_stream_pair()
    await a.send_all(b"x")
    assert await arrival.receive_stamped(b, 10) == (b"x", 0.0)
