"""A message that crashes its consumer process: after the queue's delivery limit it is in the
dead-letter queue, and every other message flows (none is dead-lettered with it). And one whose
delivery fails unexpectedly: dead-lettered at once, not left unacked holding its prefetch slot.

The consumer is `python -m consumers run show_sales` with a crash wired in for one booking
(tests/support/crashing_consumer.py), restarted each time it dies, as a supervisor would.
It holds up to 128 messages at once: without the isolation of redelivered messages
(consumers/isolation.py), the poison's neighbours would be charged every crash too.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path

import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage

from consumers import dlq, show_sales
from consumers.acks import ChannelAcks
from consumers.topology import Topology
from service.settings import Settings
from tests.support.consumers import consumer_queues, depths, fast, own_database, running
from tests.support.database import asyncpg_dsn
from tests.support.events import booking_made, message_for, publish
from tests.support.processes import Child, environment, start
from tests.support.waiting import until

LIMIT = 2  # deliveries that may end without an ack; the next such end dead-letters
EVENTS, POISON_AT = 120, 10
QUIET = 5.0  # seconds without progress, the consumer running: it is as done as it gets


async def test_a_message_that_crashes_the_consumer_ends_in_the_dlq_and_the_rest_flow(
    settings: Settings, tmp_path: Path
) -> None:
    async with own_database() as url:
        own = fast(
            settings.replaced(database_url=url, consumer_delivery_limit=LIMIT),
            events_exchange=f"{settings.events_exchange}.crashing",
        )
        async with consumer_queues(own, show_sales.NAME) as (queues,):
            show_id = uuid.uuid4()
            events = [booking_made(show_id) for _ in range(EVENTS)]
            poison = events[POISON_AT]
            await publish(own, map(message_for, events))
            env = environment(
                own,
                CRASH_ON_BOOKING=str(poison.booking_id),
            )
            db = await asyncpg.connect(asyncpg_dsn(url))
            try:
                poison_dead = partial(dead_lettered, own, queues)
                crashes = await supervise(env, tmp_path, db, EVENTS - 1, poison_dead)
                applied = await db.fetch("SELECT message_id FROM inbox")
            finally:
                await db.close()
            dead = await dlq.list_dead_letters(own.amqp_url.get_secret_value(), queues)
            remaining = await depths(own, queues)

    assert crashes == LIMIT + 1  # the first delivery and LIMIT more, each a crash
    assert [m.message_id for m in dead] == [str(poison.event_id)]
    assert (dead[0].failure, dead[0].attempts) == ("delivery-limit", 0)
    assert "without an ack" in dead[0].last_error
    others = {e.event_id for e in events} - {poison.event_id}
    assert {row["message_id"] for row in applied} == others
    assert remaining == {q: 1 if q == queues.dead_letter else 0 for q in queues.queue_names()}


Done = Callable[[], Awaitable[bool]]


async def dead_lettered(settings: Settings, queues: Topology) -> bool:
    return (await depths(settings, queues))[queues.dead_letter] > 0


async def supervise(
    env: dict[str, str], log_dir: Path, db: asyncpg.Connection, done_at: int, dead: Done
) -> int:
    """Run the crashing consumer, restarting it whenever it dies, until `done_at` events are
    applied and it keeps running; returns how often it crashed."""
    crashes = 0
    async with asyncio.timeout(90):
        while True:
            child = await start(
                f"consumer-{crashes}", ["tests.support.crashing_consumer"], env, log_dir
            )
            # A crash may come as the supervisor decides the consumer is done: it counts.
            if await applied_or_died(child, db, done_at, dead) and await child.stop() != 70:
                return crashes
            assert child.process.returncode == 70, child.output()
            crashes += 1
            assert crashes <= LIMIT + 2, "still crashing: the delivery limit let it through"


async def applied_or_died(child: Child, db: asyncpg.Connection, done_at: int, dead: Done) -> bool:
    """True once `done_at` events are applied and the poison is dead-lettered (a process may
    apply all the others, alone after a crash, before the poison's last delivery), or nothing
    more is applied for QUIET seconds,
    with the process still running and consuming; False if it died. (The quiet time counts
    from its "consuming" line: a start slowed by a busy machine is not a quiet consumer.)"""
    loop = asyncio.get_running_loop()
    seen, changed = -1, loop.time()
    while child.process.returncode is None:
        count = await db.fetchval("SELECT count(*) FROM inbox")
        if count != seen or "show_sales: consuming" not in child.output():
            seen, changed = count, loop.time()
        if (count >= done_at and await dead()) or loop.time() - changed > QUIET:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_delivery_that_fails_unexpectedly_is_dead_lettered_not_left_holding_its_slot(
    settings: Settings,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One message at a time: a message left unacked would hold the only slot, and stop the rest.
    own = fast(
        settings,
        events_exchange=f"{settings.events_exchange}.unexpected",
        consumer_prefetch=1,
        consumer_batch_max=1,
    )
    show_id = uuid.uuid4()
    events = [booking_made(show_id) for _ in range(20)]
    broken = events[3]
    ack_all = ChannelAcks.ack_all

    async def failing(acks: ChannelAcks, messages: Sequence[AbstractIncomingMessage]) -> None:
        # A bug in handling a message, outside the consumer's effect (which would be retried),
        # on the way every message takes to its ack, alone or in a batch.
        if any(message.message_id == str(broken.event_id) for message in messages):
            raise RuntimeError("a bug in the delivery itself")
        await ack_all(acks, messages)

    monkeypatch.setattr(ChannelAcks, "ack_all", failing)
    async with consumer_queues(own, show_sales.NAME) as (queues,):
        await publish(own, map(message_for, events))
        with caplog.at_level(logging.ERROR, logger="consumers.runner"):
            async with running(own, [show_sales.NAME]) as (runner,):

                async def the_rest_applied() -> bool:
                    return runner.stats.applied == len(events) - 1

                await until(the_rest_applied, within=20)
        dead = await dlq.list_dead_letters(own.amqp_url.get_secret_value(), queues)
        assert [m.message_id for m in dead] == [str(broken.event_id)]
        assert dead[0].failure == "unexpected-error"
        remaining = await depths(own, queues)
    failed = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None  # with its traceback
    assert str(broken.event_id) in failed[0].getMessage()
    assert remaining == {q: 1 if q == queues.dead_letter else 0 for q in queues.queue_names()}
