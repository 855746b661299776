"""Correlation-ID: kept from the request (or made), echoed, logged, and carried on the event."""

from __future__ import annotations

from aiohttp import web

from service.common import context
from service.common.context import CORRELATION_HEADER

CORRELATION_ID = web.RequestKey("correlation_id", str)


def correlation_id_of(request: web.Request) -> str:
    return request[CORRELATION_ID]


def begin(request: web.Request) -> str:
    """The request's correlation id: kept from its header if it is one we can carry, else
    made; set for the request's handlers and its log lines. The caller echoes it."""
    correlation_id = context.correlation_id_from(request.headers.get(CORRELATION_HEADER))
    request[CORRELATION_ID] = correlation_id
    context.correlation_id.set(correlation_id)
    return correlation_id
