"""Process-wide logging: one line per event, naming the work it belongs to.

Every line carries the correlation id and the trace id of the request or message being handled.
LOG_FORMAT=json writes one JSON object per line (`time`, `level`, `logger`, `message`,
`correlation_id`, `trace_id`, and `exception` with the traceback when there is one); text is
for people at a terminal. Customer data never goes into a message: log booking ids.

No customer e-mail address and no password belongs in a log. The code does not put them there
(engines hide statement parameters, a failed booking is told by its booking ids, settings keep
URLs and tokens secret); as a last guard, every formatted line, tracebacks included, has what
looks like an e-mail address or a URL's password masked. A PostgreSQL error's DETAIL, for one,
can quote a whole row ("Failing row contains (…, fan@example.com, …)").
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime

from aiohttp.http_exceptions import HttpProcessingError

from service.common import context
from service.common.encoding import to_json
from service.common.tracing import current_trace_id

# user@host.tld: local part and domain without spaces, quotes or brackets (so `@decorator`
# lines of a traceback, preceded by a space, stay as they are).
_EMAIL = re.compile(r"[^\s@\"'<>()\[\],;:]+@[^\s@\"'<>()\[\],;:]+\.[^\s@\"'<>()\[\],;:]+")
# scheme://user:password@host
_URL_PASSWORD = re.compile(r"(//[^:/@\s]*:)[^@\s]*@")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s %(trace_id)s] %(message)s"


class ContextFilter(logging.Filter):
    """Puts the current correlation id and trace id on every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = context.correlation_id.get()
        record.trace_id = current_trace_id()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": getattr(record, "correlation_id", context.NO_CORRELATION_ID),
            "trace_id": getattr(record, "trace_id", "-"),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return to_json(line)


def redact(line: str) -> str:
    """`line` with e-mail addresses and URL passwords masked."""
    if "@" not in line:
        return line
    return _EMAIL.sub("<e-mail>", _URL_PASSWORD.sub(r"\1***@", line))


class RedactingFormatter(logging.Formatter):
    """`inner`'s lines, redacted: the last guard, whatever the format."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self._inner.format(record))


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


def configure_logging(level: str, log_format: str = "auto") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    inner = JsonFormatter() if as_json else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(RedactingFormatter(inner))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientProtocolErrors) for f in server.filters):
        server.addFilter(ClientProtocolErrors())
    # The API writes its own access line per request (service/api/observability.py).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # aiormq logs every failed connect as an ERROR; the relay and the consumers log broker
    # outages themselves, once per state change, with what they were doing.
    logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
