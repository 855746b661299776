"""Process-wide logging: one line per event, with the correlation id of the work it belongs to.

No customer e-mail address and no password belongs in a log. The code does not put them there
(engines hide statement parameters, a failed booking is told by its booking ids, settings keep
URLs and tokens secret); as a last guard, every formatted line, tracebacks included, has what
looks like an e-mail address or a URL's password masked. A PostgreSQL error's DETAIL, for one,
can quote a whole row ("Failing row contains (…, fan@example.com, …)").
"""

from __future__ import annotations

import logging
import re

from aiohttp.http_exceptions import HttpProcessingError

from service.common.context import CorrelationFilter

# user@host.tld: local part and domain without spaces, quotes or brackets (so `@decorator`
# lines of a traceback, preceded by a space, stay as they are).
_EMAIL = re.compile(r"[^\s@\"'<>()\[\],;:]+@[^\s@\"'<>()\[\],;:]+\.[^\s@\"'<>()\[\],;:]+")
# scheme://user:password@host
_URL_PASSWORD = re.compile(r"(//[^:/@\s]*:)[^@\s]*@")


def redact(line: str) -> str:
    """`line` with e-mail addresses and URL passwords masked."""
    if "@" not in line:
        return line
    return _EMAIL.sub("<e-mail>", _URL_PASSWORD.sub(r"\1***@", line))


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class ClientProtocolErrors(logging.Filter):
    """aiohttp logs every malformed HTTP request it answers 400 (a NUL in a header, a bad
    request line) as an ERROR with a traceback: a cheap way for anyone to flood the logs. It is
    the client's mistake, already answered: one INFO line, without the request's bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg = f"bad HTTP request: {type(error).__name__} ({error.code})"
            record.args = None
            record.exc_info = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(CorrelationFilter())
    handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log would print a line per booking during a sale; keep it at WARNING.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientProtocolErrors) for f in server.filters):
        server.addFilter(ClientProtocolErrors())
    # aiormq logs every failed connect as an ERROR; the relay and the consumers log broker
    # outages themselves, once per state change, with what they were doing.
    logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
