"""When a request's first bytes reached the machine, not when its connection got round to reading them.

Under overload a request can sit in its socket's receive buffer (or in the listen queue, for a
client that just reconnected) for a second before the connection task runs and reads it. The gate
ages requests from their arrival (gateway/server/admission.py); stamped at the read, that wait
would be invisible, and a request its client has nearly given up on would be admitted as fresh.
With SO_TIMESTAMPNS the kernel stamps each segment as it arrives, and `recvmsg` hands the stamp
back with the bytes.

The kernel's stamp is wall-clock time (CLOCK_REALTIME); the wait is the wall clock now less the
stamp, clamped to [0, WAIT_MAX_S] so that a step of the wall clock cannot make a request look
older than anything the gate keeps, or younger than now. Where the option or `recvmsg` is missing
(not Linux, not a socket: in-memory streams in tests), the wait is 0: the read's own time.

Linux turns stamping on a moment after the first socket on the machine asks for it (a deferred
work item, when no other socket had it on); bytes that arrive in that moment are stamped when
they are read, so their wait reads 0 too. Both ways the error is on the safe side: a request
whose wait is unknown is taken as fresh, never shed for an age it did not have.
"""

from __future__ import annotations

import socket
import struct
import sys
import time

import trio

__all__ = ["WAIT_MAX_S", "enable", "receive_stamped"]

# Linux's values (asm-generic/socket.h); Python's socket module does not name them.
_SO_TIMESTAMPNS = 35
_SCM_TIMESTAMPNS = _SO_TIMESTAMPNS
_TIMESPEC = struct.Struct("@qq")
_ANC_BYTES = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
# Longer than any wait the gate acts on (its close_after_s is seconds).
WAIT_MAX_S = 60.0
_SUPPORTED = sys.platform.startswith("linux") and _ANC_BYTES > 0


def enable(stream: trio.abc.Stream) -> None:
    """Ask the kernel to stamp what arrives on `stream`'s socket (a no-op where it cannot)."""
    sock = getattr(stream, "socket", None)
    if not _SUPPORTED or sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        pass


async def receive_stamped(stream: trio.abc.Stream, max_bytes: int) -> tuple[bytes, float]:
    """Receive up to `max_bytes` from `stream`, and how long ago (seconds) they arrived.

    b"" at the end of the stream, as `receive_some`. Raises what `receive_some` raises for a
    broken connection (trio.BrokenResourceError).
    """
    sock = getattr(stream, "socket", None)
    if not _SUPPORTED or sock is None:
        return await stream.receive_some(max_bytes), 0.0
    try:
        data, ancillary, _flags, _address = await sock.recvmsg(max_bytes, _ANC_BYTES)
    except OSError as exc:
        raise trio.BrokenResourceError(f"receive failed: {exc}") from exc
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == _SCM_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
            waited_s = time.time() - (seconds + nanoseconds / 1e9)
            return data, min(WAIT_MAX_S, max(0.0, waited_s))
    return data, 0.0
