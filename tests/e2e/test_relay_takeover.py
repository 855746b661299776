"""A leading relay that crashes (SIGKILL: no clean-up, no unlock) is replaced by its standby,
and every event still arrives."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aio_pika
import aiohttp
import asyncpg
import pytest

from service.settings import Settings
from tests.support.bookings import book_many
from tests.support.broker import bound_queue
from tests.support.consumers import own_database
from tests.support.database import asyncpg_dsn
from tests.support.metrics import sample
from tests.support.processes import Child, environment, start
from tests.support.waiting import until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def leading(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            return sample(await response.text(), "tickets_relay_leader") == 1
    except aiohttp.ClientError:
        return False


@pytest.mark.slow
async def test_a_killed_leader_is_replaced_and_nothing_is_lost(
    settings: Settings, tmp_path: Path
) -> None:
    ports = [free_port(), free_port()]
    async with own_database() as url:
        own = settings.replaced(database_url=url, relay_poll_interval=0.1)
        connection = await aio_pika.connect(own.amqp_url.get_secret_value())
        async with connection, bound_queue(await connection.channel(), own.events_exchange) as got:
            relays = [
                await start(
                    f"relay-{n}",
                    ["service", "relay"],
                    environment(own, HTTP_HOST="127.0.0.1", RELAY_HTTP_PORT=str(port)),
                    tmp_path,
                )
                for n, port in enumerate(ports)
            ]
            try:
                async with asyncio.timeout(60):
                    await until(lambda: _any_leads(ports), within=20)
                    leader = 0 if await leading(ports[0]) else 1
                    await book_many(url, 2, 50)
                    await got.wait_for(100)
                    await relays[leader].kill()  # the crash: its session dies with it
                    await book_many(url, 2, 50)
                    standby = 1 - leader
                    await until(lambda: leading(ports[standby]), within=20)
                    await got.wait_for_all(await event_ids(url), within=30)
            finally:
                for relay in relays:
                    await stop_quietly(relay)


async def _any_leads(ports: list[int]) -> bool:
    return any([await leading(port) for port in ports])


async def event_ids(url: str) -> set[str]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return {str(r["event_id"]) for r in await conn.fetch("SELECT event_id FROM outbox")}
    finally:
        await conn.close()


async def stop_quietly(child: Child) -> None:
    if child.process.returncode is None:
        await child.stop()
