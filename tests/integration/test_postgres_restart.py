"""`pg_ctl restart -m fast` under load, on a private PostgreSQL cluster of this test's own (the
shared one is never restarted): the API, the relay and the consumers all use it.

Every booking request is answered 201 or 503 (never a 500), bookings succeed again within
10 s of the restart, no event is lost (show_sales equals the bookings: reconcile clean), and
the consumers spent no attempt on the outage (nothing retried or dead-lettered).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.engine import make_url

from consumers import show_sales
from service.api import create_app
from service.db.engine import create_engine, migrate
from service.relay import OutboxRelay
from service.settings import Settings
from tests.support.api import Client, create_show
from tests.support.consumers import consumer_queues, depths, fast
from tests.support.consumers import running as consumers_running
from tests.support.load import Post, SteadyLoad
from tests.support.private_postgres import PrivatePostgres, private_postgres
from tests.support.relay import running as relay_running
from tests.support.waiting import until

RECOVERY_SECONDS = 10.0


@pytest.fixture
async def pg() -> AsyncIterator[PrivatePostgres]:
    async with private_postgres(max_connections=100) as server:
        yield server


def posting(client: Client) -> Post:
    async def post(body: dict[str, object]) -> tuple[int, dict[str, object]]:
        response = await client.post("/book-tickets", json=body)
        return response.status, await response.json()

    return post


@pytest.mark.slow
async def test_a_restart_under_load_gives_only_201_or_503_and_loses_nothing(
    pg: PrivatePostgres, settings: Settings
) -> None:
    url = make_url(pg.url).set(database="tickets").render_as_string(hide_password=False)
    await asyncio.to_thread(migrate, url)
    own = fast(
        settings.replaced(database_url=url, relay_poll_interval=0.1, relay_max_backoff=0.5),
        events_exchange=f"{settings.events_exchange}.restart",
        consumer_max_backoff=0.5,
    )
    loop = asyncio.get_running_loop()
    async with (
        consumer_queues(own, show_sales.NAME) as (queues,),
        TestClient(TestServer(create_app(own))) as client,
        relay_running(OutboxRelay(own)),
        consumers_running(own, [show_sales.NAME]) as (runner,),
    ):
        shows = [await create_show(client, 100_000) for _ in range(5)]
        async with SteadyLoad({"api": posting(client)}, shows, clients=20) as load:
            await until(lambda: _answered(load, 200), within=20)
            restarting = loop.time()
            await pg.restart("fast")
            restarted = loop.time()
            then = len(load.answers) + 400  # and well after: recovered
            await until(lambda: _answered(load, then), within=30)
        await _drained(url, within=60)
        drained = loop.time()
        assert set((await depths(own, queues)).values()) == {0}

    statuses = load.statuses()
    assert set(statuses) <= {201, 503}, statuses
    failures = [a for a in load.answers if a.status != 201]
    last_failure = max((a.asked_at + a.took for a in failures), default=None)
    recovered_in = 0.0 if last_failure is None else last_failure - restarted
    assert recovered_in < RECOVERY_SECONDS
    assert load.answers[-1].status == 201
    # The consumers kept what they held through the outage: no attempt spent on it.
    assert (runner.stats.retried, runner.stats.dead_lettered) == (0, 0)
    engine = create_engine(url, pool_size=1)
    try:
        compared, differences = await show_sales.reconcile(engine)
    finally:
        await engine.dispose()
    assert (compared, differences) == (5, [])
    print(
        f"\nrestart took {restarted - restarting:.2f} s; answers {dict(statuses)}; bookings"
        f" back {recovered_in:.2f} s after it returned; every event applied"
        f" {drained - restarted:.2f} s after it (load included); consumers: {runner.stats}"
    )


async def _answered(load: SteadyLoad, count: int) -> bool:
    return len(load.answers) >= count


async def _drained(url: str, within: float) -> None:
    """Until show_sales has every booking (the relay published them, show_sales applied)."""
    conn = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
    try:

        async def applied_all() -> bool:
            booked = await conn.fetchval("SELECT count(*) FROM bookings")
            applied = await conn.fetchval("SELECT coalesce(sum(bookings), 0) FROM show_sales")
            return bool(booked == applied)

        await until(applied_all, within=within, every=0.2)
    finally:
        await conn.close()
