"""Differential review of the decoders' fast paths against the reference paths and SPEC section 2.

Valid requests of every infno are mutated (types flipped, fields added or dropped, keys reordered,
out-of-int64 and deeply nested values, bin keys) and written with non-canonical msgpack encodings
(wider ints, strings, arrays and maps than needed, float32, duplicate map keys). Each body then goes
through the fast pipeline (frame, envelope with its plainness proof, parse_input, fingerprint) and
through the same functions with every fast path switched off; both must answer the same value or
the same ProtocolError code and message, and the fingerprint must be SPEC's canonical msgpack.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import hashlib
import math
import random
import struct
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol
from protocol import ErrCode, ProtocolError, canonical, envelope, inputs
from protocol_builders import VALID_INPUTS, envelope_dict, reference_decode_frame, valid_input

SETTINGS = settings(max_examples=300, derandomize=True, deadline=None)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


# -- SPEC section 2, written out independently of protocol.canonical ---------------------------

def spec_canonical(obj: Any) -> bytes:
    """Every map's keys sorted by their UTF-8 bytes, recursively; shortest encodings; bin type."""
    def rebuild(value: Any) -> Any:
        if isinstance(value, dict):
            keys = sorted(value, key=lambda key: key.encode("utf-8"))
            return {key: rebuild(value[key]) for key in keys}
        if isinstance(value, (list, tuple)):
            return [rebuild(item) for item in value]
        return value
    return msgpack.packb(rebuild(obj), use_bin_type=True)


def spec_fingerprint(infno: str, input_: Any) -> bytes:
    return hashlib.sha256(spec_canonical([infno, input_])).digest()


# -- switching the fast paths off ----------------------------------------------------------------

@contextlib.contextmanager
def fast_paths_off() -> Iterator[None]:
    """Every shortcut of the protocol package replaced by the walk it shortcuts."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(envelope, "is_plain", lambda value, depth=0: False)
        patch.setattr(inputs, "_bill_line", lambda raw, index: inputs._bill_line_checked(raw, f"input.items[{index}]"))
        patch.setattr(inputs, "_credential", inputs._credential_checked)
        patch.setattr(canonical, "_in_canonical_order", lambda obj: False)
        yield


def _outcome(call: Any) -> Any:
    try:
        return ("ok", call())
    except ProtocolError as exc:
        return ("refused", exc.code, exc.msg)


def pipeline(body: bytes) -> str:
    """What the core learns from an envelope body, in its order; repr so that NaN compares equal."""
    decoded = _outcome(lambda: protocol.decode_request_envelope_proving_input(body))
    if decoded[0] != "ok":
        return repr(decoded)
    env, proven = decoded[1]
    print_ = protocol.fingerprint(env.infno, env.input)
    assert print_ == spec_fingerprint(env.infno, env.input)
    typed = _outcome(lambda: protocol.parse_input(env.infno, env.input, input_proven_plain=proven))
    return repr((env, print_, typed))


def assert_same_pipeline(body: bytes) -> str:
    fast = pipeline(body)
    with fast_paths_off():
        reference = pipeline(body)
    assert fast == reference
    return fast


# -- non-canonical msgpack -------------------------------------------------------------------------

def _int_forms(value: int) -> list[bytes]:
    forms = []
    if 0 <= value <= 0x7F or -32 <= value < 0:
        forms.append(struct.pack("b", value) if value < 0 else bytes([value]))
    for marker, fmt, low, high in ((0xCC, ">B", 0, 2**8 - 1), (0xCD, ">H", 0, 2**16 - 1), (0xCE, ">I", 0, 2**32 - 1),
                                   (0xCF, ">Q", 0, 2**64 - 1), (0xD0, ">b", -(2**7), 2**7 - 1),
                                   (0xD1, ">h", -(2**15), 2**15 - 1), (0xD2, ">i", -(2**31), 2**31 - 1),
                                   (0xD3, ">q", INT64_MIN, INT64_MAX)):
        if low <= value <= high:
            forms.append(bytes([marker]) + struct.pack(fmt, value))
    return forms


def _sized(raw: bytes, fix_marker: int | None, fix_max: int, markers: tuple[int, ...], rng: random.Random) -> bytes:
    forms = []
    if fix_marker is not None and len(raw) <= fix_max:
        forms.append(bytes([fix_marker | len(raw)]))
    for marker, fmt in zip(markers, (">B", ">H", ">I")):
        if marker and len(raw) < 2 ** (8 * struct.calcsize(fmt)):
            forms.append(bytes([marker]) + struct.pack(fmt, len(raw)))
    return rng.choice(forms) + raw


def loose_packb(value: Any, rng: random.Random, duplicates: bool = True) -> bytes:
    """msgpack of `value` with a random (valid, often wider than needed) encoding of every item."""
    if value is None:
        return b"\xc0"
    if value is True or value is False:
        return b"\xc3" if value else b"\xc2"
    if isinstance(value, int):
        return rng.choice(_int_forms(value))
    if isinstance(value, float):
        # float32 when it holds the value exactly (NaN and the infinities included): it decodes to the same float.
        exact = not math.isfinite(value) or (
            abs(value) < 3e38 and struct.unpack(">f", struct.pack(">f", value))[0] == value)
        if exact and rng.random() < 0.5:
            return b"\xca" + struct.pack(">f", value)
        return b"\xcb" + struct.pack(">d", value)
    if isinstance(value, str):
        return _sized(value.encode("utf-8"), 0xA0, 31, (0xD9, 0xDA, 0xDB), rng)
    if isinstance(value, bytes):
        return _sized(value, None, 0, (0xC4, 0xC5, 0xC6), rng)
    if isinstance(value, (list, tuple)):
        count = len(value)
        heads = ([bytes([0x90 | count])] if count < 16 else []) + [b"\xdc" + struct.pack(">H", count),
                                                                   b"\xdd" + struct.pack(">I", count)]
        return rng.choice(heads) + b"".join(loose_packb(item, rng, duplicates) for item in value)
    assert isinstance(value, dict)
    pairs = [loose_packb(key, rng, duplicates) + loose_packb(item, rng, duplicates) for key, item in value.items()]
    if duplicates and value and rng.random() < 0.3:
        # A decoy pair before the real one: the decoder keeps the first position and the last value.
        key = rng.choice(list(value))
        pairs.insert(0, loose_packb(key, rng, False) + loose_packb(rng.choice(INTERESTING), rng, False))
    count = len(pairs)
    forms = ([bytes([0x80 | count])] if count < 16 else []) + [b"\xde" + struct.pack(">H", count),
                                                               b"\xdf" + struct.pack(">I", count)]
    return rng.choice(forms) + b"".join(pairs)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


INTERESTING: list[Any] = [
    None, True, False, 0, 1, -1, 2, 3, 10**6, 10**6 + 1, 10**10, 10**10 + 1, INT64_MAX, 2**63, 2**64 - 1, INT64_MIN,
    0.0, 1.0, 2500.0, float("nan"), float("inf"), "", "01", "02", "03", "1", "310", "x\n", "k" * 64, "k" * 65,
    "510182", "51018", "5101820", "\uff15\uff11\uff10\uff11\uff18\uff12", "20250615", "20250231", "2102", "9001",
    b"", b"03", b"\x00" * 16, b"\x00" * 32, b"\x00" * 64, [], {}, [1], {"a": 1}, {"b": 1, "a": [{"d": 2, "c": 1}]},
    _nested(29), _nested(30), _nested(31), _nested(32),
]
KEY_POOL: list[Any] = [
    "feedetl_sn", "med_list_codg", "chrgitm_lv", "otc", "rxno", "cnt", "pric", "det_item_fee_sumamt", "bilg_dr_codg",
    "mdtrt_cert_type", "mdtrt_cert_no", "card_sn", "psn_no", "insutype", "insuplc_admdvs", "card_mac",
    "medfee_sumamt", "items", "opter", "x25519_pub", "setl_id", "omsgid", "oinfno", "stmt_date", "setl_cnt",
    "fund_pay_sumamt", "psn_cash_pay", "after", "limit", "", "a", "ab", "B", "_", "\x7f", "\x80", "\u00e9", "z",
    "\ue000", "\uffff", "\U00010000", b"k",
]
ENVELOPE_KEYS = ["infno", "msgid", "fixmedins_code", "mdtrtarea_admvs", "dev_no", "opter", "opter_type", "sign_no",
                 "inf_time", "input"]


def _containers(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = []
    if isinstance(tree, dict):
        found.append(path)
        for key, value in tree.items():
            found += _containers(value, (*path, key))
    elif isinstance(tree, list):
        found.append(path)
        for index, value in enumerate(tree):
            found += _containers(value, (*path, index))
    return found


def _at(tree: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        tree = tree[step]
    return tree


def mutate(tree: Any, rng: random.Random, count: int) -> Any:
    """`count` random edits anywhere in a deep copy of `tree` (replace, drop, add, reorder)."""
    tree = copy.deepcopy(tree)
    for _ in range(count):
        paths = [path for path in _containers(tree) if len(path) < 6]
        node = _at(tree, rng.choice(paths))
        action = rng.randrange(4)
        if isinstance(node, dict):
            keys = list(node)
            if action == 0 and keys:
                node[rng.choice(keys)] = copy.deepcopy(rng.choice(INTERESTING))
            elif action == 1 and keys:
                del node[rng.choice(keys)]
            elif action == 2:
                node[rng.choice(KEY_POOL + ENVELOPE_KEYS)] = copy.deepcopy(rng.choice(INTERESTING))
            else:
                items = list(node.items())
                rng.shuffle(items)
                node.clear()
                node.update(items)
        elif isinstance(node, list):
            if action in (0, 3) and node:
                node[rng.randrange(len(node))] = copy.deepcopy(rng.choice(INTERESTING))
            elif action == 1 and node:
                del node[rng.randrange(len(node))]
            else:
                node.append(copy.deepcopy(rng.choice(INTERESTING)))
    return tree


def _shuffled(tree: Any, rng: random.Random) -> Any:
    if isinstance(tree, dict):
        items = [(key, _shuffled(value, rng)) for key, value in tree.items()]
        rng.shuffle(items)
        return dict(items)
    if isinstance(tree, list):
        return [_shuffled(value, rng) for value in tree]
    return tree


INFNOS = sorted(VALID_INPUTS)


def _valid_envelope(infno: str, lines: int) -> dict[str, Any]:
    input_ = valid_input(infno)
    if "items" in input_ and lines > 1:
        first = input_["items"][0]
        input_["items"] = [{**first, "feedetl_sn": f"L{n:03d}"} for n in range(lines)]
        input_["medfee_sumamt"] = first["det_item_fee_sumamt"] * lines
    return envelope_dict(infno, input_)


# -- tests -----------------------------------------------------------------------------------------

@SETTINGS
@given(st.sampled_from(INFNOS), st.integers(1, 4), st.randoms(use_true_random=False))
def test_valid_requests_in_any_encoding_take_the_fast_path_and_answer_as_the_reference(
        infno: str, lines: int, rng: random.Random) -> None:
    env = _shuffled(_valid_envelope(infno, lines), rng)
    body = loose_packb(env, rng, duplicates=False)
    outcome = assert_same_pipeline(body)
    assert "'refused'" not in outcome
    decoded, proven = protocol.decode_request_envelope_proving_input(body)
    assert proven
    # A reordered or wider encoding of the same request is the same request for idempotency.
    assert protocol.fingerprint(decoded.infno, decoded.input) == spec_fingerprint(infno, env["input"])


@settings(max_examples=1500, derandomize=True, deadline=None)
@given(st.sampled_from(INFNOS), st.integers(1, 3), st.integers(1, 4), st.randoms(use_true_random=False))
def test_mutated_requests_answer_as_the_reference(infno: str, lines: int, edits: int, rng: random.Random) -> None:
    env = mutate(_valid_envelope(infno, lines), rng, edits)
    assert_same_pipeline(loose_packb(env, rng))


@SETTINGS
@given(st.sampled_from(INFNOS), st.randoms(use_true_random=False))
def test_mutated_input_only_answers_as_the_reference(infno: str, rng: random.Random) -> None:
    # Edits confined to `input`, so the envelope passes and parse_input's fast paths are reached.
    env = _valid_envelope(infno, 2)
    env["input"] = mutate(env["input"], rng, rng.randint(1, 3))
    assert_same_pipeline(loose_packb(env, rng))


@pytest.mark.parametrize("infno", ["2101", "2102", "2206", "2207", "1101"])
@pytest.mark.parametrize("field", ["mdtrt_cert_type", "mdtrt_cert_no", "card_sn", "psn_no", "insutype",
                                   "insuplc_admdvs", "card_mac", "medfee_sumamt", "items"])
def test_every_value_in_every_credential_and_amount_field(infno: str, field: str) -> None:
    for value in INTERESTING + ["04", "\n", "C1\nX", "k" * 63]:
        env = _valid_envelope(infno, 2)
        env["input"][field] = copy.deepcopy(value)
        assert_same_pipeline(msgpack.packb(env, use_bin_type=True))
        del env["input"][field]
        assert_same_pipeline(msgpack.packb(env, use_bin_type=True))


@pytest.mark.parametrize("field", ["feedetl_sn", "med_list_codg", "chrgitm_lv", "otc", "rxno", "cnt", "pric",
                                   "det_item_fee_sumamt", "bilg_dr_codg"])
def test_every_value_in_every_bill_line_field(field: str) -> None:
    for value in INTERESTING + ["04", "\n", "k" * 63, 1_000_000, 1_000_001]:
        for position in (0, 2):
            env = _valid_envelope("2102", 3)
            env["input"]["items"][position][field] = copy.deepcopy(value)
            assert_same_pipeline(msgpack.packb(env, use_bin_type=True))
            del env["input"]["items"][position][field]
            assert_same_pipeline(msgpack.packb(env, use_bin_type=True))


@SETTINGS
@given(st.lists(st.sampled_from(INTERESTING + ["mac", "sig", "S-0001", "k" * 64, b"body"]), min_size=0, max_size=6),
       st.randoms(use_true_random=False))
def test_frames_answer_as_the_reference(fields: list[Any], rng: random.Random) -> None:
    valid = [1, rng.choice(["mac", "sig"]), "S-0001", msgpack.packb(envelope_dict()), b""]
    valid[4] = b"\x00" * (64 if valid[1] == "sig" else 32)
    for frame in (fields, mutate(valid, rng, rng.randint(0, 2)), valid):
        data = loose_packb(frame, rng)
        fast = _outcome(lambda: protocol.decode_frame(data))
        assert repr(fast) == repr(_outcome(lambda: reference_decode_frame(data)))
        if fast[0] == "ok":
            assert_same_pipeline(fast[1].body)


def test_frame_with_trailing_bytes_or_ext_is_refused_as_the_reference() -> None:
    frame = msgpack.packb([1, "mac", "S1", b"body", b"\x00" * 32], use_bin_type=True)
    for data in (frame + b"\x00", frame[:-1], msgpack.packb([1, "mac", "S1", msgpack.ExtType(1, b"x"), b"\x00" * 32]),
                 msgpack.packb([1, "mac", "S1", b"body", b"\x00" * 32, 0]), b"", b"\xc1"):
        fast = _outcome(lambda: protocol.decode_frame(data))
        assert fast == _outcome(lambda: reference_decode_frame(data))
        assert fast[0] == "refused" and fast[1] == ErrCode.MALFORMED_FRAME


# -- canonical msgpack ---------------------------------------------------------------------------

class _Code(enum.IntEnum):
    TWO = 2


class _Word(str, enum.Enum):
    A = "a"


class _Key(str):
    """A str subclass as a map key: encodes as the str it is."""


ORDER_KEYS = st.sampled_from(["", "a", "ab", "b", "B", "_", "\x7f", "\x80", "\u00e9", "z", "\ue000", "\uffff",
                              "\U00010000", "\U0010ffff", "aa\x00", "a\x00"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(INT64_MIN, 2**64 - 1), st.floats(), st.text(max_size=4),
                    st.binary(max_size=4), st.sampled_from([0, 1, True, False, 0.0, 1.0, -0.0, _Code.TWO, _Word.A]))
TREES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(ORDER_KEYS, inner, max_size=5),
    st.dictionaries(ORDER_KEYS, inner, max_size=3).map(OrderedDict),
    st.dictionaries(ORDER_KEYS.map(_Key), inner, max_size=3)), max_leaves=25)


def _reference_canonical_packb(obj: Any) -> bytes:
    with fast_paths_off():
        return protocol.canonical_packb(obj)


def _in_key_order(obj: Any) -> Any:
    if type(obj) is dict:
        return {key: _in_key_order(obj[key]) for key in sorted(obj)}
    if type(obj) in (list, tuple):
        return type(obj)(_in_key_order(value) for value in obj)
    return obj


@settings(max_examples=800, derandomize=True, deadline=None)
@given(TREES)
def test_canonical_packb_is_spec_canonical_for_every_tree(tree: Any) -> None:
    expected = spec_canonical(tree)
    assert protocol.canonical_packb(tree) == expected
    assert _reference_canonical_packb(tree) == expected
    ordered = _in_key_order(tree)
    assert protocol.canonical_packb(ordered) == expected
    # What decoding the canonical bytes gives back (plain types, key order) packs to the same bytes.
    decoded = msgpack.unpackb(expected, raw=False)
    assert canonical._in_canonical_order(decoded)
    assert protocol.canonical_packb(decoded) == expected


def test_canonical_distinguishes_what_msgpack_distinguishes() -> None:
    # bool vs int, float vs int, str vs bin, int subclass vs int: SPEC keeps the msgpack type.
    for left, right in ((True, 1), (False, 0), (1.0, 1), (0.0, -0.0), ("a", b"a"), ([], {})):
        assert protocol.fingerprint("2102", {"k": left}) != protocol.fingerprint("2102", {"k": right})
    assert protocol.canonical_packb({"k": _Code.TWO}) == protocol.canonical_packb({"k": 2})
    assert protocol.canonical_packb({_Key("b"): 1, _Key("a"): 2}) == b"\x82\xa1a\x02\xa1b\x01"


def test_canonical_key_order_is_utf8_byte_order_across_planes() -> None:
    # U+E000..U+FFFF sort before U+10000 in UTF-8 (and by code point), after it in UTF-16.
    keys = ["\U00010000", "\uffff", "\ue000", "\u00e9", "z", "ab", "a", "B", ""]
    tree = {key: index for index, key in enumerate(keys)}
    expected = spec_canonical(tree)
    assert protocol.canonical_packb(tree) == expected
    assert protocol.canonical_packb(dict(reversed(list(tree.items())))) == expected
    decoded = msgpack.unpackb(expected, raw=False)
    assert list(decoded) == sorted(keys, key=lambda key: key.encode("utf-8"))
    assert canonical._in_canonical_order(decoded)


def test_duplicate_wire_keys_fingerprint_the_decoded_map() -> None:
    # {"b": 1, "a": 2, "b": 3} decodes to {"b": 3, "a": 2}: the fingerprint is of that map, sorted.
    body = b"\x83\xa1b\x01\xa1a\x02\xa1b\x03"
    decoded = msgpack.unpackb(body, raw=False)
    assert protocol.canonical_packb(decoded) == b"\x82\xa1a\x02\xa1b\x03" == spec_canonical(decoded)


def test_response_fields_encode_as_the_spec_canonical_envelope() -> None:
    output = {"setlinfo": {"z": 1, "a": [{"y": 2, "b": True}]}, "detlcutinfo": []}
    for msgid, out in ((None, None), ("M" * 30, output), ("M" * 30, None), (None, output)):
        fields = {"infcode": -2, "err_code": "X", "err_msg": "\u9519", "inf_refmsgid": "R" * 30,
                  "respond_time": 2**40, "warnings": ["W"]}
        if msgid is not None:
            fields["msgid"] = msgid
        if out is not None:
            fields["output"] = out
        encoded = protocol.encode_response_fields(-2, "X", "\u9519", msgid, "R" * 30, 2**40, out, ("W",))
        assert encoded == spec_canonical(fields)
        env = protocol.ResponseEnvelope(-2, "X", "\u9519", msgid, "R" * 30, 2**40, out, ("W",))
        assert protocol.encode_response_envelope(env) == encoded
