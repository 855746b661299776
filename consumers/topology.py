"""The queues of one consumer, and their declaration on RabbitMQ.

    events (topic) ──BookingMade──▶ {exchange}.{name}     the main queue: the consumer reads it
                   ─BookingCanceled─▶ (the same queue)
    retry copy ─▶ {exchange}.{name}.retry.{ms}   x-message-ttl=ms, then back to the main queue
    given up    ─▶ {exchange}.{name}.dlq          kept until `dlq redrive` or a person looks

Names start with the events exchange's: two deployments sharing a broker (each with its own
EVENTS_EXCHANGE) never share a queue.

Quorum queues, all of them. The main queue has a delivery limit (CONSUMER_DELIVERY_LIMIT): a
message delivered that many times without an ack, because the consumer holding it crashed each
time, is dead-lettered instead of crashing the consumer forever. Dead-lettering is
at-least-once (a message leaves a queue only once the queue it goes to has confirmed it;
RabbitMQ needs `x-overflow: reject-publish` for that, and silently falls back to at-most-once
without it).

A failed message is not put back at the head of the main queue (that would block the messages
behind it, or spin): a copy waits in a delay queue whose TTL expires it back into the main queue
through the default exchange. One delay queue per delay, because a queue expires only from its
head: with one TTL per queue, the head is always the first to expire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractQueue

from service.broker import declare_events_exchange
from service.domain import BOOKING_CANCELED, BOOKING_MADE

# Every consumer hears both of a booking's events: one that books must also hear it undone.
ROUTING_KEYS = (BOOKING_MADE, BOOKING_CANCELED)


@dataclass(frozen=True, slots=True)
class Topology:
    main: str
    dead_letter: str
    retry_delays_ms: tuple[int, ...]
    delivery_limit: int

    @classmethod
    def of(
        cls,
        events_exchange: str,
        consumer: str,
        retry_delays_ms: tuple[int, ...],
        delivery_limit: int,
    ) -> Topology:
        name = f"{events_exchange}.{consumer}"
        return cls(name, f"{name}.dlq", retry_delays_ms, delivery_limit)

    def retry(self, delay_ms: int) -> str:
        return f"{self.main}.retry.{delay_ms}"

    def queue_names(self) -> list[str]:
        return [self.main, self.dead_letter, *(self.retry(d) for d in set(self.retry_delays_ms))]

    def main_arguments(self) -> dict[str, Any]:
        return {**dead_letters_to(self.dead_letter), "x-delivery-limit": self.delivery_limit}

    def retry_arguments(self, delay_ms: int) -> dict[str, Any]:
        return {**dead_letters_to(self.main), "x-message-ttl": delay_ms}


QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}


def dead_letters_to(queue: str) -> dict[str, Any]:
    """A quorum queue whose dead letters go, at least once, to `queue`."""
    return {
        **QUORUM,
        "x-dead-letter-exchange": "",  # the default exchange: routes by queue name
        "x-dead-letter-routing-key": queue,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",  # required by at-least-once
    }


async def declare(
    channel: AbstractChannel, events_exchange: str, topology: Topology
) -> AbstractQueue:
    """Declare (idempotently) every queue of the topology; returns the main queue.

    Durable quorum queues and persistent messages: a broker restart loses nothing. RabbitMQ
    refuses (PRECONDITION_FAILED) a declaration whose arguments differ from the queue's: a
    classic queue of an older version under the same name, or another delivery limit.
    """
    events = await declare_events_exchange(channel, events_exchange)
    await channel.declare_queue(topology.dead_letter, durable=True, arguments=QUORUM)
    main = await channel.declare_queue(
        topology.main, durable=True, arguments=topology.main_arguments()
    )
    for routing_key in ROUTING_KEYS:
        await main.bind(events, routing_key=routing_key)
    for delay_ms in sorted(set(topology.retry_delays_ms)):
        await channel.declare_queue(
            topology.retry(delay_ms), durable=True, arguments=topology.retry_arguments(delay_ms)
        )
    return main
