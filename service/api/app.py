"""The app factory: every resource the API uses is made and closed here, in plain sight."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.api.auth import requiring_token
from service.api.docs_page import render_docs_page
from service.api.errors import answer_for, error_middleware
from service.api.observability import (
    BookingMetrics,
    observe_middleware,
)
from service.api.openapi import openapi_document
from service.api.readiness import DatabaseReadiness
from service.api.routes import ROUTES, Route
from service.api.state import BODY_TIMEOUT, BOOKER, DOCS_PAGE, OPENAPI, READINESS, SESSIONS
from service.coalescer import Booker, BookingCoalescer, OneTransactionPerRequest
from service.common import timeouts
from service.common.dependencies import dependencies_of
from service.db.booking import BookingObserver, KeyRules, book_requests
from service.db.engine import (
    create_engine,
    serializable_sessions,
)
from service.db.lost_commit import LostCommitRecovery
from service.domain import BatchDecision, Request
from service.settings import Settings

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024
LINGERING_SECONDS = 2.0
MAX_HEADERS = 64
ENGINE = web.AppKey("engine", AsyncEngine)


def create_app(
    settings: Settings, booking_observer: BookingObserver | None = None
) -> web.Application:
    """The API: the routes of routes.py, and their documentation. `booking_observer` hears what
    every booking transaction meets (by default the metrics)."""
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[observe_middleware, error_middleware],
        handler_args=connection_limits(settings),
    )
    app[BODY_TIMEOUT] = settings.http_body_timeout
    token = settings.shows_api_token.get_secret_value()
    for route in ROUTES:
        _add(app, route, token)
    app[OPENAPI] = openapi_document(ROUTES, token_required=bool(token))
    app[DOCS_PAGE] = render_docs_page(app[OPENAPI])
    observer = booking_observer if booking_observer is not None else BookingMetrics()
    app.cleanup_ctx.append(partial(_database, settings=settings))
    app.cleanup_ctx.append(partial(_booker, settings=settings, observer=observer))
    return app


def _add(app: web.Application, route: Route, token: str) -> None:
    handler = (
        requiring_token(token, route.handler) if route.needs_token and token else route.handler
    )
    if route.method == "GET":
        app.router.add_get(route.path, handler)  # and HEAD, as aiohttp does for every GET
    else:
        app.router.add_route(route.method, route.path, handler)


def connection_limits(settings: Settings) -> dict[str, Any]:
    """How long a client may hold a connection without sending (aiohttp's RequestHandler
    options; the app's handler_args apply under web.run_app and the test server alike)."""
    return {
        # Closes a connection that is idle, or has not sent a complete request head, this long
        # after it opened or after its last answer: a slow header trickle is bounded too.
        "keepalive_timeout": settings.http_idle_timeout,
        # After an answer that left a body unread (a 400, a 408), read and drop the rest for
        # at most this long, then close: a client gets to read the answer, not to hold on.
        "lingering_time": LINGERING_SECONDS,
        # Compressed bodies are refused (bodies.py); never inflated, so no zip bomb.
        "auto_decompress": False,
        "max_headers": MAX_HEADERS,
    }


async def _database(app: web.Application, settings: Settings) -> AsyncIterator[None]:
    database_url = settings.database_url.get_secret_value()
    engine = create_engine(database_url, settings.db_pool_size, lock_wait=settings.booking_max_wait)
    app[ENGINE] = engine
    app[SESSIONS] = async_sessionmaker(engine, expire_on_commit=False)
    app[READINESS] = DatabaseReadiness(app[SESSIONS])
    await _tell_if_database_missing(app[SESSIONS], settings)
    yield
    await engine.dispose()


async def _tell_if_database_missing(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """At start, one line if PostgreSQL is away or not set up: which, where, what to do. The
    API starts anyway and answers 503 until it is there."""
    try:
        await timeouts.within(timeouts.CONNECT + 1, _select_one(sessions))
    except Exception as error:
        line = dependencies_of(settings).explain(error) or repr(error)
        log.warning("%s; the API answers 503 until it is there", line)


async def _select_one(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        await session.execute(text("SELECT 1 FROM shows LIMIT 1"))


async def _booker(
    app: web.Application, settings: Settings, observer: BookingObserver
) -> AsyncIterator[None]:
    """Bookings and cancellations go through a coalescer (or, with coalescing off, one
    transaction each). A keyed request's answer is stored as the error map renders it. Each
    transaction is bounded, and its outcome found out when the database fails under it."""
    booking_sessions = serializable_sessions(app[ENGINE])
    keys = KeyRules(answer_for, settings.idempotency_key_ttl)

    async def transaction(requests: list[Request]) -> BatchDecision:
        return await book_requests(
            booking_sessions, requests, settings.booking_max_attempts, observer, keys
        )

    book = LostCommitRecovery(transaction, app[SESSIONS], settings.booking_max_wait)

    booker: Booker = (
        BookingCoalescer(
            book,
            settings.booking_batch_max,
            settings.booking_lanes,
            settings.booking_max_wait,
            settings.booking_max_queued,
        )
        if settings.booking_coalescing
        else OneTransactionPerRequest(book, settings.booking_max_queued)
    )
    app[BOOKER] = booker
    yield
    await booker.close()
