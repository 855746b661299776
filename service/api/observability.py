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

from service.api.errors import Handler
from service.common import metrics, tracing
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
async def trace_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The request's server span, in the trace its `traceparent` names (or a new one).

    By hand rather than opentelemetry-instrumentation-aiohttp-server: that one installs itself
    by subclassing web.Application, which aiohttp deprecates; and this one skips collecting
    attributes for spans nobody records (the default, without a collector)."""
    route = _route_of(request)
    if route in UNTRACED_ROUTES:
        return await handler(request)
    if not tracing.recording():
        token = otel_context.attach(tracing.unrecorded_context(request.headers.get("traceparent")))
        try:
            return await handler(request)
        finally:
            otel_context.detach(token)
    with _tracer.start_as_current_span(
        f"{request.method} {route}",
        context=propagate.extract(request.headers),
        kind=trace.SpanKind.SERVER,
    ) as span:
        response = await handler(request)
        if span.is_recording():
            span.set_attributes(
                {
                    "http.request.method": request.method,
                    "http.route": route,
                    "http.response.status_code": response.status,
                }
            )
        return response


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One access line and the HTTP metrics for every request, after the error map has turned
    any error into its answer."""
    started = time.perf_counter()
    response = await handler(request)
    elapsed = time.perf_counter() - started
    route = _route_of(request)
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
