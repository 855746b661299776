"""The publish pipeline of the leading relay: outbox rows → RabbitMQ, confirmed, then marked.

The leader reads a batch of unpublished rows, publishes them all at once (many in flight,
publisher confirms) and marks as published only the confirmed prefix. A crash between confirm
and mark republishes with the same message_id: delivery is at least once, consumers deduplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime

import aio_pika
import asyncpg
from aio_pika.abc import AbstractExchange
from opentelemetry import context as otel_context

from service.common import metrics
from service.common.outages import Unavailable, guarded, postgresql_on
from service.common.tracing import TRACEPARENT, context_of, recording
from service.db.outbox import OutboxRow, fetch_unpublished, mark_published


def message_for(row: OutboxRow) -> aio_pika.Message:
    """The AMQP message of the event contract (README): message_id is the dedupe key."""
    return aio_pika.Message(
        body=row.payload.encode(),
        message_id=str(row.event_id),
        correlation_id=row.correlation_id,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        type=row.routing_key,
        timestamp=row.created_at,
        # The booking request's trace. When spans are recorded, the aio-pika instrumentation
        # replaces it with its publish span's context, a child of the same trace.
        headers={TRACEPARENT: row.traceparent} if row.traceparent else None,
    )


def confirmed_prefix(rows: Sequence[OutboxRow], errors: Sequence[BaseException | None]) -> int:
    """How many rows, from the first, RabbitMQ confirmed without a gap.

    Only these are marked: the rows from the first failure on are sent again in order, so the
    last copy of each event a consumer sees is still in commit order.
    """
    for index, error in enumerate(errors):
        if error is not None:
            return index
    return len(rows)


class _InFlight:
    """A batch handed to the broker whose confirms are still to come."""

    def __init__(
        self, rows: list[OutboxRow], publishing: Coroutine[None, None, list[BaseException | None]]
    ) -> None:
        self.rows = rows
        self.outcome = asyncio.ensure_future(publishing)

    async def abandon(self) -> None:
        """Left behind by a failure: stop waiting (its rows stay unmarked and are sent again)."""
        self.outcome.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.outcome


class OutboxPublisher:
    """Publishes the outbox through one database connection (the leader's) and one exchange."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        exchange: AbstractExchange,
        batch_size: int,
        publish_timeout: float,
        on_published: Callable[[int], None],
    ) -> None:
        self._conn = conn
        self._exchange = exchange
        self._batch_size = batch_size
        self._publish_timeout = publish_timeout
        self._on_published = on_published

    async def until_empty(self, stopping: asyncio.Event) -> int:
        """Publish batches back to back until none is left (or a stop); returns how many rows
        it marked.

        Two batches overlap: while one waits for its confirms, the one before is marked and
        the one after is read, so the database round trips hide behind the broker's.
        """
        marked = 0
        pending: deque[_InFlight] = deque()
        try:
            while True:
                in_flight = [row.id for batch in pending for row in batch.rows]
                # Stopping: only settle what is in flight.
                rows = [] if stopping.is_set() else await self._read(in_flight)
                if rows:
                    pending.append(_InFlight(rows, self._publish(rows)))
                if not pending:
                    return marked
                if len(pending) == 2 or not rows:
                    marked += await self._settle(pending.popleft())
        finally:
            for batch in pending:
                await batch.abandon()

    async def _read(self, in_flight: list[int]) -> list[OutboxRow]:
        return await guarded(
            postgresql_on(self._conn), fetch_unpublished(self._conn, self._batch_size, in_flight)
        )

    async def _settle(self, batch: _InFlight) -> int:
        """Wait for a batch's confirms and mark its confirmed prefix as published."""
        errors = await batch.outcome
        confirmed = confirmed_prefix(batch.rows, errors)
        if confirmed:
            # Fails if our session (and with it the lead) is gone; the rows are then sent
            # again by whoever leads next, with the same message_ids.
            ids = [row.id for row in batch.rows[:confirmed]]
            await guarded(postgresql_on(self._conn), mark_published(self._conn, ids))
            self._on_published(confirmed)
            _observe_commit_to_confirm(batch.rows[:confirmed])
        if confirmed < len(batch.rows):
            metrics.RELAY_PUBLISH_FAILURES.inc(sum(e is not None for e in errors))
            failure = next(e for e in errors if e is not None)
            raise Unavailable("RabbitMQ", failure)
        return confirmed

    async def _publish(self, rows: Sequence[OutboxRow]) -> list[BaseException | None]:
        """Publish every row at once and wait for all confirms, until the publish timeout from
        the batch's start: a publish still unconfirmed then is cancelled and counts as failed.

        One timer for the batch, not aiormq's timer per publish (set and cancelled per message;
        py-spy put it at ~6 % of the relay's CPU on uvloop, end to end 169 -> 164 µs per message,
        within the noise of docs/PERFORMANCE.md's VM).

        The channel writes frames in call order under a FIFO lock, so the broker receives the
        batch in id order; RabbitMQ keeps that order into each queue.
        """
        publishing = [asyncio.ensure_future(self._publish_one(row)) for row in rows]
        try:
            await asyncio.wait(publishing, timeout=self._publish_timeout)
        finally:
            # The late ones (or all, when this batch is abandoned), waited for until cancelled.
            late = [task for task in publishing if not task.done()]
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        return [self._outcome(task) for task in publishing]

    def _outcome(self, publishing: asyncio.Future[object]) -> BaseException | None:
        if publishing.cancelled():
            return TimeoutError(f"no publisher confirm within {self._publish_timeout} s")
        return publishing.exception()

    async def _publish_one(self, row: OutboxRow) -> object:
        publishing = self._exchange.publish(message_for(row), row.routing_key, mandatory=False)
        if not recording():
            return await publishing
        # Inside the trace of the request that booked: the instrumentation makes the publish
        # span its child and sends its context on as the AMQP header `traceparent`.
        token = otel_context.attach(context_of(row.traceparent))
        try:
            return await publishing
        finally:
            otel_context.detach(token)


def _observe_commit_to_confirm(rows: Sequence[OutboxRow]) -> None:
    now = datetime.now(UTC)
    for row in rows:
        metrics.COMMIT_TO_CONFIRM.observe((now - row.created_at).total_seconds())
