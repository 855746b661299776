"""Every process can be probed and scraped: the API (with several workers, one scrape reports
them all), the relay and the consumers on their own small HTTP servers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import aiohttp
import pytest

from service.settings import Settings
from tests.support.api import booking_body, show_body
from tests.support.consumers import consumer_queues, own_database
from tests.support.metrics import sample
from tests.support.processes import Child, environment, start, wait_until_ready
from tests.support.waiting import until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def get(url: str) -> tuple[int, str]:
    """On a connection of its own: with several workers, any of them may answer."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def pid_answering(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return int((await response.json())["pid"])


@pytest.mark.slow
async def test_api_workers_are_processes_of_their_own_and_one_scrape_counts_them_all(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = environment(
        settings, HTTP_HOST="127.0.0.1", HTTP_PORT=str(port), API_WORKERS="2", DB_POOL_SIZE="4"
    )
    api = await start("api-workers", ["service", "api"], env, tmp_path)
    async with asyncio.timeout(60):
        try:
            await wait_until_ready(f"{base}/ready", api)
            pids: set[int] = set()

            async def both_answered() -> bool:
                # New connections land on either worker (SO_REUSEPORT) once both listen; a
                # spawned worker takes a second or two to start.
                pids.add(await pid_answering(f"{base}/health"))
                return len(pids) == 2

            await until(both_answered, within=30, every=0.01)
            assert api.process.pid not in pids
            booked = await book_on_new_connections(base, 30)
            scrapes = [await get(f"{base}/metrics") for _ in range(6)]
            counted = {
                sample(text, "tickets_bookings_total", outcome="accepted") for _, text in scrapes
            }
            assert counted == {booked}, "every scrape reports both workers' bookings"
            # One worker dies: the parent stops the other and exits 1.
            os.kill(pids.pop(), signal.SIGKILL)
            assert await api.process.wait() == 1
        finally:
            await api.kill()


async def book_on_new_connections(base: str, count: int) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/shows", json=show_body(1_000)) as created,
    ):
        show_id = str((await created.json())["show_id"])
    statuses = []
    for _ in range(count):
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{base}/book-tickets", json=booking_body(show_id, 1)) as response,
        ):
            statuses.append(response.status)
    assert statuses == [201] * count
    return count


@pytest.mark.slow
async def test_the_relay_and_the_consumers_answer_probes_and_scrapes(
    settings: Settings, tmp_path: Path
) -> None:
    relay_port, consumers_port = free_port(), free_port()
    async with own_database() as url, consumer_queues(settings, "show_sales"):
        env = environment(
            settings.replaced(database_url=url),
            HTTP_HOST="127.0.0.1",
            RELAY_HTTP_PORT=str(relay_port),
            CONSUMERS_HTTP_PORT=str(consumers_port),
        )
        children = [
            await start("relay", ["service", "relay"], env, tmp_path),
            await start("consumers", ["consumers", "run", "show_sales"], env, tmp_path),
        ]
        try:
            async with asyncio.timeout(30):
                await probe_ready(relay_port, children[0], "tickets_relay_leader", 1)
                await probe_ready(consumers_port, children[1], "tickets_consumer_dlq_messages", 0)
        finally:
            for child in children:
                await child.stop()


async def probe_ready(port: int, child: Child, metric: str, value: float) -> None:
    base = f"http://127.0.0.1:{port}"
    await wait_until_ready(f"{base}/ready", child)
    assert (await get(f"{base}/health"))[0] == 200

    async def reports() -> bool:
        return sample((await get(f"{base}/metrics"))[1], metric) == value

    await until(reports)


@pytest.mark.slow
async def test_a_relay_that_cannot_reach_the_broker_is_alive_but_not_ready(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = environment(
        settings.replaced(amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/"),
        HTTP_HOST="127.0.0.1",
        RELAY_HTTP_PORT=str(port),
    )
    relay = await start("relay", ["service", "relay"], env, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(20):
            await wait_until_ready(f"{base}/health", relay)
            status, body = await get(f"{base}/ready")
            assert status == 503 and "not connected" in body
    finally:
        await relay.stop()
