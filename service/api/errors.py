"""The one map from errors to HTTP answers. Every error body is {"error": "<message>"}."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import ValidationError

from service.common.outages import is_database_outage
from service.common.validation import describe
from service.db.engine import RetriesExhausted
from service.domain import (
    BookingNotFound,
    BookingRequest,
    ContentionExhausted,
    DomainError,
    IdempotencyKeyReused,
    NotEnoughSeats,
    Outcome,
    ShowNotFound,
    StoredAnswer,
)

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

RETRY_AFTER_SECONDS = "1"

STATUS: dict[type[DomainError], int] = {
    NotEnoughSeats: 400,
    ShowNotFound: 404,
    BookingNotFound: 404,
    IdempotencyKeyReused: 422,
    ContentionExhausted: 503,
}


class InvalidRequest(Exception):
    """The request is malformed; the message says what is wrong with it."""


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def answer_for(request: BookingRequest, outcome: Outcome) -> StoredAnswer:
    """The answer to a decided booking request, exactly as it is sent: stored with the
    request's Idempotency-Key (in the booking's transaction) to be replayed as it was."""
    if outcome is None:
        body = {"booking_id": str(request.booking_id)}
        return StoredAnswer(201, json.dumps(body), request.booking_id)
    if isinstance(outcome, DomainError):
        return StoredAnswer(STATUS.get(type(outcome), 400), json.dumps({"error": str(outcome)}))
    raise TypeError(f"a booking request cannot be answered with {outcome!r}")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as error:
        status = STATUS.get(type(error), 400)
        headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else None
        return error_response(status, str(error), headers)
    except RetriesExhausted as error:
        log.warning("booking gave up: %s", error)
        headers = {"Retry-After": RETRY_AFTER_SECONDS}
        return error_response(503, ContentionExhausted.message, headers)
    except ValidationError as error:
        return error_response(400, describe(error))
    except InvalidRequest as error:
        return error_response(400, str(error))
    except web.HTTPException as error:
        # aiohttp's own answers (404 route, 405, 413 body too large) in our JSON shape.
        if error.status < 400:
            raise
        message = error.text if error.text and error.content_type == "text/plain" else error.reason
        kept = {k: v for k, v in error.headers.items() if k in ("Allow", "Retry-After")}
        return error_response(error.status, message.removeprefix(f"{error.status}: "), kept)
    except Exception as error:
        if is_database_outage(error):
            # The database is unreachable: a retryable condition, not a bug in the request.
            log.error("database unavailable on %s %s: %r", request.method, request.path, error)
            headers = {"Retry-After": RETRY_AFTER_SECONDS}
            return error_response(503, "database unavailable", headers)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error")
