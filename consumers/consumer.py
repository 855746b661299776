"""What a consumer is to the runner, and what the runner counts of it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

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
    applied: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0
    reconnects: int = 0

    def count_applied(self, applied: bool) -> None:
        """A message was acked: applied now, or a duplicate of one applied before."""
        if applied:
            self.applied += 1
        else:
            self.duplicates += 1

    def __str__(self) -> str:
        return (
            f"{self.applied} applied, {self.duplicates} duplicates skipped, {self.retried} retried,"
            f" {self.dead_lettered} dead-lettered, {self.reconnects} reconnects"
        )
