"""What a consumer is to the runner, and what the runner counts of it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from prometheus_client import Counter, Histogram

from service.common import metrics
from service.domain import BookingEvent


class Consumer(Protocol):
    """One downstream effect of a booking's events (BookingMade, BookingCanceled). The runner
    owns delivery; the consumer owns the effect and its deduplication."""

    @property
    def name(self) -> str: ...

    async def check(self) -> None:
        """Raise Unavailable while a dependency (the database) is away."""

    async def handle(self, message_id: uuid.UUID, event: BookingEvent) -> bool:
        """Apply the event once; False if this message_id was applied before.

        Raise Unavailable (our infrastructure is away), Rejected (never retry) or anything else
        (retry later)."""


Claimable = tuple[uuid.UUID, BookingEvent]  # a message's deduplication key and its event


@runtime_checkable
class BatchConsumer(Consumer, Protocol):
    """A consumer whose effect pays to apply many messages per transaction (show_sales: one
    row update per show instead of one per message); the runner then hands it batches."""

    async def handle_batch(self, messages: Sequence[Claimable]) -> set[uuid.UUID]:
        """Apply the messages in one transaction, each message_id once; the ids applied now
        (the others were applied before, or appear twice in `messages`).

        Raise Unavailable (our infrastructure is away: keep them all) or anything else (the
        runner tries the messages one by one through handle)."""


@dataclass(slots=True)
class ConsumerStats:
    """What one consumer did, counted here (for its log line at a stop, and tests) and in the
    metrics (tickets_consumer_messages_total, tickets_consumer_lag_seconds)."""

    consumer: str
    applied: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0
    reconnects: int = 0
    kept: int = 0  # put back because our own PostgreSQL or RabbitMQ was away: no attempt spent
    batches: int = 0  # transactions of the batch path (handle_batch), and their largest
    largest_batch: int = 0
    _metrics: dict[str, Counter] = field(init=False, repr=False)
    _lag: Histogram = field(init=False, repr=False)
    _batch_sizes: Histogram = field(init=False, repr=False)

    def __post_init__(self) -> None:
        outcomes = ("applied", "duplicate", "retried", "dead_lettered")
        self._metrics = {o: metrics.CONSUMER_MESSAGES.labels(self.consumer, o) for o in outcomes}
        self._lag = metrics.CONSUMER_LAG.labels(self.consumer)
        self._batch_sizes = metrics.CONSUMER_BATCH_SIZE.labels(self.consumer)

    def count_batch(self, size: int) -> None:
        self.batches += 1
        self.largest_batch = max(self.largest_batch, size)
        self._batch_sizes.observe(size)

    def count_applied(self, applied: bool, committed_at: datetime) -> None:
        """A message was acked: applied now, or a duplicate of one applied before."""
        if applied:
            self.applied += 1
            self._metrics["applied"].inc()
            self._lag.observe((datetime.now(UTC) - committed_at).total_seconds())
        else:
            self.duplicates += 1
            self._metrics["duplicate"].inc()

    def count_retried(self) -> None:
        self.retried += 1
        self._metrics["retried"].inc()

    def count_dead_lettered(self) -> None:
        self.dead_lettered += 1
        self._metrics["dead_lettered"].inc()

    def __str__(self) -> str:
        return (
            f"{self.applied} applied, {self.duplicates} duplicates skipped, {self.retried} retried,"
            f" {self.dead_lettered} dead-lettered, {self.kept} kept through outages,"
            f" {self.reconnects} reconnects, {self.batches} batches (largest {self.largest_batch})"
        )
