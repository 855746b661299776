"""What the API tells an operator: an access line and metrics per request, booking outcomes,
and what the booking transactions meet."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from prometheus_client import Counter, Histogram

from service.api import correlation
from service.api.errors import Handler
from service.common import metrics, tracing
from service.common.context import CORRELATION_HEADER
from service.db.engine import RetriesExhausted
from service.domain import (
    BatchDecision,
    ContentionExhausted,
    NotEnoughSeats,
    ShowNotFound,
    TooManyWaiting,
)

access_log = logging.getLogger("tickets.access")
UNMATCHED = "unmatched"  # a path no route serves: one label, however many such paths
UNTRACED_ROUTES = frozenset({"/health", "/ready", "/metrics"})  # probes: not worth a span
_tracer = trace.get_tracer("tickets.api")


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Around every request, in one layer (each middleware layer costs every request): the
    correlation id (kept or made, echoed), the trace context, and, once the error map inside has
    answered, one access line and the HTTP metrics.

    The server span is made by hand rather than by opentelemetry-instrumentation-aiohttp-server:
    that one installs itself by subclassing web.Application, which aiohttp deprecates. Without a
    collector nothing records spans, and the request gets its trace context without an SDK span
    (tracing.unrecorded_context): the SDK's cost, for nothing recorded, was ~8 % of a booking's
    CPU."""
    correlation_id = correlation.begin(request)
    route = _route_of(request)
    if route in UNTRACED_ROUTES:
        response = await _answer(request, handler, route)
    elif not tracing.recording():
        token = otel_context.attach(tracing.unrecorded_context(request.headers.get("traceparent")))
        try:
            response = await _answer(request, handler, route)
        finally:
            otel_context.detach(token)
    else:
        with _tracer.start_as_current_span(
            f"{request.method} {route}",
            context=propagate.extract(request.headers),
            kind=trace.SpanKind.SERVER,
        ) as span:
            response = await _answer(request, handler, route)
            span.set_attributes(
                {
                    "http.request.method": request.method,
                    "http.route": route,
                    "http.response.status_code": response.status,
                }
            )
    response.headers[CORRELATION_HEADER] = correlation_id
    return response


async def _answer(request: web.Request, handler: Handler, route: str) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    elapsed = time.perf_counter() - started
    _requests(request.method, route, response.status).inc()
    _duration(request.method, route).observe(elapsed)
    access_log.info(
        "%s %s -> %d in %.1f ms", request.method, request.path, response.status, elapsed * 1000
    )
    return response


def _route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


# Label lookups cost more than the increment: each (method, route, status) child is made once.
@lru_cache(maxsize=512)
def _requests(method: str, route: str, status: int) -> Counter:
    return metrics.HTTP_REQUESTS.labels(method, route, str(status))


@lru_cache(maxsize=128)
def _duration(method: str, route: str) -> Histogram:
    return metrics.HTTP_DURATION.labels(method, route)


_ACCEPTED = metrics.BOOKINGS.labels("accepted")
_REFUSED: dict[type[Exception], Counter] = {
    NotEnoughSeats: metrics.BOOKINGS.labels("rejected"),
    ShowNotFound: metrics.BOOKINGS.labels("unknown_show"),
    ContentionExhausted: metrics.BOOKINGS.labels("busy"),
    RetriesExhausted: metrics.BOOKINGS.labels("busy"),
    TooManyWaiting: metrics.BOOKINGS.labels("busy"),
}


@dataclass(slots=True)
class CountedBooking:
    replayed: bool = False  # answered from its Idempotency-Key: not a booking of its own


@contextlib.contextmanager
def counted_booking() -> Iterator[CountedBooking]:
    """Counts the outcome of the booking request made inside (tickets_bookings_total); a
    replayed answer counts as nothing."""
    counted = CountedBooking()
    try:
        yield counted
    except Exception as error:
        counter = _REFUSED.get(type(error))
        if counter is not None:
            counter.inc()
        raise
    if not counted.replayed:
        _ACCEPTED.inc()


class BookingMetrics:
    """A BookingObserver that keeps the booking transactions' metrics."""

    def retried(self) -> None:
        metrics.BOOKING_RETRIES.inc()

    def committed(self, decision: BatchDecision) -> None:
        metrics.BOOKING_TRANSACTIONS.inc()
        size = len(decision.accepted) + len(decision.rejected) + len(decision.unknown_show)
        size += len(decision.canceled) + len(decision.unchanged) + len(decision.missing)
        metrics.BOOKING_BATCH_SIZE.observe(size)
        if decision.canceled:  # a cancellation repeated finds its booking canceled: not counted
            metrics.CANCELLATIONS.inc(len(decision.canceled))
