"""What a consumer is to the runner, and what the runner counts of it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

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
    _metrics: dict[str, Counter] = field(init=False, repr=False)
    _lag: Histogram = field(init=False, repr=False)

    def __post_init__(self) -> None:
        outcomes = ("applied", "duplicate", "retried", "dead_lettered")
        self._metrics = {o: metrics.CONSUMER_MESSAGES.labels(self.consumer, o) for o in outcomes}
        self._lag = metrics.CONSUMER_LAG.labels(self.consumer)

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
            f" {self.reconnects} reconnects"
        )
