"""Bookings made through the real booking transaction, without HTTP, for tests that need many."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.booking import UNOBSERVED, BookingObserver, book_requests
from service.db.engine import create_engine, serializable_sessions
from service.db.shows import NewShow, create_show
from service.domain import BatchDecision, BookingRequest, ShowNotFound


@dataclass(slots=True)
class BookingStats:
    """A BookingObserver that counts: how much contention the transactions met."""

    transactions: int = 0
    retries: int = 0
    bookings: int = 0

    def retried(self) -> None:
        self.retries += 1

    def committed(self, decision: BatchDecision) -> None:
        self.transactions += 1
        self.bookings += len(decision.accepted)


async def book_batch(
    sessions: async_sessionmaker[AsyncSession],
    show_id: uuid.UUID,
    requests: list[BookingRequest],
    max_attempts: int,
    observer: BookingObserver = UNOBSERVED,
) -> BatchDecision:
    """Book a batch of requests for one show; raises ShowNotFound for an unknown show."""
    decision = await book_requests(sessions, requests, max_attempts, observer)
    if decision.unknown_show:
        raise ShowNotFound()
    return decision


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
