"""What happens to a message after a failed attempt: pure, no I/O.

The attempt count travels with the message in a header (RabbitMQ's own x-death is rewritten at
every dead-lettering and varies between versions; our header says exactly what we counted).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

# Headers this service sets on retried and dead-lettered copies.
ATTEMPTS = "attempts"  # failed attempts so far
LAST_ERROR = "last-error"
CONSUMER = "consumer"
FAILURE = "failure"  # why it was dead-lettered: one of the three below
DEAD_LETTERED_AT = "dead-lettered-at"
REDRIVEN = "redriven"  # how often `dlq redrive` sent it back

POISON = "poison"  # unreadable: never retried
REJECTED = "rejected"  # the effect refused it for good (a 4xx from the provider)
EXHAUSTED = "attempts-exhausted"

# RabbitMQ's dead-lettering and delivery headers; dropped when we republish, our own headers
# count instead (a copy is a new message: no deliveries yet).
BROKER_HEADERS = frozenset(
    {
        "x-delivery-count",
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)
MAX_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class RetryIn:
    delay_ms: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    """No more attempts: to the dead-letter queue, with `failure` saying why."""

    failure: str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    delays_ms: tuple[int, ...]

    def after_failure(self, attempts: int) -> RetryIn | GiveUp:
        """`attempts` failed so far (this one included): wait and try again, or give up.

        The n-th retry waits delays_ms[n-1]; past the end of the list the last delay repeats.
        """
        if attempts >= self.max_attempts:
            return GiveUp(EXHAUSTED)
        return RetryIn(self.delays_ms[min(attempts, len(self.delays_ms)) - 1])


def attempts_of(headers: Mapping[str, object]) -> int:
    """Failed attempts recorded on a message; a missing or garbled header counts as none."""
    value = headers.get(ATTEMPTS, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def keep_headers(headers: Mapping[str, object]) -> dict[str, object]:
    """The headers of a message put back as it was (no attempt spent)."""
    return _without_broker_headers(headers)


def retry_headers(headers: Mapping[str, object], attempts: int, error: str) -> dict[str, object]:
    return _without_broker_headers(headers) | {ATTEMPTS: attempts, LAST_ERROR: _short(error)}


def dead_letter_headers(
    headers: Mapping[str, object],
    consumer: str,
    attempts: int,
    failure: str,
    error: str,
    now: datetime | None = None,
) -> dict[str, object]:
    return _without_broker_headers(headers) | {
        ATTEMPTS: attempts,
        LAST_ERROR: _short(error),
        CONSUMER: consumer,
        FAILURE: failure,
        DEAD_LETTERED_AT: (now or datetime.now(UTC)).isoformat(),
    }


def redrive_headers(headers: Mapping[str, object]) -> dict[str, object]:
    """A redriven message starts with a full set of attempts; the redrive count is kept."""
    dropped = {ATTEMPTS, LAST_ERROR, CONSUMER, FAILURE, DEAD_LETTERED_AT}
    kept = {k: v for k, v in _without_broker_headers(headers).items() if k not in dropped}
    previous = headers.get(REDRIVEN, 0)
    return kept | {REDRIVEN: (previous if isinstance(previous, int) else 0) + 1}


def _without_broker_headers(headers: Mapping[str, object]) -> dict[str, object]:
    return {k: v for k, v in headers.items() if k not in BROKER_HEADERS}


def _short(error: str) -> str:
    return error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 1] + "…"


def copy_with(message: AbstractIncomingMessage, headers: dict[str, object]) -> aio_pika.Message:
    """The same message (body and every contract property) with new headers, persistent."""
    return aio_pika.Message(
        body=message.body,
        headers=headers,  # type: ignore[arg-type]  # values came from AMQP, they go back to it
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )
