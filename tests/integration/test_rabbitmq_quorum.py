"""What the local RabbitMQ (3.10) does with quorum queues, which issue 14's consumer queues rely
on: a delivery limit that dead-letters (at least once) instead of dropping, and TTL delay queues.

Each test declares queues of its own (unique names) and deletes them afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import aio_pika
import pytest
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from service.settings import Settings
from tests.support.waiting import until


@pytest.fixture
async def connection(settings: Settings) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(settings.amqp_url.get_secret_value())
    async with connection:
        yield connection


@pytest.fixture
async def names(connection: AbstractRobustConnection) -> AsyncIterator[list[str]]:
    """Queue names for this test; every one is deleted at the end."""
    names = [f"quorum_test_{uuid.uuid4().hex[:8]}.{role}" for role in ("main", "dlq", "delay")]
    yield names
    channel = await connection.channel()
    for name in names:
        await channel.queue_delete(name)


def at_least_once_to(dead_letter_queue: str, **extra: Any) -> dict[str, Any]:
    # at-least-once needs reject-publish; with the default drop-head RabbitMQ accepts the
    # declaration but silently falls back to at-most-once.
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "",  # the default exchange routes by queue name
        "x-dead-letter-routing-key": dead_letter_queue,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        **extra,
    }


async def publish(channel: AbstractChannel, queue: str, body: bytes) -> None:
    message = aio_pika.Message(body, message_id=body.decode(), delivery_mode=2)
    await channel.default_exchange.publish(message, routing_key=queue)


async def get(channel: AbstractChannel, queue: str) -> AbstractIncomingMessage:
    """The next message of `queue` (basic.get, to be acked or nacked); fails after 3 s."""
    source = await channel.get_queue(queue, ensure=False)
    got: list[AbstractIncomingMessage] = []

    async def arrived() -> bool:
        message = await source.get(fail=False, no_ack=False)
        got.extend([message] if message is not None else [])
        return bool(got)

    await until(arrived, within=3.0, every=0.02)
    return got[0]


def deaths(message: AbstractIncomingMessage) -> list[dict[str, Any]]:
    """The x-death header: one entry per (queue, reason) the message was dead-lettered for."""
    return cast(list[dict[str, Any]], (message.headers or {})["x-death"])


async def is_empty(channel: AbstractChannel, queue: str) -> bool:
    declared = await channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count == 0


async def test_delivery_limit_dead_letters_after_requeues_and_lost_channels(
    connection: AbstractRobustConnection, names: list[str]
) -> None:
    main, dlq, _ = names
    channel = await connection.channel(publisher_confirms=True)
    await channel.declare_queue(dlq, durable=True, arguments={"x-queue-type": "quorum"})
    limit = at_least_once_to(dlq, **{"x-delivery-limit": 2})
    await channel.declare_queue(main, durable=True, arguments=limit)
    await publish(channel, main, b"poison")

    counts = []
    for attempt in range(3):  # the first delivery and two more
        if attempt < 2:
            message = await get(channel, main)
            await message.nack(requeue=True)
        else:  # a consumer that crashes: its channel closes without an ack
            crashing = await connection.channel()
            message = await get(crashing, main)
            await crashing.close()
        counts.append((message.headers or {}).get("x-delivery-count"))
    assert counts == [0, 1, 2]

    dead = await get(channel, dlq)
    assert dead.body == b"poison" and dead.message_id == "poison"
    assert (dead.headers or {})["x-first-death-reason"] == "delivery_limit"
    (death,) = deaths(dead)
    assert (death["reason"], death["queue"], death["count"]) == ("delivery_limit", main, 1)
    await dead.ack()
    assert await is_empty(channel, main)


async def test_quorum_ttl_delay_queue_dead_letters_into_the_main_queue(
    connection: AbstractRobustConnection, names: list[str]
) -> None:
    main, dlq, delay = names
    channel = await main_and_dead_letters(connection, main, dlq)
    # Message TTL on a quorum queue: supported since RabbitMQ 3.10, at-least-once included.
    await channel.declare_queue(
        delay, durable=True, arguments=at_least_once_to(main, **{"x-message-ttl": 200})
    )
    await publish(channel, delay, b"later")
    retried = await get(channel, main)
    (death,) = deaths(retried)
    assert (death["reason"], death["queue"]) == ("expired", delay)
    await retried.ack()


async def test_classic_delay_queue_feeds_a_quorum_queue_but_only_at_most_once(
    connection: AbstractRobustConnection, names: list[str]
) -> None:
    main, dlq, delay = names
    channel = await main_and_dead_letters(connection, main, dlq)
    classic = {
        "x-message-ttl": 200,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": main,
    }
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
        refusing = await connection.channel()
        await refusing.declare_queue(
            delay, durable=True, arguments=classic | {"x-dead-letter-strategy": "at-least-once"}
        )
    await channel.declare_queue(delay, durable=True, arguments=classic)
    await publish(channel, delay, b"later")
    await (await get(channel, main)).ack()


async def main_and_dead_letters(
    connection: AbstractRobustConnection, main: str, dlq: str
) -> AbstractRobustChannel:
    """A channel with confirms, `dlq` and `main` declared: quorum, `main` dead-lettering at
    least once into `dlq`."""
    channel = await connection.channel(publisher_confirms=True)
    await channel.declare_queue(dlq, durable=True, arguments={"x-queue-type": "quorum"})
    await channel.declare_queue(main, durable=True, arguments=at_least_once_to(dlq))
    return channel
