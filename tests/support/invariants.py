"""The invariants every race must leave true, checked straight in the tables."""

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
        "SELECT coalesce(sum(number_of_tickets), 0) FROM bookings WHERE show_id = $1", sid
    )
    in_outbox = await db.fetchval(
        "SELECT coalesce(sum((payload->>'number_of_tickets')::int), 0) FROM outbox"
        " WHERE ordering_key = $1",
        sid,
    )
    assert show["tickets_booked"] <= show["number_of_tickets"], "overbooked"
    assert booked == show["tickets_booked"] == in_outbox
    # One outbox row per booking and one booking per outbox row.
    unmatched = await db.fetchval(
        """
        SELECT count(*) FROM bookings b
        FULL JOIN outbox o ON (o.payload->>'booking_id')::uuid = b.booking_id
        WHERE (b.show_id = $1 OR o.ordering_key = $1)
          AND (b.booking_id IS NULL OR o.id IS NULL)
        """,
        sid,
    )
    assert unmatched == 0
    duplicated = await db.fetchval(
        "SELECT count(*) FROM (SELECT payload->>'booking_id' FROM outbox WHERE ordering_key = $1"
        " GROUP BY 1 HAVING count(*) > 1) d",
        sid,
    )
    assert duplicated == 0
    return int(show["tickets_booked"])


async def database_problems(db: asyncpg.Connection) -> dict[str, int]:
    """Every show at once: each invariant broken somewhere, with how many rows break it."""
    found = await db.fetchrow(WHOLE_DATABASE)
    assert found is not None
    return {name: count for name, count in found.items() if count}


WHOLE_DATABASE = """
WITH booked AS (SELECT show_id, sum(number_of_tickets) AS n FROM bookings GROUP BY show_id),
     published AS (SELECT ordering_key AS show_id, sum((payload->>'number_of_tickets')::int) AS n
                   FROM outbox GROUP BY ordering_key)
SELECT
  (SELECT count(*) FROM shows WHERE tickets_booked > number_of_tickets) AS overbooked,
  (SELECT count(*) FROM shows s
     LEFT JOIN booked b USING (show_id) LEFT JOIN published p USING (show_id)
     WHERE s.tickets_booked <> coalesce(b.n, 0) OR s.tickets_booked <> coalesce(p.n, 0))
    AS counter_mismatches,
  (SELECT count(*) FROM bookings b FULL JOIN outbox o
     ON (o.payload->>'booking_id')::uuid = b.booking_id
     WHERE b.booking_id IS NULL OR o.id IS NULL) AS unmatched_rows,
  (SELECT count(*) FROM (SELECT 1 FROM outbox GROUP BY payload->>'booking_id'
     HAVING count(*) > 1) d) AS duplicated_events
"""
