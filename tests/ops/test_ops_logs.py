"""gateway.logs: one JSON line per event, card numbers masked, secrets never written."""

import io
import json
import re

import pytest

from gateway.logs import (
    REDACTED,
    JsonLogger,
    format_ts,
    is_secret_name,
    mask_card_no,
    sanitize,
)

# 2024-05-01 04:00:00.123 UTC (12:00:00.123 in Asia/Shanghai).
FIXED_EPOCH_S = 1714536000.123
TS_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def make_logger(level: str = "info") -> tuple[JsonLogger, io.StringIO]:
    stream = io.StringIO()
    return JsonLogger(stream, level=level, clock=lambda: FIXED_EPOCH_S), stream


def lines_of(stream: io.StringIO) -> list[dict]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_one_json_line_per_event_with_the_fixed_shape() -> None:
    log, stream = make_logger()
    log.info("tx.answered", infno="2102", infcode=0, duration_ms=3)
    log.warning("journal.slow_fsync", fsync_ms=120)
    first, second = lines_of(stream)
    assert first == {
        "ts": "2024-05-01T04:00:00.123Z",
        "level": "info",
        "event": "tx.answered",
        "fields": {"infno": "2102", "infcode": 0, "duration_ms": 3},
    }
    assert second["level"] == "warning" and second["fields"] == {"fsync_ms": 120}


@pytest.mark.parametrize(
    ("epoch_s", "expected"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (FIXED_EPOCH_S, "2024-05-01T04:00:00.123Z"),
        (1714536000.9999, "2024-05-01T04:00:00.999Z"),  # truncated, never rounded up
    ],
)
def test_timestamps_are_utc_iso8601_with_milliseconds(epoch_s: float, expected: str) -> None:
    assert format_ts(epoch_s) == expected
    assert TS_PATTERN.match(expected)


def test_real_clock_timestamps_match_the_pattern() -> None:
    stream = io.StringIO()
    JsonLogger(stream).info("process.started")
    (line,) = lines_of(stream)
    assert TS_PATTERN.match(line["ts"]), line["ts"]


@pytest.mark.parametrize(
    ("card_no", "masked"),
    [
        ("6222021234567890", "************7890"),
        ("51018200000001234", "*************1234"),
        ("12345", "*2345"),
        ("1234", "****"),
        ("", ""),
    ],
)
def test_mask_card_no_keeps_only_the_last_four(card_no: str, masked: str) -> None:
    assert mask_card_no(card_no) == masked
    assert len(masked) == len(card_no)


def test_card_fields_are_masked_in_log_lines_nested_too() -> None:
    log, stream = make_logger()
    log.info(
        "tx.credential",
        card_no="6222021234567890",
        input={"mdtrt_cert_no": "eyJhbGciOiJFZERTQSJ9abcd", "card_sn": "SN00998877"},
    )
    (line,) = lines_of(stream)
    text = stream.getvalue()
    assert line["fields"]["card_no"] == "************7890"
    assert line["fields"]["input"]["mdtrt_cert_no"].endswith("abcd")
    assert line["fields"]["input"]["card_sn"] == "******8877"
    for secret in ("6222021234567890", "eyJhbGciOiJFZERTQSJ9", "SN00998877"):
        assert secret not in text


@pytest.mark.parametrize(
    "name",
    ["token", "admin_token", "token_sha256", "session_key", "private_key", "privateKey",
     "card_mac", "mac", "client_secret", "Authorization", "password", "master-key", "sig"],
)
def test_secret_like_names_are_recognised(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name", ["infno", "machine", "monkey", "msgid", "err_code", "fixmedins_code", "dev_no", "tokens_used_ms"]
)
def test_ordinary_names_are_not_secret(name: str) -> None:
    assert not is_secret_name(name)


def test_secret_fields_are_redacted_everywhere() -> None:
    log, stream = make_logger()
    log.error(
        "admin.login_failed",
        token="tok-very-secret",
        headers={"Authorization": "Bearer tok-very-secret", "host": "gw"},
        admins=[{"name": "li", "token_sha256": "ab" * 32}],
        session_key=b"\x01" * 32,
    )
    text = stream.getvalue()
    (line,) = lines_of(stream)
    fields = line["fields"]
    assert fields["token"] == REDACTED
    assert fields["headers"] == {"Authorization": REDACTED, "host": "gw"}
    assert fields["admins"] == [{"name": "li", "token_sha256": REDACTED}]
    assert fields["session_key"] == REDACTED
    assert "tok-very-secret" not in text and "ab" * 32 not in text


def test_bytes_are_never_written_raw() -> None:
    assert sanitize({"body": b"\x00\xff" * 8}) == {"body": "<bin 16 bytes>"}
    assert sanitize({"x": bytearray(3)}) == {"x": "<bin 3 bytes>"}


def test_values_that_json_cannot_hold_become_strings() -> None:
    assert sanitize({"ratio": float("nan"), "when": object}) == {
        "ratio": "nan",
        "when": str(object),
    }
    assert sanitize({"ids": ("a", "b")}) == {"ids": ["a", "b"]}


def test_request_correlation_by_msgid() -> None:
    log, stream = make_logger()
    msgid = "P51018200001202405011200000001"
    req_log = log.for_request(msgid, infno="2102", dev_no="T001")
    req_log.info("tx.received")
    req_log.info("tx.answered", infcode=0)
    log.info("unrelated")
    first, second, third = lines_of(stream)
    assert first["msgid"] == second["msgid"] == msgid
    assert second["fields"] == {"infno": "2102", "dev_no": "T001", "infcode": 0}
    assert "msgid" not in third


def test_msgid_passed_as_a_field_is_lifted_to_the_top() -> None:
    log, stream = make_logger()
    log.info("tx.rejected", msgid="M1", err_code="MSGID_REUSED")
    (line,) = lines_of(stream)
    assert line["msgid"] == "M1" and line["fields"] == {"err_code": "MSGID_REUSED"}


def test_fields_cannot_overwrite_the_envelope_keys() -> None:
    log, stream = make_logger()
    log.info("tx.odd", ts="forged", level="error", event="forged")
    (line,) = lines_of(stream)
    assert line["ts"] == "2024-05-01T04:00:00.123Z"
    assert line["level"] == "info" and line["event"] == "tx.odd"
    assert line["fields"] == {"ts": "forged", "level": "error", "event": "forged"}


def test_bind_adds_fields_without_changing_the_parent() -> None:
    log, stream = make_logger()
    child = log.bind(component="journal")
    child.info("journal.batch", records=12)
    log.info("server.started")
    first, second = lines_of(stream)
    assert first["fields"] == {"component": "journal", "records": 12}
    assert second["fields"] == {}


def test_level_filter_drops_lower_levels() -> None:
    log, stream = make_logger(level="warning")
    log.debug("a")
    log.info("b")
    log.warning("c")
    log.error("d")
    assert [line["event"] for line in lines_of(stream)] == ["c", "d"]
    assert not log.enabled("info") and log.enabled("error")


def test_unknown_levels_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        JsonLogger(io.StringIO(), level="verbose")
    log, _ = make_logger()
    with pytest.raises(ValueError, match="unknown log level"):
        log.log("fatal", "x")


def test_exception_lines_carry_type_message_and_traceback() -> None:
    log, stream = make_logger()
    try:
        raise OSError(28, "No space left on device")
    except OSError as exc:
        log.exception("journal.write_failed", exc, op=41)
    (line,) = lines_of(stream)
    assert line["level"] == "error"
    assert line["fields"]["exc_type"] == "OSError"
    assert "No space left" in line["fields"]["exc_msg"]
    assert "Traceback" in line["fields"]["traceback"]
    assert line["fields"]["op"] == 41


def test_non_ascii_text_is_kept_readable() -> None:
    log, stream = make_logger()
    log.info("tx.rejected", err_msg="机构已暂停")
    assert "机构已暂停" in stream.getvalue()


def test_a_broken_stream_never_raises_and_is_counted() -> None:
    stream = io.StringIO()
    log = JsonLogger(stream, clock=lambda: FIXED_EPOCH_S)
    child = log.for_request("M1")
    stream.close()
    log.info("a")
    child.info("b")
    assert log.dropped_lines == 2 and child.dropped_lines == 2


def test_default_stream_is_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    JsonLogger(clock=lambda: FIXED_EPOCH_S).info("process.started", pid=7)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert json.loads(captured.err)["fields"] == {"pid": 7}
