"""What happens to one message: applied and acked, retried later, or dead-lettered.

    parse ──unreadable──▶ dead-letter queue at once (poison: it can never succeed)
      │
    consumer.handle ──ok──▶ ack
      ├── Unavailable (our PostgreSQL/RabbitMQ is away) ──▶ a copy back to the main queue, as
      │                     it was; costs no attempt (nor a delivery of the delivery limit)
      ├── Rejected (refused for good) ──▶ dead-letter queue at once
      └── anything else ──▶ a copy to the delay queue of this attempt, or, attempts spent,
                            to the dead-letter queue

A copy is confirmed by the broker before the original is acked: a crash in between leaves two
copies (the consumers' inbox makes the second harmless), never none. A failed message is never
requeued at the head of the main queue, so it neither blocks the messages behind it nor spins.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from consumers.acks import ChannelAcks
from consumers.consumer import Consumer, ConsumerStats
from consumers.failures import Rejected, Unavailable
from consumers.messages import PoisonMessage, parse_event
from consumers.retries import (
    POISON,
    REJECTED,
    GiveUp,
    RetryPolicy,
    attempts_of,
    copy_with,
    dead_letter_headers,
    keep_headers,
    retry_headers,
)
from consumers.topology import Topology
from service.common import timeouts
from service.common.outages import RABBITMQ, guarded
from service.domain import BookingEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a consumer's messages go, and how often they are tried."""

    consumer: Consumer
    topology: Topology
    policy: RetryPolicy
    stats: ConsumerStats


class Delivery:
    """One message received on `channel`, taken from start to its ack."""

    def __init__(
        self,
        route: Route,
        channel: AbstractChannel,
        acks: ChannelAcks,
        message: AbstractIncomingMessage,
    ) -> None:
        self._route = route
        self._channel = channel
        self.acks = acks
        self.message = message
        self._headers = dict(message.headers)
        self._attempts = attempts_of(self._headers)  # failed attempts before this one
        self._name = route.consumer.name

    @property
    def alone(self) -> bool:
        """Handled on its own, never in a batch: delivered before (it may be what crashed a
        process) or failed before (it may be what fails a batch)."""
        return self.message.redelivered is True or self._attempts > 0

    def parsed(self) -> tuple[uuid.UUID, BookingEvent] | None:
        """The deduplication key and the event; None for a poison message (process() it)."""
        message = self.message
        try:
            return parse_event(message.body, message.message_id, message.type)
        except PoisonMessage:
            return None

    async def process(self) -> None:
        """Raises Unavailable when our own PostgreSQL or RabbitMQ is away: the message is then
        kept for when the dependency is back (put back, or left unacked if RabbitMQ is away)."""
        try:
            message = self.message
            message_id, event = parse_event(message.body, message.message_id, message.type)
        except PoisonMessage as poison:
            log.error(
                "%s: poison message %s -> dead-letter queue: %s",
                self._name,
                self.message.message_id,
                poison,
            )
            await self._dead_letter(self._attempts, POISON, str(poison))
            return
        try:
            applied = await self._route.consumer.handle(message_id, event)
        except Unavailable:
            await self.put_back()
            raise
        except asyncio.CancelledError:
            raise
        except Rejected as rejected:
            log.error("%s: message %s rejected: %s", self._name, message_id, rejected)
            await self._dead_letter(self._attempts + 1, REJECTED, str(rejected))
            return
        except Exception as error:
            await self._after_failure(_describe(error))
            return
        await self.acked(applied, message_id, event)

    async def acked(self, applied: bool, message_id: uuid.UUID, event: BookingEvent) -> None:
        """The effect is committed (or was, by an earlier copy): ack, and count it."""
        await self.acks.ack_all([self.message])
        self.counted(applied, message_id, event)

    def counted(self, applied: bool, message_id: uuid.UUID, event: BookingEvent) -> None:
        """Its ack was sent (with a batch's, perhaps): count it."""
        self._route.stats.count_applied(applied, event.published_at)
        log.debug(
            "%s: %s booking %s (message %s)",
            self._name,
            "applied" if applied else "already applied",
            event.booking_id,
            message_id,
        )

    async def _after_failure(self, reason: str) -> None:
        attempts = self._attempts + 1
        step = self._route.policy.after_failure(attempts)
        if isinstance(step, GiveUp):
            log.error(
                "%s: message %s failed %d times, last: %s -> dead-letter queue",
                self._name,
                self.message.message_id,
                attempts,
                reason,
            )
            await self._dead_letter(attempts, step.failure, reason)
            return
        log.warning(
            "%s: message %s attempt %d/%d failed (%s); retrying in %d ms",
            self._name,
            self.message.message_id,
            attempts,
            self._route.policy.max_attempts,
            reason,
            step.delay_ms,
        )
        copy = copy_with(self.message, retry_headers(self._headers, attempts, reason))
        await self._move(copy, self._route.topology.retry(step.delay_ms))
        self._route.stats.count_retried()

    async def put_back(self) -> None:
        """Our dependency is away, not the message's fault: it goes back to the end of the main
        queue as it came, attempts and all. Left unacked instead, it would come back when the
        channel closes, but charged a delivery of the queue's delivery limit, which is there
        for messages that crash the consumer, not for outages."""
        copy = copy_with(self.message, keep_headers(self._headers))
        await self._move(copy, self._route.topology.main)
        self._route.stats.kept += 1

    async def _dead_letter(self, attempts: int, failure: str, error: str) -> None:
        headers = dead_letter_headers(self._headers, self._name, attempts, failure, error)
        await self._move(copy_with(self.message, headers), self._route.topology.dead_letter)
        self._route.stats.count_dead_lettered()

    async def _move(self, copy: aio_pika.Message, queue: str) -> None:
        """The copy is confirmed by the broker before the original is acked."""
        publishing = self._channel.default_exchange.publish(
            copy, queue, mandatory=True, timeout=timeouts.BROKER_CONFIRM
        )
        await guarded(RABBITMQ, publishing)
        await self.acks.ack_all([self.message])


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
