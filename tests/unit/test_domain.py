import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from asyncpg.pgproto.pgproto import UUID as PgUUID
from hypothesis import given
from hypothesis import strategies as st

from service.common.encoding import to_json
from service.domain import (
    CANCELED,
    CONFIRMED,
    Booking,
    BookingCanceled,
    BookingMade,
    BookingNotFound,
    BookingRequest,
    CancelRequest,
    Capacity,
    cancellation_key,
    decide,
    decide_for_shows,
    outcomes,
)

SHOW = uuid.uuid4()


def req(tickets: int) -> BookingRequest:
    return BookingRequest(SHOW, tickets, "fan@example.com", "corr-1")


def test_accepts_what_fits() -> None:
    decision = decide(Capacity(10, 7), [req(3)])
    assert decision.tickets_accepted == 3
    assert not decision.rejected


def test_refuses_what_does_not_fit() -> None:
    decision = decide(Capacity(10, 8), [req(3)])
    assert decision.accepted == []
    assert decision.tickets_accepted == 0


def test_sold_out_show_refuses_everything() -> None:
    assert decide(Capacity(0, 0), [req(1)]).accepted == []


def test_batch_is_served_in_arrival_order() -> None:
    first, big, small, last = req(4), req(5), req(1), req(1)
    decision = decide(Capacity(6, 0), [first, big, small, last])
    # 4 fits; 5 doesn't fit in the 2 left; the 1 behind it still does, and so does the last 1.
    assert decision.accepted == [first, small, last]
    assert decision.rejected == [big]


def test_batch_never_exceeds_capacity() -> None:
    requests = [req(n % 4 + 1) for n in range(100)]
    decision = decide(Capacity(57, 0), requests)
    assert decision.tickets_accepted <= 57
    left = 57 - decision.tickets_accepted
    assert all(r.number_of_tickets > left for r in decision.rejected)


def test_booking_made_body_follows_the_event_contract() -> None:
    request = req(2)
    committed = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    event = BookingMade.for_booking(request, committed)
    body = event.body()
    assert body == {
        "header": {
            "id": str(event.event_id),
            "published_at": "2026-11-24T12:00:00+00:00",
            "idempotency_key": str(request.booking_id),
        },
        "booking_id": str(request.booking_id),
        "show_id": str(SHOW),
        "number_of_tickets": 2,
        "customer_email": "fan@example.com",
    }


@given(
    published_at=st.datetimes(
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))])
    ),
    tickets=st.integers(min_value=1, max_value=10),
    email=st.text(),
    canceled=st.booleans(),
)
def test_an_outbox_payload_is_the_event_body_as_json(
    published_at: datetime, tickets: int, email: str, canceled: bool
) -> None:
    # The outbox row is written from contract() (UUIDs, a datetime) for speed; what a consumer
    # reads must still be body(), character for character. A booking read back from its row
    # has asyncpg's own UUIDs (a subclass).
    held = Booking(PgUUID(str(uuid.uuid4())), PgUUID(str(SHOW)), tickets, email, published_at)
    event = (
        BookingCanceled.for_booking(held.canceled(published_at), published_at)
        if canceled
        else BookingMade.for_booking(req(tickets), published_at)
    )
    assert to_json(event.contract()) == to_json(event.body())


def test_batch_over_several_shows_decides_each_show_on_its_own() -> None:
    other = uuid.uuid4()
    a5, a1 = req(5), req(1)
    b1, b3 = BookingRequest(other, 1, "b@example.com", "c"), BookingRequest(other, 3, "b@", "c")
    decision = decide_for_shows({SHOW: Capacity(3, 0), other: Capacity(3, 0)}, [a5, b1, a1, b3])
    # Show A: the 5 does not fit in 3, the 1 behind it does. Show B: 1 fits, then 3 does not.
    assert decision.accepted == [a1, b1]
    assert decision.rejected == [a5, b3]
    assert decision.tickets_by_show() == {SHOW: 1, other: 1}


def test_requests_for_an_unknown_show_are_refused_alone() -> None:
    unknown = BookingRequest(uuid.uuid4(), 1, "b@example.com", "c")
    known = req(2)
    decision = decide_for_shows({SHOW: Capacity(5, 0)}, [unknown, known])
    assert decision.unknown_show == [unknown]
    assert decision.accepted == [known]
    assert decision.rejected == []


NOW = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)


def booked(tickets: int, status: str = CONFIRMED, show_id: uuid.UUID = SHOW) -> Booking:
    at = NOW if status == CANCELED else None
    return Booking(uuid.uuid4(), show_id, tickets, "fan@example.com", NOW, status, at)


def cancel(booking: Booking) -> CancelRequest:
    return CancelRequest(booking.booking_id, booking.show_id, "corr-2")


def test_a_cancellation_gives_its_seats_to_the_bookings_behind_it_not_before() -> None:
    held = booked(2)
    before, after = req(2), req(2)
    decision = decide(Capacity(4, 4), [before, cancel(held), after], {held.booking_id: held}, NOW)
    # Served one by one: the first finds the show full; the second gets the seats given back.
    assert decision.rejected == [before]
    assert decision.accepted == [after]
    assert [c.booking for c in decision.canceled] == [held.canceled(NOW)]
    assert decision.tickets_by_show() == {SHOW: 0}


def test_cancelling_twice_changes_nothing_the_second_time() -> None:
    held, gone = booked(3), booked(1, CANCELED)
    first, again, earlier = cancel(held), cancel(held), cancel(gone)
    bookings = {held.booking_id: held, gone.booking_id: gone}
    decision = decide(Capacity(10, 3), [first, again, earlier], bookings, NOW)
    assert [c.request for c in decision.canceled] == [first]
    assert [(c.request, c.booking) for c in decision.unchanged] == [
        (again, held.canceled(NOW)),
        (earlier, gone),  # canceled before: its canceled_at stays what it was
    ]
    assert decision.tickets_by_show() == {SHOW: -3}
    found = outcomes(decision)
    assert found[first.request_id] == found[again.request_id] == held.canceled(NOW)


def test_a_cancellation_of_no_booking_is_not_found() -> None:
    nowhere = CancelRequest(uuid.uuid4(), SHOW, "corr")
    decision = decide_for_shows({SHOW: Capacity(1, 0)}, [nowhere], {}, NOW)
    assert decision.missing == [nowhere]
    assert isinstance(outcomes(decision)[nowhere.request_id], BookingNotFound)
    assert not decision.writes


def test_deciding_a_cancellation_needs_its_time() -> None:
    held = booked(1)
    with pytest.raises(ValueError, match="time"):
        decide(Capacity(1, 1), [cancel(held)], {held.booking_id: held})


def test_booking_canceled_has_the_fields_of_the_booking_made_it_undoes() -> None:
    request = req(2)
    made = BookingMade.for_booking(request, NOW).body()
    held = Booking(request.booking_id, SHOW, 2, "fan@example.com", NOW)
    event = BookingCanceled.for_booking(held.canceled(NOW), NOW)
    body = event.body()
    assert (event.name, BookingMade.name) == ("BookingCanceled", "BookingMade")
    assert {k: v for k, v in body.items() if k != "header"} == {
        k: v for k, v in made.items() if k != "header"
    }
    assert body["header"]["id"] != made["header"]["id"]
    assert body["header"]["idempotency_key"] == str(cancellation_key(request.booking_id))
