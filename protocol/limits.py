"""Named limits of the wire contract.

Every bound a decoder or validator enforces lives here, so that a hostile length prefix or a
runaway value is refused by the same numbers everywhere (gateway, simulators, vendors).
"""

from __future__ import annotations

# HTTP body cap (SPEC section 3 default; gateway.toml [limits] body_bytes_max may lower or raise it).
BODY_BYTES_MAX_DEFAULT = 65_536

# msgpack integers must fit in int64 (SPEC section 2).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Money: integer fen, 0..AMOUNT_FEN_MAX inclusive (SPEC section 2).
AMOUNT_FEN_MAX = 10**10
# Bill lines per settlement request (SPEC section 7).
ITEMS_MIN = 1
ITEMS_MAX = 200
# Units on one bill line; no till sells a million units of one item in one line.
CNT_MAX = 1_000_000
# Rows per 3202 page.
DETAIL_LIMIT_MIN = 1
DETAIL_LIMIT_MAX = 500
# A 3201 day count cannot exceed what int64 holds; keep it to a sane, documented ceiling.
SETL_CNT_MAX = 10**9

# Freshness window of inf_time (SPEC section 5): the 24-hour upload rule and 300 s of clock skew.
FRESH_PAST_MS = 24 * 3600 * 1000
FRESH_FUTURE_MS = 300 * 1000

# Fixed-width codes (SPEC sections 2 and 5).
INSTITUTION_CODE_CHARS = 12
ADMDVS_DIGITS = 6
MSGID_TIME_DIGITS = 14
MSGID_SERIAL_DIGITS = 4
MSGID_CHARS = INSTITUTION_CODE_CHARS + MSGID_TIME_DIGITS + MSGID_SERIAL_DIGITS
INF_REFMSGID_CHARS = 30

# Free-form identifiers (dev_no, opter, sign_no, psn_no, feedetl_sn, card_no ...): 1..64 chars.
ID_CHARS_MAX = 64
# A traceability code (药品追溯码, SPEC 13): the national format is 20 digits; 64 leaves room for others.
TRACE_CODE_CHARS_MAX = 64
# infno is a short numeric word ("9001"); anything longer is not an infno.
INFNO_CHARS_MAX = 8
# An e-voucher token is ~300 chars; 2 KiB leaves room for longer issuer kids.
VOUCHER_TOKEN_CHARS_MAX = 2048
# err_msg and warnings are human-readable lines.
TEXT_CHARS_MAX = 1024
WARNINGS_MAX = 64

# Binary fields.
X25519_PUB_BYTES = 32
ED25519_SIG_BYTES = 64
HMAC_SHA256_BYTES = 32
CARD_MAC_BYTES = 16
SESSION_KEY_BYTES = 32

# Frame shape (SPEC section 4).
FRAME_VERSION = 1
FRAME_FIELDS = 5
VOUCHER_VERSION = 1
VOUCHER_FIELDS = 4
# Voucher validity (SPEC section 7): issued no later than now + skew, lifetime at most 600 s.
VOUCHER_IAT_SKEW_S = 300
VOUCHER_LIFETIME_S_MAX = 600

# Decoder bounds: no string, bin, array or map inside a body can be longer than the body itself,
# and nesting deeper than this is refused before any recursive walk.
MSGPACK_LEN_MAX = BODY_BYTES_MAX_DEFAULT
NESTING_DEPTH_MAX = 32

assert 0 < AMOUNT_FEN_MAX <= INT64_MAX
assert 0 < ITEMS_MIN <= ITEMS_MAX
assert ITEMS_MAX * AMOUNT_FEN_MAX <= INT64_MAX, "a sum of line amounts must fit in int64"
assert CNT_MAX * AMOUNT_FEN_MAX <= INT64_MAX, "cnt x pric must fit in int64"
assert 0 < DETAIL_LIMIT_MIN <= DETAIL_LIMIT_MAX
assert 0 < SETL_CNT_MAX <= INT64_MAX
assert FRESH_FUTURE_MS < FRESH_PAST_MS
assert MSGID_CHARS == 30 == INF_REFMSGID_CHARS
assert INSTITUTION_CODE_CHARS <= ID_CHARS_MAX
assert ED25519_SIG_BYTES != HMAC_SHA256_BYTES, "the tag length alone tells sig from mac"
assert CARD_MAC_BYTES <= HMAC_SHA256_BYTES
assert VOUCHER_TOKEN_CHARS_MAX < MSGPACK_LEN_MAX
assert TEXT_CHARS_MAX * WARNINGS_MAX <= MSGPACK_LEN_MAX
assert VOUCHER_IAT_SKEW_S * 1000 <= FRESH_FUTURE_MS
