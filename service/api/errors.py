"""The one map from errors to HTTP answers. Every error body is {"error": "<message>"}."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import ValidationError

from service.api.state import BOOKING_ID
from service.common.encoding import json_response, to_json
from service.common.outages import is_database_outage
from service.common.validation import describe
from service.db.booking import BookingFailed
from service.db.engine import RetriesExhausted
from service.domain import (
    BookingNotFound,
    BookingRequest,
    ContentionExhausted,
    DomainError,
    IdempotencyKeyReused,
    NotEnoughSeats,
    Outcome,
    OutcomeUnknown,
    ShowConflict,
    ShowNotFound,
    StoredAnswer,
    TooManyWaiting,
)

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

RETRY_AFTER_SECONDS = "1"

STATUS: dict[type[DomainError], int] = {
    NotEnoughSeats: 400,
    ShowNotFound: 404,
    BookingNotFound: 404,
    IdempotencyKeyReused: 422,
    ShowConflict: 409,
    ContentionExhausted: 503,
    TooManyWaiting: 503,
    OutcomeUnknown: 503,
}


class InvalidRequest(Exception):
    """The request is malformed; the message says what is wrong with it."""


class BodyTooSlow(Exception):
    """The request body did not arrive in time: 408, and the connection is closed."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request body did not arrive within {seconds:g} s")


class Unauthorized(Exception):
    """No valid bearer token for a route that needs one."""

    def __init__(self) -> None:
        super().__init__("this route needs an Authorization: Bearer <token> header")


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response({"error": message}, status=status, headers=headers)


def answer_for(request: BookingRequest, outcome: Outcome) -> StoredAnswer:
    """The answer to a decided booking request, exactly as it is sent: stored with the
    request's Idempotency-Key (in the booking's transaction) to be replayed as it was."""
    if outcome is None:
        body = {"booking_id": str(request.booking_id)}
        return StoredAnswer(201, to_json(body), request.booking_id)
    if isinstance(outcome, DomainError):
        return StoredAnswer(STATUS.get(type(outcome), 400), to_json({"error": str(outcome)}))
    raise TypeError(f"a booking request cannot be answered with {outcome!r}")


def _retry_later(message: str) -> web.Response:
    return error_response(503, message, {"Retry-After": RETRY_AFTER_SECONDS})


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as error:
        status = STATUS.get(type(error), 400)
        headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else None
        return error_response(status, _told(error, request), headers)
    except RetriesExhausted as error:
        log.warning("booking gave up: %s", error)
        return _retry_later(ContentionExhausted.message)
    except (ValidationError, InvalidRequest) as error:
        message = describe(error) if isinstance(error, ValidationError) else str(error)
        return error_response(400, message)
    except Unauthorized as error:
        return error_response(401, str(error), {"WWW-Authenticate": "Bearer"})
    except BodyTooSlow as error:
        response = error_response(408, str(error))
        response.force_close()  # what is left of the body would be read as the next request
        return response
    except web.HTTPException as error:
        return _http_error(error)
    except BookingFailed as error:
        # Its batch was logged once, traceback included; here one line per request.
        log.error("booking %s not made: %s", request.get(BOOKING_ID, "-"), error)
        return error_response(500, "internal error")
    except Exception as error:
        if is_database_outage(error):
            # The database is unreachable: a retryable condition, not a bug in the request.
            log.error("database unavailable on %s %s: %r", request.method, request.path, error)
            return _retry_later("database unavailable")
        booking = request.get(BOOKING_ID)
        named = f" (booking {booking})" if booking else ""
        log.exception("unhandled error on %s %s%s", request.method, request.path, named)
        return error_response(500, "internal error")


def _told(error: DomainError, request: web.Request) -> str:
    """The error's message; an unknown outcome names the booking, whose id the client has not
    been given yet, and how to find out about it (asking again could book twice)."""
    booking = request.get(BOOKING_ID)
    if isinstance(error, OutcomeUnknown) and booking is not None:
        return f"{error}; GET /bookings/{booking} tells"
    return str(error)


def _http_error(error: web.HTTPException) -> web.StreamResponse:
    """aiohttp's own answers (404 route, 405, 413 body too large) in our JSON shape."""
    if error.status < 400:
        raise error
    message = error.text if error.text and error.content_type == "text/plain" else error.reason
    kept = {k: v for k, v in error.headers.items() if k in ("Allow", "Retry-After")}
    return error_response(error.status, message.removeprefix(f"{error.status}: "), kept)
