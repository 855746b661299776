"""The inbox: which messages each consumer has applied, written with the effect, atomically.

A consumer claims the message_id in the same transaction as its database effect. Redelivered
(after a crash before the ack, a relay republish, a redrive), the claim finds the row and the
effect is skipped: at-least-once delivery, exactly once in effect.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

from sqlalchemy import ARRAY, Column, DateTime, MetaData, Table, Text, Uuid, func, literal, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.common.outages import POSTGRESQL, guarding

metadata = MetaData()

inbox = Table(
    "inbox",
    metadata,
    Column("consumer", Text, primary_key=True),
    Column("message_id", Uuid, primary_key=True),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One READ COMMITTED transaction; an outage becomes Unavailable, so the message is kept
    for later instead of spending one of its attempts."""
    async with guarding(POSTGRESQL), engine.begin() as conn:
        yield conn


async def claim(conn: AsyncConnection, consumer: str, message_id: uuid.UUID) -> bool:
    """Record the message as applied; False if it already was (then apply nothing).

    A concurrent claim of the same id waits on the first one's row lock and sees its commit,
    so two copies delivered at once still apply once.
    """
    return message_id in await claim_many(conn, consumer, [message_id])


async def claim_many(
    conn: AsyncConnection, consumer: str, message_ids: Collection[uuid.UUID]
) -> set[uuid.UUID]:
    """`claim` for a batch in one statement: the ids recorded now (the others already were).

    In sorted order, so two batches claiming some of the same ids (copies of one message
    in flight twice) take their row locks in the same order and wait, rather than deadlock.
    """
    ids = sorted(set(message_ids))
    claimed = await conn.execute(
        insert(inbox)
        .from_select(
            ["consumer", "message_id"],
            select(literal(consumer, Text), func.unnest(literal(ids, ARRAY(Uuid)))),
        )
        .on_conflict_do_nothing()
        .returning(inbox.c.message_id)
    )
    return set(claimed.scalars())


async def was_applied(conn: AsyncConnection, consumer: str, message_id: uuid.UUID) -> bool:
    found = await conn.execute(
        select(inbox.c.message_id).where(
            inbox.c.consumer == consumer, inbox.c.message_id == message_id
        )
    )
    return found.first() is not None
