"""The booking write is one statement: the counter, the bookings and their outbox rows commit
together or not at all. A split (an outbox row written in a statement or transaction of its
own) fails here before it can lose an event."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from sqlalchemy.dialects import postgresql

from service.db.booking import BOOK, book_parameters
from service.domain import (
    Booking,
    BookingRequest,
    CancelRequest,
    Capacity,
    IdempotencyKey,
    StoredAnswer,
    decide_for_shows,
)


def _sql() -> str:
    return " ".join(str(BOOK.compile(dialect=postgresql.dialect())).split())  # type: ignore[no-untyped-call]


def test_one_statement_updates_the_counter_and_inserts_bookings_and_outbox_rows() -> None:
    sql = _sql()
    assert ";" not in sql.rstrip(";")
    assert re.search(r"UPDATE shows SET tickets_booked = shows\.tickets_booked \+", sql)
    assert "INSERT INTO bookings" in sql
    assert "INSERT INTO outbox" in sql
    assert sql.index("INSERT INTO outbox") > sql.index("INSERT INTO bookings")
    # Cancellations and the answers of Idempotency-Keys commit with them, or not at all.
    assert "UPDATE bookings SET status = 'canceled'" in sql
    assert "INSERT INTO idempotency_keys" in sql


def test_parameters_hold_one_row_per_accepted_request_and_one_counter_per_show() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    requests = [
        BookingRequest(a, 2, "x@example.com", "c1"),
        BookingRequest(b, 1, "y@example.com", "c2"),
        BookingRequest(a, 1, "z@example.com", "c3"),
        BookingRequest(a, 9, "w@example.com", "c4"),  # does not fit
    ]
    decision = decide_for_shows({a: Capacity(4, 0), b: Capacity(1, 0)}, requests)
    parameters = book_parameters(decision, datetime.now(UTC))
    assert parameters["counter_show_ids"] == sorted([a, b])
    assert parameters["counter_tickets"] == [3 if s == a else 1 for s in sorted([a, b])]
    assert parameters["booking_ids"] == [r.booking_id for r in decision.accepted]
    assert len(parameters["event_ids"]) == len(parameters["payloads"]) == 3
    names = set(re.findall(r"(?<!:):(\w+)", str(BOOK)))
    assert names == set(parameters)


def test_parameters_of_a_batch_that_books_cancels_and_stores_keys() -> None:
    show, now = uuid.uuid4(), datetime.now(UTC)
    held = Booking(uuid.uuid4(), show, 3, "x@example.com", now)
    keyed = BookingRequest(show, 1, "y@example.com", "c1", key=IdempotencyKey("k", "f"))
    cancel = CancelRequest(held.booking_id, show, "c2", traceparent="00-trace")
    decision = decide_for_shows(
        {show: Capacity(3, 3)}, [cancel, keyed], {held.booking_id: held}, now
    )
    answer = StoredAnswer(201, "{}", keyed.booking_id)
    parameters = book_parameters(decision, now, [(IdempotencyKey("k", "f"), answer)])
    # The cancellation gives 3 back, the booking takes 1: one counter change of -2.
    assert (parameters["counter_show_ids"], parameters["counter_tickets"]) == ([show], [-2])
    assert parameters["canceled_ids"] == [held.booking_id]
    assert parameters["routing_keys"] == ["BookingMade", "BookingCanceled"]
    assert parameters["event_correlation_ids"] == ["c1", "c2"]
    assert parameters["traceparents"] == [None, "00-trace"]
    assert (parameters["keys"], parameters["answer_statuses"]) == (["k"], [201])
