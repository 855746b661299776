"""The app factory: every resource the API uses is made and closed here, in plain sight."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

from aiohttp import web
from sqlalchemy.ext.asyncio import async_sessionmaker

from service.api import handlers
from service.api.correlation import correlation_middleware
from service.api.errors import error_middleware
from service.api.state import BOOKER, READ_SESSIONS, STATS
from service.coalescer import Booker, BookingCoalescer, OneTransactionPerRequest
from service.db.booking import BookingStats, book_requests
from service.db.engine import (
    bound_lock_waits,
    create_engine,
    refuse_closed_connections,
    serializable_sessions,
)
from service.domain import BatchDecision, BookingRequest
from service.settings import Settings

MAX_BODY_BYTES = 64 * 1024


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[correlation_middleware, error_middleware],
    )
    app.cleanup_ctx.append(partial(_database, settings=settings))
    app.router.add_post("/shows", handlers.post_show)
    app.router.add_get("/shows/{show_id}", handlers.get_show_handler)
    app.router.add_post("/book-tickets", handlers.post_book_tickets)
    app.router.add_get("/bookings/{booking_id}", handlers.get_booking_handler)
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/ready", handlers.ready)
    return app


async def _database(app: web.Application, settings: Settings) -> AsyncIterator[None]:
    engine = create_engine(settings.database_url, settings.db_pool_size, pre_ping=False)
    refuse_closed_connections(engine)
    bound_lock_waits(engine, settings.booking_max_wait)
    booking_sessions = serializable_sessions(engine)
    stats = BookingStats()

    async def book(requests: list[BookingRequest]) -> BatchDecision:
        return await book_requests(booking_sessions, requests, settings.booking_max_attempts, stats)

    booker: Booker = (
        BookingCoalescer(
            book, settings.booking_batch_max, settings.booking_lanes, settings.booking_max_wait
        )
        if settings.booking_coalescing
        else OneTransactionPerRequest(book)
    )
    app[READ_SESSIONS] = async_sessionmaker(engine, expire_on_commit=False)
    app[BOOKER] = booker
    app[STATS] = stats
    yield
    await booker.close()
    await engine.dispose()
