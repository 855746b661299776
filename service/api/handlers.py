"""Thin handlers: call one operation, answer. A handler with a body gets it parsed (routes.py
reads it, bodies.py parses it); errors go to the one map in errors.py."""

from __future__ import annotations

import uuid

from aiohttp import web

from service.api.correlation import correlation_id_of
from service.api.errors import error_response
from service.api.observability import counted_booking
from service.api.schemas import BookTicketsBody, NewShowBody
from service.api.state import BOOKER, BOOKING_ID, DOCS_PAGE, OPENAPI, READINESS, SESSIONS
from service.common.tracing import current_traceparent
from service.db import booking, shows
from service.domain import BookingNotFound, BookingRequest, ShowNotFound


def _uuid_in_path(request: web.Request, name: str, not_found: Exception) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise not_found from None


async def post_show(request: web.Request, body: NewShowBody) -> web.Response:
    show = shows.NewShow(
        body.dead_nation_id, body.number_of_tickets, body.start_time, body.title, body.venue
    )
    show_id, created = await shows.create_show(request.app[SESSIONS], show)
    return web.json_response({"show_id": str(show_id)}, status=201 if created else 200)


async def get_show(request: web.Request) -> web.Response:
    show_id = _uuid_in_path(request, "show_id", ShowNotFound())
    return web.json_response(await shows.get_show(request.app[SESSIONS], show_id))


async def post_book_tickets(request: web.Request, body: BookTicketsBody) -> web.Response:
    wanted = BookingRequest(
        show_id=body.show_id,
        number_of_tickets=body.number_of_tickets,
        customer_email=str(body.customer_email),
        correlation_id=correlation_id_of(request),
        traceparent=current_traceparent(),
    )
    request[BOOKING_ID] = wanted.booking_id
    with counted_booking():
        await request.app[BOOKER].book(wanted)
    return web.json_response({"booking_id": str(wanted.booking_id)}, status=201)


async def get_booking(request: web.Request) -> web.Response:
    booking_id = _uuid_in_path(request, "booking_id", BookingNotFound())
    return web.json_response(await booking.get_booking(request.app[SESSIONS], booking_id))


async def ready(request: web.Request) -> web.Response:
    problem = await request.app[READINESS].problem()
    if problem is not None:
        return error_response(503, problem)
    return web.json_response({"status": "ready"})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=request.app[DOCS_PAGE], content_type="text/html")
