"""Consumers run in-process, their queues, and a database of a test's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from consumers.bootstrap import consumer_runners, run_until, topology
from consumers.runner import ConsumerRunner
from consumers.topology import Topology, declare
from service.broker import connect
from service.settings import Settings
from tests.support.database import create_migrated_database, drop_database

# Short delays so retries happen within a test; many attempts unless a test wants few.
FAST = {"consumer_retry_delays_ms": (50, 100, 200), "consumer_max_attempts": 5}


def fast(settings: Settings, **changes: object) -> Settings:
    return settings.replaced(**(FAST | changes))


@asynccontextmanager
async def consumer_queues(settings: Settings, *names: str) -> AsyncIterator[list[Topology]]:
    """Declare consumers' queues before anything is published (so nothing goes unrouted);
    delete them when the test is done, so they do not collect later tests' events."""
    from tests.conftest import RUN_EXCHANGES, RUN_QUEUES

    declared = [topology(settings, name) for name in names]
    names_of_queues = [q for queues in declared for q in queues.queue_names()]
    # Deleted by the run even if this test dies before its own clean-up.
    RUN_QUEUES.extend(q for q in names_of_queues if q not in RUN_QUEUES)
    if settings.events_exchange not in RUN_EXCHANGES:
        RUN_EXCHANGES.append(settings.events_exchange)
    connection = await connect(settings.amqp_url.get_secret_value(), "tickets-test-declare")
    async with connection:
        channel = await connection.channel()
        for queues in declared:
            await declare(channel, settings.events_exchange, queues)
    try:
        yield declared
    finally:
        connection = await connect(settings.amqp_url.get_secret_value(), "tickets-test-delete")
        async with connection:
            channel = await connection.channel()
            for name in names_of_queues:
                await channel.queue_delete(name)


async def depths(settings: Settings, queues: Topology) -> dict[str, int]:
    """Ready (not unacked) messages in each queue of the topology."""
    connection = await connect(settings.amqp_url.get_secret_value(), "tickets-test-depths")
    async with connection:
        channel = await connection.channel()
        counts = {}
        for name in queues.queue_names():
            queue = await channel.declare_queue(name, passive=True)
            counts[name] = queue.declaration_result.message_count or 0
    return counts


@asynccontextmanager
async def running(
    settings: Settings, names: Sequence[str], within: float = 20.0
) -> AsyncIterator[list[ConsumerRunner]]:
    """The named consumers running as asyncio tasks; stopped gracefully (bounded) on exit."""
    stopping = asyncio.Event()
    async with consumer_runners(settings, names) as runners:
        task = asyncio.create_task(run_until(runners, stopping))
        try:
            async with asyncio.timeout(within):
                for runner in runners:
                    await runner.consuming.wait()
            yield runners
        finally:
            stopping.set()
            async with asyncio.timeout(within):
                await task


@asynccontextmanager
async def own_database() -> AsyncIterator[str]:
    """A migrated database for one test, for checks that look at every row (reconcile)."""
    url = await create_migrated_database("tickets_consumers")
    try:
        yield url
    finally:
        await drop_database(url)
