"""Holding a show's row lock from a test, so that a booking transaction blocks where we want it.

A booking transaction reads the show, then updates its counter; the update waits for a row lock
the test holds. While it waits, the test queues more requests behind it, knowing exactly which
batch each one lands in; releasing the lock lets everything run. No sleeps as synchronisation:
the test waits until PostgreSQL itself reports the transaction waiting for the lock.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from tests.support.database import asyncpg_dsn
from tests.support.waiting import until


@asynccontextmanager
async def show_row_locked(db: asyncpg.Connection, show_id: str | uuid.UUID) -> AsyncIterator[None]:
    """Hold the show's row lock (as a hung transaction would) until the block ends; the
    transaction is rolled back, so a waiting booking goes on without a serialization failure."""
    transaction = db.transaction()
    await transaction.start()
    try:
        await db.execute(
            "SELECT 1 FROM shows WHERE show_id = $1 FOR UPDATE", uuid.UUID(str(show_id))
        )
        yield
    finally:
        await transaction.rollback()


async def until_waiting_for_lock(database_url: str, count: int = 1) -> None:
    """Return once `count` sessions of the service on this database wait for a lock."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:

        async def waiting() -> bool:
            found = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'tickets' AND wait_event_type = 'Lock'"
            )
            return int(found) >= count

        await until(waiting, every=0.01)
    finally:
        await conn.close()
