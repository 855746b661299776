"""The booking lifecycle across real processes: two API processes, the relay, the consumers.

- One Idempotency-Key sent 20 times at once, alternating between two API processes: one booking,
  and every request answered 201 with its booking_id.
- Bookings and cancellations racing on one show over two API processes, with the relay and the
  consumers running: the counter, the events on the broker, show_sales and the ticket provider
  all end where the confirmed bookings are.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from consumers.bootstrap import NAMES
from service.broker import connect
from service.settings import Settings
from tests.e2e.test_api_processes import free_port, start_api, stop_all
from tests.support.api import booking_body, show_body
from tests.support.broker import Received, bound_queue
from tests.support.consumers import consumer_queues, depths, fast, own_database
from tests.support.database import asyncpg_dsn
from tests.support.invariants import assert_show_consistent
from tests.support.processes import environment, start
from tests.support.provider import FakeProvider, serving
from tests.support.waiting import until

REPLAYED = "Idempotent-Replayed"


async def keyed(
    http: aiohttp.ClientSession, url: str, key: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any], str | None]:
    async with http.post(url, json=body, headers={"Idempotency-Key": key}) as response:
        return response.status, await response.json(), response.headers.get(REPLAYED)


@pytest.mark.slow
async def test_one_key_twenty_times_over_two_api_processes_books_once(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    async with asyncio.timeout(60):
        ports = [free_port(), free_port()]
        apis = [await start_api(settings, tmp_path, f"api-{n}", p) for n, p in enumerate(ports)]
        try:
            urls = [f"http://127.0.0.1:{port}/book-tickets" for port in ports]
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                shows = f"http://127.0.0.1:{ports[0]}/shows"
                async with http.post(shows, json=show_body(10)) as response:
                    show_id = (await response.json())["show_id"]
                key, body = str(uuid.uuid4()), booking_body(show_id, 2)
                answers = await asyncio.gather(
                    *(keyed(http, urls[n % 2], key, body) for n in range(20))
                )
                assert [status for status, _, _ in answers] == [201] * 20
                assert len({answer["booking_id"] for _, answer, _ in answers}) == 1
                # Later: replayed by either process; another body is refused.
                for url in urls:
                    assert await keyed(http, url, key, body) == (201, answers[0][1], "true")
                other = await keyed(http, urls[1], key, booking_body(show_id, 3))
                assert other[0] == 422
                # A refusal is an answer too: stored, and replayed as it was.
                refused_key, too_many = str(uuid.uuid4()), booking_body(show_id, 9)
                first = await keyed(http, urls[0], refused_key, too_many)
                assert first == (400, {"error": "not enough seats available"}, None)
                assert await keyed(http, urls[1], refused_key, too_many) == (*first[:2], "true")
        finally:
            await stop_all(apis)
    assert (
        await db.fetchval("SELECT count(*) FROM bookings WHERE show_id = $1", uuid.UUID(show_id))
        == 1
    )
    assert await assert_show_consistent(db, show_id) == 2


CAPACITY, BOOKED_BEFORE, NEW_BOOKINGS = 60, 50, 100


@pytest.mark.slow
async def test_bookings_and_cancellations_racing_over_two_api_processes(
    settings: Settings, tmp_path: Path
) -> None:
    provider = FakeProvider(failure_rate=0.1)  # hiccups: some BookingMade retried, overtaken
    async with own_database() as database_url, serving(provider):
        settings = fast(
            settings.replaced(database_url=database_url),
            events_exchange=f"{settings.events_exchange}.lifecycle",
            consumer_max_attempts=20,
        )
        async with (
            consumer_queues(settings, *NAMES) as queues,
            await connect(settings.amqp_url.get_secret_value(), "tickets-test-order") as amqp,
            bound_queue(await amqp.channel(), settings.events_exchange) as received,
        ):
            env = environment(
                settings,
                TICKET_PROVIDER_URL=provider.url,
                RELAY_POLL_INTERVAL="0.1",
            )
            ports = [free_port(), free_port()]
            apis = [await start_api(settings, tmp_path, f"api-{n}", p) for n, p in enumerate(ports)]
            relay = await start("relay", ["service", "relay"], env, tmp_path)
            consumers = await start("consumers", ["consumers", "run", "all"], env, tmp_path)
            try:
                async with asyncio.timeout(90):
                    race = await book_and_cancel(ports)
                    await until_delivered(database_url, provider, received, race)
                for child in (relay, consumers):
                    assert await child.stop() == 0, child.output()
            finally:
                await stop_all(apis)
                for child in (relay, consumers):
                    await child.kill()
            await assert_race_outcome(database_url, provider, received, race, env, tmp_path)
            for topology in queues:
                assert set((await depths(settings, topology)).values()) == {0}, topology.main


class Race:
    def __init__(self, show_id: str, existing: list[str]) -> None:
        self.show_id = show_id
        self.existing = existing
        self.booked: list[str] = []
        self.statuses: Counter[str] = Counter()


async def book_and_cancel(ports: list[int]) -> Race:
    """A show of 60 with 50 booked; then 100 bookings and the 50 cancellations at once, each
    request to one of the two processes."""
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        async with http.post(f"{bases[0]}/shows", json=show_body(CAPACITY)) as response:
            show_id = (await response.json())["show_id"]
        existing = []
        for n in range(BOOKED_BEFORE):
            async with http.post(
                f"{bases[n % 2]}/book-tickets", json=booking_body(show_id, 1)
            ) as response:
                assert response.status == 201
                existing.append((await response.json())["booking_id"])
        race = Race(show_id, existing)

        async def book(n: int) -> None:
            async with http.post(
                f"{bases[n % 2]}/book-tickets", json=booking_body(show_id, 1)
            ) as response:
                race.statuses[f"book {response.status}"] += 1
                if response.status == 201:
                    race.booked.append((await response.json())["booking_id"])

        async def cancel(n: int, booking_id: str) -> None:
            async with http.delete(f"{bases[n % 2]}/bookings/{booking_id}") as response:
                race.statuses[f"cancel {response.status}"] += 1

        requests = [book(n) for n in range(NEW_BOOKINGS)]
        requests += [cancel(n, booking_id) for n, booking_id in enumerate(existing)]
        random.Random(12).shuffle(requests)
        await asyncio.gather(*requests)
    return race


async def until_delivered(
    database_url: str, provider: FakeProvider, received: Received, race: Race
) -> None:
    """Until show_sales, the provider and the test queue have heard every event."""
    booked = set(race.booked) | set(race.existing)
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    seen: dict[str, object] = {}
    try:

        async def everything_arrived() -> bool:
            seen["events"] = await conn.fetchval("SELECT count(*) FROM outbox")
            seen["on the test queue"] = len(set(received.message_ids()))
            seen["show_sales"] = await conn.fetchval(
                "SELECT count(*) FROM inbox WHERE consumer = 'show_sales'"
            )
            seen["ticket_provider"] = await conn.fetchval(
                "SELECT count(*) FROM inbox WHERE consumer = 'ticket_provider'"
            )
            seen["never at the provider"] = len(booked - {c.booking_id for c in provider.calls})
            seen["live, canceled"] = len(provider.live.keys() - set(race.booked))
            return (
                seen["events"]
                == seen["on the test queue"]
                == seen["show_sales"]
                == seen["ticket_provider"]
            ) and seen["never at the provider"] == seen["live, canceled"] == 0

        await until(everything_arrived, within=60, every=0.2)
    except TimeoutError:
        raise AssertionError(f"not everything arrived: {seen}") from None
    finally:
        await conn.close()


async def assert_race_outcome(
    database_url: str,
    provider: FakeProvider,
    received: Received,
    race: Race,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    assert race.statuses["cancel 200"] == BOOKED_BEFORE, race.statuses
    assert set(race.statuses) <= {"book 201", "book 400", "cancel 200"}, race.statuses
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        booked = await assert_show_consistent(conn, race.show_id)
        confirmed = {
            str(row["booking_id"])
            for row in await conn.fetch(
                "SELECT booking_id FROM bookings WHERE status = 'confirmed'"
            )
        }
    finally:
        await conn.close()
    assert booked == len(confirmed) == len(race.booked) <= CAPACITY
    assert confirmed == set(race.booked)
    assert_made_before_canceled(received, race)
    reconcile = await start("reconcile", ["consumers", "reconcile"], env, tmp_path)
    async with asyncio.timeout(20):
        assert await reconcile.process.wait() == 0, reconcile.output()
    # The provider ends with exactly the live bookings: none of the canceled ones.
    assert set(provider.live) == confirmed


def assert_made_before_canceled(received: Received, race: Race) -> None:
    """On the broker: one BookingCanceled per canceled booking, each after its BookingMade."""
    first_seen: dict[tuple[str, str], int] = {}
    for position, message in enumerate(received.messages):
        body = json.loads(message.body)
        first_seen.setdefault((str(message.type), body["booking_id"]), position)
    canceled = {b for kind, b in first_seen if kind == "BookingCanceled"}
    assert canceled == set(race.existing)
    for booking_id in canceled:
        made = first_seen[("BookingMade", booking_id)]
        assert made < first_seen[("BookingCanceled", booking_id)], booking_id
    made_ids = {b for kind, b in first_seen if kind == "BookingMade"}
    assert made_ids == set(race.existing) | set(race.booked)
