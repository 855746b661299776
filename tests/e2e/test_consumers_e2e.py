"""End to end, every part its own process: API → PostgreSQL → relay → RabbitMQ → consumers.

500 concurrent bookings over HTTP on a few shows; afterwards show_sales equals the bookings
exactly (per show, via `python -m consumers reconcile`) and the ticket provider saw each
accepted booking once.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg

from consumers.bootstrap import NAMES
from service.settings import Settings
from tests.support.api import booking_body, show_body
from tests.support.consumers import consumer_queues, depths, fast, own_database
from tests.support.database import asyncpg_dsn
from tests.support.processes import environment, start, wait_until_ready
from tests.support.provider import FakeProvider, serving
from tests.support.waiting import until

REQUESTS = 500
CAPACITIES = (100, 150, 200, 300)  # 750 seats for ~1,000 tickets asked: some requests refused


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_bookings_over_http_reach_show_sales_and_the_provider(
    settings: Settings, tmp_path: Path
) -> None:
    provider = FakeProvider(failure_rate=0.1)  # a provider with hiccups, as in life
    port = free_port()
    async with own_database() as database_url, serving(provider):
        settings = fast(
            settings.replaced(database_url=database_url),
            events_exchange=f"{settings.events_exchange}.e2e",
            consumer_max_attempts=20,
        )
        async with consumer_queues(settings, *NAMES) as queues:
            env = environment(
                settings,
                HTTP_HOST="127.0.0.1",
                HTTP_PORT=str(port),
                TICKET_PROVIDER_URL=provider.url,
                RELAY_POLL_INTERVAL="0.1",
            )
            api = await start("api", ["service", "api"], env, tmp_path)
            relay = await start("relay", ["service", "relay"], env, tmp_path)
            consumers = await start("consumers", ["consumers", "run", "all"], env, tmp_path)
            children = [api, relay, consumers]
            try:
                base = f"http://127.0.0.1:{port}"
                await wait_until_ready(f"{base}/ready", api)
                started = time.monotonic()
                statuses, accepted = await book_concurrently(base)
                booked_in = time.monotonic() - started
                assert set(statuses) <= {201, 400}, statuses
                assert statuses[201] > 0 and statuses[400] > 0  # sold out shows refused the rest

                db = await asyncpg.connect(asyncpg_dsn(database_url))
                try:

                    async def everything_arrived() -> bool:
                        sold = await db.fetchval(
                            "SELECT coalesce(sum(bookings), 0) FROM show_sales"
                        )
                        return sold == len(accepted) and set(provider.bookings_made) >= accepted

                    await until(everything_arrived, within=60)
                    arrived_in = time.monotonic() - started
                    in_table = {
                        str(b)
                        for b in await db.fetchval("SELECT array_agg(booking_id) FROM bookings")
                    }
                finally:
                    await db.close()
                for child in reversed(children):
                    assert await child.stop() == 0, child.output()
            finally:
                for child in children:
                    await child.kill()

            reconcile = await start("reconcile", ["consumers", "reconcile"], env, tmp_path)
            async with asyncio.timeout(20):
                assert await reconcile.process.wait() == 0, reconcile.output()
            assert f"matches the bookings table ({len(CAPACITIES)} shows)" in reconcile.output()
            assert in_table == accepted
            assert set(provider.bookings_made) == accepted
            assert set(provider.bookings_made.values()) == {1}
            for topology in queues:
                assert set((await depths(settings, topology)).values()) == {0}, topology.main
            print(
                f"\ne2e: {REQUESTS} requests, {len(accepted)} accepted in {booked_in:.2f} s,"
                f" all in show_sales and at the provider after {arrived_in:.2f} s;"
                f" provider calls {len(provider.calls)}"
            )


async def book_concurrently(base: str) -> tuple[Counter[int], set[str]]:
    """Create the shows, then fire every booking request at once; (statuses, accepted ids)."""
    draw = random.Random(7)
    async with aiohttp.ClientSession(base) as http:
        show_ids = []
        for capacity in CAPACITIES:
            async with http.post("/shows", json=show_body(capacity)) as response:
                assert response.status == 201
                show_ids.append((await response.json())["show_id"])

        async def book(show_id: str, tickets: int) -> tuple[int, str | None]:
            async with http.post("/book-tickets", json=booking_body(show_id, tickets)) as response:
                body = await response.json()
                return response.status, body.get("booking_id")

        answers = await asyncio.gather(
            *(book(draw.choice(show_ids), draw.randint(1, 3)) for _ in range(REQUESTS))
        )
    statuses = Counter(status for status, _ in answers)
    return statuses, {booking_id for status, booking_id in answers if status == 201 and booking_id}
