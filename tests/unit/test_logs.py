"""The last guard of the logs: e-mail addresses and URL passwords are masked in every line,
tracebacks included; a client's malformed HTTP is one line, not a traceback."""

from __future__ import annotations

import io
import logging

from aiohttp.http_exceptions import BadHttpMessage

from service.common.logs import ClientProtocolErrors, ContextFilter, RedactingFormatter, redact
from service.db.booking import BookingFailed, error_kind
from service.db.engine import create_engine


def test_emails_and_url_passwords_are_masked() -> None:
    line = (
        "DETAIL: Failing row contains (1, fan.42+x@sub.example.co.uk, 2) "
        "postgresql+asyncpg://app:s3cr3t@db:5432/tickets amqp://u:p%40ss@mq/"
    )
    masked = redact(line)
    assert "fan.42" not in masked and "s3cr3t" not in masked and "p%40ss" not in masked
    assert "(1, <e-mail>, 2)" in masked
    assert "postgresql+asyncpg://app:***@db:5432/tickets" in masked


def test_lines_without_them_are_left_alone() -> None:
    for line in ["    @web.middleware", "booking 6c0f not made", "a @ b", "x@y"]:
        assert redact(line) == line


def test_a_traceback_is_masked_too() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(ContextFilter())
    handler.setFormatter(RedactingFormatter(logging.Formatter("%(message)s")))
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    try:
        try:
            raise ValueError("row (fan@example.com)")
        except ValueError:
            log.exception("failed for someone@example.com")
    finally:
        log.removeHandler(handler)
    assert "example.com" not in out.getvalue()
    assert "ValueError: row (<e-mail>)" in out.getvalue()


def test_a_clients_malformed_http_is_one_info_line() -> None:
    error = BadHttpMessage("Invalid header value char: b'X-Evil: fan@example.com\\x00'")
    record = logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("127.0.0.1",),
        (BadHttpMessage, error, None),
    )
    assert ClientProtocolErrors().filter(record)
    assert (record.levelno, record.exc_info) == (logging.INFO, None)
    assert record.getMessage() == "bad HTTP request: BadHttpMessage (400)"


def test_every_engine_hides_statement_parameters() -> None:
    engine = create_engine("postgresql+asyncpg://app:pw@127.0.0.1/tickets")
    assert engine.sync_engine.hide_parameters
    assert "pw" not in repr(engine)


def test_a_failed_booking_is_told_by_kind_and_ids_not_by_message() -> None:
    class CheckViolation(Exception):
        sqlstate = "23514"
        constraint_name = "bookings_check"

    kind = error_kind(CheckViolation("Failing row contains (fan@example.com)"))
    assert kind == "CheckViolation, SQLSTATE 23514, constraint bookings_check"
    assert "fan@" not in str(BookingFailed(kind, []))
