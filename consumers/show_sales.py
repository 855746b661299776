"""show_sales: tickets sold and bookings per show, built from the events alone.

Each BookingMade adds its tickets (and one booking), each BookingCanceled takes them away again,
in the same transaction that claims its message_id in the inbox, so a redelivered event changes
nothing. A batch of messages is one transaction: one inbox statement claims them all, and each
show's row is updated once, by the net change of the messages claimed (a hot show's deliveries
would otherwise queue one by one on its row lock). Additions commute: events may arrive in any
order, from concurrent deliveries, and the totals come out the same (a cancellation applied
before its booking leaves a show below zero for a moment; migration 0004 allows that).
`reconcile` checks the read model against the confirmed bookings, which it must equal once
every event has been consumed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Column, DateTime, Integer, MetaData, Table, Uuid, func, select
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.consumer import Claimable
from consumers.inbox import claim_many, transaction
from service.db.tables import bookings
from service.domain import CONFIRMED, BookingCanceled, BookingEvent

NAME = "show_sales"

metadata = MetaData()

show_sales = Table(
    "show_sales",
    metadata,
    Column("show_id", Uuid, primary_key=True),
    Column("tickets_sold", Integer, nullable=False),
    Column("bookings", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


class ShowSales:
    name = NAME

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def check(self) -> None:
        async with transaction(self._engine) as conn:
            await conn.execute(select(1))

    async def handle(self, message_id: uuid.UUID, event: BookingEvent) -> bool:
        return bool(await self.handle_batch([(message_id, event)]))

    async def handle_batch(self, messages: Sequence[Claimable]) -> set[uuid.UUID]:
        """One transaction: claim the batch, then add each show's net change in one update."""
        async with transaction(self._engine) as conn:
            claimed = await claim_many(conn, NAME, [message_id for message_id, _ in messages])
            for show_id, change in net_changes(messages, claimed).items():
                await conn.execute(_added(show_id, change))
            return claimed


def net_changes(messages: Sequence[Claimable], claimed: set[uuid.UUID]) -> dict[uuid.UUID, Sales]:
    """Each show's change by the claimed messages (a claimed id counted once), in show order:
    concurrent batches then lock the rows they share in the same order, and never deadlock."""
    changes: dict[uuid.UUID, Sales] = {}
    counted: set[uuid.UUID] = set()
    for message_id, event in messages:
        if message_id not in claimed or message_id in counted:
            continue
        counted.add(message_id)
        sign = -1 if isinstance(event, BookingCanceled) else 1
        was = changes.get(event.show_id, NONE)
        changes[event.show_id] = Sales(
            was.tickets + sign * event.number_of_tickets, was.bookings + sign
        )
    return dict(sorted(changes.items()))


def _added(show_id: uuid.UUID, change: Sales) -> Insert:
    added = insert(show_sales).values(
        show_id=show_id, tickets_sold=change.tickets, bookings=change.bookings
    )
    return added.on_conflict_do_update(
        index_elements=[show_sales.c.show_id],
        set_={
            "tickets_sold": show_sales.c.tickets_sold + added.excluded.tickets_sold,
            "bookings": show_sales.c.bookings + added.excluded.bookings,
            "updated_at": func.now(),
        },
    )


@dataclass(frozen=True, slots=True)
class Sales:
    tickets: int
    bookings: int


@dataclass(frozen=True, slots=True)
class Difference:
    show_id: uuid.UUID
    booked: Sales  # confirmed, in the bookings table
    read_model: Sales  # in show_sales

    def __str__(self) -> str:
        return (
            f"show {self.show_id}: bookings table {self.booked.tickets} tickets in"
            f" {self.booked.bookings} bookings, show_sales {self.read_model.tickets} tickets in"
            f" {self.read_model.bookings} bookings"
        )


NONE = Sales(0, 0)


def differences(
    booked: dict[uuid.UUID, Sales], read_model: dict[uuid.UUID, Sales]
) -> list[Difference]:
    """Every show whose totals differ; a show missing on one side counts as zero there."""
    return [
        Difference(show_id, booked.get(show_id, NONE), read_model.get(show_id, NONE))
        for show_id in sorted(booked.keys() | read_model.keys())
        if booked.get(show_id, NONE) != read_model.get(show_id, NONE)
    ]


async def reconcile(engine: AsyncEngine) -> tuple[int, list[Difference]]:
    """(shows compared, differences) between the confirmed bookings and show_sales.

    Read in one REPEATABLE READ snapshot, so a booking committing meanwhile cannot show up on
    one side only. A booking whose event is still on its way is a difference: run it when the
    queues are drained.
    """
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            booked_rows = await conn.execute(
                select(bookings.c.show_id, func.sum(bookings.c.number_of_tickets), func.count())
                .where(bookings.c.status == CONFIRMED)
                .group_by(bookings.c.show_id)
            )
            booked = {row[0]: Sales(int(row[1]), int(row[2])) for row in booked_rows}
            model_rows = await conn.execute(
                select(show_sales.c.show_id, show_sales.c.tickets_sold, show_sales.c.bookings)
            )
            read_model = {row[0]: Sales(row[1], row[2]) for row in model_rows}
    return len(booked.keys() | read_model.keys()), differences(booked, read_model)
