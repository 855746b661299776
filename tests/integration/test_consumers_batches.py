"""show_sales applies batches (consumers/batch.py), against real PostgreSQL and RabbitMQ: a
backlog drains into the right totals with each message applied once, in batches of more than
one; acks follow the commit (a cut connection or a crash before it loses and doubles nothing);
a message that fails its batch is retried alone while the others are applied."""

from __future__ import annotations

import random
import re
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import aio_pika
import asyncpg
from prometheus_client import REGISTRY, generate_latest

from consumers.acks import ChannelAcks
from consumers.consumer import ConsumerStats
from consumers.dlq import list_dead_letters
from consumers.retries import POISON
from consumers.topology import Topology
from service.broker import connect
from service.domain import BookingEvent, BookingMade
from service.settings import Settings
from tests.support.consumers import consumer_queues, depths, fast, own_database, running
from tests.support.database import asyncpg_dsn
from tests.support.events import booking_made, canceled, message_for, publish, raw_message
from tests.support.metrics import sample
from tests.support.processes import environment, start
from tests.support.proxy import PostgresProxy
from tests.support.waiting import until

NAME = "show_sales"
SALES = "SELECT show_id, tickets_sold, bookings FROM show_sales WHERE show_id = ANY($1)"
CLAIMED = "SELECT count(*) FROM inbox WHERE consumer = $1 AND message_id = ANY($2)"
Totals = dict[uuid.UUID, tuple[int, int]]  # show -> (tickets sold, bookings)


def expected_totals(events: Sequence[BookingEvent]) -> Totals:
    """What show_sales must hold once each event is applied once."""
    totals: Counter[tuple[uuid.UUID, str]] = Counter()
    for event in events:
        sign = 1 if isinstance(event, BookingMade) else -1
        totals[(event.show_id, "tickets")] += sign * event.number_of_tickets
        totals[(event.show_id, "bookings")] += sign
    shows = {event.show_id for event in events}
    return {show: (totals[(show, "tickets")], totals[(show, "bookings")]) for show in shows}


async def totals(
    db: asyncpg.Connection, shows: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[int, int]]:
    return {row[0]: (row[1], row[2]) for row in await db.fetch(SALES, list(shows))}


async def all_claimed(db: asyncpg.Connection, events: Sequence[BookingEvent]) -> None:
    ids = [event.event_id for event in events]

    async def claimed() -> bool:
        return bool(await db.fetchval(CLAIMED, NAME, ids) >= len(ids))

    await until(claimed, within=60)


async def settled(stats: ConsumerStats, messages: int) -> None:
    """Every message delivered was acked, as applied or as a duplicate."""

    async def done() -> bool:
        return stats.applied + stats.duplicates >= messages

    await until(done, within=60)


def batch_size_count() -> float:
    return sample(
        generate_latest(REGISTRY).decode(), "tickets_consumer_batch_size_count", consumer=NAME
    )


async def take_without_ack(settings: Settings, queues: Topology, count: int) -> None:
    """A consumer that takes `count` messages and goes away without acking them: the broker
    delivers them again, marked redelivered."""
    connection = await connect(settings.amqp_url.get_secret_value(), "tickets-test-taker")
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=count)
        queue = await channel.declare_queue(queues.main, passive=True)
        taken: list[aio_pika.abc.AbstractIncomingMessage] = []
        async with queue.iterator() as messages:
            async for message in messages:
                taken.append(message)
                if len(taken) == count:
                    break
        await channel.close()


async def test_a_backlog_drains_in_batches_each_message_applied_once(
    settings: Settings, db: asyncpg.Connection
) -> None:
    settings = fast(settings, events_exchange=f"{settings.events_exchange}.batches")
    shows = [uuid.uuid4() for _ in range(3)]
    made = [booking_made(shows[n % 3], 1 + n % 4) for n in range(600)]
    undo = canceled(made[7])
    events: list[BookingEvent] = [*made, undo]
    # Copies: side by side (in one batch, likely) and far apart (in another batch).
    messages = [message_for(event) for event in events]
    twice = [message_for(event) for event in random.sample(made, 40)]
    messages[100:100] = twice[:20]
    messages.extend(twice[20:])
    async with consumer_queues(settings, NAME) as (queues,):
        await publish(settings, messages)
        await take_without_ack(settings, queues, 10)  # the first 10 come back redelivered
        before = batch_size_count()
        async with running(settings, [NAME]) as (runner,):
            await settled(runner.stats, len(messages))
        assert await totals(db, shows) == expected_totals(events)
        assert await db.fetchval(CLAIMED, NAME, [e.event_id for e in events]) == len(events)
        assert (runner.stats.applied, runner.stats.duplicates) == (len(events), len(twice))
        assert (runner.stats.retried, runner.stats.dead_lettered) == (0, 0)
        assert runner.stats.largest_batch > 1, runner.stats
        assert batch_size_count() - before == runner.stats.batches
        assert set((await depths(settings, queues)).values()) == {0}


async def test_a_message_that_fails_its_batch_is_retried_alone_and_the_others_apply(
    settings: Settings, db: asyncpg.Connection
) -> None:
    settings = fast(
        settings, events_exchange=f"{settings.events_exchange}.failbatch", consumer_max_attempts=3
    )
    show, full = uuid.uuid4(), uuid.uuid4()
    # show_sales counts in a PostgreSQL integer: this show's row cannot take 100 more tickets,
    # so any batch with the booking below fails (numeric overflow), whatever else it holds.
    await db.execute(
        "INSERT INTO show_sales (show_id, tickets_sold, bookings) VALUES ($1, $2, 1)",
        full,
        2**31 - 50,
    )
    good = [booking_made(show, 2) for _ in range(300)]
    overflowing = booking_made(full, 100)
    unreadable = raw_message(b"{not json", str(uuid.uuid4()))
    messages = [message_for(event) for event in good]
    messages[150:150] = [message_for(overflowing), unreadable]
    async with consumer_queues(settings, NAME) as (queues,):
        await publish(settings, messages)
        async with running(settings, [NAME]) as (runner,):
            await all_claimed(db, good)

            async def both_dead() -> bool:
                return runner.stats.dead_lettered == 2

            await until(both_dead, within=30)
        dead = await list_dead_letters(settings.amqp_url.get_secret_value(), queues)
    assert {d.message_id: d.failure for d in dead} == {
        str(overflowing.event_id): "attempts-exhausted",
        unreadable.message_id: POISON,
    }
    assert await totals(db, [show, full]) == {show: (600, 300), full: (2**31 - 50, 1)}
    assert runner.stats.applied == len(good)
    assert runner.stats.retried == 2  # the overflowing booking's attempts 1 and 2, alone
    assert runner.stats.largest_batch > 1, runner.stats


async def test_a_batch_cut_before_or_after_its_commit_loses_and_doubles_nothing(
    settings: Settings, db: asyncpg.Connection, proxy: PostgresProxy, proxied_url: str
) -> None:
    settings = fast(
        settings.replaced(database_url=proxied_url),
        events_exchange=f"{settings.events_exchange}.cutbatch",
    )
    show = uuid.uuid4()
    events = [booking_made(show, 1 + n % 3) for n in range(1_500)]
    async with consumer_queues(settings, NAME) as (queues,):
        await publish(settings, map(message_for, events))
        async with running(settings, [NAME]) as (runner,):

            async def applied(count: int) -> bool:
                return runner.stats.applied >= count and runner.stats.largest_batch > 1

            await until(lambda: applied(100), within=30)
            # The COMMIT never reaches the server: the batch is rolled back, its messages are
            # kept (copies put back in the queue) and applied later, once.
            proxy.cut_before_commit()
            await until(lambda: cut(proxy, 1), within=30)
            # The server commits, the answer is lost: the outcome is unknown to the consumer,
            # which puts the messages back too; the inbox finds them applied.
            proxy.cut_after_commit()
            await until(lambda: cut(proxy, 2), within=30)
            await all_claimed(db, events)
            await until(lambda: queues_empty(settings, queues), within=30)
    assert await totals(db, [show]) == expected_totals(events)
    assert await db.fetchval(CLAIMED, NAME, [e.event_id for e in events]) == len(events)
    # The batch whose commit's answer was lost was applied then; the runner, not knowing,
    # counts its messages as duplicates when their copies come back.
    assert runner.stats.duplicates > 1
    assert runner.stats.applied + runner.stats.duplicates == len(events)
    assert runner.stats.kept > 1 and runner.stats.dead_lettered == 0


async def queues_empty(settings: Settings, queues: Topology) -> bool:
    return set((await depths(settings, queues)).values()) == {0}


async def cut(proxy: PostgresProxy, times: int) -> bool:
    return proxy.seen.commits_cut >= times


async def test_a_consumer_killed_inside_a_batch_transaction_loses_and_doubles_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    async with own_database() as url:
        own = fast(
            settings.replaced(database_url=url),
            events_exchange=f"{settings.events_exchange}.killbatch",
        )
        show = uuid.uuid4()
        events = [booking_made(show, 1 + n % 2) for n in range(400)]
        async with consumer_queues(own, NAME) as (queues,):
            await publish(own, map(message_for, events))
            env = environment(own, CRASH_ON_BOOKING=str(events[250].booking_id))
            child = await start("crashing", ["tests.support.crashing_consumer"], env, tmp_path)
            assert await child.process.wait() == 70, child.output()
            held = re.search(r"in a batch of (\d+)", child.output())
            assert held is not None and int(held[1]) > 1, child.output()  # inside a batch
            db = await asyncpg.connect(asyncpg_dsn(url))
            try:
                async with running(own, [NAME]):
                    await all_claimed(db, events)
                assert await totals(db, [show]) == expected_totals(events)
                assert await db.fetchval("SELECT count(*) FROM inbox") == len(events)
            finally:
                await db.close()
            assert await queues_empty(own, queues)


async def test_one_ack_frame_settles_a_batch_only_when_nothing_below_it_is_being_handled(
    settings: Settings,
) -> None:
    """On the real broker: with deliveries 1 and 2 still being handled, a batch of 3..8 is
    acked message by message, and 1 and 2 come back when the channel closes; a batch with
    nothing unsettled below it goes in one frame (aio-pika marks only its last message)."""
    settings = settings.replaced(events_exchange=f"{settings.events_exchange}.acks")
    show = uuid.uuid4()
    async with consumer_queues(settings, NAME) as (queues,):
        await publish(settings, [message_for(booking_made(show, 1)) for _ in range(12)])
        connection = await connect(settings.amqp_url.get_secret_value(), "tickets-test-acks")
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=12)
            queue = await channel.declare_queue(queues.main, passive=True)
            taken = [await queue.get(timeout=5) for _ in range(12)]
            acks = ChannelAcks()
            await acks.ack_all(taken[2:8])  # 1 and 2 are held elsewhere: one by one
            assert all(message.processed for message in taken[2:8])
            await acks.ack_all(taken[8:])  # still 1 and 2 below: one by one
            assert all(message.processed for message in taken[8:])
            await channel.close()
        assert (await depths(settings, queues))[queues.main] == 2  # 1 and 2, back
        connection = await connect(settings.amqp_url.get_secret_value(), "tickets-test-acks")
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(queues.main, passive=True)
            again = [await queue.get(timeout=5) for _ in range(2)]
            acks = ChannelAcks()
            await acks.ack_all(again)  # nothing below: one frame
            assert [message.processed for message in again] == [False, True]
            await channel.close()
        assert (await depths(settings, queues))[queues.main] == 0
