"""The schema itself refuses an overbooking, whatever the code does."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from tests.support.api import Client, create_show


async def test_counter_cannot_pass_capacity(client: Client, db: asyncpg.Connection) -> None:
    show_id = uuid.UUID(await create_show(client, 3))
    with pytest.raises(asyncpg.CheckViolationError, match="shows_not_overbooked"):
        await db.execute(
            "UPDATE shows SET tickets_booked = tickets_booked + 4 WHERE show_id = $1", show_id
        )
    await db.execute("UPDATE shows SET tickets_booked = 3 WHERE show_id = $1", show_id)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("UPDATE shows SET tickets_booked = 4 WHERE show_id = $1", show_id)


async def test_capacity_cannot_shrink_below_bookings(
    client: Client, db: asyncpg.Connection
) -> None:
    show_id = uuid.UUID(await create_show(client, 3))
    await db.execute("UPDATE shows SET tickets_booked = 2 WHERE show_id = $1", show_id)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("UPDATE shows SET number_of_tickets = 1 WHERE show_id = $1", show_id)


async def test_booking_needs_a_show_and_tickets(db: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await db.execute(
            "INSERT INTO bookings (booking_id, show_id, number_of_tickets, customer_email,"
            " correlation_id) VALUES ($1, $2, 1, 'a@b.example', 'c')",
            uuid.uuid4(),
            uuid.uuid4(),
        )
