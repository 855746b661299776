"""Every route of the API, described once: app.py registers these, openapi.py documents them.

A route cannot exist without its documentation: the app serves exactly ROUTES, and the OpenAPI
document is generated from the same entries and the pydantic models they name (its request
body is the model the route parses with; its answers name their models). To add a route, write
its handler and add a Route below with its answers. Answers every route of a kind shares are
added by openapi.py: a route with a body can also answer 400, 408 and 413; one that `uses_database`
503 with Retry-After; one that `needs_token` 401 (when SHOWS_API_TOKEN is set). A request header
a route reads: a Header in its `headers`; a response header: in its Answer's `headers`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from service.api import handlers
from service.api.bodies import read_json
from service.api.errors import Handler
from service.api.schemas import (
    Booking,
    BookingCreated,
    BookTicketsBody,
    ErrorBody,
    Health,
    NewShowBody,
    Show,
    ShowCreated,
    Status,
)
from service.api.state import BODY_TIMEOUT
from service.common import probes

M = TypeVar("M", bound=BaseModel)
JsonSchema = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Header:
    name: str
    description: str
    schema: JsonSchema = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True, slots=True)
class Link:
    """Where an answer leads (an OpenAPI link): `target` is "METHOD /path"; `parameters` and
    `body` take values from the answer ("$response.body#/show_id"). Clients and schemathesis'
    stateful phase follow them: a show is created, then booked and read."""

    name: str
    target: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    description: str
    body: type[BaseModel] | JsonSchema = ErrorBody  # a model, or a schema for what is not one
    headers: tuple[Header, ...] = ()
    media_type: str = "application/json"
    links: tuple[Link, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    answers: Mapping[int, Answer]
    body: type[BaseModel] | None = None  # the JSON body the handler is given, parsed
    headers: tuple[Header, ...] = ()
    uses_database: bool = False
    needs_token: bool = False


def with_body(
    model: type[M], handler: Callable[[web.Request, M], Awaitable[web.StreamResponse]]
) -> Handler:
    """`handler` given the request's body parsed as `model` (bodies.read_json's rules)."""

    async def parse_then_handle(request: web.Request) -> web.StreamResponse:
        return await handler(request, await read_json(request, model, request.app[BODY_TIMEOUT]))

    return parse_then_handle


RETRY_AFTER = Header("Retry-After", "seconds to wait before retrying", {"type": "string"}, True)
SHOW_NOT_FOUND = Answer("no such show (or not a show id)")
BOOKING_NOT_FOUND = Answer("no such booking (or not a booking id)")
BUSY = Answer(
    "not booked, retry: the show is busy (contention retries ran out, or the request waited "
    "longer than BOOKING_MAX_WAIT), too many bookings wait (BOOKING_MAX_QUEUED), or the "
    "database is unavailable",
    headers=(RETRY_AFTER,),
)

# With a booking id in its error: the outcome is unknown (service/db/lost_commit.py).
UNAVAILABLE = Answer(
    BUSY.description + "; or, when the error names a booking id, the database stopped answering"
    " while the request was being committed and could not be asked since: it may have been"
    " done, and GET /bookings/{booking_id} tells (booking again could book twice)",
    headers=(RETRY_AFTER,),
)

SHOW_LINKS = (
    Link("GetShow", "GET /shows/{show_id}", {"show_id": "$response.body#/show_id"}),
    Link("BookTickets", "POST /book-tickets", body={"show_id": "$response.body#/show_id"}),
)
BOOKING_LINKS = (
    Link("GetBooking", "GET /bookings/{booking_id}", {"booking_id": "$response.body#/booking_id"}),
    Link(
        "CancelBooking",
        "DELETE /bookings/{booking_id}",
        {"booking_id": "$response.body#/booking_id"},
    ),
)
IDEMPOTENCY_KEY = Header(
    "Idempotency-Key",
    "1-255 visible ASCII characters (else 400). The same key and body again get the first "
    "answer again (Idempotent-Replayed: true) and book nothing; another body: 422. Kept "
    "IDEMPOTENCY_KEY_TTL seconds.",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
)
REPLAYED = Header(
    "Idempotent-Replayed",
    "`true`: the answer given before to this Idempotency-Key, replayed; nothing was booked now",
    {"type": "string", "enum": ["true"]},
)

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/shows",
        with_body(NewShowBody, handlers.post_show),
        "Create a show (the same dead_nation_id with the same details: the same show)",
        {
            201: Answer("created", ShowCreated, links=SHOW_LINKS),
            200: Answer(
                "this dead_nation_id exists with these details: its show",
                ShowCreated,
                links=SHOW_LINKS,
            ),
            409: Answer("this dead_nation_id exists with other details"),
        },
        body=NewShowBody,
        uses_database=True,
        needs_token=True,
    ),
    Route(
        "GET",
        "/shows/{show_id}",
        handlers.get_show,
        "A show with its tickets booked and available",
        {200: Answer("the show", Show), 404: SHOW_NOT_FOUND},
        uses_database=True,
    ),
    Route(
        "POST",
        "/book-tickets",
        with_body(BookTicketsBody, handlers.post_book_tickets),
        "Book tickets for a show",
        {
            201: Answer(
                "booked (or, replayed for its Idempotency-Key, booked before)",
                BookingCreated,
                headers=(REPLAYED,),
                links=BOOKING_LINKS,
            ),
            400: Answer(
                'invalid body or Idempotency-Key, or {"error": "not enough seats available"}',
                headers=(REPLAYED,),
            ),
            404: Answer("no such show (or not a show id)", headers=(REPLAYED,)),
            422: Answer("this Idempotency-Key was used with a different body; nothing booked"),
            503: UNAVAILABLE,
        },
        body=BookTicketsBody,
        headers=(IDEMPOTENCY_KEY,),
        uses_database=True,
    ),
    Route(
        "GET",
        "/bookings/{booking_id}",
        handlers.get_booking,
        "A booking, confirmed or canceled",
        {200: Answer("the booking", Booking), 404: BOOKING_NOT_FOUND},
        uses_database=True,
    ),
    Route(
        "DELETE",
        "/bookings/{booking_id}",
        handlers.delete_booking,
        "Cancel a booking: its tickets go back on sale, a BookingCanceled event follows",
        {
            200: Answer("the booking, canceled (now or before: a repeat changes nothing)", Booking),
            404: BOOKING_NOT_FOUND,
            503: UNAVAILABLE,
        },
        uses_database=True,
    ),
    Route(
        "GET",
        "/health",
        probes.health,
        "The process runs",
        {200: Answer("ok, and which process answered", Health)},
    ),
    Route(
        "GET",
        "/ready",
        handlers.ready,
        "PostgreSQL answers within 2 s",
        {200: Answer("ready", Status), 503: Answer("PostgreSQL does not answer")},
    ),
    Route(
        "GET",
        "/metrics",
        probes.metrics,
        "Prometheus metrics (with API_WORKERS > 1: every worker's)",
        {200: Answer("the text exposition format", {"type": "string"}, media_type="text/plain")},
    ),
    Route(
        "GET",
        "/openapi.json",
        handlers.openapi,
        "This document (OpenAPI 3.1)",
        {200: Answer("the OpenAPI document", {"type": "object"})},
    ),
    Route(
        "GET",
        "/docs",
        handlers.docs,
        "This document as a page to read (no scripts, works offline)",
        {200: Answer("an HTML page", {"type": "string"}, media_type="text/html")},
    ),
)
