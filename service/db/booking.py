"""The booking transaction: capacity check, counter, bookings and outbox rows, all or nothing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    Integer,
    Select,
    Table,
    Uuid,
    any_,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.engine import is_lock_timeout, retry_serializable
from service.db.tables import bookings, outbox, shows
from service.domain import (
    BOOKING_MADE,
    BatchDecision,
    BookingMade,
    BookingNotFound,
    BookingRequest,
    Capacity,
    ContentionExhausted,
    ShowNotFound,
    decide_for_shows,
)


@dataclass(slots=True)
class BookingStats:
    """Counters the benchmark reads: how much contention the transactions met."""

    transactions: int = 0
    retries: int = 0
    bookings: int = 0

    def count_retry(self) -> None:
        self.retries += 1


async def book_batch(
    sessions: async_sessionmaker[AsyncSession],
    show_id: uuid.UUID,
    requests: list[BookingRequest],
    max_attempts: int,
    stats: BookingStats | None = None,
) -> BatchDecision:
    """Book a batch of requests for one show; raises ShowNotFound for an unknown show."""
    decision = await book_requests(sessions, requests, max_attempts, stats)
    if decision.unknown_show:
        raise ShowNotFound()
    return decision


async def book_requests(
    sessions: async_sessionmaker[AsyncSession],
    requests: list[BookingRequest],
    max_attempts: int,
    stats: BookingStats | None = None,
) -> BatchDecision:
    """Book a batch of requests, for one show or several, in one SERIALIZABLE transaction,
    retried on conflict. Requests for unknown shows come back in `unknown_show`.

    Raises RetriesExhausted when contention never lets up, and ContentionExhausted when a row
    lock was not granted within the connection's lock_timeout.
    """
    stats = stats if stats is not None else BookingStats()
    show_ids = sorted({r.show_id for r in requests})

    async def transaction() -> BatchDecision:
        async with sessions() as session, session.begin():
            return await _book(session, show_ids, requests)

    try:
        decision = await retry_serializable(transaction, max_attempts, stats.count_retry)
    except DBAPIError as error:
        if is_lock_timeout(error):
            raise ContentionExhausted() from error
        raise
    stats.transactions += 1
    stats.bookings += len(decision.accepted)
    return decision


async def _book(
    session: AsyncSession, show_ids: list[uuid.UUID], requests: list[BookingRequest]
) -> BatchDecision:
    rows = await session.execute(
        select(shows.c.show_id, shows.c.number_of_tickets, shows.c.tickets_booked).where(
            shows.c.show_id == any_(bindparam("show_ids", show_ids, type_=ARRAY(Uuid)))
        )
    )
    capacities = {row.show_id: Capacity(row.number_of_tickets, row.tickets_booked) for row in rows}
    decision = decide_for_shows(capacities, requests)
    if not decision.accepted:
        return decision
    now = datetime.now(UTC)
    # Sorted by show: the planner walks the array in order, so two batches over the same shows
    # lock their counters in one order and wait rather than deadlock (a deadlock, 40P01, would
    # still only be retried).
    counters = sorted(decision.tickets_by_show().items())
    booking_rows = [_booking_row(r, now) for r in decision.accepted]
    outbox_rows = [_outbox_row(r, now) for r in decision.accepted]
    await session.execute(
        _BOOK,
        {
            "counter_show_id": [show_id for show_id, _ in counters],
            "counter_added": [tickets for _, tickets in counters],
        }
        | _as_arrays(bookings, booking_rows)
        | _as_arrays(outbox, outbox_rows),
    )
    return decision


def _from_arrays(table: Table) -> Select[Any]:
    """SELECT * FROM unnest(:column_1, :column_2, ...): many rows passed as one array per
    column, so the statement (and its prepared plan) is the same whatever the batch size."""
    columns = _INSERTED[table.name]
    arrays = [bindparam(f"{table.name}_{c}", type_=ARRAY(table.c[c].type)) for c in columns]
    return select(func.unnest(*arrays).table_valued(*columns).render_derived())


def _as_arrays(table: Table, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {f"{table.name}_{c}": [row[c] for row in rows] for c in _INSERTED[table.name]}


_INSERTED = {
    "bookings": (
        "booking_id", "show_id", "number_of_tickets", "customer_email", "correlation_id",
        "created_at",
    ),
    "outbox": (
        "event_id", "routing_key", "ordering_key", "payload", "correlation_id", "created_at"
    ),
}  # fmt: skip

_COUNTERS = (
    func.unnest(
        bindparam("counter_show_id", type_=ARRAY(Uuid)),
        bindparam("counter_added", type_=ARRAY(Integer)),
    )
    .table_valued("show_id", "added")
    .render_derived(name="counter")
)

# The counters, the bookings and their outbox rows in one statement: one round trip, whatever
# the batch size. A show's outbox ids still follow its commit order: the statement's snapshot
# is taken before it draws any id, and under SERIALIZABLE a transaction whose snapshot predates
# another's committed update of the same counter fails (40001) instead of updating it; so a
# writer that commits drew its ids after every earlier writer of that show had committed.
_BOOK = (
    insert(outbox)
    .from_select(_INSERTED["outbox"], _from_arrays(outbox))
    .add_cte(
        update(shows)
        .where(shows.c.show_id == _COUNTERS.c.show_id)
        .values(tickets_booked=shows.c.tickets_booked + _COUNTERS.c.added)
        .cte("counters")
    )
    .add_cte(
        insert(bookings)
        .from_select(_INSERTED["bookings"], _from_arrays(bookings))
        .cte("new_bookings")
    )
)


def _booking_row(request: BookingRequest, now: datetime) -> dict[str, Any]:
    return {
        "booking_id": request.booking_id,
        "show_id": request.show_id,
        "number_of_tickets": request.number_of_tickets,
        "customer_email": request.customer_email,
        "correlation_id": request.correlation_id,
        "created_at": now,
    }


def _outbox_row(request: BookingRequest, now: datetime) -> dict[str, Any]:
    event = BookingMade.for_booking(request, now)
    return {
        "event_id": event.event_id,
        "routing_key": BOOKING_MADE,
        "ordering_key": request.show_id,
        "payload": event.body(),
        "correlation_id": request.correlation_id,
        "created_at": now,
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
