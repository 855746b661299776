"""The generic consumer runner: one durable queue per consumer, ack only after the effect.

For each message: parse it (unreadable → dead-letter queue at once), let the consumer apply it,
then ack. A failed attempt is not requeued at the head of the queue: a copy goes to a delay
queue (or, attempts spent, to the dead-letter queue) with publisher confirms, and only then is
the original acked — so a message is never lost and never blocks the ones behind it. Delivery
stays at least once; the consumers' inbox makes the repeats harmless.

When RabbitMQ or PostgreSQL goes away the runner stops taking messages, lets the broker keep the
unacked ones, backs off (capped, jittered), logs once per state change and reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from consumers.failures import Rejected, Unavailable
from consumers.messages import PoisonMessage, parse_booking_made
from consumers.retries import (
    POISON,
    REJECTED,
    DeadLetter,
    RetryPolicy,
    attempts_of,
    copy_with,
    dead_letter_headers,
    retry_headers,
)
from consumers.topology import Topology, declare
from service.api.correlation import current as current_correlation_id
from service.broker import BROKER_ERRORS, close_quietly, connect
from service.domain import BookingMade
from service.outages import Backoff, OutageLog, run_until_stopped
from service.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BACKOFF_SECONDS = 10.0
CLOSE_TIMEOUT_SECONDS = 2.0
PUBLISH_TIMEOUT_SECONDS = 10.0
# A stop waits this long for messages in flight (a provider call is bounded by its own
# timeout); a lost connection only briefly, since their acks cannot arrive anyway.
DRAIN_ON_STOP_SECONDS = 30.0
DRAIN_ON_LOSS_SECONDS = 2.0


class Consumer(Protocol):
    """One downstream effect of BookingMade. The runner owns delivery; the consumer owns the
    effect and its deduplication."""

    @property
    def name(self) -> str: ...

    async def check(self) -> None:
        """Raise Unavailable while a dependency (the database) is away."""

    async def handle(self, message_id: uuid.UUID, event: BookingMade) -> bool:
        """Apply the event once; False if this message_id was applied before.

        Raise Unavailable (our infrastructure is away), Rejected (never retry) or anything else
        (retry later)."""


@dataclass(slots=True)
class ConsumerStats:
    applied: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0
    reconnects: int = 0

    def __str__(self) -> str:
        return (
            f"{self.applied} applied, {self.duplicates} duplicates skipped, {self.retried} retried,"
            f" {self.dead_lettered} dead-lettered, {self.reconnects} reconnects"
        )


class ConsumerRunner:
    def __init__(self, settings: Settings, consumer: Consumer) -> None:
        self._settings = settings
        self._consumer = consumer
        self.topology = Topology.of(
            settings.consumer_queue_prefix, consumer.name, settings.consumer_retry_delays_ms
        )
        self._policy = RetryPolicy(
            settings.consumer_max_attempts, settings.consumer_retry_delays_ms
        )
        self._stopping = asyncio.Event()
        self._outages = OutageLog(log, consumer.name, "consuming")
        self._started = False
        self._in_flight: set[asyncio.Task[object]] = set()
        self.stats = ConsumerStats()
        self.consuming = asyncio.Event()  # set while messages are being taken, for tests

    @property
    def name(self) -> str:
        return self._consumer.name

    def stop(self) -> None:
        """Stop taking messages, finish those in flight, close; run() then returns."""
        self._stopping.set()

    async def run(self) -> None:
        await run_until_stopped(self._consume, self._stopping, self._outages, MAX_BACKOFF_SECONDS)
        log.info("%s stopped: %s", self.name, self.stats)

    async def _consume(self, backoff: Backoff) -> None:
        """One session: from connecting until a stop or a lost dependency (raised)."""
        await self._consumer.check()
        async with self._channel() as channel:
            queue = await _broker(declare(channel, self._settings.events_exchange, self.topology))
            await _broker(channel.set_qos(prefetch_count=self._settings.consumer_prefetch))
            lost = _Lost()
            channel.close_callbacks.add(lost.on_channel_closed)
            tag = await _broker(queue.consume(partial(self._deliver, channel, lost)))
            self._outages.recovered()
            if self._started:
                self.stats.reconnects += 1
            else:
                log.info("%s: consuming", self.name)
            self._started = True
            backoff.reset()
            self.consuming.set()
            try:
                await _first(self._stopping, lost.event)
            finally:
                self.consuming.clear()
            with contextlib.suppress(*BROKER_ERRORS):
                async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                    await queue.cancel(tag)  # no new deliveries; those in flight finish
            await self._drain(DRAIN_ON_LOSS_SECONDS if lost.error else DRAIN_ON_STOP_SECONDS)
            if lost.error:
                raise lost.error

    async def _drain(self, within: float) -> None:
        if not self._in_flight:
            return
        _, pending = await asyncio.wait(set(self._in_flight), timeout=within)
        for task in pending:  # unacked: the broker delivers them again, the inbox dedupes
            task.cancel()
        if pending:
            log.warning(
                "%s: %d messages still in flight after %.0f s", self.name, len(pending), within
            )
            await asyncio.wait(pending)

    @contextlib.asynccontextmanager
    async def _channel(self) -> AsyncIterator[AbstractChannel]:
        try:
            connection = await connect(self._settings.amqp_url, f"tickets-consumer-{self.name}")
        except BROKER_ERRORS as error:
            raise Unavailable("RabbitMQ", error) from error
        try:
            # on_return_raises: a retry copy the broker could not route must fail, not vanish.
            channel = await _broker(
                connection.channel(publisher_confirms=True, on_return_raises=True)
            )
            yield channel
        finally:
            # Closing returns every unacked message to its queue.
            await close_quietly(connection)

    async def _deliver(
        self,
        channel: AbstractChannel,
        lost: _Lost,
        message: AbstractIncomingMessage,
    ) -> None:
        """aio-pika runs this as a task per delivery: up to `prefetch` at once."""
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        current_correlation_id.set(message.correlation_id or "-")  # logs of this message carry it
        try:
            await self._process(channel, message)
        except Unavailable as error:
            # Left unacked: the broker keeps it for when the dependency is back.
            lost.set(error)
        finally:
            self._in_flight.discard(task)

    async def _process(self, channel: AbstractChannel, message: AbstractIncomingMessage) -> None:
        headers = dict(message.headers)
        attempts = attempts_of(headers)
        try:
            message_id, event = parse_booking_made(message.body, message.message_id)
        except PoisonMessage as poison:
            log.error(
                "%s: poison message %s -> dead-letter queue: %s",
                self.name,
                message.message_id,
                poison,
            )
            await self._dead_letter(channel, message, headers, attempts, POISON, str(poison))
            return
        try:
            applied = await self._consumer.handle(message_id, event)
        except (Unavailable, asyncio.CancelledError):
            raise
        except Rejected as rejected:
            log.error("%s: message %s rejected: %s", self.name, message_id, rejected)
            await self._dead_letter(
                channel, message, headers, attempts + 1, REJECTED, str(rejected)
            )
            return
        except Exception as error:
            await self._after_failure(channel, message, headers, attempts + 1, error)
            return
        await _broker(message.ack())
        if applied:
            self.stats.applied += 1
        else:
            self.stats.duplicates += 1

    async def _after_failure(
        self,
        channel: AbstractChannel,
        message: AbstractIncomingMessage,
        headers: Mapping[str, object],
        attempts: int,
        error: Exception,
    ) -> None:
        reason = _describe(error)
        step = self._policy.after_failure(attempts)
        if isinstance(step, DeadLetter):
            log.error(
                "%s: message %s failed %d times, last: %s -> dead-letter queue",
                self.name,
                message.message_id,
                attempts,
                reason,
            )
            await self._dead_letter(channel, message, headers, attempts, step.failure, reason)
            return
        log.warning(
            "%s: message %s attempt %d/%d failed (%s); retrying in %d ms",
            self.name,
            message.message_id,
            attempts,
            self._policy.max_attempts,
            reason,
            step.delay_ms,
        )
        copy = copy_with(message, retry_headers(headers, attempts, reason))
        await _publish_then_ack(channel, copy, self.topology.retry(step.delay_ms), message)
        self.stats.retried += 1

    async def _dead_letter(
        self,
        channel: AbstractChannel,
        message: AbstractIncomingMessage,
        headers: Mapping[str, object],
        attempts: int,
        failure: str,
        error: str,
    ) -> None:
        copy = copy_with(message, dead_letter_headers(headers, self.name, attempts, failure, error))
        await _publish_then_ack(channel, copy, self.topology.dead_letter, message)
        self.stats.dead_lettered += 1


async def _publish_then_ack(
    channel: AbstractChannel,
    copy: aio_pika.Message,
    queue: str,
    original: AbstractIncomingMessage,
) -> None:
    """The copy is confirmed by the broker before the original is acked: a crash in between
    leaves two copies (deduplicated later), never none."""
    await _broker(
        channel.default_exchange.publish(
            copy, queue, mandatory=True, timeout=PUBLISH_TIMEOUT_SECONDS
        )
    )
    await _broker(original.ack())


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class _Lost:
    """A session's dependency went away: the first cause is kept, the session ends."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.error: Unavailable | None = None

    def set(self, error: Unavailable) -> None:
        if self.error is None:
            self.error = error
            self.event.set()

    def on_channel_closed(self, _: object, error: object) -> None:
        cause = error if isinstance(error, BaseException) else ConnectionError("channel closed")
        self.set(Unavailable("RabbitMQ", cause))


async def _broker(operation: Awaitable[T]) -> T:
    """Run a broker step; a lost or refusing RabbitMQ becomes Unavailable."""
    try:
        return await operation
    except BROKER_ERRORS as error:
        raise Unavailable("RabbitMQ", error) from error


async def _first(*events: asyncio.Event) -> None:
    """Until one of the events is set."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
