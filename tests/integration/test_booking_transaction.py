"""The booking transaction on its own: one transaction for a batch that spans several shows."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.booking import book_requests
from service.db.engine import (
    create_engine,
    serializable_sessions,
)
from service.domain import ContentionExhausted
from tests.support.bookings import BookingStats, booking, new_show
from tests.support.invariants import assert_show_consistent
from tests.support.waiting import until


async def test_one_transaction_books_several_shows(
    sessions: async_sessionmaker[AsyncSession], db: asyncpg.Connection
) -> None:
    a, b = await new_show(sessions, 3), await new_show(sessions, 10)
    a5, a2, b4, nowhere, a1 = (
        booking(a, 5),
        booking(a, 2),
        booking(b, 4),
        booking(uuid.uuid4(), 1),
        booking(a, 1),
    )
    stats = BookingStats()
    decision = await book_requests(sessions, [a5, a2, b4, nowhere, a1], 5, stats)
    assert decision.accepted == [a2, a1, b4]
    assert decision.rejected == [a5]
    assert decision.unknown_show == [nowhere]
    assert (stats.transactions, stats.bookings) == (1, 3)
    assert await assert_show_consistent(db, a) == 3
    assert await assert_show_consistent(db, b) == 4
    # The outbox rows of one show are in arrival order.
    rows = await db.fetch(
        "SELECT payload->>'booking_id' AS b FROM outbox WHERE ordering_key = $1 ORDER BY id", a
    )
    assert [row["b"] for row in rows] == [str(a2.booking_id), str(a1.booking_id)]


async def test_a_row_lock_held_too_long_is_busy_not_a_hang(
    database_url: str, db: asyncpg.Connection
) -> None:
    engine = create_engine(database_url, pool_size=2, lock_wait=0.2)
    sessions = serializable_sessions(engine)
    try:
        show_id = await new_show(sessions, 5)
        async with asyncio.timeout(10):
            async with db.transaction():
                # A hung transaction elsewhere holds the show's row.
                await db.execute("SELECT 1 FROM shows WHERE show_id = $1 FOR UPDATE", show_id)
                with pytest.raises(ContentionExhausted):
                    await book_requests(sessions, [booking(show_id, 1)], 5)
            decision = await book_requests(sessions, [booking(show_id, 1)], 5)
        assert len(decision.accepted) == 1
        assert await assert_show_consistent(db, show_id) == 1
    finally:
        await engine.dispose()


async def test_a_connection_the_server_closed_is_not_handed_out_again(
    database_url: str, db: asyncpg.Connection
) -> None:
    # Every engine: no pre-ping round trips, a local check of the connection instead.
    engine = create_engine(database_url, pool_size=1)
    sessions = serializable_sessions(engine)
    try:
        show_id = await new_show(sessions, 5)
        async with engine.connect() as conn:
            pooled = (await conn.get_raw_connection()).driver_connection
            pid = await conn.scalar(text("SELECT pg_backend_pid()"))
        assert pooled is not None
        async with asyncio.timeout(10):
            # PostgreSQL ends the pooled connection (as on a restart or pg_terminate_backend).
            assert await db.fetchval("SELECT pg_terminate_backend($1)", pid)

            async def closed() -> bool:  # asyncpg notices once the event loop reads the socket
                return bool(pooled.is_closed())

            await until(closed)
            decision = await book_requests(sessions, [booking(show_id, 1)], 5)
        assert len(decision.accepted) == 1
    finally:
        await engine.dispose()
