"""The generic consumer runner: the connection lifecycle of one consumer.

Connect, declare the queues, set the prefetch, consume, and on a stop or a lost dependency
cancel the consumer, let the messages in flight finish (bounded), close. What happens to each
message is a Delivery's (consumers/delivery.py).

When RabbitMQ or PostgreSQL goes away the runner stops taking messages, keeps the ones it holds
(put back in the queue, or left to the broker), backs off (capped, jittered), logs once per
state change and reconnects. Every request to RabbitMQ is bounded in time (BROKER_CALL), and a
dead path to it is noticed by the AMQP heartbeat. A session starts taking one message at a time,
so that what a crashed process held comes back alone (consumers/isolation.py); a message whose
handling fails unexpectedly goes to the dead-letter queue rather than hold its prefetch slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from opentelemetry import context as otel_context

from consumers.acks import ChannelAcks
from consumers.batch import Batches
from consumers.consumer import BatchConsumer, Consumer, ConsumerStats
from consumers.delivery import Delivery, Route
from consumers.failures import Unavailable
from consumers.isolation import CarefulSubscription
from consumers.retries import RetryPolicy
from consumers.topology import Topology, declare
from service.broker import confirmed_channel
from service.common import context, metrics, timeouts, tracing
from service.common.dependencies import dependencies_of
from service.common.outages import (
    BROKER_ERRORS,
    RABBITMQ,
    Backoff,
    Fatal,
    OutageLog,
    guarded,
    run_until_stopped,
)
from service.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# A stop waits this long for messages in flight (a provider call is bounded by its own
# timeout); a lost connection only briefly, since their acks cannot arrive anyway.
DRAIN_ON_STOP_SECONDS = 30.0
DRAIN_ON_LOSS_SECONDS = 2.0
DLQ_MEASURE_SECONDS = 2.0  # how often tickets_consumer_dlq_messages is read


class ConsumerRunner:
    def __init__(self, settings: Settings, consumer: Consumer) -> None:
        self._settings = settings
        self._consumer = consumer
        self.topology = Topology.of(
            settings.events_exchange,
            consumer.name,
            settings.consumer_retry_delays_ms,
            settings.consumer_delivery_limit,
        )
        self.stats = ConsumerStats(consumer.name)
        self._dead_letters = metrics.CONSUMER_DLQ.labels(consumer.name)
        policy = RetryPolicy(settings.consumer_max_attempts, settings.consumer_retry_delays_ms)
        self._route = Route(consumer, self.topology, policy, self.stats)
        self._batches = batches_of(consumer, settings.consumer_batch_max, self.stats)
        self._stopping = asyncio.Event()
        self._outages = OutageLog(
            log, consumer.name, "consuming", dependencies_of(settings).explain
        )
        self._started = False
        self._in_flight: set[asyncio.Task[object]] = set()
        self.consuming = asyncio.Event()  # set while messages are being taken, for tests

    @property
    def name(self) -> str:
        return self._consumer.name

    def stop(self) -> None:
        """Stop taking messages, finish those in flight, close; run() then returns."""
        self._stopping.set()

    async def run(self) -> None:
        max_backoff = self._settings.consumer_max_backoff
        await run_until_stopped(self._consume, self._stopping, self._outages, max_backoff)
        log.info("%s stopped: %s", self.name, self.stats)

    async def _consume(self, backoff: Backoff) -> None:
        """One session: from connecting until a stop or a lost dependency (raised)."""
        await self._consumer.check()
        amqp_url = self._settings.amqp_url.get_secret_value()
        connection_name = f"tickets-consumer-{self.name}"
        # on_return_raises: a retry copy the broker could not route must fail, not vanish.
        async with confirmed_channel(amqp_url, connection_name, on_return_raises=True) as channel:
            queue = await self._declare(channel)
            lost = _Lost()
            channel.close_callbacks.add(lost.on_channel_closed)
            acks = ChannelAcks()  # delivery tags are the channel's

            async def deliver(message: AbstractIncomingMessage) -> None:
                delivery = Delivery(self._route, channel, acks, message)
                _continue_trace(message)
                await self._deliver(delivery, subscription, lost)

            subscription = CarefulSubscription(
                channel, queue, deliver, self._settings.consumer_prefetch, broker_call
            )
            await subscription.start()
            self._started_consuming(backoff)
            try:
                await self._watch(channel, lost)
            finally:
                self.consuming.clear()
            with contextlib.suppress(Unavailable, TimeoutError):
                async with asyncio.timeout(timeouts.CLOSE):
                    await subscription.stop()  # no new deliveries; those in flight finish
            await self._drain(DRAIN_ON_LOSS_SECONDS if lost.error else DRAIN_ON_STOP_SECONDS)
            if lost.error:
                raise lost.error

    async def _watch(self, channel: AbstractChannel, lost: _Lost) -> None:
        """Until a stop or a lost dependency; meanwhile, the dead-letter queue's depth."""
        while not (self._stopping.is_set() or lost.event.is_set()):
            await self._measure_dead_letters(channel)
            await _first(self._stopping, lost.event, within=DLQ_MEASURE_SECONDS)

    async def _measure_dead_letters(self, channel: AbstractChannel) -> None:
        try:
            async with asyncio.timeout(timeouts.CLOSE):
                queue = await channel.declare_queue(self.topology.dead_letter, passive=True)
        except (*BROKER_ERRORS, TimeoutError) as error:
            log.debug("%s: dead-letter queue not measured: %r", self.name, error)
            return
        self._dead_letters.set(queue.declaration_result.message_count or 0)

    async def _declare(self, channel: AbstractChannel) -> AbstractQueue:
        exchange = self._settings.events_exchange
        try:
            return await broker_call(declare(channel, exchange, self.topology))
        except Unavailable as error:
            if isinstance(error.__cause__, aio_pika.exceptions.ChannelPreconditionFailed):
                # No retry fixes this: a queue of that name exists with other arguments.
                raise QueueConflict(self.topology.main, error.__cause__) from None
            raise

    def _started_consuming(self, backoff: Backoff) -> None:
        self._outages.recovered()
        if self._started:
            self.stats.reconnects += 1
        else:
            log.info("%s: consuming", self.name)
        self._started = True
        backoff.reset()
        self.consuming.set()

    async def _deliver(
        self,
        delivery: Delivery,
        subscription: CarefulSubscription,
        lost: _Lost,
    ) -> None:
        """aio-pika runs this as a task per delivery: up to `prefetch` at once."""
        message = delivery.message
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        # The log lines of this message carry its correlation id.
        context.correlation_id.set(message.correlation_id or context.NO_CORRELATION_ID)
        try:
            await subscription.delivered(message.headers)
            if self._batches is None or delivery.alone:
                await delivery.process()
            else:
                await self._batches.submit(delivery)
        except Unavailable as error:
            # Kept (put back, or unacked when RabbitMQ is away) for when the dependency is back.
            lost.set(error)
        except Exception:
            # A bug in handling the message, not in the consumer's effect (which is retried):
            # the message must not stay unacked, holding its prefetch slot until a restart.
            log.exception(
                "%s: message %s failed unexpectedly -> dead-letter queue",
                self.name,
                message.message_id,
            )
            await _reject(delivery, lost)
        finally:
            self._in_flight.discard(task)

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


class QueueConflict(Fatal):
    def __init__(self, queue: str, error: BaseException) -> None:
        super().__init__(
            f"RabbitMQ refused to declare queue {queue!r} ({error}): a queue of that name exists"
            " with other arguments (an older classic queue, another CONSUMER_DELIVERY_LIMIT);"
            " see README, 'Moving an existing deployment to quorum queues'"
        )


def batches_of(consumer: Consumer, batch_max: int, stats: ConsumerStats) -> Batches | None:
    """Batches for a consumer that applies them; None: each message alone."""
    return Batches(consumer, batch_max, stats) if isinstance(consumer, BatchConsumer) else None


async def broker_call(step: Awaitable[T]) -> T:
    """One request to RabbitMQ, bounded in time; a failure or no answer is Unavailable."""
    return await guarded(RABBITMQ, asyncio.wait_for(step, timeouts.BROKER_CALL))


def _continue_trace(message: AbstractIncomingMessage) -> None:
    """The message's trace, for its log lines and the calls it makes (the instrumentation's
    span instead, when spans are recorded). Each delivery runs in a task of its own, whose
    context ends with it."""
    trace_context = tracing.consumer_context(message.headers)
    if trace_context is not None:
        otel_context.attach(trace_context)


async def _reject(delivery: Delivery, lost: _Lost) -> None:
    """Into the dead-letter queue through the broker (x-death reason `rejected`)."""
    try:
        await broker_call(delivery.message.nack(requeue=False))
    except Unavailable as error:
        lost.set(error)
    else:
        delivery.acks.settled(delivery.message.delivery_tag)


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


async def _first(*events: asyncio.Event, within: float) -> None:
    """Until one of the events is set, or `within` seconds have passed."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
