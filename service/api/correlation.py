"""Correlation-ID: kept from the request (or made), echoed, logged, and carried on the event."""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

from aiohttp import web

from service.api.errors import Handler

HEADER = "Correlation-ID"
# Anything a client sends ends up in logs and on the broker: keep it short and printable.
_VALID = re.compile(r"^[A-Za-z0-9._:/@+=-]{1,128}$")
current: ContextVar[str] = ContextVar("correlation_id", default="-")
CORRELATION_ID = web.RequestKey("correlation_id", str)


class CorrelationFilter(logging.Filter):
    """Puts the current request's correlation id on every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = current.get()
        return True


def correlation_id_of(request: web.Request) -> str:
    return request[CORRELATION_ID]


@web.middleware
async def correlation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get(HEADER, "")
    correlation_id = given if _VALID.match(given) else f"gen-{uuid.uuid4()}"
    request[CORRELATION_ID] = correlation_id
    current.set(correlation_id)
    response = await handler(request)
    response.headers[HEADER] = correlation_id
    return response
