"""show_sales against real PostgreSQL and RabbitMQ: one effect per message, poison handling."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import uuid
from collections.abc import Callable

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from yarl import URL

from consumers.bootstrap import consumer_runners, run_until
from consumers.dlq import list_dead_letters
from consumers.retries import POISON
from service.settings import Settings
from tests.support.consumers import consumer_queues, depths, fast, running
from tests.support.events import booking_made, canceled, message_for, publish, raw_message
from tests.support.proxy import proxy_to
from tests.support.waiting import until

NAME = "show_sales"


async def at_least(count: int, db: asyncpg.Connection, query: str, *args: object) -> None:
    async def reached() -> bool:
        return bool(await db.fetchval(query, *args) >= count)

    await until(reached, within=15)


async def stat_reached(stat: Callable[[], int], count: int) -> bool:
    return stat() >= count


async def test_the_same_message_twice_has_one_effect(
    settings: Settings, db: asyncpg.Connection
) -> None:
    settings = fast(settings)
    async with consumer_queues(settings, NAME) as (queues,):
        show_id = uuid.uuid4()
        once, twice = booking_made(show_id, 3), booking_made(show_id, 2)
        # The second event arrives twice in a row and once more after the first one was applied.
        await publish(settings, [message_for(once), message_for(twice), message_for(twice)])
        async with running(settings, [NAME]) as (runner,):
            await at_least(
                2,
                db,
                "SELECT count(*) FROM inbox WHERE message_id = ANY($1)",
                [once.event_id, twice.event_id],
            )
            await publish(settings, [message_for(twice)])
            await until(lambda: stat_reached(lambda: runner.stats.duplicates, 2))
        sales = await db.fetchrow(
            "SELECT tickets_sold, bookings FROM show_sales WHERE show_id = $1", show_id
        )
        assert (sales["tickets_sold"], sales["bookings"]) == (5, 2)
        assert (runner.stats.applied, runner.stats.duplicates) == (2, 2)
        assert set((await depths(settings, queues)).values()) == {0}


async def test_a_cancellation_subtracts_once_whatever_the_order(
    settings: Settings, db: asyncpg.Connection
) -> None:
    settings = fast(settings, events_exchange=f"{settings.events_exchange}.cancel")
    async with consumer_queues(settings, NAME) as (queues,):
        show_id = uuid.uuid4()
        kept, undone = booking_made(show_id, 3), booking_made(show_id, 2)
        undo = canceled(undone)
        sales = "SELECT tickets_sold, bookings FROM show_sales WHERE show_id = $1"
        claimed = "SELECT count(*) FROM inbox WHERE consumer = $1 AND message_id = ANY($2)"
        # The cancellation comes first (its BookingMade is late: retried, or dead-lettered and
        # redriven), and twice.
        await publish(settings, [message_for(undo), message_for(undo)])
        async with running(settings, [NAME]) as (runner,):
            await until(lambda: stat_reached(lambda: runner.stats.duplicates, 1))
            assert tuple(await db.fetchrow(sales, show_id)) == (-2, -1)  # below zero, for now
            await publish(settings, [message_for(kept), message_for(undone)])
            ids = [kept.event_id, undone.event_id, undo.event_id]
            await at_least(3, db, claimed, NAME, ids)
        assert tuple(await db.fetchrow(sales, show_id)) == (3, 1)
        assert (runner.stats.applied, runner.stats.duplicates) == (3, 1)
        assert set((await depths(settings, queues)).values()) == {0}


async def test_poison_goes_to_the_dead_letter_queue_at_once(
    settings: Settings, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    settings = fast(settings, events_exchange=f"{settings.events_exchange}.poison")
    async with consumer_queues(settings, NAME) as (queues,):
        show_id = uuid.uuid4()
        good = [booking_made(show_id) for _ in range(5)]
        missing = booking_made(show_id).body()
        del missing["number_of_tickets"]
        unreadable = raw_message(b"{not json", str(uuid.uuid4()))
        incomplete = raw_message(json.dumps(missing).encode(), str(uuid.uuid4()))
        await publish(settings, [unreadable, incomplete, *map(message_for, good)])
        with caplog.at_level(logging.ERROR, logger="consumers.runner"):
            async with running(settings, [NAME]) as (runner,):
                sold = "SELECT coalesce(max(bookings), 0) FROM show_sales WHERE show_id = $1"
                await at_least(5, db, sold, show_id)
                await until(lambda: stat_reached(lambda: runner.stats.dead_lettered, 2))
        assert runner.stats.retried == 0  # never into a retry loop
        dead = await list_dead_letters(settings.amqp_url.get_secret_value(), queues)
        assert {d.message_id for d in dead} == {unreadable.message_id, incomplete.message_id}
        assert {(d.failure, d.attempts, d.consumer) for d in dead} == {(POISON, 0, NAME)}
        errors = {d.message_id: d.last_error for d in dead}
        assert "Invalid JSON" in errors[unreadable.message_id]
        assert "number_of_tickets: Field required" in errors[incomplete.message_id]
        poison_lines = [r for r in caplog.records if "poison message" in r.getMessage()]
        assert len(poison_lines) == 2
        # Listing took nothing away.
        assert (await depths(settings, queues))[queues.dead_letter] == 2


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_without_its_database_a_consumer_waits_and_says_so_once(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    nowhere_port = closed_port()
    nowhere = f"postgresql+asyncpg://postgres@127.0.0.1:{nowhere_port}/nowhere"
    settings = fast(
        settings.replaced(database_url=nowhere),
        events_exchange=f"{settings.events_exchange}.nodb",
    )
    async with consumer_queues(settings, NAME) as (queues,):
        await publish(settings, [message_for(booking_made(uuid.uuid4()))])
        stopping = asyncio.Event()
        with caplog.at_level(logging.DEBUG, logger="consumers.runner"):
            async with consumer_runners(settings, [NAME]) as runners:
                task = asyncio.create_task(run_until(runners, stopping))
                await until(lambda: retried(caplog, 3))  # several reconnect attempts failed
                stopping.set()
                async with asyncio.timeout(10):
                    await task
        lines = [
            r.getMessage()
            for r in caplog.records
            if "not reachable" in r.getMessage() and r.levelno > logging.DEBUG
        ]
        assert len(lines) == 1, lines
        assert f"PostgreSQL at 127.0.0.1:{nowhere_port} is not reachable" in lines[0]
        assert "set DATABASE_URL" in lines[0]
        # Nothing was consumed, retried or dead-lettered: the message waits for the database.
        counts = await depths(settings, queues)
        assert counts[queues.main] == 1 and counts[queues.dead_letter] == 0


async def test_a_lost_broker_is_logged_once_and_consumption_resumes(
    settings: Settings, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    settings = fast(settings, events_exchange=f"{settings.events_exchange}.outage")
    async with consumer_queues(settings, NAME) as (queues,):
        show_id = uuid.uuid4()
        before, during = (
            [booking_made(show_id) for _ in range(5)],
            [booking_made(show_id) for _ in range(5)],
        )
        sold = "SELECT coalesce(max(bookings), 0) FROM show_sales WHERE show_id = $1"
        amqp = URL(settings.amqp_url.get_secret_value())
        async with proxy_to(amqp.host or "127.0.0.1", amqp.port or 5672) as proxy:
            behind_proxy = settings.replaced(amqp_url=str(amqp.with_port(proxy.port)))
            with caplog.at_level(logging.DEBUG, logger="consumers.runner"):
                async with running(behind_proxy, [NAME]) as (runner,):
                    await publish(settings, map(message_for, before))
                    await at_least(5, db, sold, show_id)
                    proxy.cut()
                    await publish(settings, map(message_for, during))  # straight to the broker
                    await until(lambda: retried(caplog, 2))  # reconnect attempts failed
                    assert await db.fetchval(sold, show_id) == 5
                    proxy.heal()
                    await at_least(10, db, sold, show_id)
        lines = [
            r.getMessage()
            for r in caplog.records
            if "RabbitMQ" in r.getMessage() and r.levelno > logging.DEBUG
        ]
        assert len(lines) == 2, lines
        assert "RabbitMQ at 127.0.0.1:" in lines[0] and "is not reachable" in lines[0]
        assert "RabbitMQ is back" in lines[1]
        assert runner.stats.reconnects == 1 and runner.stats.applied == 10
        assert set((await depths(settings, queues)).values()) == {0}


async def test_a_lost_database_costs_no_attempts_and_consumption_resumes(
    settings: Settings, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    settings = fast(settings, events_exchange=f"{settings.events_exchange}.dbdown")
    async with consumer_queues(settings, NAME) as (queues,):
        show_id = uuid.uuid4()
        events = [booking_made(show_id) for _ in range(300)]
        sold = "SELECT coalesce(max(bookings), 0) FROM show_sales WHERE show_id = $1"
        database = make_url(settings.database_url.get_secret_value())
        async with proxy_to(database.host or "127.0.0.1", database.port or 5432) as proxy:
            behind_proxy = settings.replaced(
                database_url=database.set(port=proxy.port).render_as_string(False)
            )
            with caplog.at_level(logging.INFO, logger="consumers.runner"):
                async with running(behind_proxy, [NAME]) as (runner,):
                    await publish(settings, map(message_for, events[:100]))
                    await at_least(30, db, sold, show_id)
                    proxy.cut()  # its connections gone (a COMMIT cut: test_consumers_batches)
                    # The rest arrives during the outage: a batch consumer applies 300 in a few
                    # dozen ms, so all sent before the cut could be applied before it.
                    await publish(settings, map(message_for, events[100:]))
                    await until(lambda: noticed(caplog, "PostgreSQL"))
                    stalled = await db.fetchval(sold, show_id)
                    assert stalled < len(events), "the outage came too late to matter"
                    proxy.heal()
                    await at_least(len(events), db, sold, show_id)
        lines = [r.getMessage() for r in caplog.records if "PostgreSQL" in r.getMessage()]
        assert len(lines) == 2, lines
        assert "PostgreSQL at 127.0.0.1:" in lines[0] and "is not reachable" in lines[0]
        assert "PostgreSQL is back" in lines[1]
        # Not the messages' fault: nothing retried or dead-lettered, each applied once; those
        # in flight were put back as they were (not charged a delivery of the delivery limit).
        assert (runner.stats.retried, runner.stats.dead_lettered) == (0, 0)
        assert runner.stats.kept > 0
        assert await db.fetchval(sold, show_id) == len(events)
        assert set((await depths(settings, queues)).values()) == {0}


async def retried(caplog: pytest.LogCaptureFixture, times: int) -> bool:
    """The runner tried to reconnect `times` times more after its first failure (its debug
    lines): the condition, rather than a sleep, that several attempts happened."""
    return sum("retrying in" in r.getMessage() for r in caplog.records) >= times


async def noticed(caplog: pytest.LogCaptureFixture, dependency: str) -> bool:
    return any(
        dependency in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
    )
