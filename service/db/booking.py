"""The booking transaction: capacity check, counter, bookings and outbox rows, all or nothing.

book_requests   one SERIALIZABLE transaction for a batch of requests (one show or several),
                retried on a lost serialization race:
    1. READ_CAPACITY    the shows' number_of_tickets and tickets_booked (one row per show)
    2. decide_for_shows the capacity rule (service/domain.py): who fits, in arrival order
    3. BOOK             counters, bookings and outbox rows, in one statement
    4. COMMIT
get_booking     one booking, for GET /bookings/{id}
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.common.outages import is_database_outage
from service.db.engine import RetriesExhausted, is_too_slow, retry_serializable
from service.db.tables import bookings
from service.domain import (
    BOOKING_MADE,
    BatchDecision,
    BookingMade,
    BookingNotFound,
    BookingRequest,
    Capacity,
    ContentionExhausted,
    decide_for_shows,
)

log = logging.getLogger(__name__)


class BookingObserver(Protocol):
    """Told what the booking transactions meet: the metrics and the benchmark listen here."""

    def retried(self) -> None:
        """A transaction lost a serialization race and runs again."""

    def committed(self, decision: BatchDecision) -> None:
        """A transaction ended: what it booked is committed (or it booked nothing)."""


class _Unobserved:
    def retried(self) -> None:
        return None

    def committed(self, decision: BatchDecision) -> None:
        return None


UNOBSERVED: BookingObserver = _Unobserved()


async def book_requests(
    sessions: async_sessionmaker[AsyncSession],
    requests: list[BookingRequest],
    max_attempts: int,
    observer: BookingObserver = UNOBSERVED,
) -> BatchDecision:
    """Book a batch of requests, for one show or several, in one SERIALIZABLE transaction,
    retried on conflict. Requests for unknown shows come back in `unknown_show`.

    Raises RetriesExhausted when contention never lets up, and ContentionExhausted when a row
    lock was not granted within the connection's lock_timeout (or a statement ran past its
    statement_timeout).
    """
    show_ids = sorted({r.show_id for r in requests})

    async def transaction() -> BatchDecision:
        async with sessions() as session, session.begin():
            return await _book(session, show_ids, requests)

    try:
        decision = await retry_serializable(transaction, max_attempts, observer.retried)
    except RetriesExhausted:
        raise
    except Exception as error:
        if is_too_slow(error):
            raise ContentionExhausted() from error
        if is_database_outage(error):
            raise
        raise booking_failed(requests, error) from None
    observer.committed(decision)
    return decision


class BookingFailed(Exception):
    """A booking transaction failed for a reason that is neither an outage nor contention: a
    bug, or a broken invariant. Told by the kind of error and the booking ids, never with the
    driver's message, which can quote a row (DETAIL: Failing row contains (..., e-mail, ...))."""

    def __init__(self, kind: str, booking_ids: Iterable[uuid.UUID]) -> None:
        super().__init__(f"booking transaction failed: {kind}")
        self.booking_ids = list(booking_ids)


def booking_failed(requests: list[BookingRequest], error: Exception) -> BookingFailed:
    """`error` as a BookingFailed with its traceback (where it happened) but not its message,
    logged once for the whole batch."""
    failure = BookingFailed(error_kind(error), (r.booking_id for r in requests))
    failure = failure.with_traceback(error.__traceback__)
    ids = ", ".join(str(booking_id) for booking_id in failure.booking_ids)
    log.error("%s; bookings not made: %s", failure, ids, exc_info=failure)
    return failure


def error_kind(error: BaseException) -> str:
    """The error's class, and for a database error its SQLSTATE and the schema object it names:
    enough to find the bug, and no data."""
    driver = getattr(error, "orig", None)
    driver = getattr(driver, "__cause__", None) or driver or error
    parts = [type(driver).__name__]
    for label, attribute in (
        ("SQLSTATE", "sqlstate"),
        ("constraint", "constraint_name"),
        ("table", "table_name"),
        ("column", "column_name"),
    ):
        value = getattr(driver, attribute, None)
        if isinstance(value, str) and value:
            parts.append(f"{label} {value}")
    return ", ".join(parts)


async def _book(
    session: AsyncSession, show_ids: list[uuid.UUID], requests: list[BookingRequest]
) -> BatchDecision:
    rows = await session.execute(READ_CAPACITY, {"show_ids": show_ids})
    capacities = {row.show_id: Capacity(row.number_of_tickets, row.tickets_booked) for row in rows}
    decision = decide_for_shows(capacities, requests)
    if decision.accepted:
        await session.execute(BOOK, book_parameters(decision, datetime.now(UTC)))
    return decision


READ_CAPACITY = text(
    """
    SELECT show_id, number_of_tickets, tickets_booked
    FROM shows WHERE show_id = ANY(CAST(:show_ids AS uuid[]))
    """
)

# The counters, the bookings and their outbox rows in one statement: one round trip, whatever
# the batch size. Rows arrive as one array per column (unnest), so the statement and its
# prepared plan are the same for a batch of 1 and of 200.
#
# A show's outbox ids follow its commit order: the statement's snapshot is taken before it
# draws any id, and under SERIALIZABLE a transaction whose snapshot predates another's committed
# update of the same counter fails (40001) instead of updating it; so a writer that commits drew
# its ids after every earlier writer of that show had committed.
#
# Counters are updated in show order (the arrays are sorted by show): two batches over the same
# shows lock their counters in one order and wait rather than deadlock (a deadlock, 40P01,
# would still only be retried). CHECK (tickets_booked <= number_of_tickets) refuses an
# overbooking whatever this code decides.
BOOK = text(
    """
    WITH counters AS (
        UPDATE shows SET tickets_booked = shows.tickets_booked + added.tickets
        FROM unnest(CAST(:counter_show_ids AS uuid[]), CAST(:counter_tickets AS integer[]))
             AS added (show_id, tickets)
        WHERE shows.show_id = added.show_id
    ),
    new_bookings AS (
        INSERT INTO bookings
            (booking_id, show_id, number_of_tickets, customer_email, correlation_id, created_at)
        SELECT booking_id, show_id, tickets, customer_email, correlation_id, :now
        FROM unnest(
            CAST(:booking_ids AS uuid[]), CAST(:show_ids AS uuid[]),
            CAST(:tickets AS integer[]), CAST(:customer_emails AS text[]),
            CAST(:correlation_ids AS text[])
        ) AS booked (booking_id, show_id, tickets, customer_email, correlation_id)
    )
    INSERT INTO outbox
        (event_id, routing_key, ordering_key, payload, correlation_id, traceparent, created_at)
    SELECT event_id, :routing_key, show_id, payload, correlation_id, traceparent, :now
    FROM unnest(
        CAST(:event_ids AS uuid[]), CAST(:show_ids AS uuid[]), CAST(:payloads AS jsonb[]),
        CAST(:correlation_ids AS text[]), CAST(:traceparents AS text[])
    ) AS event (event_id, show_id, payload, correlation_id, traceparent)
    """
)


def book_parameters(decision: BatchDecision, now: datetime) -> dict[str, Any]:
    """BOOK's parameters for the accepted requests of `decision`, committed at `now`."""
    accepted = decision.accepted
    counters = sorted(decision.tickets_by_show().items())
    events = [BookingMade.for_booking(request, now) for request in accepted]
    return {
        "counter_show_ids": [show_id for show_id, _ in counters],
        "counter_tickets": [tickets for _, tickets in counters],
        "booking_ids": [r.booking_id for r in accepted],
        "show_ids": [r.show_id for r in accepted],
        "tickets": [r.number_of_tickets for r in accepted],
        "customer_emails": [r.customer_email for r in accepted],
        "correlation_ids": [r.correlation_id for r in accepted],
        "traceparents": [r.traceparent for r in accepted],
        "event_ids": [event.event_id for event in events],
        "payloads": [json.dumps(event.body()) for event in events],
        "routing_key": BOOKING_MADE,
        "now": now,
    }


async def get_booking(
    sessions: async_sessionmaker[AsyncSession], booking_id: uuid.UUID
) -> dict[str, Any]:
    async with sessions() as session:
        row = (
            await session.execute(select(bookings).where(bookings.c.booking_id == booking_id))
        ).one_or_none()
    if row is None:
        raise BookingNotFound()
    return {
        "booking_id": str(row.booking_id),
        "show_id": str(row.show_id),
        "number_of_tickets": row.number_of_tickets,
        "customer_email": row.customer_email,
        "created_at": row.created_at.isoformat(),
    }
