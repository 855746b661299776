"""The app factory: every resource the API uses is made and closed here, in plain sight."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from service.api import handlers
from service.api.correlation import correlation_middleware
from service.api.errors import answer_for, error_middleware
from service.api.observability import (
    BookingMetrics,
    observe_middleware,
    trace_middleware,
)
from service.api.state import BOOKER, SESSIONS
from service.coalescer import Booker, BookingCoalescer, OneTransactionPerRequest
from service.common import probes
from service.db.booking import BookingObserver, KeyRules, book_requests
from service.db.engine import (
    bound_lock_waits,
    create_engine,
    refuse_closed_connections,
    serializable_sessions,
)
from service.domain import BatchDecision, Request
from service.settings import Settings

MAX_BODY_BYTES = 64 * 1024
ENGINE = web.AppKey("engine", AsyncEngine)


def create_app(
    settings: Settings, booking_observer: BookingObserver | None = None
) -> web.Application:
    """The API. `booking_observer` hears what every booking transaction meets (by default the
    metrics)."""
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[
            trace_middleware,
            correlation_middleware,
            observe_middleware,
            error_middleware,
        ],
    )
    observer = booking_observer if booking_observer is not None else BookingMetrics()
    app.cleanup_ctx.append(partial(_database, settings=settings))
    app.cleanup_ctx.append(partial(_booker, settings=settings, observer=observer))
    app.router.add_post("/shows", handlers.post_show)
    app.router.add_get("/shows/{show_id}", handlers.get_show)
    app.router.add_post("/book-tickets", handlers.post_book_tickets)
    app.router.add_get("/bookings/{booking_id}", handlers.get_booking)
    app.router.add_delete("/bookings/{booking_id}", handlers.delete_booking)
    app.router.add_get("/health", probes.health)
    app.router.add_get("/ready", handlers.ready)
    app.router.add_get("/metrics", probes.metrics)
    return app


async def _database(app: web.Application, settings: Settings) -> AsyncIterator[None]:
    database_url = settings.database_url.get_secret_value()
    engine = create_engine(database_url, settings.db_pool_size, pre_ping=False)
    refuse_closed_connections(engine)
    bound_lock_waits(engine, settings.booking_max_wait)
    app[ENGINE] = engine
    app[SESSIONS] = async_sessionmaker(engine, expire_on_commit=False)
    yield
    await engine.dispose()


async def _booker(
    app: web.Application, settings: Settings, observer: BookingObserver
) -> AsyncIterator[None]:
    """Bookings and cancellations go through a coalescer (or, with coalescing off, one
    transaction each). A keyed request's answer is stored as the error map renders it."""
    booking_sessions = serializable_sessions(app[ENGINE])
    keys = KeyRules(answer_for, settings.idempotency_key_ttl)

    async def book(requests: list[Request]) -> BatchDecision:
        return await book_requests(
            booking_sessions, requests, settings.booking_max_attempts, observer, keys
        )

    booker: Booker = (
        BookingCoalescer(
            book, settings.booking_batch_max, settings.booking_lanes, settings.booking_max_wait
        )
        if settings.booking_coalescing
        else OneTransactionPerRequest(book)
    )
    app[BOOKER] = booker
    yield
    await booker.close()
