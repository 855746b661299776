"""Races: real concurrent requests on one show, then the invariants checked in the tables.

Each race runs three times: with coalescing (the default, one lane), with coalescing over four
lanes (transactions side by side, each batch spanning the shows of its lane), and without, where
every request is its own SERIALIZABLE transaction and contention is settled by retries.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.api import create_app
from service.settings import Settings
from tests.support.api import Client, book, create_show
from tests.support.invariants import assert_show_consistent


@pytest.fixture(
    params=[(True, 1), (True, 4), (False, 1)], ids=["coalesced", "4-lanes", "one-per-tx"]
)
async def racing_client(
    settings: Settings, request: pytest.FixtureRequest
) -> AsyncIterator[Client]:
    coalescing, lanes = request.param
    tuned = settings.replaced(booking_coalescing=coalescing, booking_lanes=lanes)
    async with TestClient(TestServer(create_app(tuned))) as test_client:
        yield test_client


async def race(client: Client, show_id: str, sizes: list[int]) -> list[int]:
    results = await asyncio.gather(*(book(client, show_id, n) for n in sizes))
    return [status for status, _ in results]


async def assert_no_rows_for_rejected(db: asyncpg.Connection, show_id: str, accepted: int) -> None:
    sid = uuid.UUID(show_id)
    assert await db.fetchval("SELECT count(*) FROM bookings WHERE show_id = $1", sid) == accepted
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE ordering_key = $1", sid) == accepted


async def test_twenty_singles_for_ten_tickets(
    racing_client: Client, db: asyncpg.Connection
) -> None:
    show_id = await create_show(racing_client, 10)
    statuses = await race(racing_client, show_id, [1] * 20)
    assert Counter(statuses) == {201: 10, 400: 10}
    assert await assert_show_consistent(db, show_id) == 10
    await assert_no_rows_for_rejected(db, show_id, accepted=10)


async def test_fifty_pairs_for_two_tickets(racing_client: Client, db: asyncpg.Connection) -> None:
    show_id = await create_show(racing_client, 2)
    statuses = await race(racing_client, show_id, [2] * 50)
    assert Counter(statuses) == {201: 1, 400: 49}
    assert await assert_show_consistent(db, show_id) == 2
    await assert_no_rows_for_rejected(db, show_id, accepted=1)


async def test_hundred_mixed_sizes_for_57_tickets(
    racing_client: Client, db: asyncpg.Connection
) -> None:
    show_id = await create_show(racing_client, 57)
    sizes = [random.randint(1, 4) for _ in range(100)]
    statuses = await race(racing_client, show_id, sizes)
    assert set(statuses) <= {201, 400}, Counter(statuses)
    booked = await assert_show_consistent(db, show_id)
    assert booked == sum(n for n, s in zip(sizes, statuses, strict=True) if s == 201)
    assert booked <= 57
    left = 57 - booked
    # Nothing was refused that would still fit now: the show was not under-sold either.
    refused = [n for n, s in zip(sizes, statuses, strict=True) if s == 400]
    assert all(n > left for n in refused), (left, sorted(refused))
    await assert_no_rows_for_rejected(db, show_id, accepted=statuses.count(201))


async def test_races_on_many_shows_at_once(racing_client: Client, db: asyncpg.Connection) -> None:
    shows = [await create_show(racing_client, 5) for _ in range(4)]
    requests = [show_id for show_id in shows for _ in range(8)]
    random.shuffle(requests)
    statuses = await asyncio.gather(*(book(racing_client, s, 1) for s in requests))
    assert Counter(status for status, _ in statuses) == {201: 20, 400: 12}
    for show_id in shows:
        assert await assert_show_consistent(db, show_id) == 5
