"""Process-wide logging: one line per event, naming the work it belongs to.

Every line carries the correlation id and the trace id of the request or message being handled.
LOG_FORMAT=json writes one JSON object per line (`time`, `level`, `logger`, `message`,
`correlation_id`, `trace_id`, and `exception` with the traceback when there is one); text is
for people at a terminal. Customer data never goes into a message: log booking ids.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from service.common import context
from service.common.tracing import current_trace_id

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
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str, log_format: str = "auto") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    handler.setFormatter(JsonFormatter() if as_json else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The API writes its own access line per request (service/api/observability.py).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # aiormq logs every failed connect as an ERROR; the relay and the consumers log broker
    # outages themselves, once per state change, with what they were doing.
    logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
