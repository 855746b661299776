"""Thin handlers: call one operation, answer. A handler with a body gets it parsed (routes.py
reads it, bodies.py parses it); errors go to the one map in errors.py."""

from __future__ import annotations

import re
import uuid
from typing import Any

from aiohttp import web

from service.api.correlation import correlation_id_of
from service.api.errors import InvalidRequest, error_response
from service.api.observability import counted_booking
from service.api.schemas import BookTicketsBody, NewShowBody
from service.api.state import BOOKER, BOOKING_ID, DOCS_PAGE, OPENAPI, READINESS, SESSIONS
from service.common.encoding import json_response
from service.common.tracing import current_traceparent
from service.db import booking, shows
from service.domain import (
    Booking,
    BookingNotFound,
    BookingRequest,
    CancelRequest,
    IdempotencyKey,
    ShowNotFound,
    StoredAnswer,
)

IDEMPOTENCY_KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
# 1-255 visible ASCII characters: what fits the key column and survives any proxy unchanged.
_VALID_KEY = re.compile(r"[\x21-\x7e]{1,255}")


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
    return json_response({"show_id": str(show_id)}, status=201 if created else 200)


async def get_show(request: web.Request) -> web.Response:
    show_id = _uuid_in_path(request, "show_id", ShowNotFound())
    return json_response(await shows.get_show(request.app[SESSIONS], show_id))


def _idempotency_key(request: web.Request) -> str | None:
    keys = request.headers.getall(IDEMPOTENCY_KEY, [])
    if not keys:
        return None
    if len(keys) > 1 or not _VALID_KEY.fullmatch(keys[0]):
        raise InvalidRequest(f"{IDEMPOTENCY_KEY} must be 1-255 visible ASCII characters, once")
    return keys[0]


async def post_book_tickets(request: web.Request, body: BookTicketsBody) -> web.Response:
    key = _idempotency_key(request)
    wanted = BookingRequest(
        show_id=body.show_id,
        number_of_tickets=body.number_of_tickets,
        customer_email=str(body.customer_email),
        correlation_id=correlation_id_of(request),
        key=IdempotencyKey(key, body.fingerprint()) if key is not None else None,
        traceparent=current_traceparent(),
    )
    request[BOOKING_ID] = wanted.booking_id
    with counted_booking() as counted:
        replayed = await request.app[BOOKER].book(wanted)
        counted.replayed = replayed is not None
    if replayed is not None:
        return _replay(replayed)
    return json_response({"booking_id": str(wanted.booking_id)}, status=201)


def _replay(answer: StoredAnswer) -> web.Response:
    return web.Response(
        status=answer.status,
        text=answer.body,
        content_type="application/json",
        headers={REPLAYED: "true"},
    )


async def get_booking(request: web.Request) -> web.Response:
    booking_id = _uuid_in_path(request, "booking_id", BookingNotFound())
    found = await booking.find_booking(request.app[SESSIONS], booking_id)
    return json_response(_booking_json(found))


async def delete_booking(request: web.Request) -> web.Response:
    """Cancel a booking; cancelling it again answers the same and changes nothing."""
    booking_id = _uuid_in_path(request, "booking_id", BookingNotFound())
    request[BOOKING_ID] = booking_id
    found = await booking.find_booking(request.app[SESSIONS], booking_id)
    if not found.is_canceled:
        # Through the show's booking lane: cancellations share the bookings' transactions.
        cancel = CancelRequest(
            booking_id,
            found.show_id,
            correlation_id_of(request),
            traceparent=current_traceparent(),
        )
        found = await request.app[BOOKER].cancel(cancel)
    return json_response(_booking_json(found))


def _booking_json(found: Booking) -> dict[str, Any]:
    return {
        "booking_id": str(found.booking_id),
        "show_id": str(found.show_id),
        "number_of_tickets": found.number_of_tickets,
        "customer_email": found.customer_email,
        "created_at": found.created_at.isoformat(),
        "status": found.status,
        "canceled_at": found.canceled_at.isoformat() if found.canceled_at else None,
    }


async def ready(request: web.Request) -> web.Response:
    problem = await request.app[READINESS].problem()
    if problem is not None:
        return error_response(503, problem)
    return json_response({"status": "ready"})


async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=request.app[DOCS_PAGE], content_type="text/html")
