"""Shared helpers: an in-process baseline server on a real loopback socket (port 0)."""

from __future__ import annotations

import trio

from load_tests.baseline import BeforeAnswer, FrameSigner, serve_baseline
from load_tests.http import Endpoint


async def start_baseline_in(nursery: trio.Nursery, before_answer: BeforeAnswer | None = None,
                            signer: FrameSigner | None = None) -> Endpoint:
    """Start the baseline server in `nursery` on a free loopback port and return its endpoint."""
    port = await nursery.start(lambda task_status: serve_baseline(0, before_answer=before_answer, signer=signer,
                                                                  task_status=task_status))
    return Endpoint("127.0.0.1", port)
