"""Several API processes on one database: the database, not a process, keeps the limit.

Real `python -m service api` processes, each with its own pool and coalescer, take 200 concurrent
requests for one show; then the tables must show no overbooking and agree exactly.
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from service.settings import Settings
from tests.support.api import booking_body, show_body
from tests.support.invariants import assert_show_consistent
from tests.support.processes import Child, environment, start, wait_until_ready

REQUESTS = 200
TICKETS = 150


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_api(
    settings: Settings, tmp_path: Path, name: str, port: int, workers: int = 1
) -> Child:
    env = environment(
        settings,
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(port),
        API_WORKERS=str(workers),
        # Two processes' pools on a PostgreSQL shared with other test runs: stay small.
        DB_POOL_SIZE="4",
        LOG_LEVEL="WARNING",
    )
    child = await start(name, ["service", "api"], env, tmp_path)
    await wait_until_ready(f"http://127.0.0.1:{port}/ready", child)
    return child


async def stop_all(children: list[Child]) -> None:
    codes = await asyncio.gather(*(child.stop() for child in children))
    assert codes == [0] * len(children), [child.output() for child in children]


async def race_over(ports: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """Create a show, then fire REQUESTS bookings at once, spread over `ports`; returns the
    show id and (tickets asked, status) per request."""
    sizes = [random.randint(1, 2) for _ in range(REQUESTS)]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(f"http://127.0.0.1:{ports[0]}/shows", json=show_body(TICKETS)) as r:
            assert r.status == 201
            show_id = str((await r.json())["show_id"])

        async def book(n: int, tickets: int) -> tuple[int, int]:
            url = f"http://127.0.0.1:{ports[n % len(ports)]}/book-tickets"
            async with session.post(url, json=booking_body(show_id, tickets)) as response:
                await response.read()
                return tickets, response.status

        results = await asyncio.gather(*(book(n, t) for n, t in enumerate(sizes)))
    return show_id, results


async def assert_limit_kept(
    db: asyncpg.Connection, show_id: str, results: list[tuple[int, int]]
) -> None:
    statuses = Counter(status for _, status in results)
    assert set(statuses) <= {201, 400}, statuses  # no 5xx, no 503 busy
    booked = await assert_show_consistent(db, show_id)
    assert booked == sum(tickets for tickets, status in results if status == 201)
    # Demand (~300 tickets) exceeds supply: the show sells out, up to a last odd seat.
    assert TICKETS - 1 <= booked <= TICKETS
    refused = [tickets for tickets, status in results if status == 400]
    assert all(tickets > TICKETS - booked for tickets in refused)
    rows = await db.fetchval("SELECT count(*) FROM bookings WHERE show_id = $1", uuid.UUID(show_id))
    assert rows == statuses[201]


@pytest.mark.slow
async def test_two_api_processes_on_one_database(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    async with asyncio.timeout(60):
        ports = [free_port(), free_port()]
        children = [
            await start_api(settings, tmp_path, f"api-{n}", port) for n, port in enumerate(ports)
        ]
        try:
            show_id, results = await race_over(ports)
        finally:
            await stop_all(children)
        await assert_limit_kept(db, show_id, results)


@pytest.mark.slow
async def test_api_workers_share_one_port(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    async with asyncio.timeout(60):
        port = free_port()
        child = await start_api(settings, tmp_path, "api-workers", port, workers=2)
        try:
            show_id, results = await race_over([port])
        finally:
            await stop_all([child])
        await assert_limit_kept(db, show_id, results)
        # SIGTERM to the parent stopped its workers too: nothing listens on the port any more.
        with pytest.raises(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()


@pytest.mark.slow
async def test_two_stop_signals_stop_the_api_once_cleanly(
    settings: Settings, tmp_path: Path
) -> None:
    """Ctrl-C under `make run`: the terminal's SIGINT, then the Makefile's SIGTERM."""
    api = await start_api(settings, tmp_path, "api-twice", free_port())
    api.process.send_signal(signal.SIGINT)
    api.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        assert await api.process.wait() == 0
    assert "Traceback" not in api.output()
