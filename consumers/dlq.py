"""The dead-letter queue of a consumer: look at it, and send its messages back.

`list` takes every message without acking and then closes the channel, which returns them all
to the queue in their order: looking changes nothing. `redrive` moves at most the messages that
were there when it started (one that fails again while it runs is not sent round in a loop),
each published to the main queue with a confirm before it is acked.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from consumers.retries import (
    ATTEMPTS,
    CONSUMER,
    DEAD_LETTERED_AT,
    FAILURE,
    LAST_ERROR,
    REDRIVEN,
    copy_with,
    redrive_headers,
)
from consumers.topology import Topology
from service.broker import connect
from service.common import timeouts

BODY_PREVIEW_CHARS = 120
# x-first-death-reason of a message RabbitMQ dead-lettered, as `failure`, and what it means.
BROKER_REASONS = {"delivery_limit": "delivery-limit", "rejected": "unexpected-error"}
BROKER_ERRORS = {
    "delivery-limit": "delivered CONSUMER_DELIVERY_LIMIT times without an ack: the consumer"
    " crashed (or lost its channel) while holding it each time",
    "unexpected-error": "handling it failed unexpectedly: see the consumer's log",
}


@dataclass(frozen=True, slots=True)
class DeadLetteredMessage:
    message_id: str | None
    correlation_id: str | None
    consumer: str
    failure: str
    attempts: int
    last_error: str
    dead_lettered_at: str
    redriven: int
    body: bytes

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> DeadLetteredMessage:
        headers = message.headers

        def text(name: str) -> str:
            value = headers.get(name)
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")

        def number(name: str) -> int:
            value = headers.get(name)
            return value if isinstance(value, int) else 0

        # Dead-lettered by RabbitMQ itself (no headers of ours): why, from its own header.
        reason = BROKER_REASONS.get(text("x-first-death-reason"), text("x-first-death-reason"))
        return cls(
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            consumer=text(CONSUMER),
            failure=text(FAILURE) or reason,
            attempts=number(ATTEMPTS),
            last_error=text(LAST_ERROR) or BROKER_ERRORS.get(reason, ""),
            dead_lettered_at=text(DEAD_LETTERED_AT),
            redriven=number(REDRIVEN),
            body=message.body,
        )

    def __str__(self) -> str:
        body = self.body.decode(errors="replace")
        if len(body) > BODY_PREVIEW_CHARS:
            body = body[: BODY_PREVIEW_CHARS - 1] + "…"
        return (
            f"{self.message_id}  {self.failure} after {self.attempts} attempts"
            f" at {self.dead_lettered_at} (redriven {self.redriven}x)\n"
            f"    last error: {self.last_error}\n"
            f"    correlation_id: {self.correlation_id}  body: {body}"
        )


async def list_dead_letters(amqp_url: str, topology: Topology) -> list[DeadLetteredMessage]:
    connection = await connect(amqp_url, "tickets-dlq-list")
    async with connection:
        channel = await connection.channel()
        queue = await _existing(channel, topology.dead_letter)
        found = []
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            found.append(DeadLetteredMessage.of(message))
    # The connection is closed unacked: every message went back where it was.
    return found


async def redrive(amqp_url: str, topology: Topology) -> int:
    """Send the dead-lettered messages back to the main queue; returns how many."""
    connection = await connect(amqp_url, "tickets-dlq-redrive")
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await _existing(channel, topology.main)
        queue = await _existing(channel, topology.dead_letter)
        waiting = queue.declaration_result.message_count or 0
        moved = 0
        while moved < waiting:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            await channel.default_exchange.publish(
                copy_with(message, redrive_headers(message.headers)),
                topology.main,
                mandatory=True,
                timeout=timeouts.BROKER_CONFIRM,
            )
            await message.ack()
            moved += 1
    return moved


class NoSuchQueue(Exception):
    def __init__(self, queue: str) -> None:
        super().__init__(
            f"there is no queue {queue!r} on RabbitMQ: the consumer declares its queues when"
            " it first runs (python -m consumers run NAME); check EVENTS_EXCHANGE"
        )


async def _existing(channel: AbstractChannel, name: str) -> AbstractQueue:
    """The queue as the consumer declared it; looking never creates one."""
    try:
        return await channel.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        raise NoSuchQueue(name) from None
