"""The dead-letter queue of a consumer: look at it, and send its messages back.

`list` takes every message without acking and then closes the channel, which returns them all
to the queue in their order: looking changes nothing. `redrive` moves at most the messages that
were there when it started (one that fails again while it runs is not sent round in a loop),
each published to the main queue with a confirm before it is acked.
"""

from __future__ import annotations

from dataclasses import dataclass

from aio_pika.abc import AbstractIncomingMessage

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

        return cls(
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            consumer=text(CONSUMER),
            failure=text(FAILURE),
            attempts=number(ATTEMPTS),
            last_error=text(LAST_ERROR),
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
        queue = await channel.declare_queue(topology.dead_letter, durable=True)
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
        # Only the two queues this needs (declared alike by the runner, so no conflict); the
        # consumer binds the main queue to the exchange when it starts.
        await channel.declare_queue(topology.main, durable=True)
        queue = await channel.declare_queue(topology.dead_letter, durable=True)
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
