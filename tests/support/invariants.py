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
