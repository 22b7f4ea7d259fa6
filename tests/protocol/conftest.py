"""Every protocol test runs twice: with the C fast paths (protocol/_msgpack_c.c) and with the
pure-Python paths an install without a C compiler runs."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

import protocol._msgpack as msgpack_module
import protocol.canonical as canonical_module

# The fixture below swaps module attributes once per test, the same for all of a test's examples,
# which is what this health check warns about and what is wanted here.
settings.register_profile("protocol-paths", suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile("protocol-paths")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Tests of a C module itself (test_*_c.py) run once.
    paths = ["c"] if metafunc.module.__name__.endswith("_c") else ["c", "python"]
    metafunc.parametrize("protocol_path", paths, indirect=True)


@pytest.fixture(autouse=True)
def protocol_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which paths the protocol package takes: "c" (skipped where none was built) or "python"."""
    built = canonical_module._pack_in_c is not None or msgpack_module._unpack_plain_in_c is not None
    # A test of a C module itself says on its own what it needs (and that the module is built).
    if request.param == "c" and not built and not request.module.__name__.endswith("_c"):
        pytest.skip("no C fast path is built here (no C compiler at install)")
    if request.param == "python":
        monkeypatch.setattr(canonical_module, "_pack_in_c", None)
        monkeypatch.setattr(msgpack_module, "_unpack_plain_in_c", None)
    return request.param
