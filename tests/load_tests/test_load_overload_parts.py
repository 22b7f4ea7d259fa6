"""The overload generator's parts that need no server: source addresses and how answers are judged."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.sealer import KeyRing, Sealer
from load_tests.http import HttpResponse
from load_tests.overload import local_addresses, settlement_problem, shed_problem
from protocol import ErrCode

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SEALER = Sealer("510182", KeyRing(KEY), 1000)
KEYS = {SEALER.keyring.active_kid: KEY.public_key()}
NOW_MS = 1_718_000_000_000


def test_connections_are_spread_over_loopback_addresses() -> None:
    addresses = local_addresses(130, per_address=64)
    assert addresses[0] == addresses[63] == "127.0.0.1"
    assert addresses[64] == "127.0.0.2" and addresses[-1] == "127.0.0.3"


def test_a_shed_answer_must_be_signed_overloaded_with_retry_after() -> None:
    overloaded = SEALER.overloaded_response(NOW_MS)
    assert shed_problem(HttpResponse(429, {"retry-after": "1"}, overloaded), KEYS) is None
    assert shed_problem(HttpResponse(429, {"retry-after": "1"}, overloaded), None) is None
    assert shed_problem(HttpResponse(429, {}, overloaded), KEYS) == "shed_without_retry_after"
    other = SEALER.error_response(ErrCode.MALFORMED_INPUT, NOW_MS)
    assert shed_problem(HttpResponse(503, {"retry-after": "5"}, other), KEYS) == "shed_MALFORMED_INPUT"
    forged = Sealer("510182", KeyRing(Ed25519PrivateKey.generate()), 1000).overloaded_response(NOW_MS)
    assert shed_problem(HttpResponse(429, {"retry-after": "1"}, forged), KEYS) == "shed_bad_frame"


def test_a_settlement_answer_is_judged_by_status_and_infcode() -> None:
    assert settlement_problem(HttpResponse(503, {}, b""), KEYS) == "http_503"
    assert settlement_problem(HttpResponse(200, {}, b"\xc1"), None) == "bad_answer"
    rejected = SEALER.error_response(ErrCode.CARD_INVALID, NOW_MS)
    assert settlement_problem(HttpResponse(200, {}, rejected), KEYS) == "infcode_CARD_INVALID"
