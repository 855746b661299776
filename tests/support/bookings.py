"""Bookings made through the real booking transaction, without HTTP, for tests that need many."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.booking import book_batch
from service.db.engine import create_engine, serializable_sessions
from service.db.shows import NewShow, create_show
from service.domain import BookingRequest


async def book_many(
    database_url: str, shows: int, per_show: int, batch: int = 25, capacity: int = 1_000_000
) -> list[uuid.UUID]:
    """Create `shows` shows and book `per_show` single tickets on each, shows in parallel and
    `batch` requests per transaction; returns the show ids."""
    engine = create_engine(database_url, pool_size=max(2, shows))
    sessions = serializable_sessions(engine)
    try:
        show_ids = [await new_show(sessions, capacity) for _ in range(shows)]

        async def fill(show_id: uuid.UUID) -> None:
            for start in range(0, per_show, batch):
                count = min(batch, per_show - start)
                requests = [booking(show_id) for _ in range(count)]
                decision = await book_batch(sessions, show_id, requests, max_attempts=50)
                assert len(decision.accepted) == count

        await asyncio.gather(*(fill(show_id) for show_id in show_ids))
        return show_ids
    finally:
        await engine.dispose()


async def new_show(sessions: async_sessionmaker[AsyncSession], capacity: int) -> uuid.UUID:
    show = NewShow(uuid.uuid4(), capacity, datetime(2026, 12, 31, 20, tzinfo=UTC), "Show", "Hall")
    show_id, _ = await create_show(sessions, show)
    return show_id


def booking(show_id: uuid.UUID, tickets: int = 1) -> BookingRequest:
    return BookingRequest(show_id, tickets, "fan@example.com", f"test-{uuid.uuid4().hex[:8]}")
