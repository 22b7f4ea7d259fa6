"""A whole gateway (`Gateway` on a fresh `init` region) and a JSON client for its admin listener.

The data-side helpers (sign-in, a 3-line 2102, answer verification) come from the server tests'
`server_region`; this module adds admin calls by admin name, with the tokens of the region's
sim.toml.
"""

from __future__ import annotations

import itertools
import json
import pathlib
import sys
import time
from typing import Any

import trio

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "server"))

from http_client import request  # noqa: E402
from server_region import RegionClient, make_region  # noqa: E402

from gateway.config import load_config  # noqa: E402
from gateway.journal import RealFileOps  # noqa: E402
from gateway.server.app import Gateway  # noqa: E402
from protocol import TerminalSession, msgid  # noqa: E402

__all__ = ["AdminRegionClient", "make_region", "start_gateway"]

# msgids carry the second and a serial: a client made after a restart must not reuse the serials
# of the one before it within the same second (that would be an idempotent replay, not a new tx).
_SERIALS = itertools.count(1)


class AdminRegionClient(RegionClient):
    """RegionClient plus admin requests made as a named admin of sim.toml."""

    def new_msgid(self, term: TerminalSession) -> str:
        """A msgid unique across every client of this test process."""
        return msgid(term.fixmedins_code, int(time.time() * 1000), next(_SERIALS))

    def token_of(self, name: str) -> str:
        """The bearer token of admin `name` (alice/bob: policy, olivia: operator, victor: viewer)."""
        return next(a["token"] for a in self.sim["admins"] if a["name"] == name)

    def admin_of(self, role: str) -> str:
        """The name of the first admin of `role`."""
        return next(a["name"] for a in self.sim["admins"] if a["role"] == role)

    async def admin(self, method: str, path: str, who: str | None, body: Any = None,
                    raw: bytes | None = None, token: str | None = None) -> tuple[int, Any]:
        """One admin request as admin `who` (None: no Authorization); returns (status, JSON)."""
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        if token is None and who is not None:
            token = self.token_of(who)
        extra = "" if token is None else f"authorization: Bearer {token}\r\n"
        content_type = "application/json" if method == "POST" else None
        status, answer = await self._exchange(self.admin_port, request(method, path, data, content_type, extra))
        return status, json.loads(answer)

    async def settle(self, term: TerminalSession) -> tuple[bytes, bytes]:
        """Send one 3-line 2102; returns (frame, answer bytes)."""
        frame = self.settle_frame(term, self.new_msgid(term))
        status, answer = await self.post_tx(frame)
        assert status == 200, status
        return frame, answer

    def pharmacy_code(self) -> str:
        """The institution of the terminal `sign_in` uses."""
        return self.pharmacy_terminal().fixmedins_code

    def settling_person(self, term: TerminalSession) -> str:
        """The psn_no `settle_frame` settles for."""
        return next(p["psn_no"] for p in self.sim["persons"] if p["insuplc_admdvs"][:2] == term.admdvs[:2])


async def start_gateway(nursery: trio.Nursery, region: pathlib.Path,
                        file_ops: RealFileOps | None = None) -> tuple[Gateway, AdminRegionClient]:
    """Start a Gateway on `region` (as `serve` would) and a client for both of its listeners."""
    gateway = Gateway(load_config(region / "gateway.toml"), file_ops=file_ops)
    ports = await nursery.start(gateway.run)
    return gateway, AdminRegionClient(region, ports["data"], ports["admin"])
