"""Shows: created once per dead_nation_id, read with their live ticket counts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.common.ids import new_id
from service.db.tables import shows
from service.domain import ShowConflict, ShowNotFound


@dataclass(frozen=True, slots=True)
class NewShow:
    dead_nation_id: uuid.UUID
    number_of_tickets: int
    start_time: datetime
    title: str
    venue: str


async def create_show(
    sessions: async_sessionmaker[AsyncSession], show: NewShow
) -> tuple[uuid.UUID, bool]:
    """Create a show. The same dead_nation_id again with the same details returns the existing
    show (created=False); with other details, ShowConflict: the first one stands, and a second
    caller cannot take over (or squat) a show by sending other numbers for it."""
    async with sessions() as session, session.begin():
        created = (
            await session.execute(
                insert(shows)
                .values(
                    show_id=new_id(),
                    dead_nation_id=show.dead_nation_id,
                    number_of_tickets=show.number_of_tickets,
                    tickets_booked=0,
                    start_time=show.start_time,
                    title=show.title,
                    venue=show.venue,
                )
                .on_conflict_do_nothing(index_elements=[shows.c.dead_nation_id])
                .returning(shows.c.show_id)
            )
        ).scalar_one_or_none()
        if created is not None:
            return created, True
        existing = (
            await session.execute(
                select(shows).where(shows.c.dead_nation_id == show.dead_nation_id)
            )
        ).one()
    if not _same_details(existing, show):
        raise ShowConflict()
    return existing.show_id, False


def _same_details(row: Row[Any], show: NewShow) -> bool:
    # Datetimes with offsets compare as instants: 20:00+01:00 is 19:00Z, the same start.
    return (row.number_of_tickets, row.start_time, row.title, row.venue) == (
        show.number_of_tickets,
        show.start_time,
        show.title,
        show.venue,
    )


async def get_show(
    sessions: async_sessionmaker[AsyncSession], show_id: uuid.UUID
) -> dict[str, Any]:
    async with sessions() as session:
        row = (await session.execute(select(shows).where(shows.c.show_id == show_id))).one_or_none()
    if row is None:
        raise ShowNotFound()
    return {
        "show_id": str(row.show_id),
        "dead_nation_id": str(row.dead_nation_id),
        "number_of_tickets": row.number_of_tickets,
        "start_time": row.start_time.isoformat(),
        "title": row.title,
        "venue": row.venue,
        "tickets_booked": row.tickets_booked,
        "tickets_available": row.number_of_tickets - row.tickets_booked,
    }
