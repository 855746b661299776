"""The 503 answers, made for real: contention retries that run out, and a connection pool with
no connection free in time. Each is 503 with `Retry-After: 1`, the contract's body, and nothing
booked by a request that was told to retry."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from service.api import create_app
from service.settings import Settings
from tests.support.api import Client, booking_body, create_show
from tests.support.consumers import own_database
from tests.support.database import asyncpg_dsn
from tests.support.row_locks import show_row_locked, until_waiting_for_lock

BUSY = {"error": "the show is busy, please retry"}


@asynccontextmanager
async def api_on_own_database(
    settings: Settings, **changes: object
) -> AsyncIterator[tuple[Client, asyncpg.Connection, str]]:
    async with own_database() as url:
        app = create_app(settings.replaced(database_url=url, **changes))
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            async with TestClient(TestServer(app)) as client:
                yield client, conn, url
        finally:
            await conn.close()


async def test_serialization_retries_that_run_out_are_503_and_book_nothing(
    settings: Settings,
) -> None:
    async with (
        asyncio.timeout(30),
        api_on_own_database(settings, booking_max_attempts=1) as (client, db, url),
    ):
        show_id = await create_show(client, 10)
        async with db.transaction():
            # Another writer takes the counter's row, the booking waits for it...
            await db.execute(
                "UPDATE shows SET tickets_booked = tickets_booked WHERE show_id = $1",
                uuid.UUID(show_id),
            )
            booking = asyncio.create_task(
                client.post("/book-tickets", json=booking_body(show_id, 1))
            )
            await until_waiting_for_lock(url)
        # ...and commits its change after the booking's snapshot: the booking's update fails
        # with 40001, and one attempt is all it has.
        answer = await booking
        assert (answer.status, await answer.json()) == (503, BUSY)
        assert answer.headers["Retry-After"] == "1"
        assert await db.fetchval("SELECT count(*) FROM bookings") == 0


async def test_no_pooled_connection_free_in_time_is_503_not_a_hang(settings: Settings) -> None:
    # One pooled connection and one overflow; bookings hold both while they wait on a lock.
    async with (
        asyncio.timeout(60),
        api_on_own_database(
            settings, db_pool_size=1, booking_coalescing=False, booking_max_wait=30
        ) as (client, db, url),
    ):
        show_id = await create_show(client, 10)
        async with show_row_locked(db, show_id):
            holding = [
                asyncio.create_task(client.post("/book-tickets", json=booking_body(show_id, 1)))
                for _ in range(2)
            ]
            await until_waiting_for_lock(url, count=2)
            answer = await client.get(f"/shows/{show_id}")
            assert (answer.status, await answer.json()) == (503, {"error": "database unavailable"})
            assert answer.headers["Retry-After"] == "1"
        assert [a.status for a in await asyncio.gather(*holding)] == [201, 201]
