"""The invariants every race must leave true, checked straight in the tables.

With cancellations: the counter equals the confirmed bookings' tickets, and the outbox's
BookingMade tickets less its BookingCanceled tickets; every booking has exactly one BookingMade,
every canceled booking exactly one BookingCanceled, and a confirmed one none.
"""

from __future__ import annotations

import uuid

import asyncpg


async def assert_show_consistent(db: asyncpg.Connection, show_id: str | uuid.UUID) -> int:
    """Bookings, the counter and the outbox agree exactly; returns the tickets booked."""
    sid = uuid.UUID(str(show_id))
    show = await db.fetchrow(
        "SELECT number_of_tickets, tickets_booked FROM shows WHERE show_id = $1", sid
    )
    booked = await db.fetchval(
        "SELECT coalesce(sum(number_of_tickets), 0) FROM bookings"
        " WHERE show_id = $1 AND status = 'confirmed'",
        sid,
    )
    in_outbox = await db.fetchval(
        "SELECT coalesce(sum((payload->>'number_of_tickets')::int"
        " * CASE routing_key WHEN 'BookingCanceled' THEN -1 ELSE 1 END), 0) FROM outbox"
        " WHERE ordering_key = $1",
        sid,
    )
    assert show["tickets_booked"] <= show["number_of_tickets"], "overbooked"
    assert booked == show["tickets_booked"] == in_outbox
    problems = await db.fetchrow(EVENTS_PER_BOOKING + " WHERE e.show_id = $1", sid)
    assert problems is not None
    assert dict(problems) == {"made_not_once": 0, "canceled_wrong": 0}, dict(problems)
    return int(show["tickets_booked"])


# Per booking (of the bookings table or named by an outbox row): how many BookingMade and
# BookingCanceled rows it has, against what it should have.
EVENTS_PER_BOOKING = """
WITH events AS (
    SELECT coalesce(b.booking_id, o.booking_id) AS booking_id,
           coalesce(b.show_id, o.show_id) AS show_id,
           b.status,
           count(*) FILTER (WHERE o.routing_key = 'BookingMade') AS made,
           count(*) FILTER (WHERE o.routing_key = 'BookingCanceled') AS canceled
    FROM bookings b
    FULL JOIN (SELECT (payload->>'booking_id')::uuid AS booking_id, ordering_key AS show_id,
                      routing_key FROM outbox) o ON o.booking_id = b.booking_id
    GROUP BY 1, 2, 3
)
SELECT count(*) FILTER (WHERE e.status IS NULL OR e.made <> 1) AS made_not_once,
       count(*) FILTER (WHERE e.canceled <> (e.status = 'canceled')::int) AS canceled_wrong
FROM events e
"""


async def database_problems(db: asyncpg.Connection) -> dict[str, int]:
    """Every show at once: each invariant broken somewhere, with how many rows break it."""
    found = await db.fetchrow(WHOLE_DATABASE)
    assert found is not None
    return {name: count for name, count in found.items() if count}


WHOLE_DATABASE = f"""
WITH booked AS (SELECT show_id, sum(number_of_tickets) AS n FROM bookings
                WHERE status = 'confirmed' GROUP BY show_id),
     published AS (SELECT ordering_key AS show_id,
                          sum((payload->>'number_of_tickets')::int
                              * CASE routing_key WHEN 'BookingCanceled' THEN -1 ELSE 1 END) AS n
                   FROM outbox GROUP BY ordering_key),
     per_booking AS ({EVENTS_PER_BOOKING})
SELECT
  (SELECT count(*) FROM shows WHERE tickets_booked > number_of_tickets) AS overbooked,
  (SELECT count(*) FROM shows s
     LEFT JOIN booked b USING (show_id) LEFT JOIN published p USING (show_id)
     WHERE s.tickets_booked <> coalesce(b.n, 0) OR s.tickets_booked <> coalesce(p.n, 0))
    AS counter_mismatches,
  (SELECT made_not_once FROM per_booking) AS bookings_without_one_booking_made,
  (SELECT canceled_wrong FROM per_booking) AS cancellations_without_one_booking_canceled
"""
