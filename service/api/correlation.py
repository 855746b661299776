"""Correlation-ID: kept from the request (or made), echoed, logged, and carried on the event."""

from __future__ import annotations

from aiohttp import web

from service.api.errors import Handler
from service.common import context
from service.common.context import CORRELATION_HEADER

CORRELATION_ID = web.RequestKey("correlation_id", str)


def correlation_id_of(request: web.Request) -> str:
    return request[CORRELATION_ID]


@web.middleware
async def correlation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    correlation_id = context.correlation_id_from(request.headers.get(CORRELATION_HEADER))
    request[CORRELATION_ID] = correlation_id
    context.correlation_id.set(correlation_id)
    response = await handler(request)
    response.headers[CORRELATION_HEADER] = correlation_id
    return response
