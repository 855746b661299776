"""The queues of one consumer, and their declaration on RabbitMQ.

    events (topic) ──BookingMade──▶ {prefix}{name}            the main queue: the consumer reads it
                   ─BookingCanceled─▶ (the same queue)
    retry copy ─▶ {prefix}{name}.retry.{ms}   x-message-ttl=ms, dead-letters back to the main queue
    given up    ─▶ {prefix}{name}.dlq          kept until `dlq redrive` or a person looks

A failed message is not put back at the head of the main queue (that would block the messages
behind it, or spin): a copy waits in a delay queue whose TTL expires it back into the main queue
through the default exchange. One delay queue per delay, because a classic queue expires only
from its head: with one TTL per queue, the head is always the first to expire.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    @classmethod
    def of(cls, prefix: str, consumer: str, retry_delays_ms: tuple[int, ...]) -> Topology:
        name = f"{prefix}{consumer}"
        return cls(main=name, dead_letter=f"{name}.dlq", retry_delays_ms=retry_delays_ms)

    def retry(self, delay_ms: int) -> str:
        return f"{self.main}.retry.{delay_ms}"

    def queue_names(self) -> list[str]:
        return [self.main, self.dead_letter, *(self.retry(d) for d in set(self.retry_delays_ms))]


async def declare(
    channel: AbstractChannel, events_exchange: str, topology: Topology
) -> AbstractQueue:
    """Declare (idempotently) every queue of the topology; returns the main queue.

    Durable queues and persistent messages: a broker restart loses nothing. Classic queues,
    not quorum queues: one node here, and a quorum queue's default delivery limit (RabbitMQ 4)
    would drop a message requeued too often instead of dead-lettering it our way.
    """
    events = await declare_events_exchange(channel, events_exchange)
    main = await channel.declare_queue(topology.main, durable=True)
    for routing_key in ROUTING_KEYS:
        await main.bind(events, routing_key=routing_key)
    await channel.declare_queue(topology.dead_letter, durable=True)
    for delay_ms in sorted(set(topology.retry_delays_ms)):
        await channel.declare_queue(
            topology.retry(delay_ms),
            durable=True,
            arguments={
                "x-message-ttl": delay_ms,
                "x-dead-letter-exchange": "",  # the default exchange: routes by queue name
                "x-dead-letter-routing-key": topology.main,
            },
        )
    return main
