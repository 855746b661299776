"""RabbitMQ wiring shared by the relay and the consumers.

The events exchange is declared in this one place: RabbitMQ refuses a second declaration with
other arguments (PRECONDITION_FAILED), so the relay and every consumer must declare it alike.
"""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

CONNECT_TIMEOUT_SECONDS = 5.0
CLOSE_TIMEOUT_SECONDS = 2.0
# What a lost, refusing or hung RabbitMQ raises.
BROKER_ERRORS = (
    OSError,
    TimeoutError,
    aio_pika.exceptions.AMQPError,
    aio_pika.exceptions.ChannelInvalidStateError,
)


def unrouted_name(events_exchange: str) -> str:
    """Where an event goes when no queue is bound for its routing key: kept, not dropped."""
    return f"{events_exchange}.unrouted"


async def connect(amqp_url: str, connection_name: str) -> AbstractConnection:
    """A plain (not robust) connection: callers own reconnecting, so every outage is logged
    once by the code that knows what it was doing, and nothing is replayed behind its back."""
    return await aio_pika.connect(
        amqp_url,
        timeout=CONNECT_TIMEOUT_SECONDS,
        client_properties={"connection_name": connection_name},
    )


async def declare_events_exchange(channel: AbstractChannel, name: str) -> AbstractExchange:
    """The durable topic exchange for events, with an alternate exchange for unroutable ones.

    A BookingMade published before any consumer has bound its queue would otherwise vanish
    silently; the alternate exchange drops it into the durable queue `<name>.unrouted`.
    """
    unrouted = unrouted_name(name)
    fallback = await channel.declare_exchange(unrouted, aio_pika.ExchangeType.FANOUT, durable=True)
    queue = await channel.declare_queue(unrouted, durable=True)
    await queue.bind(fallback)
    return await channel.declare_exchange(
        name,
        aio_pika.ExchangeType.TOPIC,
        durable=True,
        arguments={"alternate-exchange": unrouted},
    )


async def close_quietly(connection: AbstractConnection) -> None:
    """Close, bounded in time: a broker that stopped answering must not hang the way out."""
    with contextlib.suppress(*BROKER_ERRORS):
        async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
            await connection.close()
