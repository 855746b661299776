"""RabbitMQ wiring shared by the relay, the consumers and their CLI: connections, channels, the
events exchange.

The events exchange is declared in this one place: RabbitMQ refuses a second declaration with
other arguments (PRECONDITION_FAILED), so the relay and every consumer must declare it alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from yarl import URL

from service.common import timeouts
from service.common.outages import BROKER_ERRORS, RABBITMQ, guarded


def unrouted_name(events_exchange: str) -> str:
    """Where an event goes when no queue is bound for its routing key: kept, not dropped."""
    return f"{events_exchange}.unrouted"


async def connect(amqp_url: str, connection_name: str) -> AbstractConnection:
    """A plain (not robust) connection: callers own reconnecting, so every outage is logged
    once by the code that knows what it was doing, and nothing is replayed behind its back."""
    url = URL(amqp_url)
    if "heartbeat" not in url.query:
        url = url.update_query(heartbeat=timeouts.BROKER_HEARTBEAT)
    return await aio_pika.connect(
        url,
        timeout=timeouts.CONNECT,
        client_properties={"connection_name": connection_name},
    )


@contextlib.asynccontextmanager
async def confirmed_channel(
    amqp_url: str, connection_name: str, on_return_raises: bool = False
) -> AsyncIterator[AbstractChannel]:
    """A channel with publisher confirms on a connection of its own, closed on the way out.

    A broker that is away raises Unavailable. Closing returns every message the channel
    received and did not ack to its queue. `on_return_raises`: a mandatory publish the broker
    could not route fails instead of vanishing.
    """
    connection = await guarded(RABBITMQ, connect(amqp_url, connection_name))
    try:
        yield await guarded(
            RABBITMQ,
            connection.channel(publisher_confirms=True, on_return_raises=on_return_raises),
        )
    finally:
        await close_quietly(connection)


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
        async with asyncio.timeout(timeouts.CLOSE):
            await connection.close()
