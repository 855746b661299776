"""Coalescing against the real database: arrival order, a client walking away, bounded waits.

Each test blocks a booking transaction on the show's row lock (tests/support/row_locks.py),
queues requests behind it while it waits, then lets go, so every request's batch is known.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.api import create_app
from service.api.state import BOOKER
from service.coalescer import BookingCoalescer
from service.db.booking import book_requests
from service.domain import BatchDecision, BookingRequest, NotEnoughSeats, Request
from service.settings import Settings
from tests.support.api import Client, booking_body
from tests.support.api import create_show as create_show_over_http
from tests.support.bookings import booking, new_show
from tests.support.invariants import assert_show_consistent
from tests.support.row_locks import show_row_locked, until_waiting_for_lock
from tests.support.waiting import until

BOUND = 20.0  # seconds any test here may take before it fails instead of hanging


async def test_a_one_behind_a_refused_five_is_booked_in_the_same_batch(
    sessions: async_sessionmaker[AsyncSession], db: asyncpg.Connection, database_url: str
) -> None:
    batches: list[list[int]] = []

    async def book(requests: list[Request]) -> BatchDecision:
        batches.append([r.number_of_tickets for r in requests if isinstance(r, BookingRequest)])
        return await book_requests(sessions, requests, max_attempts=5)

    coalescer = BookingCoalescer(book, batch_max=100, lanes=1, max_wait=BOUND, max_queued=1000)
    show_id = await new_show(sessions, 4)
    async with asyncio.timeout(BOUND):
        async with show_row_locked(db, show_id):
            first = asyncio.create_task(coalescer.book(booking(show_id, 1)))
            await until_waiting_for_lock(database_url)
            # The first transaction waits on the lock; 3 seats will be left after it.
            five = asyncio.create_task(coalescer.book(booking(show_id, 5)))
            one = asyncio.create_task(coalescer.book(booking(show_id, 1)))
            await asyncio.sleep(0)  # one loop step: both run up to their wait in the lane
            assert coalescer.queued(show_id) == 2
        await first
        with pytest.raises(NotEnoughSeats):
            await five
        await one
    assert batches == [[1], [5, 1]]
    assert await assert_show_consistent(db, show_id) == 2


async def test_a_client_that_disconnects_mid_batch_does_not_break_it(
    client: Client, db: asyncpg.Connection, database_url: str
) -> None:
    show_id = await create_show_over_http(client, 10)
    booker = client.app[BOOKER]
    assert isinstance(booker, BookingCoalescer)
    async with asyncio.timeout(BOUND):
        async with show_row_locked(db, show_id):
            # A client sends its booking over a raw connection; its transaction blocks...
            _, writer = await asyncio.open_connection(client.host, client.port)
            writer.write(raw_booking_request(show_id, 2, correlation_id="walked-away"))
            await writer.drain()
            await until_waiting_for_lock(database_url)
            # ...two more queue behind it...
            others = [
                asyncio.create_task(client.post("/book-tickets", json=booking_body(show_id, 1)))
                for _ in range(2)
            ]

            async def both_queued() -> bool:
                return booker.queued(uuid.UUID(show_id)) == 2

            await until(both_queued)
            # ...and the first client goes away in the middle of its transaction.
            writer.close()
            await writer.wait_closed()
        answers = await asyncio.gather(*others)
        assert [answer.status for answer in answers] == [201, 201]
    # The walked-away booking is all or nothing like any other: here, all (its batch committed).
    walked = await db.fetchval(
        "SELECT number_of_tickets FROM bookings WHERE correlation_id = 'walked-away'"
    )
    assert walked == 2
    assert await assert_show_consistent(db, show_id) == 4
    assert (await client.get("/health")).status == 200


def raw_booking_request(show_id: str, tickets: int, correlation_id: str) -> bytes:
    body = json.dumps(booking_body(show_id, tickets)).encode()
    head = (
        "POST /book-tickets HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Correlation-ID: {correlation_id}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def test_waits_are_bounded_then_busy_and_nothing_is_booked(
    settings: Settings, db: asyncpg.Connection, database_url: str
) -> None:
    impatient = settings.replaced(booking_max_wait=0.3)
    async with TestClient(TestServer(create_app(impatient))) as client:
        show_id = await create_show_over_http(client, 10)
        async with asyncio.timeout(BOUND):
            async with show_row_locked(db, show_id):
                # A lock held far longer than BOOKING_MAX_WAIT: the blocked transaction gives
                # up (lock_timeout), and the request queued behind it does not wait forever.
                blocked = asyncio.create_task(
                    client.post("/book-tickets", json=booking_body(show_id, 1))
                )
                await until_waiting_for_lock(database_url)
                behind = await client.post("/book-tickets", json=booking_body(show_id, 1))
                answers = [behind, await blocked]
                assert [a.status for a in answers] == [503, 503]
                assert all(a.headers["Retry-After"] for a in answers)
                assert await behind.json() == {"error": "the show is busy, please retry"}
            # The lock is gone: the lane is not stuck.
            after = await client.post("/book-tickets", json=booking_body(show_id, 1))
            assert after.status == 201
    assert await assert_show_consistent(db, show_id) == 1


async def test_past_booking_max_queued_a_request_is_refused_at_once_and_never_booked(
    settings: Settings, db: asyncpg.Connection, database_url: str
) -> None:
    bounded = settings.replaced(booking_max_queued=2)
    async with TestClient(TestServer(create_app(bounded))) as client:
        show_id = await create_show_over_http(client, 10)
        booker = client.app[BOOKER]
        assert isinstance(booker, BookingCoalescer)
        async with asyncio.timeout(BOUND):
            async with show_row_locked(db, show_id):
                # One transaction blocked on the lock (in a batch: not waiting), two waiting.
                blocked = asyncio.create_task(
                    client.post("/book-tickets", json=booking_body(show_id, 1))
                )
                await until_waiting_for_lock(database_url)
                waiting = [
                    asyncio.create_task(client.post("/book-tickets", json=booking_body(show_id, 2)))
                    for _ in range(2)
                ]

                async def both_queued() -> bool:
                    return booker.queued(uuid.UUID(show_id)) == 2

                await until(both_queued)
                # The third in line is one too many: 503 at once, while the lock is still held.
                refused = await client.post("/book-tickets", json=booking_body(show_id, 4))
                assert refused.status == 503
                assert refused.headers["Retry-After"] == "1"
                assert await refused.json() == {"error": "too many bookings waiting, please retry"}
            answers = await asyncio.gather(blocked, *waiting)
            assert [a.status for a in answers] == [201, 201, 201]
    assert await assert_show_consistent(db, show_id) == 5  # 1 + 2 + 2, never the refused 4
