"""The booking transaction: capacity check, counter, bookings, cancellations, outbox rows and
idempotency keys, all or nothing.

book_requests   one SERIALIZABLE transaction for a batch of requests (one show or several;
                bookings and cancellations), retried on a lost serialization race:
    1. READ_CAPACITY    the shows' number_of_tickets and tickets_booked (one row per show)
       READ_BOOKINGS    the bookings it cancels (only if it cancels any)
       READ_KEYS        stored answers of the batch's Idempotency-Keys: only when a first run
                        found one of its keys stored (see _KeysSeenBefore)
    2. sort_out, decide_for_shows, settle   the rules (service/idempotency.py, service/domain.py)
    3. BOOK             counters, bookings, cancellations, outbox rows and keys: one statement
    4. COMMIT
find_booking    one booking, for GET and DELETE /bookings/{id}
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import idempotency
from service.common.encoding import to_json
from service.common.outages import is_database_outage
from service.db.engine import RetriesExhausted, is_too_slow, retry_serializable
from service.db.tables import bookings
from service.domain import (
    BatchDecision,
    Booking,
    BookingCanceled,
    BookingEvent,
    BookingMade,
    BookingNotFound,
    BookingRequest,
    CancelRequest,
    Capacity,
    ContentionExhausted,
    IdempotencyKey,
    Request,
    StoredAnswer,
    decide_for_shows,
)
from service.idempotency import AnswerFor, StoredKey

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


@dataclass(frozen=True, slots=True)
class KeyRules:
    """What keyed requests need, wired by the API: the answer each is given (its error map),
    and how long a key is kept (IDEMPOTENCY_KEY_TTL)."""

    answer_for: AnswerFor
    ttl: float


class KeysNotWired(TypeError):
    """A keyed request reached a booking function that was given no KeyRules (a wiring bug)."""


class _KeysSeenBefore(Exception):
    """BOOK found an answer already stored for a key of the batch: roll back, and decide again
    with the stored answers read first.

    Keys are not read before every batch: almost every key is new (a repeat is a client's retry),
    and BOOK's insert of the answers finds a stored key through the primary key anyway, so the
    common batch saves a round trip. (A read first would also depend on the planner: on a young
    table without statistics it chooses a sequential scan, cached for the process, which under
    SERIALIZABLE also locks the whole table against every other key's insert.)"""


async def book_requests(
    sessions: async_sessionmaker[AsyncSession],
    requests: Sequence[Request],
    max_attempts: int,
    observer: BookingObserver = UNOBSERVED,
    keys: KeyRules | None = None,
) -> BatchDecision:
    """Book (and cancel) a batch of requests, for one show or several, in one SERIALIZABLE
    transaction, retried on conflict. Requests for unknown shows come back in `unknown_show`.

    Raises RetriesExhausted when contention never lets up, and ContentionExhausted when a row
    lock was not granted within the connection's lock_timeout (or a statement ran past its
    statement_timeout).
    """

    async def transaction() -> BatchDecision:
        try:
            async with sessions() as session, session.begin():
                return await _book(session, requests, keys, look_up=False)
        except _KeysSeenBefore:
            async with sessions() as session, session.begin():
                return await _book(session, requests, keys, look_up=True)

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


def booking_failed(requests: Sequence[Request], error: Exception) -> BookingFailed:
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
    session: AsyncSession, requests: Sequence[Request], keys: KeyRules | None, look_up: bool
) -> BatchDecision:
    now = datetime.now(UTC)
    show_ids = sorted({r.show_id for r in requests})
    rows = await session.execute(READ_CAPACITY, {"show_ids": show_ids})
    capacities = {row.show_id: Capacity(row.number_of_tickets, row.tickets_booked) for row in rows}
    keyed = [r.key for r in requests if isinstance(r, BookingRequest) and r.key is not None]
    if keyed and keys is None:
        raise KeysNotWired("a request with an Idempotency-Key, and no KeyRules to answer it")
    expired_before = now - timedelta(seconds=keys.ttl if keys else 0)
    stored = await _stored_keys(session, keyed, expired_before) if look_up else {}
    batch = idempotency.sort_out(requests, stored)
    targets = await _bookings(session, [r for r in requests if isinstance(r, CancelRequest)])
    decision = decide_for_shows(capacities, batch.fresh, targets, now)
    to_store: list[tuple[IdempotencyKey, StoredAnswer]] = []
    if keys is not None:
        decision, to_store = idempotency.settle(batch, decision, keys.answer_for)
    if decision.writes or to_store:
        parameters = book_parameters(decision, now, to_store, expired_before)
        written = (await session.execute(BOOK, parameters)).one()
        if written.answers != len(to_store) and not look_up:
            raise _KeysSeenBefore()
        _check_written(written, decision, to_store)
    return decision


async def _stored_keys(
    session: AsyncSession, keyed: list[IdempotencyKey], expired_before: datetime
) -> dict[str, StoredKey]:
    """The answers stored for these keys. Keys past their TTL count as absent (the purge may not
    have reached them yet); BOOK then overwrites them."""
    if not keyed:
        return {}
    rows = await session.execute(READ_KEYS, {"keys": sorted({k.key for k in keyed})})
    return {
        row.key: StoredKey(row.fingerprint, StoredAnswer(row.status, row.body, row.booking_id))
        for row in rows
        if row.created_at >= expired_before
    }


async def _bookings(
    session: AsyncSession, cancels: list[CancelRequest]
) -> dict[uuid.UUID, Booking]:
    if not cancels:
        return {}
    ids = sorted({r.booking_id for r in cancels})
    rows = await session.execute(READ_BOOKINGS, {"booking_ids": ids})
    return {row.booking_id: _booking_of(row) for row in rows}


def _check_written(
    written: Any, decision: BatchDecision, to_store: list[tuple[IdempotencyKey, StoredAnswer]]
) -> None:
    """What BOOK wrote is what was decided, or the transaction must not commit.

    Both hold by construction (the same snapshot decided and wrote, and a row another
    transaction changed meanwhile makes the write fail with 40001); checked because a key
    answered but not stored would break its promise silently."""
    if written.canceled != len(decision.canceled) or written.answers != len(to_store):
        raise RuntimeError(
            f"booking write mismatch: canceled {written.canceled}/{len(decision.canceled)},"
            f" keys stored {written.answers}/{len(to_store)}"
        )


READ_CAPACITY = text(
    """
    SELECT show_id, number_of_tickets, tickets_booked
    FROM shows WHERE show_id = ANY(CAST(:show_ids AS uuid[]))
    """
)

# By key alone: a condition on created_at here lets the planner add the created_at index (every
# key of the last day), and under SERIALIZABLE that range read leaves predicate locks over the
# whole index. Keys past their TTL are dropped in Python instead (_stored_keys).
READ_KEYS = text(
    """
    SELECT key, fingerprint, status, body, booking_id, created_at
    FROM idempotency_keys WHERE key = ANY(CAST(:keys AS text[]))
    """
)

READ_BOOKINGS = text(
    """
    SELECT booking_id, show_id, number_of_tickets, customer_email, created_at, status,
           canceled_at
    FROM bookings WHERE booking_id = ANY(CAST(:booking_ids AS uuid[]))
    """
)

# Everything a batch writes, in one statement: one round trip, whatever the batch size. Rows
# arrive as one array per column (unnest), so the statement and its prepared plan are the same
# for a batch of 1 and of 200.
#
# A show's outbox ids follow its commit order, for BookingMade and BookingCanceled alike: every
# batch that writes an event of a show changes that show's counter (a booking adds, a
# cancellation gives back). The statement's snapshot is taken before it draws any id, and under
# SERIALIZABLE a transaction whose snapshot predates another's committed update of the same
# counter fails (40001) instead of updating it; so a writer that commits drew its ids after
# every earlier writer of that show had committed. (A booking and its cancellation are never in
# one batch: a cancellation names a booking that was committed before it was asked for.)
#
# Counters are updated in show order (the arrays are sorted by show): two batches over the same
# shows lock their counters in one order and wait rather than deadlock (a deadlock, 40P01,
# would still only be retried). CHECK (tickets_booked <= number_of_tickets) refuses an
# overbooking whatever this code decides.
#
# Idempotency keys: a key another transaction has inserted and not yet committed makes this
# insert wait for it; once that one commits, this one fails with 40001 and is retried. A key
# stored and visible is left as it is and not returned: fewer answers stored than given means a
# key was seen before (_KeysSeenBefore), and the rerun reads the stored answers first
# (service/idempotency.py). A key past its TTL is overwritten. The final SELECT counts what was
# canceled and stored.
BOOK = text(
    """
    WITH counters AS (
        UPDATE shows SET tickets_booked = shows.tickets_booked + change.tickets
        FROM unnest(CAST(:counter_show_ids AS uuid[]), CAST(:counter_tickets AS integer[]))
             AS change (show_id, tickets)
        WHERE shows.show_id = change.show_id
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
    ),
    canceled AS (
        UPDATE bookings SET status = 'canceled', canceled_at = :now
        WHERE booking_id = ANY(CAST(:canceled_ids AS uuid[])) AND status = 'confirmed'
        RETURNING booking_id
    ),
    answers AS (
        INSERT INTO idempotency_keys AS stored
            (key, fingerprint, status, body, booking_id, created_at)
        SELECT key, fingerprint, status, body, booking_id, :now
        FROM unnest(
            CAST(:keys AS text[]), CAST(:fingerprints AS text[]),
            CAST(:answer_statuses AS smallint[]), CAST(:answer_bodies AS text[]),
            CAST(:answer_booking_ids AS uuid[])
        ) AS answer (key, fingerprint, status, body, booking_id)
        ON CONFLICT (key) DO UPDATE SET
            fingerprint = excluded.fingerprint, status = excluded.status, body = excluded.body,
            booking_id = excluded.booking_id, created_at = excluded.created_at
        WHERE stored.created_at < :expired_before
        RETURNING key
    ),
    events AS (
        INSERT INTO outbox (
            event_id, routing_key, ordering_key, payload, correlation_id, traceparent, created_at
        )
        SELECT event_id, routing_key, show_id, payload, correlation_id, traceparent, :now
        FROM unnest(
            CAST(:event_ids AS uuid[]), CAST(:routing_keys AS text[]),
            CAST(:event_show_ids AS uuid[]), CAST(:payloads AS jsonb[]),
            CAST(:event_correlation_ids AS text[]), CAST(:traceparents AS text[])
        ) AS event (event_id, routing_key, show_id, payload, correlation_id, traceparent)
    )
    SELECT (SELECT count(*) FROM canceled) AS canceled, (SELECT count(*) FROM answers) AS answers
    """
)


def book_parameters(
    decision: BatchDecision,
    now: datetime,
    to_store: Sequence[tuple[IdempotencyKey, StoredAnswer]] = (),
    expired_before: datetime | None = None,
) -> dict[str, Any]:
    """BOOK's parameters for what `decision` books and cancels, and the keys' answers, at
    `now`; keys stored before `expired_before` may be overwritten."""
    accepted = decision.accepted
    counters = sorted(decision.tickets_by_show().items())
    made = [(BookingMade.for_booking(r, now), r) for r in accepted]
    canceled = [(BookingCanceled.for_booking(c.booking, now), c.request) for c in decision.canceled]
    # Each event with the request it answers: its correlation id and trace context go along.
    events: list[tuple[BookingEvent, Request]] = [*made, *canceled]
    return {
        "counter_show_ids": [show_id for show_id, _ in counters],
        "counter_tickets": [tickets for _, tickets in counters],
        "booking_ids": [r.booking_id for r in accepted],
        "show_ids": [r.show_id for r in accepted],
        "tickets": [r.number_of_tickets for r in accepted],
        "customer_emails": [r.customer_email for r in accepted],
        "correlation_ids": [r.correlation_id for r in accepted],
        "canceled_ids": [c.booking.booking_id for c in decision.canceled],
        **_answer_parameters(to_store),
        "expired_before": expired_before or now,
        "event_ids": [event.event_id for event, _ in events],
        "routing_keys": [event.name for event, _ in events],
        "event_show_ids": [event.show_id for event, _ in events],
        "payloads": [to_json(event.contract()) for event, _ in events],
        "event_correlation_ids": [request.correlation_id for _, request in events],
        "traceparents": [request.traceparent for _, request in events],
        "now": now,
    }


def _answer_parameters(
    to_store: Sequence[tuple[IdempotencyKey, StoredAnswer]],
) -> dict[str, list[Any]]:
    # Sorted by key: two batches inserting the same keys wait for each other in one order.
    ordered = sorted(to_store, key=lambda stored: stored[0].key)
    return {
        "keys": [key.key for key, _ in ordered],
        "fingerprints": [key.fingerprint for key, _ in ordered],
        "answer_statuses": [answer.status for _, answer in ordered],
        "answer_bodies": [answer.body for _, answer in ordered],
        "answer_booking_ids": [answer.booking_id for _, answer in ordered],
    }


async def find_booking(
    sessions: async_sessionmaker[AsyncSession], booking_id: uuid.UUID
) -> Booking:
    """The booking as committed; BookingNotFound if there is none."""
    async with sessions() as session:
        row = (
            await session.execute(select(bookings).where(bookings.c.booking_id == booking_id))
        ).one_or_none()
    if row is None:
        raise BookingNotFound()
    return _booking_of(row)


def _booking_of(row: Any) -> Booking:
    return Booking(
        booking_id=row.booking_id,
        show_id=row.show_id,
        number_of_tickets=row.number_of_tickets,
        customer_email=row.customer_email,
        created_at=row.created_at,
        status=row.status,
        canceled_at=row.canceled_at,
    )
